"""The benchmark suite's parametrization: every workload on every target that runs here.

Targets are the fastnn backends (skipped with the reason when one cannot run here),
the strict stand-in from tests/ (array-api-strict on a non-CPU device: it proves the
workloads use only the public API and the backend's transfers) and the PyTorch peer
(skipped when torch is not installed; it is never a dependency).

With --benchmark-disable (the default test run) the workloads use their quick sizes:
each executes once and its result is checked; timing runs use the full sizes.
"""

import importlib.util
import os
import sys
from pathlib import Path

os.environ.pop("FASTNN_BACKEND", None)  # before fastnn is imported: see tests/conftest.py

import pytest  # noqa: E402

from bench import workloads  # noqa: E402
from fastnn import backends  # noqa: E402
from fastnn.errors import BackendUnavailable  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # the stand-in
from strict_backend import StrictBackend, array_api_strict  # noqa: E402

_strict = []


def strict_backend():
    if array_api_strict is None:
        pytest.skip("array-api-strict is not installed (pip install 'fastnn[test]')")
    if not _strict:
        _strict.append(StrictBackend())
    return _strict[0]


def _target_params():
    params = []
    for name in backends.NAMES:
        try:
            backends.load(name)
            params.append(pytest.param(name, id=name))
        except BackendUnavailable as error:
            params.append(pytest.param(name, id=name, marks=pytest.mark.skip(reason=str(error))))
    params.append(pytest.param("strict", id="strict"))
    torch_missing = importlib.util.find_spec("torch") is None
    params.append(pytest.param("torch", id="torch", marks=pytest.mark.skipif(
        torch_missing, reason="PyTorch is not installed; its peer column is optional")))
    return params


def pytest_generate_tests(metafunc):
    if "workload" in metafunc.fixturenames:
        options = metafunc.config.getoption  # as pytest-benchmark decides it
        quick = options("benchmark_disable") and not options("benchmark_enable")
        chosen = workloads.catalog(quick)
        metafunc.parametrize("workload", chosen, ids=[w.id for w in chosen])
    if "target" in metafunc.fixturenames:
        metafunc.parametrize("target", _target_params())


def builder(target):
    """(workload, inputs) -> Case on the named target."""
    if target == "torch":
        import torch

        return lambda workload, data: workload.torch(torch, "cpu", data)
    backend = strict_backend() if target == "strict" else backends.load(target)
    return lambda workload, data: workload.fastnn(backend, data)
