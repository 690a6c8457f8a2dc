"""The per-channel BatchNorm's passes (``fastnn.norm_ops``) as Numba kernels: each one
pass over the images, parallel over them.

Arrays are (N, C, P), C-contiguous, per-channel vectors (C,), all of one float dtype.
Every (image, channel) is worked on by one thread, its P numbers in a fixed order, so
the results do not depend on the thread count. The sums reassociate (vector partial
sums, as NumPy's pairwise sums do in their own order): they match the generic ops to
rounding, not bit for bit.
"""

from numba import prange

from .jit import kernel
from .math import typed_as


@kernel(parallel=True, reassociate=True)
def sums(X, center, out):
    """out[n, c] = the sum of X[n, c], or of (X[n, c] - center[c])^2 when ``center`` is
    not empty."""
    N, C, P = X.shape
    squares = center.shape[0] > 0
    for n in prange(N):
        for c in range(C):
            row, total = X[n, c], typed_as(out, 0.0)
            if squares:
                m = center[c]
                for p in range(P):
                    d = row[p] - m
                    total += d * d
            else:
                for p in range(P):
                    total += row[p]
            out[n, c] = total


@kernel(parallel=True)
def apply(X, mean, inv_std, gamma, beta, X_hat, Z):
    """X_hat = (X - mean) * inv_std and Z = X_hat * gamma + beta, per channel."""
    N, C, P = X.shape
    for n in prange(N):
        for c in range(C):
            m, s, g, b = mean[c], inv_std[c], gamma[c], beta[c]
            x, h, z = X[n, c], X_hat[n, c], Z[n, c]
            for p in range(P):
                v = (x[p] - m) * s
                h[p] = v
                z[p] = v * g + b


@kernel(parallel=True, reassociate=True)
def grad_sums(dZ, X_hat, out_dz, out_dzx):
    """out_dz[n, c] = the sum of dZ[n, c]; out_dzx[n, c] = that of dZ[n, c] * X_hat[n, c]."""
    N, C, P = dZ.shape
    for n in prange(N):
        for c in range(C):
            d, h = dZ[n, c], X_hat[n, c]
            a, b = typed_as(out_dz, 0.0), typed_as(out_dz, 0.0)
            for p in range(P):
                a += d[p]
                b += d[p] * h[p]
            out_dz[n, c] = a
            out_dzx[n, c] = b


@kernel(parallel=True)
def input_grad(dZ, X_hat, scale, mean_dz, mean_dzx, dX):
    """dX = scale * (dZ - mean_dz - X_hat * mean_dzx), per channel."""
    N, C, P = dZ.shape
    for n in prange(N):
        for c in range(C):
            k, u, w = scale[c], mean_dz[c], mean_dzx[c]
            d, h, out = dZ[n, c], X_hat[n, c], dX[n, c]
            for p in range(P):
                out[p] = k * (d[p] - u - h[p] * w)
