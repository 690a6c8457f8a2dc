"""fastnn.presets: convolutional networks by name (simplecnn, lenet) or by a spec string,
sized to the images they take, and the errors for specs that are not layers or do not
fit the images."""

import pytest

from fastnn import (
    AvgPool2D,
    BatchNorm,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool2D,
    MaxPool2D,
    presets,
)


def test_simplecnn_is_saitos_sized_to_the_images():
    model = presets.cnn("simplecnn", (1, 28, 28), 10, seed=0)
    assert model.shapes == [(1, 28, 28), (30, 24, 24), (30, 12, 12), (4320,), (100,), (10,)]
    assert [type(layer) for layer in model.layers] == [Conv2D, MaxPool2D, Flatten, Dense, Dense]
    assert model.layers[0].W.value.shape == (30, 1, 5, 5)
    assert model.layers[0].activation.name == "relu" and model.layers[-1].activation.name \
        == "softmax" and model.loss.name == "categorical_crossentropy"
    small = presets.cnn("SimpleCNN", (1, 8, 8), 10)  # names are case-blind
    assert small.shapes[3] == (120,)


def test_lenet_is_lenet5_as_pytorch_users_write_it():
    model = presets.cnn("lenet", (1, 28, 28), 10)
    assert model.shapes == [(1, 28, 28), (6, 28, 28), (6, 14, 14), (16, 10, 10), (16, 5, 5),
                            (400,), (120,), (84,), (10,)]
    assert model.layers[0].padding == ((2, 2), (2, 2))


def test_each_token_makes_its_layer():
    built = presets.layers("conv8x3p1s2-avgpool2s1-conv4x3same-maxpool2-dropout0.25-gap-"
                           "dense6", (3, 9, 9), 2, hidden_activation="tanh",
                           output_activation="sigmoid")
    assert [repr(layer) for layer in built] == [
        "Conv2D(3, 8, 3, stride=2, padding=1, activation='tanh')",
        "AvgPool2D(2, stride=1)",
        "Conv2D(8, 4, 3, padding='same', activation='tanh')",
        "MaxPool2D(2)",
        "Dropout(0.25)",
        "GlobalAvgPool2D()",
        "Dense(4, 6, activation='tanh')",
        "Dense(6, 2, activation='sigmoid')",
    ]
    assert isinstance(built[1], AvgPool2D) and isinstance(built[5], GlobalAvgPool2D)
    assert isinstance(built[4], Dropout)
    assert [layer.p for layer in presets.layers("dropout0-dropout.5-dropout0.25", (4,), 2)[:3]] \
        == [0.0, 0.5, 0.25]


def test_bn_is_a_batchnorm_per_channel_on_images_and_per_feature_on_rows():
    built = presets.layers("conv8x3same-bn-maxpool2-dense16-bn", (1, 8, 8), 10)
    assert [type(layer) for layer in built] == [Conv2D, BatchNorm2D, MaxPool2D, Flatten, Dense,
                                                BatchNorm, Dense]
    assert built[1].channels == 8 and built[5].n_features == 16
    model = presets.cnn("conv8x3same-bn-maxpool2-dense16-bn", (1, 8, 8), 10, seed=0)
    assert model.shapes == [(1, 8, 8), (8, 8, 8), (8, 8, 8), (8, 4, 4), (128,), (16,), (16,),
                            (10,)]


def test_flatten_is_added_before_dense_and_the_output_layer():
    assert [type(layer) for layer in presets.layers("conv2x3", (1, 5, 5), 3)] == [
        Conv2D, Flatten, Dense]
    with_flatten = presets.layers("conv2x3-flatten-dense4", (1, 5, 5), 3)
    assert [type(layer) for layer in with_flatten] == [Conv2D, Flatten, Dense, Dense]
    assert repr(with_flatten[2]) == "Dense(18, 4, activation='relu')"
    flat = presets.layers("dense4", (7,), 1, output_activation="sigmoid")  # an MLP spec
    assert [repr(layer) for layer in flat] == ["Dense(7, 4, activation='relu')",
                                              "Dense(4, 1, activation='sigmoid')"]


def test_needs_images():
    assert presets.needs_images("simplecnn") and presets.needs_images("dense4-gap")
    assert not presets.needs_images("dense4-dropout0.5")


@pytest.mark.parametrize("spec, shape, message", [
    ("lenett", (1, 8, 8), "unknown model 'lenett': give a preset (simplecnn, lenet) or layer "
                          "tokens joined by '-', such as conv16x3same-maxpool2-dense64"),
    ("conv8-dense4", (1, 8, 8), "model spec 'conv8-dense4': 'conv8' is not a layer; a spec is "
                                "layer tokens joined by '-'"),
    ("lenet", (1, 8, 8), "model 'lenet' does not fit samples of shape (1, 8, 8): conv16x5 "
                         "(Conv2D(6, 16, 5, activation='relu')) has a 5x5 window but its input "
                         "is only 4 rows high"),
    ("conv4x3s2", (1, 8, 8), "model 'conv4x3s2' does not fit samples of shape (1, 8, 8): "
                             "conv4x3s2 (Conv2D(1, 4, 3, stride=2, activation='relu')) does "
                             "not tile its input"),
    ("simplecnn", (784,), "model 'simplecnn': conv30x5: a conv layer takes images (channels, "
                          "height, width), but the samples are flat, of shape (784,); give "
                          "images, e.g. X.reshape(-1, 1, 28, 28)"),
    ("simplecnn", 784, "model 'simplecnn': conv30x5: a conv layer takes images (channels, "
                       "height, width), but the samples are flat, of shape (784,)"),
    ("simplecnn", (20, 1, 8, 8), "model 'simplecnn': conv30x5: a conv layer takes images "
                                 "(channels, height, width), but the samples have shape (20, "
                                 "1, 8, 8); input_shape is one sample's shape, without the "
                                 "batch axis: give X.shape[1:], here (1, 8, 8)"),
    ("simplecnn", (28, 28), "model 'simplecnn': conv30x5: a conv layer takes images (channels, "
                            "height, width), but the samples have shape (28, 28); give "
                            "input_shape=(1, 28, 28) for images of one channel"),
    ("simplecnn", "1x28x28", "input_shape must be one sample's shape, a tuple such as"),
    ("conv4x3-dropout1.5", (1, 8, 8), "model 'conv4x3-dropout1.5': dropout1.5: Dropout p must "
                                      "be in [0.0, 1.0); got 1.5"),
    ("dropout1", (1, 8, 8), "model 'dropout1': dropout1: Dropout p must be in [0.0, 1.0)"),
    ("dense4-conv4x3", (1, 8, 8), "model 'dense4-conv4x3': conv4x3: a conv layer takes images, "
                                  "but the layers before it made them flat (shape (4,))"),
    ("conv4x3sames2", (1, 8, 8), "model 'conv4x3sames2': conv4x3sames2: Conv2D padding='same' "
                                 "needs stride 1"),
    ("conv0x3", (1, 8, 8), "model 'conv0x3': conv0x3: Conv2D out_channels must be a positive"),
])
def test_errors_name_the_token_and_the_fix(spec, shape, message):
    with pytest.raises(ValueError) as error:
        presets.cnn(spec, shape, 10)
    assert str(error.value).startswith(message), str(error.value)


def test_a_spec_must_be_a_string():
    with pytest.raises(TypeError, match="a model spec must be a string .*; got int"):
        presets.layers(3, (1, 8, 8), 10)
