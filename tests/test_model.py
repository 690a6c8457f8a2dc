"""Sequential end to end: fit/predict/evaluate, histories, dtypes, reproducibility,
builders, and moving a model with its optimizer state between backends."""

import numpy as np
import pytest
from conftest import host

import fastnn
from fastnn import Dense, Dropout, Sequential, datasets


def blobs3():
    return datasets.blobs(300, n_classes=3, std=1.5, seed=0)


def test_fit_returns_history_and_learns(backend):
    X, y = blobs3()
    model = fastnn.from_layer_dims([2, 16, 3], "relu", "softmax", seed=0)
    assert model.loss.name == "categorical_crossentropy"
    history = model.fit(X, y, epochs=30, batch_size=32, optimizer="adam", lr=0.01, seed=1,
                        validation_data=(X[:50], y[:50]))
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 30 for v in history.values())
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert history["accuracy"][-1] > 0.9 and history["val_accuracy"][-1] > 0.9
    result = model.evaluate(X, y)
    assert result["accuracy"] == pytest.approx(np.mean(model.predict(X) == y))
    proba = model.predict_proba(X)
    assert isinstance(proba, np.ndarray) and proba.shape == (300, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)


def test_history_loss_is_the_mean_batch_loss(backend):
    """Full batch: the logged loss is the loss before each update."""
    X, y = datasets.xor(64, seed=0)
    model = fastnn.from_layer_dims([2, 8, 1], "tanh", "sigmoid", seed=0)
    before = model.evaluate(X, y)["loss"]
    history = model.fit(X, y, epochs=3, lr=0.5)
    assert history["loss"][0] == pytest.approx(before, rel=1e-5)
    assert history["loss"][1] == pytest.approx(history["loss"][0], rel=0.5)


def test_predict_shapes_by_task(backend):
    X, y = datasets.moons(40, seed=0)
    binary = fastnn.from_layer_dims([2, 4, 1], seed=0)
    assert binary.predict(X).shape == (40,) and set(np.unique(binary.predict(X))) <= {0, 1}
    reg = fastnn.from_layer_dims([2, 4, 2], "tanh", "identity", seed=0)
    assert reg.loss.name == "mse" and reg.predict(X).shape == (40, 2)
    history = reg.fit(X, np.c_[X[:, 0], y], epochs=5, lr=0.05)
    assert set(history) == {"loss", "rmse"}
    assert history["rmse"][0] == pytest.approx(np.sqrt(history["loss"][0]), rel=1e-5)


def test_float64_end_to_end(backend):
    X, y = datasets.moons(50, seed=0)
    model = fastnn.from_layer_dims([2, 5, 1], seed=0, dtype="float64")
    model.fit(X, y, epochs=2)
    assert all(p.value.dtype == backend.dtype("float64") for p in model.parameters())
    assert model.predict_proba(X).dtype == np.float64
    model32 = fastnn.from_layer_dims([2, 5, 1], seed=0)
    model32.fit(X, y, epochs=2)
    assert all(p.value.dtype == backend.dtype("float32") for p in model32.parameters())
    assert model32.predict_proba(X).dtype == np.float32


def test_same_seed_same_training(backend):
    X, y = blobs3()

    def run():
        layers = [Dense(2, 16, "relu"), Dropout(0.2), Dense(16, 3, "softmax")]
        model = Sequential(layers, seed=5)
        model.fit(X, y, epochs=3, batch_size=50, optimizer="momentum", lr=0.05, seed=9)
        return [host(backend, p.value) for p in model.parameters()]

    for a, b in zip(run(), run()):
        np.testing.assert_array_equal(a, b)


def test_matches_the_numpy_reference(backend):
    """100 mini-batch steps with shuffling and dropout give the same parameters as NumPy."""
    X, y = blobs3()

    def train(on):
        layers = [Dense(2, 8, "tanh"), Dropout(0.1), Dense(8, 3, "softmax")]
        model = Sequential(layers, seed=1, dtype="float64", backend=on)
        model.fit(X, y, epochs=10, batch_size=30, optimizer="adam", lr=0.01, seed=2)
        return [host(model.backend, p.value) for p in model.parameters()]

    for a, b in zip(train(backend), train("numpy")):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_to_moves_parameters_and_optimizer_state(backend, strict):
    """Train on one backend, move, continue: identical to staying put."""
    X, y = blobs3()

    def model():
        return fastnn.from_layer_dims([2, 6, 3], "relu", "softmax", seed=3, dtype="float64")

    stay = model()
    stay.fit(X, y, epochs=4, batch_size=100, optimizer="adam", lr=0.01, seed=0)
    stay.fit(X, y, epochs=4, batch_size=100, seed=0)
    move = model()
    move.fit(X, y, epochs=4, batch_size=100, optimizer="adam", lr=0.01, seed=0)
    target = strict if backend.name != "strict" else "numpy"
    assert move.to(target) is move and move.backend.name == (
        "strict" if target is strict else "numpy")
    assert move.optimizer.t == 12 and all(  # 4 epochs of 3 steps
        move.backend.is_array(a) for arrays in move.optimizer.state for a in arrays)
    move.fit(X, y, epochs=4, batch_size=100, seed=0)
    move.to(backend)
    for a, b in zip(move.parameters(), stay.parameters()):
        np.testing.assert_allclose(host(backend, a.value), host(backend, b.value), rtol=1e-12)


def test_fit_keeps_the_optimizer_and_can_change_lr():
    X, y = datasets.moons(50, seed=0)
    model = fastnn.from_layer_dims([2, 4, 1], seed=0)
    model.fit(X, y, epochs=2, optimizer="adam", lr=0.01)
    opt = model.optimizer
    model.fit(X, y, epochs=2)
    assert model.optimizer is opt and opt.t == 4
    model.fit(X, y, epochs=1, lr=0.001)
    assert model.optimizer is opt and opt.lr == 0.001
    model.fit(X, y, epochs=1, optimizer="sgd")
    assert isinstance(model.optimizer, fastnn.SGD)


def test_verbose_prints_every_kth_epoch(capsys):
    X, y = datasets.moons(50, seed=0)
    model = fastnn.from_layer_dims([2, 4, 1], seed=0)
    model.fit(X, y, epochs=5, verbose=2, validation_data=(X, y))
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(" - ")[0] for line in lines] == ["epoch 2/5", "epoch 4/5", "epoch 5/5"]
    assert "val_accuracy" in lines[-1]
    model.fit(X, y, epochs=3)
    assert capsys.readouterr().out == ""


def test_builders_match_each_other():
    arch = [{"input_dim": 2, "output_dim": 4, "activation": "tanh"},
            {"input_dim": 4, "output_dim": 1, "activation": "sigmoid"}]
    a = fastnn.from_architecture(arch, seed=0)
    b = fastnn.from_layer_dims([2, 4, 1], "tanh", "sigmoid", seed=0)
    assert repr(a) == repr(b)
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(p.value, q.value)


@pytest.mark.parametrize("arch, message", [
    ([], "non-empty list"),
    ([{"input_dim": 2, "output_dim": 4}, {"input_dim": 3, "output_dim": 1}],
     r"nn_architecture\[1\] has input_dim 3 but the layer before has output_dim 4"),
    ([{"input_dim": 2, "units": 4}], "needs 'input_dim' and 'output_dim'"),
    ([{"input_dim": 2, "output_dim": 1, "activation": "sigmoidal"}], "unknown activation"),
])
def test_bad_architectures(arch, message):
    with pytest.raises(ValueError, match=message):
        fastnn.from_architecture(arch)


def test_bad_layer_stacks():
    with pytest.raises(ValueError, match="at least one layer"):
        Sequential([])
    with pytest.raises(ValueError, match="last layer must be a Dense"):
        Sequential([Dense(2, 3), Dropout(0.5)])
    with pytest.raises(ValueError, match="layer 1 .* takes 4 inputs but the layer before it gives"):
        Sequential([Dense(2, 3), Dense(4, 1)])
    with pytest.raises(TypeError, match="layer 0 is a str"):
        Sequential(["dense"])
    with pytest.raises(ValueError, match="layer_dims must list at least"):
        fastnn.from_layer_dims([3])
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float64'"):
        Sequential([Dense(2, 1)], dtype="float16")


def test_step_perceptron_runs_forward_but_cannot_train():
    """Tutorial 003's AND gate: a step unit with hand-set weights."""
    model = Sequential([Dense(2, 1, "step")])
    model.layers[0].W.value[...] = [[0.5], [0.5]]
    model.layers[0].b.value[...] = -0.7
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]])
    np.testing.assert_array_equal(model.predict_proba(X)[:, 0], [0, 0, 0, 1])
    with pytest.raises(fastnn.NotDifferentiable, match="cannot be trained"):
        model.fit(X, [0, 0, 0, 1])
