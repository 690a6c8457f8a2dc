"""The hot-path ops, written once against the array API and bound to a backend's ``xp``.

An ``Ops`` table holds one callable per op. The generic versions below run on any
array-API namespace (NumPy, CuPy through array-api-compat, array-api-strict);
an accelerating backend passes faster replacements for the ops it fuses, and
inherits the rest. Layers, losses, optimizers and the training steps call only these
entries (the steps add each batch's loss and metric to the epoch's sums with ``tally``).

Shapes are batch-first: X (m, n_in), W (n_in, n_out), b (n_out,), Z and A (m, n_out).
The convolution and pooling ops (NCHW images) are in ``fastnn.conv_ops``, whose
docstring is their contract. Optimizer updates work in place on the parameter and its
state arrays.
``layer_backward`` and ``conv2d_maxpool_forward``/``_backward`` (a conv layer and the max
pool after it, ``fastnn.conv_ops``) are composed from the other ops unless a backend
fuses them. Whole training epochs are not an op: a backend offers them for a plain-data
plan of the training (``Backend.fused_epoch``, see ``fastnn.plan``), so no op needs the
model.
"""

import functools
import numbers

from fastnn import conv_ops, metrics, norm_ops


def dense_forward(xp, X, W, b, activation, keep_z=True):
    """Z = X @ W + b and A = f(Z); returns (Z, A).

    ``keep_z=False`` says only A is needed later (a hidden layer whose activation's
    derivative reads its output): a backend may then skip storing Z and return A in
    its place. The generic version always keeps Z.
    """
    Z = xp.matmul(X, W) + b
    return Z, activation.forward(xp, Z)


def activation_forward(xp, Z, activation):
    """A = f(Z) on its own (the elementwise part of dense_forward, for benchmarks and
    layers that apply an activation without a product)."""
    return activation.forward(xp, Z)


def activation_backward(xp, dA, Z, A, activation):
    """dZ = dA * f'(Z) and the bias gradient db = sum(dZ) over the batch."""
    dZ = activation.backward(xp, dA, Z, A)
    return dZ, bias_grad(xp, dZ)


def bias_grad(xp, dZ):
    """db = dZ summed over the batch: the bias gradient of a layer given its dZ (the
    output layer, whose loss gives dZ)."""
    return xp.sum(dZ, axis=0)


def dense_backward(xp, X, W, dZ, need_dx):
    """dW = X^T @ dZ and, if the layer below needs it, dX = dZ @ W^T."""
    dW = xp.matmul(X.T, dZ)
    return dW, (xp.matmul(dZ, W.T) if need_dx else None)


def sigmoid_bce(xp, Z, A, Y, need_grad):
    """Binary cross-entropy of A = sigmoid(Z) against Y in [0, 1], from the logits Z.

    loss = mean(max(z, 0) - z*y + log1p(exp(-|z|))), exact and finite for any z;
    dZ = (a - y) / N with N the number of elements (A is the forward pass's output).
    """
    loss = xp.mean(xp.maximum(Z, 0.0) - Z * Y + xp.log1p(xp.exp(-xp.abs(Z))))
    if not need_grad:
        return loss, None
    return loss, (A - Y) / (Z.shape[0] * Z.shape[1])


def softmax_xent(xp, Z, A, Y, need_grad):
    """Categorical cross-entropy of A = softmax(Z) against one-hot (or soft) rows Y.

    loss from log-softmax = (z - max) - log(sum(exp(z - max))); dZ = (a - y) / m.
    """
    shifted = Z - xp.max(Z, axis=1, keepdims=True)
    log_p = shifted - xp.log(xp.sum(xp.exp(shifted), axis=1, keepdims=True))
    m = Z.shape[0]
    loss = -xp.sum(Y * log_p) / m
    if not need_grad:
        return loss, None
    return loss, (A - Y) / m


def tally(xp, sums, loss, rows, task, A, Y):
    """Add one batch to an epoch's running (loss sum, metric sum) device vector, in
    place: its mean ``loss`` times its ``rows``, and ``metrics.batch_score`` of its
    outputs A against its targets Y for the model's ``task``."""
    sums[0] += loss * rows
    sums[1] += metrics.batch_score(xp, task, A, Y)


def _decayed(g, p, weight_decay):
    return g + weight_decay * p if weight_decay else g


def sgd_update(xp, p, g, lr, weight_decay):
    """p -= lr * g."""
    p -= lr * _decayed(g, p, weight_decay)


def momentum_update(xp, p, g, v, lr, momentum, weight_decay):
    """v = momentum*v - lr*g; p += v (the classical form used by the tutorials)."""
    g = _decayed(g, p, weight_decay)
    v *= momentum
    v -= lr * g
    p += v


def nesterov_update(xp, p, g, v, lr, momentum, weight_decay):
    """v = momentum*v - lr*g; p += momentum*v - lr*g (look-ahead momentum)."""
    g = _decayed(g, p, weight_decay)
    v *= momentum
    v -= lr * g
    p += momentum * v - lr * g


def adagrad_update(xp, p, g, h, lr, eps, weight_decay):
    """h += g^2; p -= lr * g / (sqrt(h) + eps)."""
    g = _decayed(g, p, weight_decay)
    h += g * g
    p -= lr * g / (xp.sqrt(h) + eps)


def rmsprop_update(xp, p, g, h, lr, rho, eps, weight_decay):
    """h = rho*h + (1-rho)*g^2; p -= lr * g / (sqrt(h) + eps)."""
    g = _decayed(g, p, weight_decay)
    h *= rho
    h += (1.0 - rho) * (g * g)
    p -= lr * g / (xp.sqrt(h) + eps)


def adam_update(xp, p, g, m, v, lr, beta1, beta2, eps, t, weight_decay):
    """Adam with bias correction at step t (1-based), or with the corrections a
    ``fastnn.replay.StepClock`` holds on the device for a recorded step."""
    if isinstance(t, numbers.Real):
        fix1, fix2 = 1.0 - beta1**t, 1.0 - beta2**t
    else:
        fix1, fix2 = t.numbers
    g = _decayed(g, p, weight_decay)
    m *= beta1
    m += (1.0 - beta1) * g
    v *= beta2
    v += (1.0 - beta2) * (g * g)
    m_hat = m / fix1
    v_hat = v / fix2
    p -= lr * m_hat / (xp.sqrt(v_hat) + eps)


GENERIC = {
    f.__name__: f
    for f in (
        dense_forward,
        activation_forward,
        activation_backward,
        dense_backward,
        bias_grad,
        sigmoid_bce,
        softmax_xent,
        tally,
        sgd_update,
        momentum_update,
        nesterov_update,
        adagrad_update,
        rmsprop_update,
        adam_update,
        conv_ops.conv2d_forward,
        conv_ops.conv2d_backward,
        conv_ops.maxpool2d_forward,
        conv_ops.maxpool2d_backward,
        conv_ops.avgpool2d_forward,
        conv_ops.avgpool2d_backward,
        norm_ops.batchnorm_sums,
        norm_ops.batchnorm_apply,
        norm_ops.batchnorm_grad_sums,
        norm_ops.batchnorm_input_grad,
    )
}
# built from the table's own ops unless overridden
COMPOSED = ("layer_backward", "conv2d_maxpool_forward", "conv2d_maxpool_backward")
NAMES = tuple(GENERIC) + COMPOSED
# A forward hands its backward a private ``work`` value, so a backend overrides both
# ops of a pair or neither (see ``fastnn.conv_ops``).
PAIRS = (("conv2d_forward", "conv2d_backward"), ("maxpool2d_forward", "maxpool2d_backward"),
         ("conv2d_maxpool_forward", "conv2d_maxpool_backward"))


class Ops:
    """The ops table of one backend: each generic op bound to ``xp`` once, with
    ``overrides`` (already-bound callables) taking the place of any of them."""

    def __init__(self, xp, **overrides):
        unknown = set(overrides) - set(NAMES)
        if unknown:
            raise ValueError(f"unknown ops {sorted(unknown)}; the ops are {', '.join(NAMES)}")
        for pair in PAIRS:
            if len(set(pair) & set(overrides)) == 1:
                raise ValueError(f"{pair[0]} and {pair[1]} share the forward's private work "
                                 f"value: override both or neither")
        for name, op in GENERIC.items():
            setattr(self, name, overrides.get(name) or functools.partial(op, xp))
        self.layer_backward = overrides.get("layer_backward") or self._layer_backward
        for name in ("conv2d_maxpool_forward", "conv2d_maxpool_backward"):
            setattr(self, name, overrides.get(name) or functools.partial(getattr(conv_ops, name),
                                                                         self))
        self.overridden = tuple(sorted(overrides))

    def _layer_backward(self, X, W, dA, Z, A, activation, need_dx):
        """A dense layer's whole backward, (dW, db, dX or None), from its output gradient
        dA: this table's activation_backward then dense_backward. A backend may
        override it to fuse both into one kernel for small layers."""
        dZ, db = self.activation_backward(dA, Z, A, activation)
        dW, dX = self.dense_backward(X, W, dZ, need_dx)
        return dW, db, dX
