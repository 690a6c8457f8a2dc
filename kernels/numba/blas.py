"""NumPy's own BLAS GEMM, callable from Numba kernels, with alpha and beta.

``np.matmul`` cannot accumulate (C = alpha * A @ B + beta * C) and costs a Python
call; a kernel that calls the GEMM itself can fold an SGD update into the weight
gradient's product and run a whole training step without returning to Python.
The GEMM is the one NumPy already uses (same library, same thread pool), found by
``find()`` among the shared libraries loaded in this process, so the products run
exactly as fast as NumPy's and no second BLAS thread pool competes for the cores.

The kernels receive the function's address as an integer (``Gemm.address``) and
whether it takes 64-bit integers (``Gemm.ilp64``), so compiled code stays valid in
the cache whatever library a later process finds.
"""

import ctypes
import os
from dataclasses import dataclass

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .jit import kernel, subroutine
from .math import typed_as

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112  # CBLAS enum values
# (symbol template, takes 64-bit ints): NumPy's wheels rename OpenBLAS's ILP64 CBLAS
# with a scipy_ prefix and a 64_ suffix; other builds keep the standard names.
SYMBOLS = (("scipy_cblas_{}gemm64_", True), ("cblas_{}gemm64_", True),
           ("scipy_cblas_{}gemm", False), ("cblas_{}gemm", False))


@dataclass(frozen=True)
class Gemm:
    """Addresses of a CBLAS sgemm/dgemm pair and their integer width."""

    path: str
    symbol: str
    ilp64: bool
    sgemm: int
    dgemm: int

    def address(self, dtype):
        return self.sgemm if np.dtype(dtype) == np.float32 else self.dgemm


def loaded_libraries(maps="/proc/self/maps"):
    """Paths of the shared libraries mapped into this process whose name says BLAS,
    those shipped with NumPy first (another package may load a BLAS of its own)."""
    try:
        with open(maps) as f:
            paths = {line.split(None, 5)[-1].strip() for line in f if ".so" in line}
    except OSError:
        return []
    numpy_dir = os.path.dirname(np.__file__)  # NumPy's own (numpy.libs/...) come first
    found = [p for p in paths if "blas" in os.path.basename(p).lower()]
    return sorted(found, key=lambda p: (not p.startswith(numpy_dir), p))


CONFIGS = ("scipy_openblas_get_config64_", "scipy_openblas_get_config",
           "openblas_get_config64_", "openblas_get_config")


def integer_width_matches(library, ilp64, symbol):
    """True if ``library`` is known to take the integers ``symbol`` implies: OpenBLAS
    says so in its build configuration (USE64BITINT); otherwise only the 64_ suffix
    convention is trusted. A wrong width would pass garbage sizes, so when in doubt
    the library is not used."""
    for name in CONFIGS:
        config = getattr(library, name, None)
        if config is not None:
            config.restype = ctypes.c_char_p
            return (b"USE64BITINT" in (config() or b"")) == ilp64
    return ilp64 and symbol.endswith("64_")


def find(libraries=None):
    """NumPy's CBLAS GEMMs as a ``Gemm``, or None if none can be found (then kernels
    that need it are not used and the op-by-op path runs). ``np.matmul`` is called
    first so the library is loaded even where NumPy loads it lazily."""
    np.matmul(np.ones((2, 2)), np.ones((2, 2)))
    for path in loaded_libraries() if libraries is None else libraries:
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for template, ilp64 in SYMBOLS:
            try:
                s, d = (getattr(library, template.format(p)) for p in "sd")
            except AttributeError:
                continue
            if not integer_width_matches(library, ilp64, template):
                continue
            address = ctypes.cast(s, ctypes.c_void_p).value, ctypes.cast(d, ctypes.c_void_p).value
            return Gemm(path, template.format("?"), ilp64, *address)
    return None


# (getter, setter) of OpenBLAS's thread count, NumPy's wheels' names first: they carry
# the scipy_ prefix and the 64_ suffix of the ILP64 build (the count is a C int in all).
THREAD_SYMBOLS = (("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
                  ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
                  ("scipy_openblas_get_num_threads", "scipy_openblas_set_num_threads"),
                  ("openblas_get_num_threads", "openblas_set_num_threads"))


@dataclass(frozen=True)
class BlasThreads:
    """OpenBLAS's own thread-count getter and setter, from the library the GEMM is in."""

    path: str
    symbol: str
    get: object
    set: object


def thread_control(path):
    """A ``BlasThreads`` for the library at ``path`` (the ``Gemm``'s), or None if it has
    no known OpenBLAS thread-count functions (another BLAS, or another naming)."""
    try:
        library = ctypes.CDLL(path)
    except OSError:
        return None
    for get_name, set_name in THREAD_SYMBOLS:
        get, set_ = getattr(library, get_name, None), getattr(library, set_name, None)
        if get is None or set_ is None:
            continue
        get.restype, get.argtypes = ctypes.c_int, []
        set_.restype, set_.argtypes = None, [ctypes.c_int]
        return BlasThreads(path, set_name, get, set_)
    return None


class SingleThreaded:
    """OpenBLAS on one thread inside the block, its previous count back after it (even
    if the block raises). Kernels that call the GEMM from each of Numba's threads need
    it: OpenBLAS's own workers would otherwise compete with them for the cores (on
    2 cores a LeNet-5 step took 89 ms instead of 7). A class, not a generator: the ops
    enter it around every product (13 times a LeNet-5 step), and through
    ``contextlib.contextmanager`` a block cost 1.8 us, 1.3 this way (AMD EPYC)."""

    __slots__ = ("control", "before")

    def __init__(self, control):
        self.control = control

    def __enter__(self):
        self.before = self.control.get()
        if self.before != 1:
            self.control.set(1)

    def __exit__(self, *exc):
        if self.before != 1:
            self.control.set(self.before)
        return False


@intrinsic
def _call(typingctx, address, ilp64, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta,
          c, ldc):
    """cblas_?gemm(RowMajor, ...) through the function at ``address``; ints arrive as
    int64 and are narrowed for an LP64 library; a, b, c are data addresses."""
    signature = types.void(address, ilp64, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb,
                           beta, c, ldc)

    def codegen(context, builder, sig, args):
        fn_address, wide, ta, tb, *sizes_and_data = args
        real = context.get_value_type(sig.args[7])
        enum, pointer = ir.IntType(32), real.as_pointer()

        def emit(width):
            size = ir.IntType(width)
            kinds = (size, size, size, real, pointer, size, pointer, size, real, pointer, size)
            fnty = ir.FunctionType(ir.VoidType(), [enum, enum, enum, *kinds])
            values = [ir.Constant(enum, ROW_MAJOR), builder.trunc(ta, enum),
                      builder.trunc(tb, enum)]
            for kind, value in zip(kinds, sizes_and_data):
                if kind is pointer:
                    value = builder.inttoptr(value, pointer)
                elif kind is size and width < 64:
                    value = builder.trunc(value, size)
                values.append(value)
            builder.call(builder.inttoptr(fn_address, fnty.as_pointer()), values)

        with builder.if_else(wide) as (then, otherwise):
            with then:
                emit(64)
            with otherwise:
                emit(32)
        return context.get_dummy_value()

    return signature, codegen


@kernel(inline=True)
def gemm(address, ilp64, a, b, c, alpha, beta, trans_a, trans_b):
    """c = alpha * op(a) @ op(b) + beta * c, op(x) being x.T where trans_x is set;
    C-contiguous 2-D arrays of c's float dtype, c overlapping neither a nor b.

    Calls ``_gemm`` as one subroutine for every call: compiled as a kernel of its own
    for the constant flags callers write (True, False), it compiled once for each
    combination, 0.2 s each."""
    _gemm_call(address, ilp64, a, b, c, alpha, beta, trans_a, trans_b)


@kernel
def _gemm(address, ilp64, a, b, c, alpha, beta, trans_a, trans_b):
    """``gemm`` itself."""
    m, n = c.shape
    k = a.shape[0] if trans_a else a.shape[1]
    if (a.shape[1] if trans_a else a.shape[0]) != m or \
            (b.shape[1] if trans_b else b.shape[0]) != k or \
            (b.shape[0] if trans_b else b.shape[1]) != n:
        raise ValueError("gemm: the shapes of a, b and c do not match")
    if m == 0 or n == 0:
        return
    _call(address, ilp64, np.int64(TRANS if trans_a else NO_TRANS),
          np.int64(TRANS if trans_b else NO_TRANS), np.int64(m), np.int64(n), np.int64(k),
          typed_as(c, alpha), a.ctypes.data, np.int64(max(1, a.shape[1])), b.ctypes.data,
          np.int64(max(1, b.shape[1])), typed_as(c, beta), c.ctypes.data, np.int64(max(1, n)))


_gemm_call = subroutine(_gemm)
