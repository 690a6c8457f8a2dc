"""The Numba backend: NumPy arrays, with the hot-path ops replaced by JIT-fused kernels
from ``fastnn.kernels`` (see ``numba_ops`` for which kernel runs when).

Creating it chooses the threading layer (TBB where it loads, else workqueue; never
OpenMP unless asked: see ``numba_threads``) and the kernel cache directory, then
imports the kernels; nothing compiles until a kernel is first called or ``warmup``
runs. Small kernels stay on one thread (see bench/ for the measurements).
"""

import importlib.util

import numpy as np

from fastnn.backends.numpy_backend import NumpyBackend
from fastnn.errors import BackendUnavailable
from fastnn.ops import Ops


class NumbaBackend(NumpyBackend):
    name = "numba"

    def __init__(self, numba_ops, jit):
        super().__init__()
        self.ops = Ops(np, **numba_ops.OVERRIDES)
        self._numba_ops = numba_ops
        self.cache_dir = jit.CACHE_DIR

    def warmup(self, dtypes=("float32",), model=None, optimizer=None):
        """Compile (or load from the cache) the kernels for ``dtypes``, and the fused
        training epoch for ``model`` and ``optimizer`` if it takes one; returns seconds."""
        return self._numba_ops.warmup([np.dtype(self.dtype(d)) for d in dtypes], model,
                                      optimizer)


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

    from fastnn.backends import numba_threads

    layer = numba_threads.choose(numba)
    from fastnn.backends import numba_ops
    from fastnn.kernels import numba_jit

    backend = NumbaBackend(numba_ops, numba_jit)
    backend.threading_layer = layer  # (name, why), shown by `fastnn info`
    return backend
