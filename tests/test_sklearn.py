"""fastnn.sklearn: the estimators pass scikit-learn's own estimator checks on the NumPy
and Numba backends, work in Pipeline, GridSearchCV, cross_val_score and clone, train
exactly the network fastnn's own API trains, and refuse bad input clearly."""

import os

# scikit-learn's array-API check (does enabling array_api_dispatch leave NumPy input
# working?) runs only if SciPy is imported with this set; no test module imports SciPy
# before this one is collected
os.environ.setdefault("SCIPY_ARRAY_API", "1")

import importlib  # noqa: E402
import pickle  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import sklearn  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import (  # noqa: E402
    check_methods_subset_invariance,
    parametrize_with_checks,
)

import fastnn  # noqa: E402
from fastnn import BatchNorm, Dense, datasets  # noqa: E402
from fastnn.sklearn import NeuralNetClassifier, NeuralNetRegressor  # noqa: E402

NUMBA_MISSING = fastnn.available_backends()["numba"]
BACKENDS = ["numpy"] + ([] if NUMBA_MISSING else ["numba"])

# Small networks, trained long enough to pass the checks' accuracy (> 0.83 on blobs) and
# R^2 (> 0.5) thresholds: each instance runs its ~55 checks in about 2 s.
SMALL = {"hidden": (8,), "epochs": 50, "lr": 0.01, "batch_size": 64}
CHECKED = [cls(**SMALL, backend=backend) for backend in BACKENDS
           for cls in (NeuralNetClassifier, NeuralNetRegressor)]
CHECKED += [cls(**SMALL, dtype="float64") for cls in (NeuralNetClassifier, NeuralNetRegressor)]

SUBSET_REASON = (
    "float32 on NumPy: a row's outputs can differ in the last bit (~3e-7 relative) with "
    "the number of rows predicted together, as OpenBLAS sums a 1-row product (gemv) in "
    "another order than a 20-row one (gemm), and the check allows 1e-7, below float32's "
    "resolution (1.2e-7); test_float64_passes_the_subset_check_and_float32_agrees_to_"
    "rounding bounds the difference, and the float64 instances pass the check"
)


def expected_failures(estimator):
    """The checks a given instance is expected to fail, with the reason (non-strict:
    whether a last-bit difference shows depends on the BLAS build)."""
    params = estimator.get_params()
    if params["dtype"] == "float32" and params["backend"] in (None, "numpy"):
        return {"check_methods_subset_invariance": SUBSET_REASON}
    return {}


def _supports_expected_failures():
    import inspect

    return "expected_failed_checks" in inspect.signature(parametrize_with_checks).parameters


NEW_CHECKS_API = _supports_expected_failures()  # scikit-learn 1.6 and newer


def listed(mark):
    """``parametrize_with_checks``'s mark with its checks in a list: before 1.7,
    scikit-learn hands pytest a generator, which pytest 9 deprecates (an error here)."""
    argnames, argvalues = mark.args
    return pytest.mark.parametrize(argnames, list(argvalues), **mark.kwargs)


@listed(parametrize_with_checks(CHECKED, **({"expected_failed_checks": expected_failures}
                                            if NEW_CHECKS_API else {})))
def test_scikit_learn_estimator_checks(estimator, check):
    if NEW_CHECKS_API:
        check(estimator)
        return
    reason = expected_failures(estimator).get(getattr(check, "func", check).__name__)
    try:  # scikit-learn 1.4 and 1.5 have no expected_failed_checks: xfail here
        check(estimator)
    except AssertionError:
        if reason is None:
            raise
        pytest.xfail(reason)


if NUMBA_MISSING:  # say so, rather than check one backend silently

    def test_numba_estimator_checks():
        pytest.skip(f"the Numba backend cannot run here, so its estimator checks did not "
                    f"run: {NUMBA_MISSING}")


@pytest.mark.parametrize("cls", [NeuralNetClassifier, NeuralNetRegressor])
def test_float64_passes_the_subset_check_and_float32_agrees_to_rounding(cls):
    """The justification of the one expected failure: in float64 the outputs of a row do
    not depend on the batch (beyond 1e-7), and in float32 they agree to float32's
    rounding."""
    check_methods_subset_invariance(cls.__name__, cls(**SMALL, dtype="float64"))
    rng = np.random.RandomState(0)
    X = 3 * rng.uniform(size=(20, 3))
    y = X[:, 0].astype(int)
    estimator = cls(**SMALL, random_state=1).fit(X, y)
    method = estimator.predict_proba if cls is NeuralNetClassifier else estimator.predict
    whole = method(X)
    rows = np.concatenate([method(X[i : i + 1]) for i in range(len(X))])
    np.testing.assert_allclose(rows, whole, rtol=2e-6, atol=1e-6)


# ---- the data the remaining tests use ----

@pytest.fixture(scope="module")
def digits():
    return datasets.digits()


def blobs(n_classes, n=120, seed=0):
    X, y = datasets.blobs(n, n_classes=n_classes, seed=seed)
    return X, y


# ---- scikit-learn's tools ----

def test_pipeline_grid_search_and_cross_validation_on_the_digits(digits):
    X, y = digits
    X, y = X[::2], y[::2]  # 899 images keep it quick
    pipe = make_pipeline(StandardScaler(),
                         NeuralNetClassifier(epochs=10, batch_size=32, random_state=0))
    grid = GridSearchCV(pipe, {"neuralnetclassifier__hidden": [(16,), (64,)],
                               "neuralnetclassifier__lr": [0.0003, 0.003]}, cv=3)
    grid.fit(X, y)
    scores = grid.cv_results_["mean_test_score"]
    assert len(scores) == 4 and np.all((scores > 0.2) & (scores <= 1.0))
    # the larger rate learns more in 10 epochs, whichever the width
    assert grid.best_params_["neuralnetclassifier__lr"] == 0.003
    assert grid.best_score_ == scores.max() >= 0.9
    best = grid.best_estimator_.named_steps["neuralnetclassifier"]
    assert best.get_params()["hidden"] == grid.best_params_["neuralnetclassifier__hidden"]
    assert best.model_.epochs_trained == 10 and best.n_features_in_ == 64
    assert grid.score(X, y) >= 0.97  # refitted on all of it
    # the same folds and random_state: the same three fits as the grid's best cell
    scores = cross_val_score(clone(grid.best_estimator_), X, y, cv=3)
    assert scores.mean() == grid.best_score_


def test_clone_holds_the_hyper_parameters_and_no_fitted_state(digits):
    X, y = digits
    estimator = NeuralNetClassifier((16,), activation="tanh", lr=0.01, epochs=2,
                                    random_state=3).fit(X, y)
    copy = clone(estimator)
    assert copy.get_params() == estimator.get_params()
    assert not hasattr(copy, "model_") and not hasattr(copy, "classes_")
    with pytest.raises(NotFittedError):
        copy.predict(X)


def test_the_estimator_trains_the_network_fastnns_own_api_trains(digits):
    """random_state is the model's seed, and fit is Sequential.fit: the same weights,
    batches and updates, so the same probabilities to the last bit."""
    X, y = digits
    estimator = NeuralNetClassifier((32,), epochs=3, random_state=7).fit(X, y)
    model = fastnn.from_layer_dims([64, 32, 10], "relu", "softmax", seed=7)
    model.fit(X, y, epochs=3, batch_size=200, optimizer="adam")  # docs/guide/sklearn.md
    np.testing.assert_array_equal(estimator.predict_proba(X),
                                  model.predict_proba(X).astype(np.float64))
    assert estimator.history_["loss"] == model.history["loss"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_same_random_state_same_predictions(backend, digits):
    X, y = digits
    X = X[:400]
    y = y[:400]

    def fitted(state):
        return NeuralNetClassifier((16,), epochs=3, dropout=0.1, backend=backend,
                                   random_state=state).fit(X, y).predict_proba(X)

    np.testing.assert_array_equal(fitted(5), fitted(5))
    assert not np.allclose(fitted(5), fitted(6))
    rng = np.random.RandomState(0)  # a RandomState gives each fit a seed of its own
    assert not np.allclose(fitted(rng), fitted(rng))
    np.testing.assert_array_equal(fitted(np.random.RandomState(1)),
                                  fitted(np.random.RandomState(1)))


def test_numba_and_numpy_backends_agree(digits):
    if NUMBA_MISSING:
        pytest.skip(f"the Numba backend cannot run here: {NUMBA_MISSING}")
    X, y = digits
    options = {"hidden": (32,), "epochs": 3, "dtype": "float64", "random_state": 0}
    a = NeuralNetClassifier(**options, backend="numpy").fit(X, y)
    b = NeuralNetClassifier(**options, backend="numba").fit(X, y)
    assert b.model_.backend.name == "numba"
    np.testing.assert_allclose(a.predict_proba(X), b.predict_proba(X), atol=1e-9)


def test_the_estimators_run_on_a_device_backend(strict, digits):
    """backend=None is fastnn's current backend; on the strict stand-in for a GPU (arrays
    that refuse implicit conversion to NumPy) fit and predict move data only through
    the backend's transfers, as on CuPy."""
    X, y = digits
    with fastnn.use_backend(strict):
        classifier = NeuralNetClassifier((16,), epochs=2, random_state=0).fit(X, y)
        regressor = NeuralNetRegressor((16,), epochs=2, random_state=0).fit(X, np.c_[y, -y])
    assert classifier.model_.backend is strict and regressor.model_.backend is strict
    reference = NeuralNetClassifier((16,), epochs=2, dtype="float32", backend="numpy",
                                    random_state=0).fit(X, y)
    np.testing.assert_allclose(classifier.predict_proba(X), reference.predict_proba(X),
                               atol=1e-5)
    assert regressor.predict(X).shape == (len(X), 2)


# ---- labels and targets ----

@pytest.mark.parametrize("labels", [["cat", "dog"], ["b", "c", "a"], [-1, 1], [10.0, 7.0, 3.0]])
def test_any_labels_map_through_classes(labels):
    X, codes = blobs(len(labels))
    y = np.array(labels, dtype=object if isinstance(labels[0], str) else None)[codes]
    estimator = NeuralNetClassifier((16,), epochs=40, lr=0.01, random_state=0).fit(X, y)
    np.testing.assert_array_equal(estimator.classes_, np.unique(y))
    proba = estimator.predict_proba(X)
    assert proba.shape == (len(X), len(labels)) and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    predicted = estimator.predict(X)
    np.testing.assert_array_equal(predicted, estimator.classes_[proba.argmax(axis=1)])
    assert set(predicted) <= set(labels) and estimator.score(X, y) >= 0.9
    units = 1 if len(labels) == 2 else len(labels)  # one sigmoid unit for two classes
    assert estimator.model_.n_out == units


def test_regressor_single_and_multi_output():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 4))
    Y = np.c_[X @ [1.0, -2.0, 0.5, 0.0], np.sin(X[:, 0]) + X[:, 1] ** 2 / 4]
    options = {"hidden": (32,), "epochs": 150, "lr": 0.01, "random_state": 0}
    single = NeuralNetRegressor(**options).fit(X, Y[:, 0])
    assert single.n_outputs_ == 1 and single.predict(X).shape == (200,)
    assert single.score(X, Y[:, 0]) >= 0.95
    column = NeuralNetRegressor(**options).fit(X, Y[:, :1])  # a column keeps its shape
    assert column.predict(X).shape == (200, 1)
    both = NeuralNetRegressor(**options).fit(X, Y)
    predicted = both.predict(X)
    assert both.n_outputs_ == 2 and predicted.shape == (200, 2)
    assert predicted.dtype == np.float64 and both.score(X, Y) >= 0.9
    huber = NeuralNetRegressor(**options, loss="huber").fit(X, Y)
    assert huber.model_.loss.name == "huber" and huber.score(X, Y) >= 0.9


# ---- partial_fit ----

def test_partial_fit_epochs_equal_fit_epochs(digits):
    """Each partial_fit call is the next epoch of fit: same batches, same optimizer
    state, so three calls give fit(epochs=3) to the last bit."""
    X, y = digits
    options = {"hidden": (16,), "batch_size": 128, "random_state": 2}
    whole = NeuralNetClassifier(**options, epochs=3).fit(X, y)
    steps = NeuralNetClassifier(**options)
    for _ in range(3):
        steps.partial_fit(X, y, classes=np.arange(10))
    np.testing.assert_array_equal(steps.predict_proba(X), whole.predict_proba(X))
    assert steps.history_["loss"] == whole.history_["loss"]
    assert steps.model_.epochs_trained == 3


def test_partial_fit_classes_and_labels():
    X, y = blobs(3)
    names = np.array(["x", "y", "z"])[y]
    estimator = NeuralNetClassifier((8,), random_state=0)
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        estimator.partial_fit(X, names)
    first = names != "z"  # classes= may name a class the first batch lacks
    estimator.partial_fit(X[first], names[first], classes=["x", "y", "z"])
    np.testing.assert_array_equal(estimator.classes_, ["x", "y", "z"])
    assert estimator.predict_proba(X).shape == (len(X), 3)
    estimator.partial_fit(X, names)
    with pytest.raises(ValueError, match=r"labels \['w'\] that are not among the classes"):
        estimator.partial_fit(X[:3], ["x", "w", "y"])
    with pytest.raises(ValueError, match="differs from the classes the network was fitted"):
        estimator.partial_fit(X, names, classes=["x", "y"])
    with pytest.raises(ValueError, match="X has 1 features, but NeuralNetClassifier is "
                                         "expecting 2 features"):
        estimator.partial_fit(X[:, :1], names)
    with pytest.raises(ValueError, match="one class only"):
        NeuralNetClassifier().partial_fit(X, names, classes=["x"])


def test_regressor_partial_fit_continues_after_fit():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(100, 3))
    y = X.sum(axis=1)
    estimator = NeuralNetRegressor((8,), epochs=2, random_state=0).fit(X, y)
    estimator.partial_fit(X, y)
    assert estimator.model_.epochs_trained == 3 and len(estimator.history_["loss"]) == 3
    with pytest.raises(ValueError, match="y has 2 target"):
        estimator.partial_fit(X, np.c_[y, y])


# ---- pickling, DataFrames, custom layers ----

@pytest.mark.parametrize("backend", BACKENDS)
def test_pickle_keeps_the_network_and_its_optimizer_state(backend, digits):
    X, y = digits
    estimator = NeuralNetClassifier((16,), epochs=2, backend=backend, random_state=0)
    estimator.fit(X, y)
    restored = pickle.loads(pickle.dumps(estimator))
    assert restored.model_.backend.name == backend
    np.testing.assert_array_equal(restored.predict_proba(X), estimator.predict_proba(X))
    estimator.partial_fit(X, y)  # Adam's moments travelled too: training goes on alike
    restored.partial_fit(X, y)
    np.testing.assert_array_equal(restored.predict_proba(X), estimator.predict_proba(X))
    assert restored.history_ == estimator.history_


def test_a_dataframe_gives_feature_names():
    pandas = pytest.importorskip("pandas")  # in the test extra
    X, y = blobs(2)
    frame = pandas.DataFrame(X, columns=["width", "height"])
    estimator = NeuralNetClassifier((8,), epochs=5, random_state=0).fit(frame, y)
    np.testing.assert_array_equal(estimator.feature_names_in_, ["width", "height"])
    renamed = frame.rename(columns={"height": "depth"})
    with pytest.raises(ValueError, match="feature names should match"):
        estimator.predict(renamed)


SEEN = []


def tanh_batchnorm_relu(n_features):
    """hidden= as a callable (at module level, so that the estimator pickles)."""
    SEEN.append(n_features)
    return [Dense(n_features, 32, "tanh"), BatchNorm(32), Dense(32, 16, "relu")]


def test_hidden_as_a_callable_builds_any_stack(digits):
    X, y = digits
    SEEN.clear()
    estimator = NeuralNetClassifier(tanh_batchnorm_relu, epochs=5, lr=0.01, random_state=0)
    estimator.fit(X, y)
    assert SEEN == [64]
    kinds = [type(layer).__name__ for layer in estimator.model_.layers]
    assert kinds == ["Dense", "BatchNorm", "Dense", "Dense"]
    assert repr(estimator.model_.layers[-1]) == "Dense(16, 10, activation='softmax')"
    assert estimator.score(X, y) >= 0.9
    restored = pickle.loads(pickle.dumps(estimator))  # BatchNorm's statistics too
    np.testing.assert_array_equal(restored.predict_proba(X), estimator.predict_proba(X))


def test_dtype_and_dropout_reach_the_network():
    X, y = blobs(3)
    estimator = NeuralNetClassifier((8, 8), dropout=0.25, dtype="float64", epochs=1,
                                    random_state=0).fit(X, y)
    assert estimator.model_.dtype_name == "float64"
    assert [type(layer).__name__ for layer in estimator.model_.layers] == [
        "Dense", "Dropout", "Dense", "Dropout", "Dense"]
    assert NeuralNetClassifier((), epochs=1).fit(X, y).model_.layers[0].n_in == 2


# ---- bad input ----

@pytest.mark.parametrize("params, error, match", [
    ({"activation": "rleu"}, ValueError, "unknown activation 'rleu'.*Did you mean 'relu'"),
    ({"optimizer": "adamm"}, ValueError, "unknown optimizer 'adamm'.*Did you mean 'adam'"),
    ({"hidden": (16, 0)}, ValueError, r"hidden must be the widths .* got \(16, 0\)"),
    ({"hidden": "64"}, ValueError, "hidden must be the widths"),
    ({"hidden": lambda n: Dense(n, 4)}, TypeError, "must return a list of fastnn layers"),
    ({"dropout": 1.0}, ValueError, r"dropout must be in \[0.0, 1.0\)"),
    ({"lr": -1.0}, ValueError, "lr must be a positive number"),
    ({"epochs": 0}, ValueError, "epochs must be a positive integer"),
    ({"batch_size": 2.5}, ValueError, "batch_size must be a positive integer"),
    ({"dtype": "float16"}, ValueError, "dtype must be 'float32' or 'float64'"),
    ({"backend": "tensorflow"}, ValueError, "not a fastnn backend; valid names"),
    ({"random_state": -1}, ValueError, "random_state must be None, a non-negative int"),
    ({"optimizer": fastnn.Adam(), "lr": 0.1}, ValueError, "give them to its constructor"),
])
def test_bad_hyper_parameters_are_named_at_fit(params, error, match):
    X, y = blobs(2)
    estimator = NeuralNetClassifier(**params)  # __init__ stores, fit checks
    with pytest.raises(error, match=match):
        estimator.fit(X, y)


def test_bad_data_gets_scikit_learns_or_fastnns_messages():
    X, y = blobs(2)
    bad = X.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        NeuralNetClassifier().fit(bad, y)
    with pytest.raises(ValueError, match="Expected 2D array, got 1D array"):
        NeuralNetClassifier().fit(X[:, 0], y)
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        NeuralNetClassifier().fit(X, y[:-1])
    with pytest.raises(ValueError, match="Unknown label type"):
        NeuralNetClassifier().fit(X, X[:, 0])
    with pytest.raises(ValueError, match="one class only"):
        NeuralNetClassifier().fit(X, np.zeros(len(X)))
    with pytest.raises(ValueError, match="loss must be a regression loss"):
        NeuralNetRegressor(loss="bce").fit(X, y)
    with pytest.raises(ValueError, match="unknown loss 'msee'"):
        NeuralNetRegressor(loss="msee").fit(X, y)
    fitted = NeuralNetRegressor(epochs=1).fit(X, y)
    with pytest.raises(ValueError, match="X has 3 features, but NeuralNetRegressor is "
                                         "expecting 2"):
        fitted.predict(np.c_[X, X[:, :1]])
    with pytest.raises(ValueError, match="too large for the model's dtype"):
        fitted.predict(X * 1e39)  # finite in float64, beyond float32


@pytest.mark.parametrize("labels", [np.array(["a", 1, "b", 1], dtype=object), ["a", 1, "b", 1]])
def test_labels_mixing_strings_and_numbers_are_named_with_the_fix(labels):
    """NumPy cannot sort such labels (a raw TypeError inside scikit-learn), and a list of
    them would silently turn 1 into '1'."""
    X = np.random.default_rng(0).random((4, 2))
    with pytest.raises(ValueError, match=r"y mixes strings and other labels \('a' and 1\).*"
                                         r"all strings or all numbers.*astype\(str\)"):
        NeuralNetClassifier(epochs=1).fit(X, labels)
    with pytest.raises(ValueError, match="y mixes strings"):
        NeuralNetClassifier(epochs=1).partial_fit(X, labels, classes=["a", "b"])


def test_transposed_x_is_named_with_the_fix():
    X, y = blobs(2)
    X = np.c_[X, X, X][:, :5]  # 5 features, so X.T differs in shape from X
    for cls in (NeuralNetClassifier, NeuralNetRegressor):
        fitted = cls(epochs=1).fit(X, y)
        with pytest.raises(ValueError, match=r"X has \d+ features, but \w+ is expecting 5 "
                                             r"features.*X looks transposed: it has 5 rows "
                                             r"of \d+ values.*pass X.T"):
            fitted.predict(X[:40].T)
        with pytest.raises(ValueError, match="X looks transposed.*pass X.T"):
            fitted.partial_fit(X[:40].T, y[:5])
        with pytest.raises(ValueError, match=r"inconsistent numbers of samples.*X looks "
                                             r"transposed: it has 5 rows and 40 columns, and "
                                             r"y has 40 values; pass X.T"):
            cls(epochs=1).fit(X[:40].T, y[:40])
        with pytest.raises(ValueError, match=r"expecting 5 features as input\.$"):
            fitted.predict(X[:40, :3])  # fewer features, not transposed: no guess


@pytest.mark.parametrize("shape", [(40, 8, 8), (40, 1, 8, 8)])
def test_images_are_named_with_the_fix(shape):
    X = np.random.default_rng(0).random(shape)
    y = np.arange(40) % 2
    message = (rf"Found array with dim {len(shape)}.*X has shape \({shape[0]}, .*the "
               r"estimators take 2-D rows.*X.reshape\(len\(X\), -1\).*Conv2D")
    for cls in (NeuralNetClassifier, NeuralNetRegressor):
        with pytest.raises(ValueError, match=message):
            cls(epochs=1).fit(X, y)
        fitted = cls(epochs=1).fit(X.reshape(len(X), -1), y)
        with pytest.raises(ValueError, match=message):
            fitted.predict(X)


def test_without_scikit_learn_the_import_names_the_extra(monkeypatch):
    monkeypatch.delitem(sys.modules, "fastnn.sklearn")
    monkeypatch.setitem(sys.modules, "sklearn", None)  # importing it now fails
    with pytest.raises(ImportError, match=r"pip install 'fastnn\[sklearn\]'"):
        importlib.import_module("fastnn.sklearn")


def test_too_old_a_scikit_learn_is_named(monkeypatch):
    monkeypatch.delitem(sys.modules, "fastnn.sklearn")
    monkeypatch.setattr(sklearn, "__version__", "1.3.2")
    with pytest.raises(ImportError, match=r"needs scikit-learn 1.4.2 or newer; 1.3.2"):
        importlib.import_module("fastnn.sklearn")


def test_memmap_input_is_read_a_batch_at_a_time(tmp_path, monkeypatch):
    """A memmap passes scikit-learn's checks as a view of the file, and fastnn reads it a
    chunk at a time (``fastnn.outofcore``): the network of the same data in memory."""
    from fastnn import outofcore

    checked = []
    check = outofcore.Rows.check
    monkeypatch.setattr(outofcore.Rows, "check",
                        lambda rows, *args: checked.append(rows.what) or check(rows, *args))
    X, y = datasets.digits()
    X, y = X[:300], y[:300]
    np.save(tmp_path / "X.npy", X)
    Xm = np.load(tmp_path / "X.npy", mmap_mode="r")
    memory = NeuralNetClassifier(hidden=(16,), epochs=3, batch_size=32, random_state=0)
    mapped = clone(memory).fit(Xm, y)
    assert checked == ["X"]
    memory.fit(X, y)
    assert np.array_equal(memory.predict_proba(X), mapped.predict_proba(Xm))
    assert checked == ["X", "X"]  # and again by the prediction
