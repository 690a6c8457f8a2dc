"""The Numba backend: NumPy arrays, with the hot-path ops replaced by JIT-fused kernels
from ``fastnn.kernels.numba`` (see its ``ops`` for which kernel runs when), and whole
training epochs in one kernel call (its ``epoch``).

Creating it chooses the threading layer (TBB where it loads, else workqueue; never
OpenMP unless asked: see ``fastnn.kernels.numba.threads``) and the kernel cache directory, imports
the kernels and checks that the Numba internals the kernel layer calls are there; with a
Numba outside the tested range it also runs one small probe kernel
(``kernels/numba/probe.py``) through every mechanism of the layer. Where they do not
work, creating the backend raises BackendUnavailable with the reason, instead of a
first ``fit`` crashing. Nothing compiles until a kernel is first called or ``warmup``
runs (the probe, where it runs, is cached on disk like every kernel). Small kernels
stay on one thread (see bench/ for the measurements).
"""

import functools
import importlib.metadata
import importlib.util
import re
from pathlib import Path

import numpy as np

from fastnn.backends.numpy_backend import NumpyBackend
from fastnn.errors import BackendUnavailable
from fastnn.ops import Ops

INSTALL_HINT = "pip install 'fastnn[numba]'"
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"  # in a raw checkout


@functools.cache
def tested_numba():
    """(oldest, newest) minor versions of Numba that CI tests: the range of fastnn's
    numba requirement, written once in pyproject.toml (the newest is the minor below its
    cap). Read from the installed distribution's metadata, else from the pyproject.toml
    of a raw checkout; None where neither is there."""
    try:
        requirements = importlib.metadata.requires("fastnn") or []
    except importlib.metadata.PackageNotFoundError:  # its quoted strings
        text = PYPROJECT.read_text() if PYPROJECT.is_file() else ""
        requirements = re.findall(r'"([^"\n]*)"', text)
    for requirement in requirements:
        spec = re.match(r"numba\s*([<>=!~][^;]*)", requirement)
        floor = spec and re.search(r">=\s*(\d+\.\d+)", spec.group(1))
        cap = spec and re.search(r"<\s*(\d+)\.(\d+)", spec.group(1))
        if floor and cap:
            return floor.group(1), f"{cap.group(1)}.{int(cap.group(2)) - 1}"
    return None


class NumbaBackend(NumpyBackend):
    name = "numba"

    def __init__(self, numba_ops, numba_epoch, jit):
        super().__init__()
        self.ops = Ops(np, **numba_ops.OVERRIDES)
        self._numba_ops, self._numba_epoch = numba_ops, numba_epoch
        self.cache_dir = jit.CACHE_DIR

    def warmup(self, dtypes=("float32",), activations=None, optimizers=None, plans=()):
        """Compile (or load from the cache) the op-by-op kernels for ``dtypes``, the
        activations and optimizers named (None: every one), and the fused epoch of each
        of ``plans`` that takes one; returns seconds."""
        seconds = self._numba_ops.warmup([np.dtype(self.dtype(d)) for d in dtypes],
                                         activations, optimizers)
        return seconds + sum(self._numba_epoch.warmup(plan) for plan in plans)

    def fused_epoch(self, plan, X, Y, params, optimizer, batches=None):
        """A whole epoch per kernel call where the plan fits one (see
        ``fastnn.kernels.numba.epoch``)."""
        return self._numba_epoch.fused_epoch(plan, X, Y, params, optimizer, self, batches)


def create():
    try:
        import numba
    except ImportError as error:
        if importlib.util.find_spec("numba") is None or "numba" in str(error).split("'"):
            raise BackendUnavailable(
                "the 'numba' backend needs the numba package, which is not installed here; "
                "install it with: pip install 'fastnn[numba]'"
            ) from None
        raise BackendUnavailable(
            f"the 'numba' backend cannot start: importing numba failed ({error}); "
            "reinstall it with: pip install --force-reinstall 'fastnn[numba]'"
        ) from error

    from fastnn.kernels.numba import threads as numba_threads

    layer = numba_threads.choose(numba)
    try:
        from fastnn.kernels.numba import epoch as numba_epoch
        from fastnn.kernels.numba import jit as numba_jit
        from fastnn.kernels.numba import ops as numba_ops
        from fastnn.kernels.numba import probe as numba_probe

        numba_probe.check()
        if numba_probe.needed(numba.__version__, tested_numba()):
            numba_probe.run()
    except Exception as error:  # the kernel layer cannot work with this Numba: say why
        tested = tested_numba()
        tested = (f"numba {tested[0]} to {tested[1]}" if tested else
                  "the numba versions fastnn's pyproject.toml allows")
        raise BackendUnavailable(
            f"the 'numba' backend cannot start: fastnn's Numba kernels do not work with "
            f"numba {numba.__version__} here ({type(error).__name__}: {error}); they are "
            f"tested with {tested}: {INSTALL_HINT}"
        ) from error

    backend = NumbaBackend(numba_ops, numba_epoch, numba_jit)
    backend.threading_layer = layer  # (name, why), shown by `fastnn info`
    return backend
