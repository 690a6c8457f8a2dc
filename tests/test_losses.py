"""Losses and metrics: values against float64 formulas, dZ against central differences,
stability at extreme logits, and which output activation each loss accepts."""

import numpy as np
import pytest
from conftest import central_difference, dev, host

from fastnn import activations, losses, metrics

RNG = np.random.default_rng(3)
Z = RNG.normal(size=(6, 3)) * 2
Y_LABELS = np.array([0, 2, 1, 1, 0, 2])
Y_BIN = (RNG.random((6, 3)) > 0.5).astype(float)
Y_REG = RNG.normal(size=(6, 3))


def naive_bce(z, y):
    p = 1.0 / (1.0 + np.exp(-z))
    return -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))


def naive_cce(z, labels):
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    return -np.mean(np.log(p[np.arange(len(labels)), labels]))


def naive_regression(name, a, y, delta=1.0):
    r = a - y
    if name == "mse":
        return np.mean(r**2)
    if name == "mae":
        return np.mean(np.abs(r))
    return np.mean(np.where(np.abs(r) <= delta, 0.5 * r**2, delta * (np.abs(r) - 0.5 * delta)))


CASES = {
    # loss name: (output activation, targets to give, float64 reference loss of Z)
    "binary_crossentropy": ("sigmoid", Y_BIN, lambda z: naive_bce(z, Y_BIN)),
    "categorical_crossentropy": ("softmax", Y_LABELS, lambda z: naive_cce(z, Y_LABELS)),
    "mse": ("identity", Y_REG, lambda z: naive_regression("mse", z, Y_REG)),
    "mae": ("tanh", Y_REG, lambda z: naive_regression("mae", np.tanh(z), Y_REG)),
    "huber": ("identity", Y_REG, lambda z: naive_regression("huber", z, Y_REG)),
}


def value_and_dz(backend, name, z, targets):
    loss = losses.get(name)
    act_name = CASES[name][0]
    act = activations.get(act_name)
    xp = backend.xp
    y = backend.asarray(np.asarray(targets))
    Y = loss.prepare_targets(backend, y, z.shape[1], backend.dtype("float64"))
    xz = dev(backend, z)
    value, dZ, db = loss.value_and_grad(backend, xz, act.forward(xp, xz), Y, act)
    if db is not None:
        np.testing.assert_allclose(host(backend, db), host(backend, dZ).sum(axis=0), rtol=1e-12)
    return float(value), host(backend, dZ)


@pytest.mark.parametrize("name", list(CASES))
def test_value_matches_formula(backend, name):
    _, targets, reference = CASES[name]
    value, _ = value_and_dz(backend, name, Z, targets)
    assert value == pytest.approx(reference(Z), rel=1e-12)


@pytest.mark.parametrize("name", list(CASES))
def test_dz_matches_central_difference(backend, name):
    _, targets, reference = CASES[name]
    z = Z + 0.01  # MAE's |r| has a kink; keep r away from 0
    _, dZ = value_and_dz(backend, name, z, targets)
    np.testing.assert_allclose(dZ, central_difference(reference, z), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ["binary_crossentropy", "categorical_crossentropy"])
def test_cross_entropy_from_extreme_logits(backend, name, dtype, no_float_warnings):
    z = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 5.0]])
    targets = np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]]) if name.startswith("binary") else [1, 0]
    loss, act = losses.get(name), activations.get(CASES[name][0])
    Y = loss.prepare_targets(backend, backend.asarray(np.asarray(targets)), 3, backend.dtype(dtype))
    xz = dev(backend, z, dtype)
    value, dZ, _ = loss.value_and_grad(backend, xz, act.forward(backend.xp, xz), Y, act)
    value = float(value)
    assert np.isfinite(value) and np.all(np.isfinite(host(backend, dZ)))
    # every wrong-signed logit of size 1e4 costs about 1e4; the right ones cost ~0
    expected = (4e4 + np.log(2) + 5 + np.log1p(np.exp(-5))) / 6 if name.startswith("binary") \
        else 2e4
    assert value == pytest.approx(expected, rel=1e-6)


def test_integer_and_one_hot_labels_agree(backend):
    a, _ = value_and_dz(backend, "categorical_crossentropy", Z, Y_LABELS)
    b, _ = value_and_dz(backend, "categorical_crossentropy", Z, np.eye(3)[Y_LABELS])
    assert a == pytest.approx(b, rel=1e-12)


def test_huber_delta_changes_the_transition(backend):
    loss = losses.get("huber", delta=0.5)
    r = dev(backend, [[0.25, 2.0]])
    value = float(loss.value_and_grad(
        backend, r, r, backend.xp.zeros_like(r), activations.get("identity"), need_grad=False)[0])
    assert value == pytest.approx((0.5 * 0.25**2 + 0.5 * (2.0 - 0.25)) / 2)


@pytest.mark.parametrize("name, activation, n_out, message", [
    ("binary_crossentropy", "relu", 1, "needs a sigmoid output layer"),
    ("binary_crossentropy", "softmax", 3, "or categorical_crossentropy"),
    ("categorical_crossentropy", "sigmoid", 3, "needs a softmax output layer"),
    ("categorical_crossentropy", "softmax", 1, "at least 2 output units"),
])
def test_loss_rejects_unfit_output(name, activation, n_out, message):
    with pytest.raises(ValueError, match=message):
        losses.get(name).check_output(activations.get(activation), n_out)


def test_regression_losses_fit_any_output():
    for name in ("mse", "mae", "huber"):
        for act in ("identity", "sigmoid", "tanh", "relu", "softmax"):
            losses.get(name).check_output(activations.get(act), 3)


def test_loss_lookup():
    assert losses.get("BCE").name == "binary_crossentropy"
    assert losses.get({"name": "huber", "delta": 2.0}).delta == 2.0
    with pytest.raises(ValueError, match="unknown loss 'hinge'.*mse"):
        losses.get("hinge")
    with pytest.raises(ValueError, match="delta must be > 0"):
        losses.get("huber", delta=0)


def test_metrics_on_host():
    assert metrics.accuracy([0, 1, 1, 0], [0, 1, 0, 0]) == 0.75
    assert metrics.rmse([0.0, 0.0], [3.0, 4.0]) == pytest.approx(np.sqrt(12.5))
    with pytest.raises(ValueError, match="same non-zero size"):
        metrics.accuracy([0, 1], [0, 1, 1])
