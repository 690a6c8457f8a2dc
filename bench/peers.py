"""The PyTorch eager peers of the workloads: the same computation from the same inputs,
written the way a PyTorch user would (autograd, torch.nn, torch.optim). Elementwise
backward calls the aten backward kernels that autograd itself runs.

PyTorch is never a dependency: ``torch`` is passed in by the caller that imported it.
"""

import functools

import numpy as np

from bench.case import GEMM_INPUTS, Case, dense_products, mlp_gemms, pure_case
from fastnn import activations


def tensor(torch, device, array, dtype=None):
    """A copy of a host array on ``device`` (a copy, so read-only inputs stay untouched)."""
    return torch.tensor(np.asarray(array, dtype=dtype), device=device)


def to_host(t):
    return t.detach().cpu().numpy()


def _forward_ops(torch):
    """Each activation's PyTorch forward, from its spec."""
    return {cls.name: functools.partial(cls().torch, torch) for cls in activations.SPECS}


def _backward_ops(torch):
    """(dA, Z, A) -> dZ: the aten backward kernel autograd runs, from each spec."""
    return {cls.name: functools.partial(cls().torch_backward, torch)
            for cls in activations.SPECS if cls.differentiable}


def activation_forward(name, torch, device, data):
    op, Z = _forward_ops(torch)[name], tensor(torch, device, data["Z"])
    return pure_case(lambda: op(Z), to_host)


def activation_backward(name, torch, device, data):
    Z, dA = tensor(torch, device, data["Z"]), tensor(torch, device, data["dA"])
    A, op = _forward_ops(torch)[name](Z), _backward_ops(torch)[name]

    def run():
        dZ = op(dA, Z, A)
        return dZ, dZ.sum(dim=0)

    return pure_case(run, to_host)


def dense(torch, device, data):
    X, W, b, dA = (tensor(torch, device, data[k]) for k in ("X", "W", "b", "dA"))
    for t in (X, W, b):
        t.requires_grad_(True)

    def run():
        X.grad = W.grad = b.grad = None
        A = torch.relu(torch.addmm(b, X, W))
        A.backward(dA)
        return A, b.grad, W.grad, X.grad

    return pure_case(run, to_host)


def optimizer_step(name, lr, torch, device, data):
    params = []
    for key in ("W", "b"):
        p = tensor(torch, device, data[key]).requires_grad_(True)
        p.grad = tensor(torch, device, data[f"g{key}"])
        params.append(p)
    opt = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[name](params, lr=lr)
    return Case(opt.step, lambda: [to_host(p).astype(np.float64) for p in params])


def gemms(torch, device, data):
    arrays = [tensor(torch, device, data[k]) for k in GEMM_INPUTS]
    return pure_case(lambda: mlp_gemms(torch.matmul, *arrays), to_host)


def dense_gemms(torch, device, data):
    X, W, dA = (tensor(torch, device, data[k]) for k in ("X", "W", "dA"))
    return pure_case(lambda: dense_products(torch.matmul, X, W, dA), to_host)


def _sequential(torch, device, weights, hidden):
    """torch.nn.Sequential of Linear layers holding fastnn's (W, b) pairs (W is (in, out)),
    ``hidden`` between them, and logits out (the loss applies the output activation)."""
    layers = []
    for W, b in zip(weights[::2], weights[1::2]):
        linear = torch.nn.Linear(*W.shape, device=device, dtype=getattr(torch, W.dtype.name))
        with torch.no_grad():
            linear.weight.copy_(tensor(torch, device, W.T))
            linear.bias.copy_(tensor(torch, device, b))
        layers += [linear, hidden()]
    return torch.nn.Sequential(*layers[:-1])


def _parameters(model):
    """Host (W, b) pairs in fastnn's layout."""
    out = []
    for linear in model[::2]:
        out += [to_host(linear.weight).T, to_host(linear.bias)]
    return [np.asarray(p, dtype=np.float64) for p in out]


def _trainer(torch, model, lr, loss_fn):
    opt = torch.optim.SGD(model.parameters(), lr=lr)

    def train_step(X, y):
        opt.zero_grad(set_to_none=True)
        out = model(X)
        loss = loss_fn(out, y)
        loss.backward()
        opt.step()
        return loss.detach(), out.detach()

    return train_step


def mlp_step(torch, device, data):
    model = _sequential(torch, device, data["weights"], torch.nn.ReLU)
    X, y = tensor(torch, device, data["X"]), tensor(torch, device, data["y"])
    loss_fn = torch.nn.functional.cross_entropy
    train_step, losses = _trainer(torch, model, 0.01, loss_fn), []

    def step():
        losses[:] = [train_step(X, y)[0]]

    def result():
        with torch.no_grad():
            after = loss_fn(model(X), y)
        return [np.float64(losses[0].item()), np.float64(after.item()), *_parameters(model)]

    return Case(step, result)


def planar(torch, device, data):
    X = tensor(torch, device, data["X"])
    y = tensor(torch, device, data["y"], dtype=data["X"].dtype)[:, None]
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    trained = []

    def step():
        model = _sequential(torch, device, data["weights"], torch.nn.Tanh)
        train_step = _trainer(torch, model, 1.2, bce)
        for _ in range(data["iterations"]):
            train_step(X, y)
        trained[:] = [model]

    def result():
        model = trained[0]
        with torch.no_grad():
            logits = model(X)
            loss = bce(logits, y).item()
            accuracy = ((logits > 0) == (y > 0.5)).double().mean().item()
        return [np.array([loss, accuracy]), *_parameters(model)]

    return Case(step, result)


def epoch(torch, device, data):
    model = _sequential(torch, device, data["weights"], torch.nn.ReLU)
    X, y = tensor(torch, device, data["X"]), tensor(torch, device, data["y"])
    train_step = _trainer(torch, model, 0.05, torch.nn.functional.cross_entropy)
    generator, n, batch = torch.Generator(device=device).manual_seed(0), len(y), data["batch"]
    scores = []

    def step():
        order = torch.randperm(n, generator=generator, device=device)
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        for start in range(0, n, batch):
            idx = order[start:start + batch]
            Xb, yb = X[idx], y[idx]
            loss, logits = train_step(Xb, yb)  # accuracy from the training forward, as fastnn
            loss_sum += loss * len(idx)
            correct += (logits.argmax(dim=1) == yb).sum()
        scores[:] = [(loss_sum / n).item(), correct.item() / n]

    return Case(step, lambda: [np.array(scores)])

