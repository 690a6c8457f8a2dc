"""``fit(..., distributed=...)``: what a data-parallel fit does besides its steps.

``DataParallel`` is the user's handle on the job (its communicator and settings);
``Session`` is one ``fit`` call's part of it. Before the first step the ranks agree:
one collective carries every rank's settings, sample counts and seed, or the error
that stopped it; a rank that disagrees with rank 0 (architecture, dtype, features,
optimizer, fit settings, sample counts) or failed makes every rank raise
DistributedError with the same message. Then rank 0's parameters, BatchNorm
statistics and optimizer state are broadcast, and its seed is used by every rank.
From then on every rank takes the same decisions from the same reduced numbers: the
epoch's loss and metric sums, the validation sums and the stop flag of callbacks.
An exception on one rank after that point (a callback, memory, an interrupt) ends the
whole job through the communicator's abort, with that rank's message; only
TrainingDiverged, which every rank raises at the same epoch, is raised as usual. What
ends the job when a rank fails or leaves outside ``fit`` is in ``guard.py``.
"""

import contextlib
import traceback

from fastnn.distributed import guard
from fastnn.distributed.comm import Communicator, MPIComm
from fastnn.distributed.shards import Plan, Reductions, Shards, flatten, pieces, split
from fastnn.errors import BackendUnavailable, DistributedError, TrainingDiverged
from fastnn.outofcore import part


class DataParallel:
    """Data-parallel training over a communicator: ``fit(..., distributed=this)``.

    comm: None for MPI's COMM_WORLD, an mpi4py communicator, or a fastnn Communicator
        (``fastnn.distributed.local`` runs ranks as threads, for reference and tests).
    sharded: False when every rank passes the whole data set (each takes its part of
        every global batch); True when each rank passes only its own rows (see
        ``fastnn.distributed.shards`` for how batches are formed then).
    exact: sum gradients in rank order (the same bits for every run at a rank count);
        False uses MPI's Allreduce (NCCL's on GPUs), whose order is the library's.
    nccl: for the CuPy backend, None uses NCCL when CuPy has it (else host buffers
        through MPI), True requires it, False always uses host buffers.

    ``reductions`` counts the per-step gradient sums (count, seconds, bytes).
    """

    def __init__(self, comm=None, sharded=False, exact=True, nccl=None):
        self.comm = comm if isinstance(comm, Communicator) else MPIComm(comm, exact)
        self.sharded, self.nccl = bool(sharded), nccl
        self.reductions = Reductions()
        self._transports = {}
        if isinstance(self.comm, MPIComm) and self.comm.size > 1:
            guard.install()  # if importing fastnn did not (an MPI launch it did not see)

    def __repr__(self):
        return (f"DataParallel(rank={self.rank}, size={self.size}, sharded={self.sharded}, "
                f"exact={self.exact}, transport={self.comm.transport!r})")

    @property
    def rank(self):
        return self.comm.rank

    @property
    def size(self):
        return self.comm.size

    @property
    def exact(self):
        return self.comm.exact

    def check(self, error=None):
        """A collective that every rank calls: if any rank passes an exception, every
        rank that passed none raises DistributedError naming the failed ranks and their
        errors; a rank that passed one returns, to raise its own."""
        self._agree(error, None)

    def select_gpu(self):
        """Use this rank's own GPU (its rank among the ranks on its host, modulo the
        GPUs there) for CuPy; call before building the model. Returns the device id."""
        from fastnn.distributed import nccl

        return nccl.select_gpu(self.comm)

    def transport_for(self, backend):
        """The communicator for ``backend``'s arrays: NCCL for CuPy (see ``nccl``),
        else this one (host buffers)."""
        if backend.name != "cupy" or self.nccl is False or not isinstance(self.comm, MPIComm):
            return self.comm
        if backend.name not in self._transports:
            from fastnn.distributed import nccl

            if nccl.available(backend):
                self._transports[backend.name] = nccl.NcclComm(self.comm, backend)
            elif self.nccl:
                raise BackendUnavailable("DataParallel(nccl=True) needs CuPy with NCCL, which "
                                         "is not available here; install NCCL (pip install "
                                         "nvidia-nccl-cu12) or pass nccl=None")
            else:
                self._transports[backend.name] = self.comm
        return self._transports[backend.name]

    def _agree(self, error, payload):
        """Every rank's payload, in rank order, unless a rank reports an error."""
        described = None if error is None else f"{type(error).__name__}: {error}"
        records = self.comm.gather((described, payload))
        failed = [(rank, e) for rank, (e, _) in enumerate(records) if e is not None]
        if failed and error is None:
            raise DistributedError(
                "; ".join(f"rank {rank} of {self.size} failed before training: {e}"
                          for rank, e in failed) + "; every rank stops here")
        return [p for _, p in records]


def join(distributed):
    """The Session for ``fit(distributed=...)``: None for None or False (one process),
    True for MPI's COMM_WORLD, a DataParallel, or an mpi4py communicator."""
    if distributed is None or distributed is False:
        return None
    if distributed is True:
        distributed = DataParallel()
    elif not isinstance(distributed, DataParallel):
        if type(distributed).__module__.split(".")[0] != "mpi4py":
            raise TypeError(f"distributed must be True, a fastnn.distributed.DataParallel or "
                            f"an mpi4py communicator; got {type(distributed).__name__}")
        distributed = DataParallel(distributed)
    return Session(distributed)


class Session:
    """One ``fit`` call of a data-parallel job; see the module docstring."""

    def __init__(self, data_parallel):
        self.dp, self.comm = data_parallel, data_parallel.comm
        self.started = False
        self.rows = self.val_rows = None  # every rank's sample counts
        self.transport = self.comm

    @property
    def samples(self):
        """The global number of training samples (an epoch's)."""
        return self.total(self.rows)

    def total(self, rows):
        """The global sample count from the ranks' counts: their sum for pre-sharded
        data, else any rank's (every rank holds the whole data)."""
        return sum(rows) if self.dp.sharded else rows[0]

    @contextlib.contextmanager
    def guard(self):
        """Make a failure on one rank a failure of every rank (see the module docstring)."""
        try:
            yield
        except (TrainingDiverged, DistributedError):
            raise  # raised by every rank alike
        except BaseException as error:
            if not self.started:
                self.dp.check(error)  # the others raise DistributedError in start()
            elif self.comm.size > 1:
                self.comm.abort(
                    "".join(traceback.format_exception(error))
                    + f"fastnn: rank {self.comm.rank} of {self.comm.size} failed during "
                      f"data-parallel training ({type(error).__name__}: {error}); aborting "
                      f"every rank\n")
            raise

    def start(self, model, X, val, seed, settings):
        """Agree with the other ranks before the first step; returns the seed to use."""
        mine = {"rows": X.shape[0], "val_rows": None if val is None else val[0].shape[0],
                "seed": seed, "settings": _fingerprint(model, X, settings, self.dp)}
        everyone = self.dp._agree(None, mine)
        self.started = True
        _same_everywhere([e["settings"] for e in everyone])
        self.rows = [e["rows"] for e in everyone]
        self.val_rows = [e["val_rows"] for e in everyone]
        if not self.dp.sharded:
            _same_rows(self.rows, "samples")
            if val is not None:
                _same_rows(self.val_rows, "validation samples")
        self.transport = self.dp.transport_for(model.backend)
        _broadcast_state(model, self.transport)
        model.train_seed = everyone[0]["seed"]
        return model.train_seed

    def for_rank(self, verbose, callbacks):
        """What this rank prints and runs: all of it on rank 0; elsewhere no printing
        and no callback marked ``rank_zero_only`` (loggers, progress bars)."""
        if self.comm.rank == 0:
            return verbose, callbacks
        return 0, [c for c in callbacks if not c.rank_zero_only]

    def batches(self, model, X, Y, batch):
        """This rank's steps (``fastnn.steps.Batches`` for ``fit``'s runner): its rows of
        every global batch, the gradients summed over the ranks each step."""
        plan = Plan(self.rows, batch, self.dp.sharded)
        _every_rank_has_rows(plan, self.comm.size)
        return Shards(self.transport, model, X, Y, plan, self.dp.reductions)

    def evaluate(self, model, X, Y, rows=None):
        """``model.evaluate_prepared`` over every rank's part of (X, Y), reduced;
        ``rows`` are the ranks' row counts of (X, Y) (None: the validation data's)."""
        rows = self.val_rows if rows is None else rows
        if not self.dp.sharded:
            counts = split(X.shape[0], self.comm.size)
            lo = sum(counts[:self.comm.rank])
            hi = lo + counts[self.comm.rank]
            X, Y = part(X, lo, hi), part(Y, lo, hi)  # out-of-core: still unread
        sums = self.transport.sum(model.evaluation_sums(X, Y), model.backend)
        return model.scores(sums, self.total(rows))

    def any(self, flag):
        """True on every rank if ``flag`` is true on any (a callback's stop request)."""
        return any(self.comm.gather(bool(flag)))


def _fingerprint(model, X, settings, dp):
    """What every rank must have alike, as plain values."""
    opt, schedule = model.optimizer, model.lr_schedule
    return {
        "backend": model.backend.name,
        "layers": [layer.config() if hasattr(layer, "config") else repr(layer)
                   for layer in model.layers],
        "loss": model.loss.config(),
        "dtype": model.dtype_name,
        "features": tuple(X.shape[1:]),
        "optimizer": (opt.name, opt.config(), opt.t, bool(opt.state)),
        "lr_schedule": None if schedule is None else schedule.config(),
        "epochs_trained": model.epochs_trained,
        "sharded": dp.sharded,
        "exact": dp.exact,
        **settings,
    }


def _same_everywhere(fingerprints):
    first = fingerprints[0]
    problems = [_difference(key, rank, theirs[key], first[key])
                for rank, theirs in enumerate(fingerprints[1:], 1)
                for key in first if theirs.get(key) != first[key]]
    if problems:
        raise DistributedError(
            "the ranks would train different things, so none starts: " + "; ".join(problems)
            + ". Every rank must build the same model (layers, loss, dtype, backend, "
              "optimizer) and call fit with the same settings")


def _difference(key, rank, theirs, first):
    """One line on how rank ``rank``'s setting ``key`` differs from rank 0's."""
    if key == "layers" and len(theirs) != len(first):
        return f"layers: rank {rank} has {len(theirs)} layers but rank 0 has {len(first)}"
    if key == "layers":
        i = next(i for i, (a, b) in enumerate(zip(theirs, first)) if a != b)
        key, theirs, first = f"layer {i}", theirs[i], first[i]
    return f"{key}: rank {rank} has {_short(theirs)} but rank 0 has {_short(first)}"


def _short(value, limit=160):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def _same_rows(counts, what):
    if len(set(counts)) > 1:
        listed = ", ".join(f"rank {rank}: {n}" for rank, n in enumerate(counts))
        raise DistributedError(
            f"the ranks hold different numbers of {what} ({listed}), but with "
            f"DataParallel(sharded=False) (distributed=True) every rank passes the whole data "
            f"set; give every rank the same data, or pass "
            f"distributed=DataParallel(sharded=True) if each rank holds its own part")


def _every_rank_has_rows(plan, ranks):
    """Every rank needs at least one row in every step (else its loss is 0/0)."""
    for step, counts in enumerate(plan.counts):
        if min(counts) > 0:
            continue
        total, rank = sum(plan.rows_per_rank), counts.index(0)
        if plan.sharded:
            raise DistributedError(
                f"rank {rank} holds {_count(plan.rows_per_rank[rank], 'sample')}, but an "
                f"epoch has {_count(len(plan.counts), 'step')} ({_count(total, 'sample')} in "
                f"global batches of {plan.batch}) and every rank needs at least one row in "
                f"every step; give every rank at least {_count(len(plan.counts), 'sample')} "
                f"or use a larger batch_size")
        raise DistributedError(
            f"with {ranks} ranks every rank needs at least one row of every batch, but batch "
            f"{step + 1} of an epoch has {_count(sum(counts), 'row')} "
            f"({_count(plan.rows_per_rank[0], 'sample')} in batches of {plan.batch}); use a "
            f"batch_size of at least {ranks} that leaves a last batch of 0 or at least "
            f"{ranks} rows, or fewer ranks")


def _count(n, noun):
    """'1 row', '2 rows': a count and its noun, plural unless 1."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _broadcast_state(model, comm):
    """Rank 0's parameters, buffers and optimizer state, on every rank (one broadcast)."""
    arrays = [p.value for p in model.parameters() + model.buffers()]
    arrays += [a for state in model.optimizer.state for a in state]
    xp = model.backend.xp
    flat = comm.broadcast(flatten(xp, arrays), model.backend)
    for a, value in zip(arrays, pieces(xp, flat, [a.shape for a in arrays])):
        a[...] = value
