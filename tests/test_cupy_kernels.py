"""The CuPy backend's CUDA kernels without a GPU: the source compiles for sm_90 (nvcc
and NVRTC, as CuPy compiles it), and the same source run on the CPU through the
backend's own launch plans matches the NumPy reference op by op, in gradients and
over 100 training steps. What this cannot show: GPU timing, and that the device's
exp/tanh/log round like the host's (tests/test_cupy_gpu.py checks that on a GPU)."""

import importlib.util
import re
import shutil
import subprocess

import numpy as np
import pytest
from conftest import make_backend
from cuda_emulator import EmulatedCudaBackend, build, compiler

import fastnn
from fastnn import Dense, Dropout, Sequential, activations, backends, datasets
from fastnn.activations import ReLU
from fastnn.kernels import activation_codes
from fastnn.kernels.cuda import ops as cupy_ops
from fastnn.kernels.cuda import source as cupy_source

FAST = activation_codes.DIFFERENTIABLE
TOL = {"float64": 1e-12, "float32": 1e-5}


def test_every_kernel_compiles_with_nvcc_for_sm90(tmp_path):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc (the CUDA toolkit) is not installed here")
    cu = tmp_path / "kernels.cu"
    cu.write_text(cupy_source.SOURCE + cupy_source.explicit_instantiations())
    ptx = tmp_path / "kernels.ptx"
    run = subprocess.run([nvcc, "--ptx", "-arch=sm_90", *cupy_source.OPTIONS, str(cu),
                          "-o", str(ptx)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    entries = re.findall(r"\.entry\s+(\w+)", ptx.read_text())
    # per dtype: each kernel without an activation once; with one (ACT), once per
    # elementwise activation (the forwards) or per differentiable one (the backwards)
    acts = [k for k in cupy_source.KERNELS.values() if k.template == cupy_source.ACT_TEMPLATE]
    per_dtype = len(cupy_source.KERNELS) - len(acts) + sum(
        len(activation_codes.ELEMENTWISE) if k.name in cupy_source.FORWARD_ACT
        else len(activation_codes.DIFFERENTIABLE) for k in acts)
    assert len(entries) == len(cupy_source.instances()) == 2 * per_dtype


def test_every_kernel_compiles_with_nvrtc_as_cupy_does():
    if importlib.util.find_spec("cupy") is None:
        pytest.skip("CuPy is not installed here (pip install 'fastnn[cuda12]')")
    from cupy.cuda.compiler import CompileException, _NVRTCProgram

    options = (*cupy_source.OPTIONS, "-arch=compute_90", "--device-as-default-execution-space")
    try:
        program = _NVRTCProgram(cupy_source.SOURCE, "fastnn_kernels.cu",
                                name_expressions=cupy_source.instances())
        ptx, mapping = program.compile(options)
    except CompileException:
        raise
    except Exception as error:  # no NVRTC library (pip: nvidia-cuda-nvrtc-cu12)
        pytest.skip(f"NVRTC is not usable here ({type(error).__name__}: {error})")
    assert set(mapping) == set(cupy_source.instances()) and len(ptx) > 100_000


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    if compiler() is None:
        pytest.skip("no C++ compiler (g++) to run the CUDA kernels on the CPU")
    return EmulatedCudaBackend(build(tmp_path_factory.mktemp("kernels")))


def arrays(shape, dtype, seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=shape) * scale).astype(dtype)


def close(a, b, dtype, terms=None):
    """Equal to the dtype's tolerance; a sum is compared relative to the sum of its
    terms' magnitudes, since summation order alone moves it by that much."""
    atol = TOL[dtype] * (1e-3 if terms is None else np.abs(terms).sum(axis=0))
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    bad = np.abs(a - b) > atol + TOL[dtype] * np.abs(b)
    assert not bad.any(), f"{bad.sum()} of {bad.size} differ: {a[bad][:3]} vs {b[bad][:3]}"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", [*FAST, "softmax", "step"])
def test_dense_forward_matches_reference(emulated, name, dtype):
    ref = backends.load("numpy").ops
    X, W, b = arrays((67, 9), dtype, 1), arrays((9, 13), dtype, 2), arrays((13,), dtype, 3)
    X[0, :] = 400.0  # huge logits: the stable formulas must stay finite
    act = activations.get(name)
    Z, A = emulated.ops.dense_forward(X, W, b, act)
    Zr, Ar = ref.dense_forward(X, W, b, act)
    close(Z, Zr, dtype)
    close(A, Ar, dtype)
    assert np.all(np.isfinite(A)) and A.dtype == np.dtype(dtype)
    fused = "bias_softmax_forward" if name == "softmax" else "bias_act_forward"
    assert emulated.launcher.launches[-1].startswith(fused)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", FAST)
@pytest.mark.parametrize("rows", [1, 5, 300])
def test_activation_backward_and_bias_gradient_match(emulated, name, dtype, rows):
    ref = backends.load("numpy").ops
    act = activations.get(name)
    Z = arrays((rows, 7), dtype, 4)
    A = act.forward(np, Z)
    dA = arrays((rows, 7), dtype, 5, scale=1.0)
    dZ, db = emulated.ops.activation_backward(dA, Z, A, act)
    dZr, dbr = ref.activation_backward(dA, Z, A, act)
    close(dZ, dZr, dtype)
    close(db, dbr, dtype, terms=dZr)
    assert emulated.launcher.launches[-2:] == [
        cupy_source.instance("act_backward_partial", dtype, name),
        cupy_source.instance("column_sum", dtype)]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("rows", [1, 5, 300])
def test_softmax_forward_and_backward_run_row_kernels_and_match(emulated, dtype, rows):
    ref = backends.load("numpy").ops
    act = activations.get("softmax")
    Z = arrays((rows, 11), dtype, 4, scale=30.0)
    Z[0, :3] = 1e4  # huge logits: the shifted exp stays finite
    Z.setflags(write=False)  # the forward only reads Z
    A = emulated.ops.activation_forward(Z, act)
    assert emulated.launcher.launches[-1] == cupy_source.instance("softmax_forward", dtype)
    close(A, ref.activation_forward(Z, act), dtype)
    assert np.all(np.isfinite(A)) and A.dtype == np.dtype(dtype)
    dA = arrays((rows, 11), dtype, 5, scale=1.0)
    dZ, db = emulated.ops.activation_backward(dA, Z, A, act)
    dZr, dbr = ref.activation_backward(dA, Z, A, act)
    a, da = np.abs(A.astype(np.float64)), np.abs(dA.astype(np.float64))
    scale = a * (da + np.sum(da * a, axis=1, keepdims=True))  # dA - sum(dA a) cancels
    assert np.all(np.abs(dZ - dZr.astype(np.float64)) <= TOL[dtype] * scale)
    close(db, dbr, dtype, terms=scale)
    assert emulated.launcher.launches[-3:] == [
        cupy_source.instance("softmax_backward", dtype),
        cupy_source.instance("act_backward_partial", dtype, "identity"),
        cupy_source.instance("column_sum", dtype)]


def test_softmax_row_with_nan_is_nan_like_the_reference(emulated):
    act = activations.get("softmax")
    Z = arrays((3, 5), "float64", 6)
    Z[1, 2] = np.nan
    A = emulated.ops.activation_forward(Z, act)
    np.testing.assert_array_equal(np.isnan(A), np.isnan(act.forward(np, Z)))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("need_grad", [True, False])
def test_cross_entropies_match(emulated, dtype, need_grad):
    ref = backends.load("numpy").ops
    Z = arrays((50, 4), dtype, 6, scale=20.0)
    Y = (np.random.default_rng(7).random((50, 4)) > 0.5).astype(dtype)
    A = activations.get("sigmoid").forward(np, Z)
    loss, dZ = emulated.ops.sigmoid_bce(Z, A, Y, need_grad)
    loss_r, dZ_r = ref.sigmoid_bce(Z, A, Y, need_grad)
    close(loss, loss_r, dtype)
    Y1 = np.eye(4, dtype=dtype)[np.arange(50) % 4]
    A1 = activations.get("softmax").forward(np, Z)
    loss1, dZ1 = emulated.ops.softmax_xent(Z, A1, Y1, need_grad)
    loss1_r, dZ1_r = ref.softmax_xent(Z, A1, Y1, need_grad)
    close(loss1, loss1_r, dtype)
    if need_grad:
        close(dZ, dZ_r, dtype)
        close(dZ1, dZ1_r, dtype)
    else:
        assert dZ is None and dZ1 is None


UPDATES = {
    "sgd_update": (0, (0.1,)),
    "momentum_update": (1, (0.1, 0.9)),
    "nesterov_update": (1, (0.1, 0.9)),
    "adagrad_update": (1, (0.1, 1e-7)),
    "rmsprop_update": (1, (0.01, 0.9, 1e-7)),
    "adam_update": (2, (0.01, 0.9, 0.999, 1e-8, 3)),
}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("decay", [0.0, 0.01])
@pytest.mark.parametrize("name", UPDATES)
def test_optimizer_updates_match_in_place(emulated, name, decay, dtype):
    slots, hyper = UPDATES[name]
    ref = getattr(backends.load("numpy").ops, name)
    fused = getattr(emulated.ops, name)
    p = arrays((31, 3), dtype, 8)
    state = [np.abs(arrays((31, 3), dtype, 9 + i)) for i in range(slots)]
    p_ref, state_ref = p.copy(), [s.copy() for s in state]
    for step in range(3):
        g = arrays((31, 3), dtype, 20 + step)
        fused(p, g, *state, *hyper, decay)
        ref(p_ref, g, *state_ref, *hyper, decay)
    close(p, p_ref, dtype)
    for s, s_ref in zip(state, state_ref):
        close(s, s_ref, dtype)
    kernel = cupy_ops.UPDATES[name][0]  # Nesterov and AdaGrad share kernels
    assert emulated.launcher.launches[-1] == cupy_source.instance(kernel, dtype)


def test_ops_without_a_kernel_fall_back_to_the_reference(emulated):
    class Custom(ReLU):  # a user's activation: not fused, still correct
        name = "custom"

    class OwnReLU(ReLU):  # a user's subclass keeping the built-in's name: not fused either
        def forward(self, xp, z):
            return xp.maximum(z, 0.5 * z)

    ref = backends.load("numpy").ops
    X, W, b = arrays((6, 3), "float64"), arrays((3, 4), "float64", 1), arrays((4,), "float64")
    count = len(emulated.launcher.launches)
    for act in (Custom(), OwnReLU()):
        Z, A = emulated.ops.dense_forward(X, W, b, act)
        np.testing.assert_array_equal(A, ref.dense_forward(X, W, b, act)[1])
        dZ, db = emulated.ops.activation_backward(A, Z, A, act)
        np.testing.assert_array_equal(dZ, ref.activation_backward(A, Z, A, act)[0])
    for act in (Custom(), activations.get("relu")):
        Z, A = emulated.ops.dense_forward(X[:, ::-1], W, b[::-1], act)  # non-contiguous b
        Zr, Ar = ref.dense_forward(X[:, ::-1], W, b[::-1], act)
        np.testing.assert_array_equal(A, Ar)
    Z64 = np.asfortranarray(Z)  # not C-contiguous: the reference softmax, both ways
    A64 = emulated.ops.activation_forward(Z64, activations.get("softmax"))
    np.testing.assert_array_equal(A64, ref.activation_forward(Z64, activations.get("softmax")))
    dZ, db = emulated.ops.activation_backward(Z64, Z64, A64, activations.get("softmax"))
    np.testing.assert_array_equal(db, ref.activation_backward(Z64, Z64, A64,
                                                              activations.get("softmax"))[1])
    p = np.ones((3, 3))[:, ::2]  # non-contiguous parameter: the reference update
    emulated.ops.sgd_update(p, np.ones((3, 2)), 0.5, 0.0)
    np.testing.assert_array_equal(p, 0.5)
    assert len(emulated.launcher.launches) == count  # no kernel ran


def test_layer_level_call_with_foreign_arrays_is_a_clear_error(emulated):
    strict = make_backend("strict")
    X = strict.asarray(np.ones((2, 3)), strict.dtype("float64"))
    with pytest.raises(TypeError, match=r"X is a array_api_strict.*Array, but this model's "
                                        r"layer-level API works on NumPy arrays"):
        emulated.ops.dense_forward(X, np.ones((3, 2)), np.zeros(2), activations.get("relu"))


def test_gradcheck_passes_through_the_kernels(emulated):
    X, y = datasets.spirals(30, n_classes=3, seed=0)
    for out, loss, target in (("softmax", "auto", y), ("sigmoid", "auto", y % 2),
                              ("tanh", "mse", np.c_[y, y] / 2.0)):
        n_out = {"softmax": 3, "sigmoid": 1, "tanh": 2}[out]
        layers = [Dense(2, 6, "tanh"), Dense(6, 5, "sigmoid"), Dense(5, 6, "softplus"),
                  Dense(6, n_out, out)]
        result = fastnn.gradcheck(Sequential(layers, loss=loss, seed=0, backend=emulated),
                                  X, target)
        assert result.passed, result


def test_gradcheck_of_kinked_activations_agrees_with_the_reference(emulated):
    """ReLU-like nets fail a central-difference check where a sample sits near the kink
    (the reference does too); the fused backward must give the very same errors."""
    X, y = datasets.spirals(30, n_classes=3, seed=0)

    def check(on):
        layers = [Dense(2, 6, "relu"), Dense(6, 5, "leaky_relu"), Dense(5, 3, "softmax")]
        return fastnn.gradcheck(Sequential(layers, seed=0, backend=on), X, y).errors

    fused, reference = check(emulated), check("numpy")
    assert fused.keys() == reference.keys()
    for key in fused:
        assert fused[key] == pytest.approx(reference[key], rel=1e-6, abs=1e-9), key


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-12), ("float32", 1e-5)])
def test_100_training_steps_match_the_numpy_reference(emulated, dtype, rtol):
    """Shuffling, dropout, Adam and weight decay: 10 epochs of 10 steps."""
    X, y = datasets.blobs(300, n_classes=3, std=1.5, seed=0)

    def train(on):
        layers = [Dense(2, 16, "relu"), Dropout(0.1), Dense(16, 8, "sigmoid"),
                  Dense(8, 3, "softmax")]
        model = Sequential(layers, seed=1, dtype=dtype, backend=on)
        history = model.fit(X, y, epochs=10, batch_size=30,
                            optimizer=fastnn.Adam(lr=0.01, weight_decay=1e-3), seed=2)
        return model, history

    fused, history = train(emulated)
    reference, history_ref = train("numpy")
    assert fused.optimizer.t == 100
    for p, q in zip(fused.parameters(), reference.parameters()):
        np.testing.assert_allclose(p.value, q.value, rtol=rtol, atol=rtol * 1e-2)
    np.testing.assert_allclose(history["loss"], history_ref["loss"], rtol=rtol)
    np.testing.assert_allclose(fused.predict_proba(X), reference.predict_proba(X), rtol=rtol,
                               atol=rtol * 1e-2)


def test_planar_tutorial_trains_through_the_kernels(emulated):
    X, y = datasets.planar()
    model = fastnn.from_layer_dims([2, 4, 1], "tanh", "sigmoid",
                                   init=fastnn.initializers.normal(0.01), seed=2,
                                   backend=emulated)
    model.fit(X, y, epochs=1000, lr=1.2)
    assert model.evaluate(X, y)["accuracy"] > 0.8
