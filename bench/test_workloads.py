"""The pytest-benchmark suite: every workload on every target.

``pytest bench --benchmark-enable`` times them (full sizes; results grouped per
workload so targets sit side by side); the default run (--benchmark-disable) executes
each once at its quick size. Either way the result is checked against float64
formulas (or the loss going down, or the accuracy reached) and, off NumPy, against
the NumPy backend's result.
"""

from bench.conftest import builder
from bench.reference import relative_error
from fastnn import backends


def test_workload(benchmark, workload, target):
    build = builder(target)
    data = workload.inputs()
    case = build(workload, data)
    benchmark.group = workload.id
    benchmark(case.step)
    if benchmark.enabled:  # the timing calls moved any state on: check a fresh case
        case = build(workload, data)
        case.step()
    result = case.result()
    workload.check(result, data)
    if target != "numpy":
        reference = workload.fastnn(backends.load("numpy"), data)
        reference.step()
        error = relative_error(result, reference.result())
        assert error <= workload.tolerance, (
            f"{target} differs from the NumPy backend by {error:.1e} "
            f"(tolerance {workload.tolerance:.0e})")


def test_the_plain_numpy_cnns_take_fastnns_step():
    """bench.cnn.PlainNet, the reference the NumPy backend is compared with, computes
    the same step as fastnn from the same weights."""
    import numpy as np

    from bench import cnn, conv_workloads

    for net in cnn.NETS:
        data = conv_workloads.cnn_step(net, 6, "float64").inputs()
        plain = cnn.PlainNet(net, data["weights"])
        loss = plain.step(data["X"], data["y"], 0.01)
        model = conv_workloads.cnn_model(net, backends.load("numpy"), "float64")
        history = model.fit(data["X"], data["y"], epochs=1, batch_size=6, lr=0.01,
                            shuffle=False)
        np.testing.assert_allclose(loss, history["loss"][0], rtol=1e-10)
        for mine, theirs in zip(plain.params, model.parameters()):
            np.testing.assert_allclose(mine, theirs.value, rtol=1e-9, atol=1e-12)
