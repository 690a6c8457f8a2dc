"""A dense layer's three products split over Numba's threads, each part one call of
NumPy's own GEMM (``blas``) while OpenBLAS runs on one thread.

The op-by-op Numba path runs its parallel work on Numba's threads; an OpenBLAS product
on two threads in the middle of it leaves OpenBLAS's workers spinning for a while after
it returns, and the next parallel Numba kernel (a conv, a pool) then shares the cores
with them: on 2 cores SimpleConvNet's Dense 4320-100 forward took 133 ms instead of 1
right after a pooling kernel, and the pooling 10 ms instead of 2. So these products
keep OpenBLAS's thread pool asleep and do the splitting themselves.

The parts are fixed blocks of rows or of columns (``blocks``: a function of the shape
alone), so the GEMM calls, and so the bits of every result, are the same at any thread
count. Each part's GEMM packs the operands it reads, so a product c = a @ b split by
rows packs all of b once a part, and split by columns all of a: ``product`` splits the
longer side of c, and the smaller operand is the one packed again (a dense layer's dX
for LeNet-5's 400-120 layer, c of (128, 400), b = W^T of 400 x 120: 166 -> 147 us at one
thread by columns; SimpleConvNet's 4320-100, 1239 -> 1024 us, and 821 -> 556 at two,
AMD EPYC). The weight gradient X^T dZ is split over its rows (X's columns), never over
the batch: no part sums what another part sums.
"""

import numpy as np
from numba import prange

from .blas import NO_TRANS, TRANS, _call, gemm
from .jit import kernel
from .math import typed_as

PARTS = 2  # blocks a product is split into (more cost a repacking each: 4 blocks of
# SimpleConvNet's 100-row dX product took 1.7 ms against 1.0 in one call, 2 took 1.2)
MIN_ROWS = 16  # rows a block holds at least


def blocks(rows):
    """Rows (or columns) per block for a product whose split side has ``rows``: about
    ``rows / PARTS``, at least ``MIN_ROWS``, a multiple of 8."""
    size = -(-rows // PARTS)
    return max(MIN_ROWS, -(-size // 8) * 8)


@kernel(parallel=True)
def product(address, ilp64, a, b, c, trans_b, block, by_columns):
    """c = a @ op(b) (op(b) = b.T if trans_b) in blocks of ``block`` across threads: of
    c's rows (a's rows), or ``by_columns`` of c's columns (op(b)'s columns, read in
    place: b's rows where trans_b, leading dimension b.shape[1] either way)."""
    m, k = a.shape
    n = c.shape[1]
    if (c.shape[0] != m or (b.shape[1] if trans_b else b.shape[0]) != k
            or (b.shape[0] if trans_b else b.shape[1]) != n):
        raise ValueError("product: the shapes of a, b and c do not match")
    size = c.itemsize
    parts = ((n if by_columns else m) + block - 1) // block
    for i in prange(parts):
        lo = i * block
        if not by_columns:
            gemm(address, ilp64, a[lo:min(m, lo + block)], b, c[lo:min(m, lo + block)], 1.0,
                 0.0, False, trans_b)
        elif m > 0:
            _call(address, ilp64, np.int64(NO_TRANS), np.int64(TRANS if trans_b else NO_TRANS),
                  np.int64(m), np.int64(min(n, lo + block) - lo), np.int64(k), typed_as(c, 1.0),
                  a.ctypes.data, np.int64(max(1, k)),
                  b.ctypes.data + (lo * k if trans_b else lo) * size, np.int64(max(1, b.shape[1])),
                  typed_as(c, 0.0), c.ctypes.data + lo * size, np.int64(max(1, n)))


@kernel(parallel=True)
def weight_rows(address, ilp64, x, d, c, block):
    """c (k, n) = x.T @ d for x (m, k) and d (m, n), the rows of c (x's columns) in
    blocks of ``block`` across threads: each block reads its columns of x in place
    (leading dimension k)."""
    m, k = x.shape
    n = d.shape[1]
    if d.shape[0] != m or c.shape[0] != k or c.shape[1] != n:
        raise ValueError("weight_rows: the shapes of x, d and c do not match")
    size = x.itemsize
    for i in prange((k + block - 1) // block):
        r0 = i * block
        r1 = min(k, r0 + block)
        if m == 0:
            c[r0:r1] = 0
            continue
        _call(address, ilp64, np.int64(TRANS), np.int64(NO_TRANS), np.int64(r1 - r0),
              np.int64(n), np.int64(m), typed_as(c, 1.0), x.ctypes.data + r0 * size,
              np.int64(max(1, k)), d.ctypes.data, np.int64(max(1, n)), typed_as(c, 0.0),
              c.ctypes.data + r0 * n * size, np.int64(max(1, n)))
