"""Convolutional networks by name or by a compact spec, sized to the images they take.

A spec is layer tokens joined by '-', read left to right; the layer sizes the spec does
not give (each Conv2D's input channels, each Dense layer's inputs) follow from the
images, and the output layer ``Dense(..., n_out, output_activation)`` is added at the
end, after a ``Flatten`` where the samples are still images (one is also put before
the first ``denseN``):

- ``convCxK[pP|same][sS]``: ``Conv2D(in, C, K)`` with the hidden activation, P zeros of
  padding on every side (or 'same', stride 1 only) and stride S, e.g. ``conv6x5p2``,
  ``conv16x3same``, ``conv8x3s2``;
- ``maxpoolK[sS]``, ``avgpoolK[sS]``: ``MaxPool2D(K)``, ``AvgPool2D(K)``, stride S if given;
- ``gap``: ``GlobalAvgPool2D()``; ``flatten``: ``Flatten()``;
- ``bn``: ``BatchNorm2D(C)`` on images of C channels, ``BatchNorm(n)`` on flat samples;
- ``denseN``: ``Dense(in, N)`` with the hidden activation; ``dropoutP``: ``Dropout(P)``,
  e.g. ``dropout0.25``.

The presets (``PRESETS``) are specs with a name: ``simplecnn`` is Saito's SimpleConvNet
(conv 30x5x5, ReLU, 2x2 max pool, Dense 100, ReLU, Dense 10 on MNIST: 4320 inputs to
its first Dense layer on 28x28 images, 120 on 8x8) and ``lenet`` is LeNet-5 as
PyTorch users write it (ReLU and max pooling instead of the original's sigmoid-like
squashing and subsampling; it needs images of at least 12x12).
"""

import math
import re

from fastnn.batchnorm import BatchNorm, BatchNorm2D
from fastnn.conv import Conv2D
from fastnn.layers import Dense, Dropout, Flatten
from fastnn.model import Sequential
from fastnn.pooling import AvgPool2D, GlobalAvgPool2D, MaxPool2D
from fastnn.validation import sample_shape
from fastnn.windows import input_shape_fix

PRESETS = {
    "simplecnn": "conv30x5-maxpool2-dense100",
    "lenet": "conv6x5p2-maxpool2-conv16x5-maxpool2-dense120-dense84",
}
TOKENS = {
    "conv": re.compile(r"conv(\d+)x(\d+)(?:p(\d+)|(same))?(?:s(\d+))?"),
    "pool": re.compile(r"(max|avg)pool(\d+)(?:s(\d+))?"),
    "dense": re.compile(r"dense(\d+)"),
    "dropout": re.compile(r"dropout(\d*\.?\d+)"),  # Dropout refuses p outside [0, 1)
}
SPEC_HELP = ("layer tokens joined by '-', such as conv16x3same-maxpool2-dense64 (tokens: "
             "convCxK[pP|same][sS], maxpoolK[sS], avgpoolK[sS], gap, flatten, bn, denseN, "
             "dropoutP)")


def resolve(spec):
    """``spec`` as (a name to show, its spec string): a preset's, or the spec itself."""
    if not isinstance(spec, str):
        raise TypeError(f"a model spec must be a string (a preset name or {SPEC_HELP}); "
                        f"got {type(spec).__name__}")
    key = spec.strip().lower()
    if key in PRESETS:
        return key, PRESETS[key]
    return key, key


def needs_images(spec):
    """True if ``spec`` (a preset name or a spec string) has a layer that takes images:
    a convolution or a pooling layer."""
    _, text = resolve(spec)
    kinds = [(_parse_token(token) or ("unknown", ()))[0] for token in text.split("-")]
    return any(kind in ("conv", "pool", "gap") for kind in kinds)


def layers(spec, input_shape, n_out, hidden_activation="relu", output_activation="softmax",
           init="auto"):
    """The layers of ``spec`` (a preset name or a spec string) for samples of
    ``input_shape`` (C, H, W), ending in ``Dense(..., n_out, output_activation)``.

    A ValueError names an unknown token, or the layer that does not fit the images
    (a kernel larger than its input, a conv whose windows do not tile it).
    """
    name, text = resolve(spec)
    tokens = text.split("-")
    parsed = [_parse_token(token) for token in tokens]
    if None in parsed:
        raise ValueError(_unknown(tokens[parsed.index(None)], name))
    tokens.append("the output layer")
    parsed.append(("output", (n_out, output_activation)))
    input_shape = sample_shape(input_shape)
    shape, built = input_shape, []
    for token, (kind, numbers) in zip(tokens, parsed):
        try:
            new = _layers_of(kind, numbers, shape, hidden_activation, init, first=not built)
        except ValueError as error:
            raise ValueError(f"model {name!r}: {token}: {error}") from None
        for layer in new:
            shape = _output_shape(layer, shape, name, token, input_shape)
        built += new
    return built


def cnn(spec, input_shape, n_out, hidden_activation="relu", output_activation="softmax",
        init="auto", **options):
    """A ``Sequential`` of ``layers(spec, ...)`` taking samples of ``input_shape``;
    ``options`` (loss, dtype, seed, backend) go to ``Sequential``.

    ``cnn("simplecnn", (1, 28, 28), 10, seed=0)`` is Saito's SimpleConvNet for MNIST.
    """
    built = layers(spec, input_shape, n_out, hidden_activation, output_activation, init)
    return Sequential(built, input_shape=input_shape, **options)


def _layers_of(kind, numbers, shape, activation, init, first):
    """The layers one token stands for (a Flatten first where Dense follows images);
    the kind 'output' is the output layer, ``numbers`` its (n_out, activation)."""
    if kind == "conv":
        out, kernel, pad, same, stride = numbers
        padding = "same" if same else int(pad or 0)
        return [Conv2D(_channels(shape, first), int(out), int(kernel),
                       stride=int(stride or 1), padding=padding, activation=activation,
                       init=init)]
    if kind == "pool":
        pool, size, stride = numbers
        cls = MaxPool2D if pool == "max" else AvgPool2D
        return [cls(int(size), None if stride is None else int(stride))]
    if kind in ("dense", "output"):
        n, activation = (int(numbers[0]), activation) if kind == "dense" else numbers
        flatten = [Flatten()] if len(shape) == 3 else []
        return [*flatten, Dense(math.prod(shape), n, activation, init=init)]
    if kind == "dropout":
        return [Dropout(float(numbers[0]))]
    if kind == "bn":
        return [BatchNorm2D(shape[0]) if len(shape) == 3 else BatchNorm(math.prod(shape))]
    return {"gap": [GlobalAvgPool2D()], "flatten": [Flatten()]}.get(kind, [])


def _parse_token(token):
    """(kind, the token's numbers) or None for a token that is no layer."""
    if token in ("gap", "flatten", "bn"):
        return token, ()
    for kind, pattern in TOKENS.items():
        match = pattern.fullmatch(token)
        if match:
            return kind, match.groups()
    return None


def _unknown(token, name):
    if token == name:  # a single word: a preset name misspelt, most likely
        return (f"unknown model {name!r}: give a preset ({', '.join(PRESETS)}) or "
                f"{SPEC_HELP}")
    return f"model spec {name!r}: {token!r} is not a layer; a spec is {SPEC_HELP}"


def _channels(shape, first):
    if len(shape) == 3:
        return shape[0]
    if first and len(shape) != 1:
        raise ValueError(f"a conv layer takes images (channels, height, width), but the "
                         f"samples have shape {shape}; {input_shape_fix(shape)}")
    if first:
        raise ValueError(f"a conv layer takes images (channels, height, width), but the "
                         f"samples are flat, of shape {shape}; give images, e.g. "
                         f"X.reshape(-1, 1, 28, 28) for 28x28 grey ones")
    raise ValueError(f"a conv layer takes images, but the layers before it made them flat "
                     f"(shape {shape}); put the conv layers before any dense, flatten or gap")


def _output_shape(layer, shape, name, token, input_shape):
    try:
        return tuple(layer.output_shape(shape))
    except ValueError as error:
        raise ValueError(f"model {name!r} does not fit samples of shape "
                         f"{tuple(input_shape)}: {token} ({layer!r}) {error}") from None
