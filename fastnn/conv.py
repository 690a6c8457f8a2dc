"""Conv2D: a 2-D convolution with bias and activation on NCHW images.

The weights are laid out as PyTorch's ``nn.Conv2d`` (out_channels, in_channels, kh, kw)
with a bias (out_channels,), so weights map one to one, and the operation is PyTorch's
(a cross-correlation). The maths is the backend's (``conv2d_forward`` and
``conv2d_backward`` in the ops table; ``fastnn.conv_ops`` holds the generic version).
"""

from fastnn import activations, initializers
from fastnn.layers import WeightLayer, register
from fastnn.validation import positive_int
from fastnn.windows import check_fit, check_image, output_hw, padding_of, pair, short


@register
class Conv2D(WeightLayer):
    """A = activation(conv2d(X, W) + b) for X (N, in_channels, H, W).

    kernel_size, stride: an int or a pair (rows, columns). padding: zeros around the
    input; an int, a pair (rows, columns), a pair of (before, after) pairs, 'valid'
    (none) or 'same' (output as large as the input; stride 1 only, as in PyTorch, and
    for an even kernel the odd zero goes after, as PyTorch pads). Unlike PyTorch, the
    windows must tile the padded input exactly, (H + padding - kh) a multiple of the
    stride: building a model where rows or columns would be left out fails, saying
    which (PyTorch drops them silently). ``init`` draws W with fan-in
    in_channels*kh*kw and fan-out out_channels*kh*kw ('auto': He for ReLU-like
    activations, else Xavier); b starts at zero.
    """

    replayable = True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 activation="identity", init="auto"):
        self.in_channels = positive_int("Conv2D in_channels", in_channels)
        self.out_channels = positive_int("Conv2D out_channels", out_channels)
        self.kernel_size = pair("Conv2D kernel_size", kernel_size)
        self.stride = pair("Conv2D stride", stride)
        if isinstance(padding, str) and padding == "same" and self.stride != (1, 1):
            raise ValueError(f"Conv2D padding='same' needs stride 1 (PyTorch refuses it for "
                             f"strided convolutions too); got stride {stride!r}: give the "
                             f"padding as a number of zeros")
        self.padding = padding_of("Conv2D padding", padding, self.kernel_size)
        self.padding_given = padding if isinstance(padding, str) else self.padding
        self.activation = activations.get(activation)
        self.init = initializers.get(init, self.activation)
        self.needs_input_grad = True
        self.keep_z = True  # Sequential clears it: only the output layer's Z is read later

    def __repr__(self):
        parts = [str(self.in_channels), str(self.out_channels), short(self.kernel_size)]
        if self.stride != (1, 1):
            parts.append(f"stride={short(self.stride)}")
        if isinstance(self.padding_given, str):
            parts.append(f"padding={self.padding_given!r}")
        elif self.padding != ((0, 0), (0, 0)):
            (top, bottom), (left, right) = self.padding
            even = top == bottom and left == right
            parts.append(f"padding={short((top, left)) if even else self.padding}")
        parts.append(f"activation={self.activation.name!r}")
        return f"Conv2D({', '.join(parts)})"

    def config(self):
        padding = self.padding_given
        return {
            "type": "Conv2D", "in_channels": self.in_channels,
            "out_channels": self.out_channels, "kernel_size": list(self.kernel_size),
            "stride": list(self.stride),
            "padding": padding if isinstance(padding, str) else [list(p) for p in padding],
            "activation": self.activation.config(), "init": self.init.config(),
        }

    def output_shape(self, input_shape, source="the layer before it"):
        check_image(input_shape, source)
        channels = input_shape[0]
        if channels != self.in_channels:
            raise ValueError(
                f"takes {self.in_channels} input channel(s) but {source} gives images of "
                f"{channels} channel(s) (shape {tuple(input_shape)}); make in_channels "
                f"{channels}"
            )
        check_fit(input_shape, self.kernel_size, self.stride, self.padding, exact=True)
        return (self.out_channels, *output_hw(input_shape, self.kernel_size, self.stride,
                                              self.padding))

    def build(self, backend, dtype, rng):
        super().build(backend, dtype, rng)
        kh, kw = self.kernel_size
        shape = (self.out_channels, self.in_channels, kh, kw)
        fan_in, fan_out = self.in_channels * kh * kw, self.out_channels * kh * kw
        self.make_params(backend, dtype, self.init(rng, fan_in, fan_out, shape),
                         self.out_channels)

    def forward(self, X, training=False):
        Z, A, work = self.backend.ops.conv2d_forward(
            X, self.W.value, self.b.value, self.activation, self.stride, self.padding,
            self.keep_z)
        self.cache = (X, Z, A, work if training else None)
        return A

    def backward(self, dA):
        X, Z, A, work = self.cache
        dW, db, dX = self.backend.ops.conv2d_backward(
            X, self.W.value, dA, Z, A, work, self.activation, self.stride, self.padding,
            self.needs_input_grad)
        self.W.grad, self.b.grad = dW, db
        return dX

