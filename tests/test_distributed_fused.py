"""Data-parallel ranks on the Numba backend's fused steps (``FusedSteps``): a stack of
Dense layers trains an epoch per kernel call, which sums each step's gradients over the
ranks through a Python hook between the step's gradients and its update, and gives the
parameters, gradients and history of one process (NumPy's, to rounding), the same bits
run after run and under MPI as in ``simulate``, on both epoch kernels (the loop kernel
and the BLAS one)."""

import contextlib
import json
import sys

import numpy as np
import pytest

import fastnn
from fastnn import Dense, Sequential, datasets
from fastnn.distributed import simulate
from fastnn.distributed.shards import Shards
from fastnn.errors import BackendUnavailable

try:
    NUMBA = fastnn.backends.load("numba")
except BackendUnavailable as error:
    pytest.skip(str(error), allow_module_level=True)

from mpi_launch import MPIS, launch  # noqa: E402
from test_numba_epoch import kernel  # noqa: E402, F401 (the fixture: loop or BLAS kernel)

from fastnn.kernels.numba import epoch as numba_epoch  # noqa: E402

X, Y = datasets.blobs(203, n_classes=3, n_features=5, std=2.0, seed=4)
OPTIONS = {"epochs": 3, "batch_size": 32, "lr": 0.05, "seed": 7}


def mlp(backend="numba", output="softmax", hidden=6):
    n_out = 3 if output == "softmax" else 1
    return Sequential([Dense(5, hidden, "tanh"), Dense(hidden, hidden, "relu"),
                       Dense(hidden, n_out, output)], dtype="float64", seed=2, backend=backend)


def targets(output):
    return Y if output == "softmax" else (Y == 1).astype(float)


def arrays(model):
    """Parameters, gradients and optimizer state as host arrays."""
    out = [np.array(p.value) for p in model.parameters()]
    out += [np.array(p.grad) for p in model.parameters()]
    return out + [np.array(a) for slots in model.optimizer.state for a in slots]


@pytest.fixture
def fused_steps(monkeypatch):
    """The gradient sums each ``FusedSteps.run`` made, one count per epoch."""
    counts, run = [], numba_epoch.FusedSteps.run

    def counted(self, order=None):
        before = self.batches.reductions.count
        out = run(self, order)
        counts.append(self.batches.reductions.count - before)
        return out

    monkeypatch.setattr(numba_epoch.FusedSteps, "run", counted)
    return counts


@pytest.mark.usefixtures("kernel")
@pytest.mark.parametrize("ranks", [1, 2, 3])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("output", ["softmax", "sigmoid"])
def test_numba_ranks_take_the_fused_steps_and_match_one_process(fused_steps, ranks, optimizer,
                                                                output):
    """Shuffled global batches with a short last one (203 rows in batches of 32)."""
    y = targets(output)
    alone = mlp("numpy", output)
    history = alone.fit(X, y, optimizer=optimizer, **OPTIONS)
    first, second = mlp(output=output), mlp(output=output)
    got = simulate(ranks, first, X, y, optimizer=optimizer, **OPTIONS)
    steps = -(-len(X) // OPTIONS["batch_size"])
    assert fused_steps == [steps] * OPTIONS["epochs"] * ranks  # every rank, every epoch
    assert simulate(ranks, second, X, y, optimizer=optimizer, **OPTIONS) == got
    for a, b in zip(arrays(first), arrays(second)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(arrays(first), arrays(alone)):  # gradients: the last step's sum
        assert np.max(np.abs(a - b)) <= 1e-12 * max(np.max(np.abs(b)), 1e-300)
    for key, values in history.items():
        np.testing.assert_allclose(got[key], values, rtol=1e-12)
    assert first.optimizer.t == alone.optimizer.t == steps * OPTIONS["epochs"]


@pytest.mark.usefixtures("kernel")
@pytest.mark.parametrize("optimizer", ["momentum", "adam"])
def test_a_world_of_one_is_one_fused_process_bit_for_bit(fused_steps, optimizer):
    """The fused steps add the same numbers in the same order as the fused epoch, so a
    world of 1 gives its bits (plain SGD on the BLAS kernel aside: one process folds
    the update into the weight-gradient product, the rank cannot)."""
    alone, one = mlp(), mlp()
    history = alone.fit(X, Y, optimizer=optimizer, **OPTIONS)
    assert simulate(1, one, X, Y, optimizer=optimizer, **OPTIONS) == history
    assert len(fused_steps) == OPTIONS["epochs"]
    for a, b in zip(arrays(one), arrays(alone)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.usefixtures("kernel")
def test_pre_sharded_ranks_take_the_fused_steps_too(fused_steps):
    """Unequal shards, each rank's gradients weighted by its rows: the same model as the
    generic steps train (NumPy's)."""
    parts = [(X[:50], Y[:50]), (X[50:120], Y[50:120]), (X[120:], Y[120:])]
    results = []
    for backend in ("numba", "numpy"):
        model = mlp(backend)
        history = simulate(3, model, [p[0] for p in parts], [p[1] for p in parts],
                           sharded=True, optimizer="momentum", **OPTIONS)
        results.append((arrays(model), history))
    assert len(fused_steps) == 3 * OPTIONS["epochs"]
    (ours, our_history), (ref, ref_history) = results
    for a, b in zip(ours, ref):
        assert np.max(np.abs(a - b)) <= 1e-12 * max(np.max(np.abs(b)), 1e-300)
    np.testing.assert_allclose(our_history["loss"], ref_history["loss"], rtol=1e-12)


@pytest.mark.usefixtures("kernel")
def test_an_error_in_the_sum_stops_the_epoch_on_every_rank(monkeypatch):
    """The sum runs in Python between steps of one kernel call: an error there (here
    rank 1's third sum) ends that rank's epoch after the step's gradients, without its
    update, and is raised; the other rank, released from the collective, stops too."""
    calls, summing = [], Shards.summing

    @contextlib.contextmanager
    def failing(self, flat):
        with summing(self, flat) as sum_in_place:

            def sum_or_fail():
                if self.comm.rank == 1:
                    calls.append(1)
                    if len(calls) == 3:
                        raise RuntimeError("the sum failed")
                sum_in_place()

            yield sum_or_fail

    monkeypatch.setattr(Shards, "summing", failing)
    model = mlp()
    with pytest.raises(RuntimeError, match="the sum failed"):
        simulate(2, model, X, Y, optimizer="momentum", **OPTIONS)
    assert model.optimizer.t == 2  # rank 0 took the two steps both ranks summed


WORKER = """
import json, sys
import numpy as np
sys.path.insert(0, "tests")
from test_distributed_fused import OPTIONS, X, Y, arrays, mlp
from fastnn.distributed import DataParallel
dp = DataParallel()
model = mlp()
history = model.fit(X, Y, optimizer="adam", distributed=dp, **OPTIONS)
np.savez(sys.argv[1] + f"/rank{dp.rank}.npz", *arrays(model))
open(sys.argv[1] + f"/rank{dp.rank}.json", "w").write(json.dumps(history))
"""


@pytest.mark.parametrize("ranks", [2, 3])
@pytest.mark.parametrize("mpi", MPIS)
def test_mpi_ranks_on_the_fused_steps_give_the_reference_bits(tmp_path, mpi, ranks):
    """Under MPICH and Open MPI: the sum is the same Python hook called from the kernel,
    through MPI's persistent requests (at 2 ranks the Allreduce, at 3 the gather of every
    rank's buffer for the ordered sum, added in place)."""
    reference = mlp()
    expected = simulate(ranks, reference, X, Y, optimizer="adam", **OPTIONS)
    run = launch(ranks, sys.executable, "-c", WORKER, str(tmp_path), backend="numba",
                 timeout=300, mpi=mpi)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "persistent" not in run.stderr  # every request freed (MPICH warns otherwise)
    for rank in range(ranks):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == expected
        saved = np.load(tmp_path / f"rank{rank}.npz")
        for i, a in enumerate(arrays(reference)):
            np.testing.assert_array_equal(saved[f"arr_{i}"], a)
