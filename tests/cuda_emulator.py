"""Run the CuPy backend's CUDA kernels on the CPU, to test them without a GPU.

The kernels in ``fastnn.kernels.cuda.source`` keep every thread independent, so
compiling the same source as C++ (with ``__global__``/``__device__`` defined away and
``threadIdx``/``blockIdx`` as globals) and calling each kernel once per (block,
thread) in a loop computes exactly what the GPU computes, up to the last bits of
exp/tanh/log. ``EmulatedCudaBackend`` is a NumPy backend whose ops table is the
CuPy backend's fused ops (the same launch plans) driving these CPU kernels.
"""

import ctypes
import shutil
import subprocess

import numpy as np

from fastnn.backends.numpy_backend import NumpyBackend
from fastnn.kernels.cuda import ops as cupy_ops
from fastnn.kernels.cuda import source as cupy_source
from fastnn.ops import Ops

HOST_PRELUDE = r"""
#include <math.h>
#define __global__
#define __device__
#define __forceinline__ inline
struct Dim3 { unsigned int x, y, z; };
static Dim3 threadIdx, blockIdx, blockDim, gridDim;
"""
CTYPES = {"float": ctypes.c_float, "double": ctypes.c_double, "long long": ctypes.c_longlong,
          "int": ctypes.c_int}


def compiler():
    """The C++ compiler to use, or None."""
    return shutil.which("g++") or shutil.which("c++")


def host_source():
    """The kernels' CUDA source plus one C launcher per instance: launch_<i>(blocks,
    threads, args...) runs the kernel for every block and thread in turn."""
    parts = [HOST_PRELUDE, cupy_source.SOURCE]
    for i, inst in enumerate(cupy_source.instances()):
        name, _, params = cupy_source.signature(inst)
        names = ", ".join(p for _, p in cupy_source.parameters(name))
        parts.append(
            f'extern "C" void launch_{i}(unsigned int grid_, unsigned int block_, {params}) {{\n'
            f"  gridDim.x = grid_; blockDim.x = block_;\n"
            f"  for (unsigned int bi_ = 0; bi_ < grid_; ++bi_)\n"
            f"    for (unsigned int ti_ = 0; ti_ < block_; ++ti_) {{\n"
            f"      blockIdx.x = bi_; threadIdx.x = ti_; {inst}({names});\n"
            f"    }}\n}}\n"
        )
    return "\n".join(parts)


def build(directory):
    """Compile the host version of the kernels into ``directory``; returns the library."""
    src, lib = directory / "kernels_on_cpu.cpp", directory / "kernels_on_cpu.so"
    src.write_text(host_source())
    run = subprocess.run(
        [compiler(), "-std=c++14", "-O1", "-ffp-contract=off", "-shared", "-fPIC",
         str(src), "-o", str(lib)],
        capture_output=True, text=True,
    )
    if run.returncode != 0:
        raise RuntimeError(f"compiling the kernels for the CPU failed:\n{run.stderr}")
    return ctypes.CDLL(str(lib))


class CpuLauncher(cupy_ops.Launcher):
    """Runs kernel instances from the CPU library on NumPy arrays."""

    array_type = np.ndarray
    description = "NumPy"

    def __init__(self, library):
        self.functions = {}
        for i, inst in enumerate(cupy_source.instances()):
            name, ctype, _ = cupy_source.signature(inst)
            function = getattr(library, f"launch_{i}")
            function.restype = None
            function.argtypes = [ctypes.c_uint, ctypes.c_uint] + [
                ctypes.c_void_p if t.endswith("*") else CTYPES[t.replace("T", ctype)]
                for t, _ in cupy_source.parameters(name)
            ]
            self.functions[inst] = function
        self.launches = []  # instance names, in order, for tests that check the plan

    def run(self, instance, blocks, threads, args):
        for a in args:
            if isinstance(a, np.ndarray):
                assert a.flags.c_contiguous, f"{instance}: a non-contiguous array reached a kernel"
        self.launches.append(instance)
        values = [a.ctypes.data if isinstance(a, np.ndarray) else a.item() for a in args]
        self.functions[instance](blocks, threads, *values)


class EmulatedCudaBackend(NumpyBackend):
    """NumPy arrays, the CuPy backend's fused ops, the CUDA kernels run on the CPU."""

    name = "cuda-on-cpu"

    def __init__(self, library):
        super().__init__()
        self.launcher = CpuLauncher(library)
        self.ops = Ops(np, **cupy_ops.overrides(np, self.launcher))
