"""The CuPy backend's convolution and pooling kernels (fastnn/kernels/cuda/conv.py)
without a GPU, on the CUDA emulator (the same CUDA source compiled for the CPU, driven
by the backend's own launch plans): the op, layer and PyTorch tests of test_conv.py and
the gradient checks of test_conv_model.py again, plus what only these kernels
promise: their launch plan, im2col/col2im and the pooling ops giving the generic ops'
bits for the same inputs, copies of non-contiguous input, a user's activation run
between the kernels, and no transfer in a training step. tests/test_cupy_gpu.py runs
the same ops on a GPU."""

import numpy as np
import pytest
import test_conv as on_backends
import test_conv_model as models
from distributed_cases import IMAGE_VAL, IMAGES, LABELS, OPTIONS, cnn, state
from test_cupy_kernels import emulated  # noqa: F401 (the fixture: CUDA kernels on the CPU)

import fastnn
from fastnn import activations, backends, conv_ops
from fastnn.activations import Tanh
from fastnn.distributed import DataParallel, run_local, simulate
from fastnn.kernels import activation_codes
from fastnn.kernels.cuda import conv as cuda_conv
from fastnn.kernels.cuda import source as cupy_source

CONVS, POOLS = on_backends.CONVS, on_backends.POOLS
RNG = np.random.default_rng(52)


def launched(emulated, since):  # noqa: F811
    """The kernel names launched after the first ``since`` launches, without their
    template arguments."""
    return [name.partition("<")[0] for name in emulated.launcher.launches[since:]]


# ---- test_conv.py's op and layer tests, on the kernels ----

@pytest.mark.parametrize("name", CONVS)
@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-11), ("float32", 2e-5)])
def test_conv_ops_match_the_reference(emulated, name, dtype, rtol):  # noqa: F811
    before = len(emulated.launcher.launches)
    on_backends.test_conv_ops_match_the_reference(emulated, name, dtype, rtol)
    assert launched(emulated, before) == [
        "im2col", "conv_bias_act_forward", "conv_act_backward", "col2im", "conv_act_backward"]
    tanh = activation_codes.CODES["tanh"]
    assert emulated.launcher.launches[before + 1] == (
        f"conv_bias_act_forward<{cupy_source.TYPES[dtype]}, {tanh}>")


@pytest.mark.parametrize("kind", ["max", "mean"])
@pytest.mark.parametrize("name", POOLS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_pool_ops_match_the_reference(emulated, kind, name, dtype):  # noqa: F811
    before = len(emulated.launcher.launches)
    on_backends.test_pool_ops_match_the_reference(emulated, kind, name, dtype)
    prefix = "maxpool" if kind == "max" else "avgpool"
    assert launched(emulated, before) == [f"{prefix}_forward", f"{prefix}_backward"]


@pytest.mark.parametrize("test", [
    on_backends.test_conv_backward_rebuilds_what_a_forward_did_not_keep,
    on_backends.test_max_pool_ties_go_to_the_first_maximum_and_nan_wins,
    on_backends.test_a_nan_spreads_only_to_the_outputs_whose_windows_hold_it,
    on_backends.test_conv2d_layer_forward_and_backward,
    on_backends.test_flatten_and_global_average_pooling,
    on_backends.test_conv_and_pools_match_pytorch,
], ids=lambda test: test.__name__.removeprefix("test_"))
def test_conv_layer_tests_pass_on_the_kernels(emulated, test):  # noqa: F811
    with fastnn.use_backend(emulated):
        test(emulated)


@pytest.mark.parametrize("name", models.CHECKED)
def test_gradcheck_passes_for_every_conv_layer(emulated, name):  # noqa: F811
    before = len(emulated.launcher.launches)
    with fastnn.use_backend(emulated):
        models.test_gradcheck_passes_for_every_conv_layer(emulated, name)
    kernels = set(launched(emulated, before))
    assert {"im2col", "conv_act_backward"} <= kernels


# ---- what only the kernels promise ----

@pytest.mark.parametrize("name", CONVS)
def test_im2col_and_col2im_give_the_generic_bits(emulated, name):  # noqa: F811
    """The same numbers as conv_ops' im2col and col2im, whose layouts differ: the
    kernels' columns are image-major (C*kh*kw, N*P), the generic ones per image
    (N, C*kh*kw, P) and, for col2im, batch last (C*kh*kw, P*N). col2im adds in the
    generic op's order: equal bits."""
    X, Wt, _, stride, padding = on_backends.conv_case(name, N=3)
    size = Wt.shape[2:]
    cols, (OH, OW) = cuda_conv._im2col(np, emulated.launcher, "float64", X, size, stride,
                                       padding)
    expected, hw = conv_ops.im2col(np, X, size, stride, padding)
    assert hw == (OH, OW)
    N, K, P = expected.shape
    np.testing.assert_array_equal(cols, expected.transpose(1, 0, 2).reshape(K, N * P))
    dcols = RNG.normal(size=(K, N * P))
    dX = cuda_conv._col2im(np, emulated.launcher, "float64", dcols, X.shape, size, stride,
                           padding)
    batch_last = dcols.reshape(K, N, P).transpose(0, 2, 1).reshape(K, P * N)
    np.testing.assert_array_equal(dX, conv_ops.col2im(np, batch_last, X.shape, size, stride,
                                                      padding))


@pytest.mark.parametrize("name", POOLS)
def test_pooling_gives_the_generic_bits(emulated, name):  # noqa: F811
    """Max pooling picks and gathers exactly (ties rounded in: equal maxima); average
    pooling adds each window in the generic order where it goes window offset by offset
    (windows that do not tile the input)."""
    H, W, size, stride = POOLS[name]
    X = RNG.normal(size=(2, 3, H, W)).round(1)
    ref = backends.load("numpy").ops
    out, work = emulated.ops.maxpool2d_forward(X, size, stride)
    out_ref, work_ref = ref.maxpool2d_forward(X, size, stride)
    G = RNG.normal(size=out.shape)
    np.testing.assert_array_equal(out, out_ref)
    assert work.dtype == np.int32 and work.shape == out.shape
    np.testing.assert_array_equal(emulated.ops.maxpool2d_backward(G, X, out, work, size, stride),
                                  ref.maxpool2d_backward(G, X, out_ref, work_ref, size, stride))
    np.testing.assert_array_equal(emulated.ops.avgpool2d_backward(G, X.shape, size, stride),
                                  ref.avgpool2d_backward(G, X.shape, size, stride))
    if tuple(size) != tuple(stride):
        np.testing.assert_array_equal(emulated.ops.avgpool2d_forward(X, size, stride),
                                      ref.avgpool2d_forward(X, size, stride))


def test_the_gradient_of_a_max_goes_only_where_it_was_taken(emulated):  # noqa: F811
    """A NaN or infinite gradient reaches only the inputs that were chosen (a scatter, as
    PyTorch's), not every input of the window (the generic op multiplies by its mask)."""
    X = np.arange(16.0).reshape(1, 1, 4, 4)
    out, work = emulated.ops.maxpool2d_forward(X, (2, 2), (2, 2))
    dA = np.array([[[[np.inf, 1.0], [2.0, np.nan]]]])
    dX = emulated.ops.maxpool2d_backward(dA, X, out, work, (2, 2), (2, 2))
    expected = np.zeros((4, 4))
    expected[1, 1], expected[1, 3], expected[3, 1], expected[3, 3] = np.inf, 1.0, 2.0, np.nan
    np.testing.assert_array_equal(dX[0, 0], expected)


def test_non_contiguous_arrays_are_copied_before_a_kernel(emulated):  # noqa: F811
    """A sliced batch or a transposed gradient gives the bits of its contiguous copy (the
    emulator's launcher fails on a non-contiguous array reaching a kernel)."""
    X, Wt, b, stride, padding = on_backends.conv_case("uneven", N=4)
    relu = activations.get("relu")
    wide = np.zeros((4, X.shape[1], X.shape[2], 2 * X.shape[3]))
    wide[..., ::2] = X
    view = wide[..., ::2]
    assert not view.flags.c_contiguous
    Z, A, work = emulated.ops.conv2d_forward(view, Wt, b, relu, stride, padding, True)
    Z2, A2, work2 = emulated.ops.conv2d_forward(X, Wt, b, relu, stride, padding, True)
    np.testing.assert_array_equal(A, A2)
    dA = np.ascontiguousarray(RNG.normal(size=A.shape[::-1])).T  # Fortran-ordered
    grads = emulated.ops.conv2d_backward(view, Wt, dA, Z, A, work, relu, stride, padding, True)
    again = emulated.ops.conv2d_backward(X, Wt, np.ascontiguousarray(dA), Z2, A2, work2, relu,
                                         stride, padding, True)
    for got, want in zip(grads, again):
        np.testing.assert_array_equal(got, want)
    for op in ("maxpool2d_forward", "avgpool2d_forward"):
        result = getattr(emulated.ops, op)(view, (2, 2), (2, 1))
        expected = getattr(emulated.ops, op)(X, (2, 2), (2, 1))
        np.testing.assert_array_equal(result[0] if op.startswith("max") else result,
                                      expected[0] if op.startswith("max") else expected)


def test_a_users_activation_runs_between_the_kernels(emulated):  # noqa: F811
    class Squashed(Tanh):  # a user's subclass: its own forward and derivative
        def forward(self, xp, z):
            return 0.5 * xp.tanh(z)

        def derivative(self, xp, z, a):
            return 0.5 * (1.0 - 4.0 * a * a)

    act = Squashed()
    X, Wt, b, stride, padding = on_backends.conv_case("pad 1")
    ref = backends.load("numpy").ops
    before = len(emulated.launcher.launches)
    Z, A, work = emulated.ops.conv2d_forward(X, Wt, b, act, stride, padding, False)
    Zr, Ar, work_r = ref.conv2d_forward(X, Wt, b, act, stride, padding, False)
    np.testing.assert_allclose(A, Ar, rtol=1e-13, atol=1e-14)
    dA = RNG.normal(size=A.shape)
    grads = emulated.ops.conv2d_backward(X, Wt, dA, Z, A, work, act, stride, padding, True)
    expected = ref.conv2d_backward(X, Wt, dA, Zr, Ar, work_r, act, stride, padding, True)
    for got, want in zip(grads, expected):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-13)
    identity = activation_codes.CODES["identity"]
    assert emulated.launcher.launches[before:] == [
        "im2col<double>", f"conv_bias_act_forward<double, {identity}>",
        f"conv_act_backward<double, {identity}>", "col2im<double>"]


def test_keep_z_false_writes_only_the_output_where_it_suffices(emulated):  # noqa: F811
    X, Wt, b, stride, padding = on_backends.conv_case("3x3")
    for name, alone in (("relu", True), ("sigmoid", True), ("softplus", False)):
        Z, A, _ = emulated.ops.conv2d_forward(X, Wt, b, activations.get(name), stride, padding,
                                              False)
        assert (Z is A) is alone, name


def test_the_layer_level_api_refuses_arrays_of_another_kind(emulated):  # noqa: F811
    strict = models.make_backend("strict")
    X = strict.asarray(np.ones((1, 1, 4, 4)), strict.dtype("float64"))
    with pytest.raises(TypeError, match=r"X is a array_api_strict.*Array, but this model's "
                                        r"layer-level API works on NumPy arrays"):
        emulated.ops.maxpool2d_forward(X, (2, 2), (2, 2))
    with pytest.raises(TypeError, match="W is a array_api_strict"):
        emulated.ops.conv2d_forward(np.ones((1, 1, 4, 4)), X, np.zeros(1),
                                    activations.get("relu"), (1, 1), ((0, 0), (0, 0)))


def test_training_a_cnn_on_device_data_reads_once_per_epoch(emulated):  # noqa: F811
    """As tests/test_transfers.py counts it: fit's two input checks, one read per
    epoch, one final check, and nothing per step; every conv kernel ran."""
    X, y = models.digit_images(60)
    model = models.small_cnn(seed=1, backend=emulated)
    before = len(emulated.launcher.launches)
    Xd, yd = emulated.asarray(X, emulated.dtype("float32")), emulated.asarray(y)
    with emulated.count_transfers() as counted:
        model.fit(Xd, yd, epochs=2, batch_size=20, optimizer="adam", seed=0)
    assert counted.to_device == 0 and counted.checks == 2
    assert counted.to_host == counted.checks + 2 + 1
    assert {"im2col", "conv_bias_act_forward", "conv_act_backward", "col2im", "maxpool_forward",
            "maxpool_backward"} <= set(launched(emulated, before))


def test_data_parallel_cnn_training_through_the_kernels_is_exact(emulated):  # noqa: F811
    """As tests/test_distributed.py checks it on every backend: two ranks give
    simulate(2)'s bits, within 1e-12 of one process."""
    reference = cnn(emulated)
    expected = simulate(2, reference, IMAGES, LABELS, validation_data=IMAGE_VAL, **OPTIONS)

    def train(comm):
        net = cnn(emulated)
        history = net.fit(IMAGES, LABELS, validation_data=IMAGE_VAL,
                          distributed=DataParallel(comm), **OPTIONS)
        return history, state(net)

    for history, arrays in run_local(2, train, 60.0):
        assert history == expected
        for a, b in zip(arrays, state(reference), strict=True):
            np.testing.assert_array_equal(a, b)
    alone = cnn(emulated)
    alone.fit(IMAGES, LABELS, validation_data=IMAGE_VAL, **OPTIONS)
    for a, b in zip(state(reference), state(alone), strict=True):
        assert np.max(np.abs(a - b)) <= 1e-12 * np.max(np.abs(b))
