"""Output-layer kernels: each loss and its gradient from the logits in one pass.

The loss is summed in float64 whatever the array dtype, then returned as a Python
float; the gradient is written in the arrays' dtype.
"""

import math

import numpy as np

from .jit import flat, kernel
from .math import typed, typed_as, vexp, vlog1p_unit


@kernel(inline=True)
def sigmoid_bce(Z, A, Y, dZ, scale, need_grad):
    """mean(max(z,0) - z*y + log1p(exp(-|z|))); dZ = (a - y) * scale (1/N) if need_grad."""
    z, a, y = flat(Z), flat(A), flat(Y)
    terms = np.empty(z.size, Z.dtype)  # a flat loop without a running sum vectorizes
    for k in range(z.size):
        terms[k] = max(z[k], typed(z[k], 0.0)) - z[k] * y[k] + vlog1p_unit(vexp(-abs(z[k])))
    if need_grad:
        g, step = flat(dZ), typed_as(dZ, scale)
        for k in range(z.size):
            g[k] = (a[k] - y[k]) * step
    total = 0.0
    for k in range(z.size):
        total += terms[k]
    return total / z.size


@kernel(inline=True)
def softmax_xent(Z, A, Y, dZ, scale, need_grad):
    """-sum(y * log_softmax(z)) / m from the row max and log-sum-exp; dZ = (a - y) * scale."""
    m, n = Z.shape
    step = typed_as(dZ, scale)
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
                dZ[i, j] = (A[i, j] - Y[i, j]) * step
    return total / m
