"""bench.batchnorm at a small size: every target trains the same net (its losses are
PyTorch's), the generic-passes target really runs the generic ops, and the table has
a row per thread count."""

import importlib.util

import pytest

from bench import batchnorm
from fastnn import backends
from fastnn.errors import BackendUnavailable

needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                                 reason="PyTorch is not installed")


def numba_backend():
    try:
        return backends.load("numba")
    except BackendUnavailable as error:
        pytest.skip(str(error))


def test_the_generic_target_keeps_every_other_kernel():
    numba = numba_backend()
    generic = batchnorm.generic_passes(numba)
    assert generic.ops.batchnorm_apply.func.__module__ == "fastnn.norm_ops"
    assert numba.ops.batchnorm_apply.__module__ == "fastnn.kernels.numba.ops"
    assert set(generic.ops.overridden) == {name for name in numba.ops.overridden
                                           if not name.startswith("batchnorm_")}


def test_a_target_whose_losses_are_not_pytorchs_is_refused():
    losses = {"torch": (2.3, 2.2), "numba": (2.3, 2.2), "numpy": (2.3, 2.5)}
    with pytest.raises(RuntimeError, match="numpy's losses"):
        batchnorm.check(losses)
    batchnorm.check({"torch": (2.3, 2.2), "numba": (2.30001, 2.2)})


@needs_torch
def test_a_small_run_gives_a_row_per_thread_count():
    numba_backend()
    logged = []
    results = batchnorm.run([1], rounds=1, log=logged.append, batch=8, retries=0)
    (row,) = results["rows"]
    assert row["threads"] == 1 and row["batch"] == 8
    assert set(row["losses"]) == set(batchnorm.TARGETS)
    assert all(row[t]["ms"] > 0 for t in batchnorm.TARGETS)
    table = batchnorm.markdown(results)
    assert "| B=8 | 1 |" in table and "python -m bench.batchnorm" in table
