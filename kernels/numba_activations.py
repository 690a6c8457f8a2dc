"""Each activation's forward and derivative for the Numba kernels, in one place.

Kernels receive an activation as an integer ``kind`` (and ``alpha`` for leaky ReLU).
``forward_block`` and ``grad_block`` pick the kind once and then run a flat loop
that calls only that kind's scalar function, so LLVM inlines it and vectorizes the
loop (a branch on ``kind`` inside the loop defeats the vectorizer). Softmax is
row-wise and lives in ``numba_dense``; step has a forward only.
"""

from numba import njit

from .numba_jit import kernel
from .numba_math import typed, vexp, vlog1p_unit, vsigmoid, vtanh

IDENTITY, RELU, LEAKY_RELU, SIGMOID, TANH, SOFTPLUS, SOFTMAX, STEP = range(8)
KINDS = {
    "identity": IDENTITY, "relu": RELU, "leaky_relu": LEAKY_RELU, "sigmoid": SIGMOID,
    "tanh": TANH, "softplus": SOFTPLUS, "softmax": SOFTMAX, "step": STEP,
}


def kind_of(activation):
    """(kind, alpha) for a fastnn Activation, or None if no kernel covers it."""
    kind = KINDS.get(activation.name)
    if kind is None:
        return None
    return kind, float(getattr(activation, "alpha", 0.0))


# forward f(z) and gradient da * f'(z) given z and a = f(z), one pair per kind;
# NaN inputs stay NaN (max() would drop them).

@njit
def relu(z, alpha):
    return max(z, typed(z, 0.0)) if z == z else z


@njit
def relu_grad(da, z, a, alpha):
    return da if z > typed(z, 0.0) else typed(z, 0.0) * da


@njit
def leaky_relu(z, alpha):
    return max(z, alpha * z) if z == z else z


@njit
def leaky_relu_grad(da, z, a, alpha):
    return da if z > typed(z, 0.0) else alpha * da


@njit
def sigmoid_grad(da, z, a, alpha):
    return da * a * (typed(a, 1.0) - a)


@njit
def tanh_grad(da, z, a, alpha):
    return da * (typed(a, 1.0) - a * a)


@njit
def softplus(z, alpha):
    return max(z, typed(z, 0.0)) + vlog1p_unit(vexp(-abs(z))) if z == z else z


@njit
def softplus_grad(da, z, a, alpha):
    return da * vsigmoid(z)


@njit
def step(z, alpha):
    return typed(z, 1.0) if z > typed(z, 0.0) else typed(z, 0.0)


@kernel
def forward_block(kind, z, bias, a, alpha):
    """a = f(z + bias) over equal-length 1-D arrays; z is only read.

    Indices are plain loop counters: a computed index (base + k) gets Numba's
    negative-index check, which stops LLVM from vectorizing the loop."""
    count = z.shape[0]
    if kind == RELU:
        for k in range(count):
            v = z[k] + bias[k]
            a[k] = relu(v, alpha)
    elif kind == LEAKY_RELU:
        for k in range(count):
            v = z[k] + bias[k]
            a[k] = leaky_relu(v, alpha)
    elif kind == SIGMOID:
        for k in range(count):
            v = z[k] + bias[k]
            a[k] = vsigmoid(v)
    elif kind == TANH:
        for k in range(count):
            v = z[k] + bias[k]
            a[k] = vtanh(v)
    elif kind == SOFTPLUS:
        for k in range(count):
            v = z[k] + bias[k]
            a[k] = softplus(v, alpha)
    elif kind == STEP:
        for k in range(count):
            v = z[k] + bias[k]
            a[k] = step(v, alpha)
    else:  # identity
        for k in range(count):
            a[k] = z[k] + bias[k]


@kernel
def grad_block(kind, da, z, a, dz, acc, alpha):
    """dz = da * f'(z) and acc += dz over equal-length 1-D arrays."""
    count = z.shape[0]
    if kind == RELU:
        for k in range(count):
            g = relu_grad(da[k], z[k], a[k], alpha)
            dz[k] = g
            acc[k] += g
    elif kind == LEAKY_RELU:
        for k in range(count):
            g = leaky_relu_grad(da[k], z[k], a[k], alpha)
            dz[k] = g
            acc[k] += g
    elif kind == SIGMOID:
        for k in range(count):
            g = sigmoid_grad(da[k], z[k], a[k], alpha)
            dz[k] = g
            acc[k] += g
    elif kind == TANH:
        for k in range(count):
            g = tanh_grad(da[k], z[k], a[k], alpha)
            dz[k] = g
            acc[k] += g
    elif kind == SOFTPLUS:
        for k in range(count):
            g = softplus_grad(da[k], z[k], a[k], alpha)
            dz[k] = g
            acc[k] += g
    else:  # identity
        for k in range(count):
            g = da[k]
            dz[k] = g
            acc[k] += g
