"""The per-channel BatchNorm's passes over images, as ops of the ops table (generic
versions here, written with ``xp``; a backend may fuse each into one pass).

Arrays are (N, C, P): a batch of N images of C channels of P pixels each (the layer's
(N, C, H, W) seen with H * W pixels in a row); per-channel vectors are (C,). The sums
are per image, (N, C): the layer sums them over the batch, or over every rank's batch
in data-parallel training (``fastnn.batchnorm``).
"""


def _column(xp, vector):
    """A (C,) vector as (1, C, 1), to broadcast against (N, C, P)."""
    return xp.reshape(vector, (1, -1, 1))


def batchnorm_sums(xp, X, center):
    """Each image's sums per channel of X, or, given ``center`` (C,), of (X - center)^2."""
    if center is None:
        return xp.sum(X, axis=2)
    centered = X - _column(xp, center)
    return xp.sum(centered * centered, axis=2)


def batchnorm_apply(xp, X, mean, inv_std, gamma, beta):
    """(X_hat, Z): X_hat = (X - mean) * inv_std and Z = X_hat * gamma + beta, per channel."""
    X_hat = (X - _column(xp, mean)) * _column(xp, inv_std)
    return X_hat, X_hat * _column(xp, gamma) + _column(xp, beta)


def batchnorm_grad_sums(xp, dZ, X_hat):
    """Each image's sums per channel of dZ and of dZ * X_hat (gamma's and beta's
    gradients, once summed over the batch)."""
    return xp.sum(dZ, axis=2), xp.sum(dZ * X_hat, axis=2)


def batchnorm_input_grad(xp, dZ, X_hat, scale, mean_dZ, mean_dZ_x):
    """dX = scale * (dZ - mean_dZ - X_hat * mean_dZ_x), per channel: the input gradient
    of a batch-normalized layer in training, with scale = gamma * inv_std and the means
    over the batch's numbers of each channel."""
    return _column(xp, scale) * (dZ - _column(xp, mean_dZ) - X_hat * _column(xp, mean_dZ_x))
