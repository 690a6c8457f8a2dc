"""Training extras: callback hooks and the stop flag, early stopping with restored best
weights, learning-rate schedules, gradient clipping on the device, the progress bar,
the CSV logger, and the one device read per epoch."""

import copy
import csv
import io
import math
import sys

import numpy as np
import pytest
from conftest import host

import fastnn
from fastnn import Callback, CSVLogger, EarlyStopping, ProgressBar, datasets
from fastnn.schedules import CosineDecay, StepDecay, from_config
from fastnn.steps import global_norm

X, Y = datasets.moons(200, noise=0.1, seed=0)


def small(seed=0, dtype="float32", backend=None):
    return fastnn.from_layer_dims([2, 8, 1], "tanh", "sigmoid", seed=seed, dtype=dtype,
                                  backend=backend)


class Recorder(Callback):
    def __init__(self, stop_at=None):
        self.calls, self.stop_at = [], stop_at

    def on_train_begin(self, logs):
        self.calls.append(("train_begin", dict(self.params)))

    def on_epoch_begin(self, epoch, logs):
        self.calls.append(("epoch_begin", epoch, self.model.optimizer.lr))

    def on_epoch_end(self, epoch, logs):
        self.calls.append(("epoch_end", epoch, sorted(logs)))
        if epoch == self.stop_at:
            self.model.stop_training = True

    def on_train_end(self, logs):
        self.calls.append(("train_end", logs["loss"]))

    def close(self):
        self.calls.append(("close",))


# ---- hooks ----

def test_hooks_run_in_order_with_global_epoch_numbers(backend):
    model, recorder = small(), Recorder()
    history = model.fit(X, Y, epochs=2, batch_size=64, lr=0.1, callbacks=[recorder],
                        validation_data=(X, Y))
    keys = ["accuracy", "loss", "val_accuracy", "val_loss"]
    assert recorder.calls == [
        ("train_begin", {"epochs": 2, "steps": 4}),
        ("epoch_begin", 1, 0.1), ("epoch_end", 1, keys),
        ("epoch_begin", 2, 0.1), ("epoch_end", 2, keys),
        ("train_end", history["loss"][-1]), ("close",),
    ]
    recorder.calls.clear()
    model.fit(X, Y, epochs=1, callbacks=[recorder])
    assert [c[1] for c in recorder.calls if c[0] == "epoch_end"] == [3]


def test_the_stop_flag_ends_training_after_that_epoch(backend):
    model = small()
    history = model.fit(X, Y, epochs=10, callbacks=[Recorder(stop_at=3)])
    assert len(history["loss"]) == 3 and model.epochs_trained == 3
    assert model.fit(X, Y, epochs=2)["loss"] and model.epochs_trained == 5  # flag reset


def test_close_runs_after_an_error_and_train_end_does_not(tmp_path):
    class Boom(Callback):
        def on_epoch_end(self, epoch, logs):
            raise RuntimeError("boom")

    recorder, logger = Recorder(), CSVLogger(tmp_path / "log.csv")
    with pytest.raises(RuntimeError, match="boom"):
        small().fit(X, Y, epochs=3, callbacks=[recorder, logger, Boom()])
    assert recorder.calls[-1] == ("close",) and "train_end" not in [c[0] for c in recorder.calls]
    assert logger.file is None


@pytest.mark.parametrize("callbacks, error, message", [
    (EarlyStopping(), TypeError, "wrap a single callback in a list"),
    ([print], TypeError, r"callbacks\[0\] is a builtin_function_or_method, not a fastnn Callback"),
    ("early", TypeError, "must be a list of fastnn Callback objects; got str"),
])
def test_bad_callbacks(callbacks, error, message):
    with pytest.raises(error, match=message):
        small().fit(X, Y, callbacks=callbacks)


# ---- early stopping ----

def test_early_stopping_stops_and_restores_the_best_weights(backend):
    """Validating against flipped labels: val_loss is best after epoch 1, then rises."""
    fit = {"batch_size": 50, "optimizer": "adam", "lr": 0.05, "seed": 0}
    model, stopper = small(), EarlyStopping("val_loss", patience=2)
    history = model.fit(X, Y, epochs=20, validation_data=(X, 1 - Y), callbacks=[stopper], **fit)
    assert np.argmin(history["val_loss"]) == 0 and np.all(np.diff(history["val_loss"]) > 0)
    assert len(history["loss"]) == 4 and model.epochs_trained == 4
    assert (stopper.best_epoch, stopper.stopped_epoch) == (1, 4)
    assert stopper.best == history["val_loss"][0] and stopper.mode == "min"
    after_one = small()
    after_one.fit(X, Y, epochs=1, **fit)
    for p, q in zip(model.parameters(), after_one.parameters()):
        np.testing.assert_array_equal(host(backend, p.value), host(backend, q.value))
    assert model.evaluate(X, 1 - Y)["loss"] == pytest.approx(stopper.best, rel=1e-6)


def test_early_stopping_without_restoring_keeps_the_last_weights():
    model, stopper = small(), EarlyStopping(patience=1, restore_best=False)
    model.fit(X, Y, epochs=20, batch_size=50, optimizer="adam", lr=0.05, seed=0,
              validation_data=(X, 1 - Y), callbacks=[stopper])
    assert stopper.stopped_epoch == 3
    assert model.evaluate(X, 1 - Y)["loss"] > stopper.best


def feed(stopper, values, key="val_loss"):
    """Run the hooks by hand on a series of monitored values; returns the stop epoch."""
    stopper.model = small()
    stopper.on_train_begin({})
    for epoch, value in enumerate(values, start=1):
        stopper.on_epoch_end(epoch, {key: value})
        if stopper.model.stop_training:
            return epoch
    return None


def test_patience_min_delta_and_mode():
    assert feed(EarlyStopping(patience=0, restore_best=False), [3, 2, 2.5]) == 3
    assert feed(EarlyStopping(patience=2, restore_best=False), [3, 2, 2.5, 2.1, 1.9, 2]) is None
    assert feed(EarlyStopping(patience=1, min_delta=0.5, restore_best=False),
                [3, 2.6, 2.2, 2.0, 1.9]) == 5  # 2.6 is not 0.5 better than 3; 2.2 is
    up = EarlyStopping("val_accuracy", patience=0, restore_best=False)
    assert up.mode == "max" and feed(up, [0.5, 0.6, 0.55], "val_accuracy") == 3
    down = EarlyStopping("loss", mode="max", patience=0, restore_best=False)
    assert feed(down, [1.0, 2.0, 1.5], "loss") == 3
    assert feed(EarlyStopping(patience=1, restore_best=False), [math.nan, 2, math.nan,
                                                               math.nan]) == 4


def test_early_stopping_needs_its_monitored_value():
    with pytest.raises(ValueError, match="monitors 'val_loss'.*accuracy, loss.*validation_data"):
        small().fit(X, Y, epochs=2, callbacks=[EarlyStopping()])


@pytest.mark.parametrize("kwargs, error, message", [
    ({"monitor": 3}, TypeError, "monitor must be a log name"),
    ({"mode": "lowest"}, ValueError, "mode must be 'auto', 'min' or 'max'"),
    ({"patience": -1}, ValueError, "patience must be an integer >= 0"),
    ({"patience": 1.5}, ValueError, "patience must be an integer >= 0"),
    ({"min_delta": -0.1}, ValueError, "min_delta must be in"),
])
def test_bad_early_stopping_settings(kwargs, error, message):
    with pytest.raises(error, match=message):
        EarlyStopping(**kwargs)


# ---- learning-rate schedules ----

def scheduled_lrs(model, epochs, **fit):
    recorder = Recorder()
    model.fit(X, Y, epochs=epochs, callbacks=[recorder], **fit)
    return [c[2] for c in recorder.calls if c[0] == "epoch_begin"]


def test_step_decay(backend):
    schedule = StepDecay(2, gamma=0.5)
    model = small()
    lrs = scheduled_lrs(model, 5, optimizer="sgd", lr=0.1, lr_schedule=schedule)
    assert lrs == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.025], rel=1e-15)
    assert schedule.base_lr is None and model.lr_schedule is not schedule  # the model's copy
    assert scheduled_lrs(model, 2) == pytest.approx([0.025, 0.0125])  # kept across fits
    assert scheduled_lrs(model, 1, lr=1.0) == pytest.approx([0.125])  # lr= resets the base


def test_cosine_decay():
    lrs = scheduled_lrs(small(), 6, optimizer="momentum", lr=0.1,
                        lr_schedule=CosineDecay(4, min_lr=0.01))
    expected = [0.01 + 0.09 * (1 + math.cos(math.pi * k / 4)) / 2 for k in range(4)]
    assert lrs == pytest.approx(expected + [0.01, 0.01], rel=1e-15)


def test_a_new_schedule_counts_from_when_it_is_given():
    model = small()
    model.fit(X, Y, epochs=3, lr=0.2)
    assert scheduled_lrs(model, 2, lr_schedule=StepDecay(1, 0.5)) == pytest.approx([0.2, 0.1])
    assert model.lr_schedule.config() == {"name": "step", "step_size": 1, "gamma": 0.5,
                                          "base_lr": 0.2, "start_epoch": 3}
    assert repr(model.lr_schedule) == "StepDecay(step_size=1, gamma=0.5)"
    assert from_config(model.lr_schedule.config()).lr(4) == pytest.approx(0.1)


@pytest.mark.parametrize("make, error, message", [
    (lambda: StepDecay(0), ValueError, "step_size must be a positive integer"),
    (lambda: StepDecay(2, gamma=0), ValueError, "gamma must be > 0"),
    (lambda: StepDecay(2, gamma=1.5), ValueError, r"gamma must be in \[0.0, 1.0\]"),
    (lambda: CosineDecay(0), ValueError, "total_epochs must be a positive integer"),
    (lambda: CosineDecay(5, min_lr=-1), ValueError, "min_lr must be in"),
    (lambda: small().fit(X, Y, lr=0.1, lr_schedule=CosineDecay(5, min_lr=1.0)), ValueError,
     r"min_lr=1.0 is above the learning rate it starts from \(0.1\)"),
    (lambda: small().fit(X, Y, lr_schedule="cosine"), TypeError,
     "lr_schedule must be a fastnn.schedules schedule"),
    (lambda: from_config({"name": "exponential"}), ValueError,
     "unknown learning-rate schedule 'exponential'"),
])
def test_bad_schedules(make, error, message):
    with pytest.raises(error, match=message):
        make()


# ---- gradient clipping ----

def one_clipped_step(backend, **clip):
    """Parameters after one full-batch SGD step with clipping, and the raw gradients."""
    model = small(dtype="float64")
    probe = copy.deepcopy(model)
    probe.compute_gradients(*probe.prepare(X, Y))
    grads = [host(backend, p.grad) for p in probe.parameters()]
    before = [host(backend, p.value).copy() for p in model.parameters()]  # SGD works in place
    model.fit(X, Y, epochs=1, optimizer="sgd", lr=0.5, **clip)
    after = [host(backend, p.value) for p in model.parameters()]
    return before, grads, after


def test_clip_norm_rescales_the_global_gradient_norm(backend):
    before, grads, after = one_clipped_step(backend, clip_norm=0.05)
    norm = math.sqrt(sum(float(np.sum(g * g)) for g in grads))
    assert norm > 0.05  # so clipping is active
    for b, g, a in zip(before, grads, after):
        np.testing.assert_allclose(a, b - 0.5 * g * (0.05 / norm), rtol=1e-10, atol=1e-14)
    before, grads, after = one_clipped_step(backend, clip_norm=1e6)  # no-op when below
    for b, g, a in zip(before, grads, after):
        np.testing.assert_allclose(a, b - 0.5 * g, rtol=1e-12, atol=1e-15)


def test_clip_value_clips_each_entry(backend):
    before, grads, after = one_clipped_step(backend, clip_value=0.01)
    assert max(float(np.abs(g).max()) for g in grads) > 0.01
    for b, g, a in zip(before, grads, after):
        np.testing.assert_allclose(a, b - 0.5 * np.clip(g, -0.01, 0.01), rtol=1e-12,
                                   atol=1e-15)


def test_global_norm_does_not_overflow(backend):
    xp = backend.xp
    arrays = [xp.asarray(v, dtype=xp.float32, device=backend.device)
              for v in ([3e30, -4e30], [[1e25]])]
    assert float(host(backend, global_norm(xp, arrays))) == pytest.approx(5e30, rel=1e-6)
    zeros = [xp.zeros(3, dtype=xp.float32, device=backend.device)]
    assert float(host(backend, global_norm(xp, zeros))) == 0.0


def test_bad_clipping_settings():
    with pytest.raises(ValueError, match="clip_norm must be a positive number"):
        small().fit(X, Y, clip_norm=0)
    with pytest.raises(TypeError, match="clip_value must be a positive number"):
        small().fit(X, Y, clip_value="1")


def test_one_device_read_per_epoch_and_none_per_step(strict):
    """With clipping on, fit reads the device once per epoch (the loss and metric sums
    together) plus once at the end, whatever the number of steps."""
    def count(epochs, batch_size):
        model = small(backend=strict)
        with strict.count_transfers() as counted:
            model.fit(X, Y, epochs=epochs, batch_size=batch_size, clip_norm=0.1,
                      clip_value=1.0)
        return counted.to_host - counted.checks, counted.to_device

    assert count(3, 10)[0] == count(3, 200)[0] == 3 + 1
    assert count(3, 10)[1] == count(3, 50)[1]  # host->device copies do not grow with steps


# ---- progress bar and CSV log ----

class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_shows_epochs_and_metrics():
    out = io.StringIO()
    model = small()
    model.fit(X, Y, epochs=3, callbacks=[ProgressBar(enabled=True, file=out)])
    text = out.getvalue()
    assert "epochs 1-3" in text and "3/3" in text and "loss=" in text and "accuracy=" in text
    out.truncate(0)
    model.fit(X, Y, epochs=2, callbacks=[ProgressBar(enabled=True, file=out)])
    assert "epochs 4-5" in out.getvalue()


def test_progress_is_quiet_unless_asked_or_on_a_terminal(capsys, monkeypatch):
    small().fit(X, Y, epochs=2)  # default: no bar
    small().fit(X, Y, epochs=2, progress=None)  # pytest captures: not a terminal
    assert capsys.readouterr().err == ""
    small().fit(X, Y, epochs=2, progress=True)
    assert "2/2" in capsys.readouterr().err
    err = Terminal()
    monkeypatch.setattr(sys, "stdout", Terminal())
    monkeypatch.setattr(sys, "stderr", err)
    small().fit(X, Y, epochs=2, progress=None)
    assert "2/2" in err.getvalue() and "loss=" in err.getvalue()
    with pytest.raises(ValueError, match="progress must be None"):
        small().fit(X, Y, progress="yes")
    with pytest.raises(ValueError, match="enabled must be None, True or False"):
        ProgressBar(enabled="auto")


def test_csv_logger_writes_one_row_per_epoch(tmp_path):
    path = tmp_path / "log.csv"
    model = small()
    first = model.fit(X, Y, epochs=3, validation_data=(X, Y), callbacks=[CSVLogger(path)])
    second = model.fit(X, Y, epochs=2, validation_data=(X, Y),
                       callbacks=[CSVLogger(path, append=True)])
    with open(path, newline="") as file:
        rows = list(csv.DictReader(file))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5]
    assert [float(r["val_loss"]) for r in rows] == first["val_loss"] + second["val_loss"]
    model.fit(X, Y, epochs=1, callbacks=[CSVLogger(path)])  # append=False starts afresh
    with open(path, newline="") as file:
        assert [r["epoch"] for r in csv.DictReader(file)] == ["6"]
    with pytest.raises(ValueError, match="has the columns epoch, loss, accuracy, but this run "
                                         "also logs val_accuracy, val_loss"):
        model.fit(X, Y, validation_data=(X, Y), callbacks=[CSVLogger(path, append=True)])
    with pytest.raises(FileNotFoundError, match="folder .* does not exist"):
        model.fit(X, Y, callbacks=[CSVLogger(tmp_path / "no" / "log.csv")])
