"""No rank may leave the others waiting: how any rank's end becomes the job's end.

In an MPI launch (the launcher's environment names this process's rank: Open MPI's
``OMPI_COMM_WORLD_RANK``, PMIx's ``PMIX_RANK``, Hydra's (MPICH, Intel MPI) ``PMI_RANK``,
MVAPICH's ``MV2_COMM_WORLD_RANK``) importing fastnn installs two hooks, without importing
mpi4py, so that nobody needs ``python -m mpi4py``:

- **An uncaught exception** prints its traceback as usual, then a line naming the rank,
  and ends every rank (``end_job``): through MPI_Abort when MPI has started, else by
  ending this rank with SIGTERM, which the launcher takes as the job's failure (Hydra
  lets the others run on after a non-zero exit of a rank that never started MPI).
- **A rank that leaves** (its script ends, or calls ``sys.exit``, with any status) starts
  MPI if it had not, sends every other rank a notice (tag ``NOTICE_TAG`` on COMM_WORLD)
  with the number of fastnn collectives it completed on each communicator, and waits,
  without using a core, for the notices of all the others before MPI_Finalize (which
  then has no message left unreceived). So a job whose ranks all finish (rank 0 still
  saving the model while the others are done, say) ends as before, with its ranks' exit
  statuses. A rank that waits in one of fastnn's collectives (``wait``) looks for
  notices while it waits: a rank of that collective that left before completing it
  will never come, and the waiting rank aborts the job, naming it. (One that left after
  completing it, which MPI allows before the others complete theirs, is not waited for.)

So every rank of the job must be one (a Python process that imported fastnn and does
not call ``MPI.Finalize()`` itself); ``FASTNN_MPI_GUARD=0`` leaves the hooks out at
import (for jobs with other programs among their ranks, or independent single-process
trainings under mpiexec); creating a ``DataParallel`` of several ranks installs them
anyway. The hooks act only in the process that installed them (not in processes it
forks or starts). Not covered: a rank blocked in an MPI call of its own (mpi4py's
``bcast``, say) or in NCCL.
"""

import atexit
import os
import pickle
import signal
import sys
import time

RANK_VARIABLES = ("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "MV2_COMM_WORLD_RANK")
SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE")
OWNER = "FASTNN_MPI_RANK_PID"  # the pid of the rank that installed the hooks
SWITCH = "FASTNN_MPI_GUARD"
NOTICE_TAG = 31_071  # below 32767, the smallest upper bound MPI allows for tags
ABORT_GRACE = 0.5  # seconds between writing an abort's message and aborting
CHECK_EVERY = 0.01  # seconds between looks for notices while waiting in a collective
BUSY = 0.05  # seconds of busy waiting in a collective before sleeping between tests

_installed = {"pid": None}
_done = {}  # fastnn collectives completed here, by the COMM_WORLD ranks of their communicator
_left = {}  # COMM_WORLD rank -> its _done when it left (its notice)


def launched(environ=None, pid=None):
    """True if the environment says this process is one rank of a launch of several."""
    env = os.environ if environ is None else environ
    if env.get(SWITCH, "1").strip().lower() in ("0", "off", "no", "false"):
        return False
    if not any(env.get(name) for name in RANK_VARIABLES):
        return False
    owner = env.get(OWNER)
    if owner is not None and owner != str(os.getpid() if pid is None else pid):
        return False  # a process that a rank started: it inherited the rank's variables
    size = next((env[name] for name in SIZE_VARIABLES if env.get(name)), None)
    return size is None or size.strip() != "1"


def install():
    """Install the hooks in this process (once)."""
    if _installed["pid"] == os.getpid():
        return
    _installed["pid"] = os.getpid()
    os.environ[OWNER] = str(os.getpid())
    previous = sys.excepthook

    def uncaught(kind, value, trace):
        previous(kind, value, trace)  # the traceback, as without the hook
        if os.getpid() == _installed["pid"]:
            rank, size = place()
            end_job(f"fastnn: rank {rank} of {size} ended with an uncaught {kind.__name__}; "
                    f"aborting every rank\n")

    sys.excepthook = uncaught
    atexit.register(_leave)


def end_job(message, comm=None):
    """Write ``message`` to stderr and end every rank of the job; does not return.
    ``comm``: the mpi4py communicator to abort (None: COMM_WORLD)."""
    sys.stderr.write(message)
    sys.stderr.flush()
    MPI = _running_mpi()
    if MPI is not None:
        time.sleep(ABORT_GRACE)  # for mpiexec to forward the message before it kills us
        (MPI.COMM_WORLD if comm is None else comm).Abort(1)
    else:
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
        except (OSError, ValueError):  # not the main thread, or no such signal here
            pass
    os._exit(1)  # MPI_Abort may return before the launcher's kill arrives


def members(comm, MPI):
    """The COMM_WORLD ranks of the mpi4py communicator ``comm``, in its rank order: the
    key under which its collectives are counted."""
    group, world = comm.Get_group(), MPI.COMM_WORLD.Get_group()
    try:
        return tuple(MPI.Group.Translate_ranks(group, list(range(comm.Get_size())), world))
    finally:
        group.Free()
        world.Free()


def wait(request, comm, MPI, ranks):
    """Complete ``request``, part of fastnn's next collective on the mpi4py communicator
    ``comm`` (whose COMM_WORLD ranks are ``ranks``). A rank that left the job before
    completing this collective never will: then abort, naming it."""
    started = checked = time.monotonic()
    while not request.Test():
        now = time.monotonic()
        if now - checked >= CHECK_EVERY:
            checked = now
            _abort_if_gone(comm, MPI, ranks)
        if now - started > BUSY:
            time.sleep(0.001)  # a long wait (a rank still loading data) need not burn a core


def done(ranks):
    """Count one more completed collective on the communicator of COMM_WORLD ranks ``ranks``."""
    _done[ranks] = _done.get(ranks, 0) + 1


def _abort_if_gone(comm, MPI, ranks):
    _collect(MPI)
    current = _done.get(ranks, 0) + 1
    gone = [i for i, rank in enumerate(ranks)
            if rank in _left and _left[rank].get(ranks, 0) < current]
    if gone:
        end_job(f"fastnn: rank {gone[0]} of {len(ranks)} left the job (its script ended "
                f"or called sys.exit()) while rank {comm.Get_rank()} waits for it in a "
                f"collective of data-parallel training; every rank must take part in every "
                f"fit(distributed=...) and DataParallel.check(); aborting every rank\n", comm)


def _collect(MPI):
    """Receive the notices that have arrived: those ranks have left, having completed
    the collectives their notices count."""
    world, status = MPI.COMM_WORLD, MPI.Status()
    while world.Iprobe(source=MPI.ANY_SOURCE, tag=NOTICE_TAG, status=status):
        notice = bytearray(status.Get_count(MPI.BYTE))
        world.Recv(notice, source=status.Get_source(), tag=NOTICE_TAG)
        _left[status.Get_source()] = pickle.loads(notice)


def _leave():
    """At exit: tell every other rank that this one has left, and wait for theirs (see
    the module docstring)."""
    if os.getpid() != _installed["pid"]:
        return
    try:
        from mpi4py import MPI  # starts MPI if it had not started
    except Exception:  # no mpi4py, or no MPI library: no rank can use MPI through fastnn
        return
    if not MPI.Is_initialized() or MPI.Is_finalized():
        return
    world = MPI.COMM_WORLD
    others = set(range(world.Get_size())) - {world.Get_rank()}
    notice = bytearray(pickle.dumps(_done))
    sent = [world.Isend(notice, dest=rank, tag=NOTICE_TAG) for rank in sorted(others)]
    while not others <= _left.keys():  # every notice sent is received before MPI_Finalize
        _collect(MPI)
        time.sleep(0.002)
    MPI.Request.Waitall(sent)


def _running_mpi():
    """mpi4py's MPI module if MPI has started and not finished in this process, else None."""
    MPI = sys.modules.get("mpi4py.MPI")
    if MPI is None or not MPI.Is_initialized() or MPI.Is_finalized():
        return None
    return MPI


def place():
    """(rank, size) of this process: MPI's if it has started, else the launcher's."""
    MPI = _running_mpi()
    if MPI is not None:
        return MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size()
    rank = next((os.environ[name] for name in RANK_VARIABLES if os.environ.get(name)), "?")
    size = next((os.environ[name] for name in SIZE_VARIABLES if os.environ.get(name)), "?")
    return rank, size
