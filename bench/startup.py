"""Start-up time of a backend, in a fresh process: import fastnn, build the MLP
784-256-256-10 and run its first training step, with FASTNN_BACKEND=<name>. The step
is taken either op by op (``compute_gradients`` + ``optimizer.step``) or by ``fit``
(one epoch of one batch), which compiles a different kernel on the Numba backend.

Cold runs get a new, empty NUMBA_CACHE_DIR (every JIT kernel compiles); cached runs
reuse the directory a cold run filled.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = """
import json, time
start = time.perf_counter()
import numpy as np
import fastnn
from fastnn import Dense
model = fastnn.Sequential([Dense(784, 256, "relu"), Dense(256, 256, "relu"),
                           Dense(256, 10, "softmax")], seed=0)
rng = np.random.default_rng(0)
X, y = rng.standard_normal((128, 784)), rng.integers(0, 10, 128)
if FIT:
    loss = model.fit(X, y, epochs=1, batch_size=128, lr=0.01)["loss"][0]
else:
    X, Y = model.prepare(X, y)
    loss, _ = model.compute_gradients(X, Y)
    fastnn.SGD(lr=0.01).step(model.parameters(), model.backend)
    loss = float(loss)
print(json.dumps({"seconds": time.perf_counter() - start, "backend": model.backend.name,
                  "loss": loss}))
"""


HOW = {"op-by-op step": False, "fit, one batch": True}


def first_step_seconds(backend, cache_dir, how="op-by-op step", timeout=600):
    """Seconds from ``import fastnn`` to the end of the first training step, taken
    ``how`` (a key of ``HOW``)."""
    env = dict(os.environ, FASTNN_BACKEND=backend, NUMBA_CACHE_DIR=str(cache_dir))
    script = f"FIT = {HOW[how]}\n{SCRIPT}"
    run = subprocess.run([sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=timeout)
    if run.returncode != 0:
        raise RuntimeError(f"the start-up run on {backend!r} failed:\n{run.stderr.strip()}")
    report = json.loads(run.stdout.strip().splitlines()[-1])
    if report["backend"] != backend:
        raise RuntimeError(f"asked for {backend!r} but the run used {report['backend']!r}")
    return report["seconds"]


def measure_startup(backend, repeats=3, how="op-by-op step"):
    """{'cold': median seconds with an empty cache, 'cached': with the warm cache}."""
    cold, cached = [], []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory(prefix="fastnn-bench-cache-") as cache_dir:
            cold.append(first_step_seconds(backend, cache_dir, how))
            cached.append(first_step_seconds(backend, cache_dir, how))
    return {"how": how, "cold": statistics.median(cold), "cached": statistics.median(cached),
            "repeats": repeats}
