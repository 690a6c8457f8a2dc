"""What every activation spec defines (``Activation``), and helpers the specs share.

An activation is one class in one file of this package (``relu.py``, ``gelu.py``,
...): everything fastnn knows about it lives there, and the rest of the library reads
it from the registry (``fastnn.activations``):

- ``name``, ``aliases``, its parameter (``alpha``, the only one a kernel can take) and
  flags: ``differentiable``, ``elementwise`` (softmax is row-wise),
  ``derivative_from_output`` (f'(z) computable from a = f(z)), and ``initializer``
  (the weight initializer ``init="auto"`` picks: "he" or "xavier");
- ``forward(xp, z)`` and ``derivative(xp, z, a)`` (or ``backward``), array-API generic:
  what the NumPy backend runs and what every kernel is checked against;
- ``numba()``: the scalar forward ``f(z, alpha)`` and gradient ``g(da, z, a, alpha)``
  the generated Numba kernels inline (``kernels/numba/activations.py``), written with
  the vectorizable math of ``kernels/numba/math.py``;
- ``cuda_forward``/``cuda_backward``: C expressions of ``z``, ``a``, ``dA``, ``alpha``
  and ``alpha2`` (1 - alpha) of type ``T``, with any helper functions they call in
  ``cuda_helpers``, from which ``kernels/cuda/source.py`` generates its kernels;
- ``reference(z)``/``reference_derivative(z)``: the textbook float64 NumPy formulas
  the tests and benchmarks check results against (written independently of forward);
- ``torch(torch, z)``/``torch_backward(torch, dA, z, a)``: the PyTorch equivalent
  (what the PyTorch comparison test and the benchmarks' peers run).

Masks are applied by multiplying with 0/1 arrays rather than by ``where``: NumPy's
where() runs 5-15x slower on data with random signs (branch mispredictions). Every
formula stays finite for |z| up to 1e4 in float32 and float64 without overflow
warnings: no exponential sees an argument that overflows.
"""


class Activation:
    """Base class of every activation; a user's own subclass runs its own forward and
    derivative on every backend (kernels replace only the built-ins used as they are)."""

    name = "activation"
    aliases = ()
    differentiable = True
    elementwise = True
    derivative_from_output = True  # f'(z) is computable from a = f(z) (relu: a > 0 iff z > 0)
    initializer = "xavier"
    cuda_forward = cuda_backward = None  # C expressions (see the module docstring)
    cuda_helpers = ""

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other):
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self):
        return hash((type(self), tuple(sorted(vars(self).items()))))

    def config(self):
        """Plain-data description, enough to rebuild it with ``get(**config)``."""
        return {"name": self.name, **vars(self)}

    def forward(self, xp, z):
        raise NotImplementedError

    def derivative(self, xp, z, a):
        """f'(z) elementwise, given z and a = f(z)."""
        raise NotImplementedError

    def backward(self, xp, dA, z, a):
        """dA * f'(z), the vector-Jacobian product; it may use the saved output ``a``."""
        return dA * self.derivative(xp, z, a)

    @staticmethod
    def numba():
        """(forward, gradient) scalar functions for the Numba kernels, or None (no kernel)."""
        return None

    def reference(self, z):
        """f(z) in float64 NumPy, the textbook formula."""
        raise NotImplementedError

    def reference_derivative(self, z):
        """f'(z) in float64 NumPy, the textbook formula."""
        raise NotImplementedError

    def reference_backward(self, dA, z):
        """dA * f'(z) in float64 NumPy (softmax: its vector-Jacobian product)."""
        return dA * self.reference_derivative(z)

    def torch(self, torch, z):
        """The same activation in PyTorch (``torch`` is passed in: never a dependency)."""
        raise NotImplementedError

    def torch_backward(self, torch, dA, z, a):
        """The aten backward kernel PyTorch's autograd runs for it: dA * f'(z)."""
        raise NotImplementedError


def stable_sigmoid(xp, z):
    """1 / (1 + exp(-z)) with z clipped from below where exp(-z) would overflow.

    Below the clip (-87 in float32, -708 in float64) the true value is already under
    the smallest normal float, so the result stays exact to rounding everywhere. It
    avoids a branchy where(), which costs NumPy 7 ns an element on random signs.
    """
    floor = -87.0 if z.dtype == xp.float32 else -708.0
    return 1.0 / (1.0 + xp.exp(-xp.maximum(z, floor)))


def alpha_in(name, alpha, low, high=None):
    """``alpha`` as a float, checked to lie in [low, high) (or [low, inf))."""
    alpha = float(alpha)
    if not (low <= alpha and (high is None or alpha < high)):
        bounds = f"[{low:g}, {high:g})" if high is not None else f">= {low:g}"
        raise ValueError(f"{name} alpha must be in {bounds}; got {alpha}")
    return alpha
