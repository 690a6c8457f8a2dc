"""The Numba backend against the NumPy reference: its math functions over the whole
input range, every op on every code path (small fused layer, BLAS + fused pass, one
thread or many), 100 training steps of each tutorial model, and how it compiles
(lazily, cached, with a fallback cache directory, on the workqueue threading layer).

gradcheck on this backend runs in test_gradcheck.py through the ``backend`` fixture.
"""

import os
import platform
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import at_threads

import fastnn
import fastnn.__main__
from fastnn import activations, backends, datasets
from fastnn.errors import BackendUnavailable

try:
    NUMBA = backends.load("numba")
except BackendUnavailable as error:
    pytest.skip(str(error), allow_module_level=True)

import numba  # noqa: E402
from llvmlite import binding  # noqa: E402
from numba import njit  # noqa: E402  (only once the backend is known to load)

from fastnn.kernels import activation_codes  # noqa: E402
from fastnn.kernels.numba import activations as numba_activations  # noqa: E402
from fastnn.kernels.numba import dense as numba_dense  # noqa: E402
from fastnn.kernels.numba import jit as numba_jit  # noqa: E402
from fastnn.kernels.numba import losses as numba_losses  # noqa: E402
from fastnn.kernels.numba import math as numba_math  # noqa: E402
from fastnn.kernels.numba import ops as numba_ops  # noqa: E402
from fastnn.kernels.numba import optimizers as numba_optimizers  # noqa: E402
from fastnn.kernels.numba import softmax as numba_softmax  # noqa: E402
from fastnn.kernels.numba.jit import mask  # noqa: E402

NUMPY = backends.load("numpy")
RTOL = {"float32": 1e-5, "float64": 1e-12}
ELEMENTWISE = list(activation_codes.DIFFERENTIABLE)


# ---------------------------------------------------------------- math functions


def _mapped(function):
    @njit(error_model="numpy", fastmath={"contract"})
    def run(x, out):
        for i in range(x.size):
            out[i] = function(x[i])

    return run


MATH = {
    "exp": (_mapped(numba_math.vexp), np.exp),
    "exp_nonpositive": (_mapped(numba_math.vexp_nonpositive), np.exp),  # x <= 0 only
    "tanh": (_mapped(numba_math.vtanh), np.tanh),
    "sigmoid": (_mapped(numba_math.vsigmoid), lambda x: 1.0 / (1.0 + np.exp(-x))),
    "log1p_unit": (_mapped(numba_math.vlog1p_unit), np.log1p),
}
ULP_BOUND = {  # documented in kernels/numba/math.py
    ("exp", "float32"): 2, ("exp_nonpositive", "float32"): 2, ("tanh", "float32"): 5,
    ("sigmoid", "float32"): 3, ("log1p_unit", "float32"): 4, ("exp", "float64"): 2,
    ("exp_nonpositive", "float64"): 2, ("tanh", "float64"): 2, ("sigmoid", "float64"): 3,
    ("log1p_unit", "float64"): 4,
}


def _bit_sweep(dtype, count=65_536):
    """``count`` values spread evenly over the type's bit patterns: both signs, every
    binade from subnormals to the largest finite number (NaN and inf left out)."""
    bits, uint = (32, np.uint32) if dtype == "float32" else (64, np.uint64)
    x = (np.arange(count, dtype=np.uint64) * np.uint64((1 << bits) // count + 1)).astype(uint)
    x = x.view(dtype)
    return x[np.isfinite(x)].astype(np.float64)


def _inputs(name, dtype):
    rng = np.random.default_rng(7)
    magnitudes = 10.0 ** rng.uniform(-30, 3.2, 200_000)
    tiny = np.geomspace(np.finfo(dtype).tiny, 1e-30, 2_000)  # smallest normal inputs
    x = np.concatenate([rng.choice([-1.0, 1.0], 200_000) * magnitudes,
                        np.linspace(-800, 800, 40_001), [0.0, -0.0, 1e-40, -1e-40],
                        tiny, -tiny, _bit_sweep(dtype),
                        [5.9574127197265625, -5.9574127197265625]])  # float32 tanh's worst
    if name == "log1p_unit":
        x = np.concatenate([np.abs(x) % 1.0, [1.0, 0.0]])
    if name == "exp_nonpositive":
        x = np.concatenate([-np.abs(x), [-0.0]])
    return x.astype(dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(MATH))
def test_math_function_accuracy_in_ulps_over_the_whole_range(name, dtype):
    kernel, reference = MATH[name]
    x = _inputs(name, dtype)
    out = np.empty_like(x)
    kernel(x, out)
    with np.errstate(over="ignore"):
        truth = reference(x.astype(np.longdouble))
    info = np.finfo(dtype)
    representable = (np.abs(truth) >= info.tiny) & (np.abs(truth) <= info.max)
    if name == "sigmoid":  # the reference backend clips z at -87 / -708 (exact to rounding)
        representable &= x > (-87.0 if dtype == "float32" else -708.0)
    ulps = np.abs(out[representable] - truth[representable]) / np.spacing(
        np.abs(truth[representable]).astype(dtype))
    assert ulps.max() <= ULP_BOUND[name, dtype], (x[representable][np.argmax(ulps)], ulps.max())
    tail = ~representable & (np.abs(truth) < info.tiny)
    if name == "sigmoid":  # below the clip: the reference backend's own value
        expected = activations.stable_sigmoid(np, x[tail])
        assert np.all(np.abs(out[tail] - expected) <= 3 * np.spacing(expected))
    else:  # subnormal results flush to zero
        assert np.all(np.abs(out[tail]) <= info.tiny)
    assert np.all(np.isfinite(out) | (np.abs(truth) > info.max))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_math_functions_at_nan_and_infinities(dtype):
    x = np.array([np.nan, np.inf, -np.inf], dtype)
    expected = {
        "exp": [np.nan, np.inf, 0.0], "tanh": [np.nan, 1.0, -1.0],
        "sigmoid": activations.stable_sigmoid(np, x),  # clipped like the reference
    }
    for name, values in expected.items():
        out = np.empty_like(x)
        MATH[name][0](x, out)
        np.testing.assert_allclose(out, np.array(values, dtype), rtol=4 * np.finfo(dtype).eps,
                                   atol=0, err_msg=name)
    out = np.empty(2, dtype)  # the one-sided exp: NaN and -inf, its only non-finite inputs
    MATH["exp_nonpositive"][0](np.array([np.nan, -np.inf], dtype), out)
    np.testing.assert_array_equal(out, np.array([np.nan, 0.0], dtype))


def test_prefer_wide_vectors_asks_llvm_for_512_bit_vectors_without_changing_results():
    @njit(error_model="numpy")
    def wide(x, out):
        numba_jit.prefer_wide_vectors()
        for i in range(x.size):
            out[i] = numba_math.vsigmoid(x[i])

    @njit(error_model="numpy")
    def narrow(x, out):
        for i in range(x.size):
            out[i] = numba_math.vsigmoid(x[i])

    x = np.linspace(-100, 100, 10_001, dtype=np.float32)
    a, b = np.empty_like(x), np.empty_like(x)
    wide(x, a)
    narrow(x, b)
    np.testing.assert_array_equal(a, b)
    assert numba_jit.WIDE_VECTORS in "".join(wide.inspect_llvm().values())
    has_512 = binding.get_host_cpu_features().get("avx512f", False)
    asm = "".join(wide.inspect_asm().values())
    assert ("zmm" in asm) == has_512, f"zmm used: {'zmm' in asm}, CPU has AVX-512: {has_512}"


# ---------------------------------------------------------------- ops vs NumPy


@pytest.fixture(params=["small", "blas", "parallel"])
def path(request, monkeypatch):
    """Force one code path: the small fused layer, BLAS + a serial fused pass, or
    BLAS + a multi-threaded pass."""
    if request.param != "small":
        monkeypatch.setattr(numba_ops, "SMALL_LAYER_MAX", 0)
    monkeypatch.setattr(numba_ops, "PARALLEL_MIN", 1 if request.param == "parallel" else 1 << 60)
    return request.param


def _data(dtype, m=37, n_in=5, n_out=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, n_in)) * 3
    W = rng.standard_normal((n_in, n_out))
    b = rng.standard_normal(n_out)
    dA = rng.standard_normal((m, n_out))
    return [a.astype(dtype) for a in (X, W, b, dA)]


def _close(actual, expected, dtype, scale=None):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = np.abs(expected) if scale is None else scale
    assert np.all(np.abs(actual - expected) <= RTOL[dtype] * (scale + np.finfo(dtype).tiny)), \
        np.max(np.abs(actual - expected) / (scale + 1e-300))


@pytest.mark.parametrize("n_out", [6, 200])  # 200: rows at least WIDE take the bias row
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ELEMENTWISE + ["softmax", "step"])
def test_dense_forward_matches_numpy(name, dtype, n_out, path):
    X, W, b, _ = _data(dtype, n_out=n_out)
    act = activations.get(name)
    Z_ref, A_ref = NUMPY.ops.dense_forward(X, W, b, act)
    scale = np.abs(X) @ np.abs(W) + np.abs(b)  # the product's own rounding scale
    for keep_z in (True, False):
        Z, A = NUMBA.ops.dense_forward(X, W, b, act, keep_z)
        if keep_z or not act.derivative_from_output:
            _close(Z, Z_ref, dtype, scale)
        _close(A, A_ref, dtype, np.abs(A_ref) + (scale if name == "identity" else 0))
        assert Z.dtype == A.dtype == np.dtype(dtype)


@pytest.mark.parametrize("n", [37, 1024])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softmax_rows_with_nan_inf_and_signed_zeros_match_the_reference(dtype, n):
    """NaN of either sign anywhere in a row makes the row NaN, an infinite maximum gives
    NaN where the reference does, -inf entries give 0; serial and across threads alike."""
    rng = np.random.default_rng(3)
    Z = (rng.standard_normal((10, n)) * 30).astype(dtype)
    Z[0, 5] = np.nan
    Z[1, n - 1] = np.copysign(np.nan, -1.0)  # x86's default NaN (from inf - inf) is negative
    Z[2, 3] = np.inf
    Z[3, ::3] = -np.inf
    Z[4] = -np.inf
    Z[5, :] = 0.0
    Z[5, ::2] = -0.0
    Z[6, 7] = 1e30 if dtype == "float32" else 1e300  # the rest exp to 0
    Z[7, 0] = np.finfo(dtype).max
    Z[7, 1] = -np.finfo(dtype).max  # max - (-max) overflows to inf: exp 0
    Z[8] = -1e4  # all equal: 1/n each
    b = np.zeros(n, dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        expected = activations.get("softmax").forward(np, Z)
    serial, threaded = np.empty_like(Z), np.empty_like(Z)
    numba_softmax.rows(Z, b, serial, serial, 0, Z.shape[0], False)
    numba_softmax.forward(Z, b, threaded, threaded, False, 3)
    np.testing.assert_array_equal(serial, threaded)
    np.testing.assert_array_equal(np.isnan(serial), np.isnan(expected))
    assert np.isnan(serial[[0, 1, 2, 4]]).all() and not np.isnan(serial[[3, 5, 6, 7, 8, 9]]).any()
    # subnormal results flush to zero (math.vexp_nonpositive)
    np.testing.assert_allclose(serial, expected, rtol=RTOL[dtype], atol=np.finfo(dtype).tiny)


def _dz_scale(dA, Z, A, act):
    """|dZ| plus the rounding scales of 1 - a*a (tanh) and of softmax's inner sum."""
    dZ = NUMPY.ops.activation_backward(dA, Z, A, act)[0].astype(np.float64)
    a, da = np.abs(A.astype(np.float64)), np.abs(dA.astype(np.float64))
    return np.abs(dZ) + da * a * a + a * np.sum(da * a, axis=1, keepdims=True)


@pytest.mark.parametrize("n_out", [40, 200])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ELEMENTWISE + ["softmax", "step"])
def test_activation_forward_matches_numpy(name, dtype, n_out, path):
    Z = _data(dtype, m=300, n_out=n_out)[3] * 4
    act = activations.get(name)
    Z.setflags(write=False)  # the op only reads Z (benchmarks pass read-only inputs)
    A, A_ref = NUMBA.ops.activation_forward(Z, act), NUMPY.ops.activation_forward(Z, act)
    _close(A, A_ref, dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ELEMENTWISE + ["softmax"])
def test_layer_backward_matches_numpy(name, dtype, path):
    X, W, b, dA = _data(dtype)
    act = activations.get(name)
    Z, A = NUMPY.ops.dense_forward(X, W, b, act)
    for need_dx in (True, False):
        dW, db, dX = NUMBA.ops.layer_backward(X, W, dA, Z.copy(), A.copy(), act, need_dx)
        dW_r, db_r, dX_r = NUMPY.ops.layer_backward(X, W, dA, Z, A, act, need_dx)
        dZ_abs = _dz_scale(dA, Z, A, act)
        _close(db, db_r, dtype, dZ_abs.sum(axis=0))
        _close(dW, dW_r, dtype, np.abs(X).T @ dZ_abs)
        if need_dx:
            _close(dX, dX_r, dtype, dZ_abs @ np.abs(W).T)
        else:
            assert dX is None and dX_r is None


@pytest.mark.parametrize("n_out", [40, 200])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ELEMENTWISE + ["softmax"])
def test_activation_backward_matches_numpy(name, dtype, n_out, path):
    X, W, b, dA = _data(dtype, m=300, n_in=5, n_out=n_out)
    act = activations.get(name)
    Z, A = NUMPY.ops.dense_forward(X, W, b, act)
    dZ, db = NUMBA.ops.activation_backward(dA, Z, A, act)
    dZ_r, db_r = NUMPY.ops.activation_backward(dA, Z, A, act)
    scale = _dz_scale(dA, Z, A, act)
    _close(dZ, dZ_r, dtype, scale)
    _close(db, db_r, dtype, scale.sum(axis=0))


@pytest.mark.parametrize("name", ["relu", "tanh", "softmax"])
def test_the_parallel_bias_gradient_has_the_same_bits_at_one_and_two_threads(name):
    """The parallel backward sums db over chunks of rows fixed by the shape, in a fixed
    order: the thread count decides only which thread sums which chunk."""
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("this machine gives Numba one thread")
    rng = np.random.default_rng(3)
    m, n = 1031, 300  # 309,300 elements: the parallel kernels, the last chunk short
    assert m * n >= numba_ops.PARALLEL_MIN
    Z = rng.normal(size=(m, n)).astype("float32")
    dA = rng.normal(size=(m, n)).astype("float32")
    act = activations.get(name)
    A = NUMPY.ops.activation_forward(Z, act)
    (dZ1, db1), (dZ2, db2) = [
        at_threads(threads, lambda: NUMBA.ops.activation_backward(dA, Z, A, act))
        for threads in (1, 2)]
    np.testing.assert_array_equal(dZ1, dZ2)
    np.testing.assert_array_equal(db1, db2)


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "sigmoid", "tanh", "softmax"])
def test_hidden_layers_need_not_keep_z_and_backward_agrees(name, path):
    """keep_z=False (hidden layers) may hand back A for Z: the derivatives read A."""
    X, W, b, dA = _data("float64")
    act = activations.get(name)
    Z, A = NUMBA.ops.dense_forward(X, W, b, act, keep_z=False)
    Z_ref, A_ref = NUMPY.ops.dense_forward(X, W, b, act)
    _close(A, A_ref, "float64", np.abs(A_ref) + np.abs(X) @ np.abs(W))
    dW, db, dX = NUMBA.ops.layer_backward(X, W, dA, Z, A, act, True)
    dW_r, db_r, dX_r = NUMPY.ops.layer_backward(X, W, dA, Z_ref, A_ref, act, True)
    scale = _dz_scale(dA, Z_ref, A_ref, act)
    _close(db, db_r, "float64", scale.sum(axis=0))
    _close(dW, dW_r, "float64", np.abs(X).T @ scale)
    _close(dX, dX_r, "float64", scale @ np.abs(W).T)


def test_softplus_keeps_z_because_its_derivative_needs_it():
    X, W, b, _ = _data("float64")
    Z, A = NUMBA.ops.dense_forward(X, W, b, activations.get("softplus"), keep_z=False)
    np.testing.assert_allclose(Z, X @ W + b, rtol=1e-12)


def test_step_backward_still_refuses_on_numba():
    X, W, b, dA = _data("float32")
    act = activations.get("step")
    Z, A = NUMBA.ops.dense_forward(X, W, b, act)
    with pytest.raises(fastnn.errors.NotDifferentiable):
        NUMBA.ops.layer_backward(X, W, dA, Z, A, act, True)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("loss, output", [("sigmoid_bce", "sigmoid"), ("softmax_xent", "softmax")])
def test_fused_losses_match_numpy_including_extreme_logits(loss, output, dtype):
    rng = np.random.default_rng(3)
    Z = (rng.standard_normal((64, 1 if output == "sigmoid" else 7)) * 30).astype(dtype)
    Z[0, 0], Z[1, 0] = 400.0, -400.0  # exp would overflow without the stable forms
    A = activations.get(output).forward(np, Z)
    if output == "sigmoid":
        Y = (rng.random(Z.shape) < 0.5).astype(dtype)
    else:
        Y = np.eye(Z.shape[1], dtype=dtype)[rng.integers(0, Z.shape[1], Z.shape[0])]
    for need_grad in (True, False):
        value, dZ = getattr(NUMBA.ops, loss)(Z, A, Y, need_grad)
        value_r, dZ_r = getattr(NUMPY.ops, loss)(Z, A, Y, need_grad)
        assert np.isfinite(value) and np.asarray(value).dtype == np.dtype(dtype)
        assert abs(float(value) - float(value_r)) <= RTOL[dtype] * abs(float(value_r))
        if need_grad:
            _close(dZ, dZ_r, dtype)
        else:
            assert dZ is None and dZ_r is None


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("task, n_out", [("multiclass", 7), ("binary", 1), ("binary", 3),
                                         ("regression", 2)])
def test_tally_adds_a_batch_with_the_generic_ops_bits(task, n_out, dtype):
    """One kernel call adds a batch's loss and score (regression: the generic op) with
    the NumPy op's bits, arg-max ties (the first wins) and NaN outputs included."""
    rng = np.random.default_rng(5)
    A = (rng.integers(0, 3, (50, n_out)) / 2).astype(dtype)  # many ties, and 0.5 itself
    A[0, n_out // 2], A[0, -1], A[1, -1], A[2, 0] = np.nan, np.nan, np.nan, np.nan
    if task == "multiclass":
        Y = np.eye(n_out, dtype=dtype)[rng.integers(0, n_out, 50)]
        Y[:3] = np.eye(n_out, dtype=dtype)[[n_out // 2, -1, 0]]  # NumPy's arg-max: the NaN
        Y[3] = Y[4] = 1.0 / n_out  # soft rows: a tie in Y too
    else:
        Y = (rng.integers(0, 3, A.shape) / 2).astype(dtype)
    loss = np.dtype(dtype).type(1.0 / 3.0)
    got, want = np.array([0.1, 7.0], dtype), np.array([0.1, 7.0], dtype)
    for sums, backend in ((got, NUMBA), (want, NUMPY)):
        backend.ops.tally(sums, loss, 50, task, A, Y)
        backend.ops.tally(sums, loss, 50, task, A[::-1].copy(), Y)
    np.testing.assert_array_equal(got, want)
    assert got[1] != 7.0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(128, 10), (3, 1), (0, 4)])
def test_the_output_layers_bias_gradient_has_numpys_bits(shape, dtype):
    dZ = np.random.default_rng(6).standard_normal(shape).astype(dtype)
    got = NUMBA.ops.bias_grad(dZ)
    assert got.dtype == np.dtype(dtype) and got.shape == (shape[1],)
    np.testing.assert_array_equal(got, np.sum(dZ, axis=0))
    view = np.zeros((shape[0], 2 * shape[1]), dtype)[:, ::2]  # not contiguous: generic
    view[...] = dZ
    np.testing.assert_array_equal(NUMBA.ops.bias_grad(view), np.sum(dZ, axis=0))


UPDATES = {
    "sgd_update": (0, (0.1, 0.01)),
    "momentum_update": (1, (0.1, 0.9, 0.01)),
    "nesterov_update": (1, (0.1, 0.9, 0.01)),
    "adagrad_update": (1, (0.1, 1e-8, 0.01)),
    "rmsprop_update": (1, (0.01, 0.9, 1e-8, 0.01)),
    "adam_update": (2, (0.01, 0.9, 0.999, 1e-8, 3, 0.01)),
}


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("op", list(UPDATES))
def test_optimizer_updates_match_numpy_in_place(op, dtype, parallel, monkeypatch):
    monkeypatch.setattr(numba_ops, "PARALLEL_MIN", 1 if parallel else 1 << 60)
    n_state, hyper = UPDATES[op]
    rng = np.random.default_rng(5)
    arrays = [rng.standard_normal((33, 17)).astype(dtype) for _ in range(2 + n_state)]
    for i in range(2, 2 + n_state):
        arrays[i] = np.abs(arrays[i])  # squared-gradient state is non-negative
    ours = [a.copy() for a in arrays]
    for _ in range(3):
        getattr(NUMBA.ops, op)(*ours, *hyper)
        getattr(NUMPY.ops, op)(*arrays, *hyper)
    for mine, ref in zip(ours, arrays):  # norm-wise: momentum terms cancel entrywise
        assert np.max(np.abs(mine - ref)) <= RTOL[dtype] * np.max(np.abs(ref))


def test_arrays_the_kernels_do_not_take_fall_back_to_the_exact_generic_op():
    X, W, b, _ = _data("float32")
    act = activations.get("tanh")
    fortran = np.asfortranarray(X)
    Z, A = NUMBA.ops.dense_forward(fortran, W, b, act)
    Z_ref, A_ref = NUMPY.ops.dense_forward(X, W, b, act)
    np.testing.assert_array_equal(A, A_ref)
    p, g = np.ones((4, 3), np.float32), np.ones((3, 4), np.float32).T  # g is not C-contiguous
    NUMBA.ops.sgd_update(p, g, 0.5, 0.0)
    np.testing.assert_array_equal(p, np.full((4, 3), 0.5, np.float32))


# ---------------------------------------------------------------- training parity


def _tutorial_models():
    X_planar, y_planar = datasets.planar()
    X_moons, y_moons = datasets.moons(n_samples=300, noise=0.2, seed=1)
    X_blobs, y_blobs = datasets.blobs(n_samples=240, n_classes=3, seed=2)
    return {
        "planar 2-4-1": (lambda dtype, backend: fastnn.from_layer_dims(
            [2, 4, 1], hidden_activation="tanh", output_activation="sigmoid", dtype=dtype,
            seed=1, backend=backend), X_planar, y_planar, dict(optimizer="sgd", lr=1.2)),
        "layer_dims DNN": (lambda dtype, backend: fastnn.from_layer_dims(
            [2, 20, 7, 5, 1], hidden_activation="relu", output_activation="sigmoid",
            dtype=dtype, seed=2, backend=backend), X_moons, y_moons,
            dict(optimizer="momentum", lr=0.05, batch_size=64)),
        "nn_architecture moons": (lambda dtype, backend: fastnn.from_architecture(
            fastnn.__main__.MOONS_ARCHITECTURE, dtype=dtype, seed=3, backend=backend),
            X_moons, y_moons, dict(optimizer="adam", lr=0.01, batch_size=32)),
        "TwoLayerNet softmax": (lambda dtype, backend: fastnn.Sequential(
            [fastnn.Dense(2, 50, "sigmoid"), fastnn.Dense(50, 3, "softmax")], dtype=dtype,
            seed=4, backend=backend), X_blobs, y_blobs, dict(optimizer="sgd", lr=0.5)),
    }


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(_tutorial_models()))
def test_100_training_steps_give_the_numpy_parameters(name, dtype):
    build, X, y, settings = _tutorial_models()[name]
    batch = settings.get("batch_size") or len(X)
    epochs = max(1, 100 * batch // len(X))
    results = []
    for backend in ("numpy", "numba"):
        model = build(dtype, backend)
        model.fit(X, y, epochs=epochs, seed=11, **settings)
        results.append([np.asarray(p.value, np.float64) for p in model.parameters()])
    tolerance = {"float64": 1e-9, "float32": 2e-3}[dtype]
    for ours, ref in zip(results[1], results[0]):
        assert np.max(np.abs(ours - ref)) <= tolerance * (np.max(np.abs(ref)) + 1e-12)


# ---------------------------------------------------------------- compiling and caching

ALL_KERNELS = [
    getattr(module, name)
    for module in (numba_dense, numba_losses, numba_optimizers, numba_softmax)
    for name in dir(module) if not name.startswith("_")
    and getattr(getattr(module, name), "__module__", None) == module.__name__
    and hasattr(getattr(module, name), "signatures")
]
LIST_KERNELS = (
    "ks = [getattr(m, n) for m in (d, l, o, s) for n in dir(m) if not n.startswith('_') "
    "and getattr(getattr(m, n), '__module__', None) == m.__name__ "
    "and hasattr(getattr(m, n), 'signatures')]\n"
)


def _run(code, *args, **env):
    full = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", code, *args], env=full, capture_output=True,
                          text=True, timeout=600)


def _cold_then_cached(code, tmp_path):
    """The printed words of ``code`` run twice in fresh processes sharing one new Numba
    cache: first with it empty, then with what the first run stored."""
    cache = str(tmp_path / "numba-cache")
    outputs = []
    for _ in range(2):
        run = _run(code, NUMBA_CACHE_DIR=cache)
        assert run.returncode == 0, run.stderr
        outputs.append(run.stdout.split())
    return outputs


def test_every_build_of_a_factory_compiles_under_a_name_of_its_own():
    """Compiled code names a function by its Python name and a per-process counter, so
    two builds of one factory compiled in different processes could share a symbol in a
    third that loads both from the cache, and one would run the other's code (seen:
    tanh's blocks running softplus's loop). The build's key is part of its name."""
    from fastnn.kernels.numba import train as numba_train
    from fastnn.kernels.numba import train_blas as numba_train_blas
    tanh, softplus = mask(activation_codes.TANH), mask(activation_codes.SOFTPLUS)
    builds = [numba_activations.blocks, numba_dense.serial, numba_optimizers.rules,
              numba_train._forward_build]
    for factory in builds:
        names = {k.py_func.__qualname__ for key in (tanh, softplus)
                 for k in np.atleast_1d(factory(key))}
        assert len(names) == 2 * len(np.atleast_1d(factory(tanh))), names
        assert all(f"[{tanh}]" in n or f"[{softplus}]" in n for n in names)
    for module in (numba_train, numba_train_blas):
        one, two = (module.epoch_kernel(tanh, tanh, rule, 0).py_func.__qualname__
                    for rule in (0, 5))
        assert one != two and one.endswith(f"[{tanh},{tanh},0,0]")


def test_kernel_names_change_with_any_kernel_layer_source(tmp_path):
    """Numba's cache checks only a kernel's own file, but kernels inline code from the
    activation specs and from other kernel files (math.py's exp): every kernel's name
    carries a checksum of all of them, so an edit to any one never loads stale code."""
    layer = tmp_path / "kernels"
    (layer / "numba").mkdir(parents=True)
    (layer / "activation_codes.py").write_text("RELU = 1\n")
    (layer / "numba" / "math.py").write_text("def vexp(x):\n    return x\n")
    (layer / "numba" / "dense.py").write_text("from .math import vexp\n")
    key = numba_jit.sources_key(7, str(layer / "numba"))
    assert numba_jit.sources_key(8, str(layer / "numba")) != key  # a changed spec
    (layer / "numba" / "math.py").write_text("def vexp(x):\n    return x + 0\n")
    changed = numba_jit.sources_key(7, str(layer / "numba"))
    assert changed != key
    (layer / "activation_codes.py").write_text("RELU = 2\n")
    assert numba_jit.sources_key(7, str(layer / "numba")) not in (key, changed)
    assert f"@{numba_jit.SOURCES_KEY:08x}" in numba_dense.small_product.py_func.__qualname__


def test_an_entry_point_is_the_compiled_code_for_its_arguments_types():
    from fastnn.kernels.numba import jit as numba_jit

    @njit
    def scaled_sum(a, scale):
        return a.sum() * scale

    a32, a64 = np.arange(4, dtype=np.float32), np.arange(4.0)
    run = numba_jit.entry_point(scaled_sum, (a64, 2.0))  # compiles: no signature yet
    assert len(scaled_sum.signatures) == 1 and run(a64, 2.0) == 12.0
    assert numba_jit.entry_point(scaled_sum, (a64, 3.0)) is run  # same types, same code
    other = numba_jit.entry_point(scaled_sum, (a32, 2.0))
    assert other is not run and len(scaled_sum.signatures) == 2 and other(a32, 2.0) == 12.0


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n", [3, 200])  # tiled narrow rows; wide rows take the bias row
def test_each_kinds_own_build_gives_the_any_kind_build_bit_for_bit(dtype, n):
    rng = np.random.default_rng(5)
    Z, dA = (rng.standard_normal((40, n)).astype(dtype) * 4 for _ in range(2))
    b = rng.standard_normal(n).astype(dtype)
    alpha = np.dtype(dtype).type(0.1)
    kinds = activation_codes.CODES.values()
    for kind in kinds:
        other = activation_codes.TANH if kind != activation_codes.TANH else activation_codes.RELU
        outputs = []  # the build for every kind, for this kind alone, for it and one other
        for build in (numba_activations.ANY, mask(kind), mask(kind, other)):
            forward, grad = numba_dense.serial(build)
            Z_out, A = np.empty_like(Z), np.empty_like(Z)
            forward(kind, Z, b, Z_out, A, alpha, 0, 40, True)
            dZ, db = np.empty_like(Z), np.zeros(n, dtype)
            grad(kind, dA, Z_out, A, dZ, db, alpha, 0, 40)
            outputs.append((Z_out, A, dZ, db))
        for any_kind, own, pair in zip(*outputs):
            np.testing.assert_array_equal(own, any_kind, err_msg=f"kind {kind}")
            np.testing.assert_array_equal(pair, any_kind, err_msg=f"kind {kind} with {other}")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_each_rules_own_build_gives_the_any_rule_update_bit_for_bit(dtype):
    rng = np.random.default_rng(6)
    hp = (0.01, 0.001, 0.9, 0.1, 0.999, 0.001, 1e-8, 0.1, 0.01)
    for rule in numba_optimizers.RULES.values():
        start = [np.abs(rng.standard_normal(300)).astype(dtype) for _ in range(4)]
        outputs = []
        for build in (numba_optimizers.update, numba_optimizers.rules(mask(rule))):
            p, g, s1, s2 = (a.copy() for a in start)
            build(rule, p, g, s1, s2, hp)
            outputs.append((p, s1, s2))
        assert not np.array_equal(outputs[0][0], start[0])  # the rule did run
        for any_rule, own in zip(*outputs):
            np.testing.assert_array_equal(own, any_rule, err_msg=f"rule {rule}")


def test_a_first_step_compiles_only_its_own_kinds_and_the_cache_serves_them(tmp_path):
    code = (
        "import numpy as np, fastnn\n"
        "from fastnn.kernels import activation_codes as c\n"
        "from fastnn.kernels.numba import activations as a, dense as d\n"
        "from fastnn.kernels.numba.jit import subroutines_compiled\n"
        "model = fastnn.Sequential([fastnn.Dense(300, 300, 'relu'), "
        "fastnn.Dense(300, 2, 'softmax')], seed=0, backend='numba')\n"
        "X, Y = model.prepare(np.ones((128, 300)), np.zeros(128, int))\n"
        "model.compute_gradients(X, Y)\n"
        "built = lambda m: any(f in subroutines_compiled for f in a.blocks(m))\n"
        "compiled = [k for k in c.CODES.values() if built(a.mask(k))] + ['any'] * built(a.ANY)\n"
        "hits = sum(sum(k.stats.cache_hits.values()) for k in d.serial(a.mask(c.RELU)))\n"
        "print(compiled, len(d.serial(a.mask(c.SOFTMAX))[0].signatures), hits)"
    )
    first, second = _cold_then_cached(code, tmp_path)
    # relu's blocks only: softmax is row-wise (no block), and nothing built for ANY kind
    assert first == [f"[{activation_codes.RELU}]", "1", "0"]
    assert second[-1] == "2"  # both relu builds came from the cache


@pytest.mark.parametrize("dims", [(2, 4, 1), (40, 30, 20, 3)])  # the loop and BLAS kernels
def test_a_first_fit_compiles_only_its_configuration_and_the_cache_serves_it(tmp_path, dims):
    code = (
        "import numpy as np, fastnn\n"
        "from fastnn.kernels import activation_codes as c\n"
        "from fastnn.kernels.numba import activations as a\n"
        "from fastnn.kernels.numba import optimizers as o\n"
        "from fastnn.kernels.numba import train as t, train_blas as tb\n"
        "from fastnn.kernels.numba.jit import subroutines_compiled as compiled\n"
        f"dims = {dims}\n"
        "out = 'sigmoid' if dims[-1] == 1 else 'softmax'\n"
        "model = fastnn.from_layer_dims(list(dims), 'tanh', out, seed=0, backend='numba')\n"
        "rng = np.random.default_rng(0)\n"
        "X, y = rng.standard_normal((64, dims[0])), rng.integers(0, max(dims[-1], 2), 64)\n"
        "model.fit(X, y, epochs=2, batch_size=32, optimizer='adam', lr=0.01)\n"
        "kind = a.mask(c.SIGMOID if dims[-1] == 1 else c.SOFTMAX, c.TANH)\n"
        "loss = t.BCE if dims[-1] == 1 else t.XENT\n"
        "epoch = (t if len(dims) == 3 else tb).epoch_kernel(kind, a.mask(c.TANH), o.ADAM, loss)\n"
        "other = (t if len(dims) == 3 else tb).epoch_kernel(kind, a.mask(c.TANH), o.SGD, loss)\n"
        "own = [*a.blocks(kind), *a.blocks(a.mask(c.TANH)), o.update_for.build(a.mask(o.ADAM))]\n"
        "others = [*a.blocks(a.ANY), o.update, o.update_for.build(a.mask(o.SGD))]\n"
        "print(len(epoch.signatures), len(other.signatures), sum(f in compiled for f in own), "
        "sum(f in compiled for f in others), sum(epoch.stats.cache_hits.values()))"
    )
    first, second = _cold_then_cached(code, tmp_path)
    # the build for tanh, the output, Adam and the loss, with its subroutines (the forward
    # block of every layer's kinds, tanh's gradient block, Adam's update): no other rule,
    # nothing for any kind
    assert first == ["1", "0", "3", "0", "0"]
    assert second == ["1", "0", "0", "0", "1"]  # loaded from the cache: nothing compiled


@pytest.mark.parametrize("version, probed", [(None, "0"), ("0.99.0", "1")])
def test_importing_and_selecting_the_backend_compiles_nothing_but_an_untested_numbas_probe(
        tmp_path, version, probed):
    """With the installed Numba (CI tests its range) nothing compiles; a Numba outside the
    tested range also runs the probe kernel, and the backend then works as usual."""
    code = (
        ("" if version is None else f"import numba; numba.__version__ = {version!r}\n")
        + "import fastnn; from fastnn.kernels.numba import dense as d, losses as l, "
        "optimizers as o, probe as p, softmax as s\n"
        + LIST_KERNELS +
        "print(len(ks), sum(len(k.signatures) for k in ks), fastnn.get_backend().name, "
        "len(p._probe.signatures))"
    )
    run = _run(code, FASTNN_BACKEND="numba", NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    assert run.returncode == 0, run.stderr
    kernels, compiled, name, probe = run.stdout.split()
    assert int(kernels) >= 10 and int(compiled) == 0 and name == "numba" and probe == probed


def test_the_probe_runs_for_numba_versions_outside_the_tested_range():
    from fastnn.kernels.numba import probe

    tested = ("0.61", "0.68")
    assert not probe.needed("0.61.0", tested) and not probe.needed("0.68.1", tested)
    assert probe.needed("0.60.1", tested) and probe.needed("0.69.0rc1", tested)
    assert probe.needed("1.0.0", tested) and probe.needed("0.68.1", None)


TRAIN_ON_BOTH = (
    "import numpy as np, fastnn\n"
    "from fastnn import backends, datasets\n"
    "from fastnn.kernels.numba import jit as numba_jit\n"
    "X, y = datasets.moons(120, noise=0.2, seed=0)\n"
    "worst = 0.0\n"
    "for dims, batch, opt in (((2, 4, 1), None, 'sgd'), ((2, 40, 20, 1), 32, 'adam'),\n"
    "                         ((2, 40, 20, 1), 32, 'sgd')):\n"
    "    trained = []\n"
    "    for name in ('numba', 'numpy'):\n"
    "        m = fastnn.from_layer_dims(list(dims), 'tanh', 'sigmoid', seed=0, backend=name,\n"
    "                                   dtype='float64')\n"
    "        m.fit(X, y, epochs=3, batch_size=batch, optimizer=opt, lr=0.1, seed=1)\n"
    "        trained.append([p.value for p in m.parameters()])\n"
    "    worst = max([worst] + [float(np.max(np.abs(a - b))) for a, b in zip(*trained)])\n"
    "by_numba = sum(code is None for _, code in numba_jit._subroutines.values())\n"
    "print(worst, numba_jit.flat.__class__.__name__, numba_jit.AppDirs, by_numba)\n"
)


def test_where_numba_internals_are_missing_public_apis_keep_the_kernels_working(tmp_path):
    """Numba internals hidden before fastnn loads (simulating a Numba without them): the
    code-library members ``_Linkable`` reads (subroutines then compile and link by
    Numba's own compile_subroutine), the array internals of ``flat`` (it falls back to
    reshape) and AppDirs (the cache location is worked out without it). Every kernel
    path still trains as the NumPy reference does."""
    code = (  # hidden from fastnn's imports only: Numba itself still uses them
        "import sys, types, numba.np.arrayobj, numba.misc.appdirs\n"
        "real = dict(sys.modules)\n"
        "sys.modules['numba.np.arrayobj'] = types.ModuleType('numba.np.arrayobj')\n"
        "sys.modules['numba.misc.appdirs'] = None\n"
        "from fastnn.kernels.numba import jit as numba_jit\n"
        "sys.modules.update({k: real[k] for k in ('numba.np.arrayobj', 'numba.misc.appdirs')})\n"
        "numba_jit.LINKABLE_NEEDS = ('_a_member_this_numba_lacks',)\n"
        + TRAIN_ON_BOTH
    )
    run = _run(code, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    assert run.returncode == 0, run.stderr
    worst, flat_kind, appdirs, by_numba = run.stdout.split()
    assert float(worst) < 1e-9 and flat_kind == "CPUDispatcher" and appdirs == "None"
    assert int(by_numba) >= 10  # every subroutine went through compile_subroutine


@pytest.mark.parametrize("broken", [
    "import numba.core.compiler as c; del c.compile_internal",
    "import numba.core.compiler_lock as c; del c.global_compiler_lock",
    "import numba.extending as e; e.intrinsic = None",
])
def test_a_kernel_layer_that_cannot_work_makes_the_backend_unavailable(tmp_path, broken):
    """Numba internals the kernel layer has no way around: the backend is unavailable,
    with the reason, from the moment it is created, and the other backends still run."""
    code = (
        f"{broken}\n"
        "import fastnn\n"
        "from fastnn import backends\n"
        "from fastnn.errors import BackendUnavailable\n"
        "print(backends.availability()['numba'])\n"
        "model = fastnn.from_layer_dims([2, 3, 1], seed=0, backend='numpy')\n"
        "model.fit([[0.0, 1.0], [1.0, 0.0]], [0, 1], epochs=2)\n"
        "try:\n"
        "    fastnn.from_layer_dims([2, 3, 1], seed=0, backend='numba')\n"
        "except BackendUnavailable as error:\n"
        "    print('refused:', error)\n"
    )
    run = _run(code, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    assert run.returncode == 0, run.stderr
    reason, refused = run.stdout.strip().splitlines()
    expected = (r"the 'numba' backend cannot start: fastnn's Numba kernels do not work with "
                r"numba [\d.]+ here \(\w+: .+\); they are tested with numba "
                r"\d+\.\d+ to \d+\.\d+: pip install 'fastnn\[numba\]'")
    assert re.fullmatch(expected, reason, re.S), reason
    assert refused == f"refused: {reason}"
    chosen = _run(f"{broken}\nimport fastnn", FASTNN_BACKEND="numba",
                  NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    assert chosen.returncode != 0
    assert chosen.stderr.strip().splitlines()[-1] == f"fastnn.errors.BackendUnavailable: {reason}"
    unbroken = _run("import fastnn", FASTNN_BACKEND="numba",
                    NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    assert unbroken.returncode == 0, unbroken.stderr  # the same cache, an intact Numba


def test_warmup_compiles_every_kernel_and_caches_it(tmp_path):
    code = (
        "import fastnn\n"
        "from fastnn.kernels.numba import dense as d, losses as l, optimizers as o, "
        "softmax as s\n"
        "model = fastnn.from_layer_dims([2, 3, 2], 'relu', 'softmax', backend='numba', "
        "dtype='float64')\n"
        "fastnn.warmup(model)\n"
        + LIST_KERNELS +
        "print(min(len(k.signatures) for k in ks), "
        "sum(sum(k.stats.cache_hits.values()) for k in ks))"
    )
    cache = str(tmp_path / "numba-cache")
    first = _run(code, NUMBA_CACHE_DIR=cache)
    assert first.returncode == 0, first.stderr
    compiled, hits = map(int, first.stdout.split())
    assert compiled >= 1 and hits == 0
    assert any(name.endswith(".nbc") for _, _, files in os.walk(cache) for name in files)
    second = _run(code, NUMBA_CACHE_DIR=cache)
    compiled, hits = map(int, second.stdout.split())
    assert compiled >= 1 and hits >= len(ALL_KERNELS) >= 10


def test_cache_directory_choice():
    yes, no = (lambda path: True), (lambda path: False)
    choose = numba_jit.cache_directory
    assert choose({"NUMBA_CACHE_DIR": "/x"}, is_writable=yes) == "/x"
    assert choose({"NUMBA_CACHE_DIR": "/x"}, is_writable=no) is None
    assert choose({}, is_writable=yes) == numba_jit.NUMBA_DEFAULT
    only_fallback = lambda path: path == "/tmp/fallback"  # noqa: E731
    assert choose({}, in_tree="/ro/pkg", user_wide="/ro/home", fallback="/tmp/fallback",
                  is_writable=only_fallback) == "/tmp/fallback"
    assert choose({}, in_tree="/ro/pkg", user_wide="/ro/home", fallback="/ro/tmp",
                  is_writable=no) is None


def test_read_only_package_and_home_fall_back_to_the_temp_cache(tmp_path):
    code = (
        "import os, tempfile; from fastnn.kernels.numba import jit as j\n"
        "j.writable = lambda d: d.startswith(tempfile.gettempdir())\n"
        "print(j.cache_directory(environ={}, is_writable=j.writable).startswith("
        "tempfile.gettempdir()))"
    )
    run = _run(code, TMPDIR=str(tmp_path))
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "True"


def _layer_in_a_fresh_process(**env):
    code = (
        "import numba, numpy as np, fastnn\n"
        "from fastnn.kernels.numba import dense as d\n"
        "Z = np.ones((8, 8)); A = np.empty_like(Z)\n"
        "d.bias_activation_parallel(1, Z, np.zeros(8), Z, A, 0.0, True, 2)\n"
        "print(numba.threading_layer(), *fastnn.get_backend().threading_layer)"
    )
    base = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    run = subprocess.run([sys.executable, "-c", code],
                         env={**base, "FASTNN_BACKEND": "numba", **env},
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    return run.stdout.split()


def test_threading_layer_is_tbb_where_it_loads_else_workqueue():
    from fastnn.kernels.numba import threads as numba_threads

    problem = numba_threads.tbb_problem()
    running = _layer_in_a_fresh_process()
    assert running[:2] == (["workqueue", "workqueue"] if problem else ["tbb", "tbb"])
    if sys.platform == "linux" and platform.machine() == "x86_64":
        assert problem is None  # the numba and test extras install tbb here


def test_the_users_threading_layer_is_kept():
    assert _layer_in_a_fresh_process(NUMBA_THREADING_LAYER="workqueue")[:3] == [
        "workqueue", "workqueue", "NUMBA_THREADING_LAYER"]


def test_threading_layer_choice_falls_back_and_says_why():
    from fastnn.kernels.numba import threads as numba_threads

    class Config:
        THREADING_LAYER = "default"

    class FakeNumba:
        config = Config()

    numba_fake = FakeNumba()
    assert numba_threads.choose(numba_fake, {}, lambda: "libtbb.so.12 not found") == (
        "workqueue", "libtbb.so.12 not found")
    assert numba_fake.config.THREADING_LAYER == "workqueue"
    assert numba_threads.choose(numba_fake, {}, lambda: None) == ("tbb", "TBB loads")
    assert numba_fake.config.THREADING_LAYER == "tbb"
    chosen = numba_threads.choose(numba_fake, {"NUMBA_THREADING_LAYER": "omp"}, lambda: None)
    assert chosen == ("omp", "NUMBA_THREADING_LAYER")
    assert numba_fake.config.THREADING_LAYER == "tbb"  # left as the user's setting has it


def test_tbb_problem_names_a_missing_library(tmp_path, monkeypatch):
    from fastnn.kernels.numba import threads as numba_threads

    monkeypatch.setitem(numba_threads.TBB_NAMES, sys.platform, "libfastnn-no-such-tbb.so")
    problem = numba_threads.tbb_problem(prefixes=(str(tmp_path),))
    assert "libfastnn-no-such-tbb.so not found" in problem and "fastnn[numba]" in problem


def test_warmup_on_other_backends_has_nothing_to_compile():
    assert fastnn.warmup(backends.load("numpy")) == 0.0
