"""CSV tables: label by name or index, header and delimiter detection, label dtypes, and
errors that name the line and column of the problem."""

import numpy as np
import pytest

from fastnn import datasets
from fastnn.csvdata import load_csv


def write(tmp_path, text, name="table.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_label_by_name_anywhere(tmp_path):
    path = write(tmp_path, "x1,label,x2\n0.5,1,2\n-1,0,3.25\n")
    X, y = load_csv(path)
    np.testing.assert_array_equal(X, [[0.5, 2.0], [-1.0, 3.25]])
    np.testing.assert_array_equal(y, [1, 0])
    assert X.dtype == np.float64 and y.dtype == np.int64


def test_label_by_index_without_header(tmp_path):
    path = write(tmp_path, "1,2,0\n3,4,1\n5,6,2\n")
    X, y = load_csv(path, label=-1)
    np.testing.assert_array_equal(X, [[1, 2], [3, 4], [5, 6]])
    np.testing.assert_array_equal(y, [0, 1, 2])
    X0, y0 = load_csv(path, label=0)
    np.testing.assert_array_equal(y0, [1, 3, 5])
    np.testing.assert_array_equal(X0[:, 1], [0, 1, 2])


def test_label_by_index_with_header(tmp_path):
    X, y = load_csv(write(tmp_path, "a,b,target\n1,2,1\n3,4,0\n"), label=2)
    np.testing.assert_array_equal(y, [1, 0])
    assert X.shape == (2, 2)


def test_fractional_labels_stay_float_for_regression(tmp_path):
    _, y = load_csv(write(tmp_path, "x,label\n1,0.5\n2,1.0\n"))
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y, [0.5, 1.0])


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_delimiter_detected(tmp_path, delimiter):
    text = delimiter.join(["f", "label"]) + "\n" + delimiter.join(["1.5", "1"]) + "\n"
    X, y = load_csv(write(tmp_path, text))
    np.testing.assert_array_equal(X, [[1.5]])
    np.testing.assert_array_equal(y, [1])


def test_explicit_delimiter_and_header(tmp_path):
    path = write(tmp_path, "1;2;1\n3;4;0\n")
    X, y = load_csv(path, label=-1, delimiter=";", header=False)
    np.testing.assert_array_equal(X, [[1, 2], [3, 4]])
    # forcing a header makes the first row names: "1", "2", "1"
    X, y = load_csv(path, label="2", delimiter=";", header=True)
    np.testing.assert_array_equal(X, [[3, 0]])
    np.testing.assert_array_equal(y, [4])


def test_blank_lines_spaces_quotes_and_bom(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b'\xef\xbb\xbf"x", label\r\n\r\n 1 , 0\r\n"2",1\r\n\r\n')
    X, y = load_csv(path)
    np.testing.assert_array_equal(X, [[1], [2]])
    np.testing.assert_array_equal(y, [0, 1])


def test_load_by_name(tmp_path):
    path = write(tmp_path, "a,label\n1,1\n")
    X, y = datasets.load("csv", path=path)
    np.testing.assert_array_equal(X, [[1]])
    np.testing.assert_array_equal(y, [1])


# --- errors -------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="CSV file .*absent.csv' does not exist"):
        load_csv(tmp_path / "absent.csv")


def test_missing_label_column_lists_columns(tmp_path):
    with pytest.raises(ValueError, match="has no label column 'label'; its columns are 'a', 'b'"):
        load_csv(write(tmp_path, "a,b\n1,2\n"))


def test_label_name_without_header(tmp_path):
    with pytest.raises(ValueError, match="has no header line; pass the label column's index"):
        load_csv(write(tmp_path, "1,2\n3,4\n"))


@pytest.mark.parametrize("label", [3, -4])
def test_label_index_out_of_range(tmp_path, label):
    with pytest.raises(ValueError, match=f"label column index {label} is outside the 3 columns"):
        load_csv(write(tmp_path, "1,2,3\n"), label=label)


def test_label_of_wrong_type(tmp_path):
    with pytest.raises(TypeError, match="label must be a column name or index; got 1.5"):
        load_csv(write(tmp_path, "1,2\n"), label=1.5)


def test_non_numeric_cell_names_line_and_column(tmp_path):
    path = write(tmp_path, "x1,x2,label\n1,2,0\n\n3,abc,1\n")
    with pytest.raises(ValueError, match=r"line 4, column 'x2': 'abc', not a number"):
        load_csv(path)


def test_empty_cell_names_line_and_column(tmp_path):
    with pytest.raises(ValueError, match=r"line 2, column 1: an empty cell"):
        load_csv(write(tmp_path, "1,2,0\n3,,1\n"), label=-1)


def test_non_numeric_label(tmp_path):
    with pytest.raises(ValueError, match=r"line 3, column 'label': 'setosa', not a number"):
        load_csv(write(tmp_path, "x,label\n1,0\n2,setosa\n"))


@pytest.mark.parametrize("cell", ["nan", "inf", "-Infinity"])
def test_non_finite_cell(tmp_path, cell):
    with pytest.raises(ValueError, match=f"line 2, column 'x': '{cell}' is not a finite number"):
        load_csv(write(tmp_path, f"x,label\n{cell},1\n"))


def test_ragged_row(tmp_path):
    with pytest.raises(ValueError, match="line 3 has 2 cells but the first line has 3"):
        load_csv(write(tmp_path, "a,b,label\n1,2,0\n3,1\n"))


@pytest.mark.parametrize("text, fragment", [
    ("", "is empty"),
    ("\n  \n", "is empty"),
    ("a,label\n", "has a header but no data rows"),
    ("label\n1\n", "one column per line with delimiter ','"),
])
def test_degenerate_files(tmp_path, text, fragment):
    with pytest.raises(ValueError, match=fragment):
        load_csv(write(tmp_path, text))


def test_bad_delimiter(tmp_path):
    with pytest.raises(ValueError, match="delimiter must be a single character; got ', '"):
        load_csv(write(tmp_path, "a,label\n1,2\n"), delimiter=", ")


def test_not_text(tmp_path):
    path = tmp_path / "image.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(ValueError, match="is not UTF-8 text"):
        load_csv(path)
