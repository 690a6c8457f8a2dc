"""One epoch of mini-batch training steps: the part of ``fit`` that runs per batch.

``epoch_steps(model, X, Y, batch, clip_norm, clip_value)`` returns ``run(order)``, which
trains one epoch over (X, Y) in mini-batches of ``batch`` rows (taken in ``order``, a
permutation of the rows, or in order when it is None) and returns a device vector of
the epoch's (loss sum, metric sum). This generic version runs each step op by op: the
forward pass, the loss, backprop, optional gradient clipping and the optimizer, each
through the model's own objects, so it trains any model on any backend.

``fit`` runs it unless the backend offers a fused runner for the training's plan
(``Backend.fused_epoch``; Numba does, one kernel call per epoch for stacks of small
Dense layers, where per-step Python overhead dominates). Such a runner is called as
``run(order)`` too, and may also offer ``run.epochs(count)`` (several epochs in one
call, their sums as a (count, 2) array) with ``run.chunk`` (how many epochs a call
should take) and ``run.samples``, which ``fit`` uses when nothing happens between
epochs, and ``run.finish()``, which ``fit`` calls before anything may read the
parameters' ``grad`` (a runner may leave a gradient unformed until then). On a backend
that records steps for replay (CUDA graphs), this generic runner offers ``epochs`` too,
by replaying a recorded epoch (``fastnn.replay``).

Which rows make each step, and what happens to the gradients between backprop and the
update, is the ``batches`` object's job (``Batches`` here: one process). Data-parallel
training passes its own (``fastnn.distributed.shards``): this rank's part of every
global batch, the gradients summed over the ranks, the epoch's sums likewise. Such
steps talk to the other ranks, so they are never recorded for replay.
"""

import functools

from fastnn import metrics, replay


def epoch_steps(model, X, Y, batch, clip_norm=None, clip_value=None, batches=None):
    """A function running one epoch of steps on (X, Y); see the module docstring.
    ``batches``: None for ``Batches(xp, X, Y, batch)``, or a replacement with its methods."""
    backend, xp, task = model.backend, model.backend.xp, model.task
    params = model.parameters()
    batches = Batches(xp, X, Y, batch) if batches is None else batches
    clipping = clip_norm is not None or clip_value is not None

    def run(order=None):
        sums = model.new_sums()
        for Xb, Yb in batches(order):
            loss, A = model.compute_gradients(Xb, Yb, batches.scale)
            batches.reduce(params)
            if clipping:
                clip(xp, params, clip_norm, clip_value)
            model.optimizer.step(params, backend)
            sums[0] += loss * Xb.shape[0]
            sums[1] += metrics.batch_score(xp, task, A, Yb)
        return batches.total(sums)

    if not batches.recordable:
        return run
    m = X.shape[0]
    return replay.offer(model, run, m, -(-m // batch))


class Batches:
    """The steps of one process: rows [start, start + batch) of (X, Y), taken in
    ``order`` (a permutation of the rows, or None for their own order)."""

    scale = None  # what compute_gradients multiplies the loss gradient by (None: nothing)
    recordable = True  # whether its steps may be recorded for replay (device work only)

    def __init__(self, xp, X, Y, batch):
        self.xp, self.X, self.Y, self.batch = xp, X, Y, batch

    def __call__(self, order):
        m = self.X.shape[0]
        for start in range(0, m, self.batch):
            yield rows(self.xp, self.X, self.Y, start, min(start + self.batch, m), order)

    def reduce(self, params):
        """Between backprop and the update: nothing to combine in one process."""

    def total(self, sums):
        """The epoch's (loss sum, metric sum) device vector, as ``run`` returns it."""
        return sums


def rows(xp, X, Y, start, stop, order=None):
    """Rows start..stop-1 of X and Y, or the rows ``order[start:stop]`` names (``stop``
    must not pass the end: out-of-range slice ends are not portable)."""
    if order is None:
        return X[start:stop, ...], Y[start:stop, ...]
    idx = order[start:stop]
    return xp.take(X, idx, axis=0), xp.take(Y, idx, axis=0)


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
