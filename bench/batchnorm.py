"""BatchNorm2D's cost in a CNN step: ``python -m bench.batchnorm``.

LeNet-5 (``bench.conv_workloads``) with a ``BatchNorm2D(C, activation="relu")`` after
each conv (the convs without an activation: PyTorch's conv, BatchNorm2d, ReLU), one
float32 SGD step at batch 128, on: the Numba backend, the Numba backend with the
generic (NumPy) BatchNorm passes in place of its kernels (what the kernels replace),
the NumPy backend and PyTorch eager on the CPU, all from the same initial weights and
measured together in alternating rounds (``bench.timing.measure``), at 1 and 2 threads.
Before timing, each target's loss before and after its first step is checked against
PyTorch's.
"""

import argparse
import copy
import json
import sys

import numpy as np

import fastnn
from bench import environment, peers
from bench.conv_table import measure_quietest
from bench.runner import limit_threads
from bench.timing import Plan, WallTimer
from bench.workloads import sgd_step_case
from fastnn import backends
from fastnn.batchnorm import BatchNorm2D
from fastnn.conv import Conv2D
from fastnn.layers import Dense, Flatten
from fastnn.ops import Ops
from fastnn.pooling import MaxPool2D

TARGETS = ("numba", "numba, generic passes", "numpy", "torch")
BATCH = 128


def layers():
    """LeNet-5 with a BatchNorm2D + ReLU after each conv."""
    return [Conv2D(1, 6, 5, padding=2), BatchNorm2D(6, activation="relu"), MaxPool2D(2),
            Conv2D(6, 16, 5), BatchNorm2D(16, activation="relu"), MaxPool2D(2), Flatten(),
            Dense(400, 120, "relu"), Dense(120, 84, "relu"), Dense(84, 10, "softmax")]


def generic_passes(backend):
    """A copy of ``backend`` whose ops table runs the generic BatchNorm passes."""
    other = copy.copy(backend)
    kept = {name: getattr(backend.ops, name) for name in backend.ops.overridden
            if not name.startswith("batchnorm_")}
    other.ops = Ops(backend.xp, **kept)
    return other


def torch_model(torch, model):
    """The PyTorch peer of ``model`` (``layers()``), holding its initial weights."""
    nn, modules = torch.nn, []
    for layer in model.layers:
        if isinstance(layer, Conv2D):
            (top, _), (left, _) = layer.padding
            module = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                               padding=(top, left))
            weight = layer.W.value
        elif isinstance(layer, Dense):
            module, weight = nn.Linear(layer.n_in, layer.n_out), layer.W.value.T
        elif isinstance(layer, BatchNorm2D):
            modules += [nn.BatchNorm2d(layer.channels, eps=layer.eps,
                                       momentum=1.0 - layer.momentum), nn.ReLU()]
            continue
        else:
            modules.append(nn.MaxPool2d(2) if isinstance(layer, MaxPool2D) else nn.Flatten())
            continue
        with torch.no_grad():
            module.weight.copy_(torch.tensor(np.ascontiguousarray(weight)))
            module.bias.copy_(torch.tensor(layer.b.value))
        modules.append(module)
        if isinstance(layer, Dense) and layer.activation.name == "relu":
            modules.append(nn.ReLU())
    return nn.Sequential(*modules)


def cases(torch, batch=BATCH, seed=11):
    """({target: a step function}, {target: (loss before, loss after) its first step})."""
    rng = np.random.default_rng(seed)
    X = rng.random((batch, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, batch)
    numba = backends.load("numba")
    steps, losses = {}, {}
    for target, backend in (("numba", numba), ("numba, generic passes", generic_passes(numba)),
                            ("numpy", backends.load("numpy"))):
        model = fastnn.Sequential(layers(), input_shape=(1, 28, 28), seed=0, backend=backend)
        if target == "numba":
            peer = torch_model(torch, model)
        case = sgd_step_case(backend, model, {"X": X, "y": y})
        case.step()
        losses[target] = tuple(float(v) for v in case.result()[:2])
        steps[target] = case.step
    train_step = peers._trainer(torch, peer, 0.01, torch.nn.functional.cross_entropy)
    Xt, yt = torch.tensor(X), torch.tensor(y)
    first = float(train_step(Xt, yt)[0])
    peer.eval()  # the loss after the step with the running statistics, as fastnn's
    with torch.no_grad():
        losses["torch"] = (first, float(torch.nn.functional.cross_entropy(peer(Xt), yt)))
    peer.train()
    steps["torch"] = lambda: train_step(Xt, yt)
    return steps, losses


def check(losses, rtol=1e-4):
    """Every target's losses before and after its first step are PyTorch's."""
    for target, pair in losses.items():
        if not np.allclose(pair, losses["torch"], rtol=rtol):
            raise RuntimeError(f"{target}'s losses {pair} are not PyTorch's {losses['torch']}")


def run(threads_list, rounds, log, batch=BATCH, retries=2):
    import torch

    results = {"environment": environment.describe(torch), "rows": []}
    backends.load("numba")  # before limit_threads, which sets the pools already loaded
    for threads in threads_list:
        limit_threads(threads, torch)
        steps, losses = cases(torch, batch)
        check(losses)
        plan = Plan(rounds=rounds, min_rounds=min(5, rounds), budget_seconds=60.0)
        load, timings, attempts = measure_quietest(
            {t: (WallTimer(), steps[t]) for t in TARGETS}, plan, retries, log)
        row = {"threads": threads, "batch": batch, "other_load": load, "attempts": attempts,
               "losses": losses, **{t: {"ms": timings[t].median * 1e3} for t in TARGETS}}
        log(json.dumps(row))
        results["rows"].append(row)
    return results


def markdown(results):
    env = results["environment"]
    load = ", ".join(f"{x:.1f}" for x in env["load_average"] or [])
    lines = [f"Measured {env['date']}, commit {env['git_commit']}, {env['cpu']}, load average "
             f"{load} at the start; `python -m bench.batchnorm`.", "",
             "| LeNet-5 + BatchNorm2D, batch | threads | numba ms | numba, generic passes ms | "
             "numpy ms | torch ms | torch / numba | other processes' cores |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in results["rows"]:
        ms = [r[t]["ms"] for t in TARGETS]
        other = "unknown" if r["other_load"] is None else f"{r['other_load']:.2f}"
        lines.append(f"| B={r['batch']} | {r['threads']} | "
                     + " | ".join(f"{v:.2f}" for v in ms)
                     + f" | {ms[3] / ms[0]:.2f}x | {other} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.batchnorm", description=__doc__)
    parser.add_argument("--threads", default="1,2", help="thread counts (default 1,2)")
    parser.add_argument("--rounds", type=int, default=25, help="alternating rounds (25)")
    parser.add_argument("--batch", type=int, default=BATCH, help="images a step (128)")
    args = parser.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    results = run(threads, args.rounds, lambda line: print(line, file=sys.stderr),
                  batch=args.batch)
    print(markdown(results), end="")


if __name__ == "__main__":
    main()
