"""NumPy's GEMM called from Numba kernels (``fastnn.kernels.numba.blas``): finding it,
and C = alpha * op(A) @ op(B) + beta * C against NumPy for every transpose, both
dtypes, both integer widths, empty and mismatched shapes."""

import glob
import os

import numpy as np
import pytest

from fastnn import backends
from fastnn.errors import BackendUnavailable

try:
    backends.load("numba")
except BackendUnavailable as error:
    pytest.skip(str(error), allow_module_level=True)

from fastnn.kernels.numba import blas as numba_blas  # noqa: E402

GEMM = numba_blas.find()
needs_gemm = pytest.mark.skipif(GEMM is None, reason="no CBLAS GEMM found in this process")


def _run(gemm, dtype, shape_a, shape_b, shape_c, trans_a, trans_b, alpha=0.5, beta=2.0):
    rng = np.random.default_rng(0)
    a, b, c = (rng.standard_normal(s).astype(dtype) for s in (shape_a, shape_b, shape_c))
    expected = alpha * ((a.T if trans_a else a).astype(np.float64)
                        @ (b.T if trans_b else b).astype(np.float64)) + beta * c
    numba_blas.gemm(gemm.address(dtype), gemm.ilp64, a, b, c, alpha, beta, trans_a, trans_b)
    return c, expected


@needs_gemm
def test_numpys_own_blas_is_found():
    assert GEMM.sgemm and GEMM.dgemm
    assert GEMM.path.startswith(os.path.dirname(np.__file__)) or "numpy" not in GEMM.path


@needs_gemm
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_gemm_matches_numpy(dtype, trans_a, trans_b):
    m, n, k = 37, 19, 53
    c, expected = _run(GEMM, dtype, (k, m) if trans_a else (m, k), (n, k) if trans_b else (k, n),
                       (m, n), trans_a, trans_b)
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(c, expected, rtol=tolerance, atol=tolerance * k)


@needs_gemm
def test_gemm_with_an_empty_inner_dimension_only_scales_c():
    c, expected = _run(GEMM, np.float64, (4, 0), (0, 3), (4, 3), False, False)
    np.testing.assert_array_equal(c, expected)


@needs_gemm
def test_gemm_with_an_empty_output_writes_nothing():
    c, expected = _run(GEMM, np.float32, (0, 5), (5, 3), (0, 3), False, False)
    assert c.shape == expected.shape == (0, 3)


@needs_gemm
def test_gemm_rejects_mismatched_shapes():
    a, b, c = np.ones((3, 4)), np.ones((5, 2)), np.ones((3, 2))
    with pytest.raises(ValueError, match="shapes of a, b and c do not match"):
        numba_blas.gemm(GEMM.address(np.float64), GEMM.ilp64, a, b, c, 1.0, 0.0, False, False)


def test_an_lp64_library_is_called_with_32_bit_integers():
    """SciPy's wheels ship a 32-bit-integer OpenBLAS: the same compiled kernel calls it."""
    scipy = pytest.importorskip("scipy")
    paths = glob.glob(os.path.join(os.path.dirname(scipy.__file__) + ".libs", "*blas*"))
    lp64 = numba_blas.find(paths)
    if lp64 is None or lp64.ilp64:
        pytest.skip(f"no LP64 CBLAS among SciPy's bundled libraries {paths}")
    c, expected = _run(lp64, np.float32, (6, 4), (5, 4), (6, 5), False, True)
    np.testing.assert_allclose(c, expected, rtol=1e-5, atol=1e-5)


def test_no_blas_library_means_none(tmp_path):
    not_a_library = tmp_path / "libfakeblas.so"
    not_a_library.write_text("not an ELF file")
    assert numba_blas.find([str(not_a_library), str(tmp_path / "missing-blas.so")]) is None


def test_loaded_libraries_reads_the_process_map(tmp_path):
    maps, bundled = tmp_path / "maps", os.path.dirname(np.__file__) + ".libs"
    maps.write_text(
        "7f00-7f01 r-xp 00000000 08:01 1 /usr/lib/libopenblas.so.0\n"
        "7f01-7f02 r-xp 00000000 08:01 2 /usr/lib/libm.so.6\n"
        f"7f02-7f03 r-xp 00000000 08:01 3 {bundled}/libscipy_openblas.so\n"
    )
    found = numba_blas.loaded_libraries(str(maps))
    assert found[0].endswith("libscipy_openblas.so") and found[1] == "/usr/lib/libopenblas.so.0"
    assert len(found) == 2
    assert numba_blas.loaded_libraries(str(tmp_path / "no-such-file")) == []


class _Library:
    """A stand-in for a ctypes library: named functions only (setting ``restype`` on
    them, as ctypes needs, is harmless)."""

    def __init__(self, **functions):
        self.__dict__.update(functions)


def test_the_integer_width_must_be_confirmed_before_a_library_is_used():
    openblas64 = _Library(openblas_get_config=lambda: b"OpenBLAS 0.3.28 USE64BITINT")
    openblas32 = _Library(openblas_get_config=lambda: b"OpenBLAS 0.3.28 DYNAMIC_ARCH")
    assert numba_blas.integer_width_matches(openblas64, True, "cblas_{}gemm64_")
    assert not numba_blas.integer_width_matches(openblas64, False, "cblas_{}gemm")
    assert numba_blas.integer_width_matches(openblas32, False, "cblas_{}gemm")
    assert not numba_blas.integer_width_matches(openblas32, True, "cblas_{}gemm64_")
    other = _Library()  # not OpenBLAS: only the 64_ suffix convention is trusted
    assert numba_blas.integer_width_matches(other, True, "cblas_{}gemm64_")
    assert not numba_blas.integer_width_matches(other, False, "cblas_{}gemm")
