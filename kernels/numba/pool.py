"""Max-pooling kernels: each window's maximum and the input it came from in one pass,
and the gradient added back there; across threads over the (image, channel) planes.

The rule is the generic op's (``fastnn.conv_ops.maxpool2d_forward``): NaN counts as
larger than any number, and each window's gradient goes to its first maximum in
row-major order (its first NaN if it holds one). The chosen input is kept as its
index in the plane (int32), which the backward reads.
"""

import functools

import numpy as np
from numba import prange

from .jit import kernel


@functools.cache
def max_forward(kh, kw, sh, sw):
    """The forward kernel for windows of kh x kw moving by (sh, sw)."""

    @kernel(parallel=True, build=(kh, kw, sh, sw))
    def forward(X, out, where):
        """out (P, OH, OW) = window maxima of X (P, H, W); where = the flat index in the
        plane of the input each came from. One output at a time, its running maximum and
        position kept in registers over the window (unrolled: the window size and stride
        are known when it compiles) and stored once: 2.3x faster than running the window
        offsets outside a loop over the output row that read and wrote the row's maxima
        for each offset (4.6 -> 2.0 ms on SimpleConvNet's 100x30x24x24, one thread). The
        comparisons are selects, not branches (on random data a branch mispredicts half
        the time: 3x slower); an offset replaces the running maximum only if it is larger,
        or NaN where the running maximum is not (so the first NaN stays). The position is
        kept as an int32 offset in the window and the input read by its (row, column):
        with 64-bit flat indices the loop did not vectorize (2.3 -> 0.45 ms on the same
        100x30x24x24, one thread, AMD EPYC)."""
        P, OH, OW = out.shape
        W = X.shape[2]
        for q in prange(P):
            plane = X[q]
            for y in range(OH):
                best, at, r = out[q, y], where[q, y], y * sh
                base = np.int32(r * W)
                for x in range(OW):
                    m, k = plane[r, x * sw], np.int32(0)
                    for i in range(kh):
                        for j in range(kw):
                            if i == 0 and j == 0:
                                continue
                            v = plane[r + i, x * sw + j]
                            take = (v > m) | ((v != v) & (m == m))
                            m = v if take else m
                            k = np.int32(i * W + j) if take else k
                    best[x] = m
                    at[x] = base + np.int32(x * sw) + k
    return forward


@kernel(parallel=True)
def max_backward(dA, where, dX):
    """dX (P, H, W), overwritten: each plane zeroed, then each dA (P, OH, OW) added at its
    chosen input, in row-major order of the windows (overlapping windows add up). The
    zeros are written here, plane by plane, while the plane is in cache: a separate
    ``np.zeros`` ran over the whole array first, on one thread (LeNet-5's first pooling
    backward: 0.23 -> 0.17 ms at one thread, 0.14 -> 0.10 at two, AMD EPYC Zen 4, loaded)."""
    P, OH, OW = dA.shape
    for q in prange(P):
        flat, grads, at = dX[q].reshape(-1), dA[q], where[q]
        for p in range(flat.size):
            flat[p] = 0
        for y in range(OH):
            for x in range(OW):
                flat[at[y, x]] += grads[y, x]
