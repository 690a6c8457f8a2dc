"""The NumPy reference backend: every op is the xp-generic one from ``fastnn.ops``."""

import numpy as np

from fastnn.backends.base import Backend


class NumpyBackend(Backend):
    name = "numpy"

    def __init__(self):
        super().__init__(np)

    def is_array(self, x):
        return isinstance(x, np.ndarray)

    def _from_host(self, host, dtype):
        return np.ascontiguousarray(host, dtype=dtype)


def create():
    return NumpyBackend()
