"""Each optimizer's update against the textbook formula, written out here in NumPy."""

import numpy as np
import pytest
from conftest import host

import fastnn
from fastnn import optimizers
from fastnn.layers import Parameter

RNG = np.random.default_rng(11)
P0 = RNG.normal(size=(3, 4))
GRADS = [RNG.normal(size=(3, 4)) for _ in range(3)]


def reference(name, lr, wd, **kw):
    """Three steps of ``name`` on P0 with GRADS, in plain float64 NumPy."""
    p, s1, s2 = P0.copy(), np.zeros_like(P0), np.zeros_like(P0)
    for t, g in enumerate(GRADS, start=1):
        g = g + wd * p
        if name == "sgd":
            p = p - lr * g
        elif name in ("momentum", "nesterov"):
            mu = kw.get("momentum", 0.9)
            s1 = mu * s1 - lr * g
            p = p + (s1 if name == "momentum" else mu * s1 - lr * g)
        elif name == "adagrad":
            s1 = s1 + g * g
            p = p - lr * g / (np.sqrt(s1) + 1e-7)
        elif name == "rmsprop":
            s1 = 0.9 * s1 + 0.1 * g * g
            p = p - lr * g / (np.sqrt(s1) + 1e-7)
        elif name == "adam":
            s1 = 0.9 * s1 + 0.1 * g
            s2 = 0.999 * s2 + 0.001 * g * g
            p = p - lr * (s1 / (1 - 0.9**t)) / (np.sqrt(s2 / (1 - 0.999**t)) + 1e-8)
    return p


@pytest.mark.parametrize("wd", [0.0, 0.1])
@pytest.mark.parametrize("name", list(optimizers.TABLE))
def test_three_steps_match_formula(backend, name, wd):
    opt = optimizers.get(name, lr=0.05, weight_decay=wd)
    f64 = backend.dtype("float64")
    weight = Parameter("W", backend.asarray(P0.copy(), f64), decay=True)
    bias = Parameter("b", backend.asarray(P0.copy(), f64), decay=False)
    for g in GRADS:
        weight.grad = bias.grad = backend.asarray(g, f64)
        opt.step([weight, bias], backend)
    np.testing.assert_allclose(host(backend, weight.value), reference(name, 0.05, wd), rtol=1e-12)
    # weight decay applies to weights only, never to biases
    np.testing.assert_allclose(host(backend, bias.value), reference(name, 0.05, 0.0), rtol=1e-12)


def test_default_learning_rates_and_settings():
    assert optimizers.get("sgd").lr == 0.01 and optimizers.get("adam").lr == 0.001
    assert optimizers.get("momentum", momentum=0.5).momentum == 0.5


@pytest.mark.parametrize("lr", [0, -0.1, float("nan")])
def test_non_positive_lr_is_rejected(lr):
    with pytest.raises(ValueError, match="lr must be a positive number"):
        optimizers.get("adam", lr=lr)


def test_bad_optimizer_settings():
    with pytest.raises(ValueError, match="unknown optimizer 'adamw'.*adam"):
        optimizers.get("adamw")
    with pytest.raises(ValueError, match=r"momentum must be in \[0.0, 1.0\)"):
        optimizers.get("nesterov", momentum=1.2)
    with pytest.raises(ValueError, match="go to the optimizer's constructor"):
        optimizers.get(fastnn.Adam(), lr=0.1)


def test_optimizer_refuses_a_different_model(backend):
    f64 = backend.dtype("float64")
    p = Parameter("W", backend.asarray(P0.copy(), f64), decay=True)
    p.grad = backend.asarray(GRADS[0], f64)
    opt = fastnn.Adam()
    opt.step([p], backend)
    with pytest.raises(ValueError, match="holds state for 1 parameters but the model has 2"):
        opt.step([p, p], backend)
