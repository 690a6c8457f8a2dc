"""step: the perceptron's threshold unit, 1 where z > 0, else 0. Inference only."""

from fastnn.errors import NotDifferentiable

from .base import Activation


class Step(Activation):
    name = "step"
    differentiable = False
    cuda_forward = "(z > T(0) ? T(1) : T(0))"

    def forward(self, xp, z):
        return xp.astype(z > 0, z.dtype)

    def derivative(self, xp, z, a):
        raise NotDifferentiable(
            "the step activation has no useful gradient (zero almost everywhere), so a "
            "network using it cannot be trained by backpropagation; use it for inference "
            "with given weights, or train with 'sigmoid' or 'relu' instead"
        )

    def backward(self, xp, dA, z, a):
        return self.derivative(xp, z, a)

    @staticmethod
    def numba():
        from fastnn.kernels.numba.math import typed

        def forward(z, alpha):
            return typed(z, 1.0) if z > typed(z, 0.0) else typed(z, 0.0)

        return forward, None

    def reference(self, z):
        return (z > 0).astype(float)

    def torch(self, torch, z):
        return (z > 0).to(z.dtype)
