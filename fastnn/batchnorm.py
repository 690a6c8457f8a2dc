"""BatchNorm: per-feature normalization of a batch-first input, then a learned scale
``gamma`` and shift ``beta``.

Training normalizes each feature with the batch's own mean and (biased) variance and
updates running estimates, ``running = momentum * running + (1 - momentum) * batch``
(the CS231n convention: momentum 0.9 keeps 90% of the old estimate). Evaluation uses
the running estimates, so a prediction does not depend on the other rows of its batch.
gamma and beta are never weight-decayed.

In data-parallel training ``sync`` holds the global batch's sums (fastnn.distributed):
the statistics and the input gradient's means are then taken over every rank's rows.
"""

import numpy as np

from fastnn.layers import Layer, Parameter, check_flat, register
from fastnn.validation import in_range, positive_int, positive_number


@register
class BatchNorm(Layer):
    """y = gamma * (x - mean) / sqrt(var + eps) + beta, per feature of X (m, n_features).
    Flat features only: images (N, C, H, W) would need a per-channel BatchNorm, which
    fastnn does not have; a BatchNorm after Flatten() normalizes each pixel."""

    def __init__(self, n_features, momentum=0.9, eps=1e-5):
        self.n_features = positive_int("BatchNorm n_features", n_features)
        self.n_in = self.n_out = self.n_features
        self.momentum = in_range("BatchNorm momentum", momentum, 0.0, 1.0)
        self.eps = positive_number("BatchNorm eps", eps)
        self.needs_input_grad = True
        self.frozen = False  # gradcheck: keep the running statistics fixed across passes
        self.sync = None  # data-parallel training: sums over the global batch (see above)

    def __repr__(self):
        return f"BatchNorm({self.n_features}, momentum={self.momentum}, eps={self.eps})"

    @property
    def input_shape(self):
        return (self.n_features,)

    def output_shape(self, input_shape, source="the layer before it"):
        check_flat(self.n_features, input_shape, source,
                   "BatchNorm normalizes features (a per-channel BatchNorm for images is not "
                   "in fastnn): put it after Flatten()",
                   f"make n_features {input_shape[-1]}")
        return (self.n_features,)

    def config(self):
        return {"type": "BatchNorm", "n_features": self.n_features,
                "momentum": self.momentum, "eps": self.eps}

    @property
    def gamma(self):
        return self.params[0]

    @property
    def beta(self):
        return self.params[1]

    @property
    def running_mean(self):
        return self.buffers[0]

    @property
    def running_var(self):
        return self.buffers[1]

    def build(self, backend, dtype, rng):
        super().build(backend, dtype, rng)

        def filled(value):  # a new host array each time: asarray may keep it without a copy
            return backend.asarray(np.full(self.n_features, value), dtype=dtype)

        self.params = (Parameter("gamma", filled(1.0), decay=False),
                       Parameter("beta", filled(0.0), decay=False))
        self.buffers = (Parameter("running_mean", filled(0.0), decay=False),
                        Parameter("running_var", filled(1.0), decay=False))

    def forward(self, X, training=False):
        xp = self.backend.xp
        if training:
            mean = self._batch_mean(X)
            centered = X - mean
            var = self._batch_mean(centered * centered)
            if not self.frozen:
                self._update_running(mean, var)
        else:
            mean, var = self.running_mean.value, self.running_var.value
            centered = X - mean
        inv_std = 1.0 / xp.sqrt(var + self.eps)
        X_hat = centered * inv_std
        self.cache = (X_hat, inv_std, training)
        return X_hat * self.gamma.value + self.beta.value

    def _batch_mean(self, A):
        """The column means of A over the batch (the global batch when synchronized)."""
        return self.backend.xp.mean(A, axis=0) if self.sync is None else self.sync.mean(A)

    def _update_running(self, mean, var):
        keep = self.momentum
        for buffer, batch in ((self.running_mean, mean), (self.running_var, var)):
            buffer.value *= keep
            buffer.value += (1.0 - keep) * batch

    def backward(self, dA):
        """Gradients of gamma and beta, and dX. In training mode the batch statistics
        depend on X: dX = gamma * inv_std * (dA - mean(dA) - X_hat * mean(dA * X_hat))."""
        xp = self.backend.xp
        X_hat, inv_std, training = self.cache
        self.beta.grad = xp.sum(dA, axis=0)
        self.gamma.grad = xp.sum(dA * X_hat, axis=0)
        if not self.needs_input_grad:
            return None
        scale = self.gamma.value * inv_std
        if not training:
            return dA * scale
        m, sum_dA, sum_dA_x = dA.shape[0], self.beta.grad, self.gamma.grad
        if self.sync is not None:
            (sum_dA, sum_dA_x), m = self.sync.sums(sum_dA, sum_dA_x), self.sync.rows
        return scale * (dA - sum_dA / m - X_hat * (sum_dA_x / m))
