"""A strict stand-in for a GPU backend, built on array-api-strict.

Arrays live on array_api_strict.Device("device1"), which refuses implicit
conversion to NumPy and mixing with CPU arrays. Running fastnn's generic code on it
proves that layers, losses, optimizers and the training loop use only the array
API through ``xp`` and move data only through the backend's explicit transfers,
which the base class counts in ``backend.transfers`` (tests/test_transfers.py).
"""

import numpy as np

from fastnn.backends.base import Backend

try:
    import array_api_strict
except ImportError:  # the test extra installs it; conftest reports a clear skip if absent
    array_api_strict = None


class StrictBackend(Backend):
    name = "strict"

    def __init__(self):
        super().__init__(array_api_strict, device=array_api_strict.Device("device1"))

    def is_array(self, x):
        return isinstance(x, array_api_strict._array_object.Array) and x.device == self.device

    def _from_host(self, host, dtype):
        return self.xp.asarray(host, dtype=dtype, device=self.device, copy=True)

    def _to_host(self, x):
        if not isinstance(x, array_api_strict._array_object.Array):
            return np.asarray(x)
        return np.asarray(x.to_device(array_api_strict.Device("CPU_DEVICE")))
