"""Convolutional models: shape inference and its errors, image input checks, gradient
checks of every new layer, training, checkpoints, moving between backends, and the
fused plan's and replay's view of them."""

import numpy as np
import pytest
from conftest import host, make_backend
from test_cupy_kernels import emulated  # noqa: F401 (the fixture: CUDA kernels on the CPU)
from test_replay import RecordingBackend

import fastnn
from fastnn import (
    AvgPool2D,
    BatchNorm,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    MaxPool2D,
    Sequential,
    datasets,
    fusion,
    plan,
    replay,
)

RNG = np.random.default_rng(2025)


def small_cnn(seed=0, dtype="float32", backend=None, pool=MaxPool2D):
    """For 1x8x8 digits: conv 4x3x3 'same' + ReLU, 2x2 pool, conv 6x3x3, Flatten, Dense."""
    layers = [Conv2D(1, 4, 3, padding="same", activation="relu"), pool(2),
              Conv2D(4, 6, 3, activation="tanh"), Flatten(), Dense(24, 10, "softmax")]
    return Sequential(layers, input_shape=(1, 8, 8), seed=seed, dtype=dtype, backend=backend)


def digit_images(n=300):
    X, y = datasets.digits()
    return X[:n].reshape(-1, 1, 8, 8), y[:n]


# ---- shapes ----

def test_shapes_are_inferred_layer_by_layer():
    model = small_cnn()
    assert model.shapes == [(1, 8, 8), (4, 8, 8), (4, 4, 4), (6, 2, 2), (24,), (10,)]
    assert model.input_shape == (1, 8, 8) and model.n_in == 64 and model.n_out == 10
    assert model.layers[0].needs_input_grad is False and model.layers[2].needs_input_grad
    assert [getattr(layer, "keep_z", None) for layer in model.layers] == [
        False, None, False, None, True]
    dense = Sequential([Dropout(0.1), Dense(3, 2, "relu"), Dense(2, 1, "sigmoid")])
    assert dense.shapes == [(3,), (3,), (2,), (1,)] and dense.n_in == 3
    net = Sequential([Conv2D(3, 8, 3, stride=2, padding=1), GlobalAvgPool2D(),
                      Dense(8, 2, "softmax")], input_shape=(3, 9, 11))
    assert net.shapes[1:] == [(8, 5, 6), (8,), (2,)]


def test_the_same_seed_draws_the_same_conv_weights_with_pytorchs_fans():
    a, b = small_cnn(seed=3), small_cnn(seed=3)
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(p.value, q.value)
    model = Sequential([Conv2D(16, 64, 5, activation="relu"), Flatten(),
                        Dense(64, 1, "sigmoid")], input_shape=(16, 5, 5), seed=0)
    std = float(np.std(model.layers[0].W.value))
    assert abs(std / np.sqrt(2 / (16 * 25)) - 1) < 0.05  # He: fan-in in*kh*kw = 400
    model = Sequential([Conv2D(16, 64, 5, init="xavier"), Flatten(), Dense(64, 1)],
                       input_shape=(16, 5, 5), seed=0)
    std = float(np.std(model.layers[0].W.value))
    assert abs(std / np.sqrt(2 / (16 * 25 + 64 * 25)) - 1) < 0.05  # fan-out out*kh*kw


def test_repr_builds_the_same_network_again():
    model = small_cnn(dtype="float64")
    text = repr(model)
    assert text == ("Sequential([Conv2D(1, 4, 3, padding='same', activation='relu'), "
                    "MaxPool2D(2), Conv2D(4, 6, 3, activation='tanh'), Flatten(), "
                    "Dense(24, 10, activation='softmax')], loss='categorical_crossentropy', "
                    f"input_shape=(1, 8, 8), dtype='float64', backend={model.backend.name!r})")
    again = eval(text, vars(fastnn))
    assert again.shapes == model.shapes and again.dtype_name == "float64"
    mlp = Sequential([Dropout(0.1), Dense(3, 2, "softmax")])  # a Dense layer fixes its input
    assert repr(mlp).endswith("loss='categorical_crossentropy', "
                              f"backend={mlp.backend.name!r})")


@pytest.mark.parametrize("layers, input_shape, message", [
    ([Conv2D(1, 4, 3), Flatten(), Dense(4, 1)], None,
     r"cannot tell the shape of its input from layer 0 \(Conv2D\(1, 4, 3.*input_shape=\(1, 28, "),
    ([Conv2D(1, 4, 9), Flatten(), Dense(4, 1)], (1, 8, 8),
     r"layer 0 \(Conv2D\(1, 4, 9.*\) has a 9x9 window but its input is only 8 rows high"),
    ([Conv2D(1, 4, 3, padding=1), MaxPool2D(2), Conv2D(4, 4, 5), Flatten(), Dense(4, 1)],
     (1, 6, 6), r"layer 2 \(Conv2D\(4, 4, 5.* 5x5 window but its input is only 3 rows"),
    ([Conv2D(1, 4, 3, stride=2), Flatten(), Dense(36, 1)], (1, 8, 8),
     r"layer 0 \(Conv2D\(1, 4, 3, stride=2.*\) does not tile its input: \(8 \+ 0 padding - "
     r"3\) / stride 2 is not a whole number.*PyTorch drops them silently; fastnn refuses"
     r".*1 more row\(s\) of padding"),
    ([Conv2D(1, 4, 3), Conv2D(3, 4, 3), Flatten(), Dense(16, 1)], (1, 6, 6),
     r"layer 1 \(Conv2D\(3, 4, 3.*takes 3 input channel\(s\) but the layer before it gives "
     r"images of 4 channel\(s\).*make in_channels 4"),
    ([Conv2D(3, 4, 3), Flatten(), Dense(16, 1)], (1, 6, 6),
     r"layer 0 .*takes 3 input channel\(s\) but the model's input_shape \(1, 6, 6\) gives"),
    ([Conv2D(1, 4, 3), Dense(144, 1)], (1, 8, 8),
     r"layer 1 \(Dense\(144, 1.*takes flat samples of 144 features but the layer before it "
     r"gives samples of shape \(4, 6, 6\); put a Flatten\(\) before it"),
    ([Conv2D(1, 4, 3), Flatten(), Dense(100, 1)], (1, 8, 8),
     r"layer 2 \(Dense\(100, 1.*takes 100 inputs but the layer before it gives 144"),
    ([Flatten(), MaxPool2D(2), Dense(16, 1)], (1, 8, 8),
     r"layer 1 \(MaxPool2D\(2\)\) takes images of shape \(channels, height, width\) but "
     r"gets samples of shape \(64,\)"),
    ([Conv2D(1, 2, 3), BatchNorm(2), Flatten(), Dense(72, 1)], (1, 8, 8),
     r"layer 1 \(BatchNorm.*for images use BatchNorm2D\(2\) \(per channel\)"),
    ([Dense(3, 1)], (4,), r"layer 0 \(Dense\(3, 1.*takes 3 inputs but the model's input_shape"),
    ([Dense(3, 1)], "3", "input_shape must be one sample's shape"),
    ([Conv2D(1, 4, 3), Flatten(), Dense(144, 1)], (20, 1, 8, 8),  # X.shape, not X.shape[1:]
     r"layer 0 .*gets samples of shape \(20, 1, 8, 8\) from the model's input_shape .*; "
     r"input_shape is one sample's shape, without the batch axis: give X.shape\[1:\], here "
     r"\(1, 8, 8\)"),
    ([Conv2D(1, 4, 3), Flatten(), Dense(144, 1)], (8, 8),
     r"layer 0 .*gets samples of shape \(8, 8\) from the model's input_shape \(8, 8\); give "
     r"input_shape=\(1, 8, 8\) for images of one channel \(and the images as "
     r"X.reshape\(-1, 1, 8, 8\)\)"),
    ([MaxPool2D(2), Flatten(), Dense(16, 1)], 64,
     r"layer 0 .*input_shape \(64,\); give one image's shape \(channels, height, width\)"),
    ([Dense(3, 1)], (3, 0), "each input_shape entry must be a positive integer"),
])
def test_models_that_cannot_be_built_name_the_layer_and_the_fix(layers, input_shape, message):
    with pytest.raises(ValueError, match=message):
        Sequential(layers, input_shape=input_shape)


# ---- image input ----

def test_image_input_is_checked_with_the_reshape_that_fixes_it(backend):
    model = small_cnn()
    X, y = digit_images(20)
    flat = X.reshape(20, 64)
    for call in (lambda: model.fit(flat, y), lambda: model.predict(flat)):
        with pytest.raises(ValueError, match=r"X must have shape \(n_samples, channels, height, "
                                             r"width\) = \(n_samples, 1, 8, 8\).*got shape "
                                             r"\(20, 64\).*X.reshape\(-1, 1, 8, 8\)"):
            call()
    with pytest.raises(ValueError, match=r"got shape \(20, 8, 8\); for one channel pass "
                                         r"X.reshape\(-1, 1, 8, 8\)"):
        model.predict(X.reshape(20, 8, 8))
    rgb = Sequential([Conv2D(3, 2, 3), Flatten(), Dense(8, 1, "sigmoid")], input_shape=(3, 4, 4))
    with pytest.raises(ValueError, match=r"channels-first.*X.transpose\(0, 3, 1, 2\)"):
        rgb.predict(np.zeros((2, 4, 4, 3)))
    with pytest.raises(ValueError, match=r"X_val must have shape .*\(n_samples, 1, 8, 8\) for this "
                                         r"model; got shape \(20, 1, 8, 7\)"):
        model.fit(X, y, validation_data=(X[..., :7], y))
    bad = X.copy()
    bad[3, 0, 4, 5] = np.nan
    with pytest.raises(ValueError, match=r"X contains 1 NaN or infinite value\(s\), the first "
                                         r"at index \(3, 0, 4, 5\)"):
        model.fit(bad, y)
    assert model.predict(X).shape == (20,)


def test_one_image_without_the_batch_axis_is_named_with_the_fix(backend):
    X, _ = digit_images(2)
    grey = small_cnn()
    with pytest.raises(ValueError, match=r"got shape \(8, 8\); for one channel pass "
                                         r"X.reshape\(-1, 1, 8, 8\)"):
        grey.predict(X[0, 0])  # one grey image (height, width)
    assert grey.predict(X[0, 0].reshape(-1, 1, 8, 8)).shape == (1,)
    rgb = Sequential([Conv2D(3, 2, 3), Flatten(), Dense(8, 3, "softmax")], input_shape=(3, 4, 4))
    image = np.random.default_rng(0).random((3, 4, 4))
    with pytest.raises(ValueError, match=r"got shape \(3, 4, 4\); that is one sample: pass "
                                         r"X\[None\], a batch of one"):
        rgb.predict(image)
    with pytest.raises(ValueError, match=r"got shape \(4, 4, 3\); that is one channels-last "
                                         r"image: pass X.transpose\(2, 0, 1\)\[None\]"):
        rgb.predict_proba(image.transpose(1, 2, 0))
    assert rgb.predict_proba(image[None]).shape == (1, 3)


# ---- gradients ----

CHECKED = {
    "stride 1 valid relu": [Conv2D(2, 3, 3, activation="relu")],
    "stride 1 pad 1 tanh": [Conv2D(2, 3, 3, padding=1, activation="tanh")],
    "same sigmoid even kernel": [Conv2D(2, 2, (2, 3), padding="same", activation="sigmoid")],
    "stride 2 pad 1 leaky": [Conv2D(2, 3, 3, stride=2, padding=1, activation="leaky_relu")],
    "softplus, then max pool": [Conv2D(2, 2, 2, activation="softplus"), MaxPool2D(2)],
    "relu, then 2x2 max pool": [Conv2D(2, 3, 3, padding=1, activation="relu"), MaxPool2D(2)],
    "two conv + pool pairs": [Conv2D(2, 3, 2, activation="relu"), MaxPool2D(2),
                              Conv2D(3, 2, 2, padding=1), MaxPool2D(2)],
    "overlapping max pool": [MaxPool2D(3, stride=2), Conv2D(2, 2, 1, activation="tanh")],
    "avg pools": [Conv2D(2, 3, 3, padding=1), AvgPool2D(2, stride=1), AvgPool2D(2)],
    "global average": [Conv2D(2, 3, 2, stride=(1, 2), padding=((0, 1), (0, 1))),
                       GlobalAvgPool2D()],
    "dropout on images": [Conv2D(2, 3, 3, activation="relu"), Dropout(0.3),
                          Conv2D(3, 2, 2, activation="tanh")],
}


@pytest.mark.parametrize("name", CHECKED)
def test_gradcheck_passes_for_every_conv_layer(backend, name):
    layers = list(CHECKED[name])
    shape = (2, 7, 7)
    for layer in layers:
        shape = layer.output_shape(shape)
    top = [Flatten()] if len(shape) == 3 else []
    model = Sequential([*layers, *top, Dense(int(np.prod(shape)), 3, "softmax")],
                       input_shape=(2, 7, 7), seed=4)
    X = np.random.default_rng(7).normal(size=(3, 2, 7, 7))  # no input near a kink
    result = fastnn.gradcheck(model, X, [0, 2, 1])
    assert result, result
    convs = [i for i, layer in enumerate(model.layers) if isinstance(layer, Conv2D)]
    assert {f"layer {i} W" for i in convs} | {f"layer {i} b" for i in convs} <= set(result.errors)


# ---- a conv and the max pool after it: one step ----

class MyConv(Conv2D):
    """A user's subclass: it keeps its own forward and backward."""


def test_a_conv_and_the_max_pool_after_it_run_as_one_step():
    layers = [Conv2D(1, 4, 3, padding=1, activation="relu"), MaxPool2D(2),
              Conv2D(4, 4, 3, padding=1), AvgPool2D(2), MyConv(4, 4, 1), MaxPool2D(2),
              MaxPool2D(1), Flatten(), Dense(4, 3, "softmax")]
    model = Sequential(layers, input_shape=(1, 8, 8))
    pair = model.steps[0]
    assert isinstance(pair, fusion.ConvPool) and (pair.conv, pair.pool) == tuple(layers[:2])
    assert model.steps[1:] == layers[2:]
    assert model.backprop_steps == model.steps[:-1]
    assert model.layers == layers  # what checkpoints and summaries see


def test_a_pair_first_in_the_model_computes_no_input_gradient():
    model = small_cnn()
    assert model.backprop_steps[0] is model.steps[0] and not model.layers[0].needs_input_grad
    X, y = digit_images(8)
    model.compute_gradients(*model.prepare(X, y))
    assert all(p.grad is not None for p in model.parameters())


def test_the_paired_step_gives_the_separate_layers_bits(backend, monkeypatch):
    """One step, with the pairs and without: the same loss and gradients, bit for bit
    (the Numba backend's pooled kernels against its conv and pool kernels; every other
    backend composes the same ops either way)."""
    X, y = digit_images(40)

    def step():
        lenet_like = [Conv2D(1, 6, 3, padding=1, activation="relu"), MaxPool2D(2),
                      Conv2D(6, 8, 3, activation="relu"), MaxPool2D(2), Flatten(),
                      Dense(8, 10, "softmax")]
        model = Sequential(lenet_like, input_shape=(1, 8, 8), seed=5, backend=backend)
        loss, _ = model.compute_gradients(*model.prepare(X, y))
        return model, [host(model.backend, loss)] + [host(model.backend, p.grad)
                                                     for p in model.parameters()]

    paired, got = step()
    assert isinstance(paired.steps[0], fusion.ConvPool)
    monkeypatch.setattr(fusion, "pairs", lambda first, second: False)
    separate, want = step()
    assert separate.steps == separate.layers
    for mine, theirs in zip(got, want):
        np.testing.assert_array_equal(mine, theirs)


# ---- training, checkpoints, backends ----

def test_a_small_cnn_learns_the_digits():
    X, y = digit_images(1797)
    model = small_cnn(seed=1)
    history = model.fit(X[:1000], y[:1000], epochs=8, batch_size=50, optimizer="adam", lr=0.01,
                        seed=0)
    assert history["loss"][-1] < 0.2 * history["loss"][0]
    assert history["accuracy"][-1] > 0.9
    assert model.evaluate(X[1400:], y[1400:])["accuracy"] > 0.8  # 397 images it never saw


def test_the_same_cnn_trains_alike_on_every_backend(backend):
    X, y = digit_images(120)

    def train(on):
        model = small_cnn(seed=2, dtype="float64", backend=on)
        model.fit(X, y, epochs=2, batch_size=40, optimizer="momentum", lr=0.05, seed=3)
        return [host(model.backend, p.value) for p in model.parameters()]

    for mine, reference in zip(train(backend), train("numpy")):
        np.testing.assert_allclose(mine, reference, rtol=1e-10, atol=1e-12)


def test_a_cnn_trains_alike_through_the_cuda_kernels_on_the_cpu(emulated):  # noqa: F811
    """The CuPy backend's ops table (its fused dense, conv, pooling, loss and update
    kernels) on the emulator: a non-contiguous array reaching a kernel fails there."""
    X, y = digit_images(60)

    def train(on):
        model = small_cnn(seed=4, dtype="float64", backend=on)
        model.fit(X, y, epochs=2, batch_size=20, optimizer="adam", lr=0.01, seed=1)
        return model

    mine, reference = train(emulated), train("numpy")
    for a, b in zip(mine.parameters(), reference.parameters()):
        np.testing.assert_allclose(a.value, b.value, rtol=1e-10, atol=1e-12)
    ran = {name.partition("<")[0] for name in emulated.launcher.launches}
    assert {"im2col", "col2im", "maxpool_backward", "bias_softmax_forward"} <= ran
    smooth = Sequential([Conv2D(1, 3, 3, padding=1, activation="tanh"), AvgPool2D(2),
                         Conv2D(3, 2, 3, activation="sigmoid"), Flatten(),
                         Dense(8, 10, "softmax")], input_shape=(1, 8, 8), seed=4,
                        backend=emulated)
    result = fastnn.gradcheck(smooth, X[:4], y[:4])
    assert result, result


def test_a_cnn_checkpoint_resumes_bit_for_bit(backend, tmp_path):
    X, y = digit_images(200)
    options = dict(batch_size=50, optimizer="adam", lr=0.01, seed=5)
    straight = small_cnn(seed=6, pool=AvgPool2D)
    straight.fit(X, y, epochs=4, **options)
    first = small_cnn(seed=6, pool=AvgPool2D)
    first.fit(X, y, epochs=2, **options)
    path = first.save(tmp_path / "cnn.npz")
    resumed = fastnn.load(path)
    assert resumed.shapes == first.shapes and repr(resumed) == repr(first)
    np.testing.assert_array_equal(resumed.predict_proba(X), first.predict_proba(X))
    resumed.fit(X, y, epochs=2, batch_size=50)  # the optimizer and seed come from the file
    assert resumed.epochs_trained == 4
    for a, b in zip(resumed.parameters(), straight.parameters()):
        np.testing.assert_array_equal(host(backend, a.value), host(backend, b.value))
    assert resumed.history["loss"] == straight.history["loss"][2:]


def test_conv_layers_rebuild_from_their_configs(tmp_path):
    layers = [Conv2D(3, 4, (3, 2), stride=(2, 1), padding=((1, 0), (0, 1)), activation="relu",
                     init="normal"),
              Conv2D(4, 4, 3, padding="same", activation={"name": "leaky_relu", "alpha": 0.2}),
              MaxPool2D(2, stride=1), AvgPool2D((1, 2)), GlobalAvgPool2D(),
              Dense(4, 2, "softmax")]
    model = Sequential(layers, input_shape=(3, 10, 6), seed=0)
    model.save(tmp_path / "m.npz")
    loaded = fastnn.load(tmp_path / "m.npz")
    assert [layer.config() for layer in loaded.layers] == [layer.config() for layer in layers]
    assert loaded.shapes == model.shapes
    X = RNG.normal(size=(5, 3, 10, 6))
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))


def test_a_cnn_moves_between_backends(backend, strict):
    X, y = digit_images(90)
    stay = small_cnn(seed=8, dtype="float64")
    stay.fit(X, y, epochs=2, batch_size=30, optimizer="adam", lr=0.01, seed=0)
    stay.fit(X, y, epochs=1, seed=0)
    move = small_cnn(seed=8, dtype="float64")
    move.fit(X, y, epochs=2, batch_size=30, optimizer="adam", lr=0.01, seed=0)
    target = strict if backend.name != "strict" else "numpy"
    move.to(target)
    move.fit(X, y, epochs=1, seed=0)
    move.to(backend)
    for a, b in zip(move.parameters(), stay.parameters()):
        np.testing.assert_allclose(host(backend, a.value), host(backend, b.value), rtol=1e-10,
                                   atol=1e-13)
    np.testing.assert_allclose(move.predict_proba(X), stay.predict_proba(X), rtol=1e-10)


def test_cnns_get_no_fused_plan_and_their_steps_may_be_replayed():
    X, y = digit_images(60)
    model = small_cnn()
    assert plan.describe(model, X, 20) is None
    assert fastnn.warmup(model) >= 0.0
    recording = RecordingBackend()
    cnn = small_cnn(backend=recording)
    with_dropout = Sequential([Conv2D(1, 2, 3), Dropout(0.2), Flatten(), Dense(72, 3)],
                              input_shape=(1, 8, 8), backend=recording)
    cnn.optimizer = with_dropout.optimizer = fastnn.optimizers.get("adam")
    assert replay.unsuitable(cnn, 3) is None
    assert "layer 1 is a Dropout" in replay.unsuitable(with_dropout, 3)


def test_replayed_cnn_epochs_match_the_plain_loop():
    X, y = digit_images(90)

    def train(backend):
        model = small_cnn(seed=9, dtype="float64", backend=backend)
        if isinstance(backend, RecordingBackend):
            backend.model = model
        history = model.fit(X, y, epochs=5, batch_size=30, optimizer="adam", lr=0.01,
                            shuffle=False, seed=1)
        return model, history

    recording = RecordingBackend()
    replayed, history = train(recording)
    assert len(recording.graphs) == 1 and recording.graphs[0].replays == 4
    plain, expected = train(make_backend("strict"))
    assert history["loss"] == expected["loss"]
    for a, b in zip(replayed.parameters(), plain.parameters()):
        np.testing.assert_array_equal(host(recording, a.value), host(plain.backend, b.value))


def test_data_parallel_cnn_training_equals_one_process():
    X, y = digit_images(120)
    options = dict(epochs=2, batch_size=40, optimizer="adam", lr=0.01, seed=2)
    one = small_cnn(seed=3, dtype="float64")
    one.fit(X, y, **options)
    two = small_cnn(seed=3, dtype="float64")
    fastnn.distributed.simulate(2, two, X, y, **options)
    for a, b in zip(two.parameters(), one.parameters()):
        np.testing.assert_allclose(a.value, b.value, rtol=1e-12, atol=1e-14)
