"""Which threading layer the Numba backend's parallel kernels run on.

Numba's ``prange`` kernels need a thread pool: OpenMP, TBB or Numba's own workqueue.
Measured on the 2-core development host (see docs/backends/numba.md):
- OpenMP spins its workers after a region, and OpenBLAS does after a matmul; on two
  cores the pools stall each other (6-40x).
- workqueue never spins, but the calling thread only waits while the workers run, so
  every region pays for waking both of them (70-95 us here, far more when the other
  core is busy), and a late worker holds up its whole static share.
- TBB runs part of the loop on the calling thread and balances the rest by work
  stealing, so a late worker takes less work instead of delaying all of it, and its
  workers sleep soon after a region (no stall after OpenBLAS). It was 1.3-2x faster
  than workqueue on the (4096, 1024) float32 activation kernels, side by side.

So fastnn picks TBB where it loads and workqueue otherwise, unless
NUMBA_THREADING_LAYER names one. The ``tbb`` package from PyPI (in the ``numba`` extra)
puts ``libtbb.so.12`` in the environment's ``lib`` folder, outside the loader's search
path, where Numba's own check cannot find it: it is loaded here by its full path first.
"""

import ctypes
import importlib
import os
import sys

TBB_NAMES = {"linux": "libtbb.so.12", "darwin": "libtbb.12.dylib", "win32": "tbb12.dll"}
TBB_MIN_INTERFACE = 12060  # TBB 2021.6: the oldest Numba's TBB layer accepts


def tbb_problem(prefixes=(sys.prefix, sys.base_prefix)):
    """None if Numba's TBB layer can run here, else why not (for ``fastnn info``)."""
    name = TBB_NAMES.get(sys.platform)
    if name is None:
        return f"no TBB library name known for {sys.platform}"
    candidates = [name] + [os.path.join(prefix, "lib", name) for prefix in prefixes]
    library = None
    for candidate in candidates:
        try:
            library = ctypes.CDLL(candidate, mode=getattr(ctypes, "RTLD_GLOBAL", 0))
            break
        except OSError:
            continue
    if library is None:
        return f"{name} not found (install it with: pip install 'fastnn[numba]')"
    try:
        version = library.TBB_runtime_interface_version
    except AttributeError:
        return f"{name} has no TBB_runtime_interface_version"
    version.restype = ctypes.c_int
    if version() < TBB_MIN_INTERFACE:
        return f"TBB interface {version()} is older than {TBB_MIN_INTERFACE} (2021.6)"
    try:
        importlib.import_module("numba.np.ufunc.tbbpool")
    except ImportError as error:
        return f"Numba's TBB pool does not load ({error})"
    return None


def choose(numba, environ=os.environ, problem=tbb_problem):
    """Set Numba's threading layer unless NUMBA_THREADING_LAYER is set; returns
    (layer, why): 'tbb' where it runs, else 'workqueue' with the reason."""
    chosen = environ.get("NUMBA_THREADING_LAYER")
    if chosen:
        return chosen, "NUMBA_THREADING_LAYER"
    why = problem()
    layer = "workqueue" if why else "tbb"
    numba.config.THREADING_LAYER = layer
    return layer, why or "TBB loads"
