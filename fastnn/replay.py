"""Replaying recorded epochs: ``fit`` on a small model, one launch per epoch.

A training step of a small network is a few dozen tiny device operations, and on a
GPU launching them costs more than running them. Where the backend can record device
work for replay (``backend.capture``: CUDA graphs on the CuPy backend) and the model's
epochs qualify (``unsuitable``), ``fastnn.training.epoch_runner`` wraps the generic
steps of ``fastnn.steps`` in a ``Replayer``: ``fit`` then runs its epochs in chunks
(``epochs(count)``, as it does with the Numba backend's fused epochs), the first epoch
as usual (it also creates the optimizer state and compiles the kernels), then the next
one recorded once and replayed for the rest.

A replay runs the recorded work on the recorded arrays, so the ``Replayer`` keeps
two promises. Every array an epoch reads persists at its address: the data, the
parameters and the optimizer state (all updated in place); if any of them is swapped
for another array, the epoch is recorded again. Every number that changes from step
to step comes from device memory: while an epoch is recorded the optimizer reads its
learning rate and its per-step numbers (Adam's bias corrections) from a
``StepClock``, whose table holds one row per step of the chunk, uploaded before the
chunk and picked on the device by a counter. Everything else a step uses (the
optimizer's other settings, clipping bounds, batch sizes) is fixed for the ``fit``.
"""

import operator

import numpy as np

from fastnn import layers, optimizers
from fastnn.runner import EpochRunner

CHUNK_STEPS = 256  # training steps per ``epochs`` call (fit checks finiteness between calls)
MAX_STEPS = 64  # steps per epoch beyond which an epoch is not recorded: a big graph, and
# steps long enough that launching them no longer dominates


def unsuitable(model, steps):
    """Why ``fit``'s epochs on ``model`` (``steps`` steps each) cannot be recorded and
    replayed here, or None when they can."""
    if not model.backend.captures:
        return f"the {model.backend.name!r} backend does not record steps for replay"
    if steps > MAX_STEPS:
        return f"an epoch has {steps} steps, more than {MAX_STEPS}"
    for i, layer in enumerate(model.layers):
        if not (layers.builtin(layer) and layer.replayable):  # Dropout draws masks on the
            return (f"layer {i} is a {type(layer).__name__}, whose steps cannot be "  # host
                    f"recorded")  # side; BatchNorm swaps arrays; a user's layer may do either
    if type(model.optimizer) not in optimizers.TABLE.values():
        return (f"{type(model.optimizer).__name__} is not one of fastnn's optimizers, whose "
                f"updates read the step count and learning rate from the device")
    return None


class StepClock:
    """An optimizer's per-step numbers in device memory, for recorded steps.

    The learning rate is a device scalar; the other numbers a step needs (Adam's bias
    corrections, from ``optimizer.step_numbers(t)``) are a table with a row per step of
    the coming ``epochs`` call, computed on the host exactly as an unrecorded step
    computes them and uploaded once per call (``sync``); each step takes its row with a
    device counter (``tick``). Every array keeps its address for the clock's life."""

    def __init__(self, backend, dtype, optimizer, rows):
        xp = backend.xp
        self.backend, self.dtype = backend, dtype
        self.width = len(optimizer.step_numbers(1))
        self.lr = xp.zeros((), dtype=dtype, device=backend.device)
        self.table = xp.zeros((rows, self.width), dtype=dtype, device=backend.device)
        self.row = xp.zeros((1,), dtype=xp.int64, device=backend.device)
        self.numbers = ()  # this step's row, as device scalars (set by ``tick``)
        self.held_lr = None  # the learning rate on the device

    def sync(self, optimizer, steps):
        """Ready the device for the optimizer's next ``steps`` steps: its learning rate
        (uploaded when it changed) and their rows of the table (one upload)."""
        if optimizer.lr != self.held_lr:
            self.lr[...] = self.backend.asarray(np.asarray(optimizer.lr), self.dtype)
            self.held_lr = optimizer.lr
        if self.width:
            rows = [optimizer.step_numbers(optimizer.t + k) for k in range(1, steps + 1)]
            self.table[:steps, ...] = self.backend.asarray(np.array(rows), self.dtype)
            self.row[...] = 0

    def tick(self):
        """One step: take its row of the table and move the counter on, on the device."""
        if self.width:
            xp = self.backend.xp
            picked = xp.take(self.table, self.row, axis=0)
            self.numbers = tuple(picked[0, j] for j in range(self.width))
            self.row += 1


class Replayer(EpochRunner):
    """The generic steps (a ``fastnn.steps.Steps``) with ``epochs(count)``: epochs
    replayed from a recording (see the module docstring). ``run(order)`` runs one epoch
    as it comes (a shuffled one, or one between callbacks), unrecorded."""

    def __init__(self, model, steps):
        super().__init__(model.backend, steps.samples)
        self.model, self.steps_runner, self.steps = model, steps, steps.steps_per_epoch
        self.chunk = max(2, CHUNK_STEPS // self.steps)
        self.clock = self.graph = None
        self.bound = ()  # what the recording was made with (see ``binding``)

    def run(self, order=None):
        return self.steps_runner.run(order)

    def binding(self):
        """The optimizer, its settings, and every array a recorded epoch reads or
        writes in place: parameters, buffers and optimizer state (compared by identity;
        holding them keeps them from being freed while the graph uses their memory)."""
        optimizer = self.model.optimizer
        settings = {k: v for k, v in optimizer.config().items() if k != "lr"}
        arrays = [p.value for p in (*self.model.parameters(), *self.model.buffers())]
        return (optimizer, settings, optimizer.state,
                *[a for arrays_of in optimizer.state for a in arrays_of], *arrays)

    def current(self):
        """True if the recording still applies: same optimizer, settings and arrays."""
        now = self.binding()
        return (self.graph is not None and len(now) == len(self.bound)
                and now[0] is self.bound[0] and now[1] == self.bound[1]
                and all(map(operator.is_, now[2:], self.bound[2:])))

    def recorded_step(self):
        """One epoch with the optimizer on the clock: the epoch that is recorded, and
        the one run before recording (its warm-up)."""
        optimizer = self.model.optimizer
        optimizer.clock = self.clock
        try:
            return self.run(None)
        finally:
            optimizer.clock = None

    def epochs(self, count):
        """``count`` epochs in order; their (loss, metric) sums as a (count, 2) array."""
        backend = self.model.backend
        sums = backend.xp.zeros((count, 2), dtype=self.model.dtype, device=backend.device)
        for start in range(0, count, self.chunk):
            self.run_chunk(sums, start, min(count, start + self.chunk))
        return sums

    def run_chunk(self, sums, start, stop):
        """Epochs ``start`` to ``stop`` (at most ``chunk``), their sums into ``sums``:
        the first as usual and the rest recorded and replayed if the recording is not
        current (the first use, or an array or the optimizer swapped), else all
        replayed."""
        backend, optimizer = self.model.backend, self.model.optimizer
        fresh = not self.current()
        if fresh:
            self.graph = None  # its memory goes before the next recording takes more
            self.clock = StepClock(backend, self.model.dtype, optimizer,
                                   self.chunk * self.steps)
        self.clock.sync(optimizer, (stop - start) * self.steps)
        if fresh:
            sums[start, ...] = self.recorded_step()  # makes the optimizer state on first use
            start += 1
            self.record()
        if self.graph is None:  # the backend stopped recording (captures turned off)
            for i in range(start, stop):
                sums[i, ...] = self.run(None)
            return
        for i in range(start, stop):
            self.graph.replay()
            sums[i, ...] = self.graph.output
        optimizer.t += (stop - start) * self.steps

    def record(self):
        """Record one epoch for replay. Recording runs the epoch's Python but not its
        device work, so the host's step count is put back afterwards."""
        optimizer = self.model.optimizer
        t = optimizer.t
        try:
            self.graph = self.model.backend.capture(self.recorded_step)
        finally:
            optimizer.t = t
        self.bound = self.binding()
