"""The CUDA extras, offline: pyproject.toml asks for CuPy 14's [ctk] extra, which
brings the CUDA runtime, NVRTC and cuBLAS as wheels, and bench.cuda_extras names
what a resolution lacks. The resolution itself needs an index and ~1.3 GB of wheels
per extra, so it is run by hand (python -m bench.cuda_extras; see docs/gpu-check.md)."""

import re

import pytest

from bench import cuda_extras


@pytest.mark.parametrize("extra", ["cuda12", "cuda13"])
def test_each_cuda_extra_asks_for_cupy_with_its_cuda_libraries(extra):
    cupy, compat = cuda_extras.requirements(extra)
    name, extras, version = re.fullmatch(r"([\w-]+)\[(\w+)\]>=([\d.]+)", cupy).groups()
    assert name == cuda_extras.NEEDED[extra][0] and extras == "ctk"
    assert int(version.split(".")[0]) >= 14  # CuPy 13 has no [ctk] extra: pip would ignore it
    assert compat.startswith("array-api-compat>=")


def test_a_resolution_without_nvrtc_or_cublas_is_reported():
    resolved = {name: "1" for name in (*cuda_extras.NEEDED["cuda13"], "array-api-compat")}
    assert cuda_extras.missing("cuda13", resolved) == []
    del resolved["nvidia-cuda-nvrtc"], resolved["nvidia-cublas"]
    assert cuda_extras.missing("cuda13", resolved) == ["nvidia-cuda-nvrtc", "nvidia-cublas"]
    assert cuda_extras.normalize("Nvidia_CUDA.nvrtc") == "nvidia-cuda-nvrtc"


def test_an_extra_that_is_not_a_one_line_list_is_refused():
    with pytest.raises(ValueError, match="no one-line optional dependency 'cuda14'"):
        cuda_extras.requirements("cuda14")
    assert cuda_extras.requirements("x", 'x = ["a>=1", "b"]\n') == ["a>=1", "b"]
