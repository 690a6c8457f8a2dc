"""The CuPy backend's transport: NCCL collectives through ``cupyx.distributed``.

NCCL works on device memory and is ordered on CuPy's current stream, so a step's
gradient sum queues behind its backprop and ahead of its update without a host sync
(the ``Reductions`` seconds are then the time to queue it). MPI (mpi4py) only starts
it: CuPy shares the NCCL id over COMM_WORLD, and settings, counts and aborts still go
over MPI. Each rank must use its own GPU (``select_gpu``).

Not run on a GPU while it was written (none was available): the host-buffer path
(``MPIComm``), which every CuPy collective falls back to without NCCL, was tested on
the strict stand-in backend instead.
"""

import socket

from fastnn.distributed.comm import Communicator, ordered_sum
from fastnn.errors import DistributedError


def available(backend):
    """True if this CuPy has NCCL."""
    try:
        from cupy.cuda import nccl
    except ImportError:
        return False
    return bool(getattr(nccl, "available", False))


def select_gpu(mpi):
    """Use GPU (local rank modulo the GPUs here), the local rank being this rank's
    place among the ranks on its host; returns the device id."""
    import cupy

    local = mpi.comm.Split_type(mpi.MPI.COMM_TYPE_SHARED).Get_rank()
    device = local % cupy.cuda.runtime.getDeviceCount()
    cupy.cuda.Device(device).use()
    return device


class NcclComm(Communicator):
    """Sums and broadcasts of CuPy arrays over NCCL; everything else over ``mpi``."""

    transport = "NCCL (cupyx.distributed)"

    def __init__(self, mpi, backend):
        import cupyx.distributed

        if mpi.MPI.Comm.Compare(mpi.comm, mpi.MPI.COMM_WORLD) not in (mpi.MPI.IDENT,
                                                                      mpi.MPI.CONGRUENT):
            raise DistributedError("NCCL through cupyx.distributed needs MPI's COMM_WORLD; "
                                   "pass DataParallel(comm, nccl=False) for another "
                                   "communicator")
        self.mpi, self.cupy = mpi, backend.cupy
        self.rank, self.size, self.exact = mpi.rank, mpi.size, mpi.exact
        places = mpi.gather((socket.gethostname(), self.cupy.cuda.Device().id))
        if len(set(places)) < len(places):
            raise DistributedError(
                f"two ranks would share a GPU ({places}, as (host, device) by rank); call "
                f"DataParallel.select_gpu() before building the model, or set "
                f"CUDA_VISIBLE_DEVICES per rank")
        try:
            self.nccl = cupyx.distributed.init_process_group(self.size, self.rank,
                                                             use_mpi=True)
        except TypeError:  # CuPy versions that use MPI whenever mpi4py imports
            self.nccl = cupyx.distributed.init_process_group(self.size, self.rank)

    def gather(self, obj):
        return self.mpi.gather(obj)

    def abort(self, message):
        self.mpi.abort(message)

    def sum(self, x, backend):
        x = self.cupy.ascontiguousarray(x)
        if not self.exact:
            out = self.cupy.empty_like(x)
            self.nccl.all_reduce(x, out, "sum")
            return out
        parts = self.cupy.empty((self.size, *x.shape), x.dtype)
        self.nccl.all_gather(x, parts, x.size)
        return ordered_sum([parts[i] for i in range(self.size)])

    def broadcast(self, x, backend):
        x = self.cupy.array(x, order="C")  # a copy: NCCL writes it in place
        self.nccl.broadcast(x, 0)
        return x
