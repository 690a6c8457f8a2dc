"""The steps of the GPU check (``bench.gpu_check``), each a function of a ``Run``
returning a ``Step``: what ran, whether it passed, one line to show, and details for
the JSON summary. On a GPU each step proves a part of the CuPy backend; in the CPU
rehearsal (``--dry-run``) the same code runs on the NumPy backend at small sizes, and
the GPU tests are only collected and their skips counted.
"""

import importlib
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLI = "import sys; from fastnn.cli import main; sys.exit(main(sys.argv[1:]))"
GPU_TESTS = ["tests", "bench", "-k", "cupy"]  # test_cupy_*.py and every test run on cupy
# Needs fastnn installed (importlib.metadata, `python -I`) and ruff; the check runs the
# raw checkout through PYTHONPATH, and CI runs these tests on every change.
NOT_FROM_A_CHECKOUT = "tests/test_packaging.py"
TRANSFER_TESTS = (  # the counted guard: no host<->device copy inside a training step
    "test_training_an_epoch_on_device_data_makes_no_per_step_transfers",
    "test_replayed_epochs_move_nothing_between_host_and_device_inside_a_chunk",
    "test_a_training_step_never_synchronizes", "test_replays_never_synchronize",
    "test_a_cnn_epoch_on_device_data_makes_no_per_step_transfers",
    "test_a_cnn_training_step_never_synchronizes")
PACKAGES = ("numpy", "cupy", "torch", "numba", "array_api_compat", "array_api_strict",
            "pytest", "pytest_benchmark", "xdist")


@dataclass
class Step:
    name: str
    passed: bool
    line: str  # one line for the summary
    seconds: float = 0.0
    details: dict = field(default_factory=dict)


@dataclass
class Run:
    """One run of the check: where it writes, whether it rehearses, its deadline."""

    out: Path
    work: Path
    dry_run: bool
    deadline: float  # time.monotonic() by which everything must be done
    jobs: int = 0  # pytest-xdist workers for the GPU tests (0: none)
    backend: str = "cupy"

    def left(self):
        return self.deadline - time.monotonic()

    def log(self, title, text):
        """Append a titled section to steps.log."""
        with open(self.out / "steps.log", "a") as f:
            f.write(f"===== {title} =====\n{text.rstrip()}\n\n")

    def command(self, argv, log_path=None, timeout=None, env=None):
        """Run ``argv`` (in the checkout, in its own process group) to ``log_path`` or
        steps.log; (exit status or None on timeout, its output). A command that runs
        out of time is killed with every process it started."""
        timeout = max(1.0, min(timeout or self.left(), self.left()))
        path = log_path or self.work / "command.log"
        with open(path, "w") as f:
            proc = subprocess.Popen(argv, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                                    env={**os.environ, **(env or {})}, start_new_session=True)
            try:
                status = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                status = None
        output = Path(path).read_text()
        if log_path is None:
            shown = " ".join(argv[3:] if argv[1:3] == ["-c", CLI] else argv)
            self.log(f"$ {shown} (exit {status})", output)
        return status, output

    def fastnn(self, *args, timeout=None):
        """The ``fastnn`` command, from the checkout."""
        return self.command([sys.executable, "-c", CLI, *map(str, args)], timeout=timeout)


def environment(run):
    """Versions, the GPU as nvidia-smi and CuPy see it, and whether fastnn's cupy
    backend can run (a GPU run stops here when it cannot)."""
    from bench.environment import git_commit  # imports fastnn: here, like the line below
    from fastnn import backends

    facts = {"python": platform.python_version(), "executable": sys.executable,
             "platform": platform.platform(), "checkout": str(ROOT),
             "git_commit": git_commit(), "packages": {p: _package(p) for p in PACKAGES},
             "environment": {k: v for k, v in os.environ.items()
                             if k.startswith(("FASTNN_", "CUDA_", "CUPY_")) or k == "PYTHONPATH"}}
    facts["nvidia_smi"] = _nvidia_smi()
    facts["cupy"] = _cupy_facts()
    facts["torch"] = _torch_facts()
    facts["backends"] = backends.availability()
    reason = facts["backends"].get(run.backend)
    lines = [f"{name}: {value}" for name, value in facts.items() if name != "packages"]
    lines += [f"{name}: {value}" for name, value in facts["packages"].items()]
    run.log("environment", "\n".join(lines))
    smi, cupy_facts = facts["nvidia_smi"], facts["cupy"]
    device = (f"{smi['name']}, driver {smi['driver']}, CUDA {smi['cuda']} (nvidia-smi)"
              if smi.get("name") else f"no nvidia-smi GPU ({smi.get('error')})")
    versions = ", ".join(f"{p} {v['version']}" for p, v in facts["packages"].items()
                         if v and p in ("numpy", "cupy", "torch", "array_api_compat"))
    line = f"{device}; Python {facts['python']}, {versions}"
    if cupy_facts.get("runtime"):
        line += f"; CuPy's CUDA runtime {cupy_facts['runtime']}, device {cupy_facts['device']}"
    passed = reason is None and (run.dry_run or bool(smi.get("name")))
    if reason is not None:  # first: the reason the check stops
        line = f"the {run.backend!r} backend cannot run here: {reason}; {line}"
    return Step("environment", passed, line, details=facts)


def info(run):
    """``fastnn info`` as text and as JSON: the backend available, the GPU listed."""
    status, text = run.fastnn("info", timeout=120)
    json_status, output = run.fastnn("info", "--json", timeout=120)
    try:
        report = json.loads(output)
    except ValueError:
        return Step("fastnn info", False, f"fastnn info --json printed no JSON (exit "
                                          f"{json_status})", details={"output": output})
    entry = report["backends"][run.backend]
    devices = report["gpu"]["devices"]
    passed = status == json_status == 0 and entry["available"] and (run.dry_run or bool(devices))
    shown = "; ".join(f"GPU {d['index']}: {d['name']}, {d['memory_total_bytes'] / 2**30:.1f} "
                      f"GiB" for d in devices) or f"no GPU: {report['gpu']['reason']}"
    state = "available" if entry["available"] else f"unavailable ({entry['reason']})"
    return Step("fastnn info", passed, f"{run.backend} {state}; {shown}", details=report)


def check(run):
    """``fastnn check --backends <backend>``: gradient checks and parity with NumPy."""
    status, output = run.fastnn("check", "--backends", run.backend, timeout=180)
    last = output.strip().splitlines()[-1] if output.strip() else "(no output)"
    return Step("fastnn check", status == 0, f"{last} ({run.backend})",
                details={"exit": status, "output": output})


def gpu_tests(run):
    """The GPU tests: test_cupy_gpu.py, the kernel tests and every backend-neutral test
    parametrized on cupy (``-k cupy``), with a global FASTNN_BACKEND=cupy (the suite
    must set it aside). On a GPU, any skipped test fails the step. The rehearsal
    collects the same selection and runs test_cupy_gpu.py, whose tests all skip
    without a GPU: the count shows the skips are seen."""
    xml_path = run.out / "tests.xml"
    base = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs",
            f"--ignore={NOT_FROM_A_CHECKOUT}"]
    env = {"FASTNN_BACKEND": "cupy"}
    if run.dry_run:
        status, output = run.command([*base, "--collect-only", "-q", *GPU_TESTS],
                                     timeout=120, env=env)
        match = re.search(r"(\d+)/\d+ tests collected", output)
        selected = int(match.group(1)) if match else 0
    workers = ["-n", str(run.jobs)] if run.jobs else []
    if run.dry_run:
        argv = [*base, "-v", f"--junitxml={xml_path}", *workers, "tests/test_cupy_gpu.py"]
    else:
        selected = None
        argv = [*base, "-v", f"--junitxml={xml_path}", *workers, *GPU_TESTS]
    run.log("GPU tests", f"$ FASTNN_BACKEND=cupy {' '.join(argv)}  (output: tests.log)")
    started = time.monotonic()
    status, output = run.command(argv, log_path=run.out / "tests.log", timeout=run.left() - 150
                                 if not run.dry_run else 120, env=env)
    counts = junit_counts(xml_path, TRANSFER_TESTS) if xml_path.exists() else None
    if counts is None:
        line = (f"pytest {'ran out of time' if status is None else f'exited {status}'} "
                f"before writing its report; see tests.log")
        return Step("GPU tests", False, line, details={"exit": status})
    ran = f"{counts['passed']} passed, {counts['skipped']} skipped, {counts['failed']} failed"
    ran += f" in {time.monotonic() - started:.0f} s"
    if run.dry_run:
        passed = (status == 0 and selected > 100 and counts["total"] > 0
                  and counts["skipped"] == counts["total"])
        line = (f"{selected} GPU tests selected; test_cupy_gpu.py here: {ran} (each skip would "
                f"fail the check on a GPU: {counts['reasons'][0] if counts['reasons'] else '-'})")
    else:
        passed = status == 0 and counts["total"] > 0 and counts["skipped"] == 0
        line = ran + "".join(f"; SKIPPED (fails the check): {r}" for r in counts["reasons"][:3])
        line += "".join(f"; FAILED: {name}" for name in counts["failures"][:5])
    if NOT_FROM_A_CHECKOUT:
        line += f"; {NOT_FROM_A_CHECKOUT} left out (it needs fastnn installed)"
    return Step("GPU tests", passed, line, details={"exit": status, "selected": selected,
                                                   **counts})


def junit_counts(path, watched=()):
    """Totals, skip reasons and failing test names from a JUnit XML report, and the
    outcome of each test named in ``watched`` (by function name)."""
    cases = ET.parse(path).getroot().iter("testcase")
    counts = {"total": 0, "passed": 0, "skipped": 0, "failed": 0, "reasons": [], "failures": [],
              "watched": {}}
    for case in cases:
        counts["total"] += 1
        name = f"{case.get('classname')}::{case.get('name')}"
        skipped = case.find("skipped")
        if skipped is not None:
            outcome = "skipped"
            reason = skipped.get("message", "")
            if reason not in counts["reasons"]:
                counts["reasons"].append(reason)
        elif case.find("failure") is not None or case.find("error") is not None:
            outcome = "failed"
            counts["failures"].append(name)
        else:
            outcome = "passed"
        counts[outcome] += 1
        if case.get("name") in watched:
            counts["watched"][case.get("name")] = outcome
    return counts


def training(run):
    """``fastnn train`` on the backend: the planar 2-4-1 net (full batch: replayed
    epochs on the GPU) and moons with Adam in shuffled mini-batches, each checked for
    the accuracy it must reach."""
    epochs = 1000 if run.dry_run else 10_000
    runs = {
        "planar": (["--dataset", "planar", "--arch", "2-4-1", "--hidden-activation", "tanh",
                    "--init", "normal:0.01", "--lr", 1.2, "--epochs", epochs, "--test-size", 0,
                    "--seed", 2], "train", 0.85),
        "moons": (["--dataset", "moons", "--n-samples", 2000, "--epochs", 5, "--batch-size", 64,
                   "--optimizer", "adam", "--lr", 0.01, "--seed", 0], "test", 0.8),
    }
    parts, details, passed = [], {}, True
    for name, (argv, split, least) in runs.items():
        out = run.work / name
        started = time.monotonic()
        status, output = run.fastnn("train", *argv, "--backend", run.backend, "--no-plots",
                                    "--out", out, timeout=180)
        seconds = time.monotonic() - started
        try:
            metrics = json.loads((out / "metrics.json").read_text())
        except (OSError, ValueError):
            metrics = None
        details[name] = {"exit": status, "seconds": seconds, "metrics": metrics}
        ok = (status == 0 and metrics is not None and metrics.get("backend") == run.backend
              and metrics[split]["accuracy"] >= least)
        passed &= ok
        shown = f"{metrics[split]['accuracy']:.1%}" if metrics else f"exit {status}"
        parts.append(f"{name} {split} accuracy {shown} (needs {least:.0%}) in {seconds:.1f} s")
    return Step("CLI training", passed, f"on {run.backend}: " + "; ".join(parts), details=details)


def _package(name):
    """{'version', 'path'} of an importable package, or None."""
    if importlib.util.find_spec(name) is None:
        return None
    try:
        module = importlib.import_module(name)
    except Exception as error:  # installed but broken: say so in the report
        return {"version": f"does not import: {error}", "path": None}
    return {"version": getattr(module, "__version__", "?"),
            "path": str(Path(module.__file__).parent) if module.__file__ else None}


def _nvidia_smi():
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return {"error": "nvidia-smi is not on the PATH"}
    query = [smi, "--query-gpu=name,driver_version,memory.total,compute_cap",
             "--format=csv,noheader"]
    try:
        first = subprocess.run(query, capture_output=True, text=True, timeout=60)
        header = subprocess.run([smi], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError) as error:
        return {"error": f"nvidia-smi failed: {error}"}
    if first.returncode != 0 or not first.stdout.strip():
        return {"error": f"nvidia-smi failed: {first.stderr.strip() or first.stdout.strip()}"}
    name, driver, memory, capability = [x.strip() for x in
                                        first.stdout.strip().splitlines()[0].split(",")]
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", header)
    return {"name": name, "driver": driver, "memory": memory, "compute_capability": capability,
            "cuda": cuda.group(1) if cuda else None}


def _cupy_facts():
    if importlib.util.find_spec("cupy") is None:
        return {"error": "CuPy is not installed"}
    try:
        import cupy

        facts = {"version": cupy.__version__, "available": bool(cupy.cuda.is_available())}
        if facts["available"]:
            runtime = cupy.cuda.runtime
            facts["runtime"] = runtime.runtimeGetVersion()
            facts["driver"] = runtime.driverGetVersion()
            facts["device"] = runtime.getDeviceProperties(0)["name"].decode()
        return facts
    except Exception as error:  # a broken CUDA set-up is a fact to report, not a crash
        return {"error": f"{type(error).__name__}: {error}"}


def _torch_facts():
    if importlib.util.find_spec("torch") is None:
        return {"error": "PyTorch is not installed"}
    try:
        import torch

        facts = {"version": torch.__version__, "cuda": torch.version.cuda,
                 "gpu": torch.cuda.is_available(),
                 "float32_matmul_precision": torch.get_float32_matmul_precision()}
        if facts["gpu"]:
            facts["device"] = torch.cuda.get_device_name(0)
        return facts
    except Exception as error:
        return {"error": f"{type(error).__name__}: {error}"}

