"""The IDX file format of MNIST and Fashion-MNIST, read from files the user already has.

An IDX file is: two zero bytes, a type code, the number of dimensions, each dimension
as a big-endian uint32, then the values in big-endian C order. The files are often
gzipped; ``load_idx`` tells by the gzip magic bytes, not by the file name.
"""

import gzip
import zlib
from pathlib import Path

import numpy as np

from fastnn.validation import flag

GZIP_MAGIC = b"\x1f\x8b"
DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
# (images, labels) file names of each part, as distributed; the ".idx" spelling is common
# in re-distributions. Each may also end in ".gz".
MNIST_FILES = {
    "train": [("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              ("train-images.idx3-ubyte", "train-labels.idx1-ubyte")],
    "test": [("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
             ("t10k-images.idx3-ubyte", "t10k-labels.idx1-ubyte")],
}


def load_idx(path):
    """The array stored in an IDX file (raw or gzipped), in native byte order.

    Raises FileNotFoundError for a missing file and ValueError naming the file and
    the problem for anything that is not a complete IDX file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file {str(path)!r} does not exist")
    raw = path.read_bytes()
    if raw[:2] == GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as error:
            raise ValueError(
                f"{str(path)!r} is a truncated or corrupt gzip file ({error}); download it again"
            ) from None
    return _parse(raw, path)


def _parse(raw, path):
    name = repr(str(path))
    if len(raw) < 4 or raw[:2] != b"\x00\x00":
        raise ValueError(
            f"{name} is not an IDX file: it must start with two zero bytes, a type code and "
            f"the number of dimensions; got {raw[:4].hex(' ') or 'an empty file'}"
        )
    code, ndim = raw[2], raw[3]
    if code not in DTYPES:
        raise ValueError(
            f"{name} has IDX type code 0x{code:02x}; valid codes are "
            f"{', '.join(f'0x{c:02x}' for c in DTYPES)}"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(
            f"{name} is truncated: its header declares {ndim} dimensions but the file has "
            f"{len(raw)} bytes"
        )
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = DTYPES[code]
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        problem = "is truncated" if len(raw) < expected else "has extra bytes after the data"
        raise ValueError(
            f"{name} {problem}: shape {shape} of {dtype.name} needs {expected} bytes with the "
            f"header, but the file holds {len(raw)}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def mnist(directory, kind="train", images=False):
    """MNIST (or Fashion-MNIST, same file names) from ``directory``: (X, y).

    kind: 'train' (train-images-idx3-ubyte, ...) or 'test' (t10k-...), each file raw
    or with '.gz'. X is float32 of shape (n, 784) scaled to [0, 1] (float32 keeps the
    60,000 training images at 188 MB), or with ``images=True`` of shape (n, 1, 28, 28)
    (one grey channel; the rows and columns the file declares); y is int64 labels 0..9.
    """
    if kind not in MNIST_FILES:
        raise ValueError(f"kind must be 'train' or 'test'; got {kind!r}")
    as_images = flag("images", images)
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"MNIST directory {str(directory)!r} does not exist")
    images_path, labels_path = _find_pair(directory, kind)
    images, labels = load_idx(images_path), load_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"{str(images_path)!r} should hold uint8 images of shape (n, rows, cols); "
            f"got {images.dtype} of shape {images.shape}"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise ValueError(
            f"{str(labels_path)!r} should hold uint8 labels of shape (n,); "
            f"got {labels.dtype} of shape {labels.shape}"
        )
    if len(images) != len(labels):
        raise ValueError(
            f"{str(images_path)!r} has {len(images)} images but {str(labels_path)!r} has "
            f"{len(labels)} labels; the two files must come from the same set"
        )
    if labels.size and labels.max() > 9:
        raise ValueError(f"{str(labels_path)!r} has label {labels.max()}; MNIST labels are 0..9")
    shape = (len(images), 1, *images.shape[1:]) if as_images else (len(images), -1)
    X = images.reshape(shape).astype(np.float32) / np.float32(255)
    return X, labels.astype(np.int64)


def _find_pair(directory, kind):
    for names in MNIST_FILES[kind]:
        found = [_existing(directory / name) for name in names]
        if all(found):
            return found
        if any(found):
            missing = names[found.index(None)]
            raise FileNotFoundError(
                f"{str(directory)!r} has {(found[0] or found[1]).name} but not {missing}[.gz]; "
                f"MNIST {kind} needs both the images and the labels file"
            )
    wanted = " and ".join(f"{n}[.gz]" for n in MNIST_FILES[kind][0])
    raise FileNotFoundError(
        f"no MNIST {kind} files in {str(directory)!r}: it needs {wanted} "
        f"(fastnn never downloads; put the files you have there)"
    )


def _existing(path):
    for candidate in (path, path.with_name(path.name + ".gz")):
        if candidate.is_file():
            return candidate
    return None
