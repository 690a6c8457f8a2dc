"""The convolutional nets' training step as a workload, and its PyTorch eager peer.

Two nets on 1x28x28 images, float32, softmax cross-entropy, plain SGD:
- SimpleConvNet (Saito): conv 30x5x5 + ReLU, 2x2 max pool, Dense 4320-100 ReLU,
  Dense 100-10;
- LeNet-5 as PyTorch's tutorials write it: conv 6x5x5 padding 2 + ReLU, 2x2 max pool,
  conv 16x5x5 + ReLU, 2x2 max pool, Dense 400-120-84-10 with ReLU.
One step is run as ``fit`` runs it (``fastnn.training.epoch_runner`` over a one-batch
epoch); the peer is nn.Conv2d/nn.MaxPool2d/nn.Linear holding the same initial weights.
``epoch_runs`` trains one epoch of synthetic MNIST-shaped data the same two ways.
"""

import functools
import math

import numpy as np

import fastnn
from bench import peers
from bench.case import Case
from bench.workloads import (
    Workload,
    _check_training_step,
    initial_weights,
    sgd_step_case,
    tolerance,
)
from fastnn import backends
from fastnn.conv import Conv2D
from fastnn.layers import Dense, Flatten
from fastnn.pooling import MaxPool2D
from fastnn.training import epoch_runner

IMAGE = (1, 28, 28)
NETS = {  # name: a function making its layers
    "SimpleConvNet": lambda: [Conv2D(1, 30, 5, activation="relu"), MaxPool2D(2), Flatten(),
                              Dense(4320, 100, "relu"), Dense(100, 10, "softmax")],
    "LeNet-5": lambda: [Conv2D(1, 6, 5, padding=2, activation="relu"), MaxPool2D(2),
                        Conv2D(6, 16, 5, activation="relu"), MaxPool2D(2), Flatten(),
                        Dense(400, 120, "relu"), Dense(120, 84, "relu"),
                        Dense(84, 10, "softmax")],
}


def cnn_model(net, backend, dtype, seed=0):
    return fastnn.Sequential(NETS[net](), input_shape=IMAGE, dtype=dtype, seed=seed,
                             backend=backend)


def cnn_flops(net, batch):
    """FLOPs of one step's products: each conv and dense layer's forward, its dW and,
    for every layer but the first, its dX (pooling and activations not counted)."""
    model = cnn_model(net, "numpy", "float32")
    products = []
    for layer, shape_out in zip(model.layers, model.shapes[1:]):
        if isinstance(layer, Conv2D):
            kh, kw = layer.kernel_size
            products.append(layer.in_channels * kh * kw * math.prod(shape_out))
        elif isinstance(layer, Dense):
            products.append(layer.W.value.size)
    return 2 * batch * (3 * sum(products) - products[0])


def cnn_step(net, batch, dtype="float32"):
    """One SGD step (lr 0.01) of ``net`` on a batch of images, as ``fit`` runs it."""
    build = functools.partial(cnn_model, net)

    def inputs():
        rng = np.random.default_rng(11)
        X = rng.random((batch, *IMAGE)).astype(dtype)  # pixels in [0, 1), as MNIST's
        y = rng.integers(0, 10, batch)
        return {"X": X, "y": y, "net": net, "weights": initial_weights(build, dtype)}

    return Workload(
        name=f"{net} step B={batch}", group="conv", dtype=dtype, inputs=inputs,
        fastnn=_cnn_step, torch=torch_cnn_step, check=_check_training_step,
        work=cnn_flops(net, batch), unit="FLOP", tolerance=tolerance(dtype, 1e-4, 1e-9),
    )


def _cnn_step(backend, data):
    return sgd_step_case(backend, cnn_model(data["net"], backend, data["X"].dtype.name), data)


# ---- the PyTorch peer ----

def torch_model(torch, device, net, weights):
    """torch.nn.Sequential of ``net`` holding fastnn's initial (W, b) pairs (a conv's W
    has PyTorch's layout; a Dense W is (in, out)), ending in logits."""
    nn, modules, pairs = torch.nn, [], iter(zip(weights[::2], weights[1::2]))
    dtype = getattr(torch, weights[0].dtype.name)
    for layer in NETS[net]():
        if isinstance(layer, (Conv2D, Dense)):
            W, b = next(pairs)
            if isinstance(layer, Conv2D):
                (top, _), (left, _) = layer.padding
                module = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                                   stride=layer.stride, padding=(top, left), device=device,
                                   dtype=dtype)
                W_torch = W
            else:
                module = nn.Linear(*W.shape, device=device, dtype=dtype)
                W_torch = W.T
            with torch.no_grad():
                module.weight.copy_(peers.tensor(torch, device, W_torch))
                module.bias.copy_(peers.tensor(torch, device, b))
            modules.append(module)
            if layer.activation.name == "relu":
                modules.append(nn.ReLU())
        elif isinstance(layer, MaxPool2D):
            modules.append(nn.MaxPool2d(layer.size, layer.stride))
        else:
            modules.append(nn.Flatten())
    return nn.Sequential(*modules)


def _torch_parameters(model):
    """Host (W, b) pairs in fastnn's layout."""
    out = []
    for module in model:
        if hasattr(module, "weight"):
            W = peers.to_host(module.weight)
            out += [W if W.ndim == 4 else W.T, peers.to_host(module.bias)]
    return [np.asarray(p, dtype=np.float64) for p in out]


def torch_cnn_step(torch, device, data):
    model = torch_model(torch, device, data["net"], data["weights"])
    X, y = peers.tensor(torch, device, data["X"]), peers.tensor(torch, device, data["y"])
    loss_fn = torch.nn.functional.cross_entropy
    train_step, losses = peers._trainer(torch, model, 0.01, loss_fn), []

    def step():
        losses[:] = [train_step(X, y)[0]]

    def result():
        with torch.no_grad():
            after = loss_fn(model(X), y)
        return [np.float64(losses[0].item()), np.float64(after.item()),
                *_torch_parameters(model)]

    return Case(step, result)


def epoch_data(samples, seed=12):
    """``samples`` images of MNIST's shape, pixels in [0, 1), and random labels, float32."""
    rng = np.random.default_rng(seed)
    return rng.random((samples, *IMAGE), dtype=np.float32), rng.integers(0, 10, samples)


def epoch_runs(net, batch, X, y, torch, backend_names=("numpy", "numba")):
    """{target: a function training one epoch of ``net`` on (X, y) in batches of
    ``batch``, the rows in their own order, plain SGD (lr 0.01)}: each fastnn backend
    as ``fit`` runs an epoch (``epoch_runner``), and the PyTorch eager peer as a loop of
    its training steps over the same batches; every target from the same weights."""
    build = functools.partial(cnn_model, net)
    runs = {}
    for name in backend_names:
        backend = backends.load(name)
        model = build(backend, "float32")
        Xp, Yp = model.prepare(X, y)
        model.optimizer = fastnn.SGD(lr=0.01)
        runs[name] = functools.partial(epoch_runner(model, Xp, Yp, batch), None)
    if torch is not None:
        model = torch_model(torch, "cpu", net, initial_weights(build, "float32"))
        train_step = peers._trainer(torch, model, 0.01, torch.nn.functional.cross_entropy)
        Xt, yt = peers.tensor(torch, "cpu", X), peers.tensor(torch, "cpu", y)

        def torch_epoch():
            for start in range(0, Xt.shape[0], batch):
                train_step(Xt[start:start + batch], yt[start:start + batch])

        runs["torch"] = torch_epoch
    return runs
