"""Out-of-core data (``fastnn.outofcore``): ``fit``, ``predict`` and ``evaluate`` read a
memmap, or any array-like that slices, a chunk of rows at a time, with the results
of the same data in memory."""

import tracemalloc

import numpy as np
import pytest

import fastnn
from fastnn import Dense, Dropout, Sequential, outofcore


def _saved(tmp_path, name, array):
    """``array`` saved as ``name``.npy and opened again as a read-only memmap."""
    path = tmp_path / f"{name}.npy"
    np.save(path, array)
    return np.load(path, mmap_mode="r")


def _data(n=700, features=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, features))
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int64)
    return X, y


class SliceOnly:
    """An h5py-like source: shape, dtype and rows by slicing, nothing else (no fancy
    index, no ``__array__``); counts the rows it hands out."""

    def __init__(self, array):
        self.array, self.shape, self.dtype, self.rows_read = array, array.shape, array.dtype, 0

    def __getitem__(self, key):
        if not isinstance(key, slice):
            raise TypeError("only slices")
        out = self.array[key].copy()
        self.rows_read += out.shape[0]
        return out


class H5pyLike(SliceOnly):
    """Also takes an index array, if it is increasing (as h5py's datasets do)."""

    def __getitem__(self, key):
        if isinstance(key, np.ndarray):
            if np.any(np.diff(key) <= 0):
                raise TypeError("Indexing elements must be in increasing order")
            self.rows_read += key.size
            self.batches = getattr(self, "batches", 0) + 1
            return self.array[key]
        return super().__getitem__(key)


def _pair(layers, backend=None):
    return [Sequential(layers(), seed=4, backend=backend) for _ in range(2)]


def _same_parameters(a, b):
    to_numpy = a.backend.to_numpy
    return all(np.array_equal(to_numpy(p.value), to_numpy(q.value))
               for p, q in zip(a.parameters(), b.parameters()))


def _dropout_net():
    return [Dense(6, 16, "relu"), Dropout(0.2), Dense(16, 2, "softmax")]


def test_memmap_trains_bit_for_bit_as_in_memory(backend, tmp_path):
    """Shuffled, with dropout, validation data and a float64 file for a float32 model
    (cast per batch): the same parameters, history and predictions, bit for bit, on
    every backend (the generic steps, which both take here)."""
    X, y = _data()
    Xm, ym = _saved(tmp_path, "X", X), _saved(tmp_path, "y", y)
    memory, mapped = _pair(_dropout_net)
    options = dict(epochs=3, batch_size=64, seed=9, optimizer="adam")
    h1 = memory.fit(X, y, validation_data=(X[:200], y[:200]), **options)
    h2 = mapped.fit(Xm, ym, validation_data=(Xm[:200], ym[:200]), **options)
    assert h1 == h2
    assert _same_parameters(memory, mapped)
    assert np.array_equal(memory.predict_proba(X, batch_size=128),
                          mapped.predict_proba(Xm, batch_size=128))
    assert memory.evaluate(X, y) == mapped.evaluate(Xm, ym)


def test_memmap_mlp_matches_in_memory(backend, tmp_path):
    """A plain MLP: bit for bit where both take the generic steps; on numba the data in
    memory takes the fused epoch kernel and the memmap the steps, which agree to
    rounding."""
    X, y = _data()
    Xm = _saved(tmp_path, "X", X.astype(np.float32))
    memory, mapped = _pair(lambda: [Dense(6, 12, "tanh"), Dense(12, 1, "sigmoid")])
    for model, data in ((memory, X.astype(np.float32)), (mapped, Xm)):
        model.fit(data, y, epochs=4, batch_size=50, seed=2, lr=0.5)
    if backend.name == "numba":
        for p, q in zip(memory.parameters(), mapped.parameters()):
            np.testing.assert_allclose(p.value, q.value, rtol=1e-4, atol=1e-5)
    else:
        assert _same_parameters(memory, mapped)


@pytest.mark.parametrize("kind", [SliceOnly, H5pyLike])
def test_array_likes_read_rows_not_the_whole(kind):
    """An array-like that only slices (read a row at a time), or that also takes an
    increasing index array (a batch's rows sorted, read, and put back in the batch's
    order), trains and predicts as the array does; a pass (the checks, an epoch, a
    prediction) reads each row once."""
    X, y = _data(n=300)
    source = kind(X)
    memory, sliced = _pair(_dropout_net)
    options = dict(epochs=2, batch_size=32, seed=1)
    memory.fit(X, y, **options)
    sliced.fit(source, y, **options)
    assert _same_parameters(memory, sliced)
    assert source.rows_read == 300 * 3  # the checks and two shuffled epochs
    assert getattr(source, "batches", 0) == (20 if kind is H5pyLike else 0)  # 10 an epoch
    assert np.array_equal(memory.predict(X), sliced.predict(source))


def test_training_on_a_memmap_keeps_memory_bounded(tmp_path):
    """A 200 MB float32 memmap (larger than every batch and chunk): the checks, a
    shuffled epoch and a prediction allocate a small fraction of it (tracemalloc sees
    NumPy's allocations; the mapped file's pages are not allocations)."""
    rows, features = 50_000, 1000
    path = tmp_path / "big.npy"
    X = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, features))
    block = np.random.default_rng(0).standard_normal((5000, features), dtype=np.float32)
    y = np.empty(rows, np.int64)
    for k, start in enumerate(range(0, rows, 5000)):  # blocks of rows rolled apart: quick
        X[start:start + 5000] = np.roll(block, k, axis=1)
        y[start:start + 5000] = X[start:start + 5000, 0] > 0
    X.flush()
    del X
    X = np.load(path, mmap_mode="r")
    model = Sequential([Dense(features, 8, "relu"), Dense(8, 1, "sigmoid")], seed=0)
    tracemalloc.start()
    try:
        model.fit(X, y, epochs=1, batch_size=500, seed=0)
        out = model.predict(X, batch_size=2000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.shape == (rows,)
    assert peak < X.nbytes / 16, f"peak {peak / 2**20:.1f} MiB, file {X.nbytes / 2**20:.0f} MiB"


def test_nan_in_a_later_chunk_names_its_row(tmp_path, monkeypatch):
    monkeypatch.setattr(outofcore, "CHUNK_BYTES", 6 * 8 * 100)  # 100 rows per chunk
    X, y = _data()
    X[555, 3] = np.nan
    Xm = _saved(tmp_path, "X", X)
    model = Sequential([Dense(6, 1, "sigmoid")], seed=0)
    message = (r"X contains NaN or infinite value\(s\), the first at index \(555, 3\) \(X is "
               r"read in chunks; checking stopped at the first\); remove or impute them")
    with pytest.raises(ValueError, match=message):
        model.fit(Xm, y)
    with pytest.raises(ValueError, match=message):
        model.predict(Xm)
    X[555, 3] = 1e300  # beyond float32
    with pytest.raises(ValueError, match=r"X has value\(s\) too large for the model's dtype "
                                         r"\(beyond \+-3.4e\+38\), the first at index \(555, 3\) "
                                         r"\(1e\+300; X is read in chunks; checking stopped at the "
                                         r"first\)"):
        model.fit(_saved(tmp_path, "X3", X), y)
    with pytest.raises(ValueError, match=r"X_val contains NaN .*index \(555, 3\)"):
        model.fit(_data()[0], y, validation_data=(Xm, y))
    y = y.astype(np.float64)
    y[401] = np.inf
    with pytest.raises(ValueError, match=r"y contains NaN or infinite value\(s\), the first at "
                                         r"index \(401,\)"):
        model.fit(_data()[0], _saved(tmp_path, "y", y))


def test_bad_out_of_core_data_gets_clear_errors(tmp_path):
    model = Sequential([Dense(6, 1, "sigmoid")], seed=0)
    X, y = _data(n=20)

    class NoSlices:
        shape, dtype = (20, 6), np.dtype(np.float64)

    with pytest.raises(TypeError, match=r"X \(a NoSlices of shape \(20, 6\)\) cannot be sliced "
                                        r"by rows; pass a NumPy array, a memmap"):
        model.fit(NoSlices(), y)

    class Broken(SliceOnly):
        def __getitem__(self, key):
            raise KeyError("the dataset was closed")

    with pytest.raises(TypeError, match=r"X \(a Broken\) could not be read by rows: X\[0:20\] "
                                        r"raised KeyError: 'the dataset was closed'"):
        model.predict(Broken(X))
    with pytest.raises(TypeError, match=r"X is a generator, which can be read only once"):
        model.fit((row for row in X), y)
    with pytest.raises(ValueError, match=r"X must be 2-D .* got shape \(20,\)"):
        model.fit(_saved(tmp_path, "x1", X[:, 0]), y)
    with pytest.raises(ValueError, match=r"X has 20 rows but y has 19 rows"):
        model.fit(_saved(tmp_path, "X", X), _saved(tmp_path, "y", y[:19]))
    with pytest.raises(TypeError, match=r"y must be numeric"):
        model.fit(X, SliceOnly(np.array(["a"] * 20)))
    softmax = fastnn.from_layer_dims([2, 4, 3], "relu", "softmax", seed=0)  # inf - inf
    softmax.layers[0].W.value[...] = [[10.0, 10.0, 1.0, 1.0], [10.0, -10.0, 1.0, -1.0]]
    huge = _saved(tmp_path, "X2", np.array([[0.5, 0.25], [3e38, 3e38], [-1.0, 2.0]]))
    with pytest.raises(fastnn.NotFinite, match=r"the largest input is 3e\+38 in magnitude"):
        softmax.predict(huge)


def test_what_streams():
    X = np.zeros((3, 2))
    assert not outofcore.streams(X) and not outofcore.streams(X.tolist())
    assert outofcore.streams(SliceOnly(X))


@pytest.mark.parametrize("sharded", [False, True])
def test_data_parallel_on_a_memmap(tmp_path, sharded):
    """Two data-parallel ranks (threads of this process) on the whole memmap each, or
    on a part of it each (``sharded``), validation included: the parameters of the
    same job on the data in memory."""
    from fastnn.distributed.local import simulate

    X, y = _data(n=240)
    Xm, ym = _saved(tmp_path, "X", X), _saved(tmp_path, "y", y)
    memory, mapped = _pair(_dropout_net)
    options = dict(epochs=2, batch_size=40, seed=5, sharded=sharded)
    for model, (X_, y_) in ((memory, (X, y)), (mapped, (Xm, ym))):
        train, val = (X_, y_), (X_[:60], y_[:60])
        if sharded:
            train, val = ([a[:100], a[100:]] for a in train), ([a[:30], a[30:60]] for a in val)
        simulate(2, model, *train, validation_data=tuple(zip(*val)) if sharded else val,
                 **options)
    assert _same_parameters(memory, mapped)


def test_gradcheck_reads_a_memmap_whole(tmp_path):
    X, y = _data(n=8)
    model = Sequential([Dense(6, 3, "tanh"), Dense(3, 1, "sigmoid")], seed=0)
    assert fastnn.gradcheck(model, _saved(tmp_path, "X", X), y).passed


def test_out_of_core_data_takes_the_generic_steps(backend, tmp_path):
    """The choice documented in ``fastnn.training.epoch_runner``: no fused epoch (which
    wants the data in memory) and no replay (which cannot read the host) for Rows."""
    from fastnn.steps import Steps
    from fastnn.training import epoch_runner

    X, y = _data(n=64)
    model = Sequential([Dense(6, 4, "relu"), Dense(4, 1, "sigmoid")], seed=0)
    model.optimizer = fastnn.optimizers.get("sgd")
    X, Y = model.prepare(_saved(tmp_path, "X", X), y)
    assert isinstance(X, outofcore.Rows) and X.dtype == model.dtype  # float64 file, cast
    assert type(epoch_runner(model, X, Y, 16)) is Steps


def test_pandas_and_lists_are_read_whole():
    pandas = pytest.importorskip("pandas", reason="pandas is not installed (pip install pandas)")
    X, y = _data(n=30)
    frame, labels = pandas.DataFrame(X), pandas.Series(y, index=range(100, 130))
    assert not outofcore.streams(frame) and not outofcore.streams(labels)
    assert not outofcore.streams(X.tolist())
    model = Sequential([Dense(6, 1, "sigmoid")], seed=0)
    model.fit(frame, labels, epochs=1)
    assert model.predict(frame).shape == (30,)


def test_images_on_a_memmap(tmp_path):
    """NCHW images in a memmap train a small CNN as the array in memory does."""
    from fastnn import Conv2D, Flatten, MaxPool2D

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((120, 1, 8, 8)).astype(np.float32), rng.integers(0, 3, 120)
    memory, mapped = (Sequential([Conv2D(1, 4, 3, activation="relu"), MaxPool2D(2),
                                  Flatten(), Dense(36, 3, "softmax")], seed=0,
                                 input_shape=(1, 8, 8)) for _ in range(2))
    memory.fit(X, y, epochs=2, batch_size=16, seed=1)
    mapped.fit(_saved(tmp_path, "X", X), y, epochs=2, batch_size=16, seed=1)
    assert _same_parameters(memory, mapped)
    with pytest.raises(ValueError, match=r"X must have shape \(n_samples, channels, height, "
                                         r"width\) = \(n_samples, 1, 8, 8\).*reshape"):
        mapped.predict(_saved(tmp_path, "flat", X.reshape(120, 64)))


def test_a_memmap_that_reads_a_npy_header_as_data_is_refused(tmp_path):
    """np.memmap("X.npy", dtype=..., shape=...) maps the file from its first byte, so the
    .npy header is read as rows (silently, with any dtype): named, with np.load's fix.
    np.load(path, mmap_mode="r") and a raw file mapped from byte 0 are fine."""
    X, y = fastnn.datasets.moons(20, noise=0.1, seed=0)
    path = tmp_path / "X.npy"
    np.save(path, X.astype(np.float32))
    model = fastnn.from_layer_dims([2, 4, 1], "tanh", "sigmoid", seed=0)
    wrong = np.memmap(path, dtype=np.float32, mode="r", shape=(20, 2))
    for data in (wrong, wrong[5:], np.asarray(wrong)):
        with pytest.raises(ValueError, match=r"X is a memmap of the .npy file .*X\.npy' from its "
                                             r"first byte, so its header is read as data; open "
                                             r"it with np\.load\(.*mmap_mode='r'\)"):
            model.fit(data, y)
    with pytest.raises(ValueError, match=r"X is a memmap of the .npy file"):
        model.predict(wrong)
    model.fit(np.load(path, mmap_mode="r"), y)
    raw = tmp_path / "X.f32"
    X.astype(np.float32).tofile(raw)
    model.fit(np.memmap(raw, dtype=np.float32, mode="r", shape=(20, 2)), y)
