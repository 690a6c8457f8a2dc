"""softmax: row-wise over the features axis, shifted by the row maximum. Not
elementwise, so its backward is the Jacobian-vector product a * (dA - sum(dA * a)),
and its kernels are row-wise ones of their own (no scalar spec)."""

import numpy as np

from .base import Activation


class Softmax(Activation):
    name = "softmax"
    elementwise = False

    def forward(self, xp, z):
        e = xp.exp(z - xp.max(z, axis=1, keepdims=True))
        return e / xp.sum(e, axis=1, keepdims=True)

    def derivative(self, xp, z, a):
        raise NotImplementedError("softmax has a full Jacobian; use backward()")

    def backward(self, xp, dA, z, a):
        return a * (dA - xp.sum(dA * a, axis=1, keepdims=True))

    def reference(self, z):
        return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)

    def reference_backward(self, dA, z):
        a = self.reference(z)
        return a * (dA - (dA * a).sum(axis=1, keepdims=True))

    def torch(self, torch, z):
        return torch.softmax(z, dim=1)

    def torch_backward(self, torch, dA, z, a):
        return torch.ops.aten._softmax_backward_data(dA, a, 1, a.dtype)
