"""Choosing a backend: FASTNN_BACKEND at import, set/use/get in code, and clear errors for
unknown names and for backends that cannot run here. Never a silent fallback."""

import importlib.util
import os
import subprocess
import sys

import pytest

import fastnn
from fastnn import backends
from fastnn.errors import BackendUnavailable


def import_with(value, hide=None):
    """Import fastnn in a fresh interpreter with FASTNN_BACKEND=value (None: unset),
    with the package ``hide`` made unimportable as if it were not installed."""
    env = {k: v for k, v in os.environ.items() if k != "FASTNN_BACKEND"}
    if value is not None:
        env["FASTNN_BACKEND"] = value
    code = "import fastnn; print(fastnn.get_backend().name)"
    if hide:
        code = f"import sys; sys.modules[{hide!r}] = None; {code}"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


@pytest.mark.parametrize("value", [None, "", "   ", "numpy", " NumPy ", "NUMPY\n"])
def test_env_selects_numpy(value):
    run = import_with(value)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "numpy"


def test_unknown_env_value_fails_at_import_and_lists_names():
    run = import_with("tensorflow")
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert last == ("ValueError: FASTNN_BACKEND='tensorflow' is not a fastnn backend; "
                    "valid names: numpy, numba, cupy")


@pytest.mark.parametrize("name, package, hint", [
    ("numba", "numba", "pip install 'fastnn[numba]'"),
    ("cupy", "cupy", "fastnn[cuda12]"),
])
def test_backend_without_its_package_fails_at_import_with_install_hint(name, package, hint):
    run = import_with(name.upper(), hide=package)
    assert run.returncode != 0
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith(f"fastnn.errors.BackendUnavailable: the '{name}' backend")
    assert "not installed here" in last and hint in last


def test_numba_backend_selected_by_environment():
    if importlib.util.find_spec("numba") is None:
        pytest.skip("numba is not installed here: pip install 'fastnn[numba]'")
    run = import_with("numba")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "numba"


def test_set_get_and_use_backend():
    numpy_backend = backends.load("numpy")
    assert fastnn.set_backend(" NumPy ") is numpy_backend is fastnn.get_backend()
    assert numpy_backend.name == "numpy" and numpy_backend.xp.__name__ == "numpy"


def test_use_backend_restores_even_after_an_error(strict):
    before = fastnn.get_backend()
    with pytest.raises(RuntimeError, match="boom"):
        with fastnn.use_backend(strict) as chosen:
            assert chosen is strict and fastnn.get_backend() is strict
            model = fastnn.from_layer_dims([2, 3, 1], seed=0)
            assert model.backend is strict
            raise RuntimeError("boom")
    assert fastnn.get_backend() is before


def test_unknown_and_unavailable_names_in_code():
    with pytest.raises(ValueError, match="backend='jax' is not a fastnn backend; valid names: "
                                         "numpy, numba, cupy"):
        fastnn.set_backend("jax")
    before = fastnn.get_backend()
    for name in ("numba", "cupy"):
        try:
            backends.load(name)
        except BackendUnavailable as error:
            with pytest.raises(BackendUnavailable, match=str(error)[:30]):
                fastnn.set_backend(name)
            assert fastnn.get_backend() is before  # no half-switch, no fallback
            model = fastnn.from_layer_dims([2, 3, 1], seed=0)
            with pytest.raises(BackendUnavailable):
                model.to(name)
            assert model.backend is before


def test_availability_report():
    report = fastnn.available_backends()
    assert list(report) == ["numpy", "numba", "cupy"] and report["numpy"] is None
    for name in ("numba", "cupy"):
        assert report[name] is None or f"the '{name}' backend" in report[name]


def test_ops_table_lists_every_op_and_takes_overrides():
    from fastnn.ops import NAMES, Ops

    np_ops = backends.load("numpy").ops
    assert set(NAMES) <= set(vars(np_ops)) and np_ops.overridden == ()

    def fake(*args):
        return "fused"

    ops = Ops(backends.load("numpy").xp, sgd_update=fake)
    assert ops.sgd_update() == "fused" and ops.overridden == ("sgd_update",)
    with pytest.raises(ValueError, match="unknown ops"):
        Ops(backends.load("numpy").xp, fused_everything=fake)
