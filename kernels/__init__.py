"""Accelerated hot-path kernels, installed as ``fastnn.kernels``.

The Numba and CUDA kernels that the accelerating backends register for each
activation, loss and optimizer update live here, one file per kernel family.
The NumPy reference backend needs none of them: it runs the xp-generic ops in
``fastnn.ops``.
"""
