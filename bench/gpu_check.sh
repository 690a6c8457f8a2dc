#!/usr/bin/env bash
# The GPU check on a machine with an NVIDIA GPU, run from a raw copy of the checkout:
#     bash bench/gpu_check.sh OUT_DIR [more options for python -m bench.gpu_check]
# Installs the wheels in .whl/ (bench/gpu_wheels.sh fetches them) into a folder of
# their own, puts it and the checkout on PYTHONPATH (fastnn is not installed), and
# runs python -m bench.gpu_check. See docs/gpu-check.md.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:?usage: bash bench/gpu_check.sh OUT_DIR [options for python -m bench.gpu_check]}"
shift
if [ ! -e fastnn/kernels/__init__.py ]; then  # a copy that lost the symbolic link
    ln -sfn ../kernels fastnn/kernels
fi
site="${TMPDIR:-/tmp}/fastnn-gpu-check-site"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$site" .whl/*.whl || { echo "gpu_check.sh: installing .whl/*.whl failed"; exit 2; }
else
    echo "gpu_check.sh: no wheels in .whl/ (bench/gpu_wheels.sh fetches them)"
fi
export PYTHONPATH="$PWD:$site${PYTHONPATH:+:$PYTHONPATH}"
exec python3 -m bench.gpu_check --out "$out" "$@"
