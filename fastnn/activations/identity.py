"""identity: f(z) = z, the linear output of regression."""

import numpy as np

from .base import Activation


class Identity(Activation):
    name = "identity"
    aliases = ("linear", "none")
    cuda_forward = "z"
    cuda_backward = "dA"

    def forward(self, xp, z):
        return z

    def derivative(self, xp, z, a):
        return xp.ones_like(z)

    def backward(self, xp, dA, z, a):
        return dA

    @staticmethod
    def numba():
        def forward(z, alpha):
            return z

        def grad(da, z, a, alpha):
            return da

        return forward, grad

    def reference(self, z):
        return z

    def reference_derivative(self, z):
        return np.ones_like(z)

    def torch(self, torch, z):
        return z

    def torch_backward(self, torch, dA, z, a):
        return dA
