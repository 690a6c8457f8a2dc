"""Replayed epochs (``fastnn.replay``) without a GPU: which fits qualify, the step
clock's uploads, and ``fit`` through a stand-in for CUDA graphs, which must give
exactly the numbers of the plain loop. The stand-in records on the strict backend
(array-api-strict on a non-CPU device: only the array API, and every host copy
counted) and behaves as a recording does where it matters: recording runs nothing, a
replay reuses the step count and learning rate the host had when the epoch was
recorded (a number read on the host side is baked into a graph), and it insists on
the recorded arrays. tests/test_cupy_gpu.py checks the same with CUDA graphs."""

import operator

import numpy as np
import pytest
from conftest import host, make_backend
from strict_backend import StrictBackend

import fastnn
from fastnn import Dense, Dropout, Sequential, datasets, optimizers, replay
from fastnn.batchnorm import BatchNorm
from fastnn.errors import TrainingDiverged
from fastnn.training import epoch_runner

OPTIMIZERS = {"sgd": 0.5, "momentum": 0.1, "nesterov": 0.1, "adagrad": 0.1, "rmsprop": 0.01,
              "adam": 0.01}


class FakeGraph:
    """A recorded epoch (see the module docstring)."""

    def __init__(self, backend, step):
        self.backend, self.step, self.output, self.replays = backend, step, None, 0
        model = backend.model
        self.optimizer = model.optimizer
        self.baked = (self.optimizer.t, self.optimizer.lr)
        self.arrays = [p.value for p in model.parameters()] + [
            a for arrays in self.optimizer.state for a in arrays]

    def replay(self):
        model, optimizer = self.backend.model, self.optimizer
        now = [p.value for p in model.parameters()] + [a for s in optimizer.state for a in s]
        assert len(now) == len(self.arrays) and all(map(operator.is_, now, self.arrays)), \
            "a replay would write arrays that are no longer the model's"
        assert model.optimizer is optimizer
        current = (optimizer.t, optimizer.lr)
        optimizer.t, optimizer.lr = self.baked
        try:
            out = self.step()
        finally:
            optimizer.t, optimizer.lr = current
        if self.output is None:
            self.output = out
        else:
            self.output[...] = out
        self.replays += 1


class RecordingBackend(StrictBackend):
    """The strict backend with ``capture`` (FakeGraph); ``model`` is the model it
    records for."""

    name = "strict-recording"
    captures = True

    def __init__(self):
        super().__init__()
        self.model, self.graphs = None, []

    def capture(self, step):
        self.graphs.append(FakeGraph(self, step))
        return self.graphs[-1]


def train(backend, optimizer="adam", batch_size=None, epochs=12, dtype="float64", **fit):
    X, y = datasets.moons(120, noise=0.2, seed=0)
    model = Sequential([Dense(2, 8, "tanh"), Dense(8, 6, "relu"), Dense(6, 1, "sigmoid")],
                       seed=3, dtype=dtype, backend=backend)
    if isinstance(backend, RecordingBackend):
        backend.model = model
    history = model.fit(X, y, epochs=epochs, batch_size=batch_size, optimizer=optimizer,
                        lr=OPTIMIZERS.get(optimizer), shuffle=False, seed=1, **fit)
    return model, history


def assert_same_training(a, b):
    (model_a, history_a), (model_b, history_b) = a, b
    assert history_a == history_b
    opt_a, opt_b = model_a.optimizer, model_b.optimizer
    assert opt_a.t == opt_b.t and opt_a.clock is None and opt_b.clock is None
    arrays_a = [p.value for p in model_a.parameters()] + [x for s in opt_a.state for x in s]
    arrays_b = [p.value for p in model_b.parameters()] + [x for s in opt_b.state for x in s]
    for x, z in zip(arrays_a, arrays_b, strict=True):
        np.testing.assert_array_equal(host(model_a.backend, x), host(model_b.backend, z))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("batch_size", [None, 40])
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_replayed_epochs_give_exactly_the_plain_loops_numbers(optimizer, batch_size, dtype):
    recording = RecordingBackend()
    replayed = train(recording, optimizer, batch_size, dtype=dtype)
    assert_same_training(replayed, train(make_backend("strict"), optimizer, batch_size,
                                         dtype=dtype))
    [graph] = recording.graphs  # one recording, replayed for every epoch after the first
    assert graph.replays == 11


def test_the_stand_in_catches_a_step_count_read_on_the_host(monkeypatch):
    """Were Adam to pass the host's t, every replay would repeat the recorded step's
    bias correction: the numbers would differ from the plain loop's."""
    monkeypatch.setattr(optimizers.Optimizer, "count", property(lambda self: self.t))
    replayed_model, _ = train(RecordingBackend(), "adam")
    plain_model, _ = train(make_backend("strict"), "adam")
    assert not np.array_equal(host(replayed_model.backend, replayed_model.parameters()[0].value),
                              host(plain_model.backend, plain_model.parameters()[0].value))


@pytest.mark.parametrize("host_lr", [False, True])
def test_a_learning_rate_changed_between_chunks_reaches_the_replays(monkeypatch, host_lr):
    """(As a schedule would change it.) Read on the host, the replays would keep the
    recorded epoch's rate: the stand-in shows the difference."""
    if host_lr:
        monkeypatch.setattr(optimizers.Optimizer, "rate", property(lambda self: self.lr))
    X, y = datasets.moons(120, noise=0.2, seed=0)
    models = []
    for backend in (RecordingBackend(), make_backend("strict")):
        model = Sequential([Dense(2, 4, "tanh"), Dense(4, 1, "sigmoid")], seed=0,
                           backend=backend)
        model.optimizer = optimizers.SGD(lr=0.5)
        if isinstance(backend, RecordingBackend):
            backend.model = model
        run = epoch_runner(model, *model.prepare(X, y), 120)
        for lr in (0.5, 0.05):
            model.optimizer.lr = lr
            if isinstance(backend, RecordingBackend):
                run.epochs(4)
            else:
                for _ in range(4):
                    run(None)
        models.append(model)
    same = all(np.array_equal(host(a.backend, p.value), host(b.backend, q.value))
               for a, b in [models] for p, q in zip(a.parameters(), b.parameters()))
    assert same is not host_lr


def test_chunks_record_once_and_checkpoints_stay_clean(tmp_path, monkeypatch):
    monkeypatch.setattr(replay, "CHUNK_STEPS", 4)  # chunks of 4 epochs of 1 step
    recording = RecordingBackend()
    model, history = train(recording, "adam", epochs=11)
    [graph] = recording.graphs
    assert graph.replays == 10 and len(history["loss"]) == 11
    assert_same_training((model, history), train(make_backend("strict"), "adam", epochs=11))
    model.save(tmp_path / "m.npz")
    restored = fastnn.load(tmp_path / "m.npz")
    assert restored.optimizer.t == model.optimizer.t and restored.optimizer.clock is None


def test_swapped_state_is_recorded_again():
    recording = RecordingBackend()
    model, _ = train(recording, "momentum", epochs=5)
    model.optimizer.state = []  # what fit's undo does when a chunk made the state
    X, y = datasets.moons(120, noise=0.2, seed=0)
    model.fit(X, y, epochs=5, shuffle=False)
    assert len(recording.graphs) == 2 and recording.graphs[1].replays == 4


def test_divergence_is_reported_as_in_the_plain_loop():
    X, y = datasets.moons(120, noise=0.2, seed=0)
    outcomes = []
    for backend in (RecordingBackend(), make_backend("strict")):
        model = Sequential([Dense(2, 8, "relu"), Dense(8, 1, "sigmoid")], seed=0,
                           backend=backend)
        if isinstance(backend, RecordingBackend):
            backend.model = model
        with pytest.raises(TrainingDiverged) as caught:
            model.fit(X * 1e3, y, epochs=60, optimizer="sgd", lr=1e4, shuffle=False)
        outcomes.append((caught.value.history, model.epochs_trained, model.optimizer.t,
                         [host(backend, p.value) for p in model.parameters()]))
        if isinstance(backend, RecordingBackend):
            assert backend.graphs[0].replays > 0  # diverged in a replayed chunk, undone
    (h1, e1, t1, p1), (h2, e2, t2, p2) = outcomes
    assert str(h1) == str(h2) and (e1, t1) == (e2, t2)
    for a, b in zip(p1, p2):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("fit_options", [
    {"batch_size": 40, "shuffle": True}, {"callbacks": [fastnn.Callback()]},
    {"lr_schedule": fastnn.StepDecay(5)}, {"validation_data": "self"},
])
def test_epochs_with_work_between_them_run_as_they_come(fit_options):
    recording = RecordingBackend()
    X, y = datasets.moons(120, noise=0.2, seed=0)
    model = Sequential([Dense(2, 4, "tanh"), Dense(4, 1, "sigmoid")], seed=0, backend=recording)
    recording.model = model
    if fit_options.get("validation_data") == "self":
        fit_options = {"validation_data": (X, y)}
    model.fit(X, y, epochs=6, **fit_options)
    assert recording.graphs == []


def test_data_parallel_epochs_are_never_recorded():
    """Their steps sum gradients with the other ranks, which a replay would skip."""
    recording = RecordingBackend()
    X, y = datasets.moons(120, noise=0.2, seed=0)
    model = Sequential([Dense(2, 4, "tanh"), Dense(4, 1, "sigmoid")], seed=0, backend=recording)
    recording.model = model
    history = fastnn.distributed.simulate(2, model, X, y, epochs=6, shuffle=False, seed=1)
    assert recording.graphs == []
    assert len(history["loss"]) == 6 and np.all(np.isfinite(history["loss"]))


def test_what_can_be_replayed():
    recording = RecordingBackend()

    def model(*layers, optimizer="sgd", backend=recording):
        m = Sequential([*layers, Dense(4, 1, "sigmoid")], seed=0, backend=backend)
        m.optimizer = optimizers.get(optimizer) if isinstance(optimizer, str) else optimizer
        return m

    class Custom(optimizers.SGD):
        pass

    assert replay.unsuitable(model(Dense(2, 4)), 1) is None
    assert replay.unsuitable(model(Dense(2, 4), optimizer="adam"), replay.MAX_STEPS) is None
    reasons = {
        "does not record": replay.unsuitable(model(Dense(2, 4), backend="numpy"), 1),
        "more than 64": replay.unsuitable(model(Dense(2, 4)), replay.MAX_STEPS + 1),
        "layer 1 is a Dropout": replay.unsuitable(model(Dense(2, 4), Dropout(0.1)), 1),
        "layer 1 is a BatchNorm": replay.unsuitable(model(Dense(2, 4), BatchNorm(4)), 1),
        "Custom is not one of fastnn's optimizers": replay.unsuitable(
            model(Dense(2, 4), optimizer=Custom()), 1),
    }
    for expected, reason in reasons.items():
        assert reason is not None and expected in reason, reason


def test_the_step_clock_uploads_a_table_per_chunk_and_lr_when_it_changes():
    backend = make_backend("strict")
    f32 = backend.dtype("float32")
    opt = optimizers.Adam(lr=0.01)
    clock = replay.StepClock(backend, f32, opt, rows=8)
    opt.t = 7
    with backend.count_transfers() as first:
        clock.sync(opt, steps=3)
    with backend.count_transfers() as again:
        clock.sync(opt, steps=3)
    assert (first.to_device, again.to_device) == (2, 1)  # lr once; the table each time
    assert clock.lr.dtype == f32 and host(backend, clock.lr) == np.float32(0.01)
    for t in (8, 9, 10):  # each tick takes the next step's row, made as the host makes it
        clock.tick()
        assert [host(backend, x) for x in clock.numbers] == [
            np.float32(1 - 0.9**t), np.float32(1 - 0.999**t)]
        assert all(x.dtype == f32 and x.shape == () for x in clock.numbers)
    opt.lr = 0.5
    with backend.count_transfers() as changed:
        clock.sync(opt, steps=1)
    assert changed.to_device == 2 and host(backend, clock.lr) == 0.5
    assert host(backend, clock.row).tolist() == [0]
    sgd = optimizers.SGD(lr=0.1)
    plain = replay.StepClock(backend, backend.dtype("float64"), sgd, rows=8)
    with backend.count_transfers() as counted:
        plain.sync(sgd, steps=8)
        plain.tick()
    assert counted.to_device == 1 and plain.numbers == ()  # SGD needs the learning rate only


def test_replayed_epochs_move_nothing_between_host_and_device_inside_a_chunk():
    """Per chunk: the sums read back and the finiteness check, as in any chunked fit;
    before the first, the learning rate (SGD needs no table). The same counts are
    asserted on a GPU in tests/test_cupy_gpu.py."""
    recording = RecordingBackend()
    X, y = datasets.planar()
    Xd, yd = recording.asarray(X, recording.dtype("float32")), recording.asarray(y)
    model = fastnn.from_layer_dims([2, 4, 1], "tanh", "sigmoid", seed=2, backend=recording)
    recording.model = model
    with recording.count_transfers() as counted:
        model.fit(Xd, yd, epochs=2 * replay.CHUNK_STEPS + 88, lr=1.2)
    chunks = 3
    assert recording.graphs[0].replays == 2 * replay.CHUNK_STEPS + 87
    assert counted.to_device == 1 and counted.checks == 2  # X finite, y in range
    assert counted.to_host == counted.checks + 2 * chunks + 1
