"""Activations: forward against float64 formulas, derivatives against central
differences, stability at |z| up to 1e4, and clear errors."""

import numpy as np
import pytest
from conftest import central_difference, dev, host

from fastnn import activations
from fastnn.errors import NotDifferentiable

Z = np.linspace(-6.0, 6.0, 41).reshape(-1, 1) + np.array([[0.0, 0.37, -0.81]])

REFERENCE = {
    "identity": lambda z: z,
    "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)),
    "tanh": np.tanh,
    "relu": lambda z: np.maximum(z, 0.0),
    "leaky_relu": lambda z: np.where(z > 0, z, 0.01 * z),
    "softplus": lambda z: np.log1p(np.exp(z)),
    "softmax": lambda z: np.exp(z) / np.exp(z).sum(axis=1, keepdims=True),
    "step": lambda z: (z > 0).astype(float),
}
TRAINABLE = [name for name in REFERENCE if name != "step"]


@pytest.mark.parametrize("name", list(REFERENCE))
def test_forward_matches_formula(backend, name):
    act = activations.get(name)
    got = host(backend, act.forward(backend.xp, dev(backend, Z)))
    np.testing.assert_allclose(got, REFERENCE[name](Z), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("name", TRAINABLE)
def test_backward_matches_central_difference(backend, name):
    """backward(dA) is the vector-Jacobian product: check it against finite differences
    of sum(dA * f(z)) for a random dA, away from the ReLU kink."""
    act = activations.get(name)
    rng = np.random.default_rng(0)
    z = Z + 0.013  # keep off z == 0 exactly, where relu-type derivatives jump
    dA = rng.normal(size=z.shape)
    numeric = central_difference(lambda v: (REFERENCE[name](v) * dA).sum(), z)
    xz = dev(backend, z)
    got = act.backward(backend.xp, dev(backend, dA), xz, act.forward(backend.xp, xz))
    np.testing.assert_allclose(host(backend, got), numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(REFERENCE))
def test_extreme_inputs_stay_finite_without_warnings(backend, name, dtype, no_float_warnings):
    act = activations.get(name)
    z = np.array([[-1e4, -500.0, -30.0, 0.0, 30.0, 500.0, 1e4]])
    xz = dev(backend, z, dtype)
    a = act.forward(backend.xp, xz)
    out = host(backend, a)
    assert np.all(np.isfinite(out)), out
    if name != "step":
        grad = host(backend, act.backward(backend.xp, backend.xp.ones_like(xz), xz, a))
        assert np.all(np.isfinite(grad)), grad
    if name == "sigmoid":  # sigmoid(-1e4) is below the smallest normal float: ~0
        assert 0.0 <= out[0, 0] < 1e-37 and out[0, -1] == 1.0 and out[0, 3] == 0.5
        assert out[0, 2] == pytest.approx(1 / (1 + np.exp(30.0)), rel=1e-6)  # tail kept exact
    if name == "softplus":
        assert out[0, -1] == pytest.approx(1e4) and out[0, 0] == 0.0
    if name == "softmax":
        assert out[0, -1] == pytest.approx(1.0) and out.sum() == pytest.approx(1.0)
    if name == "tanh":
        assert out[0, 0] == -1.0 and out[0, -1] == 1.0


def test_step_has_no_gradient(backend):
    act = activations.get("step")
    z = dev(backend, Z)
    with pytest.raises(NotDifferentiable, match="no useful gradient"):
        act.backward(backend.xp, z, z, act.forward(backend.xp, z))


def test_leaky_relu_alpha(backend):
    act = activations.get("leaky_relu", alpha=0.2)
    got = host(backend, act.forward(backend.xp, dev(backend, [[-5.0, 5.0]])))
    np.testing.assert_allclose(got, [[-1.0, 5.0]])
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\)"):
        activations.get("leaky_relu", alpha=1.5)


def test_lookup_by_name_aliases_and_config():
    assert activations.get("Leaky-ReLU") == activations.LeakyReLU()
    assert activations.get("linear").name == "identity"
    act = activations.get({"name": "leaky_relu", "alpha": 0.3})
    assert act.alpha == 0.3 and activations.get(act.config()) == act


def test_unknown_activation_lists_valid_names():
    with pytest.raises(ValueError, match="unknown activation 'rleu'.*relu.*Did you mean 'relu'"):
        activations.get("rleu")
    with pytest.raises(TypeError, match="takes no parameters"):
        activations.get("relu", alpha=0.1)
