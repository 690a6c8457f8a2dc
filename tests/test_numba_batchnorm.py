"""The Numba backend's per-channel BatchNorm kernels (kernels/numba/batchnorm.py): the
generic ops' results to rounding, the generic ops themselves for what they do not take,
and the same bits at one and two threads."""

import numpy as np
import pytest
from conftest import at_threads

import fastnn
from fastnn import backends, norm_ops
from fastnn.errors import BackendUnavailable

try:
    NUMBA = backends.load("numba")
except BackendUnavailable as error:
    pytest.skip(str(error), allow_module_level=True)

import numba  # noqa: E402  (only once the backend is known to load)

from fastnn import BatchNorm2D, Conv2D, Dense, Flatten, MaxPool2D  # noqa: E402

RNG = np.random.default_rng(5)
TOLERANCE = {"float32": 2e-6, "float64": 1e-13}


def arrays(dtype, shape=(7, 3, 45)):
    X = (RNG.normal(size=shape) * [[[2.0], [0.5], [30.0]]] + 3.0).astype(dtype)
    vectors = [RNG.normal(size=shape[1]).astype(dtype) for _ in range(4)]
    return X, vectors


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_each_kernel_gives_the_generic_ops_results(dtype):
    X, (center, scale, gamma, beta) = arrays(dtype)
    dZ = RNG.normal(size=X.shape).astype(dtype)
    ops, rtol = NUMBA.ops, TOLERANCE[dtype]
    assert {"batchnorm_sums", "batchnorm_apply", "batchnorm_grad_sums",
            "batchnorm_input_grad"} <= set(ops.overridden)
    for c in (None, center):
        got, want = ops.batchnorm_sums(X, c), norm_ops.batchnorm_sums(np, X, c)
        assert got.dtype == X.dtype and got.shape == (7, 3)
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max())
    inv_std = np.abs(scale) + 0.5
    for got, want in zip(ops.batchnorm_apply(X, center, inv_std, gamma, beta),
                         norm_ops.batchnorm_apply(np, X, center, inv_std, gamma, beta)):
        assert got.dtype == X.dtype
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max())
    X_hat = ops.batchnorm_apply(X, center, inv_std, gamma, beta)[0]
    for got, want in zip(ops.batchnorm_grad_sums(dZ, X_hat),
                         norm_ops.batchnorm_grad_sums(np, dZ, X_hat)):
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max() * 10)
    got = ops.batchnorm_input_grad(dZ, X_hat, scale, gamma, beta)
    want = norm_ops.batchnorm_input_grad(np, dZ, X_hat, scale, gamma, beta)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max())


def test_what_the_kernels_do_not_take_runs_the_generic_ops():
    X, (center, scale, gamma, beta) = arrays("float64")
    view = X[:, :, ::2]  # not contiguous
    np.testing.assert_array_equal(NUMBA.ops.batchnorm_sums(view, center),
                                  norm_ops.batchnorm_sums(np, view, center))
    mixed = center.astype(np.float32)  # another dtype than X's
    for got, want in zip(NUMBA.ops.batchnorm_apply(X, mixed, scale, gamma, beta),
                         norm_ops.batchnorm_apply(np, X, mixed, scale, gamma, beta)):
        np.testing.assert_array_equal(got, want)
    halves = X.astype(np.float16)
    np.testing.assert_array_equal(NUMBA.ops.batchnorm_grad_sums(halves, halves)[1],
                                  norm_ops.batchnorm_grad_sums(np, halves, halves)[1])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_training_step_gives_the_same_bits_at_one_and_two_threads(dtype):
    X = RNG.normal(size=(37, 1, 12, 12)).astype(dtype)
    y = RNG.integers(0, 10, size=37)

    def train():
        model = fastnn.Sequential([Conv2D(1, 4, 3), BatchNorm2D(4, activation="relu"),
                                   MaxPool2D(2), Flatten(), Dense(100, 10, "softmax")],
                                  input_shape=(1, 12, 12), seed=0, dtype=dtype, backend=NUMBA)
        model.fit(X, y, epochs=2, batch_size=37, lr=0.05, shuffle=False, seed=0)
        return [a.value.copy() for a in model.parameters() + model.buffers()]

    results = [at_threads(threads, train) for threads in (1, 2)]
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("this machine gives Numba one thread")
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)
