"""Losses: each knows which output activation it fits, how to check and shape its
targets, and how to give the loss and the output layer's dZ.

Cross-entropies are computed from the output layer's logits Z (stable for any z);
the regression losses differentiate the output A and pass through the activation's
backward op. All losses are means over the batch (and over outputs for the
elementwise ones).
"""

from fastnn.names import lookup, normalize
from fastnn.validation import in_range


class Loss:
    name = "loss"
    task = "regression"  # or "binary" / "multiclass": decides metric and predict()

    def __repr__(self):
        return f"{type(self).__name__}()"

    def config(self):
        return {"name": self.name, **vars(self)}

    def check_output(self, activation, n_out):
        """Raise ValueError if this loss does not fit the output layer (regression
        losses fit any output activation)."""

    def prepare_targets(self, backend, y, n_out, dtype):
        """Validated targets as a (m, n_out) device array of ``dtype``."""
        xp = backend.xp
        if y.ndim == 1 and n_out == 1:
            y = xp.reshape(y, (y.shape[0], 1))
        if y.ndim != 2 or y.shape[1] != n_out:
            raise ValueError(
                f"y has shape {tuple(y.shape)} but the model has {n_out} output unit(s); "
                f"{self.name} needs y of shape (n_samples, {n_out})"
                + (" or (n_samples,)" if n_out == 1 else "")
            )
        return xp.astype(y, dtype)

    def value_and_grad(self, backend, Z, A, Y, activation, need_grad=True):
        """(loss, dZ, db) for the output layer; db may be None (the layer sums dZ)."""
        raise NotImplementedError


class _ElementwiseLoss(Loss):
    """Regression loss: mean of an elementwise function of r = A - Y."""

    def value_and_grad(self, backend, Z, A, Y, activation, need_grad=True):
        xp = backend.xp
        r = A - Y
        loss = xp.mean(self.elementwise(xp, r))
        if not need_grad:
            return loss, None, None
        dA = self.derivative(xp, r) / (r.shape[0] * r.shape[1])
        dZ, db = backend.ops.activation_backward(dA, Z, A, activation)
        return loss, dZ, db


class MSE(_ElementwiseLoss):
    """Mean squared error, mean((a - y)^2)."""

    name = "mse"

    def elementwise(self, xp, r):
        return r * r

    def derivative(self, xp, r):
        return 2.0 * r


class MAE(_ElementwiseLoss):
    """Mean absolute error, mean(|a - y|); less swayed by outliers than MSE."""

    name = "mae"

    def elementwise(self, xp, r):
        return xp.abs(r)

    def derivative(self, xp, r):
        return xp.sign(r)


class Huber(_ElementwiseLoss):
    """Quadratic for |a - y| <= delta, linear beyond: MSE's speed, MAE's robustness."""

    name = "huber"

    def __init__(self, delta=1.0):
        self.delta = in_range("huber delta", delta, 0.0, float("inf"))
        if self.delta == 0.0:
            raise ValueError("huber delta must be > 0; got 0")

    def __repr__(self):
        return f"Huber(delta={self.delta})"

    def elementwise(self, xp, r):
        a = xp.abs(r)
        c = xp.minimum(a, self.delta)  # a^2/2 below delta, delta*(a - delta/2) above
        return c * (a - 0.5 * c)

    def derivative(self, xp, r):
        return xp.clip(r, -self.delta, self.delta)


class BinaryCrossEntropy(Loss):
    """Binary (or multi-label) cross-entropy of a sigmoid output, from its logits."""

    name = "binary_crossentropy"
    task = "binary"

    def check_output(self, activation, n_out):
        _require_output(self.name, "sigmoid", activation, "softmax", "categorical_crossentropy")

    def prepare_targets(self, backend, y, n_out, dtype):
        Y = super().prepare_targets(backend, y, n_out, dtype)
        xp = backend.xp
        if not backend.read_bool(xp.all((Y >= 0) & (Y <= 1)), check=True):
            bad = backend.to_numpy(y)
            raise ValueError(
                f"y has values outside [0, 1] (e.g. {bad[(bad < 0) | (bad > 1)][0].item()!r}); "
                f"binary_crossentropy needs 0/1 labels (or probabilities)"
            )
        return Y

    def value_and_grad(self, backend, Z, A, Y, activation, need_grad=True):
        loss, dZ = backend.ops.sigmoid_bce(Z, A, Y, need_grad)
        return loss, dZ, None


class CategoricalCrossEntropy(Loss):
    """Cross-entropy of a softmax output, from its logits; integer or one-hot labels."""

    name = "categorical_crossentropy"
    task = "multiclass"

    def check_output(self, activation, n_out):
        _require_output(self.name, "softmax", activation, "sigmoid", "binary_crossentropy")
        if n_out < 2:
            raise ValueError(
                "categorical_crossentropy needs at least 2 output units (one per class); for "
                "two classes with one unit use a sigmoid output and binary_crossentropy"
            )

    def prepare_targets(self, backend, y, n_out, dtype):
        xp = backend.xp
        if y.ndim == 2 and y.shape[1] == n_out:  # one-hot or class probabilities
            Y = xp.astype(y, dtype)
            rows_ok = xp.all(xp.abs(xp.sum(Y, axis=1) - 1.0) <= 1e-4)
            if not backend.read_bool(xp.all((Y >= 0) & (Y <= 1)) & rows_ok, check=True):
                raise ValueError(
                    "y given as a (n_samples, n_classes) array must hold one-hot rows (or "
                    "probabilities that sum to 1); pass integer labels 0..k-1 instead"
                )
            return Y
        if y.ndim == 2 and y.shape[1] == 1:
            y = xp.reshape(y, (y.shape[0],))
        if y.ndim != 1:
            raise ValueError(
                f"y has shape {tuple(y.shape)}; categorical_crossentropy with {n_out} classes "
                f"needs integer labels of shape (n_samples,) or one-hot rows (n_samples, {n_out})"
            )
        in_range = (y >= 0) & (y < n_out)
        if xp.isdtype(y.dtype, "real floating"):
            in_range = in_range & (y == xp.round(y))
        if not backend.read_bool(xp.all(in_range), check=True):
            host = backend.to_numpy(y)
            bad = (host < 0) | (host >= n_out) | (host != host.round())
            row = int(bad.nonzero()[0][0])
            raise ValueError(
                f"y holds a label outside the class range at row {row} "
                f"(value {host[row].item()!r}); "
                f"the model has {n_out} classes, so labels must be integers 0..{n_out - 1}"
            )
        classes = xp.arange(n_out, device=backend.device)
        return xp.astype(xp.astype(y, classes.dtype)[:, None] == classes, dtype)

    def value_and_grad(self, backend, Z, A, Y, activation, need_grad=True):
        loss, dZ = backend.ops.softmax_xent(Z, A, Y, need_grad)
        return loss, dZ, None


def _require_output(loss, wanted, activation, sibling, sibling_loss):
    """A cross-entropy is computed from the logits of its own output activation only."""
    if activation.name != wanted:
        raise ValueError(
            f"{loss} needs a {wanted} output layer (it is computed from the logits for "
            f"stability), but the last layer's activation is {activation.name!r}; use "
            f"activation='{wanted}' on the output layer"
            + (f", or {sibling_loss}" if activation.name == sibling else "")
        )


TABLE = {cls.name: cls for cls in (MSE, MAE, Huber, BinaryCrossEntropy, CategoricalCrossEntropy)}
ALIASES = {
    "bce": "binary_crossentropy",
    "binary_cross_entropy": "binary_crossentropy",
    "log_loss": "binary_crossentropy",
    "cce": "categorical_crossentropy",
    "cross_entropy": "categorical_crossentropy",
    "categorical_cross_entropy": "categorical_crossentropy",
    "mean_squared_error": "mse",
    "mean_absolute_error": "mae",
}
FOR_OUTPUT = {"sigmoid": "binary_crossentropy", "softmax": "categorical_crossentropy"}


def get(loss, **params):
    """A Loss from a name ('mse', 'bce', 'huber', ...), a config dict, or an instance."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, dict):
        params = {k: v for k, v in loss.items() if k != "name"}
        loss = loss.get("name")
    if isinstance(loss, str):
        loss = ALIASES.get(normalize(loss), loss)
    cls = lookup("loss", loss, TABLE)
    try:
        return cls(**params)
    except TypeError:
        raise TypeError(f"loss {cls.name!r} takes no parameters {sorted(params)}") from None


def for_output(activation):
    """The natural loss for an output activation: sigmoid->BCE, softmax->CCE, else MSE."""
    return get(FOR_OUTPUT.get(activation.name, "mse"))
