"""Shared fixtures: every backend-neutral test runs on each backend that can run here.

``backend`` is parametrized over the NumPy reference and the strict stand-in (plus
the accelerating backends once they exist and can run on this machine). Tests
compare results with float64 NumPy formulas written out in the tests themselves.
"""

import numpy as np
import pytest
from strict_backend import StrictBackend, array_api_strict

import fastnn
from fastnn import backends
from fastnn.errors import BackendUnavailable


def _backend_params():
    params = [pytest.param("strict", id="strict")]
    for name in backends.NAMES:
        try:
            backends.load(name)
            params.append(pytest.param(name, id=name))
        except BackendUnavailable as error:
            if name == "numpy":
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
