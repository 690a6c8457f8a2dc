"""The conv nets' training-step workloads (bench/conv_workloads.py, run by the GPU
check): their arithmetic count, and one step on every target (each backend, the
strict stand-in, PyTorch with the same weights) agreeing with the NumPy backend."""

import pytest

from bench import conv_workloads
from bench.conftest import builder
from bench.reference import relative_error
from fastnn import backends


def test_flop_counts_follow_the_layers():
    """SimpleConvNet: 30*25*576 = 432,000 multiply-adds in the conv, 432,000 + 1,000 in
    the Dense layers (the shared notes' 0.87 M per image); a step is 3x forward less
    the first layer's dX. LeNet-5: 117,600 + 240,000 + 48,000 + 10,080 + 840."""
    simple = 432_000 + 432_000 + 1_000
    assert conv_workloads.cnn_flops("SimpleConvNet", 10) == 2 * 10 * (3 * simple - 432_000)
    lenet = 117_600 + 240_000 + 48_000 + 10_080 + 840
    assert conv_workloads.cnn_flops("LeNet-5", 1) == 2 * (3 * lenet - 117_600)


@pytest.mark.parametrize("net, batch", [("SimpleConvNet", 8), ("LeNet-5", 16)])
def test_a_step_agrees_with_the_numpy_backend(net, batch, target):
    """On every target of bench/conftest.py (each backend, the strict stand-in, the
    PyTorch peer)."""
    workload = conv_workloads.cnn_step(net, batch)
    data = workload.inputs()
    reference = workload.fastnn(backends.load("numpy"), data)
    reference.step()
    expected = reference.result()
    workload.check(expected, data)  # a loss near ln 10 that the step lowered
    case = builder(target)(workload, data)
    case.step()
    result = case.result()
    workload.check(result, data)
    assert relative_error(result, expected) <= workload.tolerance
