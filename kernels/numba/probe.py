"""A small kernel that uses every mechanism of fastnn's Numba kernel layer, run when the
Numba backend is created with a Numba outside the tested range, so that a Numba or
llvmlite whose internals the layer cannot use is reported then (as BackendUnavailable,
with the reason), never as a crash inside a first ``fit``.

Within the tested range (pyproject's numba requirement, which CI runs the whole suite
on) the kernel is not compiled: that was 0.4-0.6 s of every cold start, a fresh cache's
first ``import fastnn``, for a check CI has already made. ``check()`` still makes sure
the Numba internals the layer calls are there (a patched or partial install), which
costs no compile.

It calls a build through ``by_constant`` and a kernel through ``subroutine`` (both
compiled as subroutines linked into the caller: ``call_subroutine``), asks for wide
vectors, takes a ``flat`` view, runs the float32 exp of ``math`` (bit casts
between floats and integers), and is called through its ``entry_point``. Like every
kernel it is cached on disk: a later process with the same Numba loads it (a few
milliseconds), and the first one compiles it (start-up figures in the README).
"""

import functools
import importlib

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


INTERNALS = (  # (module, name): the Numba internals jit.py calls, without a fallback
    ("numba.core.compiler", "compile_internal"), ("numba.core.compiler", "Flags"),
    ("numba.core.compiler_lock", "global_compiler_lock"), ("numba.core.cgutils", "unpack_tuple"),
    ("numba.extending", "intrinsic"),
)


def check():
    """Raise if one of the Numba internals the kernel layer calls is missing."""
    for module, name in INTERNALS:
        if getattr(importlib.import_module(module), name, None) is None:
            raise RuntimeError(f"{module}.{name} is missing")


def needed(version, tested):
    """True if the probe kernel must run for Numba ``version`` (a string): outside the
    ``tested`` range of minor versions ((oldest, newest) as strings), or no range known."""
    if tested is None:
        return True
    minor = tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
    low, high = (tuple(int(part) for part in v.split(".")) for v in tested)
    return not low <= minor <= high


def run():
    """Compile (or load) and run the probe kernel; raises if the layer does not work,
    or if it computes a wrong result."""
    x, out = np.zeros((2, 2), np.float32), np.empty(4, np.float32)
    entry_point(_probe, (x, out))(x, out)
    if not np.array_equal(out, np.full(4, 3.0, np.float32)):
        raise RuntimeError(f"the probe kernel computed {out.tolist()}, not 2 * exp(0) + 1")
