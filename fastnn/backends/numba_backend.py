"""The Numba backend: NumPy arrays with JIT-fused hot-path kernels from ``fastnn.kernels``.

Not built yet in this version: selecting it says so instead of silently running NumPy.
"""

import importlib.util

from fastnn.errors import BackendUnavailable


def create():
    if importlib.util.find_spec("numba") is None:
        raise BackendUnavailable(
            "the 'numba' backend needs the numba package, which is not installed here; "
            "install it with: pip install 'fastnn[numba]'"
        )
    raise BackendUnavailable(
        "the 'numba' backend is not built yet in this version of fastnn (its fused kernels "
        "are still to come); use FASTNN_BACKEND=numpy meanwhile"
    )
