"""Choosing the CuPy backend: what it says when CuPy, a GPU or array-api-compat is
missing, and the TF32 switch. Runs everywhere (the GPU itself is faked here)."""

import sys
import types
import warnings

import pytest

from fastnn.backends import cupy_backend
from fastnn.errors import BackendUnavailable


def fake_environment(monkeypatch, installed, gpu):
    """Pretend which packages are installed and whether CuPy sees a GPU."""
    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(is_available=lambda: gpu))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(cupy_backend.importlib.util, "find_spec",
                        lambda name: object() if name in installed else None)


def test_missing_cupy_names_it_and_the_install_hint(monkeypatch):
    fake_environment(monkeypatch, installed=(), gpu=False)
    with pytest.raises(BackendUnavailable, match=r"needs CuPy, which is not installed here; "
                                                 r"install it with: pip install 'fastnn\[cuda12\]'"
                                                 r" \(CUDA 12\) or 'fastnn\[cuda13\]'"):
        cupy_backend.create()


def test_no_gpu_says_so(monkeypatch):
    fake_environment(monkeypatch, installed=("cupy", "array_api_compat"), gpu=False)
    with pytest.raises(BackendUnavailable, match=r"needs an NVIDIA GPU, but CuPy finds no "
                                                 r"usable CUDA device here"):
        cupy_backend.create()


def test_missing_array_api_compat_names_it(monkeypatch):
    fake_environment(monkeypatch, installed=("cupy",), gpu=True)
    with pytest.raises(BackendUnavailable, match=r"needs array-api-compat, which is not "
                                                 r"installed here; install it with: pip install"):
        cupy_backend.create()


@pytest.mark.parametrize("value, expected", [(None, False), ("", False), ("0", False),
                                             ("1", True), (" TRUE ", True), ("off", False)])
def test_tf32_switch_is_read_from_the_environment(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv(cupy_backend.TF32_ENV, raising=False)
    else:
        monkeypatch.setenv(cupy_backend.TF32_ENV, value)
    assert cupy_backend._env_flag(cupy_backend.TF32_ENV) is expected


def test_bad_tf32_value_is_refused(monkeypatch):
    monkeypatch.setenv(cupy_backend.TF32_ENV, "maybe")
    with pytest.raises(ValueError, match="FASTNN_TF32='maybe' must be 1 or 0"):
        cupy_backend._env_flag(cupy_backend.TF32_ENV)


def test_the_synchronize_guard_works_without_cupy_14s_warning():
    """CuPy 14 warns on every use of cupyx.allow_synchronize, and the suite turns
    warnings into errors; the GPU tests' guard silences that one warning only. Needs
    CuPy installed, not a GPU."""
    pytest.importorskip("cupyx", reason="CuPy is not installed here (pip install "
                                        "'fastnn[cuda13]')")
    from cupy._core import syncdetect
    from cupy_sync import no_synchronize

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with no_synchronize():
            with pytest.raises(syncdetect.DeviceSynchronized):
                syncdetect._declare_synchronize()  # what CuPy calls before waiting
            with pytest.raises(UserWarning, match="other warnings still count"):
                warnings.warn("other warnings still count", UserWarning, stacklevel=1)
    assert syncdetect._is_allowed()
