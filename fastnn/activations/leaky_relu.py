"""leaky_relu: max(z, alpha*z) for 0 <= alpha < 1; the tutorials use alpha = 0.01."""

import numpy as np

from .base import Activation, alpha_in


class LeakyReLU(Activation):
    name = "leaky_relu"
    aliases = ("leakyrelu",)
    initializer = "he"
    cuda_forward = "keep_max(z, alpha * z)"
    cuda_backward = "dA * (alpha + alpha2 * (z > T(0) ? T(1) : T(0)))"

    def __init__(self, alpha=0.01):
        self.alpha = alpha_in("leaky_relu", alpha, 0.0, 1.0)

    def forward(self, xp, z):
        return xp.maximum(z, self.alpha * z)  # alpha < 1; where() is 4x slower in NumPy

    def derivative(self, xp, z, a):
        return self.alpha + (1.0 - self.alpha) * xp.astype(z > 0, z.dtype)

    @staticmethod
    def numba():
        from fastnn.kernels.numba.math import typed

        def forward(z, alpha):
            return max(z, alpha * z) if z == z else z

        def grad(da, z, a, alpha):
            return da if z > typed(z, 0.0) else alpha * da

        return forward, grad

    def reference(self, z):
        return np.where(z > 0, z, self.alpha * z)

    def reference_derivative(self, z):
        return np.where(z > 0, 1.0, self.alpha)

    def torch(self, torch, z):
        return torch.nn.functional.leaky_relu(z, self.alpha)

    def torch_backward(self, torch, dA, z, a):
        return torch.ops.aten.leaky_relu_backward(dA, z, self.alpha, False)
