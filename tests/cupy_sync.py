"""``no_synchronize()``: CuPy's guard against implicit device->host waits, without the
UserWarning that CuPy 14 emits on every use of it (it plans to remove the API), which
the suite's ``filterwarnings = error`` would turn into a failure."""

import contextlib
import warnings

DEPRECATION = "cupyx.allow_synchronize will be removed"


@contextlib.contextmanager
def no_synchronize():
    """Inside the block, an operation that waits for the GPU raises
    ``cupyx.DeviceSynchronized``."""
    import cupyx

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=DEPRECATION, category=UserWarning)
        guard = cupyx.allow_synchronize(False)
        guard.__enter__()
    try:
        yield
    finally:
        guard.__exit__(None, None, None)
