"""The ``conv`` group's table for docs/benchmarks.md: ``python -m bench.conv_table``.

For each CNN of ``bench.cnn`` and each thread count (1 and 2 by default), one float32
SGD training step on: the NumPy backend, the Numba backend, PyTorch eager on the CPU
and the plain NumPy im2col implementation (``bench.cnn.PlainNet``), measured together
in rounds that alternate the targets (``bench.timing.measure``), with the step's GFLOP/s
against this machine's float32 GEMM (2048^3 ``np.matmul``, same thread count, same run)
and the peak of the memory NumPy allocates during a step (tracemalloc; PyTorch's
allocator and Numba's runtime are not traced: the Numba kernels' own buffers are a tile
per thread, given in the ``numba tiles`` column as the bound the kernels keep).

Then, unless ``--epoch-samples 0``, one epoch of each net on ``--epoch-samples``
synthetic MNIST-shaped images (``conv_workloads.epoch_runs``: 60,000 by default) on the
NumPy and Numba backends and PyTorch eager, timed once each (``--steps`` or
``--epochs-only`` run one part alone: each is a few minutes on 2 cores).
"""

import argparse
import json
import sys
import time
import tracemalloc

import numpy as np

from bench import cnn, conv_workloads, environment
from bench.runner import limit_threads
from bench.timing import Plan, WallTimer, measure
from fastnn import backends

TARGETS = ("numpy", "numba", "torch", "plain")
MAX_OTHER_LOAD = 0.25  # cores other processes may use while a net is measured (as ``bench``)


def sgemm_gflops(plan, n=2048):
    a, b = (np.random.default_rng(s).standard_normal((n, n)).astype(np.float32) for s in (0, 1))
    timing = measure({"gemm": (WallTimer(), lambda: np.matmul(a, b))}, plan)["gemm"]
    return 2.0 * n**3 / timing.median / 1e9


def measure_quietest(targets, plan, retries, log, max_other_load=MAX_OTHER_LOAD):
    """``measure(targets, plan)``, again up to ``retries`` times while other processes
    used more than ``max_other_load`` cores beside it (another session's tests make a
    2-vCPU host's 2-thread rows meaningless): ``environment.quietest``'s (other load in
    cores, timings, attempts) of the quietest attempt."""
    return environment.quietest(lambda: measure(targets, plan), None, retries,
                                max_other_load, log)


def cases(net, batch, torch):
    """{target: Case} for one step of ``net`` at ``batch``, all from the same data."""
    workload = conv_workloads.cnn_step(net, batch)
    data = workload.inputs()
    made = {name: workload.fastnn(backends.load(name), data) for name in ("numpy", "numba")}
    made["torch"] = workload.torch(torch, "cpu", data)
    made["plain"] = cnn.plain_step(data)
    return made


def traced_peak(step):
    """MiB NumPy (and Python) allocate at the peak of one call, above what was live."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    step()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return (peak - base) / 2**20


def numba_tile_bound(net, threads):
    """MiB the Numba conv kernels hold at most besides their outputs: per thread an
    im2col tile, a product and a column-gradient tile (``conv.tile_width`` numbers per
    output row) and, for the wide tiles, a padded image and its gradient, plus the
    chunks' dW sums."""
    from fastnn.kernels.numba import conv

    shape, total = cnn.IMAGE, 0
    for kind, s in cnn.NETS[net]:
        if kind == "conv":
            C, F, k, pad = s
            H, W = shape[1] + 2 * pad - k + 1, shape[2] + 2 * pad - k + 1
            K = C * k * k
            is_wide = conv.wide(K, F, (1, 1))
            width = conv.tile_width(W, k, is_wide)
            rows = conv.tile_rows(K, H, width)
            padded = 2 * C * (H + k - 1) * width if is_wide else 0
            chunks = -(-cnn.BATCH[net] // conv.CHUNK)
            total = max(total, threads * ((2 * K + F) * rows * width + padded)
                        + chunks * F * (K + 1))
            shape = (F, H, W)
        elif kind == "pool":
            shape = (shape[0], shape[1] // s, shape[2] // s)
    return total * 4 / 2**20


EPOCH_TARGETS = ("numpy", "numba", "torch")


def epoch_rows(threads, samples, torch, log):
    """One epoch per net and target at ``threads`` threads: seconds and samples/s."""
    X, y = conv_workloads.epoch_data(samples)
    rows = []
    for net in cnn.NETS:
        runs = conv_workloads.epoch_runs(net, cnn.BATCH[net], X, y, torch)
        row = {"net": net, "batch": cnn.BATCH[net], "threads": threads, "samples": samples}
        for target in EPOCH_TARGETS:
            start = time.perf_counter()
            runs[target]()
            row[target] = {"s": time.perf_counter() - start}
            row[target]["samples_per_s"] = samples / row[target]["s"]
        log(json.dumps(row))
        rows.append(row)
    return rows


def run(threads_list, rounds, log, steps=True, epoch_samples=0, retries=2):
    import torch

    results = {"environment": environment.describe(torch), "rows": [], "epochs": []}
    backends.load("numba")  # imports Numba before ``limit_threads``, which sets only the
    # pools already loaded: without it the 1-thread rows ran Numba's kernels on every core
    for threads in threads_list:
        limit_threads(threads, torch)
        if epoch_samples:
            results["epochs"] += epoch_rows(threads, epoch_samples, torch, log)
        if not steps:
            continue
        plan = Plan(rounds=rounds, min_rounds=min(5, rounds), budget_seconds=60.0)
        ceiling = sgemm_gflops(plan)
        log(f"{threads} thread(s): sgemm {ceiling:.0f} GFLOP/s")
        for net in cnn.NETS:
            made = cases(net, cnn.BATCH[net], torch)
            load, timings, attempts = measure_quietest(
                {t: (WallTimer(), made[t].step) for t in TARGETS}, plan, retries, log)
            flops = conv_workloads.cnn_flops(net, cnn.BATCH[net])
            row = {"net": net, "batch": cnn.BATCH[net], "threads": threads,
                   "sgemm_gflops": ceiling, "step_gflop": flops / 1e9,
                   "numba_tiles_mib": numba_tile_bound(net, threads),
                   "other_load": load, "attempts": attempts}
            for t in TARGETS:
                median = timings[t].median
                row[t] = {"ms": median * 1e3, "spread": timings[t].spread,
                          "gflops": flops / median / 1e9,
                          "pct_sgemm": 100 * flops / median / 1e9 / ceiling,
                          "traced_peak_mib": None if t == "torch" else traced_peak(made[t].step)}
            log(json.dumps(row))
            results["rows"].append(row)
    return results


def markdown(results):
    env = results["environment"]
    load = ", ".join(f"{x:.1f}" for x in env["load_average"] or [])
    lines = [f"Measured {env['date']}, commit {env['git_commit']}, {env['cpu']} "
             f"({env['cpus_usable']} CPUs usable), numba {env.get('numba', {}).get('version')},"
             f" torch {env['torch']['version']}, load average {load} at the "
             "start; `python -m bench.conv_table`.", ""]
    if results["rows"]:
        lines += ["| net, batch | threads | numpy ms | numba ms | torch ms | plain NumPy ms | "
                  "torch / numba | plain / numpy | numba GFLOP/s (% sgemm) | sgemm GFLOP/s | "
                  "peak MiB: numpy, numba (+tiles), plain | other processes' cores |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- "
                  "| ---: |"]
    for r in results["rows"]:
        ms = {t: r[t]["ms"] for t in TARGETS}
        peaks = (f"{r['numpy']['traced_peak_mib']:.1f}, {r['numba']['traced_peak_mib']:.1f} "
                 f"(+{r['numba_tiles_mib']:.2f}), {r['plain']['traced_peak_mib']:.1f}")
        lines.append(
            f"| {r['net']} B={r['batch']} | {r['threads']} | {ms['numpy']:.1f} | "
            f"{ms['numba']:.1f} | {ms['torch']:.1f} | {ms['plain']:.1f} | "
            f"{ms['torch'] / ms['numba']:.2f}x | {ms['plain'] / ms['numpy']:.2f}x | "
            f"{r['numba']['gflops']:.0f} ({r['numba']['pct_sgemm']:.0f}%) | "
            f"{r['sgemm_gflops']:.0f} | {peaks} | {_other(r)} |")
    if results.get("epochs"):
        if results["rows"]:
            lines.append("")
        lines += ["| net, batch: one epoch | threads | samples | numpy s | numba s | torch s | "
                  "torch / numba | numba samples/s |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in results["epochs"]:
            s = {t: r[t]["s"] for t in EPOCH_TARGETS}
            lines.append(
                f"| {r['net']} B={r['batch']} | {r['threads']} | {r['samples']:,} | "
                f"{s['numpy']:.1f} | {s['numba']:.1f} | {s['torch']:.1f} | "
                f"{s['torch'] / s['numba']:.2f}x | {r['numba']['samples_per_s']:,.0f} |")
    return "\n".join(lines) + "\n"


def _other(row):
    """The other processes' load beside a row, marked busy above ``MAX_OTHER_LOAD``."""
    load = row.get("other_load")
    if load is None:
        return "unknown"
    return f"{load:.2f}" + (" (busy)" if load > MAX_OTHER_LOAD else "")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.conv_table", description=__doc__)
    parser.add_argument("--threads", default="1,2", help="thread counts (default 1,2)")
    parser.add_argument("--rounds", type=int, default=15, help="samples per target")
    parser.add_argument("--json", default=None, help="write the raw results here")
    parser.add_argument("--epoch-samples", type=int, default=60_000,
                        help="images in the epoch rows (default 60000; 0: no epoch rows)")
    parser.add_argument("--epochs-only", action="store_true", help="the epoch rows alone")
    parser.add_argument("--steps", action="store_true", help="the step rows alone")
    parser.add_argument("--retries", type=int, default=2,
                        help="measure a net again, up to this many times, while other "
                             f"processes use more than {MAX_OTHER_LOAD} cores (default 2)")
    args = parser.parse_args(argv)
    if args.epochs_only and (args.steps or not args.epoch_samples):
        parser.error("--epochs-only needs epoch rows: not with --steps or --epoch-samples 0")
    results = run([int(t) for t in args.threads.split(",")], args.rounds,
                  lambda line: print(line, file=sys.stderr, flush=True),
                  steps=not args.epochs_only,
                  epoch_samples=0 if args.steps else args.epoch_samples, retries=args.retries)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    print(markdown(results), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
