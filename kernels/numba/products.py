"""A dense layer's three products split over Numba's threads, each part one call of
NumPy's own GEMM (``blas``) while OpenBLAS runs on one thread.

The op-by-op Numba path runs its parallel work on Numba's threads; an OpenBLAS product
on two threads in the middle of it leaves OpenBLAS's workers spinning for a while after
it returns, and the next parallel Numba kernel (a conv, a pool) then shares the cores
with them: on 2 cores SimpleConvNet's Dense 4320-100 forward took 133 ms instead of 1
right after a pooling kernel, and the pooling 10 ms instead of 2. So these products
keep OpenBLAS's thread pool asleep and do the splitting themselves.

The parts are fixed blocks of rows (``blocks``: a function of the shape alone), so the
GEMM calls, and so the bits of every result, are the same at any thread count. The
weight gradient X^T dZ is split over its rows (X's columns), never over the batch: no
part sums what another part sums.
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
    """Rows per block for a product whose split dimension has ``rows`` rows: about
    ``rows / PARTS``, at least ``MIN_ROWS``, a multiple of 8."""
    size = -(-rows // PARTS)
    return max(MIN_ROWS, -(-size // 8) * 8)


@kernel(parallel=True)
def rows(address, ilp64, a, b, c, trans_b, block):
    """c = a @ op(b) (op(b) = b.T if trans_b), the rows of a and c in blocks of
    ``block`` across threads."""
    m = c.shape[0]
    for i in prange((m + block - 1) // block):
        r0 = i * block
        r1 = min(m, r0 + block)
        gemm(address, ilp64, a[r0:r1], b, c[r0:r1], 1.0, 0.0, False, trans_b)


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
