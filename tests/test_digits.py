"""scikit-learn's bundled handwritten digits: the data, the clear error without
scikit-learn, and the digits example reaching at least 95% test accuracy."""

import importlib.util

import numpy as np
import pytest

import fastnn
from fastnn import datasets
from fastnn.data import standardize, train_test_split


def test_digits_shape_scale_and_labels():
    X, y = datasets.load("digits")
    assert X.shape == (1797, 64) and X.dtype == np.float64
    assert X.min() == 0.0 and X.max() == 1.0
    assert y.dtype == np.int64
    np.testing.assert_array_equal(np.unique(y), np.arange(10))
    assert np.bincount(y).min() >= 170  # about 180 images per digit


def test_digits_without_scikit_learn_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "sklearn" else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'fastnn\[datasets\]'"):
        datasets.digits()


def test_digits_example_reaches_95_percent():
    """The digits example of docs/guide/datasets.md: 64-64-10 relu/softmax, Adam, 30
    epochs, standardized."""
    X, y = datasets.digits()
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, seed=0)
    X_train, mean, std = standardize(X_train)
    X_test, _, _ = standardize(X_test, mean, std)
    model = fastnn.from_layer_dims([64, 64, 10], "relu", "softmax", seed=0)
    history = model.fit(X_train, y_train, epochs=30, batch_size=32, optimizer="adam", lr=0.001)
    result = model.evaluate(X_test, y_test)
    assert result["accuracy"] >= 0.95, result
    assert history["accuracy"][-1] >= 0.99  # it has learned the training set
    assert history["loss"][-1] < history["loss"][0] / 10
