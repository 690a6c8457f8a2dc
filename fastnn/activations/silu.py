"""silu (swish): z * sigmoid(z); its derivative is s (1 + z (1 - s)), s = sigmoid(z).

Through ``stable_sigmoid``: finite without warnings for |z| up to 1e4."""

import numpy as np

from .base import Activation, stable_sigmoid


class SiLU(Activation):
    name = "silu"
    aliases = ("swish",)
    derivative_from_output = False
    initializer = "he"
    cuda_helpers = r"""
template <typename T> __device__ __forceinline__ T silu_grad(T z) {
    T s = stable_sigmoid(z);
    return s * (T(1) + z * (T(1) - s));
}
"""
    cuda_forward = "z * stable_sigmoid(z)"
    cuda_backward = "dA * silu_grad(z)"

    def forward(self, xp, z):
        return z * stable_sigmoid(xp, z)

    def derivative(self, xp, z, a):
        s = stable_sigmoid(xp, z)
        return s * (1.0 + z * (1.0 - s))

    @staticmethod
    def numba():
        from fastnn.kernels.numba.math import typed, vsigmoid

        def forward(z, alpha):
            return z * vsigmoid(z)

        def grad(da, z, a, alpha):
            s = vsigmoid(z)
            one = typed(z, 1.0)
            return da * (s * (one + z * (one - s)))

        return forward, grad

    def reference(self, z):
        return z / (1.0 + np.exp(-z))

    def reference_derivative(self, z):
        s = 1.0 / (1.0 + np.exp(-z))
        return s + z * s * (1.0 - s)

    def torch(self, torch, z):
        return torch.nn.functional.silu(z)

    def torch_backward(self, torch, dA, z, a):
        return torch.ops.aten.silu_backward(dA, z)
