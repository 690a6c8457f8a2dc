"""The report runner: alternation, the derived columns, the flags, and its outputs."""

import dataclasses
import json
import statistics
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import fastnn
from bench import distributed, environment, report, runner, timing, workloads
from bench.case import pure_case
from bench.ceilings import Library
from bench.conftest import strict_backend
from bench.timing import Plan
from fastnn.backends.base import Backend
from fastnn.backends.numpy_backend import NumpyBackend

ROOT = Path(__file__).resolve().parent.parent


class ScriptedTimer:
    """A timer that runs the step and reports scripted seconds per call, logging the
    order in which targets were sampled."""

    def __init__(self, label, per_call, log):
        self.label, self.per_call, self.log = label, list(per_call), log

    def __call__(self, step, n):
        for _ in range(n):
            step()
        self.log.append(self.label)
        return n * (self.per_call.pop(0) if len(self.per_call) > 1 else self.per_call[0])


def test_rounds_alternate_targets_in_rotating_order_after_settling(monkeypatch):
    log = []
    monkeypatch.setattr(timing.time, "sleep", lambda seconds: log.append(seconds))
    targets = {k: (ScriptedTimer(k, [1.0], log), lambda: None) for k in "abc"}
    plan = Plan(rounds=4, min_rounds=1, sample_seconds=0.0, budget_seconds=1e9, warmup_calls=1,
                settle_seconds=0.25)
    timings = timing.measure(targets, plan)
    assert log[0::2] == [0.25] * 15  # an idle pause before every warm-up and sample
    log = log[1::2]
    assert log[:3] == ["a", "b", "c"]  # warm-up, one call each
    assert log[3:] == list("abc" "bca" "cab" "abc")
    assert all(len(t.samples) == 4 and t.median == 1.0 and t.spread == 0.0
               for t in timings.values())
    assert all(len(t.faults) == 4 and min(t.faults) >= 0 for t in timings.values())


def test_a_target_resumed_after_another_gets_one_untimed_call():
    calls = {"a": 0, "b": 0}
    targets = {k: (ScriptedTimer(k, [1.0], []), lambda k=k: calls.__setitem__(k, calls[k] + 1))
               for k in "ab"}
    plan = Plan(rounds=2, min_rounds=1, sample_seconds=2.0, budget_seconds=1e9, warmup_calls=1,
                settle_seconds=0.0)
    timing.measure(targets, plan)  # 2 calls a sample; rounds run a, b then b, a
    assert calls == {"a": 1 + (1 + 2) + (1 + 2), "b": 1 + (1 + 2) + 2}


@pytest.mark.skipif(timing.resource is None, reason="page faults are counted on Unix only")
def test_page_faults_of_fresh_memory_are_counted_per_call():
    def touch_fresh_memory():  # 64 MiB: above glibc's largest mmap threshold, so always new
        np.ones(8 << 20)

    plan = Plan(rounds=3, min_rounds=3, sample_seconds=0.0, budget_seconds=1e9, warmup_calls=1,
                settle_seconds=0.0)
    timings = timing.measure({"t": (timing.WallTimer(), touch_fresh_memory)}, plan)
    assert min(timings["t"].faults) >= 32  # 16384 pages of 4 KiB, or 32 huge ones of 2 MiB


def test_budget_cuts_rounds_but_keeps_the_minimum():
    log = []
    targets = {"slow": (ScriptedTimer("slow", [2.0], log), lambda: None)}
    plan = Plan(rounds=50, min_rounds=3, sample_seconds=0.0, budget_seconds=1.0, warmup_calls=1,
                settle_seconds=0.0)
    assert len(timing.measure(targets, plan)["slow"].samples) == 3


def test_spread_is_the_interquartile_range_over_the_median():
    t = timing.Timing(samples=[1.0, 2.0, 3.0, 4.0, 5.0])
    assert t.median == 3.0 and t.spread == pytest.approx((4.0 - 2.0) / 3.0)
    t.first_call = 10.0
    assert t.compile_time == 7.0


def _toy_workload(check):
    """y = 2x, on host data; check() is the test's."""
    return workloads.Workload(
        name="double", group="elementwise", dtype="float64",
        inputs=lambda: {"x": np.arange(4.0)}, fastnn=None, torch=None, check=check,
        work=64.0, unit="B", copy_shape=(4,), tolerance=1e-12)


def _target(label, result, per_call, log):
    def build(workload, data):
        if result is None:
            raise RuntimeError("this target cannot run it")
        return pure_case(lambda: result, np.asarray)

    return runner.Target(label, build, ScriptedTimer(label, per_call, log), library=None)


class FixedCeilings:
    def copy(self, library, shape, dtype):
        return 2.0  # GB/s


class AlongsideCeilings(FixedCeilings):
    """Copies of 32 bytes timed at 8 s (one thread) and 4 s (two): 16 GB/s at best."""

    def __init__(self, log):
        self.log, self.recorded = log, []

    def copy_steps(self, library, shape, dtype):
        return ({"copy": (ScriptedTimer("copy", [8e-9], self.log), lambda: None),
                 "copy x2": (ScriptedTimer("copy x2", [4e-9], self.log), lambda: None)}, 32)

    def record(self, *args):
        self.recorded.append(args)


def test_byte_workloads_take_their_copy_ceiling_from_copies_measured_alongside():
    log = []
    plan = Plan(rounds=2, min_rounds=2, sample_seconds=0.0, budget_seconds=1e9, warmup_calls=1,
                settle_seconds=0.0)
    library = Library("numpy", None, None)
    targets = [runner.Target(t.label, t.build, t.timer, library) for t in
               (_target("numpy", 2 * np.arange(4.0), [4.0], log),)]
    ceilings = AlongsideCeilings(log)
    (row,) = runner.run_workload(_toy_workload(lambda outputs, data: None), targets, plan,
                                 ceilings, max_spread=0.15)
    assert row.ceiling_rate == pytest.approx(2 * 32 / 4e-9 / 1e9)  # the faster copy
    assert row.ceiling_pct == pytest.approx(100 * row.rate / row.ceiling_rate)
    assert {"copy", "copy x2", "numpy"} <= set(log)  # sampled in the same rounds
    (recorded,) = ceilings.recorded  # kept for the report's list of ceilings
    assert recorded[:5] == ("numpy", "copy", (4,), "float64", row.ceiling_rate)


class AddCeilings(AlongsideCeilings):
    """Also c = a + b of 32-byte arrays (three moved) timed at 6 s: 16 GB/s."""

    def add_steps(self, library, shape, dtype):
        return {"add": (ScriptedTimer("add", [6e-9], self.log), lambda: None)}, 32


def test_two_in_one_out_workloads_are_also_compared_with_an_add_measured_alongside():
    log = []
    plan = Plan(rounds=2, min_rounds=2, sample_seconds=0.0, budget_seconds=1e9, warmup_calls=1,
                settle_seconds=0.0)
    library = Library("numpy", None, None)
    targets = [runner.Target("numpy", t.build, t.timer, library)
               for t in (_target("numpy", 2 * np.arange(4.0), [4.0], log),)]
    for both in (False, True):
        ceilings = AddCeilings(log)
        workload = dataclasses.replace(_toy_workload(lambda outputs, data: None),
                                       two_in_one_out=both)
        (row,) = runner.run_workload(workload, targets, plan, ceilings, max_spread=0.15)
        assert row.ceiling_pct == pytest.approx(100 * row.rate / (2 * 32 / 4e-9 / 1e9))
        if not both:  # a copy-shaped workload gets no add
            assert row.add_pct is None and len(ceilings.recorded) == 1
            continue
        assert row.add_pct == pytest.approx(100 * row.rate / (3 * 32 / 6e-9 / 1e9))
        assert [r[1] for r in ceilings.recorded] == ["copy", "add"]
        cells = report.cells(dataclasses.asdict(row))
        assert cells[6] == f"{row.ceiling_pct:.0f}% copy, {row.add_pct:.0f}% add"


def test_rows_derive_speedup_rate_ceiling_and_flags():
    def check(outputs, data):
        assert np.array_equal(outputs[0], 2 * data["x"]), "not doubled"

    log, right, wrong = [], 2 * np.arange(4.0), 3 * np.arange(4.0)
    plan = Plan(rounds=8, min_rounds=8, sample_seconds=0.0, budget_seconds=1e9, warmup_calls=1,
                settle_seconds=0.0)
    noisy_times = [1.0, 1.0] + [1.0, 3.0] * 10
    targets = [_target("numpy", right, [4.0], log), _target("fast", right, [2.0], log),
               _target("noisy", right, noisy_times, log), _target("bad", wrong, [1.0], log),
               _target("broken", None, [1.0], log)]
    rows = {r.target: r for r in runner.run_workload(_toy_workload(check), targets, plan,
                                                     FixedCeilings(), max_spread=0.15)}
    fast = rows["fast"]
    assert fast.median_s == 2.0 and fast.speedup == 2.0 and fast.max_error == 0.0
    assert fast.rate == pytest.approx(64.0 / 2.0 / 1e9) and fast.unit == "GB/s"
    assert fast.ceiling_pct == pytest.approx(100 * fast.rate / 2.0)
    assert fast.flags == [] and rows["numpy"].speedup == 1.0
    assert rows["noisy"].flags == ["noisy"] and rows["noisy"].spread > 0.15
    assert rows["bad"].flags == ["WRONG", "DIFF"] and "not doubled" in rows["bad"].problem
    assert rows["bad"].max_error == pytest.approx(0.5)  # |3x - 2x| / max|2x|
    assert rows["broken"].flags == ["ERROR"] and rows["broken"].median_s is None
    assert "cannot run it" in rows["broken"].problem


def test_busy_workloads_are_measured_again_and_the_quietest_attempt_kept(monkeypatch):
    loads = []

    class ScriptedLoad:
        def __enter__(self):
            self.cores = loads.pop(0)
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(runner.environment, "OtherLoad", ScriptedLoad)
    plan = Plan(rounds=1, min_rounds=1, sample_seconds=0.0, budget_seconds=1e9, warmup_calls=1,
                settle_seconds=0.0)
    config = runner.Config(max_other_load=0.25)
    workload = _toy_workload(lambda outputs, data: None)
    for retries, expected_load, expected_flags in ((2, 0.1, []), (1, 0.5, ["busy"])):
        loads[:] = [1.0, 0.5, 0.1]
        targets = [_target("numpy", np.arange(4.0), [1.0], [])]
        rows = runner.measure_quietest(workload, targets, plan, FixedCeilings(), config,
                                       retries, log=lambda line: None)
        assert rows[0].attempts == retries + 1 and rows[0].other_load == expected_load
        assert rows[0].flags == expected_flags


def test_mlp_step_rows_are_compared_with_their_gemms():
    rows = [runner.Row("mlp 8 GEMMs B=128", "mlp", "float32", "numpy", median_s=2.0),
            runner.Row("mlp step B=128", "mlp", "float32", "numpy", median_s=3.0)]
    runner.add_baselines(rows, workloads.catalog())
    assert rows[1].baseline == "mlp 8 GEMMs B=128" and rows[1].baseline_ratio == 1.5
    assert rows[0].baseline_ratio is None


def test_mlp_flops_count_the_eight_gemms():
    # forward 3 + dW 3 + dX for layers 2 and 3, each 2*B*n_in*n_out
    b = 128
    expected = 2 * b * (784 * 256 * 2 + 256 * 256 * 3 + 256 * 10 * 3)
    assert workloads.mlp_flops(b) == expected


def test_quick_run_on_three_backends_writes_consistent_outputs(tmp_path):
    config = runner.Config(quick=True, backends=["numpy", NumpyBackend(), strict_backend()],
                           torch=False, groups=["elementwise", "mlp"], pattern="relu",
                           dtypes=["float32"])
    result = runner.run(config, log=lambda line: None)
    assert result["targets"] == ["numpy", "numpy#2", "strict"]
    chosen = workloads.select(workloads.catalog(True), ["elementwise", "mlp"], "relu",
                              ["float32"])
    rows = result["rows"]
    assert [(r["workload"], r["target"]) for r in rows] == [
        (w.name, t) for w in chosen for t in result["targets"]]
    for r in rows:
        assert set(r["flags"]) <= {"noisy", "busy"} and r["problem"] is None  # timing only
        assert r["median_s"] > 0 and r["first_call_s"] > 0 and r["compile_s"] >= 0
        assert r["faults_per_call"] >= 0
        assert r["ceiling_pct"] == pytest.approx(100 * r["rate"] / r["ceiling_rate"])
        assert r["max_error"] == 0.0 if r["target"] != "strict" else r["max_error"] < 1e-6
        if r["target"] == "numpy":
            assert r["speedup"] == 1.0
    copies = {(tuple(c["shape"]), c["library"]) for c in result["ceilings"]
              if c["kind"] == "copy"}
    assert copies == {((64, 256), "numpy"), ((256, 1024), "numpy"),
                      ((64, 256), "array_api_strict"), ((256, 1024), "array_api_strict")}
    assert [(s["backend"], s["how"]) for s in result["startup"]] == [  # instances: in-process
        ("numpy", "op-by-op step"), ("numpy", "fit, one batch")]
    assert all(s["cold"] > 0 and s["cached"] > 0 for s in result["startup"])
    assert result["environment"]["thread_pools"] and result["environment"]["cpu"]

    written = report.write(result, tmp_path)
    assert json.loads((tmp_path / "report.json").read_text()) == json.loads(json.dumps(result))
    md = (tmp_path / "report.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ") and "float32" in line]
    assert len(table) == len(rows)
    assert "| workload | dtype | target | median | vs NumPy |" in md
    assert len(report.text(result).splitlines()) > len(rows)
    assert {p.name for p in written} >= {"report.json", "report.md"}


def test_a_page_table_is_replaced_between_the_markers(tmp_path):
    result = {"command": "x", "quick": True, "plan": vars(Plan()), "max_spread": 0.15,
              "max_other_load": 0.25,
              "environment": {"date": "d", "cpu": "c", "cpus_usable": 2,
                              "load_average": [1.0, 1.0, 1.0], "python": "3", "numpy": "2",
                              "fastnn": "0", "git_commit": None, "thread_pools": [],
                              "environment": {}},
              "targets": ["numpy"], "ceilings": [], "rows": [], "startup": []}
    page = tmp_path / "benchmarks.md"
    page.write_text(f"# t\n\nbefore\n{report.TABLE_START}\nold\n{report.TABLE_END}\nafter\n")
    report.update_page(page, result)
    text = page.read_text()
    assert "old" not in text and "before" in text and text.endswith("after\n")
    assert "| workload | dtype |" in text
    page.write_text("# no markers\n")
    with pytest.raises(ValueError, match="bench-table:start"):
        report.update_page(page, result)


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="needs Linux's /proc/stat")
def test_other_load_counts_other_processes_cpu_time():
    burn = "import time\nend = time.process_time() + 0.6\nwhile time.process_time() < end: pass"
    with environment.OtherLoad() as other:
        subprocess.run([sys.executable, "-c", burn], check=True, timeout=120)
    assert other.cores is not None and other.cores >= 0.3  # the child burnt ~0.6 s of CPU


def test_unknown_group_is_refused_with_the_valid_ones():
    with pytest.raises(ValueError, match="elementwise, dense"):
        workloads.select(workloads.catalog(True), groups=["elementwize"])


def test_the_command_line_runs_and_writes_its_files(tmp_path):
    """Including --page on a copy of docs/benchmarks.md: the table between its markers
    becomes this run's, and the rest of the page stays as it was."""
    docs_page = (ROOT / "docs" / "benchmarks.md").read_text()
    assert docs_page.count(report.TABLE_START) == docs_page.count(report.TABLE_END) == 1
    page = tmp_path / "benchmarks.md"
    page.write_text(docs_page)
    run = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--no-startup", "--no-torch",
         "--groups", "optimizer", "--filter", "sgd", "--out", str(tmp_path),
         "--page", str(page)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "sgd update" in run.stdout and "vs NumPy" in run.stdout
    before, _, after = docs_page.partition(report.TABLE_START)
    updated = page.read_text()
    assert updated.startswith(before + report.TABLE_START)
    assert updated.endswith(report.TABLE_END + after.partition(report.TABLE_END)[2])
    table = updated.partition(report.TABLE_START)[2].partition(report.TABLE_END)[0]
    assert "| sgd update 0.07M params | float32 | numpy |" in table
    assert "adam update" not in table  # the previous run's rows are gone
    saved = json.loads((tmp_path / "report.json").read_text())
    # one row per backend that runs here (numpy, and numba when installed)
    assert {r["workload"] for r in saved["rows"]} == {"sgd update 0.07M params"}
    runnable = [name for name, why in fastnn.available_backends().items() if why is None]
    assert len(saved["rows"]) == len(runnable)
    bad = subprocess.run([sys.executable, "-m", "bench", "--backends", "tensorflow"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "not a fastnn backend" in bad.stderr


def test_a_cupy_backend_gets_the_pytorch_cuda_peer_and_backends_keep_their_labels():
    """The CuPy backend's xp is array-api-compat's namespace (array_api_compat.cupy):
    its array library is still CuPy's, whose device copy and PyTorch CUDA peer it gets."""
    class FakeGpu(Backend):
        name = "fake-gpu"

        def __init__(self, label=None):
            super().__init__(types.SimpleNamespace(__name__="array_api_compat.cupy"))
            if label:
                self.label = label

    torch = types.SimpleNamespace(cuda=types.SimpleNamespace(is_available=lambda: True))
    config = runner.Config(backends=[FakeGpu(), FakeGpu("fake-gpu-no-graphs")],
                           torch_devices=("cuda",))
    targets = runner.make_targets(config, torch)
    assert [t.label for t in targets] == ["numpy", "fake-gpu", "fake-gpu-no-graphs",
                                          "torch-cuda"]
    assert [t.library.name for t in targets] == ["numpy", "cupy", "cupy", "cupy"]
    config.torch_devices = ("cpu", "cuda")
    assert [t.label for t in runner.make_targets(config, torch)][-2:] == ["torch-cpu",
                                                                          "torch-cuda"]


MLP_WEIGHTS = 784 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10


@pytest.mark.skipif(distributed.missing() is not None, reason=str(distributed.missing()))
def test_a_distributed_launch_reports_its_epochs_and_gradient_sums():
    got = distributed.launch("numpy", 2, 1, True, n=512, batch=128, rounds=2)
    assert (got["ranks"], got["steps"], len(got["seconds"])) == (2, 4, 2)
    assert got["bytes_per_step"] == 4 * MLP_WEIGHTS  # one float32 flat buffer per step
    assert all(0 < r < s for r, s in zip(got["reduce_seconds"], got["seconds"], strict=True))
    plain = distributed.launch("numpy", 1, 1, False, n=512, batch=128, rounds=1)
    assert (plain["ranks"], plain["reduce_seconds"], plain["bytes_per_step"]) == (1, [], 0)
    assert abs(plain["losses"][0] - got["losses"][0]) < 1e-4  # the same epoch, in float32


@pytest.mark.skipif(distributed.missing() is not None, reason=str(distributed.missing()))
def test_a_paired_launch_alternates_one_process_and_a_rank_on_the_same_epochs():
    got = distributed.launch_paired("numpy", n=512, batch=128, pairs=3)
    assert [len(got["seconds"][k]) for k in ("process", "rank")] == [3, 3]
    # two copies of one model, each trained the same epochs: the same losses, in float32
    for process, rank in zip(got["losses"]["process"], got["losses"]["rank"], strict=True):
        assert abs(process - rank) < 1e-4
    assert got["losses"]["process"][2] < got["losses"]["process"][0]  # they train
    ratio = distributed.paired_ratio(got)
    assert ratio == pytest.approx(statistics.median(
        p / r for p, r in zip(got["seconds"]["process"], got["seconds"]["rank"], strict=True)))


def test_distributed_rows_derive_rates_efficiency_and_shares():
    seconds = {"1 process, 2 threads": 2.0, "1 process, 1 thread": 4.0, "1 rank, 1 thread": 5.0,
               "2 ranks, 1 thread each": 3.0}
    reports = {("numpy", label): {"seconds": [s, s * 1.1, s * 0.9], "reduce_seconds": [0.5],
                                  "losses": [1.0], "steps": 10, "bytes_per_step": 8,
                                  "other_load": [0.1, None]}
               for label, s in seconds.items()}
    paired = {"numpy": {"seconds": {"process": [1.0, 2.0, 4.0], "rank": [2.0, 2.0, 5.0]}}}
    rows = {r["config"]: r for r in distributed.rows(["numpy"], reports, n=1000, batch=100,
                                                      paired=paired)}
    two = rows["2 ranks, 1 thread each"]
    assert two["samples_per_s"] == pytest.approx(1000 / 3.0)
    assert two["vs_2_threads"] == pytest.approx(2.0 / 3.0)
    assert two["efficiency"] == pytest.approx(5.0 / (2 * 3.0))
    assert two["reduce_ms_per_step"] == pytest.approx(50.0)
    assert two["reduce_share"] == pytest.approx(0.05 / 0.3)
    assert rows["1 rank, 1 thread"]["efficiency"] == pytest.approx(1.0)
    assert rows["1 rank, 1 thread"]["vs_process_paired"] == pytest.approx(0.8)  # of 0.5, 1, 0.8
    assert two["vs_process_paired"] is None
    assert rows["1 process, 1 thread"]["efficiency"] is None and two["other_load"] == 0.1
    result = {"rows": [], "distributed": list(rows.values())}
    table = report.distributed_body(result)
    assert len(table) == 4 and table[3][:2] == ("numpy", "2 ranks, 1 thread each")
    assert report.problems(result) == []
    assert report.problems({"rows": [], "distributed": "ERROR: mpiexec failed"}) == [
        "distributed epoch: ERROR: mpiexec failed"]


@pytest.mark.parametrize("groups, dtypes, pattern, wanted", [
    (None, None, None, True), (["distributed"], None, None, True),
    (["epoch"], None, None, False), (None, ["float64"], None, False),
    (None, None, "relu", False), (None, None, "distributed", True),
])
def test_the_distributed_rows_follow_groups_dtypes_and_filter(groups, dtypes, pattern, wanted):
    config = runner.Config(groups=groups, dtypes=dtypes, pattern=pattern)
    assert runner.wants_distributed(config) is wanted


def test_busy_distributed_launches_are_repeated_keeping_the_quietest(monkeypatch):
    loads, launched = [1.0, 0.5, 0.1], []

    class ScriptedLoad:
        def __init__(self, children=False):
            assert children  # the ranks are child processes: their CPU time is ours

        def __enter__(self):
            self.cores = loads.pop(0) if loads else 0.0
            return self

        def __exit__(self, *exc):
            return False

    def launch(backend, ranks, threads, parallel, n, batch, rounds):
        launched.append((backend, ranks, threads, parallel))
        return {"seconds": [float(len(launched))] * rounds, "reduce_seconds": [0.1] * rounds,
                "losses": [1.0] * rounds, "steps": 16, "bytes_per_step": 4}

    monkeypatch.setattr(distributed.environment, "OtherLoad", ScriptedLoad)
    monkeypatch.setattr(distributed, "launch", launch)
    rows = distributed.measure(["numpy"], quick=True, log=lambda line: None, retries=2)
    assert len(launched) == 3 + 3  # the first configuration three times, the others once
    first = rows[0]
    assert first["other_load"] == 0.1 and first["epoch_s"] == 3.0  # the quietest attempt
    assert [r["other_load"] for r in rows[1:]] == [0.0, 0.0, 0.0]
