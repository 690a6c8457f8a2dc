"""Metrics: accuracy and RMSE.

``accuracy`` and ``rmse`` are for users, on host arrays. ``batch_score`` is what
``fit`` accumulates on the device: a per-batch sum that ``finish`` turns into the
epoch's value, so a metric costs no extra pass over the data.
"""

import math

import numpy as np


def accuracy(y_true, y_pred):
    """Fraction of predicted labels equal to the true labels."""
    y_true, y_pred = _pair(y_true, y_pred, "accuracy")
    return float(np.mean(y_true == y_pred))


def rmse(y_true, y_pred):
    """Root mean squared error."""
    y_true, y_pred = _pair(y_true, y_pred, "rmse")
    return float(np.sqrt(np.mean((y_true.astype(float) - y_pred.astype(float)) ** 2)))


def _pair(y_true, y_pred, what):
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.size != y_pred.size or y_true.size == 0:
        raise ValueError(
            f"{what} needs y_true and y_pred of the same non-zero size; got shapes "
            f"{y_true.shape} and {y_pred.shape}"
        )
    return y_true.reshape(-1), y_pred.reshape(-1)


def batch_score(xp, task, A, Y):
    """Sum over the batch of each sample's score (a device scalar).

    binary: the fraction of the sample's outputs on the right side of 0.5;
    multiclass: 1 if the arg-max class is right; regression: mean squared error.
    """
    if task == "binary":
        hits = xp.astype((A >= 0.5) == (Y >= 0.5), A.dtype)
        return xp.sum(hits) / A.shape[1]
    if task == "multiclass":
        return xp.sum(xp.astype(xp.argmax(A, axis=1) == xp.argmax(Y, axis=1), A.dtype))
    r = A - Y
    return xp.sum(r * r) / A.shape[1]


def finish(task, total, n_samples):
    """The epoch's metric from the summed batch scores."""
    mean = float(total) / n_samples
    return mean if task != "regression" else math.sqrt(mean)


def name_for(task):
    return "rmse" if task == "regression" else "accuracy"
