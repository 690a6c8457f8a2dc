"""PyTorch's run of the docs' MNIST recipe, to hold fastnn's result against:
``python -m bench.mnist_torch DIR`` trains Saito's SimpleConvNet (conv 30x5x5, ReLU,
2x2 max pool, 4320-100-10) with Adam (lr 0.001), batches of 100, for 20 epochs on the
IDX files in DIR (MNIST or Fashion-MNIST, read by ``fastnn.datasets.mnist``) and prints
the test accuracy after each epoch, as ``fastnn train --dataset mnist:DIR --model
simplecnn`` does (docs/guide/convolution.md)."""

import argparse
import time

import numpy as np

from fastnn import datasets


def simple_conv_net(torch, image_side=28, classes=10):
    """SimpleConvNet in PyTorch, with PyTorch's own default initialization."""
    pooled = (image_side - 4) // 2
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(1, 30, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(30 * pooled * pooled, 100), nn.ReLU(), nn.Linear(100, classes))


def train(torch, X, y, X_test, y_test, epochs=20, batch=100, lr=1e-3, seed=0, log=print):
    """Train on (X, y), images (n, 1, H, W) float32 and integer labels; returns the test
    accuracy after each epoch."""
    torch.manual_seed(seed)
    net = simple_conv_net(torch, X.shape[-1], int(max(y.max(), y_test.max())) + 1)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    X, X_test = torch.from_numpy(np.ascontiguousarray(X)), torch.from_numpy(X_test)
    y, y_test = (torch.from_numpy(np.asarray(v, dtype=np.int64)) for v in (y, y_test))
    order = torch.Generator().manual_seed(seed)
    start, accuracies = time.perf_counter(), []
    for epoch in range(epochs):
        for rows in torch.randperm(len(X), generator=order).split(batch):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(X[rows]), y[rows]).backward()
            optimizer.step()
        with torch.no_grad():
            accuracies.append((net(X_test).argmax(1) == y_test).float().mean().item())
        log(f"epoch {epoch + 1}/{epochs} - test accuracy {accuracies[-1]:.4f} "
            f"({time.perf_counter() - start:.0f} s)")
    return accuracies


def main(argv=None):
    import torch

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("directory", help="the folder holding the four IDX files")
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args(argv)
    X, y = datasets.mnist(args.directory, kind="train", images=True)
    X_test, y_test = datasets.mnist(args.directory, kind="test", images=True)
    accuracies = train(torch, X, y, X_test, y_test, epochs=args.epochs)
    print(f"test accuracy {100 * accuracies[-1]:.1f}% after {args.epochs} epochs "
          f"(best {100 * max(accuracies):.1f}%)")


if __name__ == "__main__":
    main()
