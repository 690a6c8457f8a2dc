"""The Numba backend's fused training epoch (``fit``'s epochs as one kernel call for
stacks of Dense layers) against the NumPy reference's op-by-op steps: which models
take it, and that parameters, optimizer state, gradients and history agree for every
optimizer, both losses, mini-batches with shuffling, schedules, repeated fit calls
and divergence. Each of these runs on both epoch kernels: the loop kernel that the tiniest
stacks take, and the BLAS kernel of larger ones (the size limit between them is moved
to send every test model to one or the other).
"""

import contextlib
import re

import numpy as np
import pytest

import fastnn
from fastnn import backends, datasets
from fastnn.callbacks import Callback
from fastnn.errors import BackendUnavailable, TrainingDiverged
from fastnn.plan import describe
from fastnn.schedules import StepDecay
from fastnn.training import epoch_runner

try:
    NUMBA = backends.load("numba")
except BackendUnavailable as error:
    pytest.skip(str(error), allow_module_level=True)

from fastnn.kernels.numba import epoch as numba_epoch  # noqa: E402

TOLERANCE = {"float64": 1e-9, "float32": 2e-3}


@pytest.fixture(params=["loops", "blas"])
def kernel(request, monkeypatch):
    """Which epoch kernel the models of a test take, by moving the size limit between
    them: every model to the loop kernel, or every model to the BLAS kernel."""
    if request.param == "blas":
        if numba_epoch.gemm_library() is None:
            pytest.skip("no CBLAS GEMM found in this process, so the BLAS kernel is never used")
        monkeypatch.setattr(numba_epoch, "LOOP_LAYER_MAX", -1)
    else:
        monkeypatch.setattr(numba_epoch, "LOOP_LAYER_MAX", 1 << 60)
    return request.param


def _binary(hidden=("tanh",), width=4, dtype="float64", backend="numba", seed=1):
    dims = [2] + [width] * len(hidden) + [1]
    layers = [fastnn.Dense(n_in, n_out, act)
              for n_in, n_out, act in zip(dims, dims[1:], [*hidden, "sigmoid"])]
    return fastnn.Sequential(layers, dtype=dtype, seed=seed, backend=backend)


def _multiclass(dtype="float64", backend="numba", seed=2):
    return fastnn.Sequential([fastnn.Dense(2, 8, "relu"), fastnn.Dense(8, 3, "softmax")],
                             dtype=dtype, seed=seed, backend=backend)


CASES = {
    "planar sgd full batch": (lambda **k: _binary(**k), "planar",
                              dict(optimizer="sgd", lr=1.2, epochs=40)),
    "adam shuffled batches + weight decay": (
        lambda **k: _binary(("leaky_relu", "softplus"), 6, **k), "moons",
        dict(optimizer=lambda: fastnn.optimizers.Adam(lr=0.02, weight_decay=1e-3),
             batch_size=48, epochs=4)),
    "softmax momentum, last batch short": (lambda **k: _multiclass(**k), "blobs",
                                           dict(optimizer="momentum", lr=0.1, batch_size=50,
                                                epochs=5)),
    "nesterov identity/sigmoid": (lambda **k: _binary(("identity", "sigmoid"), 5, **k),
                                  "moons", dict(optimizer="nesterov", lr=0.1, batch_size=64,
                                                epochs=3)),
    "rmsprop relu": (lambda **k: _binary(("relu",), 8, **k), "moons",
                     dict(optimizer="rmsprop", lr=0.01, batch_size=32, epochs=3)),
    "adagrad tanh, step decay": (lambda **k: _binary(("tanh",), 4, **k), "planar",
                                 dict(optimizer="adagrad", lr=0.5, epochs=12,
                                      lr_schedule=StepDecay(4, 0.5))),
    "sgd + weight decay, shuffled": (
        lambda **k: _binary(("relu",), 8, **k), "moons",
        dict(optimizer=lambda: fastnn.optimizers.SGD(lr=0.2, weight_decay=1e-2),
             batch_size=40, epochs=3)),
}


def _data(name):
    if name == "planar":
        return datasets.planar()
    if name == "blobs":
        return datasets.blobs(n_samples=240, n_classes=3, seed=2)
    return datasets.moons(n_samples=300, noise=0.2, seed=1)


def _train(case, dtype, backend):
    build, data, settings = CASES[case]
    settings = dict(settings)
    if callable(settings["optimizer"]):  # each model gets its own optimizer
        settings["optimizer"] = settings["optimizer"]()
    model = build(dtype=dtype, backend=backend)
    X, y = _data(data)
    history = model.fit(X, y, seed=5, **settings)
    return model, history


def _assert_close(ours, ref, dtype, what):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    scale = np.max(np.abs(ref)) + 1e-12
    assert np.max(np.abs(ours - ref)) <= TOLERANCE[dtype] * scale, what


def test_small_dense_stacks_take_the_fused_epoch():
    X, y = datasets.planar()
    model = _binary()
    model.optimizer = fastnn.optimizers.get("sgd", lr=0.1)
    Xd, Yd = model.prepare(X, y)
    assert isinstance(epoch_runner(model, Xd, Yd, 400), numba_epoch.FusedEpoch)
    assert isinstance(epoch_runner(model, Xd, Yd, 32), numba_epoch.FusedEpoch)


def test_larger_stacks_take_the_blas_epoch_when_numpys_gemm_is_found(monkeypatch):
    X, y = datasets.planar()
    model = fastnn.Sequential([fastnn.Dense(2, 2048, "tanh"), fastnn.Dense(2048, 1, "sigmoid")],
                              dtype="float64", seed=0, backend="numba")
    model.optimizer = fastnn.optimizers.get("sgd", lr=0.1)
    Xd, Yd = model.prepare(X, y)
    run = epoch_runner(model, Xd, Yd, 400)
    if numba_epoch.gemm_library() is None:
        assert not isinstance(run, numba_epoch.FusedEpoch)
        pytest.skip("no CBLAS GEMM found in this process: the generic steps run")
    assert isinstance(run, numba_epoch.FusedEpoch) and run.gemm is numba_epoch.gemm_library()
    small_model = _binary()
    small_model.optimizer = fastnn.optimizers.get("sgd", lr=0.1)
    small = epoch_runner(small_model, Xd, Yd, 400)
    assert isinstance(small, numba_epoch.FusedEpoch) and small.gemm is None
    monkeypatch.setattr(numba_epoch, "_GEMM", [None])  # as where no GEMM can be found:
    assert not isinstance(epoch_runner(model, Xd, Yd, 400), numba_epoch.FusedEpoch)
    middle = fastnn.Sequential([fastnn.Dense(2, 20, "relu"), fastnn.Dense(20, 1, "sigmoid")],
                               dtype="float64", seed=0, backend="numba")  # 40 weights
    middle.optimizer = fastnn.optimizers.get("sgd", lr=0.1)
    loops = epoch_runner(middle, Xd, Yd, 16)  # loops up to FUSED_EPOCH_MAX
    assert isinstance(loops, numba_epoch.FusedEpoch) and loops.gemm is None


@pytest.mark.parametrize("why", ["clip_norm", "dropout", "mse", "hidden softmax"])
def test_models_the_kernel_does_not_cover_run_the_generic_steps(why):
    X, y = datasets.planar()
    layers = [fastnn.Dense(2, 4, "tanh"), fastnn.Dense(4, 1, "sigmoid")]
    loss, clip = "auto", None
    if why == "dropout":
        layers.insert(1, fastnn.Dropout(0.2))
    elif why == "mse":
        loss = "mse"
    elif why == "hidden softmax":
        layers[0] = fastnn.Dense(2, 4, "softmax")
    elif why == "clip_norm":
        clip = 1.0
    model = fastnn.Sequential(layers, loss=loss, dtype="float64", seed=0, backend="numba")
    model.optimizer = fastnn.optimizers.get("sgd", lr=0.1)
    Xd, Yd = model.prepare(X, y)
    run = epoch_runner(model, Xd, Yd, 400, clip_norm=clip)
    assert not isinstance(run, numba_epoch.FusedEpoch)
    plan = describe(model, Xd, 400, clip_norm=clip)
    assert plan is None or NUMBA.fused_epoch(plan, Xd, Yd, model.parameters(),
                                             model.optimizer) is None


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", list(CASES))
def test_fused_fit_matches_the_numpy_steps(case, dtype, kernel):
    ours, our_history = _train(case, dtype, "numba")
    ref, ref_history = _train(case, dtype, "numpy")
    for p, q in zip(ours.parameters(), ref.parameters()):
        _assert_close(p.value, q.value, dtype, f"parameter {p.name}")
        _assert_close(p.grad, q.grad, dtype, f"gradient of {p.name}")
    assert ours.optimizer.t == ref.optimizer.t > 0
    for mine, theirs in zip(ours.optimizer.state, ref.optimizer.state):
        for a, b in zip(mine, theirs):
            _assert_close(a, b, dtype, "optimizer state")
    _assert_close(our_history["loss"], ref_history["loss"], dtype, "loss history")
    if dtype == "float64":
        assert our_history["accuracy"] == pytest.approx(ref_history["accuracy"], abs=1e-9)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_wide_mlp_takes_the_blas_epoch_and_matches_the_numpy_steps(dtype, optimizer):
    """A 20-64-64-5 softmax MLP (layers of 1280, 4096 and 320 weights: too big for the
    loop kernel) trained on shuffled batches with a short last one."""
    rng = np.random.default_rng(4)
    X = rng.standard_normal((300, 20))
    y = np.argmax(X @ rng.standard_normal((20, 5)), axis=1)
    results = []
    for backend in ("numba", "numpy"):
        model = fastnn.Sequential([fastnn.Dense(20, 64, "relu"), fastnn.Dense(64, 64, "tanh"),
                                   fastnn.Dense(64, 5, "softmax")], dtype=dtype, seed=3,
                                  backend=backend)
        model.optimizer = fastnn.optimizers.get(optimizer, lr=0.05)
        if backend == "numba":
            Xd, Yd = model.prepare(X, y)
            run = epoch_runner(model, Xd, Yd, 64)
            if numba_epoch.gemm_library() is None:
                pytest.skip("no CBLAS GEMM found in this process")
            assert isinstance(run, numba_epoch.FusedEpoch) and run.gemm is not None
        history = model.fit(X, y, epochs=3, batch_size=64, seed=2)
        results.append((model, history))
    (ours, our_history), (ref, ref_history) = results
    for p, q in zip(ours.parameters(), ref.parameters()):
        _assert_close(p.value, q.value, dtype, f"parameter {p.name}")
        _assert_close(p.grad, q.grad, dtype, f"gradient of {p.name}")
    _assert_close(our_history["loss"], ref_history["loss"], dtype, "loss history")
    assert ours.optimizer.t == ref.optimizer.t == 15


def test_fit_called_twice_continues_like_one_call(kernel):
    X, y = datasets.moons(n_samples=200, noise=0.2, seed=3)
    models = [_binary(("relu",), 6) for _ in range(2)]
    models[0].fit(X, y, epochs=6, batch_size=40, optimizer="adam", lr=0.01, seed=1)
    models[1].fit(X, y, epochs=2, batch_size=40, optimizer="adam", lr=0.01, seed=1)
    models[1].fit(X, y, epochs=4, batch_size=40)
    assert models[0].optimizer.t == models[1].optimizer.t == 30
    for p, q in zip(models[0].parameters(), models[1].parameters()):
        np.testing.assert_array_equal(p.value, q.value)


class _SwapOptimizer(Callback):
    """Replaces the model's optimizer (and a weight array) after the first epoch."""

    def on_epoch_end(self, epoch, logs):
        if epoch == 1:
            self.model.optimizer = fastnn.optimizers.get("momentum", lr=0.05)
            W = self.model.layers[0].W
            W.value = W.value.copy()


def test_a_callback_swapping_the_optimizer_or_arrays_is_followed(kernel):
    X, y = datasets.planar()
    results = []
    for backend in ("numba", "numpy"):
        model = _binary(backend=backend)
        model.fit(X, y, epochs=5, optimizer="sgd", lr=0.5, callbacks=[_SwapOptimizer()])
        assert model.optimizer.name == "momentum" and model.optimizer.t == 4
        results.append([(p.value, p.grad) for p in model.parameters()])
    for (ours, our_grad), (ref, ref_grad) in zip(*results):
        _assert_close(ours, ref, "float64", "parameters after the swap")
        _assert_close(our_grad, ref_grad, "float64", "gradients after the swap")


def test_divergence_on_the_fused_path_keeps_the_last_finite_parameters(kernel):
    X, y = datasets.planar()
    outcomes = []
    for backend in ("numba", "numpy"):
        model = _binary(("identity", "identity"), dtype="float32", backend=backend)
        with pytest.raises(TrainingDiverged, match="the loss became nan"):
            model.fit(X * 1e10, y, epochs=50, optimizer="sgd", lr=1e10)
        values = [np.asarray(p.value) for p in model.parameters()]
        assert all(np.all(np.isfinite(v)) for v in values)
        outcomes.append((model.epochs_trained, values))
    assert outcomes[0][0] == outcomes[1][0]
    for ours, ref in zip(outcomes[0][1], outcomes[1][1]):
        _assert_close(ours, ref, "float32", "restored parameters")


class _Nothing(Callback):
    """A callback that does nothing: ``fit`` then runs one epoch per kernel call."""


@contextlib.contextmanager
def _epochs_per_call():
    """The ``count`` of every ``_FusedEpoch.epochs`` call made inside, in order."""
    counts, epochs = [], numba_epoch.FusedEpoch.epochs

    def counted(self, count, order=None):
        counts.append(count)
        return epochs(self, count, order)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(numba_epoch.FusedEpoch, "epochs", counted)
        yield counts


def _fit_twice(make, X, y, **settings):
    """(counts, model, history, outcome) of ``fit`` with no callback, then with one."""
    runs = []
    for callbacks in (None, [_Nothing()]):
        with _epochs_per_call() as counts:
            model = make()
            try:
                history, outcome = model.fit(X, y, callbacks=callbacks, **settings), None
            except TrainingDiverged as error:
                history, outcome = error.history, str(error)
        runs.append((counts, model, history, outcome))
    return runs


def _assert_same_training(one, other):
    """Bitwise equal parameters, gradients, optimizer state and step, history, epochs."""
    (_, a, history_a, outcome_a), (_, b, history_b, outcome_b) = one, other
    for p, q in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(p.value, q.value)
        assert (p.grad is None) == (q.grad is None)
        if p.grad is not None:
            np.testing.assert_array_equal(p.grad, q.grad)
    for mine, theirs in zip(a.optimizer.state, b.optimizer.state):
        for x, z in zip(mine, theirs):
            np.testing.assert_array_equal(x, z)
    assert a.optimizer.t == b.optimizer.t and a.epochs_trained == b.epochs_trained
    assert history_a == history_b and outcome_a == outcome_b


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_epochs_run_several_per_kernel_call_exactly_as_one_per_call(kernel, monkeypatch,
                                                                    optimizer, dtype):
    monkeypatch.setattr(numba_epoch, "CHUNK_EPOCHS", 7)
    X, y = datasets.planar()
    chunked, single = _fit_twice(lambda: _binary(dtype=dtype), X, y, epochs=40,
                                 optimizer=optimizer, lr=0.5 if optimizer == "sgd" else 0.01)
    assert chunked[0] == [7] * 5 + [5] and single[0] == [1] * 40
    _assert_same_training(chunked, single)
    assert len(chunked[2]["loss"]) == 40 and chunked[1].optimizer.t == 40


def test_shuffled_batches_and_verbose_fits_call_the_kernel_per_epoch_or_per_printed_line(
        kernel, capsys, monkeypatch):
    X, y = datasets.moons(n_samples=120, noise=0.2, seed=1)
    with _epochs_per_call() as counts:
        _binary(("relu",), 6).fit(X, y, epochs=3, batch_size=40, optimizer="adam", lr=0.01)
    assert counts == [1, 1, 1]  # each epoch has its own shuffle
    with monkeypatch.context() as patch, _epochs_per_call() as counts:
        patch.setattr(numba_epoch, "CHUNK_WORK", 1)  # as for a model too big to batch epochs
        _binary().fit(X, y, epochs=3, lr=0.5)
    assert counts == [1, 1, 1]
    runs = []
    for callbacks in (None, [_Nothing()]):
        with _epochs_per_call() as counts:
            _binary().fit(X, y, epochs=25, lr=0.5, verbose=10, callbacks=callbacks)
        runs.append((counts, capsys.readouterr().out))
    (chunked, printed), (single, printed_single) = runs
    assert chunked == [10, 10, 5] and single == [1] * 25
    assert printed == printed_single and printed.count("epoch ") == 3


@pytest.mark.parametrize("optimizer, lr", [("sgd", 1e4), ("momentum", 1e3)])
def test_a_chunk_that_diverges_is_undone_and_run_again_epoch_by_epoch(kernel, monkeypatch,
                                                                     optimizer, lr):
    monkeypatch.setattr(numba_epoch, "CHUNK_EPOCHS", 16)
    X, y = datasets.planar()
    make = lambda: _binary(("relu",), 8, dtype="float32")  # noqa: E731
    chunked, single = _fit_twice(make, X * 1e3, y, epochs=60,
                                 optimizer=optimizer, lr=lr)
    diverged = re.search(r"training diverged at epoch (\d+)", chunked[3] or "")
    assert diverged, chunked[3]
    # the first chunk is undone, then its epochs run one by one up to the divergence
    epoch = int(diverged.group(1))
    assert chunked[0] == [16] + [1] * epoch and single[0] == [1] * epoch and epoch < 16
    _assert_same_training(chunked, single)
    assert all(np.all(np.isfinite(p.value)) for p in chunked[1].parameters())


def _epoch_build(module, model, optimizer):
    """The epoch kernel's build for ``model`` trained with ``optimizer`` (a name)."""
    from fastnn.kernels.activation_codes import code_of
    from fastnn.kernels.numba import optimizers as rules
    from fastnn.kernels.numba.jit import mask

    kinds = [code_of(layer.activation)[0] for layer in model.layers]
    loss = numba_epoch.LOSS_KINDS[model.loss.name]
    return module.epoch_kernel(mask(*kinds), mask(*kinds[:-1]), rules.RULES[optimizer], loss)


@pytest.mark.parametrize("optimizer", [None, "adam"])
def test_warmup_of_a_model_compiles_its_fused_epoch_and_leaves_it_untouched(optimizer):
    from numba import types

    from fastnn.kernels.numba import train as numba_train

    # one build serves every depth: other tests may have compiled it already
    model = _binary(("tanh", "relu") * (3 if optimizer is None else 4), dtype="float32")
    build = _epoch_build(numba_train, model, optimizer or "sgd")
    before = [np.array(p.value) for p in model.parameters()]
    fastnn.warmup(model, optimizer=optimizer)
    assert any(types.float32[:, ::1] in signature for signature in build.signatures)
    compiled = len(build.signatures)
    assert all(np.array_equal(b, p.value) for b, p in zip(before, model.parameters()))
    assert model.optimizer is None and all(p.grad is None for p in model.parameters())
    X, y = datasets.planar()
    model.fit(X, y, epochs=2, lr=0.5, optimizer=optimizer)
    assert len(build.signatures) == compiled  # nothing new to compile


def test_warmup_names_an_unknown_optimizer_and_needs_a_model_for_one():
    with pytest.raises(ValueError, match="unknown optimizer 'adamw'"):
        fastnn.warmup(_binary(), optimizer="adamw")
    with pytest.raises(ValueError, match="needs a model"):
        fastnn.warmup("numba", optimizer="adam")


def test_warmup_of_a_wide_model_compiles_the_blas_epoch():
    from numba import types

    from fastnn.kernels.numba import train_blas as numba_train_blas

    if numba_epoch.gemm_library() is None:
        pytest.skip("no CBLAS GEMM found in this process")
    dims = (300, 200, 100, 50, 2)
    model = fastnn.Sequential([fastnn.Dense(a, b, "relu") for a, b in zip(dims, dims[1:-1])]
                              + [fastnn.Dense(dims[-2], dims[-1], "softmax")],
                              dtype="float32", seed=0, backend="numba")
    build = _epoch_build(numba_train_blas, model, "sgd")
    before = [np.array(p.value) for p in model.parameters()]
    fastnn.warmup(model)
    # the build for this model's float32 data (one build serves every depth)
    assert any(types.float32[:, ::1] in signature for signature in build.signatures)
    assert all(np.array_equal(b, p.value) for b, p in zip(before, model.parameters()))
    compiled = len(build.signatures)
    rng = np.random.default_rng(0)
    model.fit(rng.standard_normal((64, 300)), rng.integers(0, 2, 64), epochs=1, batch_size=32)
    assert len(build.signatures) == compiled  # nothing new to compile


def test_the_layer_table_views_are_the_callers_arrays_and_bad_arrays_are_refused():
    """The epoch kernels reach every layer's arrays through one table of addresses
    (``stack``): a view made from it reads and writes the caller's array itself."""
    from fastnn.kernels.numba import stack
    from fastnn.kernels.numba.jit import kernel

    @kernel
    def scale_layer(layers, li, like):
        W = stack.matrix(layers, li, stack.W, layers[li, stack.N_IN], layers[li, stack.N_OUT],
                         like)
        b = stack.vector(layers, li, stack.B, layers[li, stack.N_OUT], like)
        for i in range(W.shape[0]):
            for j in range(W.shape[1]):
                W[i, j] *= 2
        b[0] = W.sum()
        return W.shape[0] * 10 + W.shape[1]

    for dtype in (np.float32, np.float64):
        Ws = (np.arange(6, dtype=dtype).reshape(2, 3), np.arange(12, dtype=dtype).reshape(3, 4))
        bs = tuple(np.zeros(W.shape[1], dtype) for W in Ws)
        others = [tuple(np.empty_like(a) for a in group) for group in (Ws, bs) * 5]
        layers = stack.table(Ws, bs, *others)
        assert layers.shape == (2, 2 + len(stack.ARRAYS))
        assert scale_layer(layers, 1, Ws[0]) == 34
        assert np.array_equal(Ws[1], 2 * np.arange(12).reshape(3, 4))
        assert bs[1][0] == 2 * sum(range(12)) and np.array_equal(Ws[0], np.arange(6).reshape(2, 3))
    with pytest.raises(ValueError, match="one array per layer"):
        stack.table(Ws, bs[:1], *others)
    with pytest.raises(ValueError, match="C-contiguous"):
        stack.table((Ws[0].T, Ws[1]), bs, *others)
