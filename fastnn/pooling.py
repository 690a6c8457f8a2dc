"""Pooling layers on NCHW images, with PyTorch's semantics: MaxPool2D, AvgPool2D and
GlobalAvgPool2D.

A window of ``size`` moves by ``stride`` (default: the size, so windows sit side by
side), with no padding, in floor mode as PyTorch's: rows and columns past the last
whole window are left out (unlike ``Conv2D``, which refuses to leave any out). The
maths is the backend's (the ``maxpool2d_*`` and ``avgpool2d_*`` ops of the ops table;
``fastnn.conv_ops`` holds the generic versions).
"""

from fastnn.layers import Layer, register
from fastnn.windows import check_fit, check_image, output_hw, pair, short


class _Pool2D(Layer):
    """What the windowed pooling layers share: size, stride, the shape check."""

    replayable = True

    def __init__(self, size=None, stride=None, **torch_options):
        name = type(self).__name__
        if torch_options or size is None:
            raise TypeError(_arguments_error(name, size, stride, torch_options))
        self.size = pair(f"{name} size", size)
        self.stride = self.size if stride is None else pair(f"{name} stride", stride)

    def __repr__(self):
        args = [short(self.size)]
        if self.stride != self.size:
            args.append(f"stride={short(self.stride)}")
        return f"{type(self).__name__}({', '.join(args)})"

    def config(self):
        return {"type": type(self).__name__, "size": list(self.size),
                "stride": list(self.stride)}

    def output_shape(self, input_shape, source="the layer before it"):
        check_image(input_shape, source)
        check_fit(input_shape, self.size, self.stride, ((0, 0), (0, 0)), exact=False)
        return (input_shape[0], *output_hw(input_shape, self.size, self.stride))


def _arguments_error(name, size, stride, given):
    """The error for PyTorch's names and options given to a pooling layer."""
    if list(given) == ["kernel_size"] and size is None:
        call = repr(given["kernel_size"]) + ("" if stride is None else f", stride={stride!r}")
        return f"{name} calls the window's size 'size', not 'kernel_size': write {name}({call})"
    if not given:
        return f"{name} needs the window's size, e.g. {name}(2)"
    return (f"{name} takes only size (PyTorch's kernel_size) and stride; got "
            f"{', '.join(given)} (fastnn pools without padding, dilation or ceil_mode, as "
            f"PyTorch does by default)")


@register
class MaxPool2D(_Pool2D):
    """The maximum of each window. Where a window holds equal maxima, the gradient goes
    to the first (row-major), as in PyTorch; a window holding NaN gives NaN, and its
    gradient goes to the first NaN (PyTorch's CPU kernel picks the last)."""

    def forward(self, X, training=False):
        out, work = self.backend.ops.maxpool2d_forward(X, self.size, self.stride)
        self.cache = (X, out, work)
        return out

    def backward(self, dA):
        X, out, work = self.cache
        return self.backend.ops.maxpool2d_backward(dA, X, out, work, self.size, self.stride)


@register
class AvgPool2D(_Pool2D):
    """The mean of each window (dividing by the window's size)."""

    def forward(self, X, training=False):
        self.cache = tuple(X.shape)
        return self.backend.ops.avgpool2d_forward(X, self.size, self.stride)

    def backward(self, dA):
        return self.backend.ops.avgpool2d_backward(dA, self.cache, self.size, self.stride)


@register
class GlobalAvgPool2D(Layer):
    """The mean of each channel over the whole image: (N, C, H, W) to (N, C), as
    ``torch.mean(x, dim=(2, 3))`` (or AdaptiveAvgPool2d(1) then flatten)."""

    replayable = True

    def __repr__(self):
        return "GlobalAvgPool2D()"

    def config(self):
        return {"type": "GlobalAvgPool2D"}

    def output_shape(self, input_shape, source="the layer before it"):
        check_image(input_shape, source)
        return (input_shape[0],)

    def forward(self, X, training=False):
        N, C, H, W = X.shape
        self.cache = tuple(X.shape)
        out = self.backend.ops.avgpool2d_forward(X, (H, W), (H, W))
        return self.backend.xp.reshape(out, (N, C))

    def backward(self, dA):
        N, C, H, W = self.cache
        dA = self.backend.xp.reshape(dA, (N, C, 1, 1))
        return self.backend.ops.avgpool2d_backward(dA, self.cache, (H, W), (H, W))

