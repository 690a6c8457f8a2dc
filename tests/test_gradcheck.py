"""Backprop against float64 central differences: every trainable activation with every
loss it fits, Dropout with a fixed mask, and a check that a wrong gradient fails."""

import re

import numpy as np
import pytest
from conftest import dev, host

import fastnn
from fastnn import (
    AvgPool2D,
    BatchNorm,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    MaxPool2D,
    Sequential,
    activations,
)
from fastnn.kernels import activation_codes

HIDDEN = [name for name in activation_codes.CODES if name != "step"]
# (loss, output activation, output units, targets)
RNG = np.random.default_rng(7)
X = RNG.normal(size=(12, 3))
OUTPUTS = [
    ("binary_crossentropy", "sigmoid", 1, (RNG.random(12) > 0.5).astype(int)),
    ("binary_crossentropy", "sigmoid", 2, (RNG.random((12, 2)) > 0.5).astype(int)),
    ("categorical_crossentropy", "softmax", 3, RNG.integers(0, 3, 12)),
    ("mse", "identity", 2, RNG.normal(size=(12, 2))),
    ("mse", "sigmoid", 1, RNG.random(12)),
    ("mae", "tanh", 2, RNG.normal(size=(12, 2)) * 3),
    ("huber", "identity", 2, RNG.normal(size=(12, 2)) * 3),
    ("huber", "leaky_relu", 1, RNG.normal(size=12) * 3),
    ("mse", "softplus", 1, RNG.random(12) * 2),
    ("mse", "relu", 2, RNG.random((12, 2)) * 2),
    ("mse", "softmax", 3, RNG.dirichlet(np.ones(3), 12)),
]


def small_model(hidden, loss, output, n_out, dropout=0.0, dtype="float32"):
    layers = [Dense(3, 5, hidden), Dense(5, 4, hidden)]
    if dropout:
        layers.insert(1, Dropout(dropout))
    return Sequential(layers + [Dense(4, n_out, output)], loss=loss, dtype=dtype, seed=3)


@pytest.mark.parametrize("loss, output, n_out, y", OUTPUTS,
                         ids=[f"{o[0]}-{o[1]}-{o[2]}" for o in OUTPUTS])
@pytest.mark.parametrize("hidden", HIDDEN)
def test_backprop_matches_numerical_gradient(backend, hidden, loss, output, n_out, y):
    model = small_model(hidden, loss, output, n_out)
    result = fastnn.gradcheck(model, X, y)
    assert result.passed, result
    assert result.max_rel_error < 1e-6
    assert len(result.errors) == 6  # W and b of all three layers


def test_dropout_with_fixed_mask(backend):
    model = small_model("tanh", "binary_crossentropy", "sigmoid", 1, dropout=0.4)
    result = fastnn.gradcheck(model, X, OUTPUTS[0][3])
    assert result.passed, result
    assert model.dtype_name == "float32"  # the check ran on a float64 copy


def test_a_wrong_gradient_fails(backend, monkeypatch):
    model = small_model("tanh", "mse", "identity", 2)
    good = backend.ops.dense_backward

    def off_by_a_bit(X_, W, dZ, need_dx):
        dW, dX = good(X_, W, dZ, need_dx)
        return dW * 1.001, dX

    monkeypatch.setattr(backend.ops, "dense_backward", off_by_a_bit)
    result = fastnn.gradcheck(model, X, OUTPUTS[3][3])
    assert not result.passed and not bool(result)
    assert 1e-4 < result.max_rel_error < 1e-2 and "FAILED" in repr(result)
    assert "kink" not in repr(result) and not any(result.kinks.values())


@pytest.mark.parametrize("pool", [AvgPool2D, MaxPool2D])
def test_a_failure_at_a_kink_says_so(backend, pool):
    """Blank pixels under a zero bias put ReLU units at exactly 0, where no finite
    difference is the derivative: the result says so, and how to check again."""
    images = np.zeros((2, 1, 6, 6))
    images[:, :, 3:] = RNG.random((2, 1, 3, 6)) + 0.5  # the top half blank
    model = Sequential([Conv2D(1, 2, 3, padding=1, activation="relu"), pool(2),
                        Flatten(), Dense(18, 2, "softmax")], input_shape=(1, 6, 6), seed=0)
    result = fastnn.gradcheck(model, images, [0, 1])
    assert not result.passed and result.worst_param == "layer 0 b"
    assert result.kinks["layer 0 b"] == 2
    assert re.search(r"FAILED: .*\(layer 0 b\).*; 2 of its entries checked lie at a kink "
                     r"\(a ReLU-like unit at exactly 0, or tied maxima in a max-pooling "
                     r"window.*this need not be a backprop error: check again with inputs "
                     r"moved off the kinks \(e.g. X \+ 0.01\)", repr(result)), repr(result)
    assert fastnn.gradcheck(model, images + 0.01, [0, 1]).passed


def test_a_bias_feeding_batchnorm_has_a_zero_gradient_and_passes(backend):
    """BatchNorm takes the batch mean out, so the loss does not depend on the bias before
    it: central differences give 0 and backprop round-off (~1e-16), which agree."""
    rng = np.random.default_rng(0)
    dense = Sequential([Dense(3, 4), BatchNorm(4), Dense(4, 2, "softmax")], seed=0)
    conv = Sequential([Conv2D(1, 2, 3, padding=1), BatchNorm2D(2, activation="tanh"),
                       Flatten(), Dense(32, 3, "softmax")], input_shape=(1, 4, 4), seed=0)
    for model, X, y in ((dense, rng.normal(size=(8, 3)), rng.integers(0, 2, 8)),
                        (conv, rng.normal(size=(6, 1, 4, 4)), rng.integers(0, 3, 6))):
        result = fastnn.gradcheck(model, X, y)
        assert result.passed, result
        assert result.errors["layer 0 b"] < 1e-6 and result.errors["layer 0 W"] < 1e-6


def test_sampled_entries_and_result_fields():
    model = small_model("relu", "categorical_crossentropy", "softmax", 3)
    result = fastnn.gradcheck(model, X, OUTPUTS[2][3], max_entries=4)
    assert result.passed and set(result.errors) == {
        f"layer {i} {n}" for i in range(3) for n in "Wb"}
    assert result.worst_param in result.errors and "passed" in repr(result)


def test_step_cannot_be_gradient_checked():
    model = Sequential([Dense(3, 2, "step"), Dense(2, 1, "sigmoid")])
    with pytest.raises(fastnn.NotDifferentiable, match="layer 0.*'step'"):
        fastnn.gradcheck(model, X, OUTPUTS[0][3])


class _SteeperSigmoid(activations.Sigmoid):
    """A user's activation that keeps the built-in's name: sigmoid(2z)."""

    def forward(self, xp, z):
        return super().forward(xp, 2.0 * z)

    def derivative(self, xp, z, a):
        return 2.0 * a * (1.0 - a)


class _WrongSigmoid(activations.Sigmoid):
    """The built-in sigmoid with a derivative 1% too large."""

    def derivative(self, xp, z, a):
        return 1.01 * a * (1.0 - a)


def test_a_subclass_keeping_a_builtin_name_runs_its_own_code(backend):
    """No backend replaces a user's subclass by its built-in kernel: its own forward
    runs, gradcheck passes, and a wrong derivative of its own is caught."""
    y = OUTPUTS[0][3]
    model = Sequential([Dense(3, 5, _SteeperSigmoid()), Dense(5, 1, "sigmoid")],
                       dtype="float64", seed=3)
    hidden = model.layers[0]
    W, b = (host(backend, p.value) for p in hidden.params)
    got = host(backend, hidden.forward(dev(backend, X)))
    np.testing.assert_allclose(got, 1.0 / (1.0 + np.exp(-2.0 * (X @ W + b))), rtol=1e-12)
    result = fastnn.gradcheck(model, X, y)
    assert result.passed, result
    wrong = Sequential([Dense(3, 5, _WrongSigmoid()), Dense(5, 1, "sigmoid")], seed=3)
    result = fastnn.gradcheck(wrong, X, y)
    assert not result.passed and result.worst_param.startswith("layer 0"), result
    trained = []  # fit runs its code too (no fused epoch takes it): as on NumPy
    for name in (backend, "numpy"):
        model = Sequential([Dense(3, 5, _SteeperSigmoid()), Dense(5, 1, "sigmoid")],
                           dtype="float64", seed=3, backend=name)
        model.fit(X, y, epochs=5, lr=0.5)
        trained.append([host(model.backend, p.value) for p in model.parameters()])
    for ours, ref in zip(*trained):
        np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-12)
