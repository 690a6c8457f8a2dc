"""softplus: log(1 + exp(z)), a smooth ReLU; its derivative is the sigmoid."""

import numpy as np

from .base import Activation, stable_sigmoid


class Softplus(Activation):
    name = "softplus"
    derivative_from_output = False
    initializer = "he"
    cuda_helpers = r"""
/* log(exp(z) + 1) exactly as NumPy's logaddexp(z, 0) */
template <typename T> __device__ __forceinline__ T softplus(T z) {
    if (z == T(0)) return z + T(0.693147180559945309417232121458176568);
    if (z > T(0)) return z + fn_log1p(fn_exp(-z));
    if (z <= T(0)) return fn_log1p(fn_exp(z));
    return z;  /* NaN */
}
"""
    cuda_forward = "softplus(z)"
    cuda_backward = "dA * stable_sigmoid(z)"

    def forward(self, xp, z):
        return xp.logaddexp(z, 0.0)

    def derivative(self, xp, z, a):
        return stable_sigmoid(xp, z)

    @staticmethod
    def numba():
        from fastnn.kernels.numba.math import typed, vexp, vlog1p_unit, vsigmoid

        def forward(z, alpha):
            return max(z, typed(z, 0.0)) + vlog1p_unit(vexp(-abs(z))) if z == z else z

        def grad(da, z, a, alpha):
            return da * vsigmoid(z)

        return forward, grad

    def reference(self, z):
        return np.log1p(np.exp(z))

    def reference_derivative(self, z):
        return 1.0 / (1.0 + np.exp(-z))

    def torch(self, torch, z):
        return torch.nn.functional.softplus(z)

    def torch_backward(self, torch, dA, z, a):
        return torch.ops.aten.softplus_backward(dA, z, 1, 20)
