"""gelu: z * Phi(z) in its tanh approximation, as PyTorch's ``gelu(approximate="tanh")``:
0.5 z (1 + tanh(u)), u = sqrt(2/pi) (z + 0.044715 z^3).

Computed as z * sigmoid(2u), the same number (1 + tanh(u) = 2 sigmoid(2u)) without
the cancellation of 1 + tanh(u) for negative z, through ``stable_sigmoid``: finite
without warnings for |z| up to 1e4 (z^3 = 1e12 is far from float32's overflow).
Its derivative: s + z s (1 - s) 2 u'(z), s = sigmoid(2u), u' = sqrt(2/pi) (1 + 3 0.044715 z^2).
"""

import math

import numpy as np

from .base import Activation, stable_sigmoid

C = math.sqrt(2.0 / math.pi)  # sqrt(2/pi)
K = 0.044715
C2, K3 = 2.0 * C, 3.0 * K


class GELU(Activation):
    name = "gelu"
    derivative_from_output = False
    initializer = "he"
    cuda_helpers = f"#define GELU_C2 {C2!r}\n#define GELU_K {K!r}\n#define GELU_K3 {K3!r}\n"
    cuda_helpers += r"""
/* gelu's sigmoid(2u) = (1 + tanh(u)) / 2, u = sqrt(2/pi) (z + 0.044715 z^3) */
template <typename T> __device__ __forceinline__ T gelu_gate(T z) {
    return stable_sigmoid(T(GELU_C2) * (z + T(GELU_K) * z * z * z));
}
template <typename T> __device__ __forceinline__ T gelu_grad(T z) {
    T s = gelu_gate(z);
    return s + z * T(GELU_C2) * s * (T(1) - s) * (T(1) + T(GELU_K3) * (z * z));
}
"""
    cuda_forward = "z * gelu_gate(z)"
    cuda_backward = "dA * gelu_grad(z)"

    def forward(self, xp, z):
        return z * stable_sigmoid(xp, C2 * (z + K * z * z * z))

    def derivative(self, xp, z, a):
        s = stable_sigmoid(xp, C2 * (z + K * z * z * z))
        return s + z * C2 * s * (1.0 - s) * (1.0 + K3 * (z * z))

    @staticmethod
    def numba():
        from fastnn.kernels.numba.math import typed, vsigmoid

        def forward(z, alpha):
            return z * vsigmoid(typed(z, C2) * (z + typed(z, K) * z * z * z))

        def grad(da, z, a, alpha):
            s = vsigmoid(typed(z, C2) * (z + typed(z, K) * z * z * z))
            one = typed(z, 1.0)
            return da * (s + z * typed(z, C2) * s * (one - s) * (one + typed(z, K3) * (z * z)))

        return forward, grad

    def reference(self, z):
        return 0.5 * z * (1.0 + np.tanh(C * (z + K * z**3)))

    def reference_derivative(self, z):
        t = np.tanh(C * (z + K * z**3))
        return 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * C * (1.0 + 3.0 * K * z * z)

    def torch(self, torch, z):
        return torch.nn.functional.gelu(z, approximate="tanh")

    def torch_backward(self, torch, dA, z, a):
        return torch.ops.aten.gelu_backward(dA, z, approximate="tanh")
