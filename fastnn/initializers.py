"""Weight initializers. Weights are drawn on the host from NumPy's PCG64 in float64,
then cast and moved to the backend, so the same seed gives the same initial weights
on every backend. Biases start at zero.

The scale depends on the fans as in PyTorch: a Dense layer's fan-in and fan-out are
n_in and n_out; a convolution's (out, in, kh, kw) kernel has fan-in in*kh*kw and
fan-out out*kh*kw (each input and output pixel sees that many weights).
"""

import math

from fastnn.names import lookup, normalize
from fastnn.validation import positive_number


class Initializer:
    name = "initializer"

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"

    def config(self):
        return {"name": self.name, **vars(self)}

    def std(self, n_in, n_out):
        raise NotImplementedError

    def __call__(self, rng, n_in, n_out, shape=None):
        """A float64 NumPy array of weights drawn from ``rng`` for fan-in ``n_in`` and
        fan-out ``n_out``, of ``shape`` (default (n_in, n_out), a Dense layer's)."""
        shape = (n_in, n_out) if shape is None else shape
        return rng.standard_normal(shape) * self.std(n_in, n_out)


class Normal(Initializer):
    """N(0, scale^2): the tutorials' ``randn * 0.01``."""

    name = "normal"

    def __init__(self, scale=0.01):
        self.scale = positive_number("normal init scale", scale)

    def std(self, n_in, n_out):
        return self.scale


class He(Initializer):
    """N(0, 2/n_in): keeps ReLU activations' variance steady through depth."""

    name = "he"

    def std(self, n_in, n_out):
        return math.sqrt(2.0 / n_in)


class Xavier(Initializer):
    """Glorot's N(0, 2/(n_in + n_out)): for tanh, sigmoid and linear layers."""

    name = "xavier"

    def std(self, n_in, n_out):
        return math.sqrt(2.0 / (n_in + n_out))


TABLE = {"normal": Normal, "he": He, "xavier": Xavier, "glorot": Xavier}


def normal(scale=0.01):
    return Normal(scale)


def get(init="auto", activation=None, **params):
    """An Initializer from a name, config dict or instance; 'auto' picks the one the
    activation's spec names (its ``initializer``: He for ReLU-like ones, Xavier for
    the others), Xavier without an activation."""
    if isinstance(init, Initializer):
        return init
    if isinstance(init, dict):
        params = {k: v for k, v in init.items() if k != "name"}
        init = init.get("name")
    if isinstance(init, str) and normalize(init) == "auto":
        return TABLE[getattr(activation, "initializer", "xavier")]()
    cls = lookup("initializer", init, {**TABLE, "auto": None})
    try:
        return cls(**params)
    except TypeError:
        raise TypeError(f"initializer {init!r} takes no parameters {sorted(params)}") from None
