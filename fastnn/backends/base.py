"""The backend object: an array namespace ``xp``, host<->device transfer, a seeded
RNG, and the table of hot-path ops.

The generic ``Backend`` is complete on its own: given any array-API namespace it
runs every op from ``fastnn.ops``. Accelerating backends subclass it and replace
only the ops they speed up.

Every copy between host and device goes through ``Backend._transfer``, which counts
it in ``backend.transfers`` (see ``Transfers``): uploads through ``asarray``, and
downloads through ``to_numpy``, ``read_scalars`` and ``read_bool``. Model code never
reads a device value any other way, so the counts show all host traffic; on the
NumPy backend they count the same logical crossings, which cost nothing there.
"""

import contextlib

import numpy as np

from fastnn.ops import Ops
from fastnn.random import CounterRNG

TO_DEVICE, TO_HOST = "to_device", "to_host"


class Transfers:
    """Counts of host<->device copies: how many and how many bytes each way.

    ``checks`` counts the device->host reads made by input validation (one boolean
    each, e.g. "is X finite?"); they are included in ``to_host`` too. Bytes are the
    size of the host-side array.
    """

    __slots__ = ("to_device", "to_host", "bytes_to_device", "bytes_to_host", "checks")

    def __init__(self):
        self.to_device = self.to_host = self.bytes_to_device = self.bytes_to_host = 0
        self.checks = 0

    def __repr__(self):
        return (f"Transfers(to_device={self.to_device}, to_host={self.to_host}, "
                f"bytes_to_device={self.bytes_to_device}, bytes_to_host={self.bytes_to_host}, "
                f"checks={self.checks})")

    def record(self, direction, nbytes, check=False):
        if direction == TO_DEVICE:
            self.to_device += 1
            self.bytes_to_device += nbytes
        else:
            self.to_host += 1
            self.bytes_to_host += nbytes
            self.checks += bool(check)


class Backend:
    """One array backend. Model code uses only ``xp``, ``ops`` and the methods here."""

    name = "generic"
    rng_class = CounterRNG
    captures = False  # whether ``capture`` records steps for replay (see ``capture``)

    def __init__(self, xp, device=None, ops=None):
        self.xp = xp
        self.device = device
        self.ops = ops if ops is not None else Ops(xp)
        self.transfers = Transfers()  # since the backend was made
        self._counters = []  # open count_transfers() blocks

    def __repr__(self):
        return f"<fastnn backend {self.name!r}>"

    def __deepcopy__(self, memo):
        return self  # a backend is a shared service, never copied with a model

    def dtype(self, name):
        """The namespace's dtype for 'float32' or 'float64'."""
        if name not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64'; got {name!r}")
        return getattr(self.xp, name)

    def is_array(self, x):
        """True if ``x`` is an array that already lives on this backend."""
        raise NotImplementedError

    # ---- the transfer guard: every host<->device copy passes here ----

    def _transfer(self, direction, x, dtype=None, check=False):
        """Copy ``x`` host->device (a NumPy array, cast to ``dtype``) or device->host
        (to a NumPy array), counting it in ``transfers`` and any open counters."""
        if direction == TO_DEVICE:
            out, nbytes = self._from_host(x, dtype), x.nbytes
        else:
            out = self._to_host(x)
            nbytes = out.nbytes
        for counts in (self.transfers, *self._counters):
            counts.record(direction, nbytes, check)
        return out

    @contextlib.contextmanager
    def count_transfers(self):
        """``with backend.count_transfers() as t:`` counts the block's copies in ``t``."""
        counts = Transfers()
        self._counters.append(counts)
        try:
            yield counts
        finally:
            self._counters.remove(counts)

    def asarray(self, x, dtype=None):
        """Host data (or an array of this backend) as an array of this backend."""
        if self.is_array(x):
            return x if dtype is None or x.dtype == dtype else self.xp.astype(x, dtype)
        self.reject_foreign(x)
        return self._transfer(TO_DEVICE, np.asarray(x), dtype)

    def to_numpy(self, x):
        """A device array (or scalar) copied to a NumPy array on the host."""
        return self._transfer(TO_HOST, x)

    def read_scalars(self, *values):
        """Python floats of device scalars (Python numbers pass through), in one transfer."""
        on_device = [i for i, v in enumerate(values) if type(v) not in (int, float, bool)]
        out = [None if i in on_device else float(v) for i, v in enumerate(values)]
        if on_device:
            xp = self.xp
            stacked = xp.stack([xp.astype(xp.asarray(values[i]), xp.float64) for i in on_device])
            for i, v in zip(on_device, self._transfer(TO_HOST, stacked).tolist()):
                out[i] = v
        return tuple(out)

    def read_bool(self, condition, check=False):
        """A device boolean scalar as a Python bool, in one transfer; ``check=True``
        marks it as an input-validation read (tallied in ``transfers.checks``)."""
        if type(condition) is bool:
            return condition
        return bool(self._transfer(TO_HOST, condition, check=check))

    def _from_host(self, host, dtype):
        return self.xp.asarray(host, dtype=dtype, device=self.device)

    def _to_host(self, x):
        return np.asarray(x)

    def reject_foreign(self, x):
        """Raise a clear TypeError for an array of another backend (never convert it)."""
        foreign = hasattr(x, "__array_namespace__") or hasattr(x, "__cuda_array_interface__")
        if foreign and not isinstance(x, np.ndarray):
            raise TypeError(
                f"got a {type(x).__module__}.{type(x).__name__} array, but this model runs on "
                f"the {self.name!r} backend; pass NumPy data, or move the model with "
                f"model.to(...) to the backend that owns the array"
            )

    # ---- device services ----

    def rng(self, seed=None):
        """A seeded counter-based generator that makes arrays on this device; the same
        seed gives the same numbers on every backend (see ``fastnn.random``)."""
        return self.rng_class(self, seed)

    def warmup(self, dtypes=("float32",), activations=None, optimizers=None, plans=()):
        """Compile this backend's kernels ahead of use, for ``dtypes``, the activations and
        optimizers named (None: every one) and the fused epochs of ``plans``
        (``fastnn.plan.DensePlan``); returns seconds (none to compile here)."""
        return 0.0

    def fused_epoch(self, plan, X, Y, params, optimizer, batches=None):
        """A ``fastnn.runner.EpochRunner`` training ``plan`` (a ``fastnn.plan.DensePlan``)
        on the prepared (X, Y) faster than the generic steps, or None to have ``fit`` run
        those (``fastnn.training.epoch_runner`` chooses).

        ``params`` are the model's trainable Parameters (the runner reads ``value`` and
        writes ``grad``), ``optimizer`` the Optimizer the plan names (the runner reads
        its settings, ``state`` and ``t`` on each call and adds the steps it takes to
        ``t``). ``batches`` (a ``fastnn.steps.Batches``) say which rows each step takes
        and what happens between backprop and the update: None, or local ones, for one
        process; a data-parallel rank's (``local`` False) need their hooks called
        between the steps (``spans``, ``scale``, ``sum_gradients``, ``total``). The
        generic backend has no runner."""
        return None

    def copy(self, x):
        """A device-side copy of ``x``."""
        return self.xp.asarray(x, copy=True)

    def synchronize(self):
        """Wait until queued device work has finished (a no-op on the host); benchmarks
        call it before reading the clock."""

    def capture(self, step):
        """Record the device work of ``step()`` for replay, or None where this backend
        cannot (here: it runs every step as it comes).

        A backend that can (``captures`` is True) returns an object whose ``replay()``
        runs the recorded work again, on the same arrays, without running ``step``'s
        Python, and whose ``output`` is what ``step`` returned, rewritten by each replay.
        Recording does not run the work. Whatever the work reads must therefore stay at
        its address between replays, and any value that changes from step to step must
        be read from device memory, not passed as a Python number (``fastnn.replay``
        sees to both)."""
        return None
