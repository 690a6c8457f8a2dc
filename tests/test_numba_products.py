"""The Numba backend's dense products (``fastnn.kernels.numba.products`` through
``ops.dense_forward``/``dense_backward``): right against float64, the same bits at 1 and
2 Numba threads, and run with OpenBLAS on one thread (its pool never wakes in a step)."""

import numpy as np
import pytest
from conftest import at_threads

from fastnn import activations, backends
from fastnn.errors import BackendUnavailable

try:
    NUMBA = backends.load("numba")
except BackendUnavailable as error:
    pytest.skip(str(error), allow_module_level=True)

from fastnn.kernels.numba import ops as numba_ops  # noqa: E402
from fastnn.kernels.numba import products  # noqa: E402

needs_gemm = pytest.mark.skipif(numba_ops._gemm() is None, reason="no CBLAS GEMM found")
# (m, k, n) of a layer: split forward products (by rows, and by columns where n > m: the
# last of the first four) and dX products by columns (n_in > batch)
SHAPES = [(100, 4320, 100), (128, 400, 120), (37, 53, 19), (64, 300, 256), (1, 3, 2),
          (0, 4, 5), (5, 0, 3)]


def _arrays(m, k, n, dtype):
    rng = np.random.default_rng(m + k + n)
    return (rng.standard_normal(s).astype(dtype) for s in ((m, k), (k, n), (m, n)))


@needs_gemm
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m, k, n", SHAPES)
def test_the_three_products_match_float64(m, k, n, dtype):
    X, W, dZ = _arrays(m, k, n, dtype)
    got = (numba_ops._matmul(X, W), numba_ops._weight_product(X, dZ),
           numba_ops._matmul(dZ, W, trans_b=True))
    X, W, dZ = (a.astype(np.float64) for a in (X, W, dZ))
    tolerance = 1e-4 if dtype == np.float32 else 1e-12
    for a, expected in zip(got, (X @ W, X.T @ dZ, dZ @ W.T)):
        assert a.dtype == dtype and a.shape == expected.shape
        np.testing.assert_allclose(a, expected, rtol=tolerance, atol=tolerance * max(k, m, 1))


@needs_gemm
@pytest.mark.parametrize("m, k, n", SHAPES[:4])
def test_a_dense_layer_is_bit_identical_at_one_and_two_threads(m, k, n):
    X, W, dZ = _arrays(m, k, n, np.float32)
    b = np.linspace(-1, 1, n).astype(np.float32)
    relu = activations.get("relu")

    def layer():
        Z, A = NUMBA.ops.dense_forward(X, W, b, relu)
        return (Z, A, *NUMBA.ops.layer_backward(X, W, dZ, Z, A, relu, True))

    one, two = at_threads(1, layer), at_threads(2, layer)
    for a, b_ in zip(one, two):
        np.testing.assert_array_equal(a, b_)


def test_blocks_depend_on_the_shape_alone_and_cover_it():
    for rows in (1, 7, 16, 100, 128, 4320):
        block = products.blocks(rows)
        assert block >= products.MIN_ROWS and block % 8 == 0
        assert -(-rows // block) <= products.PARTS


@needs_gemm
def test_large_dense_products_run_with_one_blas_thread(monkeypatch):
    """The products' kernels are called while OpenBLAS's count is 1; it is restored."""
    control = numba_ops._blas_threads()
    if control is None:
        pytest.skip("no OpenBLAS thread setter in NumPy's BLAS")
    seen = []
    for name in ("product", "weight_rows"):
        real = getattr(products, name)
        monkeypatch.setattr(products, name, lambda *a, real=real: (seen.append(control.get()),
                                                                  real(*a))[1])
    X, W, dZ = _arrays(100, 4320, 100, np.float32)
    before = control.get()
    control.set(2)
    try:
        NUMBA.ops.dense_forward(X, W, np.zeros(100, np.float32), activations.get("relu"))
        NUMBA.ops.dense_backward(X, W, dZ, True)
        after = control.get()
    finally:
        control.set(before)
    assert seen == [1, 1, 1] and after == 2


def test_weight_rows_rejects_mismatched_shapes():
    gemm = numba_ops._gemm()
    if gemm is None:
        pytest.skip("no CBLAS GEMM found")
    X, _, dZ = _arrays(4, 3, 2, np.float32)
    with pytest.raises(ValueError, match="do not match"):
        products.weight_rows(gemm.sgemm, gemm.ilp64, X, dZ, np.empty((2, 2), np.float32), 8)


@needs_gemm
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("m, k, n", [(6, 5, 40), (0, 5, 40), (6, 0, 40)])
def test_a_product_by_column_blocks_is_the_product(m, k, n, trans_b):
    """Blocks of c's columns (op(b)'s columns read in place), empty sides included."""
    gemm = numba_ops._gemm()
    a, b, _ = _arrays(m, k, n, np.float64)
    b_arg = np.ascontiguousarray(b.T) if trans_b else b
    c = np.full((m, n), np.nan)
    products.product(gemm.dgemm, gemm.ilp64, a, b_arg, c, trans_b, 16, True)
    np.testing.assert_allclose(c, a @ b, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="do not match"):
        products.product(gemm.dgemm, gemm.ilp64, a, b_arg, np.empty((m, n + 1)), trans_b, 16,
                         True)
