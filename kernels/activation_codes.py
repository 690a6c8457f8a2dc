"""The integer code of each built-in activation in the accelerated kernels: one table
for the Numba kernels (their ``kind`` argument), the CUDA kernels (their ``ACT``
template argument) and the tests.

A kernel replaces an activation's own ``forward`` and ``derivative`` only for a
built-in activation used as is (``code_of``): a user's subclass runs its own code on
every backend, even one that keeps a built-in's name.
"""

from fastnn.activations import builtin_name

IDENTITY, RELU, LEAKY_RELU, SIGMOID, TANH, SOFTPLUS, SOFTMAX, STEP = range(8)
CODES = {
    "identity": IDENTITY, "relu": RELU, "leaky_relu": LEAKY_RELU, "sigmoid": SIGMOID,
    "tanh": TANH, "softplus": SOFTPLUS, "softmax": SOFTMAX, "step": STEP,
}
# applied element by element (softmax is row-wise); of those, the ones with a gradient
ELEMENTWISE = tuple(name for name in CODES if name != "softmax")
DIFFERENTIABLE = tuple(name for name in ELEMENTWISE if name != "step")


def code_of(activation):
    """(code, alpha) of a built-in activation used as is, else None."""
    name = builtin_name(activation)
    if name is None:
        return None
    return CODES[name], float(getattr(activation, "alpha", 0.0))
