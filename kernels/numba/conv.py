"""Convolution kernels: im2col one cache-sized tile at a time, NumPy's own GEMM on it,
bias and activation fused into the write of the output.

Direct convolution loops do not vectorize in Numba (SimpleConvNet's first conv ran at
scalar speed, 5x slower than a tile + GEMM). So each image's input windows are copied
into a tile (C*kh*kw, rows*OW) of at most ``TILE`` numbers (128 KiB in float32, it
stays in L2), multiplied by the weights with the GEMM NumPy uses (``blas.gemm``), and
the product is written out with the bias added and the activation applied. A step
never holds the whole im2col matrix (N*OH*OW, C*kh*kw): memory is a tile per thread.

The forward runs across threads over images. The backward runs over fixed chunks of
``CHUNK`` images: each chunk sums its own dW and db in image order, and the chunks'
partial sums are added in chunk order, so results do not depend on the thread count
(bit-identical at 1 and 2 threads). It rebuilds each tile (cheaper than keeping
them), and col2im is adds into the chunk's own images, so no two threads write one
number. The layer that needs no input gradient (the model's first) skips that GEMM
and col2im.

Activations: identity, relu and leaky relu are fused here (``FUSED``); the ops run
any other one with its own xp code on the kernel's Z (see ``ops.conv2d_forward``).
"""

import functools

import numpy as np
from numba import prange

from ..activation_codes import IDENTITY, LEAKY_RELU, RELU
from .activations import scalars
from .blas import gemm
from .jit import kernel

FUSED = (IDENTITY, RELU, LEAKY_RELU)
relu, relu_grad = scalars(RELU)  # the specs' scalar functions (fastnn/activations/)
leaky_relu, leaky_relu_grad = scalars(LEAKY_RELU)
TILE = 1 << 15  # numbers in one im2col tile
CHUNK = 4  # images whose dW and db one partial sum holds (fixed: thread-count free)


def tile_rows(K, OH, OW):
    """Output rows per tile: as many as fit in ``TILE`` numbers, at least one."""
    return max(1, min(OH, TILE // max(1, K * OW)))


@kernel(inline=True)
def _span(OW, sw, j, left, W):
    """The output columns x whose input column x*sw + j - left lies inside 0..W-1."""
    first = 0
    if left > j:
        first = (left - j + sw - 1) // sw
    last = OW
    if W - 1 + left - j < 0:
        last = 0
    else:
        last = min(OW, (W - 1 + left - j) // sw + 1)
    return first, max(first, last)


@kernel(inline=True)
def fill_tile(x, tile, kh, kw, sh, sw, top, left, r0, rows, OW):
    """tile[(c, i, j), y*OW + x] = the padded image x at (c, (r0 + y)*sh + i - top,
    x*sw + j - left), zero outside the image, for y < rows. Copies run as plain loops
    over slices (a slice assignment calls a general copy routine, which cost more than
    LeNet's 10-number rows; a computed index gets a negative-index check per element,
    which stops the loop from vectorizing)."""
    C, H, W = x.shape
    for c in range(C):
        for i in range(kh):
            for j in range(kw):
                k = (c * kh + i) * kw + j
                first, last = _span(OW, sw, j, left, W)
                for y in range(rows):
                    h = (r0 + y) * sh + i - top
                    dst = tile[k, y * OW:(y + 1) * OW]
                    if h < 0 or h >= H:
                        for p in range(OW):
                            dst[p] = 0
                        continue
                    for p in range(first):
                        dst[p] = 0
                    for p in range(last, OW):
                        dst[p] = 0
                    if sw == 1:  # plain counters over slices: the copy vectorizes
                        out, src = dst[first:last], x[c, h, first + j - left:last + j - left]
                        for p in range(last - first):
                            out[p] = src[p]
                    else:
                        src = x[c, h]
                        for p in range(first, last):
                            dst[p] = src[p * sw + j - left]


@kernel(inline=True)
def add_tile(dx, tile, kh, kw, sh, sw, top, left, r0, rows, OW):
    """col2im: the adjoint of ``fill_tile``, adding each tile entry into dx (C, H, W)."""
    C, H, W = dx.shape
    for c in range(C):
        for i in range(kh):
            for j in range(kw):
                k = (c * kh + i) * kw + j
                first, last = _span(OW, sw, j, left, W)
                for y in range(rows):
                    h = (r0 + y) * sh + i - top
                    if h < 0 or h >= H:
                        continue
                    src = tile[k, y * OW:(y + 1) * OW]
                    if sw == 1:
                        out, part = dx[c, h, first + j - left:last + j - left], src[first:last]
                        for p in range(last - first):
                            out[p] += part[p]
                    else:
                        dst = dx[c, h]
                        for p in range(first, last):
                            dst[p * sw + j - left] += src[p]


@kernel(inline=True)
def _write(kind, out, b, z, a, alpha, keep_z, start, stride):
    """z = out + b (one bias per row of out), a = f(z), row f of out going to the flat
    z and a at f*stride + start; z is not written unless keep_z."""
    F, P = out.shape
    for f in range(F):
        at = f * stride + start
        bias, src, zs, as_ = b[f], out[f], z[at:at + P], a[at:at + P]
        if kind == RELU:
            for p in range(P):
                as_[p] = relu(src[p] + bias, alpha)
        elif kind == LEAKY_RELU:
            for p in range(P):
                as_[p] = leaky_relu(src[p] + bias, alpha)
        else:
            for p in range(P):
                as_[p] = src[p] + bias
        if keep_z and kind != IDENTITY:
            for p in range(P):
                zs[p] = src[p] + bias


@kernel(inline=True)
def _grad(kind, dA, Z, A, dz, db, alpha, start, stride):
    """dz = dA * f'(Z) (Z or A read, as the activation needs) and db += its row sums;
    row f of dz comes from the flat dA, Z, A at f*stride + start."""
    F, P = dz.shape
    for f in range(F):
        at = f * stride + start
        d, z, a, out = dA[at:at + P], Z[at:at + P], A[at:at + P], dz[f]
        if kind == RELU:
            for p in range(P):
                out[p] = relu_grad(d[p], z[p], a[p], alpha)
        elif kind == LEAKY_RELU:
            for p in range(P):
                out[p] = leaky_relu_grad(d[p], z[p], a[p], alpha)
        else:
            for p in range(P):
                out[p] = d[p]
        total = db[f]
        for p in range(P):
            total += out[p]
        db[f] = total


@functools.cache
def kernels(SH, SW):
    """(forward, backward) built for the stride (SH, SW): a stride known when the kernel
    compiles lets LLVM simplify the tile's index arithmetic and vectorize its copies
    (with the stride as an argument, SimpleConvNet's tiles took 3.5x as long)."""

    @kernel(parallel=True, build=(SH, SW))
    def forward(address, ilp64, kind, X, W2, b, Z, A, alpha, keep_z, kh, kw, top, left,
                rows):
        """Z (N, F, OH, OW) = conv(X, W) + b and A = f(Z), image by image across threads,
        ``rows`` output rows per tile. With ``keep_z`` False Z is not written (it may be A)."""
        N = X.shape[0]
        F, K = W2.shape
        OH, OW = Z.shape[2], Z.shape[3]
        for n in prange(N):
            buffer = np.empty(K * rows * OW, X.dtype)
            product = np.empty(F * rows * OW, X.dtype)
            for r0 in range(0, OH, rows):
                count = min(rows, OH - r0)
                width = count * OW
                tile = buffer[:K * width].reshape((K, width))
                out = product[:F * width].reshape((F, width))
                fill_tile(X[n], tile, kh, kw, SH, SW, top, left, r0, count, OW)
                gemm(address, ilp64, W2, tile, out, 1.0, 0.0, False, False)
                _write(kind, out, b, Z[n].reshape(F * OH * OW), A[n].reshape(F * OH * OW), alpha,
                       keep_z, r0 * OW, OH * OW)

    @kernel(parallel=True, build=(SH, SW))
    def backward(address, ilp64, kind, X, W2, dA, Z, A, dW, db, dX, alpha, need_dx, kh, kw,
                 top, left, rows, chunk):
        """dW (F, K), db (F,) and, with ``need_dx``, dX (N, C, H, W) (zeros on entry) from
        dA, Z, A (N, F, OH, OW). Chunks of ``chunk`` images run across threads; each sums
        its images' dW and db in order, then the chunks' sums are added in order."""
        N = X.shape[0]
        F, K = W2.shape
        OH, OW = dA.shape[2], dA.shape[3]
        chunks = (N + chunk - 1) // chunk
        dWs = np.zeros((chunks, F, K), dW.dtype)
        dbs = np.zeros((chunks, F), db.dtype)
        for c in prange(chunks):
            buffer = np.empty(K * rows * OW, X.dtype)
            grads = np.empty(F * rows * OW, X.dtype)
            back = np.empty(K * rows * OW, X.dtype)
            for n in range(c * chunk, min(N, (c + 1) * chunk)):
                for r0 in range(0, OH, rows):
                    count = min(rows, OH - r0)
                    width = count * OW
                    tile = buffer[:K * width].reshape((K, width))
                    dz = grads[:F * width].reshape((F, width))
                    size = F * OH * OW
                    _grad(kind, dA[n].reshape(size), Z[n].reshape(size), A[n].reshape(size), dz,
                          dbs[c], alpha, r0 * OW, OH * OW)
                    fill_tile(X[n], tile, kh, kw, SH, SW, top, left, r0, count, OW)
                    gemm(address, ilp64, dz, tile, dWs[c], 1.0, 1.0, False, True)
                    if need_dx:
                        dcols = back[:K * width].reshape((K, width))
                        gemm(address, ilp64, W2, dz, dcols, 1.0, 0.0, True, False)
                        add_tile(dX[n], dcols, kh, kw, SH, SW, top, left, r0, count, OW)
        for c in range(chunks):
            dW += dWs[c]
            db += dbs[c]

    return forward, backward
