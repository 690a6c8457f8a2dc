"""The GPU check (``bench.gpu_check``) rehearsed on the CPU, as CI runs it: every step
passes from the raw checkout in --dry-run mode, a GPU run where no GPU can be used
fails loudly, and the traps it steers around stay handled."""

import json
import os
import subprocess
import sys
from pathlib import Path

from bench import gpu_check, gpu_steps

ROOT = Path(__file__).resolve().parent.parent
FILES = ["bench.json", "bench.md", "steps.log", "summary.json", "summary.md", "tests.log",
         "tests.xml"]


def check(out, *options):
    """python -m bench.gpu_check from the checkout (PYTHONPATH, as on the GPU machine)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get(
        "PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "bench.gpu_check", "--out", str(out),
                           *options], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_rehearsal_runs_every_step_and_passes(tmp_path):
    done = check(tmp_path / "out", "--dry-run", "--budget", "200")
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["passed"] and [s["name"] for s in summary["steps"]] == list(
        gpu_check.STEP_NAMES)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == FILES  # <= 8: $OUT's limit
    printed = done.stdout.splitlines()
    assert len(printed) <= 30 and all(len(line) <= gpu_check.WIDTH for line in printed)
    assert printed[0].startswith("GPU check, CPU rehearsal (--dry-run)") and "PASSED" in printed[0]
    tests = next(s for s in summary["steps"] if s["name"] == "GPU tests")["details"]
    assert tests["selected"] > 100 and tests["skipped"] == tests["total"] > 10
    bench = json.loads((tmp_path / "out" / "bench.json").read_text())
    assert {r["workload"] for r in bench["rows"]} == {w.name for w in
                                                      gpu_check.gpu_bench.workloads.gpu_catalog(
                                                          quick=True)}
    assert any(t["target"].startswith("planar") for t in summary["targets"])


def test_a_gpu_run_where_no_gpu_can_be_used_fails_loudly(tmp_path):
    done = check(tmp_path / "out", "--budget", "100")
    assert done.returncode == 1
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    environment, info, *rest = summary["steps"]
    assert not environment["passed"]
    assert environment["line"].startswith("the 'cupy' backend cannot run here: the 'cupy' "
                                          "backend needs")
    assert not info["passed"] and "cupy unavailable" in info["line"]
    assert all(not s["passed"] and s["line"].startswith("not run: ") for s in rest)
    assert "FAILED (0 of 6 steps passed)" in done.stdout.splitlines()[0]


def test_a_global_fastnn_backend_does_not_steer_the_suite(tmp_path):
    """FASTNN_BACKEND=cupy on a machine without a GPU would fail ``import fastnn``, and on
    one with a GPU the tests that expect the default backend; the suite sets it aside."""
    env = {**os.environ, "FASTNN_BACKEND": "cupy"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                           "tests/test_cli.py::test_info_text",
                           "tests/test_cli.py::test_outputs_agree_with_each_other"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:]
    assert "FASTNN_BACKEND='cupy' is set aside for the test run" in done.stdout
    assert "2 passed" in done.stdout


def test_skips_and_failures_are_read_from_the_junit_report(tmp_path):
    path = tmp_path / "report.xml"
    path.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.test_a" name="test_ok"/>'
        '<testcase classname="tests.test_a" name="test_gpu"><skipped message="no GPU"/></testcase>'
        '<testcase classname="tests.test_a" name="test_gpu2"><skipped message="no GPU"/></testcase>'
        '<testcase classname="tests.test_b" name="test_bad"><failure message="x"/></testcase>'
        '<testcase classname="tests.test_b" name="test_err"><error message="y"/></testcase>'
        '</testsuite></testsuites>')
    counts = gpu_steps.junit_counts(path, watched=("test_gpu2", "test_bad", "test_absent"))
    assert counts == {"total": 5, "passed": 1, "skipped": 2, "failed": 2, "reasons": ["no GPU"],
                      "failures": ["tests.test_b::test_bad", "tests.test_b::test_err"],
                      "watched": {"test_gpu2": "skipped", "test_bad": "failed"}}


def test_steps_that_need_the_backend_wait_for_a_usable_one(tmp_path, monkeypatch):
    ran = []

    def step(name, passed):
        def make(run):
            ran.append(name)
            if passed is None:
                raise OSError("disk full")
            return gpu_steps.Step(name, passed, "line")
        return make

    run = gpu_steps.Run(out=tmp_path, work=tmp_path, dry_run=False, deadline=float("inf"))
    monkeypatch.setattr(gpu_check, "STEPS", (step("environment", False), step("fastnn info", True),
                                             *[step(n, True) for n in gpu_check.NEEDS_THE_BACKEND]))
    steps = gpu_check.run_steps(run)
    assert ran == ["environment", "fastnn info"] and not any(s.passed for s in steps[2:])
    monkeypatch.setattr(gpu_check, "STEPS", (step("environment", True), step("fastnn info", None),
                                             *[step(n, True) for n in gpu_check.NEEDS_THE_BACKEND]))
    steps = gpu_check.run_steps(run)
    assert [s.passed for s in steps] == [True, False, True, True, True, True]
    assert steps[1].line == "raised OSError: disk full"
