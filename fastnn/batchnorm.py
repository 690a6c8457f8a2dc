"""BatchNorm: per-feature normalization of a batch-first input, then a learned scale
``gamma`` and shift ``beta``; BatchNorm2D: the same per channel of images (N, C, H, W),
over the batch and every pixel, as PyTorch's BatchNorm2d.

Training normalizes each feature with the batch's own mean and (biased) variance and
updates running estimates, ``running = momentum * running + (1 - momentum) * batch``
(the CS231n convention: momentum 0.9 keeps 90% of the old estimate). Evaluation uses
the running estimates, so a prediction does not depend on the other rows of its batch.
gamma and beta are never weight-decayed.

In data-parallel training ``sync`` holds the global batch's sums (fastnn.distributed):
the statistics and the input gradient's means are then taken over every rank's rows.
"""

import numpy as np

from fastnn import activations
from fastnn.layers import Layer, Parameter, check_flat, register
from fastnn.validation import in_range, positive_int, positive_number
from fastnn.windows import check_image


@register
class BatchNorm(Layer):
    """y = gamma * (x - mean) / sqrt(var + eps) + beta, per feature of X (m, n_features),
    then ``activation`` (elementwise; default none), so that a layer before it can be left
    without one (Dense, BatchNorm, ReLU as PyTorch users write it). Flat features only:
    for images (N, C, H, W), BatchNorm2D normalizes each channel."""

    def __init__(self, n_features, momentum=0.9, eps=1e-5, activation="identity"):
        name = type(self).__name__
        self.n_features = positive_int(f"{name} n_features", n_features)
        self.n_in = self.n_out = self.n_features
        self.momentum = in_range(f"{name} momentum", momentum, 0.0, 1.0)
        self.eps = positive_number(f"{name} eps", eps)
        self.activation = activations.get(activation)
        if not self.activation.elementwise:
            raise ValueError(f"{name} activation must be elementwise, not "
                             f"{self.activation.name!r} (row-wise): give that to the output "
                             f"Dense layer")
        self.plain = activations.builtin_name(self.activation) == "identity"
        self.needs_input_grad = True
        self.frozen = False  # gradcheck: keep the running statistics fixed across passes
        self.sync = None  # data-parallel training: sums over the global batch (see above)

    def __repr__(self):
        return f"{type(self).__name__}({self.n_features}, {self._settings()})"

    def _settings(self):
        """The repr's keyword arguments: momentum, eps, and the activation if any."""
        shown = f"momentum={self.momentum}, eps={self.eps}"
        return shown if self.plain else f"{shown}, activation={self.activation.name!r}"

    def _activation_config(self):
        """The activation's config where there is one (a plain BatchNorm's config is
        unchanged: checkpoints written before activations came read the same)."""
        return {} if self.plain else {"activation": self.activation.config()}

    @property
    def input_shape(self):
        return (self.n_features,)

    def output_shape(self, input_shape, source="the layer before it"):
        check_flat(self.n_features, input_shape, source,
                   f"BatchNorm normalizes flat features: for images use "
                   f"BatchNorm2D({input_shape[0] if len(input_shape) == 3 else 'channels'}) "
                   f"(per channel), or put it after Flatten()",
                   f"make n_features {input_shape[-1]}")
        return (self.n_features,)

    def config(self):
        return {"type": "BatchNorm", "n_features": self.n_features,
                "momentum": self.momentum, "eps": self.eps, **self._activation_config()}

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
            mean, var = self._moments(X)
            if not self.frozen:
                self._update_running(mean, var)
        else:
            mean, var = self.running_mean.value, self.running_var.value
        inv_std = 1.0 / xp.sqrt(var + self.eps)
        X_hat, Z = self._normalized(X, mean, inv_std)
        if self.plain:
            self.cache = (X_hat, inv_std, training, None, None)
            return Z
        Z = xp.reshape(Z, (Z.shape[0], -1))  # rows: what every backend's kernels take
        A = self.backend.ops.activation_forward(Z, self.activation)
        self.cache = (X_hat, inv_std, training, Z, A)
        return xp.reshape(A, X.shape)

    # What a per-channel BatchNorm does otherwise (BatchNorm2D): the batch's moments,
    # the normalized input and the output, the gradient's sums and the input gradient.
    def _moments(self, X):
        """The batch's mean and biased variance of each feature (two passes: stable)."""
        mean = self._batch_mean(X)
        centered = X - mean
        return mean, self._batch_mean(centered * centered)

    def _normalized(self, X, mean, inv_std):
        """(X_hat, gamma * X_hat + beta)."""
        X_hat = (X - mean) * inv_std
        return X_hat, X_hat * self.gamma.value + self.beta.value

    def _grad_sums(self, dA, X_hat):
        """The batch's sums of dA and of dA * X_hat per feature: beta's and gamma's
        gradients."""
        xp = self.backend.xp
        return xp.sum(dA, axis=0), xp.sum(dA * X_hat, axis=0)

    def _input_grad(self, dA, X_hat, scale, mean_dA, mean_dA_x):
        return scale * (dA - mean_dA - X_hat * mean_dA_x)

    def _scaled(self, dA, scale):
        """dA times a per-feature scale (evaluation mode's input gradient)."""
        return dA * scale

    def _per_row(self, A):
        """How many numbers of one feature a row (sample) of A holds: 1 here."""
        return 1

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
        X_hat, inv_std, training, Z, A = self.cache
        if not self.plain:
            dA = self.backend.xp.reshape(dA, Z.shape)
            dZ, _ = self.backend.ops.activation_backward(dA, Z, A, self.activation)
            dA = self.backend.xp.reshape(dZ, X_hat.shape)
        self.beta.grad, self.gamma.grad = self._grad_sums(dA, X_hat)
        if not self.needs_input_grad:
            return None
        scale = self.gamma.value * inv_std
        if not training:
            return self._scaled(dA, scale)
        m, sum_dA, sum_dA_x = dA.shape[0], self.beta.grad, self.gamma.grad
        if self.sync is not None:
            (sum_dA, sum_dA_x), m = self.sync.sums(sum_dA, sum_dA_x), self.sync.rows
        m *= self._per_row(dA)
        return self._input_grad(dA, X_hat, scale, sum_dA / m, sum_dA_x / m)


@register
class BatchNorm2D(BatchNorm):
    """BatchNorm per channel of images (N, C, H, W), as PyTorch's ``BatchNorm2d``: each
    channel is normalized with the mean and (biased) variance of all its numbers in the
    batch (N * H * W of them), then scaled and shifted by that channel's gamma and beta.
    Running statistics, momentum and data-parallel synchronization as BatchNorm's (so
    ``momentum=0.9`` is PyTorch's ``momentum=0.1``, and the running variance is updated
    with the biased batch variance where PyTorch uses the unbiased one)."""

    def __init__(self, channels, momentum=0.9, eps=1e-5, activation="identity"):
        super().__init__(positive_int("BatchNorm2D channels", channels), momentum, eps,
                         activation)

    @property
    def channels(self):
        return self.n_features

    @property
    def input_shape(self):
        return None  # any height and width: a model starting with one needs input_shape

    def output_shape(self, input_shape, source="the layer before it"):
        check_image(input_shape, source)
        if input_shape[0] != self.channels:
            raise ValueError(
                f"takes images of {self.channels} channel(s) but {source} gives images of "
                f"{input_shape[0]} channel(s) (shape {tuple(input_shape)}); make channels "
                f"{input_shape[0]}"
            )
        return tuple(input_shape)

    def config(self):
        return {"type": "BatchNorm2D", "channels": self.channels,
                "momentum": self.momentum, "eps": self.eps, **self._activation_config()}

    # The passes over the images are the backend's ops (``fastnn.norm_ops``), on
    # (N, C, H * W) views: one pass each where a backend fuses them.
    def _rows(self, A):
        return self.backend.xp.reshape(A, (A.shape[0], A.shape[1], -1))

    def _moments(self, X):
        """Each image's channel sums first, then their mean over the (global, when
        synchronized) batch, over the pixels; the variance from a second pass."""
        ops, rows, pixels = self.backend.ops, self._rows(X), self._per_row(X)
        mean = self._batch_mean(ops.batchnorm_sums(rows, None)) / pixels
        return mean, self._batch_mean(ops.batchnorm_sums(rows, mean)) / pixels

    def _normalized(self, X, mean, inv_std):
        X_hat, Z = self.backend.ops.batchnorm_apply(self._rows(X), mean, inv_std,
                                                     self.gamma.value, self.beta.value)
        xp = self.backend.xp
        return xp.reshape(X_hat, X.shape), xp.reshape(Z, X.shape)

    def _grad_sums(self, dA, X_hat):
        xp = self.backend.xp
        sums = self.backend.ops.batchnorm_grad_sums(self._rows(dA), self._rows(X_hat))
        return tuple(xp.sum(s, axis=0) for s in sums)

    def _input_grad(self, dA, X_hat, scale, mean_dA, mean_dA_x):
        dX = self.backend.ops.batchnorm_input_grad(self._rows(dA), self._rows(X_hat), scale,
                                                   mean_dA, mean_dA_x)
        return self.backend.xp.reshape(dX, dA.shape)

    def _scaled(self, dA, scale):
        return dA * self.backend.xp.reshape(scale, (-1, 1, 1))

    def _per_row(self, A):
        return A.shape[2] * A.shape[3]
