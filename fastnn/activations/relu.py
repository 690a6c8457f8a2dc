"""relu: max(z, 0); its derivative is 1 where z > 0, else 0 (0 at the kink, as PyTorch)."""

import numpy as np

from .base import Activation


class ReLU(Activation):
    name = "relu"
    initializer = "he"
    cuda_forward = "keep_max(z, T(0))"
    cuda_backward = "dA * (z > T(0) ? T(1) : T(0))"

    def forward(self, xp, z):
        return xp.maximum(z, 0.0)

    def derivative(self, xp, z, a):
        return xp.astype(z > 0, z.dtype)

    @staticmethod
    def numba():
        from fastnn.kernels.numba.math import typed

        def forward(z, alpha):  # NaN stays NaN (max() would drop it)
            return max(z, typed(z, 0.0)) if z == z else z

        def grad(da, z, a, alpha):
            return da if z > typed(z, 0.0) else typed(z, 0.0) * da

        return forward, grad

    def reference(self, z):
        return np.maximum(z, 0.0)

    def reference_derivative(self, z):
        return (z > 0).astype(float)

    def torch(self, torch, z):
        return torch.relu(z)

    def torch_backward(self, torch, dA, z, a):
        return torch.ops.aten.threshold_backward(dA, a, 0)
