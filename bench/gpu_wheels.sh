#!/usr/bin/env bash
# Fill .whl/ (git-ignored) with the wheels the GPU machine lacks, for Python 3.12 on
# x86-64 Linux: array-api-compat (without it the cupy backend refuses to start and
# every GPU test skips) and array-api-strict (the strict stand-in of the test suite).
# bench/gpu_check.sh installs them there with pip --no-index --target. Needs pip and
# a package index here; the GPU machine has neither network nor these packages.
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .whl
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl \
    array-api-compat==1.16.0 array-api-strict==2.6.1
ls -l .whl
