"""Data utilities on NumPy host arrays: splitting, one-hot labels, standardizing,
and a mini-batch iterator."""

import numbers

import numpy as np

from fastnn.validation import check_rows, in_range, positive_int


def train_test_split(X, y, test_size=0.25, shuffle=True, seed=None):
    """(X_train, X_test, y_train, y_test), with ``test_size`` a fraction or a count.

    Without shuffling the test part is the last rows (right for time-ordered data).
    """
    X, y = _paired(X, y)
    n = len(X)
    if isinstance(test_size, numbers.Integral) and not isinstance(test_size, bool):
        n_test = positive_int("test_size", test_size)
    else:
        n_test = int(np.ceil(in_range("test_size", test_size, 0.0, 1.0) * n))
    if not 0 < n_test < n:
        raise ValueError(
            f"test_size={test_size!r} leaves {n_test} of {n} samples for testing; both the "
            f"training and the test part need at least one sample"
        )
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    train, test = order[: n - n_test], order[n - n_test :]
    return X[train], X[test], y[train], y[test]


def one_hot(labels, n_classes=None, dtype=np.float32):
    """Integer labels (n,) as one-hot rows (n, n_classes)."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"one_hot needs a non-empty 1-D array of labels; got shape {labels.shape}")
    if labels.dtype.kind == "f" and not np.all(labels == np.round(labels)):
        raise ValueError("one_hot needs integer labels; got non-integer values")
    if labels.dtype.kind not in "iuf":
        raise TypeError(f"one_hot needs integer labels; got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    n_classes = int(labels.max()) + 1 if n_classes is None else positive_int("n_classes", n_classes)
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(
            f"labels must lie in 0..{n_classes - 1}; got values from {labels.min()} "
            f"to {labels.max()}"
        )
    out = np.zeros((labels.size, n_classes), dtype=dtype)
    out[np.arange(labels.size), labels] = 1
    return out


def standardize(X, mean=None, std=None):
    """(X - mean) / std per feature; returns (X_std, mean, std).

    Pass the training set's mean and std to transform test data the same way.
    Constant features get std 1, so they map to 0 instead of NaN.
    """
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(
            f"standardize needs a non-empty (n_samples, n_features) array; got shape {X.shape}"
        )
    if mean is None:
        mean = X.mean(axis=0)
    if std is None:
        # a constant column can show a round-off std of ~1e-17: test the range instead
        std = np.where(np.ptp(X, axis=0) > 0, X.std(axis=0), 1.0)
    mean, std = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
    std = np.where(std > 0, std, 1.0)
    return (X - mean) / std, mean, std


def batches(X, y, batch_size, shuffle=False, seed=None):
    """An iterator of (X_batch, y_batch) with ``batch_size`` rows (the last may be
    smaller). Arguments are checked at the call, not at the first batch."""
    X, y = _paired(X, y)
    batch_size = positive_int("batch_size", batch_size)
    order = np.random.default_rng(seed).permutation(len(X)) if shuffle else np.arange(len(X))
    splits = np.array_split(order, range(batch_size, len(X), batch_size))
    return ((X[idx], y[idx]) for idx in splits)


def _paired(X, y):
    X, y = np.asarray(X), np.asarray(y)
    if X.ndim == 0:
        raise ValueError("X must be an array with one row per sample; got a scalar")
    check_rows(X, y)
    return X, y
