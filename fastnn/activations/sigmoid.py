"""sigmoid: 1 / (1 + exp(-z)), computed without overflow (``stable_sigmoid``)."""

import numpy as np

from .base import Activation, stable_sigmoid


class Sigmoid(Activation):
    name = "sigmoid"
    cuda_forward = "stable_sigmoid(z)"
    cuda_backward = "dA * (a * (T(1) - a))"

    def forward(self, xp, z):
        return stable_sigmoid(xp, z)

    def derivative(self, xp, z, a):
        return a * (1.0 - a)

    @staticmethod
    def numba():
        from fastnn.kernels.numba.math import typed, vsigmoid

        def forward(z, alpha):
            return vsigmoid(z)

        def grad(da, z, a, alpha):
            return da * a * (typed(a, 1.0) - a)

        return forward, grad

    def reference(self, z):
        return 0.5 * (1.0 + np.tanh(0.5 * z))  # an exact identity, free of overflow

    def reference_derivative(self, z):
        s = self.reference(z)
        return s * (1.0 - s)

    def torch(self, torch, z):
        return torch.sigmoid(z)

    def torch_backward(self, torch, dA, z, a):
        return torch.ops.aten.sigmoid_backward(dA, a)
