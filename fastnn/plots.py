"""Figures saved as PNG files: learning curves and the decision boundary of a 2-D
classifier (the planar tutorial's figure).

Needs matplotlib (``pip install 'fastnn[plot]'``). Figures are drawn on matplotlib's
Agg canvas without pyplot, so no window ever opens and the global backend is untouched.
"""

import importlib.util
from pathlib import Path

import numpy as np

GRID = 300  # points per axis of the decision-boundary grid


def plot_history(history, path, title=None):
    """Loss and metric curves per epoch from ``fit``'s history, with the validation
    curves when present, saved to ``path`` (PNG). Returns the path."""
    path = _png_path(path)
    train_keys = _history_keys(history)
    figure = _figure(figsize=(10, 4))
    axes = figure.subplots(1, len(train_keys), squeeze=False)[0]
    for ax, key in zip(axes, train_keys):
        epochs = np.arange(1, len(history[key]) + 1)
        ax.plot(epochs, history[key], label="train")
        if f"val_{key}" in history and len(history[f"val_{key}"]):
            ax.plot(epochs[: len(history[f"val_{key}"])], history[f"val_{key}"],
                    label="validation")
            ax.legend()
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def plot_decision_boundary(model, X, y, path, title=None):
    """The model's predicted class over a grid covering X (filled contours) with the
    samples on top, colored by their label; saved to ``path`` (PNG). X must have two
    features. Returns the path."""
    path = _png_path(path)
    X, y = np.asarray(X, dtype=np.float64), np.asarray(y)
    if X.ndim != 2 or X.shape[1] != 2:
        raise ValueError(
            f"plot_decision_boundary draws 2-D inputs only: X must have shape (n_samples, 2); "
            f"got shape {X.shape}"
        )
    if y.shape != (X.shape[0],):
        raise ValueError(
            f"y must hold one label per sample, shape ({X.shape[0]},); got shape {y.shape}"
        )
    if model.n_in != 2:
        raise ValueError(
            f"the model takes {model.n_in} inputs; a decision boundary is drawn for 2-input models"
        )
    if model.task == "regression" or (model.task == "binary" and model.n_out != 1):
        raise ValueError(
            f"plot_decision_boundary needs a classifier with one label per sample (one sigmoid "
            f"unit or a softmax layer); this model has {model.n_out} output(s) and the "
            f"{model.loss.name!r} loss"
        )
    figure = _figure(figsize=(6, 5))
    ax = figure.subplots()
    low, high = X.min(axis=0), X.max(axis=0)
    pad = np.maximum(0.1 * (high - low), 0.5)
    xs = np.linspace(low[0] - pad[0], high[0] + pad[0], GRID)
    ys = np.linspace(low[1] - pad[1], high[1] + pad[1], GRID)
    grid_x, grid_y = np.meshgrid(xs, ys)
    predicted = model.predict(np.c_[grid_x.ravel(), grid_y.ravel()]).reshape(grid_x.shape)
    n_classes = max(int(predicted.max()), int(y.max())) + 1
    levels = np.arange(n_classes + 1) - 0.5
    ax.contourf(grid_x, grid_y, predicted, levels=levels, cmap="Spectral", alpha=0.6)
    ax.scatter(X[:, 0], X[:, 1], c=y, cmap="Spectral", vmin=levels[0], vmax=levels[-1],
               s=14, edgecolors="k", linewidths=0.4)
    ax.set_xlabel("x1")
    ax.set_ylabel("x2")
    if title:
        ax.set_title(title)
    return _save(figure, path)


def _history_keys(history):
    if not isinstance(history, dict) or not history.get("loss"):
        raise ValueError(
            "history must be fit()'s dict with a non-empty 'loss' list, e.g. model.history"
        )
    return [key for key in history if not key.startswith("val_") and len(history[key])]


def _figure(figsize):
    if importlib.util.find_spec("matplotlib") is None:
        raise ModuleNotFoundError(
            "plots need matplotlib, which is not installed here; install it with: "
            "pip install 'fastnn[plot]'"
        )
    from matplotlib.figure import Figure

    return Figure(figsize=figsize, layout="constrained")


def _png_path(path):
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"plots are saved as PNG; give a path ending in .png, not {str(path)!r}")
    return path


def _save(figure, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return path
