"""``python -m bench.gpu_check --out DIR``: prove the CuPy backend on a GPU in one run.

Runs from the raw checkout (PYTHONPATH, nothing installed), within ``--budget``
seconds, and writes to DIR: summary.md and summary.json (every step and its facts),
steps.log (each command and its output), tests.log and tests.xml (the GPU tests),
bench.json and bench.md (the benchmark report): 7 files. It ends by printing a
one-screen summary, and exits 0 only when every step passed. The steps:

1. environment: nvidia-smi's GPU, driver and CUDA version; CuPy, NumPy, PyTorch and
   the other packages (with where they were imported from); whether fastnn's cupy
   backend can run. On a GPU, the check stops after ``fastnn info`` when it cannot.
2. ``fastnn info``; 3. ``fastnn check --backends cupy``;
4. the GPU tests: tests/test_cupy_gpu.py, the kernel tests and every backend-neutral
   test run on cupy, under a global FASTNN_BACKEND=cupy; any skip fails the step;
5. ``fastnn train --backend cupy``: the planar 2-4-1 net and Adam on moons;
6. the benchmarks of ``bench.gpu_bench`` and the issue's targets (reported, not
   required).

``--dry-run`` is the rehearsal on a machine without a GPU (CI runs it from
tests/test_gpu_check.py): the same steps on the NumPy backend at small sizes, the GPU
tests collected and test_cupy_gpu.py run to show its skips are counted. docs/gpu-check.md
gives the one command that runs this on the device machine.
"""

import argparse
import json
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from bench import gpu_bench, gpu_steps

STEPS = (gpu_steps.environment, gpu_steps.info, gpu_steps.check, gpu_steps.gpu_tests,
         gpu_steps.training, gpu_bench.benchmarks)
NEEDS_THE_BACKEND = ("fastnn check", "GPU tests", "CLI training", "benchmarks")
STEP_NAMES = ("environment", "fastnn info", *NEEDS_THE_BACKEND)
WIDTH = 160  # printed lines wrap at this width, each entry to at most 3 lines (the
# files keep everything)


def parse(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check",
                                     description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    parser.add_argument("--out", required=True, type=Path, help="folder for the results")
    parser.add_argument("--dry-run", action="store_true",
                        help="rehearse on the CPU: the NumPy backend, small sizes")
    parser.add_argument("--budget", type=float, default=390.0,
                        help="seconds for the whole check (default 390)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="pytest-xdist workers for the GPU tests (default: 4 where "
                             "pytest-xdist is installed, else none)")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder for the training runs' own files (default: a temporary "
                             "one, removed at the end)")
    args = parser.parse_args(argv)
    if args.budget <= 0:
        parser.error("--budget must be positive")
    return args


def main(argv=None):
    args = parse(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in ("steps.log", "tests.log", "tests.xml", "bench.json", "bench.md"):
        (args.out / name).unlink(missing_ok=True)  # nothing left from an earlier run
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        run = gpu_steps.Run(out=args.out, work=args.work or Path(scratch), dry_run=args.dry_run,
                            deadline=started + args.budget, jobs=_jobs(args.jobs),
                            backend="numpy" if args.dry_run else "cupy")
        run.work.mkdir(parents=True, exist_ok=True)
        steps = run_steps(run)
    summary = summarize(run, steps, time.monotonic() - started)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")
    lines = summary_lines(summary)
    (args.out / "summary.md").write_text("```text\n" + "\n".join(lines) + "\n```\n")
    print("\n".join(screen(lines)))
    return 0 if summary["passed"] else 1


def screen(lines):
    """``lines`` wrapped for a terminal: at most 3 lines of WIDTH characters each."""
    out = []
    for line in lines:
        indent = " " * (len(line) - len(line.lstrip()) + 4)
        wrapped = textwrap.wrap(line, WIDTH, subsequent_indent=indent, max_lines=3,
                                placeholder=" ... (see summary.md)")
        out += wrapped or [""]
    return out


def _jobs(jobs):
    if jobs is not None:
        return jobs
    import importlib.util

    return 4 if importlib.util.find_spec("xdist") is not None else 0


def run_steps(run):
    """Every step in order; a step that raises fails with its error, and on a GPU the
    steps that need the backend are not run when the environment step found it
    unusable, or when the time is up."""
    steps, blocked = [], None
    for make in STEPS:
        name = STEP_NAMES[len(steps)]
        if blocked and name in NEEDS_THE_BACKEND:
            steps.append(gpu_steps.Step(name, False, f"not run: {blocked}"))
            continue
        if run.left() <= 0:
            steps.append(gpu_steps.Step(name, False, "not run: the check's time budget is spent"))
            continue
        begun = time.monotonic()
        try:
            step = make(run)
        except Exception as error:  # the check reports a broken step and goes on
            step = gpu_steps.Step(name, False, f"raised {type(error).__name__}: {error}")
            run.log(f"{name} raised", repr(error))
        step.seconds = time.monotonic() - begun
        steps.append(step)
        if name == "environment" and not step.passed and not run.dry_run:
            blocked = "the environment step found no usable GPU backend (see above)"
    return steps


def summarize(run, steps, seconds):
    env = steps[0].details
    bench = next((s for s in steps if s.name == "benchmarks"), None)
    targets = [*(bench.details.get("targets", []) if bench else []),
               *transfer_target(next((s for s in steps if s.name == "GPU tests"), None))]
    return {
        "mode": "CPU rehearsal (--dry-run)" if run.dry_run else "GPU run",
        "passed": all(s.passed for s in steps),
        "seconds": seconds,
        "git_commit": env.get("git_commit"),
        "device": env.get("nvidia_smi"),
        "steps": [{"name": s.name, "passed": s.passed, "seconds": s.seconds, "line": s.line,
                   "details": s.details} for s in steps],
        "targets": targets,
        "files": sorted(p.name for p in run.out.iterdir()) + ["summary.json", "summary.md"],
        "out": str(run.out),
    }


def transfer_target(tests):
    """The counted guard's target (no host<->device copy or wait inside a training
    step), from the GPU tests that assert it; [] when they did not run."""
    watched = tests.details.get("watched", {}) if tests else {}
    if not watched:
        return []
    outcomes = ", ".join(f"{name} {outcome}" for name, outcome in sorted(watched.items()))
    return [{"target": "no transfer or wait inside a training step",
             "met": len(watched) == len(gpu_steps.TRANSFER_TESTS)
             and all(o == "passed" for o in watched.values()), "line": outcomes}]


def summary_lines(summary):
    """The one-screen summary printed at the end."""
    verdict = "PASSED" if summary["passed"] else "FAILED"
    passed = sum(s["passed"] for s in summary["steps"])
    lines = [f"GPU check, {summary['mode']}, commit {summary['git_commit'] or '?'}: {verdict} "
             f"({passed} of {len(summary['steps'])} steps passed) in {summary['seconds']:.0f} s"]
    for s in summary["steps"]:
        mark = "pass" if s["passed"] else "FAIL"
        lines.append(f"  {mark}  {s['name']:<13} {s['seconds']:6.1f} s  {s['line']}")
    if summary["targets"]:
        lines.append("targets (benchmarks, medians side by side in one run):" if summary["mode"]
                     == "GPU run" else "targets (read off the rehearsal's CPU rows to exercise "
                                       "the code; they say nothing about a GPU):")
        lines += [f"  {'met   ' if t['met'] else 'missed'}  {t['target']}: {t['line']}"
                  for t in summary["targets"]]
    files = sorted(set(summary["files"]))
    lines.append(f"files in {summary['out']}: {', '.join(files)}")
    return lines


if __name__ == "__main__":
    sys.exit(main())
