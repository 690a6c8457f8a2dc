"""Datasets as NumPy arrays, never downloaded: toy sets generated from a seed, the
8x8 handwritten digits (shipped with fastnn), and files the user already has (MNIST
IDX files, CSV tables).

Each returns (X, y): X of shape (n_samples, n_features) and y int64 class labels of
shape (n_samples,). The generated sets have two float64 features (``blobs`` may have
more). The image sets (``digits``, ``mnist``) give images of shape (n_samples, 1,
height, width) instead with ``images=True``, the NCHW layout ``Conv2D`` takes.
"""

import gzip
import importlib.resources

import numpy as np

from fastnn.csvdata import load_csv
from fastnn.idx import mnist
from fastnn.names import lookup
from fastnn.validation import flag, in_range, positive_int


def planar(n_samples=400, noise=0.2, seed=1):
    """The "flower" of the shallow-network tutorial: two classes of petals.

    For class j: t = linspace(3.12 j, 3.12 (j+1)) + N(0, noise), r = 4 sin(4t) + N(0, noise),
    point (r sin t, r cos t). With the defaults it reproduces the course's data exactly
    (NumPy's legacy RandomState(1), drawn in the course's order).
    """
    n_samples = _even("planar", n_samples)
    noise = _noise(noise)
    rs = np.random.RandomState(seed)
    half = n_samples // 2
    X = np.zeros((n_samples, 2))
    y = np.zeros(n_samples, dtype=np.int64)
    for j in range(2):
        t = np.linspace(j * 3.12, (j + 1) * 3.12, half) + rs.randn(half) * noise
        r = 4 * np.sin(4 * t) + rs.randn(half) * noise
        X[j * half : (j + 1) * half] = np.c_[r * np.sin(t), r * np.cos(t)]
        y[j * half : (j + 1) * half] = j
    return X, y


def moons(n_samples=200, noise=0.1, seed=None):
    """Two interleaving half circles (as scikit-learn's make_moons)."""
    n_samples = positive_int("n_samples", n_samples)
    rng = np.random.default_rng(seed)
    n_out = n_samples // 2
    n_in = n_samples - n_out
    t_out, t_in = np.linspace(0, np.pi, n_out), np.linspace(0, np.pi, n_in)
    X = np.vstack([
        np.c_[np.cos(t_out), np.sin(t_out)],
        np.c_[1 - np.cos(t_in), 1 - np.sin(t_in) - 0.5],
    ])
    y = np.r_[np.zeros(n_out, dtype=np.int64), np.ones(n_in, dtype=np.int64)]
    return _shuffled(X + rng.normal(0.0, _noise(noise), X.shape), y, rng)


def circles(n_samples=200, noise=0.05, factor=0.5, seed=None):
    """A small circle (class 1) inside a large one (class 0)."""
    n_samples = positive_int("n_samples", n_samples)
    factor = in_range("factor", factor, 0.0, 1.0)
    rng = np.random.default_rng(seed)
    n_out = n_samples // 2
    n_in = n_samples - n_out
    t_out = np.linspace(0, 2 * np.pi, n_out, endpoint=False)
    t_in = np.linspace(0, 2 * np.pi, n_in, endpoint=False)
    X = np.vstack([np.c_[np.cos(t_out), np.sin(t_out)],
                   factor * np.c_[np.cos(t_in), np.sin(t_in)]])
    y = np.r_[np.zeros(n_out, dtype=np.int64), np.ones(n_in, dtype=np.int64)]
    return _shuffled(X + rng.normal(0.0, _noise(noise), X.shape), y, rng)


def xor(n_samples=400, noise=0.0, seed=None):
    """Points in [-1, 1]^2, class 1 where the signs of the coordinates differ."""
    n_samples = positive_int("n_samples", n_samples)
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1.0, 1.0, (n_samples, 2))
    y = ((X[:, 0] > 0) != (X[:, 1] > 0)).astype(np.int64)
    return X + rng.normal(0.0, _noise(noise), X.shape), y


def spirals(n_samples=300, n_classes=3, noise=0.2, seed=None):
    """Interleaved spiral arms, one per class (the CS231n spiral data)."""
    n_samples, n_classes = _counts(n_samples, n_classes)
    rng = np.random.default_rng(seed)
    per = n_samples // n_classes
    X, y = [], []
    for j in range(n_classes):
        count = per if j < n_classes - 1 else n_samples - per * (n_classes - 1)
        r = np.linspace(0.0, 1.0, count)
        t = np.linspace(j * 4.0, (j + 1) * 4.0, count) + rng.normal(0.0, _noise(noise), count)
        X.append(np.c_[r * np.sin(t), r * np.cos(t)])
        y.append(np.full(count, j, dtype=np.int64))
    return np.vstack(X), np.concatenate(y)


def blobs(n_samples=300, n_classes=3, n_features=2, std=1.0, seed=None):
    """Gaussian clusters, one per class, centred uniformly in [-10, 10]^n_features."""
    n_samples, n_classes = _counts(n_samples, n_classes)
    n_features = positive_int("n_features", n_features)
    rng = np.random.default_rng(seed)
    centers = rng.uniform(-10.0, 10.0, (n_classes, n_features))
    y = np.arange(n_samples, dtype=np.int64) % n_classes
    X = centers[y] + rng.normal(0.0, _noise(std, "std"), (n_samples, n_features))
    return _shuffled(X, y, rng)


def digits(images=False):
    """The 8x8 handwritten digits (1797 images, classes 0..9), the same as scikit-learn's
    ``load_digits``: fastnn ships scikit-learn's file (BSD-3-Clause), a copy of the test
    set of the UCI "Optical Recognition of Handwritten Digits" data (E. Alpaydin and
    C. Kaynak, 1998, CC BY 4.0), so it needs no other package and no download.

    X is float64 of shape (1797, 64), pixels scaled from 0..16 to [0, 1]; with
    ``images=True``, of shape (1797, 1, 8, 8) (one grey channel, rows of 8 pixels).
    """
    images = flag("images", images)
    name = "digits.csv.gz"
    try:
        with (importlib.resources.files("fastnn") / name).open("rb") as raw, \
                gzip.open(raw, "rt") as text:
            table = np.loadtxt(text, delimiter=",", dtype=np.int64)
        if table.shape != (1797, 65):
            raise ValueError(f"{table.shape[0]} rows of {table.shape[-1]} values, "
                             "not 1797 of 65")
    except (OSError, EOFError, ValueError) as error:
        raise RuntimeError(
            f"fastnn's copy of the digits ({name}) is missing or damaged ({error}); "
            "reinstall fastnn: pip install --force-reinstall fastnn"
        ) from None
    X = table[:, :-1] / 16.0
    return (X.reshape(-1, 1, 8, 8) if images else X), table[:, -1]


GENERATED = (planar, moons, circles, xor, spirals, blobs)
TABLE = {f.__name__: f for f in (*GENERATED, digits, mnist)}
TABLE["csv"] = load_csv


def load(name, **options):
    """A dataset by name, e.g. ``load('moons', n_samples=1000, noise=0.2, seed=0)``,
    ``load('digits', images=True)``, ``load('mnist', directory='data/mnist', kind='test')`` or
    ``load('csv', path='table.csv', label='label')``."""
    return lookup("dataset", name, TABLE)(**options)


def _shuffled(X, y, rng):
    order = rng.permutation(len(X))
    return X[order], y[order]


def _noise(value, name="noise"):
    return in_range(name, value, 0.0, float("inf"))


def _counts(n_samples, n_classes):
    n_samples = positive_int("n_samples", n_samples)
    n_classes = positive_int("n_classes", n_classes)
    if n_classes > n_samples:
        raise ValueError(
            f"n_classes={n_classes} is more than n_samples={n_samples}; every class needs a sample"
        )
    return n_samples, n_classes


def _even(name, n_samples):
    n_samples = positive_int("n_samples", n_samples)
    if n_samples % 2:
        raise ValueError(f"{name} needs an even n_samples (two equal classes); got {n_samples}")
    return n_samples
