"""The per-channel BatchNorm's passes (``fastnn.norm_ops``) as Numba kernels: each one
pass over the images, parallel over them.

Arrays are (N, C, P), C-contiguous, per-channel vectors (C,), all of one float dtype.
Every (image, channel) is worked on by one thread, its P numbers in a fixed order, so
the results do not depend on the thread count. The sums reassociate (vector partial
sums, as NumPy's pairwise sums do in their own order): they match the generic ops to
rounding, not bit for bit.

Two kernels, each taking the pass to run as its first argument (``SUMS`` ...), and each
a short parallel loop over the images whose body is one call of a serial per-image
build, linked as a subroutine (as the conv kernels are): a parallel kernel's compile
costs about a second of fixed work and more with a larger loop body, so the five passes
share two small ones instead of compiling five (on a loaded AMD EPYC: 4.8 s of cold
compile for four one-pass parallel kernels, 1.9 s for these two).
"""

from numba import prange

from .jit import kernel, subroutine
from .math import typed_as

SUMS, SQUARES, GRAD_SUMS = 0, 1, 2  # the passes of ``sums``
APPLY, INPUT_GRAD = 0, 1  # the passes of ``maps``


@kernel(reassociate=True)
def _image_sums(which, X, Y, center, out, out2):
    """``sums`` for one image: X, Y (C, P), out, out2 (C,)."""
    C, P = X.shape
    for c in range(C):
        x, y = X[c], Y[c]
        a, b = typed_as(out, 0.0), typed_as(out, 0.0)
        if which == SQUARES:
            m = center[c]
            for p in range(P):
                d = x[p] - m
                a += d * d
        elif which == GRAD_SUMS:
            for p in range(P):
                a += x[p]
                b += x[p] * y[p]
            out2[c] = b
        else:
            for p in range(P):
                a += x[p]
        out[c] = a


@kernel
def _image_maps(which, X, Y, v1, v2, v3, v4, out, out2):
    """``maps`` for one image: X, Y, out, out2 (C, P)."""
    C, P = X.shape
    for c in range(C):
        x, y, o, o2 = X[c], Y[c], out[c], out2[c]
        k1, k2, k3, k4 = v1[c], v2[c], v3[c], v4[c]
        if which == APPLY:
            for p in range(P):
                h = (x[p] - k1) * k2
                o[p] = h
                o2[p] = h * k3 + k4
        else:
            for p in range(P):
                o[p] = k1 * (x[p] - k2 - y[p] * k3)


_sums_of, _maps_of = subroutine(_image_sums), subroutine(_image_maps)


@kernel(parallel=True)
def sums(which, X, Y, center, out, out2):
    """out[n, c] = the sum over p of, by ``which``: X[n, c, p] (SUMS); (X[n, c, p] -
    center[c])^2 (SQUARES); X[n, c, p], and out2[n, c] that of X[n, c, p] * Y[n, c, p]
    (GRAD_SUMS)."""
    for n in prange(X.shape[0]):
        _sums_of(which, X[n], Y[n], center, out[n], out2[n])


@kernel(parallel=True)
def maps(which, X, Y, v1, v2, v3, v4, out, out2):
    """By ``which``: out = (X - v1) * v2 and out2 = out * v3 + v4, per channel (APPLY:
    X_hat and Z from the mean, inv_std, gamma and beta); out = v1 * (X - v2 - Y * v3)
    (INPUT_GRAD: dX from dZ, X_hat, the scale and the two means)."""
    for n in prange(X.shape[0]):
        _maps_of(which, X[n], Y[n], v1, v2, v3, v4, out[n], out2[n])
