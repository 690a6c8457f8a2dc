"""Timing: wall-clock with synchronisation (CPU backends), CUDA events (GPU), and the
round-robin measurement that alternates targets sample by sample so drift cancels."""

import statistics
import time

try:
    import resource  # Unix: page-fault counts
except ImportError:
    resource = None
from dataclasses import dataclass, field


class WallTimer:
    """Seconds for ``n`` calls, by ``perf_counter``, with ``sync()`` before and after
    (a backend's ``synchronize`` where it has one, so queued work is counted)."""

    def __init__(self, sync=None):
        self.sync = sync or (lambda: None)

    def __call__(self, step, n):
        self.sync()
        start = time.perf_counter()
        for _ in range(n):
            step()
        self.sync()
        return time.perf_counter() - start


class CudaEventTimer:
    """Seconds for ``n`` calls between two CUDA events on the current stream.

    ``event()`` makes a timing event; ``elapsed_ms(start, end)`` reads it (CuPy and
    PyTorch spell these differently, so the caller passes both)."""

    def __init__(self, event, elapsed_ms):
        self.event, self.elapsed_ms = event, elapsed_ms

    def __call__(self, step, n):
        start, end = self.event(), self.event()
        start.record()
        for _ in range(n):
            step()
        end.record()
        end.synchronize()
        return self.elapsed_ms(start, end) / 1e3


def backend_timer(backend):
    """CUDA events for the 'cupy' backend, else wall-clock with its ``synchronize``."""
    if backend.name == "cupy":
        import cupy

        return CudaEventTimer(cupy.cuda.Event, cupy.cuda.get_elapsed_time)
    return WallTimer(getattr(backend, "synchronize", None))


def torch_timer(torch, device):
    if device == "cuda":
        return CudaEventTimer(lambda: torch.cuda.Event(enable_timing=True),
                              lambda start, end: start.elapsed_time(end))
    return WallTimer()


@dataclass
class Timing:
    """One target's measurement of one workload: seconds per call."""

    samples: list = field(default_factory=list)  # seconds per call, one per round
    faults: list = field(default_factory=list)  # minor page faults per call, per round
    first_call: float = None  # the very first call, with any JIT compile and first touch

    @property
    def median(self):
        return statistics.median(self.samples)

    @property
    def spread(self):
        """Interquartile range over the median: how far the rounds disagree."""
        if len(self.samples) < 2:
            return 0.0
        q1, _, q3 = statistics.quantiles(self.samples, n=4, method="inclusive")
        return (q3 - q1) / self.median

    @property
    def compile_time(self):
        """First call minus the steady-state median: the JIT compile (and warm-up) cost."""
        return None if self.first_call is None else max(0.0, self.first_call - self.median)


@dataclass(frozen=True)
class Plan:
    rounds: int = 9  # samples per target
    min_rounds: int = 5  # kept even when the budget is short
    # Calls per sample are chosen to take at least this long: long enough that the cold
    # start after the settling pause is lost in it (20 ms samples read NumPy's relu
    # 25% slow and PyTorch's MLP step 2x slow; 100 ms ones match each timed alone).
    sample_seconds: float = 0.1
    budget_seconds: float = 12.0  # for all targets of one workload together
    warmup_calls: int = 2
    # Idle time before a sample of another target than the one before, so that target's
    # thread pools (OpenBLAS spins ~2^28 cycles, 0.1 s here, after a call) are parked
    # and do not steal the cores: without it PyTorch's MLP step measured 6x slower right
    # after NumPy's. One untimed call follows it.
    settle_seconds: float = 0.15

    def settle(self):
        if self.settle_seconds:
            time.sleep(self.settle_seconds)


def measure(targets, plan):
    """Time each target's ``step`` with its timer; ``targets`` maps a label to
    (timer, step). After a warm-up that also sets how many calls make one sample, each
    round takes one sample of every target, in an order that rotates from round to
    round, so slow drift of the machine hits all targets alike; ``plan.settle()`` runs
    before each sample that follows another target's. Returns {label: Timing}."""
    labels = list(targets)
    calls, per_round = {}, 0.0
    for label in labels:
        timer, step = targets[label]
        plan.settle()  # after the caller's work, or the previous target's warm-up
        warm = max(timer(step, plan.warmup_calls) / plan.warmup_calls, 1e-9)
        calls[label] = max(1, round(plan.sample_seconds / warm))
        per_round += calls[label] * warm + (plan.settle_seconds if len(labels) > 1 else 0.0)
    rounds = max(plan.min_rounds, min(plan.rounds, int(plan.budget_seconds / per_round)))
    timings = {label: Timing() for label in labels}
    previous = labels[-1]
    for r in range(rounds):
        shift = r % len(labels)
        for label in labels[shift:] + labels[:shift]:
            timer, step = targets[label]
            if label != previous:
                plan.settle()
                if calls[label] > 1:  # an untimed call first: the other target's work
                    step()  # left the allocator and caches in its own state
            previous = label
            faults = minor_faults()
            timings[label].samples.append(timer(step, calls[label]) / calls[label])
            if faults is not None:
                timings[label].faults.append((minor_faults() - faults) / calls[label])
    return timings


def minor_faults():
    """This process's minor page faults so far (None where unknown): a call that faults
    in fresh memory for its outputs pays ~0.25 us per 4 KiB page, which shows here."""
    return None if resource is None else resource.getrusage(resource.RUSAGE_SELF).ru_minflt
