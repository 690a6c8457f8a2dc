"""Everything the Numba backend runs, in one place: the JIT layer (``jit``), the
vectorizable math (``math``), the activation, dense, loss and optimizer kernels, the
whole-epoch kernels (``train``, ``train_blas``) with NumPy's own GEMM (``blas``), and the
glue that picks a kernel per call (``ops``: the backend's ops table; ``epoch``: its
fused epoch runner; ``threads``: the threading layer). Imports numba: only the Numba
backend (``fastnn.backends.numba_backend``) loads it.
"""
