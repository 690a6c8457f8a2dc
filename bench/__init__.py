"""fastnn's benchmark harness: every backend side by side, against this machine's own
ceilings (a large GEMM, a same-size copy) and against PyTorch eager when installed.

``workloads`` defines each workload once; the pytest-benchmark suite (``test_*.py``)
and the report runner (``python -m bench``) both use those definitions.
"""
