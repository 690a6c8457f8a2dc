"""``EpochRunner``: the one interface ``fit`` trains through.

A runner trains epochs of one training: a model's parameters and optimizer on the
prepared (X, Y), in batches of a fixed size, with fixed clipping. Three implement it:

- ``fastnn.steps.Steps``, the generic steps: each step op by op through the model's own
  objects, so any model trains on any backend (and, with ``fastnn.distributed``'s
  batches, as one rank of a data-parallel job);
- ``fastnn.replay.Replayer``, those steps recorded once and replayed (CUDA graphs);
- ``fastnn.kernels.numba.epoch.FusedEpoch`` (a whole epoch per kernel call) and
  ``FusedSteps`` (a kernel call per epoch for data-parallel ranks, which calls back
  into Python to sum each step's gradients over the ranks).

A backend offers a fused runner for a training's plan or returns None
(``Backend.fused_epoch``); ``fastnn.training.epoch_runner`` is the one function that
chooses among them. This module imports nothing of fastnn, so the kernel layer can
implement the interface without importing the model side.
"""


class EpochRunner:
    """Runs epochs of one training; see the module docstring.

    ``samples``: the rows an epoch trains on (every rank's, in a data-parallel job),
    which ``fit`` divides the sums by. ``chunk``: how many epochs ``fit`` should hand to
    one ``epochs`` call when nothing happens between epochs; 1 (the default) means it
    calls ``run`` epoch by epoch. ``backend``: the backend whose arrays it returns."""

    chunk = 1

    def __init__(self, backend, samples):
        self.backend, self.samples = backend, samples

    def run(self, order=None):
        """Train one epoch, taking the rows in ``order`` (a permutation of them, or None
        for their own order); the epoch's (loss sum, metric sum) as a device vector."""
        raise NotImplementedError

    def __call__(self, order=None):
        return self.run(order)

    def epochs(self, count):
        """Train ``count`` epochs in the rows' own order; their sums as a (count, 2)
        device array. Here: ``run`` epoch by epoch (a runner that can do better, in one
        call, overrides it and sets ``chunk``)."""
        return self.backend.xp.stack([self.run(None) for _ in range(count)])

    def finish(self):
        """Form anything the runner left unformed that a reader of the parameters'
        ``grad`` expects; ``fit`` calls it before callbacks' ``on_epoch_end`` and when it
        returns or raises. Here: nothing."""
