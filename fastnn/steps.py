"""One epoch of mini-batch training steps, op by op: the generic ``EpochRunner``.

``Steps(model, X, Y, batch, clip_norm, clip_value)`` trains epochs over (X, Y) in
mini-batches of ``batch`` rows; ``run(order)`` takes them in ``order`` (a permutation of
the rows, or in order when it is None) and returns a device vector of the epoch's (loss
sum, metric sum). Each step runs op by op: the forward pass, the loss, backprop,
optional gradient clipping and the optimizer, each through the model's own objects, so
it trains any model on any backend. ``fastnn.training.epoch_runner`` chooses it where
the backend offers no fused runner for the training (see ``fastnn.runner``), and wraps
it for replay on a backend that records steps (``fastnn.replay``).

Which rows make each step, and what happens to the gradients between backprop and the
update, is the ``batches`` object's job (``Batches`` here: one process). Data-parallel
training passes its own (``fastnn.distributed.shards``): this rank's part of every
global batch, the gradients summed over the ranks, the epoch's sums likewise. Such
steps talk to the other ranks (``local`` is False), so they are never recorded for
replay; a fused runner calls the same hooks between its steps.
"""

import functools

from fastnn.outofcore import take
from fastnn.runner import EpochRunner


class Steps(EpochRunner):
    """The generic runner; see the module docstring. ``batches``: None for
    ``Batches(xp, X, Y, batch)``, or a replacement with its methods."""

    def __init__(self, model, X, Y, batch, clip_norm=None, clip_value=None, batches=None):
        self.batches = Batches(model.backend.xp, X, Y, batch) if batches is None else batches
        super().__init__(model.backend, self.batches.samples)
        self.model, self.clip_norm, self.clip_value = model, clip_norm, clip_value
        self.steps_per_epoch = -(-X.shape[0] // batch)

    def run(self, order=None):
        model, batches, backend = self.model, self.batches, self.backend
        xp, params = backend.xp, model.parameters()
        clipping = self.clip_norm is not None or self.clip_value is not None
        sums = model.new_sums()
        for Xb, Yb in batches(order):
            loss, A = model.compute_gradients(Xb, Yb, batches.scale)
            batches.reduce(params)
            if clipping:
                clip(xp, params, self.clip_norm, self.clip_value)
            model.optimizer.step(params, backend)
            backend.ops.tally(sums, loss, Xb.shape[0], model.task, A, Yb)
        return batches.total(sums)


class Batches:
    """The steps of one process: rows [start, start + batch) of (X, Y), taken in
    ``order`` (a permutation of the rows, or None for their own order)."""

    scale = None  # what compute_gradients multiplies the loss gradient by (None: nothing)
    local = True  # True: its steps need nothing from other processes between them, so
    # they may be recorded for replay (device work only) or run an epoch per kernel call

    def __init__(self, xp, X, Y, batch):
        self.xp, self.X, self.Y, self.batch = xp, X, Y, batch

    @property
    def samples(self):
        """The rows an epoch trains on (every process's)."""
        return self.X.shape[0]

    def spans(self, order):
        """(start, stop, order) of each step: it trains on rows start..stop-1 of X and
        Y, or on the rows ``order[start:stop]`` names where ``order`` is not None."""
        m = self.X.shape[0]
        for start in range(0, m, self.batch):
            yield start, min(start + self.batch, m), order

    def __call__(self, order):
        """The (X, Y) rows of each step."""
        for start, stop, order_ in self.spans(order):
            yield rows(self.xp, self.X, self.Y, start, stop, order_)

    def reduce(self, params):
        """Between backprop and the update: nothing to combine in one process."""

    def sum_gradients(self, flat):
        """Between backprop and the update of a runner that keeps every gradient in one
        flat buffer: that buffer summed over the processes (here: itself)."""
        return flat

    def total(self, sums):
        """The epoch's (loss sum, metric sum) device vector, as ``run`` returns it."""
        return sums


def rows(xp, X, Y, start, stop, order=None):
    """Rows start..stop-1 of X and Y, or the rows ``order[start:stop]`` names (``stop``
    must not pass the end: out-of-range slice ends are not portable). X or Y may be
    out-of-core ``fastnn.outofcore.Rows``, read here a step at a time."""
    if order is None:
        return X[start:stop, ...], Y[start:stop, ...]
    idx = order[start:stop]
    return take(xp, X, idx), take(xp, Y, idx)


def clip(xp, params, clip_norm, clip_value):
    """Clip gradients on the device: entries to +-clip_value, then the global L2 norm
    to clip_norm. No value is read back to the host (``xp.clip`` is not used: through
    array-api-compat, CuPy's copies its bounds from the host and indexes with a mask,
    which waits for the GPU)."""
    if clip_value is not None:
        for p in params:
            p.grad = xp.minimum(xp.maximum(p.grad, -clip_value), clip_value)
    if clip_norm is not None:
        scale = xp.minimum(clip_norm / global_norm(xp, [p.grad for p in params]), 1.0)
        for p in params:
            p.grad = p.grad * scale


def global_norm(xp, arrays):
    """sqrt(sum of squares) over all ``arrays`` as a device scalar, scaled by the
    largest magnitude first so the squares cannot overflow."""
    peak = functools.reduce(xp.maximum, [xp.max(xp.abs(a)) for a in arrays])
    peak = xp.maximum(peak, xp.finfo(peak.dtype).smallest_normal)
    total = functools.reduce(lambda s, a: s + xp.sum(xp.square(a / peak)), arrays, 0.0)
    return peak * xp.sqrt(total)
