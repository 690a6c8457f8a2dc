"""BatchNorm2D: per-channel statistics over the batch and every pixel, against a NumPy
reference and PyTorch's BatchNorm2d, its gradients, its shape checks, and its place in
CNNs (training, checkpoints). Data-parallel runs: tests/test_distributed.py."""

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
    Flatten,
    GlobalAvgPool2D,
    MaxPool2D,
    Sequential,
    datasets,
)

RNG = np.random.default_rng(12)
# 5 images of 3 channels, 4x6 pixels, each channel with its own scale and offset
X = RNG.normal(size=(5, 3, 4, 6)) * np.array([1.0, 5.0, 0.1])[:, None, None] + 2.0
DA = RNG.normal(size=X.shape)
GAMMA, BETA = RNG.normal(size=3), RNG.normal(size=3)


def built_layer(backend, momentum=0.9, eps=1e-5, dtype="float64"):
    layer = BatchNorm2D(3, momentum=momentum, eps=eps)
    layer.build(backend, backend.dtype(dtype), np.random.default_rng(0))
    layer.gamma.value = dev(backend, GAMMA, dtype)
    layer.beta.value = dev(backend, BETA, dtype)
    return layer


def per_channel(v):
    return np.asarray(v)[:, None, None]


def reference(X, mean, var, eps=1e-5):
    return (X - per_channel(mean)) / np.sqrt(per_channel(var) + eps) * per_channel(GAMMA) \
        + per_channel(BETA)


def test_training_normalizes_each_channel_over_batch_and_pixels(backend):
    layer = built_layer(backend, momentum=0.8)
    out = host(backend, layer.forward(dev(backend, X), training=True))
    mean, var = X.mean(axis=(0, 2, 3)), X.var(axis=(0, 2, 3))  # biased, as in training
    np.testing.assert_allclose(out, reference(X, mean, var), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), BETA, atol=1e-12)
    np.testing.assert_allclose(out.std(axis=(0, 2, 3)), np.abs(GAMMA) * np.sqrt(var / (var + 1e-5)),
                               rtol=1e-10)
    np.testing.assert_allclose(host(backend, layer.running_mean.value), 0.2 * mean, rtol=1e-12)
    np.testing.assert_allclose(host(backend, layer.running_var.value), 0.8 + 0.2 * var,
                               rtol=1e-12)
    # evaluation: the running statistics, and an image's output ignores the others
    running = host(backend, layer.running_mean.value), host(backend, layer.running_var.value)
    evaluated = host(backend, layer.forward(dev(backend, X), training=False))
    np.testing.assert_allclose(evaluated, reference(X, *running), rtol=1e-12)
    alone = host(backend, layer.forward(dev(backend, X[2:3]), training=False))
    np.testing.assert_allclose(alone, evaluated[2:3], rtol=1e-12)
    np.testing.assert_array_equal(host(backend, layer.running_mean.value), running[0])


def test_backward_matches_pytorchs_batchnorm2d(backend):
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    layer = built_layer(backend, momentum=0.9)
    out = host(backend, layer.forward(dev(backend, X), training=True))
    dX = host(backend, layer.backward(dev(backend, DA)))
    theirs = torch.nn.BatchNorm2d(3, eps=1e-5, momentum=0.1).double()  # fastnn's 0.9
    with torch.no_grad():
        theirs.weight[:] = torch.tensor(GAMMA)
        theirs.bias[:] = torch.tensor(BETA)
    x = torch.tensor(X, requires_grad=True)
    y = theirs(x)
    y.backward(torch.tensor(DA))
    np.testing.assert_allclose(out, y.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dX, x.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(host(backend, layer.gamma.grad), theirs.weight.grad.numpy(),
                               rtol=1e-12)
    np.testing.assert_allclose(host(backend, layer.beta.grad), theirs.bias.grad.numpy(),
                               rtol=1e-12)
    np.testing.assert_allclose(host(backend, layer.running_mean.value),
                               theirs.running_mean.numpy(), rtol=1e-12)
    # the one difference, on purpose: the running variance takes the biased batch
    # variance (PyTorch: the unbiased one, n / (n - 1) times larger, n = N * H * W)
    n = X.shape[0] * X.shape[2] * X.shape[3]
    unbiased = (theirs.running_var.numpy() - 0.9) / 0.1
    np.testing.assert_allclose(host(backend, layer.running_var.value),
                               0.9 + 0.1 * unbiased * (n - 1) / n, rtol=1e-12)


def test_evaluation_backward_is_the_per_channel_scale(backend):
    layer = built_layer(backend)
    layer.forward(dev(backend, X), training=False)
    dX = host(backend, layer.backward(dev(backend, DA)))
    np.testing.assert_allclose(dX, DA * per_channel(GAMMA / np.sqrt(1.0 + 1e-5)), rtol=1e-12)


def gradcheck_model(backend, seed=1):
    """Smooth everywhere (tanh, average pooling): no kink for central differences to
    straddle."""
    return Sequential([Conv2D(2, 3, 3, padding=1, activation="tanh"), BatchNorm2D(3),
                       AvgPool2D(2), Conv2D(3, 2, 2, activation="tanh"),
                       BatchNorm2D(2, momentum=0.5),
                       GlobalAvgPool2D(), Dense(2, 3, "softmax")],
                      input_shape=(2, 6, 6), seed=seed, dtype="float64", backend=backend)


def test_gradcheck_in_training_mode(backend):
    images = RNG.normal(size=(6, 2, 6, 6)) * 3.0 + 1.0
    labels = np.arange(6) % 3
    model = gradcheck_model(backend)
    buffers = [host(backend, b.value).copy() for b in model.buffers()]
    result = fastnn.gradcheck(model, images, labels)
    assert result.passed, result
    assert {name for name in result.errors if "gamma" in name} >= {"layer 1 gamma",
                                                                    "layer 4 gamma"}
    for before, b in zip(buffers, model.buffers()):  # the model itself is untouched
        np.testing.assert_array_equal(before, host(backend, b.value))


def test_gradcheck_catches_a_backward_that_ignores_the_pixels(monkeypatch):
    """The batch statistics are over N * H * W numbers per channel: a backward that
    divides by N alone must fail the check."""
    images = RNG.normal(size=(6, 2, 6, 6))
    labels = np.arange(6) % 3
    correct = BatchNorm2D.backward

    def backward(self, dA):  # the forward is right; the backward counts N numbers only
        self._per_row = lambda A: 1
        try:
            return correct(self, dA)
        finally:
            del self._per_row

    monkeypatch.setattr(BatchNorm2D, "backward", backward)
    result = fastnn.gradcheck(gradcheck_model(None), images, labels)
    assert not result.passed


@pytest.mark.parametrize("layers, message", [
    ([Conv2D(1, 4, 3), BatchNorm2D(3), Flatten(), Dense(4 * 6 * 6, 2)],
     "layer 1 (BatchNorm2D(3, momentum=0.9, eps=1e-05)) takes images of 3 channel(s) but "
     "the layer before it gives images of 4 channel(s) (shape (4, 6, 6)); make channels 4"),
    ([Conv2D(1, 4, 3), Flatten(), BatchNorm2D(4), Dense(4 * 6 * 6, 2)],
     "layer 2 (BatchNorm2D(4, momentum=0.9, eps=1e-05)) takes images of shape (channels, "
     "height, width) but gets samples of shape (144,) from the layer before it"),
    ([Conv2D(1, 4, 3), BatchNorm(4), Flatten(), Dense(4 * 6 * 6, 2)],
     "for images use BatchNorm2D(4) (per channel), or put it after Flatten()"),
], ids=["channels", "flat", "flat-batchnorm-on-images"])
def test_models_that_cannot_be_built_name_the_fix(layers, message):
    with pytest.raises(ValueError) as error:
        Sequential(layers, input_shape=(1, 8, 8))
    assert message in str(error.value)


def test_bad_settings():
    for bad in (0, -2, 2.5, "8", True):
        with pytest.raises((TypeError, ValueError), match="BatchNorm2D channels"):
            BatchNorm2D(bad)
    with pytest.raises(ValueError, match="BatchNorm2D momentum"):
        BatchNorm2D(4, momentum=1.5)
    with pytest.raises(ValueError, match="BatchNorm2D eps"):
        BatchNorm2D(4, eps=0.0)
    with pytest.raises(ValueError, match="input_shape"):  # first: no height or width known
        Sequential([BatchNorm2D(1), Conv2D(1, 2, 3), Flatten(), Dense(2 * 6 * 6, 2)])
    model = Sequential([BatchNorm2D(1), Conv2D(1, 2, 3), Flatten(), Dense(2 * 6 * 6, 2)],
                       input_shape=(1, 8, 8))
    assert model.shapes[:2] == [(1, 8, 8), (1, 8, 8)]


def digit_cnn(seed, backend=None):
    """PyTorch's conv, BatchNorm2d, ReLU order (the conv variant test_numba_batchnorm.py's
    Numba run compiles too)."""
    return Sequential([Conv2D(1, 8, 3, padding="same"), BatchNorm2D(8, activation="relu"),
                       MaxPool2D(2), Flatten(), Dense(8 * 4 * 4, 10, "softmax")],
                      input_shape=(1, 8, 8), seed=seed, backend=backend)


def test_a_cnn_with_batchnorm2d_learns_the_digits(backend):
    X, y = datasets.digits(images=True)
    order = np.random.default_rng(0).permutation(len(X))
    train, test = order[:1200], order[1200:]
    model = digit_cnn(seed=0)
    model.fit(X[train], y[train], epochs=4, batch_size=50, optimizer="adam", lr=0.01, seed=0)
    # 95.6% on NumPy (93.1% without the BatchNorm2D, the same 4 epochs)
    assert model.evaluate(X[test], y[test])["accuracy"] > 0.94
    mean = host(backend, model.layers[1].running_mean.value)
    assert mean.shape == (8,) and np.all(mean != 0.0)  # the running statistics moved


def test_a_checkpoint_rebuilds_and_resumes_it_bit_for_bit(backend, tmp_path):
    X, y = datasets.digits(images=True)
    X, y = X[:200], y[:200]
    options = dict(batch_size=50, optimizer="adam", lr=0.01, seed=5)
    straight = digit_cnn(seed=6)
    straight.fit(X, y, epochs=4, **options)
    first = digit_cnn(seed=6)
    first.fit(X, y, epochs=2, **options)
    resumed = fastnn.load(first.save(tmp_path / "cnn.npz"))
    assert resumed.layers[1].config() == {"type": "BatchNorm2D", "channels": 8,
                                          "momentum": 0.9, "eps": 1e-5,
                                          "activation": {"name": "relu"}}
    for a, b in zip(resumed.buffers(), first.buffers()):
        np.testing.assert_array_equal(host(backend, a.value), host(backend, b.value))
    np.testing.assert_array_equal(resumed.predict_proba(X), first.predict_proba(X))
    resumed.fit(X, y, epochs=2, batch_size=50)
    for a, b in zip(resumed.parameters() + resumed.buffers(),
                    straight.parameters() + straight.buffers()):
        np.testing.assert_array_equal(host(backend, a.value), host(backend, b.value))


def test_an_activation_after_the_normalization_is_pytorchs_batchnorm_then_relu(backend):
    """Conv2D without an activation, then BatchNorm2D(..., activation="relu"): PyTorch's
    conv, BatchNorm2d, ReLU."""
    torch = pytest.importorskip("torch", reason="PyTorch is not installed")
    layer = BatchNorm2D(3, momentum=0.9, activation="relu")
    layer.build(backend, backend.dtype("float64"), np.random.default_rng(0))
    layer.gamma.value, layer.beta.value = dev(backend, GAMMA), dev(backend, np.zeros(3))
    out = host(backend, layer.forward(dev(backend, X), training=True))
    dX = host(backend, layer.backward(dev(backend, DA)))
    norm = torch.nn.BatchNorm2d(3, momentum=0.1).double()
    with torch.no_grad():
        norm.weight[:] = torch.tensor(GAMMA)
        norm.bias[:] = 0.0
    x = torch.tensor(X, requires_grad=True)
    y = torch.relu(norm(x))
    y.backward(torch.tensor(DA))
    assert out.shape == X.shape and (out == 0).any() and (out > 0).any()
    np.testing.assert_allclose(out, y.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dX, x.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(host(backend, layer.gamma.grad), norm.weight.grad.numpy(),
                               rtol=1e-12)


def test_gradcheck_with_activations_after_both_batchnorms(backend):
    images = RNG.normal(size=(6, 2, 6, 6)) * 3.0 + 1.0
    labels = np.arange(6) % 3
    # the layers before them have activations too, so their biases have gradients to
    # check (one right before a BatchNorm is cancelled by it: its gradient is zero)
    model = Sequential([Conv2D(2, 3, 3, padding=1, activation="tanh"),
                        BatchNorm2D(3, activation="tanh"), AvgPool2D(2), Flatten(),
                        Dense(27, 5, "tanh"),
                        BatchNorm(5, activation="sigmoid"), Dense(5, 3, "softmax")],
                       input_shape=(2, 6, 6), seed=3, dtype="float64", backend=backend)
    result = fastnn.gradcheck(model, images, labels)
    assert result.passed, result


def test_the_activation_is_saved_and_plain_configs_are_unchanged(tmp_path):
    plain, relu = BatchNorm2D(4), BatchNorm2D(4, momentum=0.8, activation="relu")
    assert plain.config() == {"type": "BatchNorm2D", "channels": 4, "momentum": 0.9,
                              "eps": 1e-5}
    assert repr(relu) == "BatchNorm2D(4, momentum=0.8, eps=1e-05, activation='relu')"
    assert BatchNorm(3).config() == {"type": "BatchNorm", "n_features": 3, "momentum": 0.9,
                                     "eps": 1e-5}
    model = Sequential([Conv2D(1, 4, 3), relu, Flatten(), Dense(144, 5),
                        BatchNorm(5, activation={"name": "leaky_relu", "alpha": 0.2}),
                        Dense(5, 2, "softmax")], input_shape=(1, 8, 8), seed=0)
    images = RNG.normal(size=(7, 1, 8, 8))
    model.fit(images, np.arange(7) % 2, epochs=1, batch_size=4)
    loaded = fastnn.load(model.save(tmp_path / "m.npz"))
    assert [layer.config() for layer in loaded.layers] == [layer.config()
                                                            for layer in model.layers]
    assert loaded.layers[4].activation.alpha == 0.2
    np.testing.assert_array_equal(loaded.predict_proba(images), model.predict_proba(images))


def test_a_row_wise_activation_is_refused():
    for make in (lambda: BatchNorm2D(4, activation="softmax"),
                 lambda: BatchNorm(4, activation="softmax")):
        with pytest.raises(ValueError, match="activation must be elementwise, not 'softmax'"):
            make()
