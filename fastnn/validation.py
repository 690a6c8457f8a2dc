"""Input checks that turn bad data into one clear sentence instead of a deep traceback.

They work on any backend: host data is checked as it is turned into a device array,
and device arrays are checked with ``xp`` reductions (one counted scalar read each,
through ``backend.read_bool(..., check=True)``).
"""

import collections.abc
import math
import numbers

import numpy as np


def positive_number(name, value, hint=""):
    """``value`` as a float, which must be finite and > 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a positive number; got {value!r}")
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number; got {value!r}{hint}")
    return float(value)


def positive_int(name, value, hint=""):
    """``value`` as an int, which must be >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer; got {value!r}")
    if value <= 0:
        raise ValueError(f"{name} must be a positive integer; got {value!r}{hint}")
    return int(value)


def seed_or_none(name, value):
    """``value`` as a non-negative int, or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer or None; got {value!r}")
    return int(value)


def count_or_flag(name, value, meaning):
    """``value`` as a non-negative int; True and False count as 1 and 0."""
    if isinstance(value, bool):
        return int(value)
    if not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer ({meaning}) or a bool; "
                         f"got {value!r}")
    return int(value)


def flag(name, value):
    """``value`` as a bool; anything but True or False (a string such as 'no') is an error."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False; got {value!r}")
    return bool(value)


def in_range(name, value, low, high, *, closed_high=False):
    """``value`` as a float in [low, high) (or [low, high])."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number; got {value!r}")
    ok = low <= value <= high if closed_high else low <= value < high
    if not ok:
        bracket = "]" if closed_high else ")"
        raise ValueError(f"{name} must be in [{low}, {high}{bracket}; got {value!r}")
    return float(value)


def as_device_array(backend, data, what, limit=None, first_row=None):
    """``data`` as a numeric, non-empty, finite array on ``backend``; with ``limit`` (the
    largest value of the dtype it will be cast to), also no larger than that in
    magnitude, in the same single read. ``first_row``: ``data`` is the rows from
    ``first_row`` on of a larger array read in chunks (``fastnn.outofcore``), so an
    error names the row in the whole array and counts nothing past the first."""
    xp = backend.xp
    if isinstance(data, np.ndarray) or not backend.is_array(data):
        backend.reject_foreign(data)
        if isinstance(data, collections.abc.Iterator):
            raise TypeError(
                f"{what} is a {type(data).__name__}, which can be read only once and not by "
                f"rows; pass an array, a NumPy memmap (np.load(path, mmap_mode='r')) or "
                f"an array-like with shape, dtype and {what}[start:stop] giving rows"
            )
        try:
            host = np.asarray(data)
        except (ValueError, TypeError) as error:
            raise ValueError(
                f"{what} could not be read as a numeric array ({error}); pass a rectangular "
                f"NumPy array or list of lists"
            ) from None
        if host.dtype.kind not in "biuf":
            fix = "convert it with np.asarray(..., dtype=float)"
            if host.dtype.kind in "USO" and what.startswith("y"):  # labels as names
                fix = (f"convert numbers held as text with np.asarray({what}, dtype=float); "
                       f"number class names 0..k-1 with classes, {what} = np.unique({what}, "
                       f"return_inverse=True) (fastnn.sklearn's estimators take any labels)")
            raise TypeError(
                f"{what} must be numeric; got an array of dtype {host.dtype} "
                f"({_kind_words(host.dtype)}); {fix}"
            )
        data = backend.asarray(host)
    elif not xp.isdtype(data.dtype, ("bool", "integral", "real floating")):
        raise TypeError(f"{what} must be a real numeric array; got dtype {data.dtype}")
    if math.prod(data.shape) == 0:
        raise ValueError(
            f"{what} is empty (shape {tuple(data.shape)}); it needs at least one sample"
        )
    if not xp.isdtype(data.dtype, "real floating"):
        return data
    if limit is None or float(xp.finfo(data.dtype).max) <= limit:
        within = xp.isfinite(data)  # its finite values all fit
    else:
        within = xp.abs(data) <= limit  # NaN and inf fail this too
    if not backend.read_bool(xp.all(within), check=True):
        raise ValueError(_bad_values(backend.to_numpy(data), what, limit, first_row))
    return data


def _bad_values(host, what, limit, first_row):
    """The message for ``host`` holding NaN, infinite or too large values."""
    bad = ~np.isfinite(host)
    too_large = not bad.any()
    if too_large:
        bad = np.abs(host) > limit
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    value = [f"{host[first].item():.3g}"] if too_large else []
    count, at = f"{int(bad.sum())} ", first
    if first_row is not None:  # a chunk: its rows' place in the whole, nothing counted
        count, at = "", (first[0] + first_row, *first[1:])
        value.append(f"{what} is read in chunks; checking stopped at the first")
    at = f"{at} ({'; '.join(value)})" if value else f"{at}"
    if not too_large:
        return (f"{what} contains {count}NaN or infinite value(s), the first at index {at}; "
                f"remove or impute them")
    return (f"{what} has {count}value(s) too large for the model's dtype (beyond "
            f"+-{limit:.3g}), the first at index {at}; scale the data "
            f"(fastnn.data.standardize) or use a float64 model (dtype='float64')")


def _kind_words(dtype):
    return {"U": "strings", "S": "bytes", "O": "Python objects", "c": "complex numbers",
            "M": "datetimes", "m": "timedeltas"}.get(dtype.kind, "not real numbers")


def sample_shape(given, what="input_shape"):
    """``given`` (an int, or a tuple or list of ints) as one sample's shape, a tuple of
    positive ints: (n_features,) or (channels, height, width)."""
    if isinstance(given, numbers.Integral) and not isinstance(given, bool):
        given = (given,)
    if not isinstance(given, (tuple, list)) or not given:
        raise ValueError(f"{what} must be one sample's shape, a tuple such as (1, 28, 28) "
                         f"for 28x28 grey images; got {given!r}")
    return tuple(positive_int(f"each {what} entry", n) for n in given)


def check_samples(X, shape, what="X"):
    """X must hold samples of one sample's ``shape``: (n_samples, n_features) for
    ``shape`` (n_features,), (n_samples, C, H, W) for images of ``shape`` (C, H, W)."""
    shape = tuple(shape)
    if len(shape) == 1:
        return check_features(X, shape[0], what)
    got = tuple(X.shape)
    if got[1:] == shape:
        return None
    dims = ", ".join(str(n) for n in shape)
    layout = "(n_samples, channels, height, width)" if len(shape) == 3 else "(n_samples, ...)"
    hint = ""
    if X.ndim == 2 and got[1] == math.prod(shape):
        hint = f"; flat rows hold the same numbers: pass {what}.reshape(-1, {dims})"
    elif got == shape:
        hint = f"; that is one sample: pass {what}[None], a batch of one"
    elif len(shape) == 3 and got[-2:] == shape[1:] and X.ndim < 4 and shape[0] == 1:
        hint = f"; for one channel pass {what}.reshape(-1, {dims})"
    elif len(shape) == 3 and got[1:] == (*shape[1:], shape[0]):
        hint = (f"; fastnn's images are channels-first (NCHW, as in PyTorch): pass "
                f"{what}.transpose(0, 3, 1, 2)")
    elif len(shape) == 3 and got == (*shape[1:], shape[0]):
        hint = (f"; that is one channels-last image: pass {what}.transpose(2, 0, 1)[None], "
                f"a batch of one image, channels first (NCHW, as in PyTorch)")
    raise ValueError(
        f"{what} must have shape {layout} = (n_samples, {dims}) for this model; got shape "
        f"{got}{hint}"
    )


def check_features(X, n_features, what="X"):
    """X must be 2-D (n_samples, n_features) with the model's feature count."""
    if X.ndim != 2:
        hint = ""
        if X.ndim == 1 and n_features == 1:
            hint = f" (for a single feature use {what}.reshape(-1, 1))"
        elif X.ndim == 1 and X.shape[0] == n_features:
            hint = f" (for one sample use {what}.reshape(1, -1))"
        elif X.ndim == 1:
            hint = (f" (for a single feature use {what}.reshape(-1, 1); for one sample "
                    f"use {what}.reshape(1, -1))")
        raise ValueError(
            f"{what} must be 2-D with shape (n_samples, n_features); got shape "
            f"{tuple(X.shape)}{hint}"
        )
    if X.shape[1] != n_features:
        hint = ""
        if X.shape[0] == n_features:
            hint = (
                "; fastnn is batch-first: if your data is laid out (n_features, n_samples) "
                "as in the tutorials, pass X.T"
            )
        raise ValueError(
            f"{what} has {X.shape[1]} features per sample but the model's first layer expects "
            f"{n_features}{hint}"
        )


def check_rows(X, y, x_name="X", y_name="y"):
    """X and y must have one row per sample."""
    if y.ndim == 0 or X.shape[0] != y.shape[0]:
        rows = "a scalar" if y.ndim == 0 else f"{y.shape[0]} rows"
        raise ValueError(
            f"{x_name} has {X.shape[0]} rows but {y_name} has {rows}; they need one row per sample"
        )
