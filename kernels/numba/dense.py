"""Dense-layer kernels: bias + activation forward, activation backward fused with the
bias gradient, and, for small layers, the whole layer with its product in one call.

Arrays are C-contiguous and batch-first: X (m, n_in), W (n_in, n_out), Z/A (m, n_out).
Bodies work on a row range and are called once per chunk, never once per row (a call
between compiled functions costs reference counting on every array argument). Serial
drivers run one chunk; parallel drivers split rows across threads with ``prange`` and
give each chunk its own bias-gradient row, summed at the end.
"""

import functools

import numpy as np
from numba import prange

from ..activation_codes import SOFTMAX
from .activations import ANY, forward_block_for, grad_block_for, in_blocks
from .jit import by_constant, flat, kernel, mask, members, prefer_wide_vectors, sole
from .math import typed, vexp

BLOCK = 2048  # elements per block: a block stays in L1 while it is worked on
WIDE = 128  # rows at least this long take the bias row itself, not a tile


@kernel(inline=True)
def _tiled(b, rows):
    """b repeated ``rows`` times as one flat array, by doubling copies (no per-row loop)."""
    n = b.shape[0]
    tile = np.empty(rows * n, b.dtype)
    for j in range(n):
        tile[j] = b[j]
    filled = n
    while filled < tile.shape[0]:
        count = min(filled, tile.shape[0] - filled)
        destination = tile[filled:filled + count]
        for k in range(count):
            destination[k] = tile[k]
        filled += count
    return tile


@kernel(inline=True)
def _zeros(count, like):
    """``np.zeros(count, like.dtype)`` as an empty array and a loop: np.zeros's own
    implementation is one more function to compile (~0.1 s of a cold start)."""
    out = np.empty(count, like.dtype)
    for k in range(count):
        out[k] = 0
    return out


@functools.cache
def serial(MASK):
    """(bias_activation, activation_grad) built for the kinds in ``MASK``, as
    ``activations.blocks`` builds the blocks: the op-by-op layers call the build
    for their own kind and the epoch kernels the build for their model's kinds, so a
    first training step compiles only its kinds' loops; the parallel kernels call the
    build for ``ANY`` kind."""
    IN, SOLE, BLOCKS = members(MASK), sole(MASK), in_blocks(MASK)

    @kernel(build=(MASK,))
    def bias_activation(kind, Z, b, Z_out, A, alpha, lo, hi, keep_z):
        """A = f(Z + b) for rows lo..hi-1, and Z_out = Z + b when ``keep_z`` (Z_out may be Z
        itself; Z is only read, so it may be a read-only array). Softmax: max, exp, sum.
        The serial kernel itself (rows 0..m-1): a wrapper kernel around it would cost its
        own compile, about 1 s of the cold start, for nothing.

        Elementwise kinds run one flat loop per block of rows, adding the bias from a tiled
        copy: no loop per row, so it vectorizes as well for n = 1 as for n = 1024. Rows of
        ``WIDE`` or more (without keep_z) take the bias row itself instead, one loop per row:
        at (4096, 1024) the tiled blocks measured 30% slower than a copy, rows as fast.
        """
        prefer_wide_vectors()
        n = Z.shape[1]
        if SOFTMAX == SOLE or SOFTMAX in IN and kind == SOFTMAX:
            for i in range(lo, hi):
                top = Z[i, 0] + b[0]
                for j in range(n):
                    top = max(top, Z[i, j] + b[j])
                total = typed(top, 0.0)
                for j in range(n):
                    v = Z[i, j] + b[j]
                    if keep_z:
                        Z_out[i, j] = v
                    e = vexp(v - top)
                    A[i, j] = e
                    total += e
                scale = typed(top, 1.0) / total
                for j in range(n):
                    A[i, j] *= scale
            return
        if hi <= lo or n == 0:
            return
        flat_z, flat_out, flat_a = flat(Z), flat(Z_out), flat(A)
        wide = n >= WIDE and not keep_z  # rows long enough to vectorize: the bias row repeats
        rows = hi - lo if wide else min(max(1, BLOCK // n), hi - lo)
        bias = b if wide else _tiled(b, rows)
        zeros = _zeros(bias.shape[0] if keep_z else 0, bias)  # bias already added
        for start in range(lo, hi, rows):
            base, count = start * n, (min(start + rows, hi) - start) * n
            z, out = flat_z[base:base + count], flat_out[base:base + count]
            if keep_z:  # store z + b (in L1 for the next loop), then f of it
                for k in range(count):
                    out[k] = z[k] + bias[k]
            # one call site: each one more inlines forward_block's loops again (compile time)
            forward_block_for(BLOCKS, kind, out if keep_z else z,
                              zeros[:count] if keep_z else bias[:count],
                              flat_a[base:base + count], alpha)

    @kernel(build=(MASK,))
    def activation_grad(kind, dA, Z, A, dZ, db, alpha, lo, hi):
        """dZ = dA * f'(Z) and db += sum of dZ over rows lo..hi-1 (softmax: its JVP); the
        caller zeroes db. Like ``bias_activation``, the serial kernel itself.

        Elementwise kinds run one flat loop per block (one call for all of them), summing
        into a block-sized accumulator folded down to one row at the end (no loop per row);
        rows of ``WIDE`` or more sum into db directly, row after row."""
        prefer_wide_vectors()
        n = Z.shape[1]
        if SOFTMAX == SOLE or SOFTMAX in IN and kind == SOFTMAX:
            for i in range(lo, hi):
                inner = typed(alpha, 0.0)
                for j in range(n):
                    inner += dA[i, j] * A[i, j]
                for j in range(n):
                    g = A[i, j] * (dA[i, j] - inner)
                    dZ[i, j] = g
                    db[j] += g
            return
        if hi <= lo or n == 0:
            return
        flat_da, flat_z, flat_a = flat(dA), flat(Z), flat(A)
        base, stop = lo * n, hi * n
        wide = n >= WIDE  # rows long enough to vectorize: sum straight into db, row by row
        rows = 1 if wide else min(max(1, BLOCK // n), hi - lo)
        acc = db if wide else _zeros(rows * n, db)
        grad_block_for(BLOCKS, kind, flat_da[base:stop], flat_z[base:stop], flat_a[base:stop],
                       flat(dZ)[base:stop], acc, alpha)
        if wide:
            return
        while rows > 1:  # fold the accumulator's rows in halves
            half = rows // 2
            top = (rows - half) * n
            for k in range(half * n):
                acc[k] += acc[top + k]
            rows -= half
        for j in range(n):
            db[j] += acc[j]

    return bias_activation, activation_grad


def _bias_activation(MASK):
    """``bias_activation`` built for the kinds in ``MASK``."""
    return serial(MASK)[0]


def _activation_grad(MASK):
    """``activation_grad`` built for the kinds in ``MASK``."""
    return serial(MASK)[1]


# for kernels whose MASK is a constant: bias_activation_for(MASK, kind, Z, ...)
bias_activation_for = by_constant(_bias_activation)
activation_grad_for = by_constant(_activation_grad)
bias_activation, activation_grad = serial(ANY)  # for any kind


@kernel(parallel=True)
def bias_activation_parallel(kind, Z, b, Z_out, A, alpha, keep_z, chunks):
    m = Z.shape[0]
    for c in prange(chunks):
        lo, hi = c * m // chunks, (c + 1) * m // chunks
        bias_activation(kind, Z, b, Z_out, A, alpha, lo, hi, keep_z)


@kernel(inline=True)
def _sum_rows(partial, out):
    """out = the sum of partial's rows, in plain loops: in a parallel kernel each array
    expression (``db += partial[c]``) becomes a parallel region of its own, and each
    region's start costs ~80 us on the workqueue layer."""
    for j in range(out.shape[0]):
        out[j] = partial[0, j]
    for c in range(1, partial.shape[0]):
        for j in range(out.shape[0]):
            out[j] += partial[c, j]


@kernel(parallel=True)
def activation_grad_parallel(kind, dA, Z, A, dZ, db, alpha, partial):
    """One chunk of rows per row of ``partial`` (zeros on entry), the chunks spread over
    the threads, each summing its bias gradient into its row; added up in order at the
    end, so the thread count does not change the bits."""
    m, chunks = Z.shape[0], partial.shape[0]
    for c in prange(chunks):
        lo, hi = c * m // chunks, (c + 1) * m // chunks
        activation_grad(kind, dA, Z, A, dZ, partial[c], alpha, lo, hi)
    _sum_rows(partial, db)


@kernel
def small_product(X, W, Z):
    """Z = X @ W, for layers too small for a BLAS call to pay off.

    The loops run over the batch innermost (one long loop per weight), which measured
    3-7x faster than row-by-row loops when a layer has only 1-8 units.
    """
    m, n_in = X.shape
    Z[:, :] = 0
    for j in range(W.shape[1]):
        for k in range(n_in):
            w = W[k, j]
            for i in range(m):
                Z[i, j] += X[i, k] * w


@functools.cache
def by_kind(kind):
    """(bias_activation, activation_grad) of the serial build for ``kind`` alone."""
    return serial(mask(kind))


def small_dense_forward(kind, X, W, b, Z, A, alpha, keep_z):
    """Z = X @ W + b and A = f(Z) for a small layer: the product kernel, then the serial
    build for this one kind. A kernel doing both called the build for any kind, whose
    first call compiled every activation's loops (4.1 s of the README's main job cold,
    for the three kinds it uses); the second call costs ~0.6 us."""
    small_product(X, W, Z)
    by_kind(kind)[0](kind, Z, b, Z, A, alpha, 0, X.shape[0], keep_z)


@kernel
def small_dense_backward(X, W, dZ, dW, dX, need_dx):
    """dW = X^T dZ and, if need_dx, dX = dZ W^T, with the batch loop innermost."""
    m, n_in = X.shape
    if need_dx:
        dX[:, :] = 0
    for j in range(W.shape[1]):
        for k in range(n_in):
            acc = typed(X[0, 0], 0.0) if m else typed(W[0, 0], 0.0)
            w = W[k, j]
            for i in range(m):
                g = dZ[i, j]
                acc += X[i, k] * g
                if need_dx:
                    dX[i, k] += g * w
            dW[k, j] = acc


def small_layer_backward(kind, X, W, dA, Z, A, dZ, dW, db, dX, alpha, need_dx):
    """A small layer's whole backward: dZ and db (the serial build for this one kind, as
    in ``small_dense_forward``), then dW and dX."""
    db[:] = 0
    by_kind(kind)[1](kind, dA, Z, A, dZ, db, alpha, 0, Z.shape[0])
    small_dense_backward(X, W, dZ, dW, dX, need_dx)
