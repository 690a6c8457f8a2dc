"""Dense and Dropout against hand-written formulas; initializers and seeding."""

import numpy as np
import pytest
from conftest import host

import fastnn
from fastnn import initializers
from fastnn.layers import Dense, Dropout

RNG = np.random.default_rng(5)
X = RNG.normal(size=(7, 4))


def built(layer, backend, dtype="float64", seed=0):
    layer.build(backend, backend.dtype(dtype), np.random.default_rng(seed))
    return layer


def test_dense_forward_and_backward_match_formulas(backend):
    layer = built(Dense(4, 3, activation="tanh", init="xavier"), backend)
    layer.b.value[...] = backend.asarray(np.array([0.1, -0.2, 0.3]), backend.dtype("float64"))
    W, b = host(backend, layer.W.value), host(backend, layer.b.value)
    x = backend.asarray(X, backend.dtype("float64"))
    A = host(backend, layer.forward(x, training=True))
    np.testing.assert_allclose(A, np.tanh(X @ W + b), rtol=1e-12)
    dA = RNG.normal(size=A.shape)
    dX = host(backend, layer.backward(backend.asarray(dA, backend.dtype("float64"))))
    dZ = dA * (1 - A**2)
    np.testing.assert_allclose(host(backend, layer.W.grad), X.T @ dZ, rtol=1e-12)
    np.testing.assert_allclose(host(backend, layer.b.grad), dZ.sum(axis=0), rtol=1e-12)
    np.testing.assert_allclose(dX, dZ @ W.T, rtol=1e-12)


def test_first_layer_skips_the_input_gradient(backend):
    model = fastnn.Sequential([Dense(4, 3, "relu"), Dense(3, 1, "sigmoid")], seed=0)
    first = model.layers[0]
    assert first.needs_input_grad is False and model.layers[1].needs_input_grad is True
    x = backend.asarray(X, model.dtype)
    model.compute_gradients(x, backend.asarray(np.ones((7, 1)), model.dtype))
    assert first.W.grad is not None and first.W.grad.shape == (4, 3)


def test_dropout_train_and_eval_modes(backend):
    layer = built(Dropout(0.25), backend)
    x = backend.asarray(np.ones((400, 50)), backend.dtype("float32"))
    assert layer.forward(x, training=False) is x
    out = host(backend, layer.forward(x, training=True))
    kept = out != 0
    assert 0.70 < kept.mean() < 0.80  # 20,000 draws: the keep rate is 0.75 +- 0.01
    np.testing.assert_allclose(out[kept], 1 / 0.75, rtol=1e-6)
    grad = host(backend, layer.backward(x))
    np.testing.assert_array_equal(grad, out)  # the same mask, the same scale
    other = host(backend, layer.forward(x, training=True))
    assert not np.array_equal(other, out)  # a new mask each training step


def test_dropout_zero_is_identity_and_bad_p_is_rejected(backend):
    layer = built(Dropout(0.0), backend)
    x = backend.asarray(X, backend.dtype("float64"))
    assert layer.forward(x, training=True) is x
    with pytest.raises(ValueError, match=r"Dropout p must be in \[0.0, 1.0\)"):
        Dropout(1.0)


def test_same_seed_same_weights_on_every_backend(backend):
    reference = fastnn.from_layer_dims([3, 5, 2], seed=42, backend="numpy")
    model = fastnn.from_layer_dims([3, 5, 2], seed=42)
    for p, q in zip(model.parameters(), reference.parameters()):
        np.testing.assert_array_equal(host(backend, p.value), q.value)
    other = fastnn.from_layer_dims([3, 5, 2], seed=43)
    assert not np.array_equal(host(backend, other.parameters()[0].value),
                              reference.parameters()[0].value)


@pytest.mark.parametrize("init, activation, std", [
    (initializers.normal(0.01), "tanh", 0.01),
    ("he", "relu", np.sqrt(2 / 400)),
    ("xavier", "tanh", np.sqrt(2 / (400 + 300))),
    ("auto", "relu", np.sqrt(2 / 400)),
    ("auto", "sigmoid", np.sqrt(2 / (400 + 300))),
])
def test_initializer_scales(init, activation, std):
    layer = built(Dense(400, 300, activation, init=init), fastnn.get_backend())
    W = layer.W.value
    assert W.dtype == np.float64 and abs(W.mean()) < 0.01 * std * 10
    assert W.std() == pytest.approx(std, rel=0.02)  # 120,000 draws
    assert not np.any(layer.b.value)


def test_unknown_initializer():
    with pytest.raises(ValueError, match="unknown initializer 'uniformish'.*he.*xavier"):
        Dense(2, 2, init="uniformish")
