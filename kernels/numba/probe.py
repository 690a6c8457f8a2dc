"""A small kernel that uses every mechanism of fastnn's Numba kernel layer, run when the
Numba backend is created, so that a Numba or llvmlite whose internals the layer cannot
use is reported then (as BackendUnavailable, with the reason), never as a crash inside
a first ``fit``.

It calls a build through ``by_constant`` and a kernel through ``subroutine`` (both
compiled as subroutines linked into the caller: ``call_subroutine``), asks for wide
vectors, takes a ``flat`` view, runs the float32 exp of ``math`` (bit casts
between floats and integers), and is called through its ``entry_point``. Like every
kernel it is cached on disk: a later process with the same Numba loads it (a few
milliseconds), and the first one compiles it (start-up figures in the README).
"""

import functools

import numpy as np

from .jit import by_constant, entry_point, flat, kernel, prefer_wide_vectors, subroutine
from .math import typed_as, vexp


@functools.cache
def _scaled(SCALE):
    @kernel(build=(SCALE,))
    def scaled(x, out):
        """out = exp(x) * SCALE over 1-D arrays."""
        prefer_wide_vectors()
        for i in range(x.shape[0]):
            out[i] = vexp(x[i]) * typed_as(out, SCALE)

    return scaled


@kernel
def _add_one(out):
    for i in range(out.shape[0]):
        out[i] += typed_as(out, 1.0)


_scaled_for, _add_one_call = by_constant(_scaled), subroutine(_add_one)


@kernel
def _probe(x, out):
    _scaled_for(2, flat(x), out)
    _add_one_call(out)


def run():
    """Compile (or load) and run the probe kernel; raises if the layer does not work,
    or if it computes a wrong result."""
    x, out = np.zeros((2, 2), np.float32), np.empty(4, np.float32)
    entry_point(_probe, (x, out))(x, out)
    if not np.array_equal(out, np.full(4, 3.0, np.float32)):
        raise RuntimeError(f"the probe kernel computed {out.tolist()}, not 2 * exp(0) + 1")
