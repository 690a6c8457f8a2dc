"""Learning curves and decision boundaries saved as PNG files: valid images of sensible
size, drawn without a window, and clear errors for wrong input."""

import importlib.util
import struct
import subprocess
import sys

import pytest

import fastnn
from fastnn import datasets, plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    """(width, height) from a PNG's IHDR chunk, after checking the signature."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, "not a PNG file"
    assert data[12:16] == b"IHDR"
    assert data[-8:-4] == b"IEND"  # written to the end
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def blob_model():
    X, y = datasets.blobs(120, n_classes=3, seed=0)
    model = fastnn.from_layer_dims([2, 8, 3], "relu", "softmax", seed=0)
    history = model.fit(X, y, epochs=40, batch_size=16, optimizer="adam", lr=0.02,
                        validation_data=(X[:30], y[:30]))
    return model, X, y, history


def test_history_png(tmp_path, blob_model):
    *_, history = blob_model
    path = plots.plot_history(history, tmp_path / "curves" / "history.png", title="blobs")
    assert path == tmp_path / "curves" / "history.png"
    width, height = png_size(path)
    assert (width, height) == (1000, 400)
    assert path.stat().st_size > 10_000  # curves, axes and text, not a blank canvas


def test_history_without_validation(tmp_path):
    history = {"loss": [1.0, 0.5, 0.25], "rmse": [2.0, 1.0, 0.5]}
    width, _ = png_size(plots.plot_history(history, tmp_path / "h.png"))
    assert width == 1000


def test_decision_boundary_png_multiclass(tmp_path, blob_model):
    model, X, y, _ = blob_model
    path = plots.plot_decision_boundary(model, X, y, tmp_path / "boundary.png", title="3 blobs")
    assert png_size(path) == (600, 500)
    assert path.stat().st_size > 10_000


def test_decision_boundary_binary_shows_both_classes(tmp_path):
    X, y = datasets.moons(200, noise=0.1, seed=0)
    model = fastnn.from_layer_dims([2, 16, 1], "tanh", "sigmoid", seed=0)
    model.fit(X, y, epochs=100, batch_size=32, optimizer="adam", lr=0.02)
    path = plots.plot_decision_boundary(model, X, y, tmp_path / "moons.png")
    assert png_size(path) == (600, 500)


def test_decision_boundary_rejects_3d_inputs(tmp_path):
    X, y = datasets.blobs(30, n_classes=2, n_features=3, seed=0)
    model = fastnn.from_layer_dims([3, 4, 1], "tanh", "sigmoid", seed=0)
    with pytest.raises(ValueError, match=r"2-D inputs only: X must have shape \(n_samples, 2\); "
                                         r"got shape \(30, 3\)"):
        plots.plot_decision_boundary(model, X, y, tmp_path / "b.png")
    assert not (tmp_path / "b.png").exists()


def test_decision_boundary_rejects_a_model_with_other_inputs(tmp_path):
    X, y = datasets.moons(20, seed=0)
    model = fastnn.from_layer_dims([3, 4, 1], "tanh", "sigmoid", seed=0)
    with pytest.raises(ValueError, match="the model takes 3 inputs"):
        plots.plot_decision_boundary(model, X, y, tmp_path / "b.png")


def test_decision_boundary_rejects_regression_and_bad_labels(tmp_path):
    X, y = datasets.moons(20, seed=0)
    regression = fastnn.from_layer_dims([2, 4, 1], "tanh", "identity", seed=0)
    with pytest.raises(ValueError, match="needs a classifier .* the 'mse' loss"):
        plots.plot_decision_boundary(regression, X, y, tmp_path / "b.png")
    classifier = fastnn.from_layer_dims([2, 4, 1], "tanh", "sigmoid", seed=0)
    with pytest.raises(ValueError, match=r"y must hold one label per sample, shape \(20,\)"):
        plots.plot_decision_boundary(classifier, X, y[:5], tmp_path / "b.png")


@pytest.mark.parametrize("history", [{}, {"loss": []}, [0.5, 0.4]])
def test_history_must_be_fit_history(tmp_path, history):
    with pytest.raises(ValueError, match="history must be fit\\(\\)'s dict"):
        plots.plot_history(history, tmp_path / "h.png")


def test_path_must_be_png(tmp_path):
    with pytest.raises(ValueError, match="give a path ending in .png"):
        plots.plot_history({"loss": [1.0]}, tmp_path / "h.jpg")


def test_without_matplotlib_says_how_to_install(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'fastnn\[plot\]'"):
        plots.plot_history({"loss": [1.0]}, tmp_path / "h.png")


def test_never_touches_pyplot(tmp_path):
    """Figures are drawn on their own Agg canvas: in a fresh interpreter, plotting never
    imports pyplot (which would pick a GUI backend and could open windows)."""
    code = (
        "import sys, fastnn; from fastnn import datasets, plots; "
        "X, y = datasets.xor(40, seed=0); "
        "m = fastnn.from_layer_dims([2, 4, 1], 'tanh', 'sigmoid', seed=0); "
        "h = m.fit(X, y, epochs=2); "
        f"plots.plot_history(h, {str(tmp_path / 'h.png')!r}); "
        f"plots.plot_decision_boundary(m, X, y, {str(tmp_path / 'b.png')!r}); "
        "print('matplotlib.pyplot' in sys.modules)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "False"
    assert png_size(tmp_path / "h.png") and png_size(tmp_path / "b.png")
