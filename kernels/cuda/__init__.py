"""Everything the CuPy backend runs on the GPU, in one place: the CUDA C source of the
fused kernels (``source``, compiled by NVRTC) and the launch code that makes them the
backend's ops table (``ops``). Imports no CUDA library itself: the backend passes in a
launcher (``fastnn.backends.cupy_backend``), and the tests run the same source on the
CPU through an emulator.
"""
