"""The layer protocol, and Dense (affine + activation), Dropout and Flatten, batch-first
(BatchNorm is in ``fastnn.batchnorm``, Conv2D in ``fastnn.conv``, the pooling layers in
``fastnn.pooling``).

``Sequential`` first asks each layer for its output shape (``output_shape``, one
sample's shape, the batch axis left out), which checks that the layer can take what
the layer before it gives, then builds it onto a backend (``build``). ``forward``
keeps what ``backward`` needs; ``backward(dA)`` stores parameter gradients in each
Parameter's ``grad`` and returns the gradient for the layer below.

fastnn's own layer classes are registered (``register``) under their class name, the
``type`` in their ``config()``: checkpoints save and rebuild those, and only those.
"""

import math

import numpy as np

from fastnn import activations, initializers
from fastnn.validation import in_range, positive_int

TYPES = {}  # class name -> class, for fastnn's own layers (see ``register``)


def register(cls):
    """Class decorator for fastnn's own layers: checkpoints store such a layer as its
    ``config()`` (whose ``type`` is the class name) and rebuild it with ``from_config``."""
    TYPES[cls.__name__] = cls
    return cls


def builtin(layer):
    """True if ``layer``'s class is exactly one of fastnn's own (a user's subclass is not:
    its config would rebuild the parent class)."""
    return TYPES.get(type(layer).__name__) is type(layer)


def from_config(config):
    """A new layer from a ``config()`` dict."""
    config = dict(config)
    name = config.pop("type", None)
    if name not in TYPES:
        raise ValueError(f"unknown type {name!r} (the layer types are {', '.join(TYPES)})")
    return TYPES[name](**config)


class Parameter:
    """A layer's array: trainable (in ``params``, with its gradient in ``grad``) or a
    buffer (in ``buffers``: state such as running statistics, never trained).
    ``decay`` marks it for weight decay."""

    __slots__ = ("name", "value", "grad", "decay")

    def __init__(self, name, value, decay):
        self.name, self.value, self.grad, self.decay = name, value, None, decay

    def __repr__(self):
        return f"Parameter({self.name}, shape={tuple(self.value.shape)})"


class Layer:
    params = ()
    buffers = ()  # non-trainable state that moves and saves with the parameters
    backend = None
    cache = None  # what forward kept for backward
    input_shape = None  # one sample's input shape, where the layer fixes it (Dense: (n_in,))
    keeps_shape = False  # True: any input shape passes through unchanged (Dropout)
    replayable = False  # True: forward and backward are device work alone, on arrays that
    # keep their addresses, so ``fastnn.replay`` may record them (fastnn's own layers only)

    def output_shape(self, input_shape, source="the layer before it"):
        """One sample's output shape for one sample's ``input_shape`` (batch axis left
        out), which comes from ``source`` (words for the error). Raises ValueError when
        the layer cannot take it, worded to follow "layer <i> (<repr>)" and saying the
        fix. The default passes the shape through."""
        return tuple(input_shape)

    def build(self, backend, dtype, rng):
        """Create parameters on ``backend`` with ``dtype``, drawing from NumPy ``rng``."""
        self.backend = backend

    def to(self, backend, convert):
        """Move parameters and buffers to ``backend`` with ``convert`` (old -> new array)."""
        self.backend, self.cache = backend, None
        for p in (*self.params, *self.buffers):
            p.value = convert(p.value)
            p.grad = None if p.grad is None else convert(p.grad)

    def forward(self, X, training=False):
        raise NotImplementedError

    def backward(self, dA):
        raise NotImplementedError


def check_flat(n, input_shape, source, images_fix, width_fix):
    """One sample's ``input_shape`` must be ``n`` flat features; else a ValueError with
    ``images_fix`` (for images) or ``width_fix`` (for another width)."""
    if len(input_shape) != 1:
        raise ValueError(f"takes flat samples of {n} features but {source} gives samples of "
                         f"shape {tuple(input_shape)}; {images_fix}")
    if input_shape[0] != n:
        raise ValueError(f"takes {n} inputs but {source} gives {input_shape[0]}; {width_fix}")


class WeightLayer(Layer):
    """A layer whose parameters are a weight W (weight-decayed) and a bias b (not)."""

    @property
    def W(self):
        return self.params[0]

    @property
    def b(self):
        return self.params[1]

    def make_params(self, backend, dtype, weights, n_bias):
        """W from the host array ``weights`` and a zero bias of ``n_bias``, on ``backend``."""
        W = backend.asarray(weights, dtype=dtype)
        b = backend.asarray(np.zeros(n_bias), dtype=dtype)
        self.params = (Parameter("W", W, decay=True), Parameter("b", b, decay=False))


@register
class Dense(WeightLayer):
    """A = activation(X @ W + b) with W of shape (n_in, n_out)."""

    replayable = True

    def __init__(self, n_in, n_out, activation="identity", init="auto"):
        self.n_in = positive_int("Dense n_in", n_in)
        self.n_out = positive_int("Dense n_out", n_out)
        self.activation = activations.get(activation)
        self.init = initializers.get(init, self.activation)
        self.needs_input_grad = True
        self.keep_z = True  # Sequential clears it for hidden layers: only the loss reads Z

    def __repr__(self):
        return f"Dense({self.n_in}, {self.n_out}, activation={self.activation.name!r})"

    @property
    def input_shape(self):
        return (self.n_in,)

    def output_shape(self, input_shape, source="the layer before it"):
        check_flat(self.n_in, input_shape, source,
                   f"put a Flatten() before it (which gives {math.prod(input_shape)} features)",
                   f"make each n_in equal the previous n_out (here {input_shape[-1]})")
        return (self.n_out,)

    def config(self):
        return {
            "type": "Dense", "n_in": self.n_in, "n_out": self.n_out,
            "activation": self.activation.config(), "init": self.init.config(),
        }

    def build(self, backend, dtype, rng):
        super().build(backend, dtype, rng)
        self.make_params(backend, dtype, self.init(rng, self.n_in, self.n_out), self.n_out)

    def forward(self, X, training=False):
        Z, A = self.backend.ops.dense_forward(X, self.W.value, self.b.value, self.activation,
                                              self.keep_z)
        self.cache = (X, Z, A)
        return A

    def backward(self, dA):
        X, Z, A = self.cache
        dW, db, dX = self.backend.ops.layer_backward(
            X, self.W.value, dA, Z, A, self.activation, self.needs_input_grad
        )
        self.W.grad, self.b.grad = dW, db
        return dX

    def backward_from_z(self, dZ, db=None):
        """Backward from the pre-activation gradient (the output layer's loss gives it)."""
        X = self.cache[0]
        if db is None:
            db = self.backend.ops.bias_grad(dZ)
        dW, dX = self.backend.ops.dense_backward(X, self.W.value, dZ, self.needs_input_grad)
        self.W.grad, self.b.grad = dW, db
        return dX


@register
class Dropout(Layer):
    """Inverted dropout: in training, zero each input with probability ``p`` and scale
    the rest by 1/(1-p); in evaluation, pass inputs through unchanged. Works on any
    input shape (features or images)."""

    keeps_shape = True

    def __init__(self, p=0.5):
        self.p = in_range("Dropout p", p, 0.0, 1.0)
        self.mask = None
        self.frozen = False  # gradcheck freezes the mask so every forward pass agrees
        self.rng = None

    def __repr__(self):
        return f"Dropout({self.p})"

    def config(self):
        return {"type": "Dropout", "p": self.p}

    def build(self, backend, dtype, rng):
        super().build(backend, dtype, rng)
        self.reseed(int(rng.integers(2**63)))

    def reseed(self, seed):
        """Restart the mask stream from ``seed`` (``fit(seed=...)`` does this)."""
        self.seed, self.rng = seed, self.backend.rng(seed)

    def to(self, backend, convert):
        super().to(backend, convert)
        self.mask = None
        self.reseed(self.seed)

    def forward(self, X, training=False):
        if not training or self.p == 0.0:
            self.mask = None
            return X
        if not (self.frozen and self.mask is not None and self.mask.shape == X.shape):
            keep = self.rng.uniform(X.shape, X.dtype) >= self.p
            self.mask = self.backend.xp.astype(keep, X.dtype) / (1.0 - self.p)
        return X * self.mask

    def backward(self, dA):
        return dA if self.mask is None else dA * self.mask


@register
class Flatten(Layer):
    """Images (N, C, H, W) to rows (N, C*H*W) in C order, as ``torch.flatten(x, 1)``:
    the bridge from convolutional layers to Dense ones. Flat rows pass unchanged."""

    replayable = True

    def __repr__(self):
        return "Flatten()"

    def config(self):
        return {"type": "Flatten"}

    def output_shape(self, input_shape, source="the layer before it"):
        return (math.prod(input_shape),)

    def forward(self, X, training=False):
        self.cache = tuple(X.shape)
        return self.backend.xp.reshape(X, (X.shape[0], -1))

    def backward(self, dA):
        return self.backend.xp.reshape(dA, self.cache)
