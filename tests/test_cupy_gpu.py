"""The CuPy backend on a real GPU: every fused op against NumPy (float64 to 1e-12,
float32 to 1e-5 relative), gradients, 100 training steps, the transfer guard, moving
models, TF32, epochs replayed from CUDA graphs against unrecorded ones, and the same
for convolutional networks (the conv and pooling kernels). Skipped, with the reason,
where no usable GPU is present; the kernels' arithmetic is also checked without a GPU
in test_cupy_kernels.py and test_cupy_conv.py, and the replay logic in test_replay.py."""

import numpy as np
import pytest
from cupy_sync import no_synchronize

import fastnn
from fastnn import Dense, Dropout, Sequential, activations, backends, datasets, optimizers
from fastnn.errors import BackendUnavailable
from fastnn.kernels import activation_codes
from fastnn.training import epoch_runner

try:
    GPU = backends.load("cupy")
    REASON = None
except BackendUnavailable as error:
    GPU, REASON = None, str(error)

pytestmark = pytest.mark.skipif(GPU is None, reason=f"no usable GPU: {REASON}")
TOL = {"float64": 1e-12, "float32": 1e-5}
FAST = activation_codes.DIFFERENTIABLE


def both(host, dtype):
    host = np.ascontiguousarray(host, dtype=dtype)
    return GPU.asarray(host), host


def close(device, host, dtype, scale=None):
    """Equal within the dtype's tolerance; ``scale`` (the sum of the magnitudes that
    a matmul or a batch sum added up) bounds what summation order alone can move."""
    atol = TOL[dtype] * (1e-3 if scale is None else scale)
    a, b = np.asarray(GPU.to_numpy(device), np.float64), np.asarray(host, np.float64)
    bad = np.abs(a - b) > atol + TOL[dtype] * np.abs(b)
    assert not bad.any(), f"{bad.sum()} of {bad.size} differ: {a[bad][:3]} vs {b[bad][:3]}"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", [*FAST, "softmax", "step"])
def test_dense_forward_and_backward_match_numpy(name, dtype):
    ref = backends.load("numpy").ops
    rng = np.random.default_rng(0)
    X, Xh = both(rng.normal(size=(257, 33)) * 3, dtype)
    W, Wh = both(rng.normal(size=(33, 65)), dtype)
    b, bh = both(rng.normal(size=65), dtype)
    act = activations.get(name)
    Z, A = GPU.ops.dense_forward(X, W, b, act)
    Zh, Ah = ref.dense_forward(Xh, Wh, bh, act)
    assert isinstance(A, GPU.cupy.ndarray)
    scale = np.abs(Xh) @ np.abs(Wh) + np.abs(bh)  # cuBLAS sums in another order than BLAS
    close(Z, Zh, dtype, scale)
    close(A, Ah, dtype, scale)  # every activation here has |f'| <= 1
    if name in FAST:
        dA, dAh = both(rng.normal(size=Zh.shape), dtype)
        dZ, db = GPU.ops.activation_backward(dA, GPU.asarray(Zh), GPU.asarray(Ah), act)
        dZh, dbh = ref.activation_backward(dAh, Zh, Ah, act)
        close(dZ, dZh, dtype)
        close(db, dbh, dtype, np.abs(dZh).sum(axis=0))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cross_entropies_match_numpy(dtype):
    ref = backends.load("numpy").ops
    rng = np.random.default_rng(1)
    Zh = np.ascontiguousarray(rng.normal(size=(500, 10)) * 20, dtype)
    Yh = np.eye(10, dtype=dtype)[rng.integers(0, 10, 500)]
    for op, act in (("softmax_xent", "softmax"), ("sigmoid_bce", "sigmoid")):
        Ah = activations.get(act).forward(np, Zh)
        loss, dZ = getattr(GPU.ops, op)(GPU.asarray(Zh), GPU.asarray(Ah), GPU.asarray(Yh), True)
        loss_h, dZ_h = getattr(ref, op)(Zh, Ah, Yh, True)
        assert GPU.read_scalars(loss)[0] == pytest.approx(float(loss_h), rel=TOL[dtype])
        close(dZ, dZ_h, dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name, slots, hyper", [
    ("sgd_update", 0, (0.1, 0.01)), ("momentum_update", 1, (0.1, 0.9, 0.01)),
    ("nesterov_update", 1, (0.1, 0.9, 0.0)), ("adagrad_update", 1, (0.1, 1e-7, 0.0)),
    ("rmsprop_update", 1, (0.01, 0.9, 1e-7, 0.01)),
    ("adam_update", 2, (0.01, 0.9, 0.999, 1e-8, 3, 0.01)),
])
def test_optimizer_updates_match_numpy(name, slots, hyper, dtype):
    rng = np.random.default_rng(2)
    p, ph = both(rng.normal(size=(300, 70)), dtype)
    g, gh = both(rng.normal(size=(300, 70)), dtype)
    states = [both(np.abs(rng.normal(size=(300, 70))), dtype) for _ in range(slots)]
    getattr(GPU.ops, name)(p, g, *(s for s, _ in states), *hyper)
    getattr(backends.load("numpy").ops, name)(ph, gh, *(h for _, h in states), *hyper)
    close(p, ph, dtype)
    for s, h in states:
        close(s, h, dtype)


def test_gradcheck_on_the_gpu():
    X, y = datasets.spirals(40, n_classes=3, seed=0)
    layers = [Dense(2, 8, "tanh"), Dense(8, 6, "softplus"), Dense(6, 3, "softmax")]
    result = fastnn.gradcheck(Sequential(layers, seed=0, backend=GPU), X, y)
    assert result.passed, result


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-12), ("float32", 1e-4)])
def test_100_tutorial_steps_match_numpy(dtype, rtol):
    """float32 gets 1e-4, not the 1e-5 of one op: cuBLAS and OpenBLAS round the matmuls
    differently and Adam carries the differences through 100 steps."""
    X, y = datasets.blobs(300, n_classes=3, std=1.5, seed=0)

    def train(on):
        layers = [Dense(2, 16, "relu"), Dropout(0.1), Dense(16, 3, "softmax")]
        model = Sequential(layers, seed=1, dtype=dtype, backend=on)
        model.fit(X, y, epochs=10, batch_size=30, optimizer="adam", lr=0.01, seed=2)
        return model

    gpu, ref = train(GPU), train("numpy")
    for p, q in zip(gpu.parameters(), ref.parameters()):
        np.testing.assert_allclose(GPU.to_numpy(p.value), q.value, rtol=rtol, atol=rtol * 1e-2)


def test_training_an_epoch_on_device_data_makes_no_per_step_transfers():
    X, y = datasets.blobs(4096, n_classes=3, seed=0)
    Xd, yd = GPU.asarray(X, GPU.xp.float32), GPU.asarray(y)
    model = Sequential([Dense(2, 64, "relu"), Dropout(0.2), Dense(64, 3, "softmax")], seed=0,
                       backend=GPU)
    with GPU.count_transfers() as counted:
        model.fit(Xd, yd, epochs=2, batch_size=64, optimizer="adam")  # 128 steps
    assert counted.to_device == 0
    assert counted.to_host == counted.checks + 2 + 1 and counted.checks == 2


def test_a_training_step_never_synchronizes():
    model = Sequential([Dense(20, 64, "relu"), Dropout(0.2), Dense(64, 1, "sigmoid")], seed=0,
                       backend=GPU)
    rng = np.random.default_rng(0)
    X, Y = model.prepare(rng.normal(size=(256, 20)), rng.integers(0, 2, 256))
    opt, params = fastnn.Adam(), model.parameters()
    model.compute_gradients(X, Y)  # compiles the kernels, allocates
    opt.step(params, GPU)
    with no_synchronize():  # raises on any implicit device->host wait
        for _ in range(3):
            model.compute_gradients(X, Y)
            opt.step(params, GPU)


def test_high_level_api_returns_numpy_and_layer_level_returns_device_arrays():
    X, y = datasets.moons(200, seed=0)
    model = fastnn.from_layer_dims([2, 8, 1], seed=0, backend=GPU)
    model.fit(GPU.asarray(X), y, epochs=3, batch_size=50)  # device X, host y
    assert isinstance(model.predict(X), np.ndarray)
    assert isinstance(model.predict_proba(GPU.asarray(X)), np.ndarray)
    assert isinstance(model.forward(GPU.asarray(X, GPU.xp.float32)), GPU.cupy.ndarray)
    with pytest.raises(TypeError, match="layer-level API works on CuPy arrays"):
        model.forward(X.astype(np.float32))
    numpy_model = fastnn.from_layer_dims([2, 8, 1], seed=0, backend="numpy")
    with pytest.raises(TypeError, match="cupy.ndarray array, but this model runs on the "
                                        "'numpy' backend"):
        numpy_model.predict(GPU.asarray(X))


def test_to_moves_parameters_and_optimizer_state_both_ways():
    X, y = datasets.blobs(300, n_classes=3, seed=0)

    def model():
        return fastnn.from_layer_dims([2, 6, 3], "relu", "softmax", seed=3, dtype="float64",
                                      backend="numpy")

    stay, move = model(), model()
    for m in (stay, move):
        m.fit(X, y, epochs=3, batch_size=100, optimizer="adam", lr=0.01, seed=0)
    move.to("cupy")
    assert all(isinstance(a, GPU.cupy.ndarray) for s in move.optimizer.state for a in s)
    move.fit(X, y, epochs=3, batch_size=100, seed=0)
    stay.fit(X, y, epochs=3, batch_size=100, seed=0)
    move.to("numpy")
    for a, b in zip(move.parameters(), stay.parameters()):
        np.testing.assert_allclose(a.value, b.value, rtol=1e-12)


def test_tf32_is_off_by_default_and_switchable():
    from cupy._core import _routines_linalg as linalg

    assert GPU.tf32 is False
    assert linalg.get_compute_type(np.float32) == linalg.COMPUTE_TYPE_DEFAULT
    try:
        GPU.set_tf32(True)
        assert linalg.get_compute_type(np.float32) in (linalg.COMPUTE_TYPE_TF32,
                                                       linalg.COMPUTE_TYPE_DEFAULT)  # pre-Ampere
    finally:
        GPU.set_tf32(False)
    assert linalg.get_compute_type(np.float32) == linalg.COMPUTE_TYPE_DEFAULT


def test_synchronize_waits_for_queued_work():
    x = GPU.xp.ones((2048, 2048), dtype=GPU.xp.float32)
    y = x @ x
    GPU.synchronize()
    assert GPU.cupy.cuda.get_current_stream().done and GPU.read_scalars(y[0, 0]) == (2048.0,)


@pytest.fixture
def recordings(monkeypatch):
    """The steps GPU.capture records during the test (it still records them)."""
    calls, capture = [], GPU.capture

    def spy(step):
        calls.append(step)
        return capture(step)

    monkeypatch.setattr(GPU, "capture", spy)
    return calls


@pytest.mark.parametrize("dtype, optimizer, lr, batch_size", [
    ("float64", "sgd", 0.5, None), ("float32", "sgd", 0.5, None),
    ("float64", "adam", 0.01, 40), ("float32", "momentum", 0.1, 40),
    ("float32", "rmsprop", 0.01, None),
])
def test_replayed_epochs_equal_unrecorded_ones(monkeypatch, recordings, dtype, optimizer, lr,
                                               batch_size):
    X, y = datasets.moons(120, noise=0.2, seed=0)

    def train(captures):
        monkeypatch.setattr(GPU, "captures", captures)
        model = Sequential([Dense(2, 8, "tanh"), Dense(8, 6, "relu"), Dense(6, 1, "sigmoid")],
                           seed=3, dtype=dtype, backend=GPU)
        history = model.fit(X, y, epochs=30, batch_size=batch_size, optimizer=optimizer, lr=lr,
                            shuffle=False, seed=1, clip_norm=5.0)
        return model, history

    (replayed, h1), (plain, h2) = train(True), train(False)
    assert len(recordings) == 1  # the replayed fit recorded one epoch, the other none
    rtol = TOL[dtype] * 1e-1
    np.testing.assert_allclose(h1["loss"], h2["loss"], rtol=rtol)
    assert h1["accuracy"] == h2["accuracy"] and replayed.optimizer.t == plain.optimizer.t
    for p, q in zip(replayed.parameters(), plain.parameters()):
        np.testing.assert_allclose(GPU.to_numpy(p.value), GPU.to_numpy(q.value), rtol=rtol,
                                   atol=rtol * 1e-3)


def test_replayed_epochs_move_nothing_between_host_and_device_inside_a_chunk(recordings):
    """As test_replay.py counts them on the strict stand-in."""
    X, y = datasets.planar()
    Xd, yd = GPU.asarray(X, GPU.xp.float32), GPU.asarray(y)
    model = fastnn.from_layer_dims([2, 4, 1], "tanh", "sigmoid", seed=2, backend=GPU)
    with GPU.count_transfers() as counted:
        model.fit(Xd, yd, epochs=600, lr=1.2)  # chunks of 256, 256 and 88 epochs
    assert len(recordings) == 1
    assert counted.to_device == 1 and counted.checks == 2
    assert counted.to_host == counted.checks + 2 * 3 + 1


def test_replays_never_synchronize(recordings):
    X, y = datasets.planar()
    model = fastnn.from_layer_dims([2, 4, 1], "tanh", "sigmoid", seed=2, backend=GPU)
    model.optimizer = optimizers.SGD(lr=1.2)
    run = epoch_runner(model, *model.prepare(X, y), 400)
    first = GPU.to_numpy(run.epochs(2))  # the first epoch as usual, then recorded
    with no_synchronize():
        sums = run.epochs(50)
    later = GPU.to_numpy(sums)
    assert len(recordings) == 1 and later[-1, 0] < first[0, 0]  # the loss went down


# ---- convolutional networks (kernels/cuda/conv.py) ----

def small_cnn(dtype="float32", seed=0, dropout=False, backend=None):
    """For 1x8x8 digits: conv 4x3x3 'same' + ReLU, 2x2 max pool, conv 6x3x3 tanh, Dense
    (on the GPU unless ``backend`` says otherwise)."""
    layers = [fastnn.Conv2D(1, 4, 3, padding="same", activation="relu"), fastnn.MaxPool2D(2),
              fastnn.Conv2D(4, 6, 3, activation="tanh"), fastnn.Flatten(),
              Dense(24, 10, "softmax")]
    if dropout:
        layers.insert(2, Dropout(0.2))
    return Sequential(layers, input_shape=(1, 8, 8), seed=seed, dtype=dtype,
                      backend=backend or GPU)


def digit_images(n):
    X, y = datasets.digits()
    return X[:n].reshape(-1, 1, 8, 8), y[:n]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("stride, padding", [((1, 1), ((1, 1), (1, 1))),
                                             ((2, 1), ((0, 1), (2, 0)))])
def test_conv_ops_match_numpy(dtype, stride, padding):
    ref = backends.load("numpy").ops
    rng = np.random.default_rng(3)
    X, Xh = both(rng.normal(size=(33, 5, 13, 12)), dtype)
    W, Wh = both(rng.normal(size=(7, 5, 3, 3)), dtype)
    b, bh = both(rng.normal(size=7), dtype)
    act = activations.get("tanh")
    Z, A, work = GPU.ops.conv2d_forward(X, W, b, act, stride, padding, True)
    Zh, Ah, work_h = ref.conv2d_forward(Xh, Wh, bh, act, stride, padding, True)
    assert isinstance(A, GPU.cupy.ndarray) and A.shape == Ah.shape and A.flags.c_contiguous
    # the sums of the terms' magnitudes: the same ops on |X|, |W|, |b|, |dA| (|tanh'| <= 1)
    plain, magnitudes = activations.get("identity"), [np.abs(a) for a in (Xh, Wh, bh)]
    scale = ref.conv2d_forward(*magnitudes, plain, stride, padding, True)[0]
    close(Z, Zh, dtype, scale)
    close(A, Ah, dtype, scale)
    dA, dAh = both(rng.normal(size=Ah.shape), dtype)
    grads = GPU.ops.conv2d_backward(X, W, dA, Z, A, work, act, stride, padding, True)
    expected = ref.conv2d_backward(Xh, Wh, dAh, Zh, Ah, work_h, act, stride, padding, True)
    terms = ref.conv2d_backward(magnitudes[0], magnitudes[1], np.abs(dAh), None, None, None,
                                plain, stride, padding, True)
    for got, want, scale in zip(grads, expected, terms):
        assert got.shape == want.shape and got.dtype == want.dtype
        close(got, want, dtype, scale)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("size, stride", [((2, 2), (2, 2)), ((3, 3), (2, 2)), ((2, 3), (1, 2))])
def test_pool_ops_match_numpy(dtype, size, stride):
    """Max pooling exactly (the same picks, the same sums in the same order), average
    pooling within the dtype's tolerance; ties (rounded inputs) and a NaN included."""
    ref = backends.load("numpy").ops
    Xh = np.random.default_rng(4).normal(size=(17, 6, 11, 10)).round(1).astype(dtype)
    Xh[3, 2, 4, 5] = np.nan
    X = GPU.asarray(Xh)
    out, work = GPU.ops.maxpool2d_forward(X, size, stride)
    out_h, work_h = ref.maxpool2d_forward(Xh, size, stride)
    np.testing.assert_array_equal(GPU.to_numpy(out), out_h)
    G, Gh = both(np.random.default_rng(5).normal(size=out_h.shape), dtype)
    np.testing.assert_array_equal(
        GPU.to_numpy(GPU.ops.maxpool2d_backward(G, X, out, work, size, stride)),
        ref.maxpool2d_backward(Gh, Xh, out_h, work_h, size, stride))
    Xh[3, 2, 4, 5] = 0.0
    X = GPU.asarray(Xh)
    close(GPU.ops.avgpool2d_forward(X, size, stride), ref.avgpool2d_forward(Xh, size, stride),
          dtype, ref.avgpool2d_forward(np.abs(Xh), size, stride))  # sums that may cancel
    close(GPU.ops.avgpool2d_backward(G, Xh.shape, size, stride),
          ref.avgpool2d_backward(Gh, Xh.shape, size, stride), dtype,
          ref.avgpool2d_backward(np.abs(Gh), Xh.shape, size, stride))


def test_cnn_gradcheck_on_the_gpu():
    X, y = digit_images(6)
    layers = [fastnn.Conv2D(1, 3, 3, padding=1, activation="tanh"), fastnn.AvgPool2D(2),
              fastnn.Conv2D(3, 2, 3, activation="sigmoid"), fastnn.MaxPool2D(2, stride=1),
              fastnn.Flatten(), Dense(2, 10, "softmax")]
    model = Sequential(layers, input_shape=(1, 8, 8), seed=4, backend=GPU)
    result = fastnn.gradcheck(model, X + np.random.default_rng(0).normal(size=X.shape) * 0.1, y)
    assert result.passed, result


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-10), ("float32", 1e-4)])
def test_cnn_training_matches_numpy_and_repeats_exactly(dtype, rtol):
    X, y = digit_images(200)

    def train(on):
        model = small_cnn(dtype, seed=2, backend=on)
        model.fit(X, y, epochs=3, batch_size=40, optimizer="adam", lr=0.01, seed=1)
        return [np.asarray(model.backend.to_numpy(p.value)) for p in model.parameters()]

    first, second, ref = train(GPU), train(GPU), train("numpy")
    for a, b, c in zip(first, second, ref):
        np.testing.assert_array_equal(a, b)  # no atomics: the same bits every run
        np.testing.assert_allclose(a, c, rtol=rtol, atol=rtol * 1e-2)


def test_a_cnn_epoch_on_device_data_makes_no_per_step_transfers():
    X, y = digit_images(1000)
    Xd, yd = GPU.asarray(X, GPU.xp.float32), GPU.asarray(y)
    model = small_cnn(dropout=True)  # Dropout: the steps run one by one, not replayed
    with GPU.count_transfers() as counted:
        model.fit(Xd, yd, epochs=2, batch_size=50, optimizer="adam")  # 40 steps
    assert counted.to_device == 0
    assert counted.to_host == counted.checks + 2 + 1 and counted.checks == 2


def test_a_cnn_training_step_never_synchronizes():
    model = small_cnn()
    X, Y = model.prepare(*digit_images(128))
    opt, params = fastnn.Adam(), model.parameters()
    model.compute_gradients(X, Y)  # compiles the kernels, allocates
    opt.step(params, GPU)
    with no_synchronize():
        for _ in range(3):
            model.compute_gradients(X, Y)
            opt.step(params, GPU)


def test_replayed_cnn_epochs_equal_unrecorded_ones(monkeypatch, recordings):
    X, y = digit_images(120)

    def train(captures):
        monkeypatch.setattr(GPU, "captures", captures)
        model = small_cnn("float64", seed=3)
        history = model.fit(X, y, epochs=6, batch_size=40, optimizer="adam", lr=0.01,
                            shuffle=False, seed=1)
        return model, history

    (replayed, h1), (plain, h2) = train(True), train(False)
    assert len(recordings) == 1
    np.testing.assert_allclose(h1["loss"], h2["loss"], rtol=1e-13)
    for p, q in zip(replayed.parameters(), plain.parameters()):
        np.testing.assert_allclose(GPU.to_numpy(p.value), GPU.to_numpy(q.value), rtol=1e-12,
                                   atol=1e-15)
