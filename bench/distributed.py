"""Data-parallel throughput: the epoch workload (the MLP 784-256-256-10, SGD, batches of
128 over 60,000 x 784 float32 rows) trained under ``mpiexec`` on 1 and 2 ranks with one
thread each, against one process with 2 threads (and with 1), per CPU backend.

Each configuration runs in fresh processes: one untimed epoch (caches, compilation,
thread pools), then timed epochs, the ranks lined up by a collective before each. A
distributed row also reports the time its ranks spent in the per-step gradient sum
(waiting for the slower rank included), its share of the step, and the bytes each rank
contributes per step. Configurations alternate pass by pass, and the CPU time other
processes used meanwhile is recorded; as for the other workloads, a launch measured
while others used more than --max-other-load cores is repeated (--retries times),
keeping the quietest attempt.

Separate launches of one configuration vary by 3-5% on a shared VM (where the arrays
land, what the host does meanwhile), more than a rank's own cost over one process. So
a world of 1 is also measured against one process **paired**: one process under
``mpiexec -n 1`` trains two copies of the model an epoch at a time, one with ``fit``'s
own path and one data-parallel, in the order ABBA, and the row gives the median of
each pair's throughput ratio (process epoch over rank epoch).
"""

import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
from functools import partial
from pathlib import Path

from bench import environment

ROOT = Path(__file__).resolve().parent.parent
NAME = "distributed epoch"
BACKENDS = ("numpy", "numba")  # the CPU backends; MPI between GPUs is not measured here
CONFIGS = (  # (label, ranks, threads per rank, data-parallel)
    ("1 process, 2 threads", 1, 2, False),
    ("1 process, 1 thread", 1, 1, False),
    ("1 rank, 1 thread", 1, 1, True),
    ("2 ranks, 1 thread each", 2, 1, True),
)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMBA_NUM_THREADS")

SCRIPT = """
import json, sys, time
import fastnn
from bench import workloads
from fastnn.distributed import DataParallel

n, batch, rounds, distributed = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), \\
    sys.argv[4] == "1"
backend = fastnn.get_backend()
X, y = workloads.classification_data(n, "float32", seed=7)
model = workloads.mlp_model(backend, "float32")
X, y = backend.asarray(X), backend.asarray(y)
dp = DataParallel() if distributed else None

def epoch():
    return model.fit(X, y, epochs=1, batch_size=batch, lr=0.05, seed=0, distributed=dp)

epoch()
seconds, reduce_seconds, losses = [], [], []
for _ in range(rounds):
    if dp is not None:
        dp.check()  # every rank starts the epoch together
        before = dp.reductions.seconds
    start = time.perf_counter()
    losses.append(epoch()["loss"][0])
    seconds.append(time.perf_counter() - start)
    if dp is not None:
        reduce_seconds.append(dp.reductions.seconds - before)
if dp is None or dp.rank == 0:
    steps = -(-n // batch)
    print(json.dumps({"seconds": seconds, "reduce_seconds": reduce_seconds, "losses": losses,
                      "steps": steps, "ranks": 1 if dp is None else dp.size,
                      "bytes_per_step": dp.reductions.bytes // dp.reductions.count
                      if dp is not None else 0}))
"""


PAIRED = """
import json, sys, time
import fastnn
from bench import workloads
from fastnn.distributed import DataParallel

n, batch, pairs = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
backend = fastnn.get_backend()
X, y = workloads.classification_data(n, "float32", seed=7)
X, y = backend.asarray(X), backend.asarray(y)
models = {"process": workloads.mlp_model(backend, "float32"),
          "rank": workloads.mlp_model(backend, "float32")}
dp = DataParallel()
seconds, losses = {"process": [], "rank": []}, {"process": [], "rank": []}

def epoch(name):
    start = time.perf_counter()
    loss = models[name].fit(X, y, epochs=1, batch_size=batch, lr=0.05, seed=0,
                            distributed=dp if name == "rank" else None)["loss"][0]
    return time.perf_counter() - start, loss

epoch("process"), epoch("rank")
for i in range(pairs):
    for name in ("process", "rank") if i % 2 == 0 else ("rank", "process"):
        took, loss = epoch(name)
        seconds[name].append(took)
        losses[name].append(loss)
print(json.dumps({"seconds": seconds, "losses": losses}))
"""


def missing():
    """Why the distributed rows cannot run here, or None."""
    if importlib.util.find_spec("mpi4py") is None or mpiexec() is None:
        return "mpi4py and mpiexec are not installed (pip install 'fastnn[mpi]')"
    return None


def mpiexec():
    return shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or \
        shutil.which("mpiexec")


def launch(backend, ranks, threads, distributed, n, batch, rounds, timeout=900):
    """One configuration in fresh processes; returns rank 0's report."""
    env = dict(os.environ, FASTNN_BACKEND=backend, **{v: str(threads) for v in THREAD_VARIABLES})
    command = [sys.executable, "-c", SCRIPT, str(n), str(batch), str(rounds),
               "1" if distributed else "0"]
    if distributed:
        command = [mpiexec(), "-n", str(ranks), *command]
    run = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=timeout)
    if run.returncode != 0:
        raise RuntimeError(f"the distributed run ({backend}, {ranks} rank(s), {threads} "
                           f"thread(s)) failed:\n{run.stderr.strip()}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def launch_paired(backend, n, batch, pairs, timeout=900):
    """One process under ``mpiexec -n 1``, one thread, training the model an epoch at a
    time with ``fit``'s own path and data-parallel alternately (see the module
    docstring); returns its report: ``seconds`` and ``losses``, each a list per path."""
    env = dict(os.environ, FASTNN_BACKEND=backend, **{v: "1" for v in THREAD_VARIABLES})
    command = [mpiexec(), "-n", "1", sys.executable, "-c", PAIRED, str(n), str(batch),
               str(pairs)]
    run = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True,
                         timeout=timeout)
    if run.returncode != 0:
        raise RuntimeError(f"the paired run ({backend}) failed:\n{run.stderr.strip()}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def paired_ratio(report):
    """The median over pairs of one process's epoch time over the rank's: the rank's
    throughput as a share of one process's."""
    return statistics.median(p / r for p, r in zip(report["seconds"]["process"],
                                                   report["seconds"]["rank"], strict=True))


def measure(backends, quick=False, log=print, max_other_load=0.25, retries=None):
    """One row per backend and configuration (see the module docstring). A launch
    during which other processes used more than ``max_other_load`` cores is repeated,
    up to ``retries`` times (default 2; quick 0), keeping the quietest attempt."""
    n, passes, rounds, pairs = (2048, 1, 2, 2) if quick else (60_000, 2, 3, 6)
    retries = (0 if quick else 2) if retries is None else retries
    batch = 128
    reports = {}
    for _ in range(passes):
        for backend in backends:
            for label, ranks, threads, distributed in CONFIGS:
                load, got, _ = environment.quietest(
                    partial(launch, backend, ranks, threads, distributed, n, batch, rounds),
                    f"distributed: {backend}, {label}", retries, max_other_load, log,
                    children=True)
                kept = reports.setdefault((backend, label), {**got, "other_load": []})
                if kept is not got:
                    for key in ("seconds", "reduce_seconds", "losses"):
                        kept[key] += got[key]
                kept["other_load"].append(load or 0.0)
    paired = {backend: environment.quietest(
                  partial(launch_paired, backend, n, batch, pairs),
                  f"distributed: {backend}, 1 rank against 1 process, paired", retries,
                  max_other_load, log, children=True)[1]
              for backend in backends}
    return rows(backends, reports, n, batch, paired)


def rows(backends, reports, n, batch, paired=None):
    """The report's rows from the launches' reports (and the paired launches' per
    backend, if given: the 1-rank row's ``vs_process_paired``)."""
    out = []
    for backend in backends:
        rate = {}
        for label, ranks, threads, distributed in CONFIGS:
            got = reports[(backend, label)]
            epoch = statistics.median(got["seconds"])
            rate[label] = n / epoch
            row = {"workload": f"{NAME} {n}x784 B={batch}", "backend": backend,
                   "config": label, "ranks": ranks, "threads": threads,
                   "path": "per step (data-parallel)" if distributed else "fit's own",
                   "epoch_s": epoch, "samples_per_s": n / epoch, "epochs": len(got["seconds"]),
                   "other_load": max((c for c in got["other_load"] if c is not None),
                                     default=None),
                   "loss": statistics.median(got["losses"]),
                   "reduce_ms_per_step": None, "reduce_share": None, "bytes_per_step": None,
                   "vs_2_threads": rate[label] / rate[CONFIGS[0][0]], "efficiency": None,
                   "vs_process_paired": None}
            if distributed:
                reduce = statistics.median(got["reduce_seconds"]) / got["steps"]
                row.update(reduce_ms_per_step=1e3 * reduce,
                           reduce_share=reduce / (epoch / got["steps"]),
                           bytes_per_step=got["bytes_per_step"])
                # against the same per-step path on one rank, times the ranks
                row["efficiency"] = rate[label] / (ranks * rate["1 rank, 1 thread"])
                if ranks == 1 and paired and backend in paired:
                    row["vs_process_paired"] = paired_ratio(paired[backend])
            out.append(row)
    return out


COLUMNS = ("backend", "configuration", "path", "epoch", "samples/s", "vs 2 threads",
           "efficiency", "vs 1 process, paired", "gradient sum / step", "share of step",
           "bytes / step", "others")


def cells(row):
    def optional(value, fmt):
        return "" if value is None else format(value, fmt)

    return (row["backend"], row["config"], row["path"], f"{row['epoch_s']:.3f} s",
            f"{row['samples_per_s']:,.0f}", f"{row['vs_2_threads']:.2f}x",
            optional(row["efficiency"], ".0%"), optional(row.get("vs_process_paired"), ".3f"),
            "" if row["reduce_ms_per_step"] is None else f"{row['reduce_ms_per_step']:.3f} ms",
            optional(row["reduce_share"], ".0%"),
            "" if row["bytes_per_step"] is None else f"{row['bytes_per_step'] / 1e6:.2f} MB",
            optional(row["other_load"], ".2f"))
