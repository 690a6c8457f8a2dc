"""scikit-learn estimators that train fastnn networks: ``NeuralNetClassifier`` and
``NeuralNetRegressor`` (``pip install 'fastnn[sklearn]'``; scikit-learn 1.4.2 or newer).

They follow scikit-learn's rules, so they work in ``Pipeline``, ``GridSearchCV``,
``cross_val_score`` and ``clone``: ``__init__`` only stores the hyper-parameters, and
``fit`` validates the data with scikit-learn's own checks, builds a fresh
``fastnn.Sequential`` (``model_``) and trains it with ``Sequential.fit``. The network is
``hidden`` Dense layers (or the layers a callable builds) and an output layer that fits
the task: one sigmoid unit for two classes, a softmax unit per class for more, one
identity unit per target for regression. The classifier maps any labels (strings,
-1/1, ...) through ``classes_``. The same ``random_state`` gives the same weights, the
same batches and so the same predictions. A fitted estimator pickles (the model travels
as a fastnn checkpoint, optimizer state included), so ``n_jobs`` works too.
"""

import copy
import numbers
import os
import re
import tempfile

import numpy as np

from fastnn import losses, optimizers
from fastnn.checkpoint import load as load_checkpoint
from fastnn.layers import Dense, Dropout, Layer
from fastnn.model import Sequential
from fastnn.validation import in_range, seed_or_none

MIN_SKLEARN = "1.4.2"  # earlier releases require NumPy < 2, and fastnn requires >= 2.1

try:
    import sklearn
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.utils.multiclass import check_classification_targets, unique_labels
    from sklearn.utils.validation import check_is_fitted
except ImportError as error:
    raise ImportError(
        f"fastnn.sklearn needs scikit-learn ({MIN_SKLEARN} or newer), which is not "
        f"installed: pip install 'fastnn[sklearn]'"
    ) from error


def _release(version):
    """(major, minor, patch) of a version string such as '1.4.1.post1' or '1.10.0rc1'."""
    return tuple(int(re.match(r"\d*", part).group() or 0) for part in version.split(".")[:3])


if _release(sklearn.__version__) < _release(MIN_SKLEARN):
    raise ImportError(
        f"fastnn.sklearn needs scikit-learn {MIN_SKLEARN} or newer; {sklearn.__version__} "
        f"is installed: pip install -U 'fastnn[sklearn]'"
    )

try:  # scikit-learn 1.6 and newer
    from sklearn.utils.validation import validate_data
except ImportError:  # 1.4 and 1.5: the method that function replaced

    def validate_data(estimator, X="no_validation", y="no_validation", **options):
        return estimator._validate_data(X, y, **options)


FLOATS = (np.float32, np.float64)  # X stays float32 if it is; anything else is float64


def _checked(estimator, X, y="no_validation", *, reset, **options):
    """scikit-learn's ``validate_data``, its ValueError completed with the fix where the
    shape of X shows the mistake: images not flattened, or X transposed."""
    try:
        return validate_data(estimator, X, y, reset=reset, **options)
    except ValueError as error:
        fix = _shape_fix(estimator, X, y, reset)
        if fix is None:
            raise
        raise ValueError(f"{error} {fix}") from None


def _shape_fix(estimator, X, y, reset):
    """What to do about X's shape, or None if its shape does not explain the error."""
    try:
        shape = np.shape(X)
    except ValueError:  # a ragged list: scikit-learn's message says it
        return None
    if len(shape) > 2:
        return (
            f"X has shape {shape}: the estimators take 2-D rows (n_samples, n_features), "
            f"so flatten images first with X.reshape(len(X), -1) (for a convolutional "
            f"network, train a fastnn.Sequential with Conv2D layers on the images directly)"
        )
    if len(shape) != 2:
        return None
    rows, columns = shape
    if reset:  # fit: a y with as many values as X has columns
        samples = _length(y)
        if samples is not None and rows != samples == columns:
            return (f"X looks transposed: it has {rows} rows and {columns} columns, and y "
                    f"has {samples} values; pass X.T (one row per sample)")
        return None
    expected = getattr(estimator, "n_features_in_", None)
    if expected is not None and columns != expected == rows:
        return (f"X looks transposed: it has {rows} rows of {columns} values, and the "
                f"estimator was fitted to rows of {expected}; pass X.T (one row per sample)")
    return None


def _length(y):
    if isinstance(y, str) or y is None:  # including "no_validation"
        return None
    try:
        return len(y)
    except TypeError:
        return None


def _refuse_mixed_labels(y):
    """A classifier's labels must be all strings or all numbers: NumPy cannot sort a mix
    (a raw TypeError deep in scikit-learn), and a list of both silently becomes strings."""
    dtype = getattr(y, "dtype", None)
    if dtype is not None and dtype != np.dtype(object):
        return
    try:
        labels = np.asarray(y, dtype=object)
    except ValueError:
        return
    if labels.ndim != 1:
        return
    string = next((label for label in labels if isinstance(label, str)), None)
    other = next((label for label in labels if not isinstance(label, str)), None)
    if string is not None and other is not None:
        raise ValueError(
            f"y mixes strings and other labels ({string!r} and {other!r}): class "
            f"labels must be all strings or all numbers; convert them first, e.g. "
            f"y = np.asarray(y).astype(str)"
        )


class _NeuralNet(BaseEstimator):
    """What the classifier and the regressor share; the subclasses say how targets
    become the network's outputs and back."""

    def __init__(self, hidden=(100,), *, activation="relu", dropout=0.0, optimizer="adam",
                 lr=None, weight_decay=0.0, epochs=200, batch_size=200, shuffle=True,
                 dtype="float32", backend=None, random_state=None, verbose=0):
        self.hidden = hidden
        self.activation = activation
        self.dropout = dropout
        self.optimizer = optimizer
        self.lr = lr
        self.weight_decay = weight_decay
        self.epochs = epochs
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.dtype = dtype
        self.backend = backend
        self.random_state = random_state
        self.verbose = verbose

    # ---- what the subclasses define ----

    def _learn_targets(self, y, classes=None):
        """Set what the targets are (``classes_``, or ``n_outputs_``) from a first fit."""
        raise NotImplementedError

    def _targets(self, y):
        """(y as the network's training targets, its output layer (units, activation))."""
        raise NotImplementedError

    def _validate(self, X, y, reset):
        raise NotImplementedError

    def _loss(self):
        return "auto"

    # ---- scikit-learn's API ----

    def fit(self, X, y):
        """Build a new network for (X, y) and train it for ``epochs`` epochs."""
        X, y = self._validate(X, y, reset=True)
        self._learn_targets(y)
        targets, output = self._targets(y)
        self.model_ = self._build(X.shape[1], output)
        self.history_ = self.model_.fit(X, targets, epochs=self._positive("epochs"),
                                        **self._training(new=True))
        return self

    def _partial_fit(self, X, y, first, classes=None):
        """One epoch over (X, y), continuing the fitted network (building it if
        ``first``) with its optimizer state."""
        X, y = self._validate(X, y, reset=first)
        if first:
            self._learn_targets(y, classes)
        targets, output = self._targets(y)
        if first:
            self.model_ = self._build(X.shape[1], output)
            self.history_ = {}
        history = self.model_.fit(X, targets, epochs=1, **self._training(new=first))
        for key, values in history.items():
            self.history_.setdefault(key, []).extend(values)
        return self

    def __sklearn_is_fitted__(self):
        return hasattr(self, "model_")

    def _outputs(self, X):
        """The network's outputs for X, as float64 NumPy."""
        check_is_fitted(self)
        X = _checked(self, X, reset=False, dtype=FLOATS, order="C")
        return self.model_.predict_proba(X).astype(np.float64)

    # ---- building and training ----

    def _build(self, n_features, output):
        units, activation = output
        layers = self._hidden_layers(n_features)
        width = n_features
        for layer in layers:
            width = getattr(layer, "n_out", width)
        layers.append(Dense(width, units, activation))
        return Sequential(layers, loss=self._loss(), dtype=self.dtype, seed=self._seed(),
                          backend=self.backend)

    def _hidden_layers(self, n_features):
        """The layers before the output layer: from ``hidden``'s widths, or its call."""
        if callable(self.hidden):
            layers = self.hidden(n_features)
            if not isinstance(layers, (list, tuple)) or not all(
                    isinstance(layer, Layer) for layer in layers):
                raise TypeError(
                    f"hidden(n_features) must return a list of fastnn layers (Dense, Dropout, "
                    f"BatchNorm) without the output layer, which the estimator adds; got "
                    f"{layers!r}"
                )
            return list(layers)
        widths = (self.hidden,) if isinstance(self.hidden, numbers.Integral) else self.hidden
        if not isinstance(widths, (list, tuple)) or not all(
                isinstance(w, numbers.Integral) and not isinstance(w, bool) and w > 0
                for w in widths):
            raise ValueError(
                f"hidden must be the widths of the hidden layers, such as (64, 32) (() for "
                f"none), or a callable hidden(n_features) returning fastnn layers; got "
                f"{self.hidden!r}"
            )
        dropout = in_range("dropout", self.dropout, 0.0, 1.0)
        layers = []
        for n_in, n_out in zip((n_features, *widths), widths):
            layers.append(Dense(n_in, int(n_out), self.activation))
            if dropout > 0:
                layers.append(Dropout(dropout))
        return layers

    def _training(self, new):
        """``Sequential.fit``'s options; ``new``: a new optimizer (else the model keeps
        its own, with its state)."""
        options = {"batch_size": None if self.batch_size is None
                   else self._positive("batch_size"),
                   "shuffle": bool(self.shuffle), "verbose": self.verbose}
        if new:
            options["optimizer"] = self._optimizer()
        return options

    def _optimizer(self):
        if isinstance(self.optimizer, optimizers.Optimizer):
            if self.lr is not None or self.weight_decay:
                raise ValueError(
                    "lr and weight_decay set the optimizer named by optimizer='...'; when "
                    "optimizer is an object, give them to its constructor instead"
                )
            return copy.deepcopy(self.optimizer)  # fit must not change the parameter
        weight_decay = in_range("weight_decay", self.weight_decay, 0.0, float("inf"))
        return optimizers.get(self.optimizer, lr=self.lr, weight_decay=weight_decay)

    def _seed(self):
        """fastnn's seed from ``random_state``: an int is the seed itself (so weights
        equal ``Sequential(..., seed=random_state)``'s), a RandomState or Generator
        gives a fresh one per fit, None a random one."""
        state = self.random_state
        if isinstance(state, np.random.RandomState):
            return int(state.randint(np.iinfo(np.int32).max))
        if isinstance(state, np.random.Generator):
            return int(state.integers(np.iinfo(np.int32).max))
        try:
            return seed_or_none("random_state", state)
        except ValueError:
            raise ValueError(
                f"random_state must be None, a non-negative int, a numpy RandomState or a "
                f"numpy Generator; got {state!r}"
            ) from None

    def _positive(self, name):
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}")
        return int(value)

    # ---- pickling: the fastnn model travels as a checkpoint ----

    def __getstate__(self):
        state = dict(super().__getstate__())  # a copy: it may be self.__dict__ itself
        model = state.pop("model_", None)
        if model is not None:
            with tempfile.TemporaryDirectory() as folder:
                path = model.save(os.path.join(folder, "model.npz"))
                with open(path, "rb") as file:
                    state["_checkpoint"] = (model.backend.name, file.read())
        return state

    def __setstate__(self, state):
        saved = state.pop("_checkpoint", None)
        super().__setstate__(state)
        if saved is not None:
            backend, data = saved
            with tempfile.TemporaryDirectory() as folder:
                path = os.path.join(folder, "model.npz")
                with open(path, "wb") as file:
                    file.write(data)
                self.model_ = load_checkpoint(path, backend=backend)


class NeuralNetClassifier(ClassifierMixin, _NeuralNet):
    """A fastnn network as a scikit-learn classifier, for two classes or more.

    Parameters (all stored as given; ``fit`` checks them):
        hidden: widths of the hidden Dense layers, e.g. (64, 32); () for none; or a
            callable ``hidden(n_features)`` returning a list of fastnn layers (Dense,
            Dropout, BatchNorm), to which the output layer is added (then ``activation``
            and ``dropout`` are not used).
        activation: the hidden layers' activation ('relu', 'tanh', 'sigmoid', ...).
        dropout: the rate of a Dropout layer after each hidden layer (0: none).
        optimizer: 'adam', 'sgd', 'momentum', 'nesterov', 'adagrad', 'rmsprop', or a
            fastnn optimizer object (copied for each fit).
        lr: the learning rate; None is the optimizer's default (Adam 0.001, SGD 0.01).
        weight_decay: L2 penalty on the weights (not the biases), as MLP's alpha.
        epochs: passes over the data in ``fit`` (``partial_fit`` makes one).
        batch_size: rows per step (the whole set if it has fewer); None: full batch.
        shuffle: shuffle the rows each epoch.
        dtype: 'float32' or 'float64', the network's arithmetic.
        backend: 'numpy', 'numba' or 'cupy'; None is fastnn's current backend.
        random_state: int for repeatable weights and batches; None for fresh ones.
        verbose: 0 silent; k prints every k-th epoch.

    Attributes after fit: ``classes_``, ``n_features_in_`` (and ``feature_names_in_``
    for a DataFrame), ``model_`` (the fastnn Sequential) and ``history_`` (its
    per-epoch loss and accuracy).
    """

    def _validate(self, X, y, reset):
        _refuse_mixed_labels(y)
        X, y = _checked(self, X, y, reset=reset, dtype=FLOATS, order="C")
        check_classification_targets(y)
        return X, y

    def _learn_targets(self, y, classes=None):
        self.classes_ = unique_labels(y if classes is None else classes)
        if len(self.classes_) < 2:
            given = "y holds" if classes is None else "classes= lists"
            raise ValueError(
                f"{given} one class only ({self.classes_[0]!r}); a classifier needs at "
                f"least 2 classes to tell apart"
            )

    def _targets(self, y):
        classes = self.classes_
        known = unique_labels(classes, y)  # also refuses strings mixed with numbers
        if len(known) > len(classes):
            unseen = known[~np.isin(known, classes)].tolist()
            raise ValueError(
                f"y holds labels {unseen!r} that are not among the classes {classes.tolist()!r}"
                f" given by the first fit or partial_fit"
            )
        codes = np.searchsorted(classes, y)
        if len(classes) == 2:
            return codes.astype(np.float64), (1, "sigmoid")
        return codes, (len(classes), "softmax")

    def partial_fit(self, X, y, classes=None):
        """One epoch over (X, y). The first call needs ``classes``, every label that
        will ever appear (as scikit-learn's SGDClassifier); later calls continue
        training, after ``fit`` too."""
        first = not hasattr(self, "model_")
        if first and classes is None:
            raise ValueError(
                "classes must be passed on the first call to partial_fit: every label y "
                "may ever hold, e.g. classes=np.unique(y_all)"
            )
        if not first and classes is not None and not np.array_equal(
                unique_labels(classes), self.classes_):
            raise ValueError(
                f"classes={list(classes)!r} differs from the classes the network was "
                f"fitted to, {self.classes_.tolist()!r}; fit anew to change them"
            )
        return self._partial_fit(X, y, first, classes)

    def predict_proba(self, X):
        """Class probabilities, shape (n_samples, n_classes), columns in ``classes_``
        order."""
        out = self._outputs(X)
        if len(self.classes_) == 2:
            return np.column_stack([1.0 - out[:, 0], out[:, 0]])
        return out

    def predict(self, X):
        """The most probable class of each row, as a label from ``classes_``."""
        proba = self.predict_proba(X)  # first: it checks that the model is fitted
        return self.classes_[np.argmax(proba, axis=1)]


class NeuralNetRegressor(RegressorMixin, _NeuralNet):
    """A fastnn network as a scikit-learn regressor, for one target or several.

    The parameters are NeuralNetClassifier's and ``loss``: 'mse' (the default), 'mae'
    or 'huber'. The output layer has one identity unit per target. Predictions are
    float64, shaped as the y given to fit: (n_samples,) or (n_samples, n_targets).
    Standardize y (``TransformedTargetRegressor``) when its scale is far from 1.

    Attributes after fit: ``n_outputs_``, ``n_features_in_`` (and
    ``feature_names_in_``), ``model_`` and ``history_`` (per-epoch loss and rmse).
    """

    def __init__(self, hidden=(100,), *, activation="relu", dropout=0.0, loss="mse",
                 optimizer="adam", lr=None, weight_decay=0.0, epochs=200, batch_size=200,
                 shuffle=True, dtype="float32", backend=None, random_state=None, verbose=0):
        super().__init__(hidden, activation=activation, dropout=dropout, optimizer=optimizer,
                         lr=lr, weight_decay=weight_decay, epochs=epochs,
                         batch_size=batch_size, shuffle=shuffle, dtype=dtype, backend=backend,
                         random_state=random_state, verbose=verbose)
        self.loss = loss

    def __sklearn_tags__(self):  # scikit-learn 1.6 and newer
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _more_tags(self):  # scikit-learn 1.4 and 1.5
        return {"multioutput": True}

    def _loss(self):
        loss = losses.get(self.loss)
        if loss.task != "regression":
            raise ValueError(
                f"NeuralNetRegressor's loss must be a regression loss ('mse', 'mae' or "
                f"'huber'); got {self.loss!r}: use NeuralNetClassifier for classes"
            )
        return loss

    def _validate(self, X, y, reset):
        return _checked(self, X, y, reset=reset, dtype=FLOATS, order="C",
                        multi_output=True, y_numeric=True)

    def _learn_targets(self, y, classes=None):
        self.n_outputs_ = 1 if y.ndim == 1 else y.shape[1]
        self._one_target = y.ndim == 1  # predict returns y's shape

    def _targets(self, y):
        outputs = 1 if y.ndim == 1 else y.shape[1]
        if outputs != self.n_outputs_:
            raise ValueError(f"y has {outputs} target(s) but the network was fitted to "
                             f"{self.n_outputs_}")
        return y, (outputs, "identity")

    def partial_fit(self, X, y):
        """One epoch over (X, y); later calls (after ``fit`` too) continue training."""
        return self._partial_fit(X, y, first=not hasattr(self, "model_"))

    def predict(self, X):
        """Predicted targets, float64, shaped as the y given to fit."""
        out = self._outputs(X)
        return out[:, 0] if self._one_target else out
