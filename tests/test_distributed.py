"""Data-parallel training (fastnn.distributed): N ranks give the parameters of one process.

The in-process tests run the ranks as threads (``run_local`` / ``simulate``, the
reference); the MPI tests launch tests/mpi_worker.py under the venv's ``mpiexec``
(oversubscribed on small machines, one thread per rank) and compare what every rank
wrote with that reference: bit for bit, in float64, with shuffling, dropout,
BatchNorm, Adam and gradient clipping.
"""

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from conftest import make_backend
from distributed_cases import (
    IMAGE_VAL,
    IMAGES,
    LABELS,
    OPTIONS,
    VAL,
    X,
    Y,
    cnn,
    model,
    shards,
    state,
)
from mpi_launch import BIN, MPIEXEC, MPIS, ONE_THREAD, ROOT, WORKER, launch, mpi_missing, needs_mpi

import fastnn
from fastnn import Callback, CSVLogger, Sequential
from fastnn.distributed import DataParallel, run_local, simulate
from fastnn.errors import BackendUnavailable, DistributedError


def assert_identical(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def assert_close(a, b, rtol=1e-12):
    """Each array within rtol of the other's largest magnitude."""
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert np.max(np.abs(x - y)) <= rtol * max(np.max(np.abs(y)), 1e-300)


def by_rank(function, size, timeout=60.0):
    """``function(dp)`` on ``size`` ranks as threads; each rank's result or exception."""
    return run_local(size, lambda comm: function(DataParallel(comm)), timeout)


# ---- ranks as threads: the reference itself, and what every rank must agree on ----

def test_a_world_of_one_is_one_process(backend):
    """Bit for bit, on every backend: no fused epoch covers BatchNorm, so both runs take
    the same per-step path (the distributed one adds only exact operations)."""
    alone, one = model(backend), model(backend)
    history = alone.fit(X, Y, validation_data=VAL, **OPTIONS)
    assert simulate(1, one, X, Y, validation_data=VAL, **OPTIONS) == history
    assert_identical(state(one), state(alone))


@pytest.mark.parametrize("ranks", [2, 3])
@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_ranks_match_one_process_and_repeat_exactly(ranks, optimizer):
    """Adam gets a looser bound: see OPTIONS in distributed_cases.py."""
    rtol = BOUND[optimizer]
    options = {**OPTIONS, "optimizer": optimizer}
    alone = model()
    history = alone.fit(X, Y, validation_data=VAL, **options)
    first, second = model(), model()
    got = simulate(ranks, first, X, Y, validation_data=VAL, **options)
    assert simulate(ranks, second, X, Y, validation_data=VAL, **options) == got
    assert_identical(state(first), state(second))
    assert_close(state(first), state(alone), rtol)
    for key, values in history.items():
        np.testing.assert_allclose(got[key], values, rtol=rtol)


@pytest.mark.parametrize("norm", [False, True], ids=["cnn", "batchnorm2d"])
def test_a_cnn_on_two_ranks_is_simulate_bit_for_bit_and_one_process_within_1e_12(backend,
                                                                                norm):
    """Conv2D, MaxPool2D, Flatten and Dense (and a BatchNorm2D, normalizing over the
    global batch) trained with fit(..., distributed=...) on two ranks: every rank gives
    simulate(2)'s history and bits (parameters, statistics and optimizer state), and
    those are within 1e-12 of one process's, in float64."""
    make = functools.partial(cnn, norm=norm)
    reference = make(backend)
    expected = simulate(2, reference, IMAGES, LABELS, validation_data=IMAGE_VAL, **OPTIONS)

    def train(dp):
        net = make(backend)
        history = net.fit(IMAGES, LABELS, validation_data=IMAGE_VAL, distributed=dp, **OPTIONS)
        return history, state(net)

    for history, arrays in by_rank(train, 2):
        assert history == expected
        assert_identical(arrays, state(reference))
    alone = make(backend)
    history = alone.fit(IMAGES, LABELS, validation_data=IMAGE_VAL, **OPTIONS)
    assert_close(state(reference), state(alone), 1e-12)
    for key, values in history.items():
        np.testing.assert_allclose(expected[key], values, rtol=1e-12)
    assert history["accuracy"][-1] > history["accuracy"][0]  # it does learn


def test_ranks_with_another_cnn_or_flat_images_all_raise():
    """A pooling layer that differs on rank 1, then flat rows given to a CNN on rank 1
    (which names the reshape): every rank raises, none hangs."""
    def other_pool(dp):
        net = cnn()
        if dp.rank == 1:
            net = Sequential([*cnn().layers[:1], fastnn.AvgPool2D(2), *cnn().layers[2:]],
                             input_shape=(1, 8, 8), dtype="float64", seed=5)
        return net.fit(IMAGES, LABELS, distributed=dp, **OPTIONS)

    outcomes = by_rank(other_pool, 2)
    assert all(isinstance(o, DistributedError) and "layer 1: rank 1 has {'type': 'AvgPool2D'"
               in str(o) for o in outcomes), outcomes

    def flat(dp):
        images = IMAGES.reshape(len(IMAGES), -1) if dp.rank == 1 else IMAGES
        return cnn().fit(images, LABELS, distributed=dp, **OPTIONS)

    rank0, rank1 = by_rank(flat, 2)
    assert isinstance(rank1, ValueError) and "X.reshape(-1, 1, 8, 8)" in str(rank1)
    assert isinstance(rank0, DistributedError)
    assert "rank 1 of 2 failed before training: ValueError: X must have shape" in str(rank0)


# N ranks against one process, each parameter array relative to its largest entry: the
# bounds docs/distributed.md states ("What is exact"), by the optimizer's kind.
BOUND = {"momentum": 1e-12, "adam": 1e-10}


def noise_of_the_bias_before_batchnorm(net):
    """Where state(net) holds what the bias of layer 0 touches when no activation comes
    between it and BatchNorm (which cancels it, so its gradient is pure rounding noise):
    the bias, its optimizer state and the BatchNorm's running mean, which follows it."""
    params, buffers = len(net.parameters()), len(net.buffers())
    slots = len(net.optimizer.slots)
    return [1, params] + [params + buffers + slots + j for j in range(slots)]


@pytest.mark.parametrize("optimizer, activation", [("momentum", "identity"), ("adam", "relu"),
                                                   ("adam", "identity")])
def test_thirty_epochs_on_ranks_stay_within_the_documented_bound(optimizer, activation):
    """With "identity", layer 0's bias gets a gradient of pure rounding noise, different in
    each summation order: SGD-type steps keep it at rounding level, while Adam's step,
    lr * m / (sqrt(v) + eps), moves it by up to lr * noise / eps (about 5e-10) per step,
    so it differs by up to 210 such steps after 30 epochs (on these blobs the
    predictions hardly show it: see the next test). Every other array stays within the
    bound."""
    options = {**OPTIONS, "optimizer": optimizer, "epochs": 30}
    alone, ranks = model(activation=activation), model(activation=activation)
    history = alone.fit(X, Y, **options)
    got = simulate(2, ranks, X, Y, **options)
    noise = noise_of_the_bias_before_batchnorm(alone) if activation == "identity" else []
    for i, (a, b) in enumerate(zip(state(ranks), state(alone))):
        if i in noise:
            assert np.max(np.abs(a - b)) <= (1e-13 if optimizer == "momentum" else 1e-8), i
        else:
            assert_close([a], [b], BOUND[optimizer])
    for key, values in history.items():
        np.testing.assert_allclose(got[key], values, rtol=1e-9)
    np.testing.assert_allclose(ranks.predict_proba(X), alone.predict_proba(X), rtol=0,
                               atol=1e-12)
    if activation == "identity":  # the noise is real: the two runs' biases differ wholly
        b_ranks, b_alone = state(ranks)[1], state(alone)[1]
        assert np.max(np.abs(b_ranks - b_alone)) > 0.1 * np.max(np.abs(b_alone))


@pytest.mark.parametrize("data_seed", [1, 2, 3, 4])
def test_the_noise_bias_reaches_predictions_only_through_the_running_mean(data_seed):
    """The bias that BatchNorm cancels (Dense "identity" into BatchNorm) is unrelated noise
    in the two runs, and so is BatchNorm's running mean, which follows it with a lag; at
    inference BatchNorm subtracts that running mean, so the predictions depend on their
    difference: up to 1.2e-11 apart on these unlearnable data (random labels), within the
    1e-10 docs/distributed.md states, and to rounding once both arrays are the same."""
    rng = np.random.default_rng(data_seed)
    features, labels = rng.standard_normal((103, 4)), rng.integers(0, 3, 103)
    options = {**OPTIONS, "optimizer": "adam", "epochs": 30}
    alone, ranks = model(activation="identity"), model(activation="identity")
    alone.fit(features, labels, **options)
    simulate(2, ranks, features, labels, **options)
    apart = np.max(np.abs(ranks.predict_proba(features) - alone.predict_proba(features)))
    assert apart <= 1e-10
    ranks.layers[0].b.value[...] = alone.layers[0].b.value
    ranks.layers[1].buffers[0].value[...] = alone.layers[1].buffers[0].value  # running mean
    np.testing.assert_allclose(ranks.predict_proba(features), alone.predict_proba(features),
                               rtol=0, atol=1e-13)


def test_sharded_batches_take_a_chunk_of_every_rank():
    """Two shards of 24 rows, global batches of 12: batch j is rows 6j..6j+5 of shard 0
    then of shard 1, which is one process training, unshuffled, on those rows in that
    order (dropout masks included: each rank draws its rows' part of the stream)."""
    parts = [(X[:24], Y[:24]), (X[24:48], Y[24:48])]
    options = {**OPTIONS, "shuffle": False, "batch_size": 12}
    order = np.concatenate([np.r_[6 * j:6 * j + 6, 24 + 6 * j:24 + 6 * j + 6] for j in range(4)])
    alone = model()
    history = alone.fit(X[order], Y[order], **options)
    sharded = model()
    got = simulate(2, sharded, [p[0] for p in parts], [p[1] for p in parts], sharded=True,
                   **options)
    assert_close(state(sharded), state(alone))
    np.testing.assert_allclose(got["loss"], history["loss"], rtol=1e-12)


def test_unequal_shards_are_weighted_by_their_rows():
    """Three unequal shards with shuffling: the global loss is the mean over all rows
    (not a mean of per-rank means), the same on every rank."""
    parts = shards(3)
    outcomes = by_rank(lambda dp: model().fit(
        *parts[dp.rank], distributed=DataParallel(dp.comm, sharded=True), **OPTIONS), 3)
    assert outcomes[0] == outcomes[1] == outcomes[2]
    assert len({len(p[0]) for p in parts}) == 3


def test_gradients_are_one_flat_sum_per_step():
    def train(dp):
        net = model()
        net.fit(X, Y, distributed=dp, **OPTIONS)
        return dp.reductions.count, dp.reductions.bytes, len(net.parameters())

    count, nbytes, _ = by_rank(train, 2)[0]
    steps = -(-len(X) // OPTIONS["batch_size"]) * OPTIONS["epochs"]
    weights = sum(p.value.size for p in model().parameters())
    assert (count, nbytes) == (steps, steps * weights * 8)


def test_rank_zero_parameters_and_seed_are_used_everywhere():
    """Ranks that built their models with different seeds (so different weights and
    different default training seeds) train rank 0's model with rank 0's seed."""
    options = {k: v for k, v in OPTIONS.items() if k != "seed"}
    outcomes = by_rank(lambda dp: state(_trained(model(seed=5 + dp.rank), dp, options)), 3)
    alone = model(seed=5)
    alone.fit(X, Y, **options)
    assert_identical(outcomes[1], outcomes[0])
    assert_identical(outcomes[2], outcomes[0])
    assert_close(outcomes[0], state(alone))


def _trained(net, dp, options):
    net.fit(X, Y, distributed=dp, **options)
    return net


@pytest.mark.parametrize("name, differ, words", [
    ("optimizer", lambda r: {"optimizer": "sgd" if r else "adam"}, "optimizer: rank 1"),
    ("clip_norm", lambda r: {"clip_norm": 2.0 if r else 1.0}, "clip_norm: rank 1 has 2.0"),
    ("shuffle", lambda r: {"shuffle": not r}, "shuffle: rank 1 has False"),
    ("validation", lambda r: {"validation_data": VAL if r else None}, "validation: rank 1"),
    ("layer", lambda r: {"net": model(hidden=10 + r)}, "layer 0: rank 1 has"),
    ("bad data", lambda r: {"X": np.where(X > 0, np.nan, X) if r else X},
     "rank 1 of 2 failed before training: ValueError: X contains 250 NaN"),
])
def test_ranks_that_disagree_all_raise_the_same_error(name, differ, words):
    def train(dp):
        settings = {**OPTIONS, **differ(dp.rank)}
        net, data = settings.pop("net", None) or model(), settings.pop("X", X)
        return net.fit(data, Y, distributed=dp, **settings)

    rank0, rank1 = by_rank(train, 2)
    assert isinstance(rank0, DistributedError) and words in str(rank0), rank0
    if name == "bad data":  # the rank whose data is bad raises its own error
        assert isinstance(rank1, ValueError) and "NaN" in str(rank1)
    else:
        assert isinstance(rank1, DistributedError) and str(rank1) == str(rank0)


@pytest.mark.parametrize("batch_size, sharded, words", [
    (2, False, "with 3 ranks every rank needs at least one row of every batch, but batch 1 "
               "of an epoch has 2 rows (103 samples in batches of 2); use a batch_size of at "
               "least 3 that leaves a last batch of 0 or at least 3 rows, or fewer ranks"),
    (51, False, "with 3 ranks every rank needs at least one row of every batch, but batch 3 "
                "of an epoch has 1 row (103 samples in batches of 51); use a batch_size of at "
                "least 3 that leaves a last batch of 0 or at least 3 rows, or fewer ranks"),
    (4, True, "rank 0 holds 23 samples, but an epoch has 26 steps"),
])
def test_more_ranks_than_rows_in_a_batch_is_an_error(batch_size, sharded, words):
    parts = shards(3)

    def train(dp):
        data = parts[dp.rank] if sharded else (X, Y)
        return model().fit(*data, distributed=DataParallel(dp.comm, sharded=sharded),
                           **{**OPTIONS, "batch_size": batch_size})

    outcomes = by_rank(train, 3)
    assert all(isinstance(o, DistributedError) for o in outcomes), outcomes
    if sharded:
        assert all(words in str(o) for o in outcomes), outcomes
    else:  # the whole message, its counts' plurals included
        assert all(str(o) == words for o in outcomes), outcomes


def test_a_batch_with_exactly_one_row_per_rank_trains():
    outcomes = by_rank(lambda dp: model().fit(X, Y, distributed=dp,
                                              **{**OPTIONS, "batch_size": 50}), 3)
    assert outcomes[0] == outcomes[1] == outcomes[2]  # 50 + 50 + 3: the last batch 1, 1, 1


def test_a_rank_that_fails_before_fit_stops_every_rank():
    """``DataParallel.check(error)``: what the CLI calls when loading fails on one rank."""
    def train(dp):
        if dp.rank == 1:
            dp.check(FileNotFoundError("no data on this host"))
            raise FileNotFoundError("no data on this host")
        return model().fit(X, Y, distributed=dp, **OPTIONS)

    rank0, rank1 = by_rank(train, 2)
    assert isinstance(rank0, DistributedError)
    assert "rank 1 of 2 failed before training: FileNotFoundError: no data" in str(rank0)
    assert isinstance(rank1, FileNotFoundError)


class Boom(Callback):
    def on_epoch_end(self, epoch, logs):
        if epoch == 2 and threading.current_thread().name == "fastnn rank 1":
            raise RuntimeError("boom on rank 1")


def test_a_failure_during_training_releases_every_rank():
    started = time.perf_counter()
    with pytest.raises(RuntimeError, match="boom on rank 1"):
        simulate(3, model(), X, Y, callbacks=[Boom()], **OPTIONS)
    assert time.perf_counter() - started < 30


class StopAtTwo(Callback):
    rank_zero_only = True  # so only rank 0 asks to stop

    def on_epoch_end(self, epoch, logs):
        if epoch == 2:
            self.model.stop_training = True


def test_a_stop_asked_on_one_rank_stops_every_rank():
    outcomes = by_rank(lambda dp: model().fit(X, Y, distributed=dp,
                                              callbacks=[StopAtTwo()], **OPTIONS), 2)
    assert [len(h["loss"]) for h in outcomes] == [2, 2]


def test_only_rank_zero_logs_and_prints(tmp_path, capsys):
    def train(dp):
        logger = CSVLogger(tmp_path / f"rank{dp.rank}.csv")
        return model().fit(X, Y, distributed=dp, callbacks=[logger], verbose=1, **OPTIONS)

    outcomes = by_rank(train, 3)
    assert outcomes[0] == outcomes[1] == outcomes[2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank0.csv"]
    assert len((tmp_path / "rank0.csv").read_text().splitlines()) == 1 + OPTIONS["epochs"]
    assert len(capsys.readouterr().out.splitlines()) == OPTIONS["epochs"]


def test_without_mpi4py_asking_for_mpi_says_how_to_install_it(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py now fails
    for attempt in (DataParallel, lambda: model().fit(X, Y, distributed=True)):
        with pytest.raises(BackendUnavailable, match=r"pip install 'fastnn\[mpi\]'"):
            attempt()
    from fastnn.cli import main

    assert main(["train", "--distributed", "--epochs", "1", "--quiet"]) == 2
    assert "fastnn: error: distributed training needs mpi4py" in capsys.readouterr().err


def test_distributed_takes_true_a_data_parallel_or_an_mpi_communicator():
    with pytest.raises(TypeError, match="distributed must be True, a fastnn.distributed"):
        model().fit(X, Y, distributed="mpi")


# ---- MPI: real processes ----

def worker(ranks, scenario, out, backend="numpy"):
    """Run a scenario; returns every rank's (arrays, report)."""
    run = launch(ranks, sys.executable, str(WORKER), scenario, str(out), backend=backend)
    assert run.returncode == 0, run.stdout + run.stderr
    return [(dict(np.load(out / f"rank{r}.npz")), json.loads((out / f"rank{r}.json").read_text()))
            for r in range(ranks)]


def named(arrays, name):
    return [arrays[f"{name}.{i}"] for i in range(len([k for k in arrays
                                                      if k.startswith(name + ".")]))]


@needs_mpi
@pytest.mark.parametrize("ranks", [2, 3])
@pytest.mark.parametrize("backend_name", ["numpy", "numba"])
def test_mpi_ranks_give_the_reference_bits(tmp_path, backend_name, ranks):
    backend = make_backend(backend_name)
    with fastnn.use_backend(backend):  # the reference first: it also warms Numba's cache
        reference = model()
        expected = simulate(ranks, reference, X, Y, validation_data=VAL, **OPTIONS)
        sharded = model()
        expected_sharded = simulate(
            ranks, sharded, *zip(*shards(ranks)), sharded=True,
            validation_data=shards(ranks, VAL), **OPTIONS)
        alone = model()
        alone.fit(X, Y, validation_data=VAL, **OPTIONS)
    results = worker(ranks, "exact", tmp_path, backend_name)
    for arrays, report in results:
        assert report["histories"]["first"] == report["histories"]["second"] == expected
        assert report["histories"]["sharded"] == expected_sharded
        for run in ("first", "second", "resumed"):
            assert_identical(named(arrays, run), state(reference))
        assert_identical(named(arrays, "sharded"), state(sharded))
        assert_close(named(arrays, "first"), state(alone))
        resumed = report["histories"]["resumed"]
        assert resumed["loss"] == expected["loss"][2:]
        assert report["reductions"][0] > 0
    assert fastnn.load(tmp_path / "half.npz").epochs_trained == 2  # loads in one process too


@needs_mpi
@pytest.mark.parametrize("backend_name, case", [("numpy", "cnn"), ("numba", "cnn"),
                                                ("numpy", "cnn_norm")])
def test_mpi_ranks_train_a_cnn_to_the_reference_bits_and_resume_it(tmp_path, backend_name,
                                                                   case):
    """Under mpiexec -n 2: a CNN (cnn_norm: with a BatchNorm2D) trained with fit(...,
    distributed=True) gives simulate(2)'s history and bits on every rank, and one saved
    after 2 epochs, loaded and trained on for 2 more, ends with the same bits and
    losses."""
    backend = make_backend(backend_name)
    make = functools.partial(cnn, norm=case == "cnn_norm")
    with fastnn.use_backend(backend):
        reference = make()
        expected = simulate(2, reference, IMAGES, LABELS, validation_data=IMAGE_VAL,
                            **OPTIONS)
        resumed_reference = make()
        after = simulate(2, resumed_reference, IMAGES, LABELS, **OPTIONS)
    for arrays, report in worker(2, case, tmp_path, backend_name):
        assert report["histories"]["first"] == expected
        assert_identical(named(arrays, "first"), state(reference))
        assert_identical(named(arrays, "resumed"), state(resumed_reference))
        assert report["histories"]["resumed"]["loss"] == after["loss"][2:]
    saved = fastnn.load(tmp_path / "cnn.npz")  # loads in one process too
    assert saved.epochs_trained == 2 and saved.shapes == reference.shapes


@needs_mpi
def test_mpi_ranks_that_disagree_all_raise_and_stay_in_step(tmp_path):
    results = worker(3, "mismatch", tmp_path)
    for rank, (_, report) in enumerate(results):
        for case in ("layers", "dtype", "samples", "epochs", "batch"):
            assert report[case][0] == "DistributedError", (case, report[case])
        kind, message = report["features"]
        if rank == 2:
            assert kind == "ValueError" and "X has 3 features" in message
        else:
            assert kind == "DistributedError" and "rank 2 of 3 failed before training" in message
        assert "dtype: rank 2 has 'float32' but rank 0 has 'float64'" in report["dtype"][1]
        assert report["after"] == results[0][1]["after"]


@needs_mpi
def test_mpi_host_buffers_go_through_the_counted_transfers(tmp_path):
    """The strict stand-in for a GPU without NCCL: every host copy is the backend's
    counted transfer. Per step: the flat gradient (1 down, 1 up) and BatchNorm's three
    sums (mean, variance, backward); per epoch the loss sums; once the broadcast."""
    results = worker(2, "transfers", tmp_path)
    epochs, steps = OPTIONS["epochs"], -(-len(X) // OPTIONS["batch_size"])
    weights, width = 4 * 10 + 10 + 2 * 10 + 10 * 3 + 3, 10
    up = epochs * steps * 4 + epochs + 1
    up_bytes = 8 * (epochs * steps * (weights + 4 * width) + 2 * epochs + weights + 2 * width)
    for _, report in results:
        assert (report["to_device"], report["bytes_to_device"]) == (up, up_bytes)
        assert report["to_host"] == up + report["checks"] + epochs + 1  # + fit's own reads
    assert_identical(named(results[0][0], "state"), named(results[1][0], "state"))


@pytest.mark.parametrize("mpi", MPIS)
def test_mpi_an_exception_on_one_rank_aborts_the_job_with_its_message(tmp_path, mpi):
    """Once: MPI_Abort may return (MPICH), and the rank must not go on to raise again."""
    run = launch(2, sys.executable, str(WORKER), "raise", str(tmp_path), timeout=60, mpi=mpi)
    assert run.returncode != 0
    assert run.stderr.count("Traceback (most recent call last)") == 1, run.stderr
    assert run.stderr.count("RuntimeError: boom on the last rank\n") == 1, run.stderr
    assert run.stderr.count("rank 1 of 2 failed during data-parallel training") == 1
    assert not list(tmp_path.glob("rank*.json"))  # no rank finished


@pytest.mark.parametrize("mpi", MPIS)
def test_mpi_an_uncaught_exception_outside_fit_aborts_the_job(tmp_path, mpi):
    run = launch(2, sys.executable, str(WORKER), "uncaught", str(tmp_path), timeout=60, mpi=mpi)
    assert run.returncode != 0
    assert run.stderr.count("RuntimeError: uncaught on the last rank") == 1, run.stderr
    assert run.stderr.count("rank 1 of 2 ended with an uncaught RuntimeError; aborting every "
                            "rank") == 1


@needs_mpi
def test_mpi_a_killed_rank_ends_the_job(tmp_path):
    env = {**os.environ, **ONE_THREAD, "FASTNN_BACKEND": "numpy"}
    job = subprocess.Popen([MPIEXEC, "-n", "2", sys.executable, str(WORKER), "kill",
                            str(tmp_path)], env=env, cwd=ROOT, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "pid").exists() and job.poll() is None:
            assert time.monotonic() < deadline, "the job never reached epoch 2"
            time.sleep(0.02)
        assert (tmp_path / "pid").exists(), f"the job ended before epoch 2: {job.communicate()}"
        os.kill(int((tmp_path / "pid").read_text()), signal.SIGKILL)
        killed = time.monotonic()
        job.communicate(timeout=30)
        assert job.returncode != 0
        assert time.monotonic() - killed < 30
    finally:
        if job.poll() is None:
            job.kill()
            job.communicate()


@needs_mpi
def test_mpi_cli_trains_digits_and_writes_one_checkpoint(tmp_path):
    fastnn_command = shutil.which("fastnn", path=str(BIN))
    assert fastnn_command, "the fastnn command is not installed in this environment"
    out = tmp_path / "out"
    run = launch(2, fastnn_command, "train", "--dataset", "digits", "--distributed",
                 "--epochs", "3", "--batch-size", "64", "--out", str(out), "--no-plots")
    assert run.returncode == 0, run.stderr
    assert run.stdout.count("data-parallel over 2 MPI ranks") == 1  # rank 0 alone prints
    assert sorted(p.name for p in out.iterdir()) == ["history.csv", "history.json",
                                                     "metrics.json", "model.npz"]
    trained = fastnn.load(out / "model.npz")
    assert trained.epochs_trained == 3
    history = json.loads((out / "history.json").read_text())
    assert history["accuracy"][-1] > history["accuracy"][0]


def gpu_missing():
    try:
        fastnn.backends.load("cupy")
    except BackendUnavailable as error:
        return str(error)
    return mpi_missing()


@pytest.mark.skipif(gpu_missing() is not None, reason=f"no GPU run: {gpu_missing()}")
def test_nccl_on_one_gpu_rank_is_one_process_without_host_copies(tmp_path):
    """One rank is enough to run every NCCL call (all_gather, all_reduce, broadcast)."""
    (arrays, report), = worker(1, "nccl", tmp_path)
    assert report["transport"] == "NCCL (cupyx.distributed)"
    for exact in (True, False):
        assert report[f"history.{exact}"] == report["expected"]
        assert_identical(named(arrays, f"exact{exact}"), named(arrays, "alone"))
        to_device, to_host, checks = report[f"transfers.{exact}"]
        assert to_device == 0 and to_host == checks + OPTIONS["epochs"] + 1


@needs_mpi
def test_mpi_cli_a_rank_that_cannot_load_its_data_stops_every_rank(tmp_path):
    """Rank 1's CSV file is missing (Hydra's PMI_RANK picks each rank's file): rank 0
    reports it, naming rank 1 and its error, in the job's one line of error."""
    rows = np.c_[X[:40], Y[:40]]
    np.savetxt(tmp_path / "data0.csv", rows, delimiter=",", comments="",
               header="a,b,c,d,label")
    fastnn_command = shutil.which("fastnn", path=str(BIN))
    command = (f"'{fastnn_command}' train --dataset csv:'{tmp_path}'/data$PMI_RANK.csv "
               f"--distributed --epochs 2 --no-plots")
    run = launch(2, "sh", "-c", command, timeout=60)
    assert run.returncode == 2
    assert run.stderr == (f"fastnn: error: rank 1 of 2 failed before training: "
                          f"FileNotFoundError: CSV file '{tmp_path}/data1.csv' does not exist; "
                          f"every rank stops here\n"), run.stderr



@pytest.mark.parametrize("outlier", [None, 1e160])
def test_a_diverging_run_keeps_the_same_parameters_on_every_rank(outlier):
    """Divergence is seen by every rank alike (the epoch's loss is summed over them),
    and the snapshot kept is chosen by the loss over every rank's rows: with
    pre-sharded data, a rank judging its own rows alone would keep another snapshot
    (here an outlier on rank 1 overflows its own loss only) and say something else."""
    X, y = fastnn.datasets.moons(200, noise=0.2, seed=0)
    X = X * 10
    if outlier is not None:
        X[150, 0] = outlier
    parts = [(X[:100], y[:100]), (X[100:], y[100:])]

    def train(dp):
        net = fastnn.from_layer_dims([2, 16, 1], "relu", "identity", seed=0, dtype="float64")
        Xr, yr = parts[dp.comm.rank]
        with pytest.raises(fastnn.TrainingDiverged) as info:
            net.fit(Xr, yr, epochs=50, lr=1.0, distributed=DataParallel(dp.comm, sharded=True))
        return str(info.value), state(net)

    (said0, kept0), (said1, kept1) = by_rank(train, 2)
    assert said0 == said1
    assert_identical(kept0, kept1)
    if outlier is None:
        assert "whose loss on the training data is finite" in said0
        assert all(np.all(np.isfinite(a)) for a in kept0)
    else:
        assert "even their loss on the training data is not finite" in said0
