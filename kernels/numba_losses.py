"""Output-layer kernels: each loss and its gradient from the logits in one pass.

The loss is summed in float64 whatever the array dtype, then returned as a Python
float; the gradient is written in the arrays' dtype.
"""

import math

from .numba_jit import kernel
from .numba_math import typed, vexp, vlog1p_unit


@kernel
def sigmoid_bce(Z, A, Y, dZ, scale, need_grad):
    """mean(max(z,0) - z*y + log1p(exp(-|z|))); dZ = (a - y) * scale (1/N) if need_grad."""
    m, n = Z.shape
    total = 0.0
    for i in range(m):
        for j in range(n):
            z = Z[i, j]
            total += max(z, typed(z, 0.0)) - z * Y[i, j] + vlog1p_unit(vexp(-abs(z)))
            if need_grad:
                dZ[i, j] = (A[i, j] - Y[i, j]) * scale
    return total / (m * n)


@kernel
def softmax_xent(Z, A, Y, dZ, scale, need_grad):
    """-sum(y * log_softmax(z)) / m from the row max and log-sum-exp; dZ = (a - y) * scale."""
    m, n = Z.shape
    total = 0.0
    for i in range(m):
        top = Z[i, 0]
        for j in range(n):
            top = max(top, Z[i, j])
        sum_exp = typed(top, 0.0)
        for j in range(n):
            sum_exp += vexp(Z[i, j] - top)
        log_sum = math.log(sum_exp)
        for j in range(n):
            total -= Y[i, j] * ((Z[i, j] - top) - log_sum)
            if need_grad:
                dZ[i, j] = (A[i, j] - Y[i, j]) * scale
    return total / m
