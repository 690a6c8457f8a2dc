"""Each activation's forward and derivative for the Numba kernels, in one table.

Kernels receive an activation as an integer ``kind`` (and ``alpha`` for leaky ReLU).
``forward`` and ``grad`` below branch on it. They are inlined into the kernels before
compilation, so the branch sits inside each loop body where LLVM can see that it does
not depend on the loop index: it unswitches it (one vectorized loop per kind).
Row-wise activations (softmax) are handled by the row functions in ``numba_dense``.
"""

from numba import njit

from .numba_math import typed, vexp, vlog1p_unit, vsigmoid, vtanh

IDENTITY, RELU, LEAKY_RELU, SIGMOID, TANH, SOFTPLUS, SOFTMAX, STEP = range(8)
KINDS = {
    "identity": IDENTITY, "relu": RELU, "leaky_relu": LEAKY_RELU, "sigmoid": SIGMOID,
    "tanh": TANH, "softplus": SOFTPLUS, "softmax": SOFTMAX, "step": STEP,
}
NEEDS_Z = (LEAKY_RELU, RELU, SOFTPLUS)  # derivatives read z; the others read a = f(z)


def kind_of(activation):
    """(kind, alpha) for a fastnn Activation, or None if no kernel covers it."""
    kind = KINDS.get(activation.name)
    if kind is None:
        return None
    return kind, float(getattr(activation, "alpha", 0.0))


@njit(inline="always")
def forward(kind, z, alpha):
    """f(z) for the elementwise kinds."""
    zero = typed(z, 0.0)
    if kind == RELU:
        return max(z, zero) if z == z else z
    if kind == LEAKY_RELU:
        return max(z, alpha * z) if z == z else z
    if kind == SIGMOID:
        return vsigmoid(z)
    if kind == TANH:
        return vtanh(z)
    if kind == SOFTPLUS:
        return max(z, zero) + vlog1p_unit(vexp(-abs(z))) if z == z else z
    if kind == STEP:
        return typed(z, 1.0) if z > zero else zero
    return z


@njit(inline="always")
def grad(kind, da, z, a, alpha):
    """da * f'(z), given z and a = f(z), for the elementwise kinds."""
    zero = typed(z, 0.0)
    if kind == RELU:
        return da if z > zero else zero * da
    if kind == LEAKY_RELU:
        return da if z > zero else alpha * da
    if kind == SIGMOID:
        return da * a * (typed(z, 1.0) - a)
    if kind == TANH:
        return da * (typed(z, 1.0) - a * a)
    if kind == SOFTPLUS:
        return da * vsigmoid(z)
    return da
