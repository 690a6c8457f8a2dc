"""Dense-layer kernels: bias + activation forward, activation backward fused with the
bias gradient, and, for small layers, the whole layer with its product in one pass.

Arrays are C-contiguous and batch-first: X (m, n_in), W (n_in, n_out), Z/A (m, n_out).
Row bodies are written once and driven serially or by ``prange`` over row chunks;
parallel drivers give each chunk its own bias-gradient row and add them at the end.
"""

import numpy as np
from numba import prange

from .numba_activations import SOFTMAX, forward, grad
from .numba_jit import kernel
from .numba_math import typed, vexp


@kernel
def _activate_row(kind, Z, b, A, alpha, i):
    """Z[i] += b and A[i] = f(Z[i]) in one pass (softmax: max, exp, sum, scale)."""
    n = Z.shape[1]
    if kind == SOFTMAX:
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
    else:
        for j in range(n):
            v = Z[i, j] + b[j]
            Z[i, j] = v
            A[i, j] = forward(kind, v, alpha)


@kernel
def _grad_row(kind, dA, Z, A, dZ, db, alpha, i):
    """dZ[i] = dA[i] * f'(Z[i]) and db += dZ[i] (softmax: its Jacobian-vector product)."""
    n = Z.shape[1]
    if kind == SOFTMAX:
        inner = typed(alpha, 0.0)
        for j in range(n):
            inner += dA[i, j] * A[i, j]
        for j in range(n):
            g = A[i, j] * (dA[i, j] - inner)
            dZ[i, j] = g
            db[j] += g
    else:
        for j in range(n):
            g = grad(kind, dA[i, j], Z[i, j], A[i, j], alpha)
            dZ[i, j] = g
            db[j] += g


def chunk_bounds(c, chunks, m):
    """Rows [lo, hi) of chunk c when m rows are split into ``chunks`` nearly equal parts."""
    return c * m // chunks, (c + 1) * m // chunks


_chunk = kernel(chunk_bounds)


@kernel
def bias_activation(kind, Z, b, A, alpha):
    for i in range(Z.shape[0]):
        _activate_row(kind, Z, b, A, alpha, i)


@kernel(parallel=True)
def bias_activation_parallel(kind, Z, b, A, alpha, chunks):
    m = Z.shape[0]
    for c in prange(chunks):
        lo, hi = _chunk(c, chunks, m)
        for i in range(lo, hi):
            _activate_row(kind, Z, b, A, alpha, i)


@kernel
def activation_grad(kind, dA, Z, A, dZ, db, alpha):
    db[:] = 0
    for i in range(Z.shape[0]):
        _grad_row(kind, dA, Z, A, dZ, db, alpha, i)


@kernel(parallel=True)
def activation_grad_parallel(kind, dA, Z, A, dZ, db, alpha, partial):
    m, chunks = Z.shape[0], partial.shape[0]
    for c in prange(chunks):
        lo, hi = _chunk(c, chunks, m)
        partial[c, :] = 0
        for i in range(lo, hi):
            _grad_row(kind, dA, Z, A, dZ, partial[c], alpha, i)
    db[:] = partial[0]
    for c in range(1, chunks):
        db += partial[c]


@kernel
def small_dense_forward(kind, X, W, b, Z, A, alpha):
    """Z = X @ W + b and A = f(Z), row by row: for layers too small for BLAS to pay off."""
    n_in = W.shape[0]
    for i in range(X.shape[0]):
        Z[i, :] = 0
        for k in range(n_in):
            x = X[i, k]
            for j in range(W.shape[1]):
                Z[i, j] += x * W[k, j]
        _activate_row(kind, Z, b, A, alpha, i)


@kernel
def _product_grads_row(X, W, g, dW, dX, i, need_dx):
    """dW += X[i]^T g and dX[i] = g @ W^T for one row's pre-activation gradient g."""
    for k in range(W.shape[0]):
        x = X[i, k]
        s = typed(x, 0.0)
        for j in range(W.shape[1]):
            dW[k, j] += x * g[j]
            s += g[j] * W[k, j]
        if need_dx:
            dX[i, k] = s


@kernel
def small_dense_backward(X, W, dZ, dW, dX, need_dx):
    """dW = X^T dZ and dX = dZ W^T in one pass over the rows (small layers)."""
    dW[:] = 0
    for i in range(X.shape[0]):
        _product_grads_row(X, W, dZ[i], dW, dX, i, need_dx)


@kernel
def small_layer_backward(kind, X, W, dA, Z, A, dW, db, dX, alpha, need_dx):
    """The whole backward of a small layer in one pass: dZ row, db, dW and dX."""
    dZ = np.empty((1, Z.shape[1]), Z.dtype)
    dW[:] = 0
    db[:] = 0
    for i in range(X.shape[0]):
        _grad_row(kind, dA[i:i + 1], Z[i:i + 1], A[i:i + 1], dZ, db, alpha, 0)
        _product_grads_row(X, W, dZ[0], dW, dX, i, need_dx)
