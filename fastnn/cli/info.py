"""``fastnn info``: what can run here and why not: backends, versions, BLAS, threads, GPU."""

import importlib.metadata
import importlib.util
import json
import os
import platform

import fastnn
from fastnn import backends
from fastnn.errors import BackendUnavailable

PACKAGES = {  # name shown: the distributions that provide it
    "numpy": ("numpy",),
    "numba": ("numba",),
    "cupy": ("cupy", "cupy-cuda12x", "cupy-cuda13x", "cupy-cuda11x"),
    "mpi4py": ("mpi4py",),
    "matplotlib": ("matplotlib",),
    "tqdm": ("tqdm",),
    "threadpoolctl": ("threadpoolctl",),
}
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "NUMBA_NUM_THREADS", "NUMBA_THREADING_LAYER")


def add_parser(commands):
    parser = commands.add_parser(
        "info", help="show the backends that can run here (and why not), versions, BLAS, "
                     "threads and GPU",
        description=__doc__.split("\n")[0].split(": ", 1)[1])
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.set_defaults(run=run)


def run(args):
    report = collect()
    print(json.dumps(report, indent=2) if args.json else "\n".join(text_lines(report)))
    return 0


def collect():
    """The whole report as a JSON-ready dict."""
    current = backends.get_backend()
    return {
        "fastnn": fastnn.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "backends": {name: {"available": reason is None, "reason": reason}
                     for name, reason in backends.availability().items()},
        "current_backend": None if current is None else current.name,
        "FASTNN_BACKEND": os.environ.get(backends.ENV_VAR),
        "FASTNN_BACKEND_problem": environment_problem(),
        "packages": {name: _version(dists) for name, dists in PACKAGES.items()},
        "blas": blas(),
        "numba_gemm": numba_gemm(),
        "threads": threads(),
        "gpu": gpu(),
    }


def environment_problem():
    """Why FASTNN_BACKEND cannot be used, or None when it can (or is unset)."""
    try:
        backends.load(backends.canonical_name(os.environ.get(backends.ENV_VAR, ""),
                                              source=backends.ENV_VAR))
    except (ValueError, BackendUnavailable) as error:
        return str(error)
    return None


def _version(distributions):
    for dist in distributions:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def blas():
    """The BLAS libraries NumPy uses: live from threadpoolctl (with thread counts) when it
    is installed, else from NumPy's build configuration."""
    if importlib.util.find_spec("threadpoolctl") is not None:
        from threadpoolctl import threadpool_info

        return [
            {key: lib.get(key) for key in
             ("user_api", "internal_api", "version", "num_threads", "threading_layer",
              "architecture")}
            for lib in threadpool_info()
        ]
    import numpy

    config = numpy.show_config(mode="dicts").get("Build Dependencies", {}).get("blas", {})
    return [{"user_api": "blas", "internal_api": config.get("name"),
             "version": config.get("version"), "num_threads": None,
             "threading_layer": None, "architecture": None}]


def numba_gemm():
    """The CBLAS GEMM that the Numba backend's BLAS epoch kernel calls (NumPy's own),
    or the reason there is none (``fit`` on larger Dense stacks then runs op by op)."""
    try:
        backends.load("numba")
    except BackendUnavailable as error:
        return {"path": None, "symbol": None, "ilp64": None, "reason": str(error)}
    from fastnn.kernels.numba import blas as numba_blas

    gemm = numba_blas.find()
    if gemm is None:
        return {"path": None, "symbol": None, "ilp64": None,
                "reason": "no CBLAS sgemm/dgemm among the BLAS libraries loaded in this "
                          "process, so fit on larger Dense stacks runs op by op"}
    return {"path": gemm.path, "symbol": gemm.symbol, "ilp64": gemm.ilp64, "reason": None}


def threads():
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    try:
        layer, why = backends.load("numba").threading_layer
    except BackendUnavailable:
        layer, why = None, None
    return {
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "numba_threading_layer": layer,
        "numba_threading_layer_why": why,
        "environment": {name: os.environ.get(name) for name in THREAD_VARIABLES},
    }


def gpu():
    """``{"devices": [...], "reason": None}``, or no devices and the reason why."""
    if importlib.util.find_spec("cupy") is None:
        return {"devices": [], "reason": "CuPy is not installed, so no GPU was queried"}
    try:
        import cupy

        if not cupy.cuda.is_available():
            return {"devices": [], "reason": "CuPy finds no usable CUDA device"}
        devices = []
        for index in range(cupy.cuda.runtime.getDeviceCount()):
            properties = cupy.cuda.runtime.getDeviceProperties(index)
            with cupy.cuda.Device(index):
                free, total = cupy.cuda.runtime.memGetInfo()
            devices.append({"index": index, "name": properties["name"].decode(),
                            "memory_total_bytes": int(total), "memory_free_bytes": int(free)})
        return {"devices": devices, "reason": None}
    except Exception as error:  # a broken driver or CUDA install: report it, don't crash
        return {"devices": [], "reason": f"CuPy could not query the GPU: {error}"}


def text_lines(report):
    """The report as lines for a terminal."""
    lines = [f"fastnn {report['fastnn']} on Python {report['python']} ({report['platform']})",
             "", "backends:"]
    for name, entry in report["backends"].items():
        mark = " (current)" if name == report["current_backend"] else ""
        status = "available" if entry["available"] else f"unavailable: {entry['reason']}"
        lines.append(f"  {name:<6} {status}{mark}")
    env = report["FASTNN_BACKEND"]
    problem = report["FASTNN_BACKEND_problem"]
    if env is None:
        lines.append(f"  FASTNN_BACKEND is unset ({backends.DEFAULT} is the default)")
    else:
        verdict = f" cannot be used: {problem}" if problem else ""
        lines.append(f"  FASTNN_BACKEND={env!r}{verdict}")
    lines += ["", "packages:"]
    lines += [f"  {name:<13} {version or 'not installed'}"
              for name, version in report["packages"].items()]
    lines += ["", "BLAS:"]
    for lib in report["blas"]:
        detail = ", ".join(f"{key.replace('_', ' ')} {lib[key]}"
                           for key in ("num_threads", "threading_layer", "architecture")
                           if lib[key] is not None)
        lines.append(f"  {lib['user_api']}: {lib['internal_api']} {lib['version']}"
                     + (f" ({detail})" if detail else " (install threadpoolctl for threads)"))
    gemm = report["numba_gemm"]
    if gemm["path"]:
        width = "64" if gemm["ilp64"] else "32"
        lines.append(f"  numba epoch kernel calls {gemm['symbol']} ({width}-bit ints) "
                     f"in {gemm['path']}")
    else:
        lines.append(f"  numba epoch kernel GEMM: none ({gemm['reason']})")
    t = report["threads"]
    lines += ["", f"threads: {t['usable_cpus']} usable CPUs of {t['cpu_count']}"]
    if t["numba_threading_layer"]:
        lines.append(f"  numba threading layer: {t['numba_threading_layer']} "
                     f"({t['numba_threading_layer_why']})")
    lines += [f"  {name}={value}" if value is not None else f"  {name} unset"
              for name, value in t["environment"].items()]
    lines += ["", "GPU:"]
    g = report["gpu"]
    lines += [f"  {d['index']}: {d['name']}, {d['memory_total_bytes'] / 2**30:.1f} GiB "
              f"({d['memory_free_bytes'] / 2**30:.1f} GiB free)" for d in g["devices"]]
    if g["reason"]:
        lines.append(f"  none: {g['reason']}")
    return lines
