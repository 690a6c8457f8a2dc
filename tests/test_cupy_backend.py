"""Choosing the CuPy backend: what it says when CuPy, a GPU or array-api-compat is
missing, and the TF32 switch. Runs everywhere (the GPU itself is faked here)."""

import contextlib
import re
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


@pytest.mark.parametrize("linalg, error", [
    (None, "ModuleNotFoundError"),  # no cupy._core._routines_linalg at all
    (types.SimpleNamespace(set_compute_type=print), "AttributeError"),  # without the names
])
def test_a_cupy_without_the_compute_type_setting_is_unavailable_with_the_reason(
        monkeypatch, linalg, error):
    """The TF32 switch that creating the backend sets is a private CuPy module: where a
    CuPy lacks it, the backend is unavailable (with why), and availability() says so
    instead of raising."""
    from fastnn import backends

    fake_environment(monkeypatch, installed=("cupy", "array_api_compat"), gpu=True)
    cupy = sys.modules["cupy"]
    cupy.__version__, cupy.ndarray, cupy.float32 = "15.0.0", type("ndarray", (), {}), "f4"
    if linalg is not None:
        monkeypatch.setitem(sys.modules, "cupy._core", types.SimpleNamespace(
            _routines_linalg=linalg))
    compat = types.ModuleType("array_api_compat")
    compat.cupy = types.ModuleType("array_api_compat.cupy")
    monkeypatch.setitem(sys.modules, "array_api_compat", compat)
    monkeypatch.setitem(sys.modules, "array_api_compat.cupy", compat.cupy)
    monkeypatch.setattr(backends, "_instances", {})
    reason = (rf"the 'cupy' backend cannot start: CuPy 15\.0\.0 lacks the float32 matmul "
              rf"setting .*\(cupy._core._routines_linalg: {error}: .*"
              rf"pip install 'fastnn\[cuda12\]'")
    with pytest.raises(BackendUnavailable, match=reason):
        cupy_backend.create()
    report = backends.availability()
    assert report["numpy"] is None
    assert re.match(reason, report["cupy"]), report["cupy"]


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


@pytest.mark.parametrize("value, expected", [(None, True), ("", True), ("0", False),
                                             ("1", True), ("off", False)])
def test_cuda_graphs_are_on_unless_the_environment_says_otherwise(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv(cupy_backend.GRAPHS_ENV, raising=False)
    else:
        monkeypatch.setenv(cupy_backend.GRAPHS_ENV, value)
    assert cupy_backend._env_flag(cupy_backend.GRAPHS_ENV, default=True) is expected


class FakeCuda:
    """CuPy's stream capture API, logging what the backend does with it."""

    def __init__(self, end_error=None):
        self.log, self.allocator, self.end_error = [], None, end_error
        cuda = self

        class Stream:
            def __init__(self, non_blocking=False):
                cuda.log.append(("stream", non_blocking))
                self.capturing = False

            def __enter__(self):
                cuda.log.append("enter")

            def __exit__(self, *exc):
                cuda.log.append("exit")

            def begin_capture(self):
                cuda.log.append("begin")
                self.capturing = True

            def end_capture(self):
                cuda.log.append("end")
                self.capturing = False
                if cuda.end_error:
                    raise cuda.end_error
                return types.SimpleNamespace(launch=lambda: cuda.log.append("launch"))

        self.Stream = Stream

    def get_allocator(self):
        return lambda size: ("block", size)

    @contextlib.contextmanager
    def using_allocator(self, allocate):
        self.allocator = allocate
        yield
        self.allocator = None


def fake_backend(cuda, captures=True):
    return types.SimpleNamespace(captures=captures, cupy=types.SimpleNamespace(cuda=cuda),
                                 recording_stream=None)


def test_capture_records_on_its_own_stream_and_holds_its_memory():
    cuda = FakeCuda()

    def step():
        cuda.log.append("step")
        freed = cuda.allocator(8)  # a temporary the step lets go of
        del freed
        return cuda.allocator(16)

    backend = fake_backend(cuda)
    graph = cupy_backend.CupyBackend.capture(backend, step)
    assert cuda.log == [("stream", True), "enter", "begin", "step", "end", "exit"]
    assert graph.output == ("block", 16)
    assert graph.held == [("block", 8), ("block", 16)]  # held while the graph lives
    graph.replay()
    assert cuda.log[-1] == "launch" and cuda.allocator is None
    cupy_backend.CupyBackend.capture(backend, step)  # the next recording, same stream
    assert cuda.log.count(("stream", True)) == 1


def test_a_failing_step_ends_the_capture_and_its_error_is_raised():
    cuda = FakeCuda(end_error=RuntimeError("capture invalidated"))

    def step():
        raise ZeroDivisionError("in the step")

    with pytest.raises(ZeroDivisionError, match="in the step"):
        cupy_backend.CupyBackend.capture(fake_backend(cuda), step)
    assert cuda.log[-2:] == ["end", "exit"]


def test_a_broken_capture_says_how_to_train_without_graphs():
    cuda = FakeCuda(end_error=RuntimeError("cudaErrorStreamCaptureInvalidated"))
    with pytest.raises(RuntimeError, match=r"recording a training step as a CUDA graph failed "
                                           r"\(cudaErrorStreamCaptureInvalidated\).*Set "
                                           r"FASTNN_CUDA_GRAPHS=0"):
        cupy_backend.CupyBackend.capture(fake_backend(cuda), lambda: None)


def test_no_capture_when_graphs_are_off():
    cuda = FakeCuda()
    assert cupy_backend.CupyBackend.capture(fake_backend(cuda, captures=False), list) is None
    assert cuda.log == []


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
