"""The transfer guard: every host<->device copy is counted, and training on
device-resident data reads one pair of scalars per epoch and nothing per step.

Expected reads of ``fit`` on device data: 2 input checks before training (X is
finite, the labels are in range), 1 per epoch (loss and metric sums together),
1 after the last epoch (the parameters are finite). No uploads at all.
"""

import contextlib

import numpy as np
import pytest
from strict_backend import array_api_strict

import fastnn
from fastnn import datasets
from fastnn.backends.base import Transfers


def device_data(backend):
    X, y = datasets.blobs(240, n_classes=3, seed=0)
    return backend.asarray(X, backend.dtype("float32")), backend.asarray(y)


def model(backend):
    return fastnn.Sequential([fastnn.Dense(2, 16, "relu"), fastnn.Dropout(0.1),
                              fastnn.Dense(16, 3, "softmax")], seed=0, backend=backend)


@pytest.mark.parametrize("batch_size", [None, 24, 7])
@pytest.mark.parametrize("epochs", [1, 3])
def test_fit_on_device_data_reads_once_per_epoch(backend, epochs, batch_size):
    X, y = device_data(backend)
    net = model(backend)
    with backend.count_transfers() as counted:
        net.fit(X, y, epochs=epochs, batch_size=batch_size, optimizer="adam", seed=1)
    assert counted.to_device == 0 and counted.bytes_to_device == 0
    assert counted.checks == 2
    assert counted.to_host == counted.checks + epochs + 1  # however many steps per epoch


def test_validation_data_adds_one_read_per_epoch(backend):
    X, y = device_data(backend)
    net = model(backend)
    with backend.count_transfers() as counted:
        net.fit(X, y, epochs=2, batch_size=40, validation_data=(X[:60, ...], y[:60]))
    assert counted.to_device == 0
    assert counted.to_host - counted.checks == 2 + 2 + 1  # epochs, validation, final check


@contextlib.contextmanager
def implicit_reads_forbidden():
    """Make bool()/float()/int() of a strict array off the CPU raise, so only the
    backend's counted transfers can bring a value to the host."""
    cls = array_api_strict._array_object.Array
    saved = {name: getattr(cls, name) for name in ("__bool__", "__float__", "__int__")}

    def guard(name):
        def read(self):
            if self.device != array_api_strict.Device("CPU_DEVICE"):
                raise AssertionError(f"uncounted device->host read through {name}")
            return saved[name](self)
        return read

    for name in saved:
        setattr(cls, name, guard(name))
    try:
        yield
    finally:
        for name, method in saved.items():
            setattr(cls, name, method)


def test_fit_evaluate_predict_read_only_through_the_guard(strict):
    X, y = device_data(strict)
    net = model(strict)
    with implicit_reads_forbidden():
        net.fit(X, y, epochs=2, batch_size=60, optimizer="momentum", lr=0.05,
                validation_data=(X[:30, ...], y[:30]))
        result = net.evaluate(X, y)
        labels = net.predict(X)
        with pytest.raises(AssertionError, match="uncounted"):
            bool(strict.xp.all(X > -1e9))  # the guard does catch a hidden read
    assert isinstance(labels, np.ndarray) and result["accuracy"] > 0.5


def test_host_input_is_uploaded_once_per_array(backend):
    """NumPy input is copied to the device once per array, before training (on the
    NumPy backend it already is a device array: nothing to copy)."""
    X, y = datasets.blobs(100, n_classes=3, seed=1)
    net = model(backend)
    with backend.count_transfers() as counted:
        net.fit(X, y, epochs=2, batch_size=10)
    on_host = not backend.is_array(X)
    assert counted.to_device == (2 if on_host else 0)
    assert counted.bytes_to_device == (X.nbytes + y.nbytes if on_host else 0)
    assert counted.to_host == counted.checks + 2 + 1


def test_counters_nest_and_count_bytes(backend):
    host = np.arange(12, dtype=np.float64).reshape(3, 4)
    before = backend.transfers.to_device
    with backend.count_transfers() as outer:
        x = backend.asarray(host)
        with backend.count_transfers() as inner:
            back = backend.to_numpy(x)
    np.testing.assert_array_equal(back, host)
    up = 0 if backend.is_array(host) else 1  # NumPy arrays already live on 'numpy'
    assert (outer.to_device, outer.to_host, inner.to_device, inner.to_host) == (up, 1, 0, 1)
    assert outer.bytes_to_device == 96 * up and outer.bytes_to_host == 96
    assert backend.transfers.to_device == before + up
    with backend.count_transfers() as counted:
        backend.asarray([[1.0, 2.0]])  # a list is always copied in
    assert (counted.to_device, counted.bytes_to_device) == (1, 16)


def test_read_scalars_is_one_transfer_for_many_values(backend):
    xp = backend.xp
    a = xp.sum(backend.asarray(np.ones(5), backend.dtype("float32")))
    b = xp.max(backend.asarray(np.arange(4.0), backend.dtype("float64")))
    with backend.count_transfers() as counted:
        values = backend.read_scalars(a, 2.5, b)
        flag = backend.read_bool(xp.all(b > 1.0), check=True)
    assert values == (5.0, 2.5, 3.0) and all(type(v) is float for v in values)
    assert flag is True and (counted.to_host, counted.checks) == (2, 1)
    with backend.count_transfers() as counted:
        assert backend.read_scalars(1, 2.0) == (1.0, 2.0)  # host numbers: no transfer
    assert counted.to_host == 0


def test_transfers_repr_names_every_count():
    counts = Transfers()
    counts.record("to_host", 8, check=True)
    assert repr(counts) == ("Transfers(to_device=0, to_host=1, bytes_to_device=0, "
                            "bytes_to_host=8, checks=1)")


class ForeignGpuArray:
    """Stands in for an array of another GPU library (CuPy, PyTorch, Numba)."""

    __cuda_array_interface__ = {"shape": (2, 2), "typestr": "<f4", "data": (0, False),
                                "version": 3}


def test_an_array_of_another_backend_is_refused_clearly(backend):
    net = model(backend)
    with pytest.raises(TypeError, match=r"test_transfers.ForeignGpuArray array, but this model "
                                        r"runs on the '\w+' backend"):
        net.predict(ForeignGpuArray())
    with pytest.raises(TypeError, match="model.to"):
        backend.asarray(ForeignGpuArray())
