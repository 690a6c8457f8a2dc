"""The geometry of sliding windows, shared by Conv2D and the pooling layers.

A window of ``size`` (kh, kw) rows and columns moves over an image by ``stride``
(sh, sw), over the image with ``padding`` ((top, bottom), (left, right)) zero rows and
columns added. The output has floor((H + top + bottom - kh) / sh) + 1 rows, as in
PyTorch; Conv2D asks for the division to be exact (``check_fit``), the pooling layers
floor it like PyTorch.
"""

import numbers

from fastnn.validation import positive_int


def pair(name, value):
    """``value`` (an int, or a pair of ints) as a (rows, columns) tuple of positive ints."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair (rows, columns); got {value!r}")
        return positive_int(f"{name} rows", value[0]), positive_int(f"{name} columns", value[1])
    return (positive_int(name, value),) * 2


def short(value):
    """A (rows, columns) pair as it reads best in a repr: 'a' when both are a, else '(a, b)'."""
    return str(value[0]) if value[0] == value[1] else str(tuple(value))


def padding_of(name, value, size):
    """``value`` as ((top, bottom), (left, right)) non-negative ints.

    Accepts an int (every side), a pair (rows, columns) of ints, a pair of
    (before, after) pairs, 'valid' (no padding) or 'same' (the output as large as the
    input at stride 1: kernel - 1 zeros in all, the odd one at the bottom or right,
    as PyTorch pads).
    """
    if isinstance(value, str):
        if value == "valid":
            return (0, 0), (0, 0)
        if value == "same":
            return tuple(((k - 1) // 2, k - 1 - (k - 1) // 2) for k in size)
        raise ValueError(f"{name} must be a number of zeros, 'same' or 'valid'; got {value!r}")
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return tuple(_sides(name, side) for side in value)
    if isinstance(value, (tuple, list)):
        raise ValueError(f"{name} must be an int, a pair (rows, columns) or a pair of "
                         f"(before, after) pairs; got {value!r}")
    return (_count(name, value),) * 2, (_count(name, value),) * 2


def _sides(name, value):
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must give (before, after) for each axis; got {value!r}")
        return _count(name, value[0]), _count(name, value[1])
    return (_count(name, value),) * 2


def _count(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer number of zeros; "
                         f"got {value!r}")
    return int(value)


def output_size(length, kernel, stride, before=0, after=0):
    """Windows along one axis of ``length`` padded by ``before`` and ``after`` (floored)."""
    return (length + before + after - kernel) // stride + 1


def output_hw(shape, size, stride, padding=((0, 0), (0, 0))):
    """(OH, OW) for an input of per-sample ``shape`` (C, H, W) or (N, C, H, W)."""
    return tuple(output_size(shape[-2 + axis], size[axis], stride[axis], *padding[axis])
                 for axis in (0, 1))


def check_image(shape, what):
    """``shape`` (one sample's) must be an image (channels, height, width)."""
    if len(shape) != 3:
        fix = f"{what} must give images (a Flatten() turns images into features, not back)"
        if "input_shape" in what:  # the model's own: the user's mistake in giving it
            fix = input_shape_fix(shape)
        raise ValueError(
            f"takes images of shape (channels, height, width) but gets samples of shape "
            f"{tuple(shape)} from {what}; {fix}"
        )


def input_shape_fix(shape):
    """What to give instead of ``shape`` as the input_shape of a network taking images."""
    shape = tuple(shape)
    if len(shape) == 4:
        return (f"input_shape is one sample's shape, without the batch axis: give "
                f"X.shape[1:], here {shape[1:]}")
    if len(shape) == 2:
        return (f"give input_shape={(1, *shape)} for images of one channel (and the images "
                f"as X.reshape(-1, {', '.join(str(n) for n in (1, *shape))}))")
    return ("give one image's shape (channels, height, width), e.g. input_shape=(1, 28, 28) "
            "for 28x28 grey images, and the images as X.reshape(-1, 1, 28, 28)")


def check_fit(shape, size, stride, padding, exact):
    """The windows must fit in the padded image: each window no larger than it, and with
    ``exact``, the stride must step from the first row (column) to exactly the last, so
    no row (column) of the padded input is left out. Raises ValueError saying how."""
    names = ("height", "width")
    for axis in (0, 1):
        length, kernel, step = shape[1 + axis], size[axis], stride[axis]
        before, after = padding[axis]
        padded = length + before + after
        if kernel > padded:
            unit, extent = (("rows", "high"), ("columns", "wide"))[axis]
            raise ValueError(
                f"has a {size[0]}x{size[1]} window but its input is only {padded} {unit} "
                f"{extent} ({length}, plus {before + after} of padding); use a smaller "
                f"window, more padding, or a larger input"
            )
        left_out = (padded - kernel) % step
        if exact and left_out:
            more = step - left_out
            unit = "row(s)" if axis == 0 else "column(s)"
            raise ValueError(
                f"does not tile its input: ({length} + {before + after} padding - "
                f"{kernel}) / stride {step} is not a whole number, so the last {left_out} "
                f"{unit} of the padded input would be left out (PyTorch drops them "
                f"silently; fastnn refuses on purpose). Make {names[axis]} + padding - "
                f"kernel a multiple of the stride: e.g. {more} more {unit} of padding "
                f"after, or {left_out} fewer {unit} of input"
            )
