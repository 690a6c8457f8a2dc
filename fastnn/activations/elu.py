"""elu: z where z > 0, else alpha (exp(z) - 1), for alpha >= 0 (default 1.0, as PyTorch).

The negative side is alpha * expm1(min(z, 0)), exact near 0, and exactly -alpha far
below (exp underflows quietly): finite without warnings for |z| up to 1e4. Its
derivative, 1 where z > 0, else alpha exp(z), reads z (from a it would be a + alpha,
which loses the tail to cancellation). The Numba kernel's expm1 is
2 tanh(z/2) / (1 - tanh(z/2)) on z <= 0: the vectorizable tanh, no cancellation.
"""

import numpy as np

from .base import Activation, alpha_in


class ELU(Activation):
    name = "elu"
    derivative_from_output = False
    initializer = "he"
    cuda_helpers = r"""
__device__ __forceinline__ float elu_expm1(float x) { return expm1f(x); }
__device__ __forceinline__ double elu_expm1(double x) { return expm1(x); }
"""
    cuda_forward = "(z > T(0) ? z : alpha * elu_expm1(z))"
    cuda_backward = "dA * (z > T(0) ? T(1) : alpha * fn_exp(z))"

    def __init__(self, alpha=1.0):
        self.alpha = alpha_in("elu", alpha, 0.0)

    def forward(self, xp, z):
        return xp.maximum(z, 0.0) + self.alpha * xp.expm1(xp.minimum(z, 0.0))

    def derivative(self, xp, z, a):
        positive = xp.astype(z > 0, z.dtype)
        return positive + (1.0 - positive) * (self.alpha * xp.exp(xp.minimum(z, 0.0)))

    @staticmethod
    def numba():
        from fastnn.kernels.numba.math import typed, vexp, vtanh

        def forward(z, alpha):
            zero = typed(z, 0.0)
            t = vtanh(typed(z, 0.5) * (z if z < zero else zero))
            negative = alpha * ((t + t) / (typed(z, 1.0) - t))  # alpha * expm1(min(z, 0))
            return z if z > zero or z != z else negative

        def grad(da, z, a, alpha):
            zero = typed(z, 0.0)
            return da if z > zero else da * (alpha * vexp(z if z < zero else zero))

        return forward, grad

    def reference(self, z):
        return np.where(z > 0, z, self.alpha * (np.exp(np.minimum(z, 0.0)) - 1.0))

    def reference_derivative(self, z):
        return np.where(z > 0, 1.0, self.alpha * np.exp(np.minimum(z, 0.0)))

    def torch(self, torch, z):
        return torch.nn.functional.elu(z, self.alpha)

    def torch_backward(self, torch, dA, z, a):
        return torch.ops.aten.elu_backward(dA, self.alpha, 1, 1, False, z)
