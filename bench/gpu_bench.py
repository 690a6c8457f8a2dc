"""The GPU check's benchmark step: the workloads of ``workloads.gpu_catalog`` through
the report runner, on the CuPy backend beside NumPy and PyTorch CUDA eager (TF32 off
on both), and the issue's targets read off the rows: fused elementwise ops at >= 70%
of the device copy measured alongside, the MLP 784-1024-1024-10 step within 1.15x of
PyTorch, the 60,000 x 784 epoch at least as fast as PyTorch's, the LeNet-5 training
step at batch 512 within 2x of PyTorch's, and the planar net faster than NumPy (also
shown without CUDA graphs, on a second CuPy backend). The
CPU rehearsal runs the same at quick sizes on NumPy, beside PyTorch on the CPU where
it is installed, and reads the same targets off those rows.
"""

import json

from bench import report, runner, workloads
from bench.gpu_steps import Step
from fastnn import backends
from fastnn.backends import cupy_backend

PLAN = {"rounds": 5, "settle": 0.05}  # medians of 5 samples (at least 3) per target
COPY_SHARE = 70.0  # % of the copy rate a fused elementwise op must reach
MLP_RATIO = 1.15  # the MLP step's time over PyTorch CUDA eager's, at most
LENET_RATIO = 2.0  # the LeNet-5 step's time over PyTorch CUDA eager's, at most
PEER = {"cuda": "torch-cuda", "cpu": "torch-cpu"}


def benchmarks(run):
    """Run the workloads; write bench.json and bench.md; pass when no row is WRONG,
    DIFF or ERROR (the targets are reported, not required)."""
    torch = runner.import_torch(runner.Config())
    if torch is not None:
        tf32_off(torch)
    chosen = workloads.gpu_catalog(quick=run.dry_run)
    planar = [w for w in chosen if w.group == "planar"]
    targets = [] if run.dry_run else [run.backend]
    result = measure(run, [w for w in chosen if w.group != "planar"], targets)
    if not run.dry_run:  # the planar net also without CUDA graphs, in the same rounds
        eager = cupy_backend.create()  # a second backend object: its own settings
        eager.captures, eager.label = False, "cupy-no-graphs"
        targets = [run.backend, eager]
    # PyTorch's planar net is thousands of eager launches (seconds a call) and no target
    merge(result, measure(run, planar, targets, torch=False))
    (run.out / "bench.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    (run.out / "bench.md").write_text(report.markdown(result))
    run.log("benchmarks", report.text(result))
    problems = report.problems(result)
    goals = targets_met(result, run.backend, PEER["cpu" if run.dry_run else "cuda"])
    line = (f"{len(chosen)} workloads on {', '.join(result['targets'])}; "
            + ("no WRONG, DIFF or ERROR row" if not problems else "; ".join(problems[:3])))
    tf32 = {"fastnn": [getattr(backends.load(t), "tf32", None) for t in targets if
                       isinstance(t, str)],
            "torch": None if torch is None else getattr(
                torch.backends.cuda.matmul, "fp32_precision", torch.get_float32_matmul_precision())}
    return Step("benchmarks", not problems, line, details={"targets": goals, "tf32": tf32})


def tf32_off(torch):
    """Full float32 matmuls in PyTorch, as fastnn's CuPy backend does by default."""
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):  # PyTorch 2.9 and later
        matmul.fp32_precision = "ieee"
    else:
        torch.set_float32_matmul_precision("highest")


def measure(run, chosen, targets, torch=True):
    """The report runner on ``chosen`` with NumPy, ``targets`` and (``torch``) the
    PyTorch peer: CUDA on a GPU, the CPU in the rehearsal."""
    device = "cpu" if run.dry_run else "cuda"
    config = runner.Config(quick=run.dry_run, backends=targets, torch=torch,
                           torch_devices=(device,), workloads=chosen, startup=False,
                           retries=0, rounds=None if run.dry_run else PLAN["rounds"],
                           settle=None if run.dry_run else PLAN["settle"],
                           command="python -m bench.gpu_check")
    return runner.run(config, log=lambda line: run.log("benchmark progress", line))


def merge(result, more):
    """Add another run's rows, targets and ceilings to ``result``."""
    result["rows"] += more["rows"]
    result["targets"] += [t for t in more["targets"] if t not in result["targets"]]
    result["ceilings"] += more["ceilings"]


def targets_met(result, backend, peer):
    """[{'target', 'met', 'line'}] for each of the issue's targets, from the rows of
    ``backend`` and the PyTorch ``peer`` target."""
    rows = {(r["workload"], r["target"]): r for r in result["rows"]}

    def median(group, target):
        found = [r for r in result["rows"] if r["group"] == group and r["target"] == target
                 and r["median_s"] is not None and "8 GEMMs" not in r["workload"]]
        return found[0] if found else None

    goals = []
    shares = [(r["ceiling_pct"], r["workload"]) for r in result["rows"]
              if r["group"] == "elementwise" and r["target"] == backend
              and r["ceiling_pct"] is not None]
    if shares:
        low = min(shares)
        met = sum(share >= COPY_SHARE for share, _ in shares)
        goals.append({"target": f"elementwise >= {COPY_SHARE:.0f}% of copy",
                      "met": met == len(shares),
                      "line": f"{met} of {len(shares)} rows (lowest: {low[1]} at {low[0]:.0f}%)"})
    for group, what, limit in (("mlp", "MLP step", MLP_RATIO), ("epoch", "epoch", 1.0)):
        mine, theirs = median(group, backend), median(group, peer)
        if mine and theirs:
            ratio = mine["median_s"] / theirs["median_s"]
            goals.append({"target": f"{what} <= {limit:g}x {peer}", "met": ratio <= limit,
                          "line": f"{mine['workload']}: {report.seconds(mine['median_s'])} vs "
                                  f"{report.seconds(theirs['median_s'])} = {ratio:.2f}x"})
    lenet = [r for r in result["rows"] if r["workload"].startswith("LeNet-5 step")
             and r["median_s"] is not None]
    mine, theirs = ({r["target"]: r for r in lenet}.get(t) for t in (backend, peer))
    if mine and theirs:
        ratio = mine["median_s"] / theirs["median_s"]
        goals.append({"target": f"LeNet-5 step <= {LENET_RATIO:g}x {peer}",
                      "met": ratio <= LENET_RATIO,
                      "line": f"{mine['workload']}: {report.seconds(mine['median_s'])} vs "
                              f"{report.seconds(theirs['median_s'])} = {ratio:.2f}x"})
    planar = median("planar", backend)
    if planar and planar["speedup"] is not None:
        eager = rows.get((planar["workload"], "cupy-no-graphs"))
        shown = (f"; without graphs {report.seconds(eager['median_s'])}"
                 if eager and eager["median_s"] else "")
        goals.append({"target": "planar faster than NumPy", "met": planar["speedup"] > 1.0,
                      "line": f"{report.seconds(planar['median_s'])}, {planar['speedup']:.2f}x "
                              f"NumPy{shown}"})
    return goals
