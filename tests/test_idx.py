"""The IDX reader and the MNIST loader, on small IDX files the tests write (raw and gzip),
and their errors for missing, truncated, corrupt and mismatched files."""

import gzip
import struct

import numpy as np
import pytest

from fastnn import datasets
from fastnn.idx import load_idx, mnist

CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C,
         np.float32: 0x0D, np.float64: 0x0E}


def idx_bytes(array, code=None):
    """An IDX file's bytes, written out from the format's definition."""
    array = np.asarray(array)
    code = CODES[array.dtype.type] if code is None else code
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write(path, data, gz=False):
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def write_mnist(directory, kind="train", n=5, gz=False, dot_names=False):
    prefix = "train" if kind == "train" else "t10k"
    sep = "." if dot_names else "-"
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    suffix = ".gz" if gz else ""
    write(directory / f"{prefix}-images{sep}idx3-ubyte{suffix}", idx_bytes(images), gz)
    write(directory / f"{prefix}-labels{sep}idx1-ubyte{suffix}", idx_bytes(labels), gz)
    return images, labels


@pytest.mark.parametrize("dtype", list(CODES))
@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_round_trip_every_type_code(tmp_path, dtype, gz):
    array = (np.arange(24).reshape(2, 3, 4) - 7).astype(dtype)
    loaded = load_idx(write(tmp_path / "a.idx", idx_bytes(array), gz))
    assert loaded.dtype == np.dtype(dtype) and loaded.dtype.isnative
    assert loaded.shape == (2, 3, 4)
    np.testing.assert_array_equal(loaded, array)
    loaded[0, 0, 0] = 1  # a writable copy, not a view of the file's bytes


def test_gzip_is_told_by_magic_bytes_not_the_name(tmp_path):
    array = np.arange(6, dtype=np.uint8)
    np.testing.assert_array_equal(load_idx(write(tmp_path / "plain.gz", idx_bytes(array))), array)
    np.testing.assert_array_equal(
        load_idx(write(tmp_path / "packed.idx", idx_bytes(array), gz=True)), array)


def test_big_endian_values(tmp_path):
    raw = bytes([0, 0, 0x0B, 1, 0, 0, 0, 2]) + bytes([0x01, 0x02, 0xFF, 0xFE])
    np.testing.assert_array_equal(load_idx(write(tmp_path / "a", raw)), [258, -2])


def test_zero_dimensional_and_empty(tmp_path):
    assert load_idx(write(tmp_path / "s", bytes([0, 0, 8, 0, 42]))).shape == ()
    assert load_idx(write(tmp_path / "e", idx_bytes(np.zeros((0, 3), np.uint8)))).shape == (0, 3)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="IDX file .*nope' does not exist"):
        load_idx(tmp_path / "nope")


@pytest.mark.parametrize("raw, fragment", [
    (b"", "not an IDX file.*an empty file"),
    (b"PK\x03\x04rest", "not an IDX file.*50 4b 03 04"),
    (bytes([0, 0, 0x07, 1, 0, 0, 0, 1, 5]), "type code 0x07; valid codes are 0x08"),
    (bytes([0, 0, 8, 3, 0, 0, 0, 1]), "truncated: its header declares 3 dimensions"),
])
def test_not_an_idx_file(tmp_path, raw, fragment):
    with pytest.raises(ValueError, match=fragment):
        load_idx(write(tmp_path / "bad", raw))


def test_truncated_data(tmp_path):
    data = idx_bytes(np.zeros((4, 5), dtype=np.int32))
    with pytest.raises(ValueError, match=r"is truncated: shape \(4, 5\) of int32 needs 92 bytes.*"
                                         r"holds 86"):
        load_idx(write(tmp_path / "t", data[:-6]))


def test_extra_bytes(tmp_path):
    data = idx_bytes(np.zeros(3, dtype=np.uint8)) + b"\x00"
    with pytest.raises(ValueError, match="has extra bytes after the data"):
        load_idx(write(tmp_path / "x", data))


def test_truncated_gzip(tmp_path):
    packed = gzip.compress(idx_bytes(np.arange(100, dtype=np.uint8)))
    with pytest.raises(ValueError, match="truncated or corrupt gzip file"):
        load_idx(write(tmp_path / "t.gz", packed[: len(packed) // 2]))


# --- mnist --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["train", "test"])
@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gzip"])
def test_mnist_reads_standard_names(tmp_path, kind, gz):
    images, labels = write_mnist(tmp_path, kind, n=7, gz=gz)
    X, y = mnist(tmp_path, kind)
    assert X.shape == (7, 784) and X.dtype == np.float32
    assert y.shape == (7,) and y.dtype == np.int64
    np.testing.assert_allclose(X, images.reshape(7, -1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y, labels)
    assert X.min() >= 0.0 and X.max() <= 1.0


@pytest.mark.parametrize("kind", ["train", "test"])
def test_mnist_as_images_keeps_rows_and_columns(tmp_path, kind):
    images, labels = write_mnist(tmp_path, kind, n=4)
    X, y = datasets.load("mnist", directory=tmp_path, kind=kind, images=True)
    assert X.shape == (4, 1, 28, 28) and X.dtype == np.float32 and X.flags.c_contiguous
    np.testing.assert_allclose(X[:, 0], images / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(X.reshape(4, -1), mnist(tmp_path, kind)[0])
    np.testing.assert_array_equal(y, labels)


def test_mnist_images_flag_is_checked_and_missing_files_still_named(tmp_path):
    with pytest.raises(TypeError, match="images must be True or False; got 1"):
        mnist(tmp_path, images=1)
    with pytest.raises(FileNotFoundError, match=r"no MNIST train files .*train-images-idx3"
                                                r"-ubyte\[\.gz\] and .*never downloads"):
        mnist(tmp_path, images=True)


def test_mnist_dot_spelling_and_load_by_name(tmp_path):
    _, labels = write_mnist(tmp_path, "test", n=3, dot_names=True)
    X, y = datasets.load("mnist", directory=tmp_path, kind="test")
    np.testing.assert_array_equal(y, labels)
    assert X.shape == (3, 784)


def test_mnist_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="MNIST directory .* does not exist"):
        mnist(tmp_path / "absent")


def test_mnist_no_files_names_what_it_needs(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no MNIST test files .* t10k-images-idx3-ubyte"
                                                r"\[\.gz\] and t10k-labels-idx1-ubyte\[\.gz\]"):
        mnist(tmp_path, "test")


def test_mnist_labels_file_missing(tmp_path):
    write_mnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError,
                       match="has train-images-idx3-ubyte but not train-labels-idx1-ubyte"):
        mnist(tmp_path)


def test_mnist_count_mismatch(tmp_path):
    write_mnist(tmp_path, n=5)
    write(tmp_path / "train-labels-idx1-ubyte", idx_bytes(np.zeros(4, np.uint8)))
    with pytest.raises(ValueError, match="has 5 images but .* has 4 labels"):
        mnist(tmp_path)


def test_mnist_files_swapped(tmp_path):
    images, labels = write_mnist(tmp_path)
    write(tmp_path / "train-images-idx3-ubyte", idx_bytes(labels))
    with pytest.raises(ValueError, match=r"should hold uint8 images of shape \(n, rows, cols\); "
                                         r"got uint8 of shape \(5,\)"):
        mnist(tmp_path)


def test_mnist_label_out_of_range(tmp_path):
    write_mnist(tmp_path, n=3)
    write(tmp_path / "train-labels-idx1-ubyte", idx_bytes(np.array([1, 12, 3], np.uint8)))
    with pytest.raises(ValueError, match="has label 12; MNIST labels are 0..9"):
        mnist(tmp_path)


def test_mnist_truncated_images(tmp_path):
    write_mnist(tmp_path, n=3)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="train-images-idx3-ubyte' is truncated"):
        mnist(tmp_path)


def test_mnist_bad_kind(tmp_path):
    with pytest.raises(ValueError, match="kind must be 'train' or 'test'; got 'validation'"):
        mnist(tmp_path, "validation")
