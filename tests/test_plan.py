"""Fused training chosen by plain data: ``fastnn.plan.describe`` gives a frozen plan for
built-in classes used as they are (by exact type) and None for anything else; backends
never import the model's layers, optimizers or training steps; and after ``fit`` every
parameter's ``grad`` is its last step's gradient on every backend."""

import ast
import dataclasses
import pathlib

import numpy as np
import pytest
from conftest import host

import fastnn
from fastnn import (
    Dense,
    Dropout,
    Sequential,
    activations,
    backends,
    datasets,
    losses,
    ops,
    optimizers,
)
from fastnn.callbacks import Callback
from fastnn.plan import DenseLayerPlan, DensePlan, describe

PACKAGE = pathlib.Path(fastnn.__file__).parent
# the backends, the kernel layer (fastnn.kernels, the checkout's kernels/) and the
# activation specs the kernels are generated from
LOWER = {"fastnn.backends": PACKAGE / "backends", "fastnn.kernels": PACKAGE / "kernels",
         "fastnn.activations": PACKAGE / "activations",
         "fastnn.kernels.numba": PACKAGE / "kernels" / "numba",
         "fastnn.kernels.cuda": PACKAGE / "kernels" / "cuda"}
LOWER_FILES = [(package, path) for package, folder in LOWER.items()
               for path in sorted(folder.glob("*.py"))]
MODEL_SIDE = ("fastnn.layers", "fastnn.batchnorm", "fastnn.conv", "fastnn.pooling",
              "fastnn.optimizers", "fastnn.steps", "fastnn.plan", "fastnn.training",
              "fastnn.model")


def _imports(path, package="fastnn.backends"):
    """Every module name ``path`` imports (relative imports resolved in ``package``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1])
            base = base if node.level else ""
            module = ".".join(part for part in (base, node.module) if part)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("package, path", LOWER_FILES,
                         ids=[f"{package}.{path.stem}" for package, path in LOWER_FILES])
def test_no_backend_or_kernel_module_imports_the_model_side(package, path):
    imported = _imports(path, package)
    assert imported or "import " not in path.read_text(), "no imports parsed"
    wrong = sorted(name for name in imported
                   if any(name == side or name.startswith(side + ".") for side in MODEL_SIDE))
    assert not wrong, f"{path.name} imports {wrong}"


def test_the_import_check_sees_every_form_of_import(tmp_path):
    source = tmp_path / "example.py"
    source.write_text("import fastnn.steps\nfrom fastnn import layers\n"
                      "from fastnn.optimizers import SGD\nfrom . import ops\n"
                      "from ..activation_codes import CODES\n")
    assert {"fastnn.steps", "fastnn.layers", "fastnn.optimizers.SGD",
            "fastnn.kernels.numba.ops", "fastnn.kernels.activation_codes.CODES"} <= _imports(
        source, "fastnn.kernels.numba")


def test_the_ops_table_needs_no_model():
    path = pathlib.Path(fastnn.__file__).parent / "ops.py"
    assert not set(MODEL_SIDE) & _imports(path)
    assert "epoch_runner" not in ops.NAMES and "steps" not in ops.NAMES
    assert not hasattr(backends.load("numpy").ops, "epoch_runner")


def _mlp(hidden="tanh", loss="auto", output="sigmoid", n_out=1, **kwargs):
    return Sequential([Dense(2, 3, hidden), Dense(3, n_out, output)], loss=loss, seed=0,
                      dtype="float64", **kwargs)


def test_describe_gives_frozen_plain_data():
    model = _mlp("leaky_relu", backend="numpy")
    model.optimizer = optimizers.Adam(lr=0.01, weight_decay=1e-3)
    X = np.zeros((10, 2))
    plan = describe(model, X, 4)
    assert plan == DensePlan(
        layers=(DenseLayerPlan(2, 3, "leaky_relu", 0.01, True),
                DenseLayerPlan(3, 1, "sigmoid", 0.0, True)),
        loss="binary_crossentropy", loss_settings=(), optimizer="adam",
        settings=(("beta1", 0.9), ("beta2", 0.999), ("eps", 1e-8), ("lr", 0.01),
                  ("weight_decay", 1e-3)),
        dtype="float64", batch=4, samples=10)
    assert plan.steps_per_epoch == 3 and hash(plan) == hash(describe(model, X, 4))
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.batch = 5
    softplus = _mlp("softplus", backend="numpy")
    softplus.optimizer = optimizers.SGD()
    assert describe(softplus, X, 4).layers[0].derivative_from_output is False


class _OwnSigmoid(activations.Sigmoid):
    """A user's activation that keeps the built-in's name."""


class _OwnSGD(optimizers.SGD):
    pass


class _OwnLoss(losses.BinaryCrossEntropy):
    pass


class _OwnDense(Dense):
    pass


@pytest.mark.parametrize("why", ["activation subclass", "output subclass", "optimizer subclass",
                                 "loss subclass", "layer subclass", "dropout", "clip_norm",
                                 "clip_value"])
def test_anything_but_builtin_classes_as_they_are_has_no_plan(why):
    layers = [Dense(2, 3, "tanh"), Dense(3, 1, "sigmoid")]
    loss, optimizer, clip = "auto", optimizers.SGD(), {}
    if why == "activation subclass":
        layers[0] = Dense(2, 3, _OwnSigmoid())
    elif why == "output subclass":
        layers[1] = Dense(3, 1, _OwnSigmoid())
    elif why == "optimizer subclass":
        optimizer = _OwnSGD()
    elif why == "loss subclass":
        loss = _OwnLoss()
    elif why == "layer subclass":
        layers[0] = _OwnDense(2, 3, "tanh")
    elif why == "dropout":
        layers.insert(1, Dropout(0.1))
    else:
        clip = {why: 1.0}
    model = Sequential(layers, loss=loss, seed=0, backend="numpy")
    model.optimizer = optimizer
    assert describe(model, np.zeros((4, 2)), 4, **clip) is None
    builtin = Sequential([Dense(2, 3, "tanh"), Dense(3, 1, "sigmoid")], seed=0, backend="numpy")
    builtin.optimizer = optimizers.SGD()
    assert describe(builtin, np.zeros((4, 2)), 4) is not None


def _wide(backend_name=None, seed=0):
    """A 20-40-5 softmax MLP: layers too big for Numba's loop kernel, so plain SGD runs
    on its BLAS kernel with the update folded into the weight-gradient product."""
    return Sequential([Dense(20, 40, "relu"), Dense(40, 5, "softmax")], seed=seed,
                      dtype="float64", backend=backend_name)


def _data():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((90, 20))
    return X, np.argmax(X @ rng.standard_normal((20, 5)), axis=1)


def test_after_fit_each_grad_is_the_last_steps_gradient(backend):
    X, y = _data()
    trained = _wide()
    trained.fit(X, y, epochs=3, lr=0.1, optimizer="sgd")  # full batch: one step an epoch
    before_last = _wide()
    before_last.fit(X, y, epochs=2, lr=0.1, optimizer="sgd")
    before_last.compute_gradients(*before_last.prepare(X, y))
    for p, q in zip(trained.parameters(), before_last.parameters()):
        assert p.grad is not None, p
        np.testing.assert_allclose(host(backend, p.grad), host(backend, q.grad),
                                   rtol=1e-9, atol=1e-12)


class _Grads(Callback):
    """Keeps a copy of every parameter's ``grad`` at the end of each epoch (a copy: a
    runner may write the next step's gradients into the same arrays)."""

    def on_train_begin(self, logs):
        self.seen = []

    def on_epoch_end(self, epoch, logs):
        self.seen.append([host(self.model.backend, p.grad).copy()
                          for p in self.model.parameters()])


@pytest.mark.parametrize("batch_size", [32, None])
def test_grads_agree_with_the_numpy_steps_after_fit_and_in_callbacks(backend, batch_size):
    X, y = _data()
    results = []
    for name in (backend, "numpy"):
        model, grads = _wide(name), _Grads()
        model.fit(X, y, epochs=3, lr=0.1, optimizer="sgd", batch_size=batch_size, seed=4,
                  callbacks=[grads])
        no_callback = _wide(name)
        no_callback.fit(X, y, epochs=3, lr=0.1, optimizer="sgd", batch_size=batch_size,
                        seed=4)
        results.append((grads.seen, [host(model.backend, p.grad) for p in model.parameters()],
                        [host(model.backend, p.grad) for p in no_callback.parameters()]))
    (seen, last, last_chunked), (ref_seen, ref_last, _) = results
    assert len(seen) == len(ref_seen) == 3
    for ours, ref in zip([*seen, last, last_chunked], [*ref_seen, ref_last, ref_last]):
        for a, b in zip(ours, ref):
            np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-10)


def test_fused_runners_come_only_from_backends_that_offer_them():
    X, y = datasets.planar()
    model = _mlp(backend="numpy")
    model.optimizer = optimizers.SGD()
    Xd, Yd = model.prepare(X, y)
    plan = describe(model, Xd, 400)
    assert model.backend.fused_epoch(plan, Xd, Yd, model.parameters(), model.optimizer) is None
