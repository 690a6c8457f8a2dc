"""The training runs the data-parallel tests share: run by mpi_worker.py under mpiexec,
and in one process (ranks as threads, or no ranks at all) by test_distributed.py."""

import numpy as np

from fastnn import (
    BatchNorm,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    MaxPool2D,
    Sequential,
    datasets,
)

X, Y = datasets.blobs(103, n_classes=3, n_features=4, std=2.0, seed=0)
VAL = (X[:41], Y[:41])
# 103 rows in batches of 16: 7 steps, the last of 7 rows (3 + 2 + 2 on 3 ranks).
# Momentum, not Adam: Adam's m / sqrt(v) is scale-free, so a gradient that is rounding
# noise (the bias feeding BatchNorm) moves by lr whatever the noise's size, and two
# correct summation orders drift apart by ~1e-11 in 4 epochs (1e-13 with momentum).
OPTIONS = {"epochs": 4, "batch_size": 16, "optimizer": "momentum", "lr": 0.05, "seed": 9,
           "clip_norm": 1.0}


def model(backend=None, dtype="float64", seed=5, hidden=10, activation="relu"):
    """Dense, BatchNorm, Dropout, Dense: every layer with something to synchronize."""
    return Sequential([Dense(4, hidden, activation), BatchNorm(hidden), Dropout(0.25),
                       Dense(hidden, 3, "softmax")], dtype=dtype, seed=seed, backend=backend)


# A CNN on 8x8 digits, trained with OPTIONS: 90 images in batches of 16 (the last of 10).
IMAGES, LABELS = (a[:90] for a in datasets.digits())
IMAGES = IMAGES.reshape(-1, 1, 8, 8)
IMAGE_VAL = (IMAGES[:30], LABELS[:30])


def cnn(backend=None, dtype="float64", seed=5, norm=False):
    """Conv2D + ReLU, MaxPool2D, a second Conv2D + tanh, Flatten, Dense + softmax; with
    ``norm``, a BatchNorm2D after the first Conv2D (its statistics over the global batch)."""
    first = [Conv2D(1, 4, 3, padding=1, activation="relu")] + ([BatchNorm2D(4)] if norm else [])
    return Sequential([*first, MaxPool2D(2), Conv2D(4, 6, 3, activation="tanh"), Flatten(),
                       Dense(24, 10, "softmax")], input_shape=(1, 8, 8), dtype=dtype,
                      seed=seed, backend=backend)


def shards(ranks, data=(X, Y)):
    """Unequal contiguous parts of ``data``, one per rank (rank r's weight r + 2)."""
    weights = np.arange(ranks) + 2.0
    edges = np.round(np.concatenate([[0.0], np.cumsum(weights)]) / weights.sum()
                     * len(data[0])).astype(int)
    return [tuple(a[lo:hi] for a in data) for lo, hi in zip(edges[:-1], edges[1:])]


def state(model):
    """Parameters, BatchNorm statistics and optimizer state as float64 host arrays."""
    to_numpy = model.backend.to_numpy
    arrays = [p.value for p in model.parameters() + model.buffers()]
    arrays += [a for slots in model.optimizer.state for a in slots]
    return [np.asarray(to_numpy(a), dtype=np.float64) for a in arrays]
