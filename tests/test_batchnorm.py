"""BatchNorm: forward and running statistics against a NumPy reference, train versus
eval behaviour, backprop against central differences, and its place in models."""

import numpy as np
import pytest
from conftest import central_difference, dev, host

import fastnn
from fastnn import BatchNorm, Dense, Dropout, Sequential, datasets

RNG = np.random.default_rng(11)
X = RNG.normal(size=(12, 3)) * [1.0, 5.0, 0.1] + [0.0, -3.0, 2.0]
GAMMA, BETA = RNG.normal(size=3), RNG.normal(size=3)


def built_layer(backend, momentum=0.9, eps=1e-5, dtype="float64"):
    layer = BatchNorm(3, momentum=momentum, eps=eps)
    layer.build(backend, backend.dtype(dtype), np.random.default_rng(0))
    layer.gamma.value = dev(backend, GAMMA, dtype)
    layer.beta.value = dev(backend, BETA, dtype)
    return layer


def reference(X, mean, var, eps=1e-5):
    return (X - mean) / np.sqrt(var + eps) * GAMMA + BETA


def test_training_forward_and_running_statistics(backend):
    layer = built_layer(backend, momentum=0.8)
    out = host(backend, layer.forward(dev(backend, X), training=True))
    mean, var = X.mean(axis=0), X.var(axis=0)  # biased variance, as in training
    np.testing.assert_allclose(out, reference(X, mean, var), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out.mean(axis=0), BETA, atol=1e-12)  # normalized, then shifted
    np.testing.assert_allclose(host(backend, layer.running_mean.value), 0.2 * mean, rtol=1e-12)
    np.testing.assert_allclose(host(backend, layer.running_var.value), 0.8 + 0.2 * var,
                               rtol=1e-12)
    layer.forward(dev(backend, X[:6]), training=True)
    np.testing.assert_allclose(host(backend, layer.running_mean.value),
                               0.8 * 0.2 * mean + 0.2 * X[:6].mean(axis=0), rtol=1e-12)


def test_evaluation_uses_the_running_statistics(backend):
    layer = built_layer(backend)
    for rows in (slice(0, 6), slice(6, 12), slice(0, 12)):
        layer.forward(dev(backend, X[rows]), training=True)
    running_mean = host(backend, layer.running_mean.value).copy()
    running_var = host(backend, layer.running_var.value).copy()
    out = host(backend, layer.forward(dev(backend, X), training=False))
    np.testing.assert_allclose(out, reference(X, running_mean, running_var), rtol=1e-12)
    # evaluation leaves the statistics alone, and a row's output ignores the other rows
    np.testing.assert_array_equal(host(backend, layer.running_mean.value), running_mean)
    alone = host(backend, layer.forward(dev(backend, X[:1]), training=False))
    np.testing.assert_allclose(alone, out[:1], rtol=1e-12)
    in_training = host(backend, layer.forward(dev(backend, X[:4]), training=True))
    assert not np.allclose(in_training[0], out[0])  # training uses the batch's statistics


def test_frozen_layer_keeps_its_running_statistics(backend):
    layer = built_layer(backend)
    layer.frozen = True
    first = host(backend, layer.forward(dev(backend, X), training=True))
    again = host(backend, layer.forward(dev(backend, X), training=True))
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(host(backend, layer.running_mean.value), np.zeros(3))
    np.testing.assert_array_equal(host(backend, layer.running_var.value), np.ones(3))


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_backward_matches_central_differences(backend, training):
    """d/dX, d/dgamma, d/dbeta of sum(out * G), in both modes."""
    G = RNG.normal(size=X.shape)
    layer = built_layer(backend)
    layer.forward(dev(backend, X[:5]), training=True)  # non-trivial running statistics
    layer.frozen = True
    layer.forward(dev(backend, X), training=training)
    dX = host(backend, layer.backward(dev(backend, G)))
    grads = {"gamma": host(backend, layer.gamma.grad), "beta": host(backend, layer.beta.grad)}

    def objective(X_=X, gamma=GAMMA, beta=BETA):
        layer.gamma.value, layer.beta.value = dev(backend, gamma), dev(backend, beta)
        out = host(backend, layer.forward(dev(backend, X_), training=training))
        layer.gamma.value, layer.beta.value = dev(backend, GAMMA), dev(backend, BETA)
        return float(np.sum(out * G))

    np.testing.assert_allclose(dX, central_difference(objective, X.copy()), rtol=1e-6,
                               atol=1e-8)
    np.testing.assert_allclose(grads["gamma"], central_difference(
        lambda g: objective(gamma=g), GAMMA.copy()), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(grads["beta"], central_difference(
        lambda b: objective(beta=b), BETA.copy()), rtol=1e-6, atol=1e-8)


STACKS = {  # (a BatchNorm right after an identity Dense would zero that bias's gradient)
    "between": lambda: [Dense(3, 5, "tanh"), BatchNorm(5), Dense(5, 2, "softmax")],
    "first-and-dropout": lambda: [BatchNorm(3, momentum=0.5), Dense(3, 5, "relu"), BatchNorm(5),
                                  Dropout(0.3), Dense(5, 2, "softmax")],
}


@pytest.mark.parametrize("stack", STACKS)
def test_gradcheck_in_training_mode(backend, stack):
    model = Sequential(STACKS[stack](), seed=2)
    y = (X[:, 0] > 0).astype(int)
    buffers = [host(backend, b.value).copy() for b in model.buffers()]
    result = fastnn.gradcheck(model, X, y)
    assert result.passed, result
    assert {name for name in result.errors if "gamma" in name or "beta" in name}
    for before, b in zip(buffers, model.buffers()):  # the model itself is untouched
        np.testing.assert_array_equal(before, host(backend, b.value))


def test_model_with_batchnorm_trains_and_moves(backend, strict):
    X, y = datasets.blobs(300, n_classes=3, std=1.5, seed=0)
    X = X * 50.0 + 200.0  # badly scaled inputs: the first BatchNorm fixes them
    model = Sequential([BatchNorm(2), Dense(2, 16, "relu"), BatchNorm(16),
                        Dense(16, 3, "softmax")], seed=0)
    history = model.fit(X, y, epochs=15, batch_size=30, optimizer="adam", lr=0.01, seed=0)
    assert history["accuracy"][-1] > 0.9 and model.evaluate(X, y)["accuracy"] > 0.9
    gamma = host(backend, model.layers[0].gamma.value)
    assert not np.allclose(gamma, 1.0)  # the first layer is trained too
    mean = host(backend, model.layers[0].running_mean.value)
    # an EMA (momentum 0.9) of shuffled batch means of 30: its standard error is
    # std / sqrt(30) * sqrt(0.1 / 1.9); allow three of them
    spread = X.std(axis=0) / np.sqrt(30) * np.sqrt(0.1 / 1.9)
    assert np.all(np.abs(mean - X.mean(axis=0)) <= 3 * spread)
    proba = model.predict_proba(X)
    model.to(strict if backend.name != "strict" else "numpy")
    assert all(model.backend.is_array(b.value) for b in model.buffers())
    np.testing.assert_allclose(model.predict_proba(X), proba, rtol=1e-6)


def test_no_weight_decay_on_gamma_and_beta():
    X, y = datasets.moons(64, seed=0)

    def one_step(weight_decay):
        model = Sequential([Dense(2, 4, "tanh"), BatchNorm(4), Dense(4, 1, "sigmoid")], seed=0)
        model.fit(X, y, epochs=1, optimizer=fastnn.SGD(lr=0.5, weight_decay=weight_decay))
        return {f"{i}{p.name}": p.value.copy() for i, layer in enumerate(model.layers)
                for p in layer.params}

    plain, decayed = one_step(0.0), one_step(0.3)
    assert not np.array_equal(plain["0W"], decayed["0W"])
    np.testing.assert_array_equal(plain["1gamma"], decayed["1gamma"])
    np.testing.assert_array_equal(plain["1beta"], decayed["1beta"])


def test_bad_batchnorm_settings():
    with pytest.raises(ValueError, match="n_features must be a positive integer"):
        BatchNorm(0)
    with pytest.raises(ValueError, match=r"momentum must be in \[0.0, 1.0\)"):
        BatchNorm(3, momentum=1.0)
    with pytest.raises(ValueError, match="eps must be a positive number"):
        BatchNorm(3, eps=0)
    with pytest.raises(ValueError, match=r"layer 1 \(BatchNorm\(5.*takes 5 inputs .* gives 4"):
        Sequential([Dense(2, 4), BatchNorm(5), Dense(5, 1)])


def test_gradcheck_catches_a_batchnorm_backward_that_ignores_batch_statistics(monkeypatch):
    """Treating the batch statistics as constants (the evaluation formula) in training
    gives a wrong input gradient, and gradcheck says so."""
    model = Sequential(STACKS["between"](), seed=2)
    y = (X[:, 0] > 0).astype(int)
    correct = BatchNorm.backward

    def as_if_constant(self, dA):
        self.cache = (*self.cache[:2], False, *self.cache[3:])
        return correct(self, dA)

    monkeypatch.setattr(BatchNorm, "backward", as_if_constant)
    result = fastnn.gradcheck(model, X, y)
    assert not result.passed and result.worst_param.startswith("layer 0")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_statistics_never_share_memory_with_gamma_and_beta(backend, dtype):
    """Updating the running statistics must not touch the parameters (NumPy's asarray
    keeps a float64 array without copying, so each needs its own)."""
    model = Sequential([Dense(3, 4, "tanh"), BatchNorm(4), Dense(4, 1)], dtype=dtype, seed=0)
    model.forward(model.prepare_inputs(X), training=True)
    bn = model.layers[1]
    assert not np.allclose(host(backend, bn.running_mean.value), 0.0)
    np.testing.assert_array_equal(host(backend, bn.gamma.value), np.ones(4))
    np.testing.assert_array_equal(host(backend, bn.beta.value), np.zeros(4))
