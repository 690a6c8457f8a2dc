"""Any rank that fails or ends, before or during data-parallel training, ends the whole
job with a non-zero exit and its message, never leaves the others waiting; a job whose
ranks all finish exits as before, however early one of them ends (fastnn/distributed/
guard.py). Under MPICH and under Open MPI (tests/mpi_launch.py); the timeout is the
hang check."""

import os
import shutil
import subprocess
import sys

import pytest
from mpi_launch import BIN, MPIS, WORKER, launch

from fastnn.distributed import guard

TIMEOUT = 60  # seconds; each job takes about 2


def leave(tmp_path, mpi, what, when):
    """tests/mpi_worker.py's ``leave`` scenario on 2 ranks: rank 1 does ``what`` at ``when``."""
    return launch(2, sys.executable, str(WORKER), "leave", str(tmp_path), what, when,
                  mpi=mpi, timeout=TIMEOUT)


@pytest.mark.parametrize("mpi", MPIS)
@pytest.mark.parametrize("when", ["import", "dp"])
def test_a_rank_that_raises_before_fit_ends_the_job_with_its_message_once(tmp_path, mpi, when):
    """Before MPI has started ("import": fastnn imported, no DataParallel yet) the rank
    ends itself with SIGTERM; after ("dp"), through MPI_Abort."""
    run = leave(tmp_path, mpi, "raise", when)
    assert run.returncode != 0
    assert run.stderr.count("Traceback (most recent call last)") == 1, run.stderr
    assert run.stderr.count("FileNotFoundError: no data on rank 1\n") == 1, run.stderr
    assert run.stderr.count("fastnn: rank 1 of 2 ended with an uncaught FileNotFoundError; "
                            "aborting every rank") == 1, run.stderr
    assert not (tmp_path / "done").exists()


@pytest.mark.parametrize("mpi", MPIS)
@pytest.mark.parametrize("what, when", [("exit0", "import"), ("exit0", "dp"), ("exit3", "dp"),
                                        ("exit0", "between")])
def test_a_rank_that_leaves_while_the_others_train_ends_the_job(tmp_path, mpi, what, when):
    """sys.exit(0) or sys.exit(3) before fit, with or without a DataParallel, or between
    two fits: rank 0, waiting for rank 1 in fit's first collective, aborts the job."""
    run = leave(tmp_path, mpi, what, when)
    assert run.returncode != 0
    assert run.stderr.count("fastnn: rank 1 of 2 left the job (its script ended or called "
                            "sys.exit()) while rank 0 waits for it in a collective of "
                            "data-parallel training") == 1, run.stderr
    assert not (tmp_path / "done").exists()


@pytest.mark.parametrize("mpi", MPIS)
@pytest.mark.parametrize("status", [0, 3])
def test_a_rank_that_ends_after_training_lets_the_others_finish(tmp_path, mpi, status):
    """Rank 1 ends right after fit while rank 0 works on for a second (saving, say): the
    job ends when rank 0 does, with rank 1's exit status."""
    run = leave(tmp_path, mpi, f"exit{status}", "after")
    assert (tmp_path / "done").exists(), run.stderr
    assert "fastnn:" not in run.stderr
    assert run.returncode == status, run.stderr


@pytest.mark.parametrize("mpi", MPIS)
def test_fastnn_train_under_mpiexec_without_distributed_is_refused_once(tmp_path, mpi):
    """mpiexec -n 2 fastnn train ... --out DIR without --distributed: one line from rank 0,
    a non-zero exit, nothing trained or written (each rank would write DIR)."""
    command = shutil.which("fastnn", path=str(BIN))
    run = launch(2, command, "train", "--dataset", "digits", "--epochs", "3", "--no-plots",
                 "--out", str(tmp_path / "run"), mpi=mpi, timeout=TIMEOUT)
    assert run.returncode != 0 and run.stdout == ""
    assert run.stderr.count("fastnn: error: fastnn train is rank 0 of 2 of an MPI launch "
                            "without --distributed") == 1, run.stderr
    assert "Traceback" not in run.stderr and not (tmp_path / "run").exists()


@pytest.mark.parametrize("mpi", MPIS)
def test_fastnn_train_distributed_with_a_bad_out_says_so_once(tmp_path, mpi):
    """mpiexec -n 2 fastnn train --distributed --out FILE: rank 0 finds --out unusable
    before training; one line (not rank 0's error and rank 1's relay of it), a non-zero
    exit, nothing trained and the file left as it was. (Open MPI's launcher adds its
    own note of the non-zero exit.)"""
    command = shutil.which("fastnn", path=str(BIN))
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    run = launch(2, command, "train", "--dataset", "digits", "--distributed", "--epochs", "3",
                 "--no-plots", "--out", str(taken), mpi=mpi, timeout=TIMEOUT)
    assert run.returncode != 0 and run.stdout == ""
    assert run.stderr.count("fastnn: error:") == 1, run.stderr
    assert run.stderr.count(f"fastnn: error: --out {taken} is a file; --out needs a folder "
                            f"(created if missing), so give another path\n") == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert taken.read_text() == "not a folder"


@pytest.mark.parametrize("variables, expected", [
    ({}, False),  # a plain process
    ({"PMI_RANK": "1", "PMI_SIZE": "2"}, True),  # MPICH's Hydra, Intel MPI
    ({"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "4", "PMIX_RANK": "0"}, True),
    ({"PMIX_RANK": "3"}, True),  # srun --mpi=pmix: no size; MPI tells at exit
    ({"PMI_RANK": "0", "PMI_SIZE": "1"}, False),  # mpiexec -n 1
    ({"PMI_RANK": "1", "PMI_SIZE": "2", guard.OWNER: "1"}, False),  # a process rank 1 started
    ({"PMI_RANK": "1", "PMI_SIZE": "2", guard.OWNER: "77"}, True),  # the rank itself
    ({"PMI_RANK": "1", "PMI_SIZE": "2", guard.SWITCH: "0"}, False),  # turned off
])
def test_an_mpi_launch_is_seen_from_the_environment(variables, expected):
    assert guard.launched(variables, pid=77) is expected


@pytest.mark.parametrize("variables, hooked", [({}, False), ({"PMI_RANK": "0", "PMI_SIZE": "2"},
                                                             True)])
def test_importing_fastnn_never_imports_mpi4py(variables, hooked):
    """Plain use stays as it was; in an MPI launch only the hooks are installed (the rank
    ends with os._exit here: this fake launch has no launcher to start MPI with)."""
    code = ("import os, sys, fastnn; print('mpi4py' in sys.modules, "
            "sys.excepthook is not sys.__excepthook__, flush=True); os._exit(0)")
    env = {key: value for key, value in os.environ.items()
           if key not in guard.RANK_VARIABLES + guard.SIZE_VARIABLES + (guard.OWNER,)}
    run = subprocess.run([sys.executable, "-c", code], env={**env, **variables},
                         capture_output=True, text=True, timeout=TIMEOUT, check=True)
    assert run.stdout.split() == ["False", str(hooked)]
