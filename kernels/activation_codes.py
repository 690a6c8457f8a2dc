"""The integer code of each built-in activation in the accelerated kernels: its position
in the registry (``fastnn.activations.SPECS``), never numbered by hand. One table for
the Numba kernels (their ``kind`` argument), the CUDA kernels (their ``ACT`` template
argument) and the tests.

A kernel replaces an activation's own ``forward`` and ``derivative`` only for a
built-in activation used as is (``code_of``): a user's subclass runs its own code on
every backend, even one that keeps a built-in's name.
"""

from fastnn.activations import SPECS, builtin_name

CODES = {spec.name: code for code, spec in enumerate(SPECS)}
SPEC_OF = dict(enumerate(SPECS))  # code -> the activation's class
globals().update({name.upper(): code for name, code in CODES.items()})  # RELU, TANH, ...
# the codes the kernels treat apart: the default, the row-wise one, the one without a gradient
IDENTITY, SOFTMAX, STEP = CODES["identity"], CODES["softmax"], CODES["step"]
# applied element by element (softmax is row-wise); of those, the ones with a gradient
ELEMENTWISE = tuple(spec.name for spec in SPECS if spec.elementwise)
DIFFERENTIABLE = tuple(name for name in ELEMENTWISE if SPECS[CODES[name]].differentiable)


def code_of(activation):
    """(code, alpha) of a built-in activation used as is, else None."""
    name = builtin_name(activation)
    if name is None:
        return None
    return CODES[name], float(getattr(activation, "alpha", 0.0))
