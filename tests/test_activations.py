"""Activations: forward against float64 formulas, derivatives against central
differences, stability at |z| up to 1e4, clear errors, and the registry: every spec
complete, and the docs' list of activations the registry's."""

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import central_difference, dev, host

from fastnn import activations
from fastnn.errors import NotDifferentiable

Z = np.linspace(-6.0, 6.0, 41).reshape(-1, 1) + np.array([[0.0, 0.37, -0.81]])

# each activation's textbook float64 formula, from its spec (written apart from forward)
REFERENCE = {cls.name: cls().reference for cls in activations.SPECS}
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


@pytest.mark.parametrize("name", [cls.name for cls in activations.SPECS if "alpha" in vars(cls())])
def test_a_bad_alpha_is_refused_naming_the_valid_range(name):
    with pytest.raises(ValueError, match=rf"{name} alpha must be in .*got -1.0"):
        activations.get(name, alpha=-1.0)


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


@pytest.mark.parametrize("name", [n for n in TRAINABLE if activations.TABLE[n].elementwise])
def test_reference_derivative_matches_central_difference(name):
    """The textbook derivative the benchmarks check kernels with is itself right."""
    act, z, h = activations.get(name), Z + 0.013, 1e-6
    numeric = (act.reference(z + h) - act.reference(z - h)) / (2 * h)  # elementwise
    np.testing.assert_allclose(act.reference_derivative(z), numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("cls", activations.SPECS, ids=lambda cls: cls.name)
def test_every_spec_is_complete(cls):
    """What the kernels, the tests and the benchmarks read from a spec is there: the
    kernels' scalar functions and C expressions for an elementwise one (a gradient
    if it is differentiable), and its references and PyTorch equivalent."""
    act = cls()
    assert activations.get(cls.name) == act and type(act).__name__ in activations.__all__
    assert act.initializer in ("he", "xavier")
    z = Z.copy()
    assert act.reference(z).shape == z.shape
    assert type(act).torch is not activations.Activation.torch
    if cls.differentiable:
        assert act.reference_backward(np.ones_like(z), z).shape == z.shape
        assert type(act).torch_backward is not activations.Activation.torch_backward
    if cls.elementwise:
        forward, grad = act.numba()
        assert callable(forward) and (grad is not None) == cls.differentiable
        assert cls.cuda_forward and bool(cls.cuda_backward) == cls.differentiable


def test_aliases_and_names_are_unique_and_codes_follow_the_registry():
    from fastnn.kernels import activation_codes

    names = [cls.name for cls in activations.SPECS]
    assert len(set(names)) == len(names) and not set(activations.ALIASES) & set(names)
    assert list(activation_codes.CODES) == names
    assert list(activation_codes.CODES.values()) == list(range(len(names)))


@pytest.mark.parametrize("page", ["README.md", "docs/guide/training.md"])
def test_the_docs_list_every_activation_of_the_registry(page):
    text = (Path(__file__).resolve().parent.parent / page).read_text()
    row = next(line for line in text.splitlines() if line.startswith("| activations |"))
    listed = {span for span in re.findall(r"`([^`]+)`", row) if re.fullmatch(r"[a-z_]+", span)}
    assert listed == set(activations.TABLE), f"{page}'s activations row: {sorted(listed)}"
