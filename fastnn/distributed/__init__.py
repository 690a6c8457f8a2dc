"""Data-parallel training across processes: MPI through mpi4py (``pip install
'fastnn[mpi]'``), NCCL through cupyx.distributed for the CuPy backend, and threads of
one process as the reference.

Every rank runs the same script, launched by ``mpiexec -n N python train.py``:

    model.fit(X, y, epochs=10, batch_size=128, distributed=True)
    if fastnn.distributed.DataParallel().rank == 0:
        model.save("model.npz")

The global batches are those of one process; each rank trains on its part of each,
and the gradients are summed over the ranks every step, so N ranks give the
parameters of one process up to the order of additions: bit for bit those of
``simulate(N, ...)``, which adds in the same order; how close to one process, per
optimizer, is in docs/distributed.md ("N ranks against one process").

In an MPI launch, importing this package makes any rank's failure or departure end the
whole job, never leave the others waiting (``guard.py``).
"""

from fastnn.distributed import guard
from fastnn.distributed.comm import Communicator, MPIComm, ordered_sum
from fastnn.distributed.data_parallel import DataParallel, join
from fastnn.distributed.local import ThreadComm, run_local, simulate

__all__ = ["Communicator", "DataParallel", "MPIComm", "ThreadComm", "join", "ordered_sum",
           "run_local", "simulate"]

if guard.launched():
    guard.install()
