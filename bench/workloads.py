"""The benchmark workloads, each defined once, for the pytest suite and the report runner.

A ``Workload`` holds its host inputs (the same NumPy arrays for every backend), its
fastnn implementation (the public API, the backend's ops table, and
``fastnn.training.epoch_runner`` to time a step as ``fit`` runs it; never
backend-specific code), its PyTorch eager peer (in ``bench.peers``), the work one call
does (FLOPs, bytes read + written, or items) and a check that its result is right.
"""

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

import fastnn
from bench import peers, reference
from bench.case import GEMM_INPUTS, Case, dense_products, mlp_gemms, pure_case
from fastnn import activations, backends, initializers, optimizers
from fastnn.layers import Dense, Parameter
from fastnn.training import epoch_runner

GROUPS = ("elementwise", "dense", "optimizer", "mlp", "planar", "epoch", "conv",
          "distributed")
# "distributed" has no Workload here: it runs the epoch under mpiexec (bench.distributed)
# every activation with a gradient but identity (nothing to time), from the registry
ACTIVATIONS = tuple(cls.name for cls in activations.SPECS
                    if cls.differentiable and cls.name != "identity")
DTYPES = ("float32", "float64")
MLP_DIMS = (784, 256, 256, 10)
OPTIMIZER_LR = {"sgd": 0.01, "adam": 0.001}


@dataclass(frozen=True)
class Workload:
    name: str
    group: str
    dtype: str
    inputs: Callable[[], dict]  # host NumPy arrays
    fastnn: Callable  # (backend, inputs) -> Case
    torch: Callable  # (torch, device, inputs) -> Case: the PyTorch eager peer
    check: Callable  # (outputs, inputs) -> None; raises AssertionError when wrong
    work: float  # per call, in ``unit``
    unit: str  # "FLOP" (vs the GEMM ceiling), "B" (vs a copy), or items ("samples", ...)
    copy_shape: tuple = None  # for "B": the copy ceiling is measured at this shape
    two_in_one_out: bool = False  # reads two arrays and writes one: also compared with a + b
    baseline: str = None  # the name of a workload this one is compared with (same dtype)
    tolerance: float = 1e-4  # largest relative error accepted against the NumPy backend

    @property
    def id(self):
        return f"{self.name} [{self.dtype}]"


def catalog(quick=False):
    """Every workload in report order; ``quick`` shrinks the sizes (CI, smoke runs)."""
    rows, wide = ((64, 256), (256, 1024)) if quick else ((256, 1024), (4096, 1024))
    items = []
    for dtype in DTYPES:
        items += [elementwise(d, name, shape, dtype) for shape in (rows, wide)
                  for name in ACTIVATIONS for d in ("forward", "backward")]
    items += [dense(32 if quick else 256, dtype) for dtype in DTYPES]
    side = 128 if quick else 1024  # big enough that fused passes run on every thread
    items += [dense_gemms(side, "float32", side, side),
              dense(side, "float32", side, side, baseline=True)]
    items += [optimizer(name, 256 if quick else 1024, "float32") for name in OPTIMIZER_LR]
    for dtype in DTYPES:
        for batch in (16, 64) if quick else (128, 1024):
            items += [mlp_gemms_only(batch, dtype), mlp_step(batch, dtype),
                      mlp_step(batch, dtype, by_ops=True)]
    items += [planar(1000 if quick else 10_000, dtype) for dtype in DTYPES]
    items.append(epoch(2048 if quick else 60_000, "float32"))
    from bench import conv_workloads  # it builds on this module: imported when used

    items += [conv_workloads.cnn_step("SimpleConvNet", 8 if quick else 100),
              conv_workloads.cnn_step("LeNet-5", 8 if quick else 128)]
    return items


def gpu_catalog(quick=False):
    """The GPU check's workloads (``bench.gpu_check``), float32: every activation's
    forward and backward on arrays well beyond a GPU's L2 cache, the MLP
    784-1024-1024-10 step at batch 4096 with its 8 GEMMs, the planar net (10,000
    iterations), one epoch over 60,000 x 784, and the training steps of SimpleConvNet
    (batch 100) and LeNet-5 (batch 512); ``quick`` shrinks them all (the CPU
    rehearsal)."""
    from bench import conv_workloads  # it builds on this module: imported when used

    shape = (64, 256) if quick else (32768, 1024)
    items = [elementwise(d, name, shape, "float32") for name in ACTIVATIONS
             for d in ("forward", "backward")]
    dims, batch = ((784, 64, 64, 10), 64) if quick else ((784, 1024, 1024, 10), 4096)
    items += [mlp_gemms_only(batch, "float32", dims), mlp_step(batch, "float32", dims=dims)]
    items += [planar(1000 if quick else 10_000, "float32"),
              epoch(2048 if quick else 60_000, "float32")]
    items += [conv_workloads.cnn_step("SimpleConvNet", 8 if quick else 100),
              conv_workloads.cnn_step("LeNet-5", 16 if quick else 512)]
    return items


def select(workloads, groups=None, pattern=None, dtypes=None):
    """The workloads in ``groups`` whose id contains ``pattern`` and whose dtype is listed."""
    for what, given, valid in (("groups", groups, GROUPS), ("dtypes", dtypes, DTYPES)):
        unknown = set(given or ()) - set(valid)
        if unknown:
            raise ValueError(f"unknown {what} {sorted(unknown)}; the {what} are {', '.join(valid)}")
    return [w for w in workloads
            if (not groups or w.group in groups) and (not dtypes or w.dtype in dtypes)
            and (not pattern or pattern.lower() in w.id.lower())]


# ---- inputs ----

@functools.lru_cache(maxsize=64)
def normal(shape, dtype, seed, scale=1.0):
    """Standard normal host data, cached and read-only (inputs are shared, never mutated)."""
    array = np.random.default_rng(seed).standard_normal(shape) * scale
    array = array.astype(dtype)
    array.flags.writeable = False
    return array


def host(backend, x):
    """A backend array as float64 NumPy."""
    return np.asarray(backend.to_numpy(x), dtype=np.float64)


def tolerance(dtype, float32=1e-4, float64=1e-10):
    return float32 if dtype == "float32" else float64


# ---- elementwise: one activation, forward or backward (with the bias gradient) ----

def elementwise(direction, name, shape, dtype):
    nbytes = math.prod(shape) * np.dtype(dtype).itemsize
    arrays = ("Z",) if direction == "forward" else ("Z", "dA")

    def inputs():
        return {key: normal(shape, dtype, seed) for seed, key in enumerate(arrays)}

    fastnn_op, torch_op, check, moved = {
        "forward": (_activation_forward, peers.activation_forward, _check_forward, 2),
        "backward": (_activation_backward, peers.activation_backward, _check_backward, 3),
    }[direction]
    return Workload(
        name=f"{name} {direction} {shape[0]}x{shape[1]}", group="elementwise", dtype=dtype,
        inputs=inputs, fastnn=functools.partial(fastnn_op, name),
        torch=functools.partial(torch_op, name), check=functools.partial(check, name, dtype),
        work=moved * nbytes, unit="B", copy_shape=shape, tolerance=tolerance(dtype),
        two_in_one_out=direction == "backward",
    )


def _activation_forward(name, backend, data):
    """A = f(Z) with the backend's ``activation_forward`` op when its ops table has one,
    else the activation's own xp forward (what ops.dense_forward applies)."""
    act = activations.get(name)
    Z = backend.asarray(data["Z"])
    op = getattr(backend.ops, "activation_forward", None)
    run = (lambda: op(Z, act)) if op else (lambda: act.forward(backend.xp, Z))
    return pure_case(run, backend.to_numpy)


def _activation_backward(name, backend, data):
    act = activations.get(name)
    Z, dA = backend.asarray(data["Z"]), backend.asarray(data["dA"])
    A = act.forward(backend.xp, Z)
    return pure_case(lambda: backend.ops.activation_backward(dA, Z, A, act), backend.to_numpy)


def _check_forward(name, dtype, outputs, data):
    expected = reference.FORWARD[name](data["Z"].astype(np.float64))
    reference.assert_close(outputs, [expected], dtype, f"{name} forward")


def _check_backward(name, dtype, outputs, data):
    z, dA = data["Z"].astype(np.float64), data["dA"].astype(np.float64)
    dZ = reference.BACKWARD[name](dA, z, reference.FORWARD[name](z))
    reference.assert_close(outputs, [dZ, dZ.sum(axis=0)], dtype, f"{name} backward")


# ---- dense layer: relu(X @ W + b) forward and backward ----

def _dense_inputs(batch, dtype, n_in, n_out):
    return {"X": normal((batch, n_in), dtype, 0), "W": normal((n_in, n_out), dtype, 1, 0.05),
            "b": normal((n_out,), dtype, 2, 0.1), "dA": normal((batch, n_out), dtype, 3)}


def dense(batch, dtype, n_in=784, n_out=256, baseline=False):
    """relu(X @ W + b) forward and backward; ``baseline`` compares it with the same
    three GEMMs alone (``dense_gemms``): a thread-pool stall between BLAS and the
    fused passes would show as a ratio far above 1."""
    inputs = functools.partial(_dense_inputs, batch, dtype, n_in, n_out)
    return Workload(
        name=f"dense {n_in}->{n_out} fwd+bwd B={batch}", group="dense", dtype=dtype,
        inputs=inputs, fastnn=_dense, torch=peers.dense,
        check=functools.partial(_check_dense, dtype),
        work=3 * 2 * batch * n_in * n_out, unit="FLOP", tolerance=tolerance(dtype),
        baseline=_gemms_name(batch, n_in, n_out) if baseline else None,
    )


def _gemms_name(batch, n_in, n_out):
    return f"dense {n_in}->{n_out} 3 GEMMs B={batch}"


def dense_gemms(batch, dtype, n_in, n_out):
    """The dense workload's three products alone (same inputs): X @ W, X^T @ dA and
    dA @ W^T."""
    inputs = functools.partial(_dense_inputs, batch, dtype, n_in, n_out)
    return Workload(
        name=_gemms_name(batch, n_in, n_out), group="dense", dtype=dtype, inputs=inputs,
        fastnn=_dense_gemms, torch=peers.dense_gemms,
        check=functools.partial(_check_dense_gemms, dtype),
        work=3 * 2 * batch * n_in * n_out, unit="FLOP", tolerance=tolerance(dtype),
    )


def _dense_gemms(backend, data):
    X, W, dA = (backend.asarray(data[k]) for k in ("X", "W", "dA"))
    return pure_case(lambda: dense_products(backend.xp.matmul, X, W, dA), backend.to_numpy)


def _check_dense_gemms(dtype, outputs, data):
    expected = dense_products(np.matmul, *(data[k].astype(np.float64) for k in ("X", "W", "dA")))
    reference.assert_close(outputs, list(expected), dtype, "dense GEMMs")


def _dense(backend, data):
    relu, ops = activations.get("relu"), backend.ops
    X, W, b, dA = (backend.asarray(data[k]) for k in ("X", "W", "b", "dA"))

    def run():
        Z, A = ops.dense_forward(X, W, b, relu)
        dZ, db = ops.activation_backward(dA, Z, A, relu)
        dW, dX = ops.dense_backward(X, W, dZ, True)
        return A, db, dW, dX

    return pure_case(run, backend.to_numpy)


def _check_dense(dtype, outputs, data):
    X, W, b, dA = (data[k].astype(np.float64) for k in ("X", "W", "b", "dA"))
    Z = X @ W + b
    dZ = dA * (Z > 0)
    expected = [np.maximum(Z, 0.0), dZ.sum(axis=0), X.T @ dZ, dZ @ W.T]
    reference.assert_close(outputs, expected, dtype, "dense forward + backward")


# ---- optimizer updates over ~1M parameters ----

def optimizer(name, width, dtype):
    shapes = {"W": (width, width), "b": (width,)}
    n = sum(math.prod(s) for s in shapes.values())
    arrays_touched = {"sgd": 3, "adam": 7}[name]  # p, g read, p written; Adam adds m, v

    def inputs():
        data = {k: normal(s, dtype, i, 0.05) for i, (k, s) in enumerate(shapes.items())}
        data.update({f"g{k}": normal(s, dtype, 10 + i) for i, (k, s) in enumerate(shapes.items())})
        return data

    return Workload(
        name=f"{name} update {n / 1e6:.2f}M params", group="optimizer", dtype=dtype,
        inputs=inputs, fastnn=functools.partial(_optimizer_step, name),
        torch=functools.partial(peers.optimizer_step, name, OPTIMIZER_LR[name]),
        check=functools.partial(_check_update, name, dtype),
        work=arrays_touched * n * np.dtype(dtype).itemsize, unit="B", copy_shape=(n,),
        tolerance=tolerance(dtype),
    )


def _optimizer_step(name, backend, data):
    params = []
    for key in ("W", "b"):
        p = Parameter(key, backend.copy(backend.asarray(data[key])), decay=key == "W")
        p.grad = backend.asarray(data[f"g{key}"])
        params.append(p)
    opt = optimizers.get(name, lr=OPTIMIZER_LR[name])
    return Case(lambda: opt.step(params, backend), lambda: [host(backend, p.value) for p in params])


def _check_update(name, dtype, outputs, data):
    """One step from zero state: SGD p - lr g; Adam p - lr g / (|g| + eps) (m_hat = g)."""
    lr, expected = OPTIMIZER_LR[name], []
    for key in ("W", "b"):
        p, g = data[key].astype(np.float64), data[f"g{key}"].astype(np.float64)
        expected.append(p - lr * (g if name == "sgd" else g / (np.abs(g) + 1e-8)))
    reference.assert_close(outputs, expected, dtype, f"{name} update")


# ---- the MLP 784-256-256-10 training step, and its 8 GEMMs alone ----

def mlp_flops(batch, dims=MLP_DIMS):
    """FLOPs of the 8 GEMMs of one step: 3 forward, 3 dW, and dX for all but layer 1."""
    products = [a * b for a, b in zip(dims[:-1], dims[1:])]
    return 2 * batch * (3 * sum(products) - products[0])


def mlp_model(backend, dtype, seed=0, dims=MLP_DIMS):
    d = dims
    return fastnn.Sequential([Dense(d[0], d[1], "relu"), Dense(d[1], d[2], "relu"),
                              Dense(d[2], d[3], "softmax")], dtype=dtype, seed=seed,
                             backend=backend)


def initial_weights(build, dtype):
    """The initial (W, b) of a model as ``build(backend, dtype)`` makes it, on the host:
    fastnn draws them from the model's seed, so peers start from the same numbers."""
    model = build(backends.load("numpy"), "float64")
    return [p.value.astype(dtype) for p in model.parameters()]


def classification_data(n, dtype, seed=0, n_classes=10, n_features=MLP_DIMS[0]):
    """Gaussian inputs labelled by a random linear teacher (learnable, no download)."""
    X = normal((n, n_features), dtype, seed)
    teacher = np.random.default_rng(seed + 1).standard_normal((n_features, n_classes))
    return X, np.argmax(X @ teacher.astype(dtype), axis=1)


def _mlp_name(dims):
    """'mlp' for the default 784-256-256-10, else 'mlp 784-1024-1024-10'."""
    return "mlp" if tuple(dims) == MLP_DIMS else "mlp " + "-".join(map(str, dims))


def mlp_step(batch, dtype, by_ops=False, dims=MLP_DIMS):
    """One SGD step of the MLP on one batch: as ``fit`` runs it (its ``epoch_runner``,
    here over a one-batch epoch), or ``by_ops``: ``compute_gradients`` then
    ``optimizer.step``, the layer-level API."""
    build = functools.partial(mlp_model, dims=tuple(dims))

    def inputs():
        X, y = classification_data(batch, dtype, n_classes=dims[-1], n_features=dims[0])
        return {"X": X, "y": y, "weights": initial_weights(build, dtype), "dims": tuple(dims)}

    name = _mlp_name(dims)
    return Workload(
        name=f"{name} {'op-by-op ' if by_ops else ''}step B={batch}", group="mlp", dtype=dtype,
        inputs=inputs, fastnn=_mlp_step_by_ops if by_ops else _mlp_step, torch=peers.mlp_step,
        check=_check_training_step, work=mlp_flops(batch, dims), unit="FLOP",
        baseline=f"{name} 8 GEMMs B={batch}", tolerance=tolerance(dtype, 1e-4, 1e-9),
    )


def _mlp_step(backend, data):
    return sgd_step_case(backend, mlp_model(backend, data["X"].dtype.name, dims=data["dims"]),
                         data)


def sgd_step_case(backend, model, data):
    """One full-batch SGD step (lr 0.01) of ``model`` on ``data``'s X and y, run as fit
    runs it; its result: the loss before and after the step, and the parameters."""
    X, Y = model.prepare(data["X"], data["y"])
    model.optimizer = fastnn.SGD(lr=0.01)
    run, losses = epoch_runner(model, X, Y, X.shape[0]), []

    def step():
        losses[:] = [run(None)]

    def result():
        after, _ = model.loss_value(X, Y)
        first = host(backend, losses[0])[0] / X.shape[0]
        return [first, host(backend, after), *(host(backend, p.value)
                                               for p in model.parameters())]

    return Case(step, result)


def _mlp_step_by_ops(backend, data):
    model = mlp_model(backend, data["X"].dtype.name, dims=data["dims"])
    X, Y = model.prepare(data["X"], data["y"])
    opt, params, losses = fastnn.SGD(lr=0.01), model.parameters(), []

    def step():
        loss, _ = model.compute_gradients(X, Y)
        opt.step(params, backend)
        losses[:] = [loss]

    def result():
        after, _ = model.loss_value(X, Y)
        return [host(backend, losses[0]), host(backend, after), *(host(backend, p.value)
                                                                  for p in params)]

    return Case(step, result)


def _check_training_step(outputs, data):
    """The first loss is near chance (ln 10) and the step lowered it."""
    before, after = float(outputs[0]), float(outputs[1])
    assert abs(before - math.log(10)) < 1.0, f"initial loss {before} is far from ln(10)"
    assert after < before, f"the step did not lower the loss ({before} -> {after})"


def mlp_gemms_only(batch, dtype, dims=MLP_DIMS):
    d = dims
    shapes = {"X": (batch, d[0]), "W1": (d[0], d[1]), "W2": (d[1], d[2]), "W3": (d[2], d[3]),
              "H1": (batch, d[1]), "H2": (batch, d[2]), "D1": (batch, d[1]),
              "D2": (batch, d[2]), "D3": (batch, d[3])}

    def inputs():
        return {k: normal(s, dtype, i) for i, (k, s) in enumerate(shapes.items())}

    return Workload(
        name=f"{_mlp_name(dims)} 8 GEMMs B={batch}", group="mlp", dtype=dtype, inputs=inputs,
        fastnn=_gemms, torch=peers.gemms, check=functools.partial(_check_gemms, dtype),
        work=mlp_flops(batch, dims), unit="FLOP", tolerance=tolerance(dtype),
    )


def _gemms(backend, data):
    arrays = [backend.asarray(data[k]) for k in GEMM_INPUTS]
    return pure_case(lambda: mlp_gemms(backend.xp.matmul, *arrays), backend.to_numpy)


def _check_gemms(dtype, outputs, data):
    expected = mlp_gemms(np.matmul, *(data[k].astype(np.float64) for k in GEMM_INPUTS))
    reference.assert_close(outputs, list(expected), dtype, "MLP GEMMs")


# ---- the planar 2-4-1 tanh/sigmoid net, full-batch gradient descent ----

def planar_model(backend, dtype):
    return fastnn.from_layer_dims([2, 4, 1], "tanh", "sigmoid", init=initializers.normal(0.01),
                                  seed=2, dtype=dtype, backend=backend)


def planar(iterations, dtype):
    def inputs():
        X, y = fastnn.datasets.planar()
        return {"X": X.astype(dtype), "y": y, "iterations": iterations,
                "weights": initial_weights(planar_model, dtype)}

    # accuracy after 1,000 iterations is ~0.85 and after 10,000 ~0.91 (course: ~0.90)
    check = functools.partial(_check_accuracy, 0.8 if iterations < 10_000 else 0.85)
    return Workload(
        name=f"planar 2-4-1 x{iterations} it", group="planar", dtype=dtype, inputs=inputs,
        fastnn=_planar, torch=peers.planar, check=check, work=iterations, unit="iterations",
        tolerance=tolerance(dtype, 1e-2, 1e-6),  # 10,000 steps amplify rounding
    )


def _planar(backend, data):
    trained = []

    def step():
        model = planar_model(backend, data["X"].dtype.name)
        model.fit(data["X"], data["y"], epochs=data["iterations"], lr=1.2)
        trained[:] = [model]

    def result():
        model = trained[0]
        scores = model.evaluate(data["X"], data["y"])
        return [np.array([scores["loss"], scores["accuracy"]]),
                *(host(backend, p.value) for p in model.parameters())]

    return Case(step, result)


def _check_accuracy(minimum, outputs, data):
    loss, accuracy = outputs[0]
    assert np.isfinite(loss), f"the loss is {loss}"
    assert accuracy >= minimum, f"training accuracy {accuracy:.3f} is below {minimum}"


# ---- one training epoch of the MLP over a 60,000 x 784 synthetic dataset ----

def epoch(n, dtype, batch=128):
    def inputs():
        X, y = classification_data(n, dtype, seed=7)
        start = mlp_model(backends.load("numpy"), "float64").evaluate(X, y)["loss"]
        return {"X": X, "y": y, "batch": batch, "weights": initial_weights(mlp_model, dtype),
                "initial_loss": start}

    return Workload(
        name=f"epoch {n}x784 B={batch}", group="epoch", dtype=dtype, inputs=inputs,
        fastnn=_epoch, torch=peers.epoch, check=_check_epoch,
        work=n, unit="samples",
        tolerance=0.1,  # PyTorch shuffles in another order; fastnn backends agree closely
    )


def _epoch(backend, data):
    """``fit`` for one epoch on data already on the device (as users keep it between
    calls); each call continues training the same model."""
    model = mlp_model(backend, data["X"].dtype.name)
    X, y = backend.asarray(data["X"]), backend.asarray(data["y"])
    history = []

    def step():
        history[:] = [model.fit(X, y, epochs=1, batch_size=data["batch"], lr=0.05, seed=0)]

    def result():
        return [np.array([history[0]["loss"][0], history[0]["accuracy"][0]])]

    return Case(step, result)


def _check_epoch(outputs, data):
    """The epoch's mean loss is finite and below the initial weights' loss."""
    loss, start = outputs[0][0], data["initial_loss"]
    assert np.isfinite(loss) and loss < start, f"epoch loss {loss} is not below {start}"

