"""Out-of-core data: arrays that ``fit``, ``predict`` and ``evaluate`` read a chunk of
rows at a time instead of whole.

Out-of-core (``streams``) are a ``np.memmap`` (such as ``np.load(path,
mmap_mode="r")``) or a NumPy array viewing one, and any array-like that is not an
array but has a ``shape``, a NumPy ``dtype`` and rows by slicing (``X[start:stop]``:
h5py and zarr datasets, say). ``Rows`` stands in for such data once prepared
(validated, cast to the model's dtype, on the backend): ``rows[a:b]`` and
``rows.take(indices)`` read, prepare and upload just those rows. Checking the data
(numeric, finite, not too large) is one pass over it in chunks of ``CHUNK_BYTES``.
Everything else (arrays in memory, lists, pandas objects, the backend's own arrays)
is prepared whole, as always: the fast path. ``np.array(X)`` reads a memmap into
memory for that path.

``fastnn.training.epoch_runner`` trains on ``Rows`` with the generic steps
(``fastnn.steps``): each step's rows are gathered from the source (in ascending order
for sources that need it, then put back in the batch's order), cast and uploaded, so
a training gives the same parameters, bit for bit, as on the same data in memory
through the same steps. The Numba backend's fused epoch kernel, which needs the whole
data in memory, and CUDA-graph replay, which cannot read the host between steps, are
not used for out-of-core data.
"""

import math
import mmap

import numpy as np

CHUNK_BYTES = 1 << 22  # bytes of source rows read at a time by a pass over the data


def streams(data):
    """True if ``data`` is out-of-core (see the module docstring)."""
    if isinstance(data, np.ndarray):
        base = data
        while base is not None:  # a memmap, or a view of one (np.asarray strips the type)
            if isinstance(base, (np.memmap, mmap.mmap)):
                return True
            base = getattr(base, "base", None)
        return False
    if isinstance(data, (list, tuple)) or any(hasattr(data, name) for name in (
            "iloc", "__array_namespace__", "__cuda_array_interface__", "__dlpack__")):
        return False  # pandas (label-indexed) and other libraries' arrays: read whole
    if not isinstance(getattr(data, "shape", None), tuple):
        return False
    try:
        np.dtype(data.dtype)
    except (AttributeError, TypeError):
        return False
    return True


def in_memory(data):
    """``data`` read whole into memory if it is out-of-core, else itself."""
    return np.array(data) if streams(data) else data


def refuse_npy_header(data, what):
    """Refuse a memmap (or a view of one) that maps a .npy file from its first byte, as
    ``np.memmap("X.npy", dtype=..., shape=...)`` does: its header would be read as rows,
    silently, whatever the dtype."""
    base = data
    while base is not None and not isinstance(base, np.memmap):
        base = getattr(base, "base", None)
    if base is None or base.offset != 0 or not base.filename:
        return
    try:
        with open(base.filename, "rb") as file:
            magic = file.read(6)
    except OSError:
        return
    if magic == b"\x93NUMPY":
        name = str(base.filename)
        raise ValueError(
            f"{what} is a memmap of the .npy file {name!r} from its first byte, so "
            f"its header is read as data; open it with np.load({name!r}, "
            f"mmap_mode='r'), which skips the header and keeps the saved dtype and shape")


def part(X, lo, hi):
    """Rows lo..hi-1 of a prepared X: a device array's slice, or ``Rows`` over them."""
    return X.part(lo, hi) if isinstance(X, Rows) else X[lo:hi, ...]


def take(xp, X, indices):
    """The rows of a prepared X that the device index array ``indices`` names."""
    return X.take(indices) if isinstance(X, Rows) else xp.take(X, indices, axis=0)


class Rows:
    """Out-of-core data prepared a chunk at a time, standing in for its device array:
    ``shape``, ``ndim``, ``dtype`` (as prepared), ``rows[a:b]`` (or ``rows[a:b, ...]``)
    and ``take(indices)`` give prepared device rows.

    ``prepare(host)`` turns host rows of ``source`` into device rows, without checks:
    ``check`` runs the checks once, over every row."""

    def __init__(self, backend, source, what, prepare, lo=0, stop=None):
        self.backend, self.source, self.what, self.prepare = backend, source, what, prepare
        if not hasattr(source, "__getitem__"):
            raise TypeError(
                f"{what} (a {type(source).__name__} of shape {tuple(source.shape)}) cannot "
                f"be sliced by rows; pass a NumPy array, a memmap (np.load(path, "
                f"mmap_mode='r')) or an array-like whose {what}[start:stop] gives rows")
        refuse_npy_header(source, what)
        stop = source.shape[0] if stop is None else stop
        self.lo, self.shape, self.dtype = lo, (stop - lo, *source.shape[1:]), source.dtype
        self.fancy = True  # whether source[indices] works (else one slice per row)

    def __repr__(self):
        return f"<fastnn rows {self.shape} of a {type(self.source).__name__}>"

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def chunk(self):
        """Rows per chunk of a pass over the data (at least one)."""
        row = math.prod(self.shape[1:]) * np.dtype(self.source.dtype).itemsize
        return max(1, CHUNK_BYTES // max(row, 1))

    def chunks(self):
        """(start, stop) of each chunk of a pass over the rows (one empty one if there
        are none, which the checks reject)."""
        n, size = self.shape[0], self.chunk
        return [(i, min(i + size, n)) for i in range(0, n, size)] or [(0, 0)]

    def check(self, check):
        """Run ``check(host_rows, first_row)`` (which raises on bad data and returns the
        rows prepared) on every chunk; the prepared shape and dtype are the checked
        chunks'."""
        for start, stop in self.chunks():
            out = check(self.read(start, stop), start)
        self.shape, self.dtype = (self.shape[0], *out.shape[1:]), out.dtype
        return self

    def largest(self):
        """The largest magnitude in the data, a chunk at a time."""
        return max(float(np.max(np.abs(self.read(a, b)))) for a, b in self.chunks())

    def part(self, lo, hi):
        """``Rows`` over rows lo..hi-1 (a view: nothing is read)."""
        out = Rows(self.backend, self.source, self.what, self.prepare, self.lo + lo,
                   self.lo + hi)
        out.shape, out.dtype = (hi - lo, *self.shape[1:]), self.dtype
        return out

    def __getitem__(self, key):
        rows = key[0] if isinstance(key, tuple) and key[1:] == (Ellipsis,) else key
        if not isinstance(rows, slice) or rows.step not in (None, 1):
            raise TypeError(f"out-of-core rows take a slice of rows; got {key!r}")
        start, stop, _ = rows.indices(self.shape[0])
        return self.prepare(self.read(start, max(start, stop)))

    def take(self, indices):
        """The prepared rows that ``indices`` (a device or host index array) names, in
        its order."""
        if self.backend.is_array(indices):
            indices = self.backend.to_numpy(indices)
        idx = np.asarray(indices, dtype=np.int64) + self.lo
        if isinstance(self.source, np.ndarray):
            return self.prepare(self.source[idx])
        order = np.argsort(idx, kind="stable")
        got = self.gather(idx[order])  # ascending, as h5py wants
        out = np.empty_like(got)
        out[order] = got
        return self.prepare(out)

    def gather(self, idx):
        """Host rows ``idx`` (ascending) of the source: by one fancy index where the
        source takes one, else one slice per row."""
        if self.fancy:
            try:
                got = np.asarray(self.source[idx])
                if got.shape == (idx.size, *self.source.shape[1:]):
                    return got
            except Exception:  # any failure: one slice per row instead (checked there)
                pass
            self.fancy = False
        return np.concatenate([self.read(i - self.lo, i - self.lo + 1) for i in idx])

    def read(self, start, stop):
        """Host rows start..stop-1 (of these rows), as a NumPy array."""
        a, b = self.lo + start, self.lo + stop
        try:
            got = np.asarray(self.source[a:b])
        except Exception as error:  # the source's own, named in the message
            raise TypeError(
                f"{self.what} (a {type(self.source).__name__}) could not be read by rows: "
                f"{self.what}[{a}:{b}] raised {type(error).__name__}: {error}; pass a NumPy "
                f"array, a memmap (np.load(path, mmap_mode='r')) or an array-like whose "
                f"{self.what}[start:stop] gives rows") from None
        if got.shape != (b - a, *self.source.shape[1:]):
            raise ValueError(
                f"{self.what}[{a}:{b}] (a {type(self.source).__name__}) gave shape "
                f"{got.shape}, not the {b - a} rows of shape {tuple(self.source.shape[1:])} "
                f"its shape {tuple(self.source.shape)} promises")
        return got
