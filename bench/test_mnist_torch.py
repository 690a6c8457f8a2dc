import importlib.util

import numpy as np
import pytest

from bench import mnist_torch

needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                 reason="PyTorch is not installed")


def bars(n, seed):
    """28x28 images of a bright row band (class 0) or column band (class 1), with noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    X = rng.uniform(0, 0.3, (n, 1, 28, 28)).astype(np.float32)
    where = rng.integers(4, 20, n)
    for i in range(n):
        if y[i]:
            X[i, 0, :, where[i]:where[i] + 4] += 0.7
        else:
            X[i, 0, where[i]:where[i] + 4, :] += 0.7
    return X, y


@needs_torch
def test_the_torch_reference_learns_and_reports_every_epoch():
    import torch

    torch.set_num_threads(1)
    lines = []
    accuracies = mnist_torch.train(torch, *bars(200, 0), *bars(100, 1), epochs=2, batch=20,
                                   log=lines.append)
    assert len(accuracies) == 2 and len(lines) == 2
    assert lines[-1].startswith("epoch 2/2 - test accuracy")
    assert accuracies[-1] >= 0.95


@needs_torch
def test_the_net_is_saitos_simple_conv_net():
    import torch

    net = mnist_torch.simple_conv_net(torch)
    sizes = [tuple(p.shape) for p in net.parameters()]
    assert sizes == [(30, 1, 5, 5), (30,), (100, 4320), (100,), (10, 100), (10,)]
