"""The Numba backend's conv and max-pool kernels against the NumPy backend's ops (the
generic im2col ones), on the shapes the kernels treat differently: one tile or several
per image, stride 1 (wide tiles or per-row copies) or not, padding, fused activations or not,
views as inputs; and a training step that gives the same bits at 1 and 2 threads.

test_conv.py and test_conv_model.py run the layers, gradcheck and training on this
backend too, through the ``backend`` fixture.
"""

import numpy as np
import pytest
from conftest import at_threads

import fastnn
from fastnn import activations, backends
from fastnn.errors import BackendUnavailable

try:
    NUMBA = backends.load("numba")
except BackendUnavailable as error:
    pytest.skip(str(error), allow_module_level=True)

import numba  # noqa: E402  (only once the backend is known to load)

from fastnn.conv import Conv2D  # noqa: E402
from fastnn.kernels.activation_codes import RELU  # noqa: E402
from fastnn.kernels.numba import conv as numba_conv  # noqa: E402
from fastnn.kernels.numba import ops as numba_ops  # noqa: E402
from fastnn.layers import Dense, Flatten  # noqa: E402
from fastnn.pooling import MaxPool2D  # noqa: E402

NUMPY = backends.load("numpy")
TOL = {"float64": (1e-12, 1e-12), "float32": (2e-5, 2e-5)}
RNG = np.random.default_rng(2512)

# (N, C, H, W, F, kernel, stride, padding)
SHAPES = {
    "SimpleConvNet's conv": (9, 1, 28, 28, 30, (5, 5), (1, 1), ((0, 0), (0, 0))),
    "LeNet's first conv": (5, 1, 28, 28, 6, (5, 5), (1, 1), ((2, 2), (2, 2))),
    "LeNet's second conv": (6, 6, 14, 14, 16, (5, 5), (1, 1), ((0, 0), (0, 0))),
    "several tiles an image": (3, 8, 40, 40, 4, (3, 3), (1, 1), ((1, 1), (1, 1))),
    "stride 2, uneven padding": (5, 3, 11, 12, 5, (3, 4), (2, 2), ((1, 0), (2, 0))),
    "stride (3, 1)": (4, 2, 10, 7, 3, (1, 3), (3, 1), ((0, 0), (1, 1))),
    "wide tiles, uneven padding": (3, 3, 9, 11, 2, (3, 4), (1, 1), ((2, 0), (1, 2))),
}


def _case(name, dtype, shapes=SHAPES):
    N, C, H, W, F, kernel, stride, padding = shapes[name]
    X = RNG.normal(size=(N, C, H, W)).astype(dtype)
    Wt = (RNG.normal(size=(F, C, *kernel)) / np.sqrt(C * kernel[0] * kernel[1])).astype(dtype)
    b = RNG.normal(size=F).astype(dtype)
    return X, Wt, b, stride, padding


def test_several_tiles_are_needed_where_the_test_says_so():
    N, C, H, W, F, kernel, stride, padding = SHAPES["several tiles an image"]
    K = C * kernel[0] * kernel[1]
    assert numba_conv.wide(K, F, stride)
    width = numba_conv.tile_width(W, kernel[1], True)  # stride 1, 'same': OH = H, OW = W
    rows = numba_conv.tile_rows(K, H, width)
    assert width == W + kernel[1] - 1
    assert rows < H and rows * width * K <= numba_conv.TILE
    assert numba_conv.tile_rows(10**6, 5, 5) == 1  # never less than a row


# Every build variant (stride, tile form, fused kind, Z kept, dX needed) compiles once
# per dtype, 4-5 s each cold: float32 runs relu's and tanh's (tanh is the identity build
# plus xp), float64 all four; the float32 sources are the float64 ones retyped.
KINDS_AND_DTYPES = [("relu", "float64"), ("relu", "float32"), ("tanh", "float64"),
                    ("tanh", "float32"), ("leaky_relu", "float64"), ("identity", "float64")]


@pytest.mark.parametrize("name", SHAPES)
@pytest.mark.parametrize("act, dtype", KINDS_AND_DTYPES)
def test_conv_ops_match_the_numpy_backend(name, dtype, act):
    X, Wt, b, stride, padding = _case(name, dtype)
    activation = activations.get(act)
    rtol, atol = TOL[dtype]
    for keep_z in (True, False):
        Z, A, work = NUMBA.ops.conv2d_forward(X, Wt, b, activation, stride, padding, keep_z)
        Zr, Ar, work_r = NUMPY.ops.conv2d_forward(X, Wt, b, activation, stride, padding, keep_z)
        assert work is None  # no im2col matrix is kept
        assert A.dtype == X.dtype and A.flags.c_contiguous and Z.flags.c_contiguous
        np.testing.assert_allclose(A, Ar, rtol=rtol, atol=atol)
        if keep_z or act in ("identity", "tanh"):
            np.testing.assert_allclose(Z, Zr, rtol=rtol, atol=atol)
        dA = RNG.normal(size=A.shape).astype(dtype)
        for need_dx in (True, False):
            got = NUMBA.ops.conv2d_backward(X, Wt, dA, Z, A, work, activation, stride,
                                            padding, need_dx)
            want = NUMPY.ops.conv2d_backward(X, Wt, dA, Zr, Ar, work_r, activation, stride,
                                             padding, need_dx)
            assert (got[2] is None) == (not need_dx)
            for mine, theirs in zip(got, want):
                if theirs is None:
                    continue
                assert mine.dtype == X.dtype and mine.flags.c_contiguous
                scale = np.max(np.abs(theirs), initial=1.0)
                np.testing.assert_allclose(mine, theirs, rtol=rtol, atol=atol * scale)


def test_views_and_odd_layouts_are_taken():
    X, Wt, b, stride, padding = _case("stride 2, uneven padding", "float64")
    relu = activations.get("relu")
    Xf = np.asfortranarray(X)
    sliced = np.repeat(X, 2, axis=0)[::2]  # a strided view of the same images
    want = NUMPY.ops.conv2d_forward(X, Wt, b, relu, stride, padding)[1]
    for given in (Xf, sliced):
        np.testing.assert_allclose(NUMBA.ops.conv2d_forward(given, Wt, b, relu, stride,
                                                            padding)[1], want, rtol=1e-12)


def test_dtypes_without_a_kernel_run_the_generic_ops():
    X, Wt, b, stride, padding = _case("stride (3, 1)", "float16")
    relu = activations.get("relu")
    Z, A, work = NUMBA.ops.conv2d_forward(X, Wt, b, relu, stride, padding)
    assert A.dtype == np.float16 and work is not None  # the generic op's im2col matrix
    dW, db, dX = NUMBA.ops.conv2d_backward(X, Wt, np.ones_like(A), Z, A, work, relu, stride,
                                           padding, True)
    assert dW.dtype == np.float16 and dX.shape == X.shape
    out, where = NUMBA.ops.maxpool2d_forward(X, (2, 2), (2, 2))
    assert out.dtype == np.float16 and isinstance(where, tuple)


POOLS = {"2x2": ((2, 2), (2, 2)), "3/2 overlapping": ((3, 3), (2, 2)),
         "2x3 stride 1x2": ((2, 3), (1, 2)), "gaps": ((2, 2), (3, 3))}


@pytest.mark.parametrize("size, stride", POOLS.values(), ids=list(POOLS))
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_max_pool_matches_the_numpy_backend_with_ties_and_nans(size, stride, dtype):
    X = RNG.normal(size=(3, 4, 9, 11)).round(1).astype(dtype)  # rounded: equal maxima
    X[0, 0, 1, 1] = X[1, 2, 4, 5] = X[1, 2, 4, 6] = X[2, 3, 8, 10] = np.nan
    X[2, 1] = -np.inf
    out, work = NUMBA.ops.maxpool2d_forward(X, size, stride)
    want, work_r = NUMPY.ops.maxpool2d_forward(X, size, stride)
    np.testing.assert_array_equal(out, want)
    assert out.dtype == X.dtype and out.flags.c_contiguous
    G = RNG.normal(size=out.shape).astype(dtype)
    dX = NUMBA.ops.maxpool2d_backward(G, X, out, work, size, stride)
    want = NUMPY.ops.maxpool2d_backward(G, X, want, work_r, size, stride)
    # the same inputs chosen; where windows overlap, sums of two may round another way
    np.testing.assert_array_equal(dX != 0, want != 0)
    tol = 1e-6 if dtype == "float32" else 1e-15
    np.testing.assert_allclose(dX, want, rtol=tol, atol=tol * np.max(np.abs(G)))


# conv shapes for the pooled kernels besides SHAPES': tiles of an odd number of rows
# that the pooled kernels make even (wide and not), with an odd output height
POOLED_SHAPES = dict(SHAPES, **{
    "wide, odd rows a tile": (2, 8, 60, 60, 4, (3, 3), (1, 1), ((1, 1), (1, 1))),
    "tiles, odd rows a tile, odd height": (2, 1, 61, 61, 12, (3, 3), (1, 1), ((1, 1), (1, 1))),
})


def test_the_pooled_shapes_have_tiles_of_an_odd_number_of_rows():
    for name in ("wide, odd rows a tile", "tiles, odd rows a tile, odd height"):
        X, Wt, _, stride, padding = _case(name, "float32", POOLED_SHAPES)
        _, (OH, _), rows, _ = numba_ops._geometry(X, Wt, stride, padding)
        _, _, even, _ = numba_ops._geometry(X, Wt, stride, padding, pooled=True)
        assert rows % 2 == 1 and rows < OH and even == rows - 1


def _separate(X, Wt, b, activation, stride, padding, G, need_dx):
    """The conv op, then the max pool's: what the fused op must give."""
    Z, A, work = NUMBA.ops.conv2d_forward(X, Wt, b, activation, stride, padding, False)
    out, where = NUMBA.ops.maxpool2d_forward(A, (2, 2), (2, 2))
    dA = NUMBA.ops.maxpool2d_backward(G, A, out, where, (2, 2), (2, 2))
    return out, NUMBA.ops.conv2d_backward(X, Wt, dA, Z, A, work, activation, stride, padding,
                                          need_dx)


@pytest.mark.parametrize("name", POOLED_SHAPES)
@pytest.mark.parametrize("act, dtype", [("relu", "float32"), ("relu", "float64"),
                                        ("identity", "float64")])
@pytest.mark.parametrize("ties", [False, True])
def test_conv_with_max_pool_gives_the_separate_ops_bits(name, act, dtype, ties):
    """The pooled kernels write the pool of the conv's output and route its gradient into
    the conv's backward: the same output, choices and gradients, bit for bit, as the
    conv then the pool (with ties: small integers everywhere, equal maxima in most
    windows, relu's zeros among them; and NaN, which the pool picks first). Where the
    pooled tiles hold a row less (an even number), the GEMMs are of another width and
    sum in another order: there the results agree to rounding."""
    X, Wt, b, stride, padding = _case(name, dtype, POOLED_SHAPES)
    if ties:  # small integers: the forward's sums exact, equal maxima everywhere
        X, Wt, b = (np.round(a * 2) for a in (X, Wt, b))
        X[0, 0, 0, :3] = np.nan
    same_tiles = (numba_ops._geometry(X, Wt, stride, padding)[2]
                  == numba_ops._geometry(X, Wt, stride, padding, pooled=True)[2])
    rtol, atol = TOL[dtype]

    def check(mine, theirs):
        if same_tiles:
            np.testing.assert_array_equal(mine, theirs)
        else:
            scale = np.nanmax(np.abs(theirs), initial=1.0)  # NaNs where X has them
            np.testing.assert_allclose(mine, theirs, rtol=rtol, atol=atol * scale)
    activation = activations.get(act)
    out, work = NUMBA.ops.conv2d_maxpool_forward(X, Wt, b, activation, stride, padding,
                                                 (2, 2), (2, 2))
    assert isinstance(work, np.ndarray) and work.dtype == np.int32  # the fused kernel ran
    assert out.dtype == X.dtype and out.flags.c_contiguous
    G = RNG.normal(size=out.shape).astype(dtype)
    for need_dx in (True, False):
        want_out, want = _separate(X, Wt, b, activation, stride, padding, G, need_dx)
        check(out, want_out)
        got = NUMBA.ops.conv2d_maxpool_backward(X, Wt, G, out, work, activation, stride,
                                                padding, (2, 2), (2, 2), need_dx)
        assert (got[2] is None) == (not need_dx)
        for mine, theirs in zip(got, want):
            if theirs is not None:
                assert mine.dtype == X.dtype and mine.flags.c_contiguous
                check(mine, theirs)


@pytest.mark.parametrize("act, size, stride", [("tanh", (2, 2), (2, 2)),
                                               ("relu", (3, 3), (2, 2)),
                                               ("relu", (2, 2), (1, 1))])
def test_conv_with_other_pools_runs_the_separate_ops(act, size, stride):
    """Activations and pools the pooled kernels do not take: the conv op, then the pool's,
    and the backward takes the work of either."""
    X, Wt, b, conv_stride, padding = _case("LeNet's second conv", "float64")
    activation = activations.get(act)
    out, work = NUMBA.ops.conv2d_maxpool_forward(X, Wt, b, activation, conv_stride, padding,
                                                 size, stride)
    assert isinstance(work, tuple)
    want = NUMPY.ops.conv2d_maxpool_forward(X, Wt, b, activation, conv_stride, padding, size,
                                            stride)[0]
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)
    G = RNG.normal(size=out.shape)
    got = NUMBA.ops.conv2d_maxpool_backward(X, Wt, G, out, work, activation, conv_stride,
                                            padding, size, stride, True)
    Z, A, conv_work = NUMBA.ops.conv2d_forward(X, Wt, b, activation, conv_stride, padding, False)
    pooled, where = NUMBA.ops.maxpool2d_forward(A, size, stride)
    dA = NUMBA.ops.maxpool2d_backward(G, A, pooled, where, size, stride)
    for mine, theirs in zip(got, NUMBA.ops.conv2d_backward(X, Wt, dA, Z, A, conv_work,
                                                           activation, conv_stride, padding,
                                                           True)):
        np.testing.assert_array_equal(mine, theirs)


def _lenet(seed=0, dtype="float64"):
    return fastnn.Sequential([
        Conv2D(1, 6, 5, padding=2, activation="relu"), MaxPool2D(2),
        Conv2D(6, 16, 5, activation="relu"), MaxPool2D(2), Flatten(),
        Dense(400, 32, "relu"), Dense(32, 10, "softmax")],
        input_shape=(1, 28, 28), seed=seed, dtype=dtype, backend=NUMBA)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_training_step_gives_the_same_bits_at_one_and_two_threads(dtype):
    """dW and db are summed over fixed chunks of images in a fixed order: the thread
    count decides only which thread sums which chunk."""
    X = RNG.normal(size=(37, 1, 28, 28)).astype(dtype)  # 10 chunks, the last one short
    y = RNG.integers(0, 10, size=37)

    def train():
        model = _lenet(dtype=dtype)
        model.fit(X, y, epochs=2, batch_size=37, lr=0.05, shuffle=False, seed=0)
        return [p.value.copy() for p in model.parameters()]

    results = [at_threads(threads, train) for threads in (1, 2)]
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("this machine gives Numba one thread")
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


def test_a_fit_asks_for_the_variants_it_runs(monkeypatch):
    """The kernels are built per variant: LeNet's convs are hidden relu layers (no Z
    kept), and only the second one needs dX (the first one's input is the data)."""
    asked = []
    for name in ("forward_kernel", "backward_kernel"):
        real = getattr(numba_conv, name)
        monkeypatch.setattr(numba_conv, name,
                            lambda *v, real=real, name=name: asked.append((name, v)) or real(*v))
    X = RNG.normal(size=(4, 1, 28, 28))
    _lenet().fit(X, RNG.integers(0, 10, size=4), epochs=1, batch_size=4, seed=0)
    # (SH, SW, is_wide, kind, keep_z or need_dx, pooled): both LeNet convs have wide tiles
    # and a 2x2 max pool after them, fused into their builds
    assert sorted(asked) == [("backward_kernel", (1, 1, True, RELU, False, True)),
                             ("backward_kernel", (1, 1, True, RELU, True, True)),
                             ("forward_kernel", (1, 1, True, RELU, False, True)),
                             ("forward_kernel", (1, 1, True, RELU, False, True))]


def test_each_variant_is_a_build_of_its_own_name():
    """Two builds under one name could run each other's code from the cache (see
    ``jit.kernel``): every variant's kernel is named apart."""
    forms = ((1, 1, True), (1, 1, False), (2, 1, False))
    pooled = len(numba_conv.POOLED)
    # the identity keeps no Z, nor does any pooled build
    for factory, count in ((numba_conv.forward_kernel, 2 * 2 + 1 + pooled),
                           (numba_conv.backward_kernel, 3 * 2 + pooled * 2)):
        built = {factory(*form, kind, flag, pool) for form in forms for pool in (False, True)
                 for kind in (numba_conv.POOLED if pool else numba_conv.FUSED)
                 for flag in (False, True)}
        assert len({k.py_func.__qualname__ for k in built}) == len(built) == len(forms) * count
    with pytest.raises(ValueError, match="with a max pool"):
        numba_conv.forward_kernel(1, 1, True, numba_conv.LEAKY_RELU, False, True)


def test_a_build_key_packs_its_constants_and_rejects_what_does_not_fit():
    """The serial bodies are built by one int key (``jit.by_constant``): packed and
    unpacked without loss, and a number too large for it is an error, not a wrong build."""
    for numbers in ((1, 1, RELU, 0), (2, 3, 0, 1), (numba_conv.KEY_BASE - 1, 1, 2, 1)):
        assert numba_conv.unpack(numba_conv.pack(*numbers), 4) == numbers
    with pytest.raises(ValueError, match="conv kernels are built for numbers"):
        numba_conv.pack(numba_conv.KEY_BASE, 1, RELU, 0)
    assert len({numba_conv.pack(*f) for f in ((1, 2, 0, 0), (2, 1, 0, 0), (1, 1, 0, 1))}) == 3


def test_a_numba_cnn_step_matches_the_numpy_backend():
    X = RNG.normal(size=(10, 1, 28, 28))
    y = RNG.integers(0, 10, size=10)
    models = [_lenet(seed=3), _lenet(seed=3)]
    models[1].to(NUMPY)
    for model in models:
        model.fit(X, y, epochs=3, batch_size=5, lr=0.05, shuffle=False, seed=0)
    for a, b in zip(*(m.parameters() for m in models)):
        np.testing.assert_allclose(a.value, b.value, rtol=1e-10, atol=1e-12)


def test_the_kernels_fall_back_only_where_no_gemm_is_found(monkeypatch):
    X, Wt, b, stride, padding = _case("LeNet's second conv", "float32")
    relu = activations.get("relu")
    monkeypatch.setattr(numba_ops, "_gemm", lambda: None)
    Z, A, work = NUMBA.ops.conv2d_forward(X, Wt, b, relu, stride, padding)
    assert work is not None  # the generic op ran (it keeps its im2col matrix)
    np.testing.assert_allclose(A, NUMPY.ops.conv2d_forward(X, Wt, b, relu, stride, padding)[1],
                               rtol=1e-6)


def test_openblas_thread_setter_is_found_in_numpys_library():
    """NumPy's wheels ship OpenBLAS with scipy_-prefixed, 64_-suffixed names; the policy
    needs its setter, found in the library the GEMM came from."""
    gemm = numba_ops._gemm()
    assert gemm is not None, "NumPy's GEMM was not found"
    control = numba_ops._blas_threads()
    assert control is not None, f"no OpenBLAS thread setter in {gemm.path}"
    assert control.path == gemm.path
    assert control.get() >= 1


def test_blas_runs_on_one_thread_inside_and_its_count_is_restored_even_on_errors():
    control = numba_ops._blas_threads()
    before = control.get()
    control.set(2)
    try:
        with numba_ops.gemm_threads():
            assert control.get() == 1
        assert control.get() == 2
        with pytest.raises(RuntimeError, match="inside"):
            with numba_ops.gemm_threads():
                assert control.get() == 1
                raise RuntimeError("inside")
        assert control.get() == 2
    finally:
        control.set(before)


def test_the_conv_kernels_see_one_blas_thread(monkeypatch):
    """The count the kernels run under, read as they are called."""
    control = numba_ops._blas_threads()
    seen = []

    def spy(kernel):
        def call(*args):
            seen.append(control.get())
            return kernel(*args)
        return call

    for name in ("forward_kernel", "backward_kernel"):
        real = getattr(numba_conv, name)
        monkeypatch.setattr(numba_conv, name, lambda *v, real=real: spy(real(*v)))
    X, Wt, b, stride, padding = _case("LeNet's second conv", "float32")
    relu = activations.get("relu")
    before = control.get()
    control.set(2)
    try:
        Z, A, work = NUMBA.ops.conv2d_forward(X, Wt, b, relu, stride, padding)
        NUMBA.ops.conv2d_backward(X, Wt, np.ones_like(A), Z, A, work, relu, stride, padding,
                                  True)
        after = control.get()
    finally:
        control.set(before)
    assert seen == [1, 1]
    assert after == 2


def test_without_a_blas_thread_setter_the_kernels_run_on_one_numba_thread(monkeypatch):
    """Never both pools at once: with no setter the kernel is serial, same bits."""
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("this machine gives Numba one thread")
    X, Wt, b, stride, padding = _case("LeNet's second conv", "float32")
    relu = activations.get("relu")
    before = numba.get_num_threads()
    numba.set_num_threads(2)
    try:
        expected = NUMBA.ops.conv2d_forward(X, Wt, b, relu, stride, padding)[1]
        monkeypatch.setattr(numba_ops, "_blas_threads", lambda: None)
        with numba_ops.gemm_threads():
            inside = numba.get_num_threads()
        got = NUMBA.ops.conv2d_forward(X, Wt, b, relu, stride, padding)[1]
        after = numba.get_num_threads()
    finally:
        numba.set_num_threads(before)
    assert inside == 1 and after == 2
    np.testing.assert_array_equal(got, expected)
