"""Ranks as threads of one process: the single-process reference of data-parallel
training, and a way to test it without MPI.

``run_local(n, function)`` calls ``function(comm)`` for ranks 0..n-1, each in its own
thread with a ``ThreadComm``. Only one rank runs at a time: a rank hands over its turn
while it waits in a collective, so the ranks interleave step by step but never run
kernels concurrently (Numba's work-queue pool, for one, must not be entered from two
threads). The collectives add in rank order exactly as ``MPIComm`` does, so a run of n
threads gives the bits of a run of n MPI processes.

``simulate(n, model, X, y, **fit_options)`` is ``fit(..., distributed=...)`` for n
ranks in this process: ``model`` is rank 0's and ends up trained.
"""

import copy
import threading

from fastnn.distributed.comm import Communicator, ordered_sum

TIMEOUT = 300.0  # seconds a rank may wait in one collective before the group gives up


class ThreadGroup:
    """What the ranks of one ``run_local`` share: a slot each, and a barrier whose lock
    is the turn (a rank runs only while it holds it; waiting hands it over)."""

    def __init__(self, size, timeout=TIMEOUT):
        self.size, self.timeout = size, timeout
        self.slots = [None] * size
        self.turn = threading.Condition()
        self.arrived = self.generation = 0
        self.broken = False

    def wait(self):
        """Wait (holding the turn) until every rank has arrived. A rank released by the
        last arrival returns even if the group breaks right after; otherwise a broken
        group, or a wait longer than the timeout, raises BrokenBarrierError."""
        generation = self.generation
        self.arrived += 1
        if self.arrived == self.size:
            self.arrived, self.generation = 0, generation + 1
            self.turn.notify_all()
            return
        while self.generation == generation:
            if self.broken:
                raise threading.BrokenBarrierError
            if not self.turn.wait(self.timeout):
                self.abort()
                raise threading.BrokenBarrierError(
                    f"a rank waited more than {self.timeout} s for the others")

    def abort(self):
        """Release every waiting rank with BrokenBarrierError (holding the turn)."""
        self.broken = True
        self.turn.notify_all()

    def exchange(self, rank, value):
        """Every rank's ``value``, in rank order (a second wait keeps the slots until
        every rank has read them)."""
        self.slots[rank] = value
        self.wait()
        values = list(self.slots)
        self.wait()
        return values


class ThreadComm(Communicator):
    """One rank of a ``ThreadGroup``."""

    transport = "threads of one process"

    def __init__(self, group, rank, exact=True):
        self.group, self.rank, self.size = group, rank, group.size
        self.exact = exact  # always added in rank order; kept for the settings check

    def gather(self, obj):
        return self.group.exchange(self.rank, obj)

    def sum(self, x, backend):
        # a copy: the others add it up after this rank has moved on (and may reuse x)
        return ordered_sum(self.group.exchange(self.rank, backend.copy(x)))

    def broadcast(self, x, backend):
        return backend.copy(self.group.exchange(self.rank, x)[0])

    def abort(self, message):
        """Release every other rank from its collective (they raise BrokenBarrierError);
        the caller then raises its own error, which ``run_local`` reports."""
        self.group.abort()


def run_local(size, function, timeout=TIMEOUT):
    """``function(comm)`` on ranks 0..size-1 as threads; returns, rank by rank, what it
    returned or the exception it raised."""
    group = ThreadGroup(size, timeout)
    outcomes = [None] * size

    def main(rank):
        with group.turn:
            try:
                outcomes[rank] = function(ThreadComm(group, rank))
            except BaseException as error:  # reported in outcomes, never lost
                outcomes[rank] = error
                group.abort()  # no rank may wait for this one any longer

    threads = [threading.Thread(target=main, args=(rank,), name=f"fastnn rank {rank}",
                                daemon=True) for rank in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def first_error(outcomes):
    """The exception that stopped the group: the first one that is not another rank
    being released from a collective (BrokenBarrierError), else the first of those."""
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    causes = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)]
    return (causes or errors or [None])[0]


def simulate(ranks, model, X, y, sharded=False, **options):
    """Train ``model`` as ``fit(X, y, distributed=...)`` on ``ranks`` processes would, in
    this process; returns the history. With ``sharded=True``, X and y (and
    validation_data, if given) are lists with each rank's own part. The other ranks
    train deep copies of the model and of the options (optimizer, callbacks)."""
    from fastnn.distributed.data_parallel import DataParallel

    models = [model] + [copy.deepcopy(model) for _ in range(ranks - 1)]
    settings = [options] + [copy.deepcopy(options) for _ in range(ranks - 1)]

    def train(comm):
        rank = comm.rank
        data = (X[rank], y[rank]) if sharded else (X, y)
        kept = settings[rank]
        if sharded and kept.get("validation_data") is not None:
            kept = {**kept, "validation_data": kept["validation_data"][rank]}
        return models[rank].fit(*data, distributed=DataParallel(comm, sharded=sharded), **kept)

    outcomes = run_local(ranks, train)
    error = first_error(outcomes)
    if error is not None:
        raise error
    return outcomes[0]
