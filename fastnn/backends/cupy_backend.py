"""The CuPy backend: the same models on an NVIDIA GPU.

``xp`` is CuPy through array-api-compat's standard namespace (plain ``cupy.ndarray``
arrays); matmuls go to cuBLAS and the hot-path ops are the fused kernels of
``fastnn.kernels.cuda.ops``, compiled from one CUDA source by NVRTC on first use.
Parameters, optimizer state and the training RNG live on the device; the only
host traffic in ``fit`` is one read of the loss and metric sums per epoch.

TF32 tensor-core matmuls are off by default, so float32 results match the NumPy
reference; ``FASTNN_TF32=1`` (read when the backend is made) or
``backend.set_tf32(True)`` allows them for speed. The setting is CuPy's float32
compute type, which is process-wide.

Small models: ``fit`` records one epoch of training steps as a CUDA graph and replays
it (``capture``, driven by ``fastnn.replay``), so an epoch costs one launch instead
of a few dozen tiny ones. ``FASTNN_CUDA_GRAPHS=0`` (read when the backend is made) or
``backend.captures = False`` turns this off.
"""

import importlib.util
import os

from fastnn.backends.base import Backend
from fastnn.errors import BackendUnavailable
from fastnn.kernels.cuda import ops as cupy_ops
from fastnn.kernels.cuda import source as cupy_source
from fastnn.ops import Ops

INSTALL_HINT = "pip install 'fastnn[cuda12]' (CUDA 12) or 'fastnn[cuda13]' (CUDA 13)"
TF32_ENV = "FASTNN_TF32"
GRAPHS_ENV = "FASTNN_CUDA_GRAPHS"


class RawModuleLauncher(cupy_ops.Launcher):
    """Launches kernel instances from one cupy.RawModule, compiled on first use
    (CuPy caches the compiled module on disk, in ~/.cupy/kernel_cache)."""

    description = "CuPy"

    def __init__(self, cupy):
        self.cupy = cupy
        self.array_type = cupy.ndarray
        self.module = None

    def run(self, instance, blocks, threads, args):
        if self.module is None:
            self.module = self.cupy.RawModule(
                code=cupy_source.SOURCE, options=cupy_source.OPTIONS,
                name_expressions=cupy_source.instances(),
            )
        self.module.get_function(instance)((blocks,), (threads,), tuple(args))


class CupyBackend(Backend):
    name = "cupy"

    def __init__(self, cupy, xp, tf32=None):
        launcher = RawModuleLauncher(cupy)
        super().__init__(xp, ops=Ops(xp, **cupy_ops.overrides(xp, launcher)))
        self.cupy = cupy
        self.set_tf32(_env_flag(TF32_ENV) if tf32 is None else tf32)
        self.captures = _env_flag(GRAPHS_ENV, default=True)
        self.recording_stream = None  # made on first use, kept: see capture

    def is_array(self, x):
        return isinstance(x, self.cupy.ndarray)

    def _from_host(self, host, dtype):
        if dtype is not None:
            host = host.astype(dtype, copy=False)  # cast before the copy: fewer bytes
        return self.cupy.asarray(host, order="C")

    def _to_host(self, x):
        return self.cupy.asnumpy(x) if self.is_array(x) else super()._to_host(x)

    def synchronize(self):
        self.cupy.cuda.Device().synchronize()

    def set_tf32(self, enabled):
        """Allow (True) or forbid (False) TF32 tensor cores in float32 matmuls."""
        linalg = _compute_type_setting(self.cupy)
        kind = linalg.COMPUTE_TYPE_TF32 if enabled else linalg.COMPUTE_TYPE_DEFAULT
        linalg.set_compute_type(self.cupy.float32, kind)
        self.tf32 = bool(enabled)

    def capture(self, step):
        """``step()`` recorded as a CUDA graph (see ``Backend.capture``), or None when
        ``captures`` is off.

        It is recorded on a stream of its own, as CuPy requires (not the legacy default
        stream), in the relaxed capture mode (CuPy's default: its memory pool may call
        cudaMalloc meanwhile). The graph holds every block of memory allocated while it
        was recorded, freed by the step or not, so none of them is handed to another
        array that a replay would then overwrite. CuPy's pool keeps freed blocks per
        stream, so one recording stream serves every recording: the blocks of a graph
        that is gone serve the next one. Replays run on the current stream, in order
        with the work around them."""
        if not self.captures:
            return None
        cuda, held = self.cupy.cuda, []
        allocate = cuda.get_allocator()

        def hold(size):
            memory = allocate(size)
            held.append(memory)
            return memory

        if self.recording_stream is None:
            self.recording_stream = cuda.Stream(non_blocking=True)
        stream = self.recording_stream
        with stream, cuda.using_allocator(hold):
            stream.begin_capture()
            try:
                output = step()
            except BaseException:
                _end_capture_quietly(stream)
                raise
            try:
                graph = stream.end_capture()
            except Exception as error:  # an operation in the step broke the capture
                raise RuntimeError(
                    f"recording a training step as a CUDA graph failed ({error}); "
                    f"something in the step waits for the GPU or copies from the host. "
                    f"Set {GRAPHS_ENV}=0 to train without CUDA graphs"
                ) from error
        return CudaGraph(graph, output, held)


class CudaGraph:
    """A recorded step: ``replay()`` launches it on the current stream; ``output`` is
    what the step returned (its arrays are rewritten by each replay)."""

    def __init__(self, graph, output, held):
        self.graph, self.output = graph, output
        self.held = held  # the memory allocated while it was recorded, alive with it

    def replay(self):
        self.graph.launch()


def _compute_type_setting(cupy):
    """CuPy's float32 matmul compute-type setting, a private module
    (``cupy._core._routines_linalg``), or BackendUnavailable where this CuPy lacks it
    (another CuPy major version may move it): the backend cannot promise float32
    matmuls without TF32, so it does not start."""
    try:
        from cupy._core import _routines_linalg as linalg

        for name in ("set_compute_type", "COMPUTE_TYPE_TF32", "COMPUTE_TYPE_DEFAULT"):
            getattr(linalg, name)
    except (ImportError, AttributeError) as error:
        version = getattr(cupy, "__version__", "of unknown version")
        raise BackendUnavailable(
            f"the 'cupy' backend cannot start: CuPy {version} lacks the float32 matmul "
            f"setting fastnn uses to keep TF32 off (cupy._core._routines_linalg: "
            f"{type(error).__name__}: {error}); fastnn is tested with CuPy 14: {INSTALL_HINT}"
        ) from error
    return linalg


def _end_capture_quietly(stream):
    """End a capture that a failing step left open (its graph is not wanted)."""
    try:
        stream.end_capture()
    except Exception:  # already invalid: the step's own error is the one to report
        pass


def _env_flag(name, default=False):
    value = os.environ.get(name, "").strip().lower()
    if value == "":
        return default
    if value in ("0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"{name}={os.environ[name]!r} must be 1 or 0")


def create():
    """The CuPy backend, or BackendUnavailable naming what is missing here."""
    missing = [p for p in ("cupy", "array_api_compat") if importlib.util.find_spec(p) is None]
    if "cupy" in missing:
        raise BackendUnavailable(
            f"the 'cupy' backend needs CuPy, which is not installed here; install it with: "
            f"{INSTALL_HINT}"
        )
    try:
        import cupy
    except ImportError as error:  # installed but broken (e.g. for another CUDA version)
        raise BackendUnavailable(
            f"the 'cupy' backend cannot start: importing CuPy failed ({error}); reinstall "
            f"it with: {INSTALL_HINT}"
        ) from error
    if not cupy.cuda.is_available():
        raise BackendUnavailable(
            "the 'cupy' backend needs an NVIDIA GPU, but CuPy finds no usable CUDA device "
            "here (cupy.cuda.is_available() is False); use FASTNN_BACKEND=numpy on this machine"
        )
    if missing:
        raise BackendUnavailable(
            f"the 'cupy' backend needs array-api-compat, which is not installed here; "
            f"install it with: {INSTALL_HINT}"
        )
    try:
        import array_api_compat.cupy as xp
    except ImportError as error:
        raise BackendUnavailable(
            f"the 'cupy' backend cannot start: array-api-compat could not wrap this CuPy "
            f"({error}); reinstall both with: {INSTALL_HINT}"
        ) from error
    return CupyBackend(cupy, xp)
