"""The CuPy backend: the same models on an NVIDIA GPU.

Not built yet in this version; selecting it first says whether CuPy and a GPU are
present, then that the backend itself is still to come.
"""

import importlib.util

from fastnn.errors import BackendUnavailable

INSTALL_HINT = "pip install 'fastnn[cuda12]' (CUDA 12) or 'fastnn[cuda13]' (CUDA 13)"


def create():
    if importlib.util.find_spec("cupy") is None:
        raise BackendUnavailable(
            f"the 'cupy' backend needs CuPy, which is not installed here; install it with: "
            f"{INSTALL_HINT}"
        )
    import cupy

    if not cupy.cuda.is_available():
        raise BackendUnavailable(
            "the 'cupy' backend needs an NVIDIA GPU, but CuPy finds no usable CUDA device "
            "here (cupy.cuda.is_available() is False); use FASTNN_BACKEND=numpy on this machine"
        )
    raise BackendUnavailable(
        "the 'cupy' backend is not built yet in this version of fastnn; "
        "use FASTNN_BACKEND=numpy meanwhile"
    )
