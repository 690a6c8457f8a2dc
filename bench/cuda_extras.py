"""``python -m bench.cuda_extras``: what ``pip install 'fastnn[cuda12]'`` and
``'fastnn[cuda13]'`` would install, read from pip's own resolution (``pip install
--dry-run --ignore-installed --report``), and whether that holds every CUDA library
CuPy loads at run time on a machine that has only the NVIDIA driver: the CUDA
runtime, NVRTC (CuPy compiles every kernel with it) and cuBLAS (every matmul).

Run it where a package index can be reached, after changing an extra or when a new
CuPy comes out: pip fetches the wheels to read their dependencies (about 1.3 GB for
each extra, kept in pip's cache), too much for every CI run, so the test suite checks
offline only that pyproject.toml still asks for CuPy's [ctk] extra
(bench/test_cuda_extras.py); docs/gpu-check.md records the last resolution.
Exits 1 when a library is missing from a resolution, 2 when pip cannot resolve.
"""

import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
NEEDED = {  # the distributions each extra must bring, beside array-api-compat
    "cuda12": ("cupy-cuda12x", "nvidia-cuda-runtime-cu12", "nvidia-cuda-nvrtc-cu12",
               "nvidia-cublas-cu12"),
    "cuda13": ("cupy-cuda13x", "nvidia-cuda-runtime", "nvidia-cuda-nvrtc", "nvidia-cublas"),
}


def normalize(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(extra, text=None):
    """The requirement strings of ``extra`` in pyproject.toml (a one-line list)."""
    text = PYPROJECT.read_text() if text is None else text
    found = re.search(rf"^{re.escape(extra)} = (\[.*\])$", text, re.M)
    if found is None:
        raise ValueError(f"pyproject.toml has no one-line optional dependency {extra!r}")
    return json.loads(found.group(1))


def resolve(requirement_strings, timeout=600):
    """{distribution name: version} that pip would install, from an empty
    environment, for the current Python and platform; RuntimeError if pip fails."""
    argv = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
            "--quiet", "--report", "-", *requirement_strings]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"pip could not resolve {' '.join(requirement_strings)}: "
                           f"{done.stderr.strip()[-2000:]}")
    report = json.loads(done.stdout)
    return {normalize(item["metadata"]["name"]): item["metadata"]["version"]
            for item in report["install"]}


def missing(extra, resolved):
    """The distributions ``extra`` must bring that ``resolved`` lacks."""
    return [name for name in (*NEEDED[extra], "array-api-compat") if name not in resolved]


def main():
    extras = list(NEEDED)
    with ThreadPoolExecutor(len(extras)) as pool:  # each waits on the index, mostly
        futures = {extra: pool.submit(resolve, requirements(extra)) for extra in extras}
    status = 0
    for extra, future in futures.items():
        try:
            resolved = future.result()
        except RuntimeError as error:
            print(f"fastnn[{extra}]: {error}")
            status = 2
            continue
        wheels = " ".join(f"{name}=={version}" for name, version in sorted(resolved.items()))
        absent = missing(extra, resolved)
        verdict = "complete" if not absent else f"MISSING {', '.join(absent)}"
        print(f"fastnn[{extra}] ({', '.join(requirements(extra))}): {verdict}\n  {wheels}")
        status = max(status, 1 if absent else 0)
    return status


if __name__ == "__main__":
    sys.exit(main())
