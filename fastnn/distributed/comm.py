"""Communicators: the few collectives data-parallel training needs, over MPI.

A communicator has a ``rank`` and a ``size`` and offers:

- ``gather(obj)``: every rank's small Python object, in rank order (settings, counts);
- ``sum(x, backend)``: the sum over the ranks of a device array, added in rank order
  (``ordered_sum``) when ``exact``, so every rank, run and rank layout of the same
  count gets the same bits; with ``exact=False`` MPI's own Allreduce, whose order is
  the library's (exact anyway at 1 or 2 ranks, a + b == b + a, so ``MPIComm`` takes it
  there: in place, and it moves less); ``x`` may be overwritten;
- ``summing(x, backend)``: a function that sums ``x`` over the ranks in place at each
  call, for a buffer summed step after step (the fused steps' gradients): prepared once,
  so a call does as little as it can (``MPIComm``: a persistent request, started);
- ``broadcast(x, backend)``: rank 0's values of a device array;
- ``abort(message)``: print ``message`` and end every rank of the job.

``MPIComm`` moves device arrays through host buffers, each copy through the backend's
counted transfers (``backend.to_numpy`` / ``backend.asarray``; free on NumPy). Its
collectives are MPI's nonblocking ones, waited for by ``guard.wait``, which aborts the
job if a rank they need has left it. The CuPy backend's NCCL transport is in
``nccl.py``, the in-process reference in ``local.py``.
"""

import contextlib
import functools
import operator
import pickle

import numpy as np

from fastnn.distributed import guard
from fastnn.errors import BackendUnavailable

INSTALL_HINT = "pip install 'fastnn[mpi]' (mpi4py and the mpich wheel)"


def ordered_sum(parts, out=None):
    """parts[0] + parts[1] + ... + parts[n-1], left to right, one array per rank; into
    ``out`` (NumPy arrays, at least 2 parts) where given, with the same bits."""
    if out is None:
        return functools.reduce(operator.add, parts)
    np.add(parts[0], parts[1], out=out)
    for part in parts[2:]:
        np.add(out, part, out=out)
    return out


def import_mpi():
    """mpi4py's MPI module, or BackendUnavailable saying how to install it."""
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise BackendUnavailable(
            f"distributed training needs mpi4py and an MPI library, which are not installed "
            f"here; install them with: {INSTALL_HINT}, then launch with mpiexec -n N ..."
        ) from error
    except (RuntimeError, OSError) as error:  # mpi4py without an MPI library to load
        raise BackendUnavailable(
            f"distributed training cannot start MPI ({error}); install an MPI library with: "
            f"{INSTALL_HINT}"
        ) from error
    return MPI


class Communicator:
    """The interface; ``rank`` and ``size`` describe this process's place in the job."""

    rank, size, exact = 0, 1, True
    transport = "none"

    def gather(self, obj):
        raise NotImplementedError

    def sum(self, x, backend):
        raise NotImplementedError

    @contextlib.contextmanager
    def summing(self, x, backend):
        """``with comm.summing(x, backend) as sum_in_place:`` each ``sum_in_place()`` sums
        ``x`` over the ranks in place (one collective, ``sum``'s bits); here ``sum`` and a
        copy back where it returns another array."""

        def sum_in_place():
            total = self.sum(x, backend)
            if total is not x:
                x[...] = total

        yield sum_in_place

    def broadcast(self, x, backend):
        raise NotImplementedError

    def abort(self, message):
        raise NotImplementedError


class MPIComm(Communicator):
    """An mpi4py communicator (COMM_WORLD by default); device arrays go through host
    buffers, so it serves every backend."""

    transport = "MPI, host buffers"

    def __init__(self, comm=None, exact=True):
        self.MPI = import_mpi()
        self.comm = self.MPI.COMM_WORLD if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        self.exact = bool(exact)
        self.members = guard.members(self.comm, self.MPI)

    def gather(self, obj):
        data = np.frombuffer(pickle.dumps(obj), np.uint8)
        sizes = np.empty(self.size, np.int64)
        self._wait(self.comm.Iallgather(np.array([data.size], np.int64), sizes))
        joined = np.empty(int(sizes.sum()), np.uint8)
        self._wait(self.comm.Iallgatherv(data, (joined, sizes)))
        guard.done(self.members)
        ends = np.cumsum(sizes)
        return [pickle.loads(joined[end - size:end].tobytes()) for size, end in zip(sizes, ends)]

    def sum(self, x, backend):
        host = _host_buffer(backend, x)
        if self.exact and self.size > 2:  # at 1 or 2 ranks MPI's sum is the ordered one
            parts = np.empty((self.size, *host.shape), host.dtype)
            self._wait(self.comm.Iallgather(host, parts))
            total = ordered_sum(parts)
        else:
            self._wait(self.comm.Iallreduce(self.MPI.IN_PLACE, host, op=self.MPI.SUM))
            total = host
        guard.done(self.members)
        return backend.asarray(total)

    @contextlib.contextmanager
    def summing(self, x, backend):
        """``Communicator.summing``. A C-contiguous, writable NumPy ``x`` (host memory: no
        transfer to count) is summed where it is, by one persistent request (MPI-4's
        ``Allreduce_init``, or at more than 2 ranks with ``exact`` an ``Allgather_init``
        into buffers kept for the ordered sum, added in place), started at each call: no
        message to describe, request or array to allocate, or copy. In the fused steps'
        hook, between two steps of a kernel, the per-call path (``sum``) took 18-26 us a
        step on one rank against 5-9 for this: what Python touches there is out of the
        caches. Other arrays, or an MPI library without persistent collectives, take
        ``sum``."""
        host = isinstance(x, np.ndarray) and x.flags.c_contiguous and x.flags.writeable
        request = self._persistent(x) if host else None
        if request is None:
            with super().summing(x, backend) as sum_in_place:
                yield sum_in_place
            return
        request, parts = request
        members, wait = self.members, self._wait

        def sum_in_place():
            request.Start()
            if not request.Test():
                wait(request)
            guard.done(members)
            if parts is not None:
                ordered_sum(parts, out=x)

        try:
            yield sum_in_place
        finally:
            if request.Test():  # inactive (an error may leave it active: the job ends)
                request.Free()

    def _persistent(self, x):
        """(the persistent request summing ``x``, the ordered sum's parts or None), or None
        where the MPI library has no persistent collectives."""
        try:
            if self.exact and self.size > 2:  # at 1 or 2 ranks MPI's sum is the ordered one
                parts = np.empty((self.size, *x.shape), x.dtype)
                return self.comm.Allgather_init(x, parts), parts
            return self.comm.Allreduce_init(self.MPI.IN_PLACE, x, op=self.MPI.SUM), None
        except (NotImplementedError, AttributeError):  # before MPI-4 (or mpi4py 4)
            return None

    def broadcast(self, x, backend):
        host = _host_buffer(backend, x)
        self._wait(self.comm.Ibcast(host, root=0))
        guard.done(self.members)
        return backend.asarray(host)

    def abort(self, message):
        guard.end_job(message, self.comm)

    def _wait(self, request):
        guard.wait(request, self.comm, self.MPI, self.members)


def _host_buffer(backend, x):
    """A device array as a C-contiguous, writable host array (one counted transfer)."""
    host = backend.to_numpy(x)
    if not (host.flags.c_contiguous and host.flags.writeable):
        host = np.array(host, order="C")
    return host
