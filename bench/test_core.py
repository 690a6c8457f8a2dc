"""Benchmarks of the NumPy reference backend's hot paths (pytest-benchmark).

Run with ``pytest bench --benchmark-enable``; the default test run passes
``--benchmark-disable`` so each workload executes once and its result is checked.
The full side-by-side harness across backends builds on these workloads.
"""

import numpy as np
import pytest

import fastnn
from fastnn import Dense, Sequential, activations, datasets, initializers


@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh"])
def test_activation_forward_4096x1024(benchmark, name):
    backend = fastnn.get_backend()
    host = np.random.default_rng(0).normal(size=(4096, 1024))
    z = backend.asarray(host, backend.dtype("float32"))
    act = activations.get(name)
    out = benchmark(act.forward, backend.xp, z)
    assert out.shape == z.shape and out.dtype == z.dtype
    assert float(out.min()) >= (-1.0 if name == "tanh" else 0.0) and float(out.max()) <= (
        float(z.max()) if name == "relu" else 1.0)


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "sigmoid", "tanh"])
def test_activation_backward_with_bias_grad_4096x1024(benchmark, name):
    backend = fastnn.get_backend()
    rng = np.random.default_rng(0)
    f32 = backend.dtype("float32")
    z = backend.asarray(rng.normal(size=(4096, 1024)), f32)
    dA = backend.asarray(rng.normal(size=(4096, 1024)), f32)
    act = activations.get(name)
    a = act.forward(backend.xp, z)
    dZ, db = benchmark(backend.ops.activation_backward, dA, z, a, act)
    assert dZ.shape == z.shape and db.shape == (1024,)
    np.testing.assert_allclose(backend.to_numpy(db), backend.to_numpy(dZ).sum(axis=0),
                               rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("batch", [128, 1024])
def test_mlp_784_256_256_10_train_step(benchmark, batch):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(batch, 784)).astype(np.float32)
    y = rng.integers(0, 10, batch)
    model = Sequential([Dense(784, 256, "relu"), Dense(256, 256, "relu"),
                        Dense(256, 10, "softmax")], seed=0)
    Xd, Y = model.prepare(X, y)
    opt = fastnn.SGD(lr=0.01)
    params = model.parameters()

    def step():
        loss, _ = model.compute_gradients(Xd, Y)
        opt.step(params, model.backend)
        return loss

    first = float(model.compute_gradients(Xd, Y)[0])
    benchmark(step)
    assert np.isfinite(first) and abs(first - np.log(10)) < 1.0  # near chance at the start
    assert float(model.compute_gradients(Xd, Y)[0]) < first  # the steps reduced the loss


def test_planar_2_4_1_full_batch_iterations(benchmark):
    X, y = datasets.planar()

    def train():
        model = fastnn.from_layer_dims([2, 4, 1], "tanh", "sigmoid",
                                       init=initializers.normal(0.01), seed=2)
        model.fit(X, y, epochs=1000, lr=1.2)
        return model

    model = benchmark.pedantic(train, rounds=3, iterations=1)
    assert model.evaluate(X, y)["accuracy"] > 0.8
