"""The report runner behind ``python -m bench``: every workload on every target in one
process, targets alternating round by round, compared with NumPy, this machine's
ceilings and (when installed) PyTorch eager.

A target is a fastnn backend (by name, or a Backend instance) or a PyTorch peer.
"""

import dataclasses
import functools
import importlib.util
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from bench import distributed, environment, startup, workloads
from bench.ceilings import Ceilings, Library
from bench.reference import relative_error
from bench.timing import Plan, backend_timer, measure, torch_timer
from fastnn import backends
from fastnn.backends.base import Backend

REFERENCE = "numpy"
FULL = Plan()
QUICK = Plan(rounds=3, min_rounds=3, sample_seconds=0.002, budget_seconds=1.0, warmup_calls=1,
             settle_seconds=0.0)


@dataclass
class Config:
    quick: bool = False
    backends: list = None  # names or Backend instances; None: every backend that runs here
    torch: bool = True  # add the PyTorch eager peers when torch imports
    threads: int = None  # set every thread pool (BLAS, OpenMP, PyTorch, Numba) to this
    groups: list = None
    pattern: str = None
    dtypes: list = None
    rounds: int = None
    settle: float = None  # seconds idle before each sample; None: the plan's
    max_spread: float = 0.15  # rows whose IQR/median is above this are flagged "noisy"
    max_other_load: float = 0.25  # rows measured while other processes used more cores
    # than this are flagged "busy"
    retries: int = None  # re-measurements of a workload flagged busy; None: 2 (quick: 0)
    startup: bool = True
    command: str = "python -m bench"
    workloads: list = None  # run exactly these (groups, pattern and dtypes are then unused)
    torch_devices: tuple = ("cpu", "cuda")  # the PyTorch peers to add where they can run


@dataclass
class Target:
    label: str
    build: Callable  # (workload, inputs) -> Case
    timer: Callable
    library: Library  # whose ceilings this target is compared with
    backend_name: str = None  # for start-up runs; None for instances and peers


@dataclass
class Row:
    workload: str
    group: str
    dtype: str
    target: str
    median_s: float = None
    spread: float = None
    other_load: float = None  # cores other processes used while the workload was measured
    faults_per_call: float = None  # median minor page faults per call
    first_call_s: float = None
    compile_s: float = None
    speedup: float = None  # NumPy's median / this median
    rate: float = None  # work per second, in ``unit`` per second
    unit: str = None
    ceiling_kind: str = None  # "GEMM" or "copy"
    ceiling_rate: float = None
    ceiling_pct: float = None
    add_pct: float = None  # for 2-in-1-out workloads: the share of c = a + b's rate
    baseline: str = None
    baseline_ratio: float = None  # this median / the baseline workload's median
    max_error: float = None  # relative to the NumPy backend's result
    attempts: int = 1  # measurements taken; the one with the least other load is kept
    flags: list = field(default_factory=list)
    problem: str = None  # why the row is flagged WRONG, DIFF or ERROR


def resolve_backends(chosen):
    """[(backend, its name or None for an instance)] to run, NumPy (the reference)
    first. ``chosen`` lists names and/or Backend instances; None means every backend
    that can run here."""
    if chosen is None:
        chosen = [name for name, reason in backends.availability().items() if reason is None]
    resolved = [(backends.load(REFERENCE), REFERENCE)]
    for item in chosen:
        if isinstance(item, Backend):
            resolved.append((item, None))
        elif backends.canonical_name(item) != REFERENCE:
            resolved.append((backends.load(item), backends.canonical_name(item)))
    return resolved


def make_targets(config, torch=None):
    """A target per backend (labelled by its ``label`` or name, made unique: 'numpy',
    'numpy#2', ...), then the PyTorch peers of ``config.torch_devices``: CPU, and CUDA
    when a CuPy backend runs and torch sees a GPU."""
    targets, libraries, labels = [], {}, set()
    for backend, name in resolve_backends(config.backends):
        shown = getattr(backend, "label", backend.name)
        label, n = shown, 2
        while label in labels:
            label, n = f"{shown}#{n}", n + 1
        labels.add(label)
        timer = backend_timer(backend)
        library_name = backend.xp.__name__.rpartition(".")[2]  # array_api_compat.cupy: cupy
        library = libraries.setdefault(library_name, Library(library_name, backend, timer))
        targets.append(Target(label, functools.partial(_fastnn_case, backend), timer, library,
                              name))
    if torch is not None:
        devices = [("cpu", libraries["numpy"])]
        if "cupy" in libraries and torch.cuda.is_available():
            devices.append(("cuda", libraries["cupy"]))
        for device, library in [d for d in devices if d[0] in config.torch_devices]:
            targets.append(Target(f"torch-{device}", functools.partial(_torch_case, torch, device),
                                  torch_timer(torch, device), library))
    return targets


def _fastnn_case(backend, workload, data):
    return workload.fastnn(backend, data)


def _torch_case(torch, device, workload, data):
    return workload.torch(torch, device, data)


def import_torch(config):
    if not config.torch or importlib.util.find_spec("torch") is None:
        return None
    import torch

    return torch


def limit_threads(n, torch=None):
    """Every thread pool loaded so far to ``n`` threads: BLAS and OpenMP through
    threadpoolctl, and PyTorch's and Numba's own settings."""
    if importlib.util.find_spec("threadpoolctl") is None:
        raise RuntimeError("setting the thread count needs threadpoolctl; "
                           "pip install 'fastnn[bench]'")
    import threadpoolctl

    threadpoolctl.threadpool_limits(n)  # stays in force: never restored during the run
    if torch is not None:
        torch.set_num_threads(n)
    if "numba" in sys.modules:
        sys.modules["numba"].set_num_threads(n)


def plan_for(config):
    plan = QUICK if config.quick else FULL
    if config.rounds:
        plan = dataclasses.replace(plan, rounds=config.rounds,
                                   min_rounds=min(plan.min_rounds, config.rounds))
    if config.settle is not None:
        plan = dataclasses.replace(plan, settle_seconds=config.settle)
    return plan


def run(config, log=print):
    """Run the selected workloads on every target; returns the report as plain data."""
    load_at_start = environment.load_average()
    torch = import_torch(config)
    targets = make_targets(config, torch)
    if config.threads:
        limit_threads(config.threads, torch)
    plan = plan_for(config)
    retries = (0 if config.quick else 2) if config.retries is None else config.retries
    ceilings = Ceilings(plan, 512 if config.quick else 2048, config.max_other_load, retries)
    chosen = config.workloads or workloads.select(workloads.catalog(config.quick),
                                                  config.groups, config.pattern, config.dtypes)
    parallel = not config.workloads and wants_distributed(config)
    if not chosen and not parallel:
        raise ValueError("no workload matches the chosen groups, filter and dtypes")
    log(f"{len(chosen)} workloads x {len(targets)} targets "
        f"({', '.join(t.label for t in targets)})")
    rows = []
    for i, workload in enumerate(chosen, 1):
        log(f"[{i}/{len(chosen)}] {workload.id}")
        rows += measure_quietest(workload, targets, plan, ceilings, config, retries, log)
    add_baselines(rows, chosen)
    parallel_rows = []
    if parallel:
        names = [t.backend_name for t in targets if t.backend_name in distributed.BACKENDS]
        try:
            parallel_rows = distributed.missing() or distributed.measure(
                names, config.quick, log, config.max_other_load, config.retries)
        except (RuntimeError, OSError, subprocess.SubprocessError) as error:
            parallel_rows = f"ERROR: {error}"  # a problem of the report, not the end of it
    starts = []
    if config.startup:
        for target in targets:
            for how in startup.HOW if target.backend_name else ():
                log(f"start-up: {target.backend_name}, {how}")
                starts.append({"backend": target.backend_name,
                               **startup.measure_startup(target.backend_name,
                                                         1 if config.quick else 3, how)})
    return {
        "command": config.command,
        "quick": config.quick,
        "plan": dataclasses.asdict(plan),
        "max_spread": config.max_spread,
        "max_other_load": config.max_other_load,
        "environment": {**environment.describe(torch), "load_average_start": load_at_start},
        "targets": [t.label for t in targets],
        "ceilings": ceilings.rows(),
        "rows": [dataclasses.asdict(r) for r in rows],
        "distributed": parallel_rows,  # rows, or why they could not run here
        "startup": starts,
    }


def wants_distributed(config):
    """True if the run selects the distributed rows (their group, float32, the filter)."""
    return ((not config.groups or "distributed" in config.groups)
            and (not config.dtypes or "float32" in config.dtypes)
            and (not config.pattern or config.pattern.lower() in distributed.NAME))


def measure_quietest(workload, targets, plan, ceilings, config, retries, log=print):
    """``run_workload``, repeated up to ``retries`` times while other processes kept the
    machine busy; returns the rows of the attempt with the least other load."""
    best = None
    for attempt in range(1, retries + 2):
        rows = run_workload(workload, targets, plan, ceilings, config.max_spread,
                            config.max_other_load)
        load = max((r.other_load or 0.0) for r in rows)
        if best is None or load < best[0]:
            best = (load, rows)
        if not any("busy" in r.flags for r in rows) or attempt > retries:
            break
        log(f"  busy: other processes used {load:.2f} cores; measuring again")
    for row in best[1]:
        row.attempts = attempt
    return best[1]


def run_workload(workload, targets, plan, ceilings, max_spread, max_other_load=float("inf")):
    """One row per target. Each target's first call is timed alone and its result
    checked and compared with NumPy's; then all targets are measured together. A target
    that fails is reported in its row (ERROR), never silently dropped."""
    data = workload.inputs()
    rows, steps, outputs = {}, {}, {}
    for target in targets:
        row = rows[target.label] = Row(workload.name, workload.group, workload.dtype,
                                       target.label)
        try:
            case = target.build(workload, data)
            plan.settle()
            row.first_call_s = target.timer(case.step, 1)
            outputs[target.label] = case.result()
        except Exception as error:  # one failing target stops no other
            _flag(row, "ERROR", f"{type(error).__name__}: {error}")
            continue
        steps[target.label] = (target.timer, case.step)
        _check(workload, row, outputs[target.label], data, outputs.get(REFERENCE))
    if not steps:
        return list(rows.values())
    copies = _copies_alongside(workload, targets, ceilings)
    with environment.OtherLoad() as other:
        timings = measure({**steps, **{k: v[:2] for k, v in copies.items()}}, plan)
    rates = {}  # (kind, library name) -> the fastest GB/s, measured in the same rounds
    for label, (_, _, library, nbytes, kind, arrays) in copies.items():
        rate = arrays * nbytes / timings.pop(label).median / 1e9
        rates[kind, library] = max(rate, rates.get((kind, library), 0.0))
    for (kind, library), rate in rates.items():
        ceilings.record(library, kind, workload.copy_shape, workload.dtype, rate, other.cores)
    copy_rates = {library: rate for (kind, library), rate in rates.items() if kind == "copy"}
    add_rates = {library: rate for (kind, library), rate in rates.items() if kind == "add"}
    for label, timing in timings.items():
        _timed(rows[label], timing, other.cores, max_spread, max_other_load)
    reference_row = rows[REFERENCE]
    for target in targets:
        row = rows[target.label]
        if row.median_s is not None:
            _rates(workload, row, target.library, ceilings, copy_rates)
            add_rate = add_rates.get(target.library.name) if target.library else None
            if add_rate and row.rate is not None:
                row.add_pct = 100.0 * row.rate / add_rate
            if reference_row.median_s is not None:
                row.speedup = reference_row.median_s / row.median_s
    return list(rows.values())


def _timed(row, timing, other_cores, max_spread, max_other_load):
    """Fill ``row`` from its ``timing``, flagged noisy or busy where it was."""
    timing.first_call = row.first_call_s
    row.median_s, row.spread, row.compile_s = timing.median, timing.spread, timing.compile_time
    row.other_load = other_cores
    row.faults_per_call = statistics.median(timing.faults) if timing.faults else None
    if row.spread > max_spread:
        _flag(row, "noisy")
    if other_cores is not None and other_cores > max_other_load:
        _flag(row, "busy")


def _check(workload, row, result, data, reference_result):
    try:
        workload.check(result, data)
    except AssertionError as error:
        _flag(row, "WRONG", str(error))
    if reference_result is not None:
        row.max_error = relative_error(result, reference_result)
        if row.max_error > workload.tolerance:
            _flag(row, "DIFF", f"differs from NumPy by {row.max_error:.1e} "
                               f"(tolerance {workload.tolerance:.0e})")


def _copies_alongside(workload, targets, ceilings):
    """For a workload that moves bytes: {label: (timer, step, library name, bytes, kind,
    arrays moved)}, a same-size copy per array library (and for a 2-in-1-out workload a
    same-size c = a + b), to be measured in the same rounds as the targets, so that a
    row's share of the copy ceiling compares two timings taken under the same
    conditions (this host's copy rate drifts 40-60 GB/s between runs)."""
    if workload.unit != "B" or not hasattr(ceilings, "copy_steps"):
        return {}
    kinds = [("copy", ceilings.copy_steps, 2)]
    if workload.two_in_one_out and hasattr(ceilings, "add_steps"):
        kinds.append(("add", ceilings.add_steps, 3))
    copies, libraries = {}, {t.library.name: t.library for t in targets if t.library}
    for library in libraries.values():
        for kind, make, arrays in kinds:
            steps, nbytes = make(library, workload.copy_shape, workload.dtype)
            for label, (timer, step) in steps.items():
                copies[f"ceiling: {label}"] = (timer, step, library.name, nbytes, kind, arrays)
    return copies


def _rates(workload, row, library, ceilings, copy_rates=None):
    """Work per second and, for FLOPs and bytes, the share of this machine's ceiling
    (for bytes, the copy measured alongside when there is one)."""
    row.rate = workload.work / row.median_s
    if workload.unit == "FLOP":
        row.unit, row.ceiling_kind = "GFLOP/s", "GEMM"
        row.ceiling_rate = ceilings.gemm(library, workload.dtype)
    elif workload.unit == "B":
        row.unit, row.ceiling_kind = "GB/s", "copy"
        alongside = (copy_rates or {}).get(library.name) if library else None
        row.ceiling_rate = alongside or ceilings.copy(library, workload.copy_shape,
                                                      workload.dtype)
    else:
        row.unit = f"{workload.unit}/s"
        return
    row.rate /= 1e9
    row.ceiling_pct = 100.0 * row.rate / row.ceiling_rate


def add_baselines(rows, catalog):
    """Set ``baseline_ratio`` (median over the baseline workload's median, same target
    and dtype) on rows whose workload names a baseline, e.g. MLP step / its 8 GEMMs."""
    baselines = {w.name: w.baseline for w in catalog if w.baseline}
    medians = {(r.workload, r.dtype, r.target): r.median_s for r in rows}
    for row in rows:
        base = baselines.get(row.workload)
        base_median = medians.get((base, row.dtype, row.target))
        if base and row.median_s is not None and base_median:
            row.baseline, row.baseline_ratio = base, row.median_s / base_median


def _flag(row, flag, problem=None):
    row.flags.append(flag)
    if problem:
        row.problem = problem if row.problem is None else f"{row.problem}; {problem}"
