"""Dense-layer kernels: bias + activation forward, activation backward fused with the
bias gradient, and, for small layers, the whole layer with its product in one call.

Arrays are C-contiguous and batch-first: X (m, n_in), W (n_in, n_out), Z/A (m, n_out).
Bodies work on a row range and are called once per chunk, never once per row (a call
between compiled functions costs reference counting on every array argument). Serial
drivers run one chunk; parallel drivers split rows across threads with ``prange`` and
give each chunk its own bias-gradient row, summed at the end.
"""

from numba import prange

from .numba_activations import SOFTMAX, forward, grad
from .numba_jit import kernel
from .numba_math import typed, vexp

BLOCK = 2048  # elements per block: a block's rows stay in L1 between its two loops


@kernel
def _activate_rows(kind, Z, b, A, alpha, lo, hi):
    """Z[i] += b and A[i] = f(Z[i]) for rows lo..hi-1 (softmax: max, exp, sum, scale).

    Elementwise kinds go block by block: add the bias row by row, then apply f over
    the block as one flat loop, which vectorizes even when rows are short (n = 1, 4).
    """
    n = Z.shape[1]
    if kind == SOFTMAX:
        for i in range(lo, hi):
            top = Z[i, 0] + b[0]
            for j in range(n):
                v = Z[i, j] + b[j]
                Z[i, j] = v
                top = max(top, v)
            total = typed(top, 0.0)
            for j in range(n):
                e = vexp(Z[i, j] - top)
                A[i, j] = e
                total += e
            scale = typed(top, 1.0) / total
            for j in range(n):
                A[i, j] *= scale
        return
    flat_z, flat_a = Z.reshape(-1), A.reshape(-1)
    rows = max(1, BLOCK // max(n, 1))
    for start in range(lo, hi, rows):
        stop = min(start + rows, hi)
        for i in range(start, stop):
            for j in range(n):
                Z[i, j] += b[j]
        for k in range(start * n, stop * n):
            flat_a[k] = forward(kind, flat_z[k], alpha)


@kernel
def _grad_rows(kind, dA, Z, A, dZ, db, alpha, lo, hi):
    """dZ = dA * f'(Z) and db += sum of dZ over rows lo..hi-1 (softmax: its JVP).

    Elementwise kinds go block by block: one flat loop for dZ, then the column sums."""
    n = Z.shape[1]
    if kind == SOFTMAX:
        for i in range(lo, hi):
            inner = typed(alpha, 0.0)
            for j in range(n):
                inner += dA[i, j] * A[i, j]
            for j in range(n):
                g = A[i, j] * (dA[i, j] - inner)
                dZ[i, j] = g
                db[j] += g
        return
    flat_da, flat_z, flat_a, flat_dz = dA.reshape(-1), Z.reshape(-1), A.reshape(-1), dZ.reshape(-1)
    rows = max(1, BLOCK // max(n, 1))
    for start in range(lo, hi, rows):
        stop = min(start + rows, hi)
        for k in range(start * n, stop * n):
            flat_dz[k] = grad(kind, flat_da[k], flat_z[k], flat_a[k], alpha)
        for i in range(start, stop):
            for j in range(n):
                db[j] += dZ[i, j]


@kernel
def bias_activation(kind, Z, b, A, alpha):
    _activate_rows(kind, Z, b, A, alpha, 0, Z.shape[0])


@kernel(parallel=True)
def bias_activation_parallel(kind, Z, b, A, alpha, chunks):
    m = Z.shape[0]
    for c in prange(chunks):
        _activate_rows(kind, Z, b, A, alpha, c * m // chunks, (c + 1) * m // chunks)


@kernel
def activation_grad(kind, dA, Z, A, dZ, db, alpha):
    db[:] = 0
    _grad_rows(kind, dA, Z, A, dZ, db, alpha, 0, Z.shape[0])


@kernel(parallel=True)
def activation_grad_parallel(kind, dA, Z, A, dZ, db, alpha, partial):
    m, chunks = Z.shape[0], partial.shape[0]
    for c in prange(chunks):
        partial[c, :] = 0
        _grad_rows(kind, dA, Z, A, dZ, partial[c], alpha, c * m // chunks, (c + 1) * m // chunks)
    db[:] = partial[0]
    for c in range(1, chunks):
        db += partial[c]


@kernel
def small_dense_forward(kind, X, W, b, Z, A, alpha):
    """Z = X @ W + b and A = f(Z): for layers too small for a BLAS call to pay off."""
    m, n_in = X.shape
    n_out = W.shape[1]
    for i in range(m):
        for j in range(n_out):
            Z[i, j] = 0
        for k in range(n_in):
            x = X[i, k]
            for j in range(n_out):
                Z[i, j] += x * W[k, j]
    _activate_rows(kind, Z, b, A, alpha, 0, m)


@kernel
def small_dense_backward(X, W, dZ, dW, dX, need_dx):
    """dW = X^T dZ and, if need_dx, dX = dZ W^T, in one pass over the rows."""
    m, n_in = X.shape
    n_out = W.shape[1]
    dW[:, :] = 0
    for i in range(m):
        for k in range(n_in):
            x = X[i, k]
            s = typed(x, 0.0)
            for j in range(n_out):
                g = dZ[i, j]
                dW[k, j] += x * g
                s += g * W[k, j]
            if need_dx:
                dX[i, k] = s


@kernel
def small_layer_backward(kind, X, W, dA, Z, A, dZ, dW, db, dX, alpha, need_dx):
    """A small layer's whole backward: dZ and db, then dW and dX, in one call."""
    db[:] = 0
    _grad_rows(kind, dA, Z, A, dZ, db, alpha, 0, Z.shape[0])
    small_dense_backward(X, W, dZ, dW, dX, need_dx)
