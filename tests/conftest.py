"""Shared fixtures: every backend-neutral test runs on each backend that can run here.

``backend`` is parametrized over the NumPy reference and the strict stand-in (plus
the accelerating backends once they exist and can run on this machine). Tests
compare results with float64 NumPy formulas written out in the tests themselves.

FASTNN_BACKEND does not steer the suite: the backend-neutral tests run on every
backend that can run here, and the others expect the default backend, as a fresh
process gets it. So a FASTNN_BACKEND exported in the shell (say =cupy on a GPU
machine) is set aside for the run before fastnn is imported, in this process and in
those the tests start; the report header says so. Tests that need it set it
themselves. (bench/conftest.py does the same when only bench/ is run.)
"""

import importlib.metadata
import importlib.util
import os

SET_ASIDE = os.environ.pop("FASTNN_BACKEND", None)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from strict_backend import StrictBackend, array_api_strict  # noqa: E402

import fastnn  # noqa: E402
from fastnn import backends  # noqa: E402
from fastnn.errors import BackendUnavailable  # noqa: E402


def pytest_report_header(config):
    if SET_ASIDE is not None:
        return (f"FASTNN_BACKEND={SET_ASIDE!r} is set aside for the test run: backend-neutral "
                f"tests run on every backend that can run here, the others on the default")
    return None


def must_start(name):
    """True where a backend that does not start is fastnn's fault, not the machine's:
    NumPy always, Numba when a version fastnn is tested with is installed. Such a
    backend fails the run instead of skipping its tests (a broken kernel layer would
    otherwise show as skips). CuPy may be installed on a machine with no GPU."""
    if name == "numpy":
        return True
    if name != "numba" or importlib.util.find_spec("numba") is None:
        return False
    from fastnn.backends.numba_backend import tested_numba

    tested = tested_numba()
    minor = tuple(int(part) for part in importlib.metadata.version("numba").split(".")[:2])
    if tested is None:
        return False
    low, high = (tuple(int(part) for part in version.split(".")) for version in tested)
    return low <= minor <= high


def _backend_params():
    params = [pytest.param("strict", id="strict")]
    for name in backends.NAMES:
        try:
            backends.load(name)
            params.append(pytest.param(name, id=name))
        except BackendUnavailable as error:
            if must_start(name):
                raise
            params.append(pytest.param(name, id=name, marks=pytest.mark.skip(reason=str(error))))
    return params


_strict = None


def make_backend(name):
    global _strict
    if name != "strict":
        return backends.load(name)
    if array_api_strict is None:
        pytest.skip("array-api-strict is not installed (pip install 'fastnn[test]')")
    if _strict is None:
        _strict = StrictBackend()
    return _strict


@pytest.fixture(params=_backend_params())
def backend(request):
    """Each backend in turn, made current for the test and restored after it."""
    chosen = make_backend(request.param)
    with fastnn.use_backend(chosen):
        yield chosen


@pytest.fixture
def strict():
    return make_backend("strict")


@pytest.fixture(autouse=True)
def _restore_backend():
    previous = fastnn.get_backend()
    yield
    fastnn.set_backend(previous)


@pytest.fixture
def no_float_warnings():
    """NumPy floating-point warnings become errors inside the test."""
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        yield


def central_difference(f, z, eps=1e-6):
    """d f(z) / dz for a scalar function f of a float64 array z, entry by entry."""
    grad = np.zeros_like(z)
    for index in np.ndindex(*z.shape):
        zp, zm = z.copy(), z.copy()
        zp[index] += eps
        zm[index] -= eps
        grad[index] = (f(zp) - f(zm)) / (2 * eps)
    return grad


def host(backend, x):
    """A backend array as float64 NumPy, for comparisons."""
    return np.asarray(backend.to_numpy(x), dtype=np.float64)


def dev(backend, x, dtype="float64"):
    """A NumPy array on ``backend`` with ``dtype``."""
    return backend.asarray(np.asarray(x), dtype=backend.dtype(dtype))


def at_threads(count, function):
    """``function()`` with Numba's kernels on ``count`` threads (at most the machine's),
    the thread count put back afterwards, even on errors."""
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(min(count, numba.config.NUMBA_NUM_THREADS))
    try:
        return function()
    finally:
        numba.set_num_threads(before)
