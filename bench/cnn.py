"""A plain NumPy im2col implementation of the ``conv`` bench group's nets
(``bench.conv_workloads``: SimpleConvNet and LeNet-5), written as a NumPy user would
(Saito's ``common/layers.py`` style, no fastnn): ``PlainNet``, which the NumPy backend
is compared with in ``bench.conv_table``.

Both nets take 1x28x28 images and 10 classes, relu after every conv and hidden dense
layer, 2x2 max pooling, softmax cross-entropy and plain SGD.
"""

import numpy as np

from bench.case import Case

# (kind, settings): conv (in, out, kernel, padding), pool (size), dense (in, out)
NETS = {
    "SimpleConvNet": [("conv", (1, 30, 5, 0)), ("pool", 2), ("dense", (4320, 100)),
                      ("dense", (100, 10))],
    "LeNet-5": [("conv", (1, 6, 5, 2)), ("pool", 2), ("conv", (6, 16, 5, 0)), ("pool", 2),
                ("dense", (400, 120)), ("dense", (120, 84)), ("dense", (84, 10))],
}
BATCH = {"SimpleConvNet": 100, "LeNet-5": 128}
IMAGE = (1, 28, 28)


# ---- the plain NumPy implementation ----

def im2col(x, k, pad):
    """(N*OH*OW, C*k*k) from x (N, C, H, W) by k*k slice copies (stride 1)."""
    N, C, H, W = x.shape
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    OH, OW = H + 2 * pad - k + 1, W + 2 * pad - k + 1
    col = np.empty((N, C, k, k, OH, OW), x.dtype)
    for i in range(k):
        for j in range(k):
            col[:, :, i, j] = x[:, :, i:i + OH, j:j + OW]
    return col.transpose(0, 4, 5, 1, 2, 3).reshape(N * OH * OW, -1), OH, OW


def col2im(col, shape, k, pad, OH, OW):
    """The adjoint of ``im2col``: k*k slice-adds."""
    N, C, H, W = shape
    col = col.reshape(N, OH, OW, C, k, k).transpose(0, 3, 4, 5, 1, 2)
    dx = np.zeros((N, C, H + 2 * pad, W + 2 * pad), col.dtype)
    for i in range(k):
        for j in range(k):
            dx[:, :, i:i + OH, j:j + OW] += col[:, :, i, j]
    return dx[:, :, pad:pad + H, pad:pad + W]


class PlainNet:
    """The net in plain NumPy: ``step(X, y, lr)`` runs one SGD step and returns the
    loss. Weights come as fastnn lays them out (conv (F, C, k, k), dense (in, out))."""

    def __init__(self, net, weights):
        self.spec = NETS[net]
        self.params = [np.array(w) for w in weights]

    def step(self, X, y, lr):
        caches, out, p = [], X, 0
        for kind, s in self.spec:  # forward
            if kind == "conv":
                W, b = self.params[p], self.params[p + 1]
                col, OH, OW = im2col(out, s[2], s[3])
                z = col @ W.reshape(W.shape[0], -1).T + b
                a = np.maximum(z, 0)
                caches.append((out.shape, col, z, OH, OW))
                out = a.reshape(out.shape[0], OH, OW, -1).transpose(0, 3, 1, 2)
                p += 2
            elif kind == "pool":
                N, C, H, W_ = out.shape
                blocks = out.reshape(N, C, H // s, s, W_ // s, s).transpose(0, 1, 2, 4, 3, 5)
                blocks = blocks.reshape(N, C, H // s, W_ // s, s * s)
                arg = blocks.argmax(axis=4)
                caches.append((out.shape, arg))
                out = blocks.max(axis=4)
            else:
                W, b = self.params[p], self.params[p + 1]
                x = out.reshape(out.shape[0], -1)
                caches.append((out.shape, x))
                out = x @ W + b
                if p + 2 < len(self.params):
                    caches[-1] += (out,)
                    out = np.maximum(out, 0)
                p += 2
        shifted = out - out.max(axis=1, keepdims=True)
        e = np.exp(shifted)
        probs = e / e.sum(axis=1, keepdims=True)
        m = X.shape[0]
        loss = -np.log(probs[np.arange(m), y] + 1e-12).mean()
        d = probs
        d[np.arange(m), y] -= 1
        d /= m
        grads = [None] * len(self.params)
        for layer in range(len(self.spec) - 1, -1, -1):  # backward
            kind, s = self.spec[layer]
            cache = caches[layer]
            if kind == "dense":
                p -= 2
                if len(cache) == 3:
                    d = d * (cache[2] > 0)
                W = self.params[p]
                grads[p], grads[p + 1] = cache[1].T @ d, d.sum(axis=0)
                d = (d @ W.T).reshape(cache[0])
            elif kind == "pool":
                shape, arg = cache
                N, C, H, W_ = shape
                spread = np.zeros((N, C, H // s, W_ // s, s * s), d.dtype)
                np.put_along_axis(spread, arg[..., None], d[..., None], axis=4)
                spread = spread.reshape(N, C, H // s, W_ // s, s, s).transpose(0, 1, 2, 4, 3, 5)
                d = spread.reshape(shape)
            else:
                p -= 2
                shape, col, z, OH, OW = cache
                W = self.params[p]
                F = W.shape[0]
                dz = d.transpose(0, 2, 3, 1).reshape(-1, F) * (z > 0)
                grads[p] = (dz.T @ col).reshape(W.shape)
                grads[p + 1] = dz.sum(axis=0)
                if layer > 0:
                    d = col2im(dz @ W.reshape(F, -1), shape, s[2], s[3], OH, OW)
        for param, grad in zip(self.params, grads):
            param -= lr * grad
        return loss


def plain_step(data):
    """A ``Case``: one SGD step (lr 0.01) of ``PlainNet`` from a conv workload's inputs."""
    net = PlainNet(data["net"], data["weights"])
    losses = []

    def step():
        losses[:] = [net.step(data["X"], data["y"], 0.01)]

    return Case(step, lambda: [np.float64(losses[0])])
