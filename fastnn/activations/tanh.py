"""tanh: the hyperbolic tangent; its derivative is 1 - a^2."""

import numpy as np

from .base import Activation


class Tanh(Activation):
    name = "tanh"
    cuda_forward = "fn_tanh(z)"
    cuda_backward = "dA * (T(1) - a * a)"

    def forward(self, xp, z):
        return xp.tanh(z)

    def derivative(self, xp, z, a):
        return 1.0 - a * a

    @staticmethod
    def numba():
        from fastnn.kernels.numba.math import typed, vtanh

        def forward(z, alpha):
            return vtanh(z)

        def grad(da, z, a, alpha):
            return da * (typed(a, 1.0) - a * a)

        return forward, grad

    def reference(self, z):
        return np.tanh(z)

    def reference_derivative(self, z):
        return 1.0 / np.cosh(z) ** 2

    def torch(self, torch, z):
        return torch.tanh(z)

    def torch_backward(self, torch, dA, z, a):
        return torch.ops.aten.tanh_backward(dA, a)
