"""Every kind of bad input gets an exception whose message names the problem and the fix."""

import re

import numpy as np
import pytest

import fastnn
from fastnn import Dense, Sequential, datasets


@pytest.fixture
def data():
    return datasets.moons(40, noise=0.1, seed=0)


@pytest.fixture
def binary(backend):
    return fastnn.from_layer_dims([2, 4, 1], "tanh", "sigmoid", seed=0)


@pytest.fixture
def multiclass(backend):
    return fastnn.from_layer_dims([2, 4, 3], "relu", "softmax", seed=0)


def test_row_count_mismatch(binary, data):
    X, y = data
    with pytest.raises(ValueError, match="X has 40 rows but y has 39 rows; they need one row"):
        binary.fit(X, y[:-1])
    with pytest.raises(ValueError, match="X has 40 rows but y has 39"):
        binary.evaluate(X, y[:-1])


def test_wrong_feature_count(binary, data):
    X, y = data
    with pytest.raises(ValueError, match="X has 3 features per sample but the model's first "
                                         "layer expects 2"):
        binary.fit(np.c_[X, X[:, :1]], y)
    with pytest.raises(ValueError, match="batch-first.*pass X.T"):
        binary.predict(X[:5].T)  # tutorial layout (n_features, n_samples)
    with pytest.raises(ValueError, match=r"must be 2-D .* got shape \(40,\).*reshape\(-1, 1\)"):
        binary.predict(X[:, 0])
    with pytest.raises(ValueError, match=r"got shape \(2,\) \(for one sample use "
                                         r"X.reshape\(1, -1\)\)"):
        binary.predict(X[0])  # one sample of the model's 2 features


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_in_X_or_y(binary, data, bad):
    X, y = data
    X, yf = X.copy(), y.astype(float)
    X[5, 1] = bad
    with pytest.raises(ValueError, match=r"X contains 1 NaN or infinite value\(s\), the first at "
                                         r"index \(5, 1\); remove or impute them"):
        binary.fit(X, y)
    yf[7] = bad
    with pytest.raises(ValueError, match=r"y contains 1 NaN or infinite value\(s\).*\(7,\)"):
        binary.fit(data[0], yf)
    with pytest.raises(ValueError, match="X_val contains 1 NaN"):
        binary.fit(data[0], y, validation_data=(X, y))


@pytest.mark.parametrize("labels, message", [
    ([0, 1, 3], r"label outside the class range at row 2 \(value 3\).*integers 0..2"),
    ([0, -1, 2], r"at row 1 \(value -1\)"),
    ([0.0, 1.5, 2.0], r"at row 1 \(value 1.5\)"),
])
def test_labels_outside_class_range(multiclass, labels, message):
    X = np.zeros((3, 2))
    with pytest.raises(ValueError, match=message):
        multiclass.fit(X, labels)


def test_bad_binary_and_one_hot_targets(binary, multiclass):
    X = np.zeros((3, 2))
    with pytest.raises(ValueError, match=r"values outside \[0, 1\].*needs 0/1 labels"):
        binary.fit(X, [0, 1, 2])
    with pytest.raises(ValueError, match="must hold one-hot rows"):
        multiclass.fit(X, [[1, 0, 0], [0, 1, 1], [0, 0, 1]])
    with pytest.raises(ValueError, match=r"y has shape \(3, 2\) but the model has 1 output unit"):
        binary.fit(X, np.zeros((3, 2)))


@pytest.mark.parametrize("X, message", [
    (np.array([["a", "b"], ["c", "d"]]), "X must be numeric; got an array of dtype <U1 "
                                         r"\(strings\)"),
    (np.array([[1, None], [2, 3]], dtype=object), r"dtype object \(Python objects\)"),
    (np.ones((2, 2), dtype=complex), r"complex128 \(complex numbers\)"),
    ([[1.0, 2.0], [3.0]], "X could not be read as a numeric array"),
])
def test_non_numeric_arrays(binary, X, message):
    with pytest.raises((TypeError, ValueError), match=message):
        binary.fit(X, [0, 1])


def test_non_numeric_labels(binary):
    """Class names as labels: the message says how to number them (np.asarray(y,
    dtype=float), the fix for numbers held as text, fails on names)."""
    with pytest.raises(TypeError, match=r"y must be numeric; got an array of dtype <U3 "
                                        r"\(strings\); .*np.asarray\(y, dtype=float\).* class "
                                        r"names .*np.unique\(y, return_inverse=True\)"):
        binary.fit(np.zeros((2, 2)), ["yes", "no"])


def test_nan_message_fits_prediction_too(binary, data):
    """NaN given to predict or evaluate: the message does not speak of training."""
    X, y = data
    binary.fit(X, y)
    X = X.copy()
    X[3, 0] = np.nan
    for call in (lambda: binary.predict(X), lambda: binary.evaluate(X, y)):
        with pytest.raises(ValueError, match=r"index \(3, 0\); remove or impute them$"):
            call()


def test_empty_data(binary):
    with pytest.raises(ValueError, match=r"X is empty \(shape \(0, 2\)\); it needs at least one"):
        binary.fit(np.zeros((0, 2)), np.zeros(0))
    with pytest.raises(ValueError, match="X is empty"):
        binary.predict([])


@pytest.mark.parametrize("batch_size", [0, -5])
def test_batch_size_must_be_positive(binary, data, batch_size):
    message = f"batch_size must be a positive integer; got {batch_size}$"
    with pytest.raises(ValueError, match=message):
        binary.fit(*data, batch_size=batch_size)


def test_batch_size_and_epochs_types(binary, data):
    with pytest.raises(TypeError, match="batch_size must be a positive integer; got 3.5"):
        binary.fit(*data, batch_size=3.5)
    with pytest.raises(ValueError, match="epochs must be a positive integer; got 0"):
        binary.fit(*data, epochs=0)
    with pytest.raises(ValueError, match=r"validation_data must be a pair \(X_val, y_val\)"):
        binary.fit(*data, validation_data=data[0])


@pytest.mark.parametrize("lr", [0, -0.01])
def test_lr_must_be_positive(binary, data, lr):
    with pytest.raises(ValueError, match=f"lr must be a positive number; got {lr}"):
        binary.fit(*data, lr=lr)
    binary.fit(*data, optimizer="adam")
    with pytest.raises(ValueError, match="lr must be a positive number"):
        binary.fit(*data, lr=lr)  # also when changing the kept optimizer's rate


@pytest.mark.parametrize("build, message", [
    (lambda: Dense(2, 1, activation="sigmod"), "unknown activation 'sigmod'.*Did you mean "
                                               "'sigmoid'"),
    (lambda: Sequential([Dense(2, 1)], loss="crossentropy"), "unknown loss 'crossentropy'; "
                                                             "valid names:"),
    (lambda: Dense(2, 1, init="kaiming"), "unknown initializer 'kaiming'; valid names: "
                                          "auto, glorot, he, normal, xavier"),
    (lambda: fastnn.optimizers.get("adamax"), "unknown optimizer 'adamax'; valid names: "
                                              "adagrad, adam, momentum, nesterov, rmsprop, sgd"),
    (lambda: fastnn.datasets.load("cifar10"), "unknown dataset 'cifar10'; valid names: blobs"),
])
def test_unknown_names(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_unknown_optimizer_in_fit(binary, data):
    with pytest.raises(ValueError, match="unknown optimizer 'adamw'"):
        binary.fit(*data, optimizer="adamw")


@pytest.mark.parametrize("output, loss, message", [
    ("relu", "binary_crossentropy", "binary_crossentropy needs a sigmoid output layer"),
    ("sigmoid", "categorical_crossentropy", "needs a softmax output layer.*or binary_crossentropy"),
    ("softmax", "binary_crossentropy", "or categorical_crossentropy"),
])
def test_loss_and_output_activation_must_fit(output, loss, message):
    with pytest.raises(ValueError, match=message):
        Sequential([Dense(2, 3, "tanh"), Dense(3, 3, output)], loss=loss)


def test_divergence_stops_and_keeps_the_last_finite_parameters(backend):
    X, y = datasets.blobs(60, n_classes=1, n_features=3, seed=0)
    target = X @ np.array([1.0, -2.0, 0.5])

    def model():
        return Sequential([Dense(3, 1, "identity")], seed=0)

    diverging = model()
    with pytest.raises(fastnn.TrainingDiverged, match=r"diverged at epoch \d+: the loss became "
                                                     r"(nan|inf); the model keeps the last "
                                                     r"parameters whose loss on the training "
                                                     r"data is finite, from the start of epoch "
                                                     r"\d+. Lower the learning rate"
                       ) as info:
        diverging.fit(X, target, epochs=500, lr=0.5)
    done = len(info.value.history["loss"])
    assert 0 < done < 499 and all(np.isfinite(info.value.history["loss"]))
    kept = [backend.to_numpy(p.value) for p in diverging.parameters()]
    assert all(np.all(np.isfinite(k)) for k in kept)
    candidates = []
    for epochs in (done, done - 1):  # the start of the failing epoch, or the one before
        reference = model()
        reference.fit(X, target, epochs=epochs, lr=0.5)
        candidates.append([backend.to_numpy(p.value) for p in reference.parameters()])
    assert any(all(np.array_equal(k, c) for k, c in zip(kept, cand)) for cand in candidates)


def test_mixing_arrays_from_two_backends(strict, data):
    model = fastnn.from_layer_dims([2, 4, 1], seed=0, backend="numpy")
    X = strict.asarray(data[0], strict.dtype("float32"))
    with pytest.raises(TypeError, match="got a array_api_strict.*array, but this model runs on "
                                        "the 'numpy' backend"):
        model.predict(X)


@pytest.mark.parametrize("verbose", ["yes", -1, 1.5, None])
def test_verbose_must_be_a_count(binary, data, verbose):
    with pytest.raises(ValueError, match=r"verbose must be a non-negative integer \(0 is "
                                         r"silent, k prints every k-th epoch\) or a bool; "
                                         rf"got {re.escape(repr(verbose))}$"):
        binary.fit(*data, verbose=verbose)
    assert binary.epochs_trained == 0


def test_verbose_true_prints_every_epoch(binary, data, capsys):
    binary.fit(*data, epochs=2, verbose=True)
    assert capsys.readouterr().out.count("epoch ") == 2


@pytest.mark.parametrize("seed", [-1, 2.5, "0", True])
def test_model_seed_must_be_a_non_negative_integer(seed):
    with pytest.raises(ValueError, match=rf"^seed must be a non-negative integer or None; "
                                         rf"got {re.escape(repr(seed))}$"):
        Sequential([Dense(2, 1)], seed=seed)
    with pytest.raises(ValueError, match="^seed must be"):
        fastnn.from_layer_dims([2, 3, 1], seed=seed)


def test_inputs_beyond_the_model_dtype_are_refused(backend):
    model = fastnn.from_layer_dims([2, 4, 3], "relu", "softmax", seed=0)  # float32
    X = np.ones((5, 2))
    X[3, 1] = -1e300
    for call in (lambda: model.predict_proba(X), lambda: model.evaluate(X, [0, 1, 2, 0, 1]),
                 lambda: model.fit(X, [0, 1, 2, 0, 1])):
        with pytest.raises(ValueError, match=r"X has 1 value\(s\) too large for the model's "
                                             r"dtype \(beyond \+-3.4e\+38\), the first at "
                                             r"index \(3, 1\) \(-1e\+300\); scale the data"):
            call()
    y = np.zeros(5)
    y[2] = 1e39
    regression = fastnn.from_layer_dims([2, 4, 1], "relu", "identity", seed=0)
    with pytest.raises(ValueError, match=r"y has 1 value\(s\) too large.*index \(2,\)"):
        regression.fit(np.ones((5, 2)), y)
    wide = fastnn.from_layer_dims([2, 4, 3], "relu", "softmax", seed=0, dtype="float64")
    assert np.all(np.isfinite(wide.predict_proba(X)))  # within float64's range


def _overflowing(backend):
    """A float32 softmax model whose first layer turns inputs of 3e38 into inf and -inf,
    so finite inputs give NaN outputs (inf - inf in the softmax) and a NaN loss."""
    model = fastnn.from_layer_dims([2, 4, 3], "relu", "softmax", seed=0)
    W = np.array([[10.0, 10.0, 1.0, 1.0], [10.0, -10.0, 1.0, -1.0]])
    model.layers[0].W.value = backend.asarray(W, dtype=model.dtype)
    X = np.array([[0.5, 0.25], [3e38, 3e38], [-1.0, 2.0]], dtype=np.float32)
    return model, X


def test_outputs_that_overflow_the_dtype_are_an_error_not_nan_rows(backend):
    model, X = _overflowing(backend)
    sizes = (r"overflowed float32 inside the network \(the largest input is 3e\+38 in "
             r"magnitude, the largest parameter 10\).*standardize.*dtype='float64'")
    with pytest.raises(fastnn.NotFinite, match=r"the model's outputs are NaN or infinite for 1 "
                                               r"of 3 rows of X \(the first: row 1\); every "
                                               r"input is finite, so the arithmetic " + sizes):
        model.predict_proba(X)
    with pytest.raises(fastnn.NotFinite, match=r"the loss on \(X, y\) is nan; .*" + sizes):
        model.evaluate(X, [0, 1, 2])
    with pytest.raises(fastnn.NotFinite):
        model.predict(X)
    assert np.all(np.isfinite(model.predict_proba(X[[0, 2]])))  # other rows are fine
    assert np.isfinite(model.evaluate(X[[0, 2]], [0, 2])["loss"])


def test_after_divergence_the_kept_parameters_give_finite_outputs(backend):
    """Found by search: a relu regression net diverging by its fourth full-batch epoch
    once held parameters of ~2e26 whose training loss was already infinite, and every
    prediction on its own training data was NaN or infinite, with no error."""
    X, y = datasets.moons(200, noise=0.2, seed=0)
    model = fastnn.from_layer_dims([2, 16, 1], "relu", "identity", seed=0)
    with pytest.raises(fastnn.TrainingDiverged, match=r"the model keeps the last parameters "
                                                     r"whose loss on the training data is "
                                                     r"finite, from the start of epoch \d") as info:
        model.fit(X * 10, y, epochs=50, lr=1.0)
    assert model.epochs_trained < len(info.value.history["loss"]) + 1
    assert np.all(np.isfinite(model.predict_proba(X * 10)))
    assert np.isfinite(model.evaluate(X * 10, y)["loss"])


def test_infinite_float32_input_to_a_float64_model_is_refused(backend, no_float_warnings):
    model = fastnn.from_layer_dims([2, 4, 1], seed=0, dtype="float64")
    X = np.ones((3, 2), dtype=np.float32)
    assert np.all(np.isfinite(model.predict_proba(X)))
    X[1, 0] = np.inf
    with pytest.raises(ValueError, match=r"X contains 1 NaN or infinite value\(s\), the first "
                                         r"at index \(1, 0\)"):
        model.predict_proba(X)
