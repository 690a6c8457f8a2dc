"""Activation functions: each one's forward and derivative in one place, xp-generic.

Masks are applied by multiplying with 0/1 arrays rather than by ``where``: NumPy's
where() runs 5-15x slower on data with random signs (branch mispredictions).

Every formula stays finite for |z| up to 1e4 in float32 and float64 without overflow
warnings: no exponential sees an argument that overflows, and softmax shifts by the
row maximum.
``backward(xp, dA, z, a)`` returns dA * f'(z); it may use the saved output ``a``.
"""

from fastnn.errors import NotDifferentiable
from fastnn.names import builtin, lookup, normalize


class Activation:
    """Base class. ``differentiable`` is False only for step."""

    name = "activation"
    differentiable = True
    derivative_from_output = True  # f'(z) is computable from a = f(z) (relu: a > 0 iff z > 0)

    def __repr__(self):
        return f"{type(self).__name__}()"

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
        return dA * self.derivative(xp, z, a)


class Identity(Activation):
    name = "identity"

    def forward(self, xp, z):
        return z

    def derivative(self, xp, z, a):
        return xp.ones_like(z)

    def backward(self, xp, dA, z, a):
        return dA


def stable_sigmoid(xp, z):
    """1 / (1 + exp(-z)) with z clipped from below where exp(-z) would overflow.

    Below the clip (-87 in float32, -708 in float64) the true value is already under
    the smallest normal float, so the result stays exact to rounding everywhere. It
    avoids a branchy where(), which costs NumPy 7 ns an element on random signs.
    """
    floor = -87.0 if z.dtype == xp.float32 else -708.0
    return 1.0 / (1.0 + xp.exp(-xp.maximum(z, floor)))


class Sigmoid(Activation):
    name = "sigmoid"

    def forward(self, xp, z):
        return stable_sigmoid(xp, z)

    def derivative(self, xp, z, a):
        return a * (1.0 - a)


class Tanh(Activation):
    name = "tanh"

    def forward(self, xp, z):
        return xp.tanh(z)

    def derivative(self, xp, z, a):
        return 1.0 - a * a


class ReLU(Activation):
    name = "relu"

    def forward(self, xp, z):
        return xp.maximum(z, 0.0)

    def derivative(self, xp, z, a):
        return xp.astype(z > 0, z.dtype)

    def backward(self, xp, dA, z, a):
        return dA * self.derivative(xp, z, a)


class LeakyReLU(Activation):
    """max(z, alpha*z) for 0 <= alpha < 1; the tutorials use alpha = 0.01."""

    name = "leaky_relu"

    def __init__(self, alpha=0.01):
        alpha = float(alpha)
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"leaky_relu alpha must be in [0, 1); got {alpha}")
        self.alpha = alpha

    def __repr__(self):
        return f"LeakyReLU(alpha={self.alpha})"

    def forward(self, xp, z):
        return xp.maximum(z, self.alpha * z)  # alpha < 1; where() is 4x slower in NumPy

    def derivative(self, xp, z, a):
        return self.alpha + (1.0 - self.alpha) * xp.astype(z > 0, z.dtype)


class Softplus(Activation):
    """log(1 + exp(z)), a smooth ReLU; its derivative is the sigmoid."""

    name = "softplus"
    derivative_from_output = False

    def forward(self, xp, z):
        return xp.logaddexp(z, 0.0)

    def derivative(self, xp, z, a):
        return stable_sigmoid(xp, z)


class Softmax(Activation):
    """Row-wise softmax over the features axis; not elementwise, so its backward is the
    Jacobian-vector product a * (dA - sum(dA * a))."""

    name = "softmax"

    def forward(self, xp, z):
        e = xp.exp(z - xp.max(z, axis=1, keepdims=True))
        return e / xp.sum(e, axis=1, keepdims=True)

    def derivative(self, xp, z, a):
        raise NotImplementedError("softmax has a full Jacobian; use backward()")

    def backward(self, xp, dA, z, a):
        return a * (dA - xp.sum(dA * a, axis=1, keepdims=True))


class Step(Activation):
    """The perceptron's threshold unit: 1 where z > 0, else 0. Inference only."""

    name = "step"
    differentiable = False

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


TABLE = {
    cls.name: cls
    for cls in (Identity, Sigmoid, Tanh, ReLU, LeakyReLU, Softplus, Softmax, Step)
}
ALIASES = {"linear": "identity", "none": "identity", "leakyrelu": "leaky_relu"}


def builtin_name(activation):
    """The name of a built-in activation used as is (its class exactly, not a subclass),
    else None: only these may be replaced by a backend's fused kernels, so a user's
    subclass that keeps a built-in's name still runs its own forward and derivative."""
    return builtin(activation, TABLE)


def get(activation="identity", **params):
    """An Activation from a name ('relu', 'leaky_relu', ...), a config dict, or an instance."""
    if isinstance(activation, Activation):
        return activation
    if isinstance(activation, dict):
        params = {k: v for k, v in activation.items() if k != "name"}
        activation = activation.get("name", "identity")
    if isinstance(activation, str):
        activation = ALIASES.get(normalize(activation), activation)
    cls = lookup("activation", activation, TABLE)
    try:
        return cls(**params)
    except TypeError:
        raise TypeError(f"activation {cls.name!r} takes no parameters {sorted(params)}") from None
