"""Layers: Dense (affine + activation) and Dropout, batch-first (BatchNorm is in
``fastnn.batchnorm``).

A layer is built onto a backend (``build``) before use; ``Sequential`` does this.
``forward`` keeps what ``backward`` needs; ``backward(dA)`` stores parameter
gradients in each Parameter's ``grad`` and returns the gradient for the layer below.
"""

import numpy as np

from fastnn import activations, initializers
from fastnn.validation import in_range, positive_int


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


class Dense(Layer):
    """A = activation(X @ W + b) with W of shape (n_in, n_out)."""

    def __init__(self, n_in, n_out, activation="identity", init="auto"):
        self.n_in = positive_int("Dense n_in", n_in)
        self.n_out = positive_int("Dense n_out", n_out)
        self.activation = activations.get(activation)
        self.init = initializers.get(init, self.activation)
        self.needs_input_grad = True
        self.keep_z = True  # Sequential clears it for hidden layers: only the loss reads Z

    def __repr__(self):
        return f"Dense({self.n_in}, {self.n_out}, activation={self.activation.name!r})"

    def config(self):
        return {
            "type": "Dense", "n_in": self.n_in, "n_out": self.n_out,
            "activation": self.activation.config(), "init": self.init.config(),
        }

    @property
    def W(self):
        return self.params[0]

    @property
    def b(self):
        return self.params[1]

    def build(self, backend, dtype, rng):
        super().build(backend, dtype, rng)
        W = backend.asarray(self.init(rng, self.n_in, self.n_out), dtype=dtype)
        b = backend.asarray(np.zeros(self.n_out), dtype=dtype)
        self.params = (Parameter("W", W, decay=True), Parameter("b", b, decay=False))

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
            db = self.backend.xp.sum(dZ, axis=0)
        dW, dX = self.backend.ops.dense_backward(X, self.W.value, dZ, self.needs_input_grad)
        self.W.grad, self.b.grad = dW, db
        return dX


class Dropout(Layer):
    """Inverted dropout: in training, zero each input with probability ``p`` and scale
    the rest by 1/(1-p); in evaluation, pass inputs through unchanged."""

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
