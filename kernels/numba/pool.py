"""Max-pooling kernels: each window's maximum and the input it came from in one pass,
and the gradient added back there; across threads over the (image, channel) planes.

The rule is the generic op's (``fastnn.conv_ops.maxpool2d_forward``): NaN counts as
larger than any number, and each window's gradient goes to its first maximum in
row-major order (its first NaN if it holds one). The chosen input is kept as its
index in the plane (int32), which the backward reads.
"""

import functools

from numba import prange

from .jit import kernel


@functools.cache
def max_forward(kh, kw, sh, sw):
    """The forward kernel for windows of kh x kw moving by (sh, sw)."""

    @kernel(parallel=True, build=(kh, kw, sh, sw))
    def forward(X, out, where):
        """out (P, OH, OW) = window maxima of X (P, H, W); where = the flat index in the
        plane of the input each came from. Window offsets run in the outer loops and output
        columns in the inner one, as selects without a branch (on random data a branch
        per comparison mispredicts half the time: 3x slower); an offset replaces the
        running maximum only if it is larger, or NaN where the running maximum is not
        (so the first NaN stays). Built per window size and stride, which as arguments
        kept the index arithmetic from simplifying."""
        P, OH, OW = out.shape
        W = X.shape[2]
        for q in prange(P):
            plane = X[q]
            for y in range(OH):
                best, at, r = out[q, y], where[q, y], y * sh
                first = plane[r]
                for x in range(OW):
                    best[x] = first[x * sw]
                    at[x] = r * W + x * sw
                for i in range(kh):
                    src = plane[r + i]
                    for j in range(kw):
                        if i == 0 and j == 0:
                            continue
                        base = (r + i) * W + j
                        for x in range(OW):
                            v, m = src[x * sw + j], best[x]
                            take = (v > m) | ((v != v) & (m == m))  # selects, no branch
                            best[x] = v if take else m
                            at[x] = base + x * sw if take else at[x]

    return forward


@kernel(parallel=True)
def max_backward(dA, where, dX):
    """dX (P, H, W), zeros on entry: each dA (P, OH, OW) added at its chosen input, in
    row-major order of the windows (overlapping windows add up)."""
    P, OH, OW = dA.shape
    for q in prange(P):
        flat, grads, at = dX[q].reshape(-1), dA[q], where[q]
        for y in range(OH):
            for x in range(OW):
                flat[at[y, x]] += grads[y, x]
