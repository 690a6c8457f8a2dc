"""Gradient checking: backprop against a float64 central-difference gradient.

``gradcheck`` works on a float64 copy of the model (the original is untouched),
freezes dropout masks and BatchNorm's running statistics so every forward pass sees
the same network (BatchNorm runs in training mode, on batch statistics), and compares,
for each parameter, the analytic gradient g with the numerical one n by the
relative error ||g - n|| / (||g|| + ||n||). It passes when the worst one is below
``threshold``.

An entry whose one-sided differences disagree lies at a kink: a ReLU-like unit at
exactly 0, or tied maxima in a max-pooling window, as a conv layer gives where its
windows see only blank pixels while its bias is still zero. No finite difference is
the derivative there, so a failure at a kink need not be a backprop error; the result
counts those entries and says how to check again.
"""

import copy

import numpy as np

from fastnn.model import Sequential
from fastnn.outofcore import in_memory


class GradcheckResult:
    """Outcome of a gradient check; truthy when it passed."""

    def __init__(self, errors, threshold, kinks=None):
        self.errors = errors  # {"layer 0 W": relative error, ...}
        self.threshold = threshold
        self.kinks = kinks or {}  # {"layer 0 b": entries checked at a kink, ...}
        self.worst_param, self.max_rel_error = max(errors.items(), key=lambda kv: kv[1])
        self.passed = self.max_rel_error < threshold

    def __bool__(self):
        return self.passed

    def __repr__(self):
        verdict = "passed" if self.passed else "FAILED"
        text = (f"gradcheck {verdict}: worst relative error {self.max_rel_error:.2e} "
                f"({self.worst_param}) against threshold {self.threshold:.0e}")
        kinks = self.kinks.get(self.worst_param, 0)
        if not self.passed and kinks:
            lie = "lies" if kinks == 1 else "lie"
            text += (f"; {kinks} of its entries checked {lie} at a kink (a ReLU-like unit "
                     f"at exactly 0, or tied maxima in a max-pooling window, as blank pixels "
                     f"under a zero bias give), where no finite difference is the "
                     f"derivative, so this need not be a backprop error: check again with "
                     f"inputs moved off the kinks (e.g. X + 0.01), fewer samples, or smooth "
                     f"layers (tanh, AvgPool2D)")
        return text


def gradcheck(model, X, y, eps=1e-4, threshold=1e-6, max_entries=None, seed=0):
    """Compare backprop with central differences for every parameter of ``model``.

    eps: the central-difference step. 1e-4 (Saito's h) balances truncation error
    (~eps^2) against float64 round-off (~1e-16/eps), which dominates for small
    gradients such as the biases under a softmax layer.
    max_entries: check at most this many randomly chosen entries per parameter
    (None checks them all). Returns a GradcheckResult (``.passed``,
    ``.max_rel_error``, ``.errors``).
    """
    if not isinstance(model, Sequential):
        raise TypeError(f"gradcheck needs a fastnn Sequential model; got {type(model).__name__}")
    model.check_trainable()
    checked = _float64_copy(model)
    backend = checked.backend
    X, Y = checked.prepare(in_memory(X), in_memory(y))  # the checks use X whole
    for layer in checked.layers:
        if hasattr(layer, "frozen"):
            layer.frozen = True
    checked.compute_gradients(X, Y)  # draws the dropout masks, then keeps them
    rng = np.random.default_rng(seed)
    base = float(checked.loss_value(X, Y, training=True)[0])
    errors, kinks = {}, {}
    for li, layer in enumerate(checked.layers):
        for p in layer.params:
            analytic = backend.to_numpy(p.grad).astype(np.float64).reshape(-1)
            n = analytic.size
            picks = np.arange(n)
            if max_entries is not None and max_entries < n:
                picks = rng.choice(n, size=max_entries, replace=False)
            steps = np.array([
                _differences(checked, p, np.unravel_index(flat, p.value.shape), X, Y, eps)
                for flat in picks
            ])  # (plus, minus) losses of each entry
            name = f"layer {li} {p.name}"
            numeric = (steps[:, 0] - steps[:, 1]) / (2.0 * eps)
            errors[name] = _relative_error(analytic[picks], numeric)
            kinks[name] = _kinks(steps, base, eps)
    return GradcheckResult(errors, threshold, kinks)


def _float64_copy(model):
    checked = copy.deepcopy(model)
    xp = checked.backend.xp
    for p in checked.parameters() + checked.buffers():
        p.value = xp.astype(p.value, xp.float64)
    checked.dtype_name, checked.dtype = "float64", xp.float64
    return checked


def _differences(model, p, index, X, Y, eps):
    """The loss with the entry ``index`` of ``p`` moved by +eps and by -eps."""
    index = tuple(int(i) for i in index)
    original = float(p.value[index])
    p.value[index] = original + eps
    plus = float(model.loss_value(X, Y, training=True)[0])
    p.value[index] = original - eps
    minus = float(model.loss_value(X, Y, training=True)[0])
    p.value[index] = original
    return plus, minus


def _kinks(steps, base, eps):
    """How many entries lie at a kink: their one-sided differences disagree by far more
    than the curvature of a smooth loss (about eps times the slope) explains."""
    forward, backward = (steps[:, 0] - base) / eps, (base - steps[:, 1]) / eps
    gap = np.abs(forward - backward)
    return int(np.sum((gap > 0.01 * (np.abs(forward) + np.abs(backward))) & (gap > 1e-7)))


ZERO = 1e-8  # gradient norms below this count as zero (see _relative_error)


def _relative_error(a, b):
    """||a - b|| / (||a|| + ||b||), where a scale below ZERO counts as ZERO: a gradient
    that is exactly zero (a bias feeding a BatchNorm, which takes the mean out) comes
    back from backprop as round-off, ~1e-16, and from central differences as 0, which
    is agreement, not a relative error of 1; central differences cannot resolve
    gradients that small anyway (their own round-off is ~1e-16 * |loss| / eps)."""
    diff = float(np.linalg.norm(a - b))
    scale = float(np.linalg.norm(a) + np.linalg.norm(b))
    return 0.0 if diff == 0.0 else diff / max(scale, ZERO)
