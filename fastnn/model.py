"""Sequential: a stack of layers with a loss, trained by ``fit``.

The high-level API (``fit``, ``predict``, ``predict_proba``, ``evaluate``) takes
NumPy (or the backend's own) arrays, or out-of-core data such as a ``np.memmap``, read
a chunk of rows at a time (``fastnn.outofcore``), and returns NumPy; the layer-level
API (``forward``, ``compute_gradients``) takes and returns arrays of the backend.
Data is batch-first: X has shape (n_samples, n_features), or (n_samples, channels,
height, width) for images (NCHW, as in PyTorch).
"""

import math

import numpy as np

from fastnn import backends, fusion, losses, metrics, outofcore
from fastnn.errors import NotDifferentiable, NotFinite
from fastnn.layers import TYPES, Dense, Layer
from fastnn.validation import (
    as_device_array,
    check_rows,
    check_samples,
    positive_int,
    sample_shape,
    seed_or_none,
)

EVAL_BATCH = 8192  # rows per forward pass in predict/evaluate, to bound memory


class Sequential:
    """Layers applied in order; the last must be a Dense layer (the output layer).

    Each layer's input and output shape are inferred from the model's input shape: one
    sample's, ``input_shape`` (e.g. (1, 28, 28) for 28x28 grey images), which may be
    left out when the first layer fixes it (a Dense layer's n_in). Building fails,
    naming the layer, where a layer cannot take what the layer before it gives.
    The layers are built in place (their parameters created on the backend).
    ``loss='auto'`` picks binary cross-entropy for a sigmoid output, categorical
    cross-entropy for softmax, and MSE otherwise. ``seed`` fixes the initial weights
    (identical on every backend) and the default shuffling and dropout streams.
    """

    def __init__(self, layers, loss="auto", dtype="float32", seed=None, backend=None,
                 input_shape=None):
        self.backend = backends.get_backend() if backend is None else backends.load(backend)
        self.layers = list(layers)
        _check_stack(self.layers)
        self.shapes = _infer_shapes(self.layers, _input_shape(self.layers, input_shape))
        self.dtype_name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
        self.dtype = self.backend.dtype(self.dtype_name)
        self.seed = seed_or_none("seed", seed)
        rng = np.random.default_rng(self.seed)
        for layer in self.layers:
            layer.build(self.backend, self.dtype, rng)
        # backprop stops at the first layer with parameters; it needs no input gradient
        self.first = next(i for i, layer in enumerate(self.layers) if layer.params)
        self.layers[self.first].needs_input_grad = False
        self.output = self.layers[-1]
        # what forward runs (a Conv2D and the MaxPool2D after it as one step), and the
        # steps backprop runs: from the one holding the first layer with parameters
        steps = fusion.steps(self.layers)
        self.steps = [step for step, _ in steps]
        self.backprop_steps = [step for step, i in steps[:-1] if i >= self.first]
        for layer in self.layers[:-1]:  # only the output layer's Z (the logits) is read later
            if hasattr(layer, "keep_z"):
                layer.keep_z = False
        out = self.output.activation
        self.loss = losses.for_output(out) if loss == "auto" else losses.get(loss)
        self.loss.check_output(out, self.output.n_out)
        self.optimizer = None
        self.history = {}
        self.epochs_trained = 0  # across fit calls and checkpoints; seeds each epoch's randomness
        self.train_seed = None  # the seed fit used last (see fastnn.training.fit)
        self.lr_schedule = None
        self.stop_training = False  # a callback sets it to end fit after the current epoch

    def __repr__(self):
        inner = ", ".join(repr(layer) for layer in self.layers)
        extra = ""  # what building it again needs beyond the layers (a CNN's input_shape)
        if _own_input_shape(self.layers) != self.input_shape:
            extra += f", input_shape={self.input_shape}"
        if self.dtype_name != "float32":
            extra += f", dtype={self.dtype_name!r}"
        return (f"Sequential([{inner}], loss={self.loss.name!r}{extra}, "
                f"backend={self.backend.name!r})")

    @property
    def input_shape(self):
        """One sample's input shape: (n_features,), or (channels, height, width)."""
        return self.shapes[0]

    @property
    def n_in(self):
        """The number of input values per sample (features, or C*H*W for images)."""
        return math.prod(self.input_shape)

    @property
    def n_out(self):
        return self.output.n_out

    @property
    def task(self):
        """'binary', 'multiclass' or 'regression', from the loss."""
        return self.loss.task

    def parameters(self):
        """All trainable Parameters, layer by layer (the optimizer's state follows this order)."""
        return [p for layer in self.layers for p in layer.params]

    def buffers(self):
        """All non-trainable state arrays (BatchNorm running statistics), layer by layer."""
        return [b for layer in self.layers for b in layer.buffers]

    # ---- layer-level API: backend arrays in, backend arrays out ----

    def forward(self, X, training=False):
        """The output layer's activations for a backend array X."""
        for step in self.steps:
            X = step.forward(X, training)
        return X

    def compute_gradients(self, X, Y, scale=None):
        """Forward in training mode and backprop; sets every Parameter.grad.

        ``scale`` multiplies the loss gradient: data-parallel training gives each rank's
        share of the global batch, so that the summed gradients are the global batch's.
        Returns (loss, output activations) as backend arrays.
        """
        A = self.forward(X, training=True)
        _, Z, _ = self.output.cache
        loss, dZ, db = self.loss.value_and_grad(self.backend, Z, A, Y, self.output.activation)
        if scale is not None:
            dZ, db = dZ * scale, (None if db is None else db * scale)
        grad = self.output.backward_from_z(dZ, db)
        for step in reversed(self.backprop_steps):
            grad = step.backward(grad)
        return loss, A

    def loss_value(self, X, Y, training=False):
        """(loss, output activations) for backend arrays, without gradients."""
        A = self.forward(X, training)
        _, Z, _ = self.output.cache
        loss, _, _ = self.loss.value_and_grad(
            self.backend, Z, A, Y, self.output.activation, need_grad=False
        )
        return loss, A

    def check_trainable(self):
        """Raise NotDifferentiable if a layer's activation has no gradient."""
        for i, layer in enumerate(self.layers):
            activation = getattr(layer, "activation", None)
            if activation is not None and not activation.differentiable:
                raise NotDifferentiable(
                    f"layer {i} ({layer!r}) uses the {layer.activation.name!r} activation, "
                    f"which has no gradient, so this model cannot be trained or gradient-checked; "
                    f"use 'sigmoid' or 'relu' to train, or set weights by hand for inference"
                )

    # ---- data preparation ----

    def prepare_inputs(self, X, what="X"):
        """X validated and cast to the model's dtype on its backend; out-of-core X
        (``fastnn.outofcore``) as ``Rows`` that do so a chunk at a time."""
        if outofcore.streams(X):
            return self._stream_inputs(X, what)
        X = as_device_array(self.backend, X, what, self.largest())
        check_samples(X, self.input_shape, what)
        return self.backend.xp.astype(X, self.dtype) if X.dtype != self.dtype else X

    def _stream_inputs(self, X, what):
        """``prepare_inputs`` of out-of-core X: checked in one pass over its chunks."""
        backend, dtype, limit = self.backend, self.dtype, self.largest()
        X = outofcore.Rows(backend, X, what, lambda host: backend.asarray(host, dtype))
        check_samples(X, self.input_shape, what)
        return X.check(lambda host, row: backend.asarray(
            as_device_array(backend, host, what, limit, row), dtype))

    def largest(self):
        """The largest finite value of the model's dtype: input beyond it cannot be cast."""
        return float(np.finfo(self.dtype_name).max)

    def prepare(self, X, y, names=("X", "y")):
        """(X, Y) validated, on the backend, Y shaped (n_samples, n_outputs) for the loss."""
        X = self.prepare_inputs(X, names[0])
        if outofcore.streams(y):
            return X, self._stream_targets(X, y, names)
        y = as_device_array(self.backend, y, names[1], self.largest())
        check_rows(X, y, *names)
        return X, self.loss.prepare_targets(self.backend, y, self.n_out, self.dtype)

    def _stream_targets(self, X, y, names):
        """``prepare``'s Y of out-of-core y: ``Rows`` checked in one pass over its chunks."""
        backend, limit = self.backend, self.largest()

        def targets(y):
            return self.loss.prepare_targets(backend, y, self.n_out, self.dtype)

        Y = outofcore.Rows(backend, y, names[1], lambda host: targets(backend.asarray(host)))
        check_rows(X, Y, *names)
        return Y.check(lambda host, row: targets(
            as_device_array(backend, host, names[1], limit, row)))

    # ---- high-level API: NumPy in, NumPy out ----

    def fit(self, X, y, epochs=1, **options):
        """Train; returns the history ``{'loss': [...], 'accuracy' or 'rmse': [...],
        'val_loss': [...], ...}`` with one entry per epoch. The options (batch_size,
        optimizer, lr, shuffle, seed, validation_data, verbose, callbacks, lr_schedule,
        clip_norm, clip_value, progress, distributed) are described in
        ``fastnn.training.fit``."""
        from fastnn.training import fit

        return fit(self, X, y, epochs=epochs, **options)

    def save(self, path):
        """Write the model, its optimizer state and training position to ``path`` (.npz),
        atomically; ``fastnn.load(path)`` reads it back. See ``fastnn.checkpoint``."""
        from fastnn.checkpoint import save

        return save(self, path)

    def predict_proba(self, X, batch_size=EVAL_BATCH):
        """The output layer's activations (probabilities for classifiers), as NumPy."""
        X = self.prepare_inputs(X)
        batch_size = positive_int("batch_size", batch_size)
        to_numpy = self.backend.to_numpy
        with _quiet_overflow():  # checked below, and reported as one error
            parts = [to_numpy(self.forward(X[rows, ...])) for rows in _chunks(X, batch_size)]
        out = np.concatenate(parts)
        finite = np.isfinite(out).all(axis=1)
        if not finite.all():
            rows = np.flatnonzero(~finite)
            raise NotFinite(f"the model's outputs are NaN or infinite for {rows.size} of "
                            f"{out.shape[0]} rows of X (the first: row {rows[0]}); "
                            + self._overflow(X))
        return out

    def predict(self, X, batch_size=EVAL_BATCH):
        """Class labels for classifiers (0/1, or the arg-max class), values for regression.

        A single output unit gives shape (n_samples,).
        """
        out = self.predict_proba(X, batch_size)
        if self.task == "multiclass":
            return out.argmax(axis=1)
        if self.task == "binary":
            out = (out >= 0.5).astype(np.int64)
        return out[:, 0] if out.shape[1] == 1 else out

    def evaluate(self, X, y, batch_size=EVAL_BATCH):
        """``{'loss': ..., 'accuracy' or 'rmse': ...}`` on (X, y), in evaluation mode."""
        X, Y = self.prepare(X, y)
        with _quiet_overflow():
            scores = self.evaluate_prepared(X, Y, positive_int("batch_size", batch_size))
        if not np.isfinite(scores["loss"]):
            raise NotFinite(f"the loss on (X, y) is {scores['loss']}; " + self._overflow(X))
        return scores

    def _overflow(self, X):
        """Why finite inputs gave non-finite results, with the sizes involved."""
        host = self.backend.to_numpy
        inputs = X.largest() if isinstance(X, outofcore.Rows) else float(np.max(np.abs(host(X))))
        params = max((float(np.max(np.abs(host(p.value)))) for p in self.parameters()),
                     default=0.0)
        return (f"every input is finite, so the arithmetic overflowed {self.dtype_name} "
                f"inside the network (the largest input is {inputs:.3g} in magnitude, the "
                f"largest parameter {params:.3g}). Scale the inputs "
                f"(fastnn.data.standardize) or use dtype='float64'; if the parameters are "
                f"what grew large (a diverging fit), retrain with a lower learning rate or "
                f"clip_norm")

    def new_sums(self):
        """A device vector for the running (loss, metric) sums of a pass over the data,
        read back in one transfer at its end."""
        return self.backend.xp.zeros(2, dtype=self.dtype, device=self.backend.device)

    def evaluate_prepared(self, X, Y, batch_size=EVAL_BATCH):
        """``evaluate`` for data already passed through ``prepare``."""
        return self.scores(self.evaluation_sums(X, Y, batch_size), X.shape[0])

    def evaluation_sums(self, X, Y, batch_size=EVAL_BATCH):
        """The (loss sum, metric sum) device vector of prepared (X, Y) in evaluation mode."""
        sums = self.new_sums()
        for rows in _chunks(X, batch_size):
            Xb, Yb = X[rows, ...], Y[rows, ...]
            loss, A = self.loss_value(Xb, Yb)
            self.backend.ops.tally(sums, loss, Xb.shape[0], self.task, A, Yb)
        return sums

    def scores(self, sums, m):
        """``{'loss': ..., 'accuracy' or 'rmse': ...}`` from the sums over ``m`` samples."""
        loss_sum, score_sum = self.backend.to_numpy(sums).tolist()
        return {
            "loss": loss_sum / m,
            metrics.name_for(self.task): metrics.finish(self.task, score_sum, m),
        }

    # ---- moving between backends ----

    def to(self, backend):
        """Move parameters and optimizer state to another backend (name or object)."""
        target = backends.load(backend)
        source = self.backend

        def convert(array):
            return target.asarray(source.to_numpy(array))

        for layer in self.layers:
            layer.to(target, convert)
        if self.optimizer is not None:
            self.optimizer.move_state(convert)
        self.backend = target
        self.dtype = target.dtype(self.dtype_name)
        return self


def _quiet_overflow():
    """NumPy's overflow warnings off: a non-finite result is raised as NotFinite."""
    return np.errstate(over="ignore", invalid="ignore", divide="ignore")


def _chunks(X, size):
    """Row slices of at most ``size`` rows, never running past the end (which the array
    API leaves unspecified)."""
    n = X.shape[0]
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _check_stack(layers):
    if not layers:
        raise ValueError("Sequential needs at least one layer")
    for i, layer in enumerate(layers):
        if not isinstance(layer, Layer):
            raise TypeError(
                f"layer {i} is a {type(layer).__name__}, not a fastnn layer "
                f"({', '.join(TYPES)})"
            )
    if not isinstance(layers[-1], Dense):
        raise ValueError(
            f"the last layer must be a Dense output layer; got {layers[-1]!r}"
        )


def _input_shape(layers, given):
    """One sample's input shape: ``given``, else the one the first layer fixes (after any
    layers that pass every shape through, such as Dropout)."""
    if given is not None:
        return sample_shape(given)
    shape = _own_input_shape(layers)
    if shape is not None:
        return shape
    layer = next(layer for layer in layers if not layer.keeps_shape)
    raise ValueError(
        f"the model cannot tell the shape of its input from layer {layers.index(layer)} "
        f"({layer!r}); pass one sample's shape, e.g. Sequential(layers, input_shape=(1, 28, "
        f"28)) for 28x28 images of 1 channel (channels, height, width)"
    )


def _own_input_shape(layers):
    """The input shape the first layer fixes (after any layers that pass every shape
    through, such as Dropout), or None (a Conv2D, Flatten or pooling layer first)."""
    for layer in layers:
        if layer.input_shape is not None:
            return tuple(layer.input_shape)
        if not layer.keeps_shape:
            return None
    return None


def _infer_shapes(layers, input_shape):
    """[the model's input shape, then each layer's output shape], one sample's each;
    a ValueError names the first layer that cannot take its input, and the fix."""
    shapes = [input_shape]
    for i, layer in enumerate(layers):
        source = "the layer before it" if i else f"the model's input_shape {input_shape}"
        try:
            shapes.append(tuple(layer.output_shape(shapes[-1], source)))
        except ValueError as error:
            raise ValueError(f"layer {i} ({layer!r}) {error}") from None
    return shapes
