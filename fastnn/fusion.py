"""The steps a model's forward and backward run: its layers, with each Conv2D that a
MaxPool2D directly follows run together with it as one step (``ConvPool``).

A pair runs as one op of the backend's ops table (``conv2d_maxpool_forward`` and
``_backward``), so a backend may fuse the two (the Numba backend writes the pooled
output and the pool's choices from each tile of the conv, and routes the pooled
gradient straight into the conv's backward, never making the full-resolution
activation or its gradient); every other backend runs its own conv and pool ops one
after the other (``fastnn.conv_ops.conv2d_maxpool_forward``), so the model never asks
which backend it runs on. Only fastnn's own classes are paired (``layers.builtin``): a
user's subclass keeps its own forward and backward. The layers keep their parameters,
gradients and configs; checkpoints and summaries see the layers, not the steps.
"""

from fastnn.conv import Conv2D
from fastnn.layers import builtin
from fastnn.pooling import MaxPool2D


class ConvPool:
    """A Conv2D and the MaxPool2D after it, as one step (``forward``, ``backward``)."""

    def __init__(self, conv, pool):
        self.conv, self.pool = conv, pool
        self.cache = None

    def forward(self, X, training=False):
        conv, pool = self.conv, self.pool
        out, work = conv.backend.ops.conv2d_maxpool_forward(
            X, conv.W.value, conv.b.value, conv.activation, conv.stride, conv.padding,
            pool.size, pool.stride)
        self.cache = (X, out, work) if training else None
        return out

    def backward(self, dP):
        X, out, work = self.cache
        conv, pool = self.conv, self.pool
        dW, db, dX = conv.backend.ops.conv2d_maxpool_backward(
            X, conv.W.value, dP, out, work, conv.activation, conv.stride, conv.padding,
            pool.size, pool.stride, conv.needs_input_grad)
        conv.W.grad, conv.b.grad = dW, db
        return dX


def pairs(first, second):
    """True if ``first`` and ``second`` (the layer after it) run as one ConvPool step."""
    return (isinstance(first, Conv2D) and isinstance(second, MaxPool2D)
            and builtin(first) and builtin(second))


def steps(layers):
    """``layers`` as (step, index of its first layer) pairs, in order: each layer a step
    of its own but for a Conv2D directly followed by a MaxPool2D, one ConvPool step."""
    out, i = [], 0
    while i < len(layers):
        if i + 1 < len(layers) and pairs(layers[i], layers[i + 1]):
            out.append((ConvPool(layers[i], layers[i + 1]), i))
            i += 2
        else:
            out.append((layers[i], i))
            i += 1
    return out
