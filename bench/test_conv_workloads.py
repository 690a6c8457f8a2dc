"""The conv nets' training-step workloads (bench/conv_workloads.py, run by the GPU
check): their arithmetic count, and one step on every target (each backend, the
strict stand-in, PyTorch with the same weights) agreeing with the NumPy backend."""

import importlib
import importlib.util

import numpy as np
import pytest

from bench import conv_workloads
from bench.conftest import builder
from bench.reference import relative_error
from fastnn import backends


def test_flop_counts_follow_the_layers():
    """SimpleConvNet: 30*25*576 = 432,000 multiply-adds in the conv, 432,000 + 1,000 in
    the Dense layers (the shared notes' 0.87 M per image); a step is 3x forward less
    the first layer's dX. LeNet-5: 117,600 + 240,000 + 48,000 + 10,080 + 840."""
    simple = 432_000 + 432_000 + 1_000
    assert conv_workloads.cnn_flops("SimpleConvNet", 10) == 2 * 10 * (3 * simple - 432_000)
    lenet = 117_600 + 240_000 + 48_000 + 10_080 + 840
    assert conv_workloads.cnn_flops("LeNet-5", 1) == 2 * (3 * lenet - 117_600)


@pytest.mark.parametrize("net, batch", [("SimpleConvNet", 8), ("LeNet-5", 16)])
def test_a_step_agrees_with_the_numpy_backend(net, batch, target):
    """On every target of bench/conftest.py (each backend, the strict stand-in, the
    PyTorch peer)."""
    workload = conv_workloads.cnn_step(net, batch)
    data = workload.inputs()
    reference = workload.fastnn(backends.load("numpy"), data)
    reference.step()
    expected = reference.result()
    workload.check(expected, data)  # a loss near ln 10 that the step lowered
    case = builder(target)(workload, data)
    case.step()
    result = case.result()
    workload.check(result, data)
    assert relative_error(result, expected) <= workload.tolerance


@pytest.mark.parametrize("net", ["SimpleConvNet", "LeNet-5"])
def test_an_epoch_trains_every_target_from_the_same_weights(net):
    """``epoch_runs`` (the conv table's epoch rows) on a few batches: each fastnn
    backend's epoch returns its loss sum, and the PyTorch loop runs when torch is here."""
    torch = importlib.import_module("torch") if importlib.util.find_spec("torch") else None
    X, y = conv_workloads.epoch_data(24)
    runs = conv_workloads.epoch_runs(net, 8, X, y, torch, backend_names=("numpy",))
    sums = np.asarray(runs["numpy"]())
    assert np.isfinite(sums).all() and 0 < sums[0] / 24 < 5  # near ln 10 a sample
    if torch is not None:
        runs["torch"]()
    assert set(runs) == {"numpy"} | ({"torch"} if torch is not None else set())


def test_the_conv_table_prints_epoch_rows():
    from bench import conv_table

    env = {"date": "d", "git_commit": "c", "cpu": "cpu", "cpus_usable": 2, "numba": {},
           "torch": {"version": "t"}, "load_average": [1.0, 0.5, 0.25]}
    row = {"net": "LeNet-5", "batch": 128, "threads": 2, "samples": 60_000,
           "numpy": {"s": 9.0}, "numba": {"s": 3.0, "samples_per_s": 20_000.0},
           "torch": {"s": 6.0}}
    text = conv_table.markdown({"environment": env, "rows": [], "epochs": [row]})
    assert "load average 1.0, 0.5, 0.2" in text
    assert "| LeNet-5 B=128 | 2 | 60,000 | 9.0 | 3.0 | 6.0 | 2.00x | 20,000 |" in text


class FakeLoad:
    """``environment.OtherLoad`` reading the next of a list of loads."""

    loads = []

    def __init__(self, children=False):
        assert not children  # the nets run in this process

    def __enter__(self):
        self.cores = FakeLoad.loads.pop(0)
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("loads, retries, expected", [
    ([0.9, 0.5, 0.1], 2, (0.1, 3)),   # busy twice, then quiet: the quiet attempt
    ([0.9, 0.2], 2, (0.2, 2)),        # quiet at the second attempt: stops there
    ([0.9, 0.5, 0.7], 2, (0.5, 3)),   # never quiet: the least busy of all
    ([0.9, 0.1], 0, (0.9, 1)),        # no retries: measured once, busy
    ([None], 2, (None, 1)),           # no /proc/stat: measured once
])
def test_the_conv_table_measures_a_busy_net_again_and_keeps_the_quietest(
        monkeypatch, loads, retries, expected):
    from bench import conv_table

    calls = []
    monkeypatch.setattr(conv_table.environment, "OtherLoad", FakeLoad)
    monkeypatch.setattr(conv_table, "measure", lambda targets, plan: calls.append(1) or len(calls))
    FakeLoad.loads = list(loads)
    logged = []
    load, timings, attempts = conv_table.measure_quietest({}, None, retries, logged.append)
    assert (load, attempts) == expected
    assert timings == loads.index(load) + 1  # the measurement taken beside that load
    assert len(logged) == attempts - 1 and all("busy" in line for line in logged)


def test_the_conv_table_marks_busy_step_rows():
    from bench import conv_table

    env = {"date": "d", "git_commit": "c", "cpu": "cpu", "cpus_usable": 2, "numba": {},
           "torch": {"version": "t"}, "load_average": [1.0, 0.5, 0.25]}
    target = {"ms": 10.0, "gflops": 30.0, "pct_sgemm": 30.0, "traced_peak_mib": 3.0}
    row = {"net": "LeNet-5", "batch": 128, "threads": 1, "sgemm_gflops": 100.0,
           "numba_tiles_mib": 0.5, **{t: dict(target) for t in conv_table.TARGETS}}
    row["numba"]["ms"] = 5.0
    quiet = conv_table.markdown({"environment": env, "rows": [dict(row, other_load=0.05)]})
    busy = conv_table.markdown({"environment": env, "rows": [dict(row, other_load=0.62)]})
    assert "| 2.00x |" in quiet and quiet.rstrip().endswith("| 0.05 |")
    assert busy.rstrip().endswith("| 0.62 (busy) |")
    header = quiet.splitlines()[2]
    assert header.count("|") == quiet.splitlines()[4].count("|")
