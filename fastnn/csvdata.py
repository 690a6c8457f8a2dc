"""Numeric tables from CSV files: one label column, every other column a feature.

Errors name the line and column of the bad cell, so a file can be fixed in an editor.
"""

import csv
import math
import numbers
from pathlib import Path

import numpy as np

DELIMITERS = ",;\t|"


def load_csv(path, label="label", delimiter=None, header=None):
    """(X, y) from a CSV file.

    label: the label column, by header name or by index (negative counts from the end).
    delimiter: one character; None picks the most frequent of , ; tab | in the first line.
    header: True/False, or None to detect it (the first line is a header when any of
        its cells is not a number).
    X is float64 of shape (n_rows, n_columns - 1); y is int64 when every label is a
    whole number, else float64 (for regression). Blank lines are skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CSV file {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{str(path)!r} is not UTF-8 text (byte {error.start}); is it really a CSV file?"
        ) from None
    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if not lines:
        raise ValueError(f"CSV file {str(path)!r} is empty")
    delimiter = _delimiter(delimiter, lines[0][1])
    rows = [(n, cells) for (n, _), cells in
            zip(lines, csv.reader([line for _, line in lines], delimiter=delimiter))]
    if header is None:
        header = not all(_is_number(cell) for cell in rows[0][1])
    names = [c.strip() for c in rows[0][1]] if header else None
    body = rows[1:] if header else rows
    if not body:
        raise ValueError(f"CSV file {str(path)!r} has a header but no data rows")
    width = len(rows[0][1])
    if width < 2:
        raise ValueError(
            f"{str(path)!r} has one column per line with delimiter {delimiter!r}; it needs a "
            f"label column and at least one feature (pass delimiter= if it is another one)"
        )
    column = _label_index(label, names, width, path)
    for line, cells in body:
        if len(cells) != width:
            raise ValueError(
                f"{str(path)!r} line {line} has {len(cells)} cells but the first line has "
                f"{width}; every row needs the same number of columns"
            )
    table = np.array([[_number(cell, line, j, names, path) for j, cell in enumerate(cells)]
                      for line, cells in body])
    y = table[:, column]
    X = np.delete(table, column, axis=1)
    if np.all(y == np.round(y)):
        y = y.astype(np.int64)
    return X, y


def _delimiter(delimiter, first_line):
    if delimiter is None:
        return max(DELIMITERS, key=first_line.count)
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise ValueError(f"delimiter must be a single character; got {delimiter!r}")
    return delimiter


def _label_index(label, names, width, path):
    if isinstance(label, numbers.Integral) and not isinstance(label, bool):
        if not -width <= label < width:
            raise ValueError(
                f"label column index {label} is outside the {width} columns of {str(path)!r}"
            )
        return int(label) % width
    if not isinstance(label, str):
        raise TypeError(f"label must be a column name or index; got {label!r}")
    if names is None:
        raise ValueError(
            f"label column {label!r} cannot be found: {str(path)!r} has no header line; "
            f"pass the label column's index instead (e.g. label=0 or label=-1)"
        )
    stripped = label.strip()
    if stripped not in names:
        raise ValueError(
            f"{str(path)!r} has no label column {label!r}; its columns are "
            f"{', '.join(repr(n) for n in names)}"
        )
    return names.index(stripped)


def _is_number(cell):
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _number(cell, line, j, names, path):
    column = repr(names[j]) if names else str(j)
    try:
        value = float(cell)
    except ValueError:
        what = "an empty cell" if not cell.strip() else f"{cell.strip()!r}, not a number"
        raise ValueError(
            f"{str(path)!r} line {line}, column {column}: {what}; every cell must be numeric"
        ) from None
    if not math.isfinite(value):
        raise ValueError(
            f"{str(path)!r} line {line}, column {column}: {cell.strip()!r} is not a finite "
            f"number; remove or impute it"
        )
    return value
