"""This machine's ceilings, measured in the same run as the workloads: a large GEMM
(GFLOP/s) and a same-size copy into a preallocated array (GB/s, read + write counted),
each on the array library of the backend being compared (NumPy for CPU backends and
PyTorch CPU, CuPy for the GPU); for workloads that read two arrays and write one, also
a same-size ``c = a + b`` (GB/s, all three arrays counted)."""

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from bench.environment import OtherLoad
from bench.timing import measure

GEMM_SIZE = 2048


class Ceilings:
    """Measures each ceiling once per (library, shape, dtype), on first request; again,
    up to ``retries`` times, while other processes use more than ``max_other_load``
    cores, keeping the highest rate (a ceiling is the most the machine gives)."""

    def __init__(self, plan, gemm_size=GEMM_SIZE, max_other_load=float("inf"), retries=0):
        self.plan, self.gemm_size = plan, gemm_size
        self.max_other_load, self.retries = max_other_load, retries
        self.measured = {}  # (library, kind, shape, dtype) -> (GFLOP/s or GB/s, other load)
        self.pool = None  # threads for the multi-threaded host copy, made on first use

    def gemm(self, library, dtype):
        """GFLOP/s of an (n, n) @ (n, n) matmul with the library's ``xp.matmul``."""
        n = self.gemm_size

        def run(backend, timer):
            A, B = (backend.asarray(np.random.default_rng(s).standard_normal((n, n)),
                                    dtype=backend.dtype(dtype)) for s in (0, 1))
            return 2.0 * n**3 / _median(timer, lambda: backend.xp.matmul(A, B), self.plan) / 1e9

        return self._get(library, "gemm", (n, n), dtype, run)

    def copy(self, library, shape, dtype):
        """GB/s of copying an array of ``shape`` into a preallocated one (2 x its bytes).
        On the host, the faster of one thread and one thread per CPU (NumPy releases the
        GIL while copying), since multi-threaded kernels get the cores' sum."""

        def run(backend, timer):
            steps, nbytes = self.copy_steps(library, shape, dtype)
            return max(2.0 * nbytes / _median(timer, step, self.plan) / 1e9
                       for timer, step in steps.values())

        return self._get(library, "copy", tuple(shape), dtype, run)

    def copy_steps(self, library, shape, dtype):
        """({label: (timer, step)}, bytes of one array): the copies ``copy`` times, for a
        runner that measures them alongside a workload (same rounds, same conditions)."""
        backend = library.backend
        src = backend.asarray(np.ones(shape), dtype=backend.dtype(dtype))
        dst = backend.copy(src)

        def step():
            dst[...] = src

        def rows(lo, hi):
            dst[lo:hi] = src[lo:hi]

        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        return self._steps(library, "copy", shape, step, rows), nbytes

    def add_steps(self, library, shape, dtype):
        """({label: (timer, step)}, bytes of one array): ``c = a + b`` into a preallocated
        c (NumPy, CuPy), on one thread and split by rows over every CPU (NumPy), for
        workloads that read two arrays and write a third (an activation's backward). A
        copy's two arrays of a large shape can partly stay in this machine's last-level
        cache between calls where three cannot, so a 2-in-1-out kernel's share of the
        copy rate is bounded by the machine, not only by the kernel (the report shows
        both)."""
        backend = library.backend
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        if backend.xp.__name__ not in ("numpy", "cupy"):  # no out= to add into
            return {}, nbytes
        a, b = (backend.asarray(np.full(shape, v), dtype=backend.dtype(dtype)) for v in (1, 2))
        c = backend.copy(a)

        def step():
            backend.xp.add(a, b, out=c)

        def rows(lo, hi):
            np.add(a[lo:hi], b[lo:hi], out=c[lo:hi])

        return self._steps(library, "add", shape, step, rows), nbytes

    def _steps(self, library, name, shape, step, rows):
        """{label: (timer, step)}: ``step`` on one thread and, on the host, ``rows(lo, hi)``
        split by rows over one thread per CPU (NumPy releases the GIL while it copies and
        adds)."""
        n = shape[0]
        steps = {f"{name} {library.name}": (library.timer, step)}
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        if library.backend.xp is np and threads > 1 and n >= threads:
            if self.pool is None:
                self.pool = ThreadPoolExecutor(threads)
            bounds = [n * i // threads for i in range(threads + 1)]
            parts = list(zip(bounds, bounds[1:]))

            def split():
                for future in [self.pool.submit(rows, lo, hi) for lo, hi in parts]:
                    future.result()

            steps[f"{name} {library.name} x{threads}"] = (library.timer, split)
        return steps

    def _get(self, library, kind, shape, dtype, run):
        key = (library.name, kind, shape, dtype)
        if key not in self.measured:
            best = (0.0, None)
            for _ in range(self.retries + 1):
                with OtherLoad() as other:
                    rate = run(library.backend, library.timer)
                best = max(best, (rate, other.cores), key=lambda x: x[0])
                if other.cores is None or other.cores <= self.max_other_load:
                    break
            self.measured[key] = best
        return self.measured[key][0]

    def record(self, library_name, kind, shape, dtype, rate, other_load):
        """Keep a ceiling measured by the runner (a copy alongside a workload) when it is
        the highest so far for its key; the report lists it with the others."""
        key = (library_name, kind, tuple(shape), dtype)
        if key not in self.measured or rate > self.measured[key][0]:
            self.measured[key] = (rate, other_load)

    def rows(self):
        """Each ceiling measured, in order, as a dict (JSON-ready)."""
        return [{"library": library, "kind": kind, "shape": list(shape), "dtype": dtype,
                 "rate": rate, "other_load": other}
                for (library, kind, shape, dtype), (rate, other) in self.measured.items()]


class Library:
    """The array library a ceiling is measured with: a fastnn backend and its timer."""

    def __init__(self, name, backend, timer):
        self.name, self.backend, self.timer = name, backend, timer


def _median(timer, step, plan):
    return measure({"ceiling": (timer, step)}, plan)["ceiling"].median
