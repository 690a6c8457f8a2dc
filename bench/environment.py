"""What a benchmark run ran on: CPU, load, thread settings, BLAS and library versions.

``describe()`` is called after the workloads ran, so every thread pool that was
loaded (OpenBLAS, PyTorch's OpenMP and MKL, Numba's) is seen and recorded.
"""

import datetime
import importlib.util
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import fastnn

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMBA_NUM_THREADS", "NUMBA_THREADING_LAYER", "NUMBA_CACHE_DIR",
                    "FASTNN_BACKEND", "CUDA_VISIBLE_DEVICES")


def cpu_model():
    """The CPU's model name from /proc/cpuinfo (the platform's name elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average():
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def describe(torch=None):
    """A JSON-ready description of this machine and process."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count())
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cpus_usable": len(cpus),
        "load_average": load_average(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "fastnn": fastnn.__version__,
        "git_commit": git_commit(),
        "numpy": np.__version__,
        "blas": _blas(),
        "thread_pools": _thread_pools(),
        "environment": {k: os.environ[k] for k in THREAD_VARIABLES if k in os.environ},
    }
    info.update(_numba())
    if torch is not None:
        info["torch"] = {"version": torch.__version__, "threads": torch.get_num_threads(),
                         "interop_threads": torch.get_num_interop_threads(),
                         "cuda": torch.cuda.is_available()}
    if "cupy" in sys.modules:
        info["cupy"] = _cupy(sys.modules["cupy"])
    return info


def git_commit():
    """The checkout's short commit id, or None (not a git checkout, no git)."""
    try:
        run = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, cwd=Path(__file__).parent, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return run.stdout.strip() or None


def _blas():
    """NumPy's BLAS as its build reports it."""
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    except (KeyError, TypeError, ValueError):
        return None
    return {k: blas.get(k) for k in ("name", "version", "openblas configuration") if k in blas}


def _thread_pools():
    """Every loaded thread pool with its thread count (needs threadpoolctl)."""
    if importlib.util.find_spec("threadpoolctl") is None:
        return "threadpoolctl is not installed (pip install 'fastnn[bench]')"
    import threadpoolctl

    keys = ("user_api", "internal_api", "version", "num_threads", "threading_layer")
    return [{k: pool.get(k) for k in keys} for pool in threadpoolctl.threadpool_info()]


def _numba():
    if importlib.util.find_spec("numba") is None:
        return {}
    try:
        import numba
    except ImportError as error:
        return {"numba": f"does not import: {error}"}
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        layer = "not started"
    return {"numba": {"version": numba.__version__, "threads": numba.get_num_threads(),
                      "threading_layer": layer}}


def _cupy(cupy):
    try:
        device = cupy.cuda.Device()
        name = cupy.cuda.runtime.getDeviceProperties(device.id)["name"].decode()
    except Exception as error:  # a description only, never a reason to fail the run
        name = f"unavailable: {error}"
    return {"version": cupy.__version__, "device": name}


def quietest(start, what, retries, max_other_load, log, children=False):
    """``start()``, repeated up to ``retries`` times while other processes used more than
    ``max_other_load`` cores beside it (``children``: the CPU time of the child processes
    it waits for counts as its own); (their cores, its result, attempts) of the quietest
    attempt. ``what``, if given, is logged before each attempt. Where /proc/stat cannot
    be read the cores are None and it runs once."""
    attempts = []
    while len(attempts) <= retries:
        if what:
            log(what)
        with OtherLoad(children=children) as other:
            got = start()
        attempts.append((other.cores, got))
        if other.cores is None or other.cores <= max_other_load or len(attempts) > retries:
            break
        log(f"  busy: other processes used {other.cores:.2f} cores; again")
    cores, got = min(attempts, key=lambda attempt: attempt[0] or 0.0)
    return cores, got, len(attempts)


class OtherLoad:
    """CPU time that other processes used while a block ran, in cores (Linux only):
    the machine's busy time from /proc/stat minus this process's own CPU time, over the
    wall time. A row measured while other processes used a sizeable share of the cores
    is not a fair measurement, however small its spread. ``children=True`` also counts
    as its own the CPU time of the child processes the block ran and waited for."""

    def __init__(self, children=False):
        self.children = children

    def __enter__(self):
        self.cores = None
        self._start = self._sample()
        return self

    def __exit__(self, *exc):
        end = self._sample()
        if self._start is not None and end is not None:
            (busy0, own0, wall0), (busy1, own1, wall1) = self._start, end
            self.cores = max(0.0, (busy1 - busy0) - (own1 - own0)) / max(wall1 - wall0, 1e-9)
        return False

    def _sample(self):
        try:
            fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
        except OSError:
            return None
        ticks = [int(x) for x in fields]
        busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait
        own = os.times()
        mine = own.user + own.system
        if self.children:
            mine += own.children_user + own.children_system
        return busy, mine, time.monotonic()
