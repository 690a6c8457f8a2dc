"""Callbacks: code that ``fit`` runs at the start and end of training and of each epoch.

Subclass ``Callback`` and override the hooks you need. ``fit`` sets ``self.model``
and ``self.params`` (``{"epochs": epochs of this call, "steps": steps per epoch}``)
before ``on_train_begin``. ``epoch`` is the model's global epoch number, counted
across ``fit`` calls and checkpoints (1 for the first epoch ever trained). ``logs``
holds the epoch's values already read to the host (``loss``, ``accuracy`` or
``rmse``, and ``val_...`` with validation data), so reading them costs nothing. Set
``self.model.stop_training = True`` to end training after the current epoch.

In data-parallel training (``fit(..., distributed=...)``) every rank runs the
callbacks, with the same logs, except those with ``rank_zero_only = True`` (the
loggers and progress bars here), which only rank 0 runs.
"""

import csv
import os
import sys

from fastnn.validation import in_range


class Callback:
    model = None
    params = None
    rank_zero_only = False  # data-parallel training runs it on rank 0 only (it writes)

    def on_train_begin(self, logs):
        """Before the first epoch of a ``fit`` call."""

    def on_epoch_begin(self, epoch, logs):
        """Before ``epoch``; ``logs`` holds the previous epoch's values (empty at first)."""

    def on_epoch_end(self, epoch, logs):
        """After ``epoch``, with its values in ``logs``."""

    def on_train_end(self, logs):
        """After the last epoch of a ``fit`` call that finished without an error."""

    def close(self):
        """Release resources (files, progress bars); always called, even after an error."""


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved for ``patience`` epochs in a row.

    mode: 'min' or 'max'; 'auto' picks 'max' for accuracies and 'min' otherwise.
    min_delta: the least change that counts as an improvement.
    restore_best: at the end of training, put back the parameters (and BatchNorm
    statistics) of the best epoch. The copies stay on the device.
    After training, ``best``, ``best_epoch`` and ``stopped_epoch`` (None if it never
    stopped training) describe what happened.
    """

    def __init__(self, monitor="val_loss", mode="auto", patience=5, min_delta=0.0,
                 restore_best=True):
        if not isinstance(monitor, str) or not monitor:
            raise TypeError(f"EarlyStopping monitor must be a log name such as 'val_loss'; "
                            f"got {monitor!r}")
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"EarlyStopping mode must be 'auto', 'min' or 'max'; got {mode!r}")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"EarlyStopping patience must be an integer >= 0; got {patience!r}")
        self.monitor = monitor
        self.mode = ("max" if monitor.endswith("accuracy") else "min") if mode == "auto" else mode
        self.patience = patience
        self.min_delta = in_range("EarlyStopping min_delta", min_delta, 0.0, float("inf"))
        self.restore_best = bool(restore_best)
        self.best = self.best_epoch = self.stopped_epoch = None

    def __repr__(self):
        return (f"EarlyStopping(monitor={self.monitor!r}, mode={self.mode!r}, "
                f"patience={self.patience}, min_delta={self.min_delta})")

    def on_train_begin(self, logs):
        self.best = self.best_epoch = self.stopped_epoch = None
        self.wait = 0
        self.saved = None

    def on_epoch_end(self, epoch, logs):
        if self.monitor not in logs:
            hint = (" (pass validation_data to fit for 'val_...' values)"
                    if self.monitor.startswith("val_") else "")
            raise ValueError(
                f"EarlyStopping monitors {self.monitor!r}, but the epoch logs have only "
                f"{', '.join(sorted(logs))}{hint}"
            )
        value = logs[self.monitor]
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best:
                self._save_state()
            return
        self.wait += 1
        if self.wait > self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs):
        at_best = self.best_epoch == self.model.epochs_trained
        if self.restore_best and self.saved is not None and not at_best:
            for saved, p in zip(self.saved, _state(self.model)):
                p.value[...] = saved

    def _improved(self, value):
        if value != value:  # NaN never improves
            return False
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def _save_state(self):
        state = _state(self.model)
        if self.saved is None:
            self.saved = [self.model.backend.copy(p.value) for p in state]
        else:
            for saved, p in zip(self.saved, state):
                saved[...] = p.value


def _state(model):
    return model.parameters() + model.buffers()


class ProgressBar(Callback):
    """A tqdm bar over the epochs of a ``fit`` call, showing the latest loss and metrics.

    enabled: None shows it only when stdout and stderr are both terminals (so logs and
    pipes stay clean), True always, False never. ``file`` defaults to stderr.
    """

    rank_zero_only = True

    def __init__(self, enabled=None, file=None):
        if enabled not in (None, True, False):
            raise ValueError(f"ProgressBar enabled must be None, True or False; got {enabled!r}")
        self.enabled, self.file = enabled, file
        self.bar = None

    def on_train_begin(self, logs):
        from tqdm import tqdm

        self.close()
        file = sys.stderr if self.file is None else self.file
        show = self.enabled if self.enabled is not None else _terminals()
        if show:
            first = self.model.epochs_trained + 1
            self.bar = tqdm(total=self.params["epochs"], file=file, unit="epoch",
                            desc=f"epochs {first}-{first + self.params['epochs'] - 1}")

    def on_epoch_end(self, epoch, logs):
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items()}, refresh=False)
            self.bar.update(1)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _terminals():
    return all(stream is not None and hasattr(stream, "isatty") and stream.isatty()
               for stream in (sys.stdout, sys.stderr))


class CSVLogger(Callback):
    """Write one row per epoch (``epoch`` and the logs) to a CSV file, flushed as it
    goes, so a crash loses at most the epoch in progress. ``append=False`` starts the
    file afresh at each ``fit`` call; ``append=True`` continues it under its existing
    header (for resumed runs)."""

    rank_zero_only = True

    def __init__(self, path, append=False):
        self.path, self.append = os.fspath(path), bool(append)
        self.file = self.writer = None

    def on_train_begin(self, logs):
        self.close()
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"CSVLogger cannot write {self.path}: the folder {folder} "
                                    f"does not exist")
        self.columns = None
        if self.append and os.path.exists(self.path) and os.path.getsize(self.path) > 0:
            with open(self.path, newline="") as file:
                self.columns = next(csv.reader(file))
        self.file = open(self.path, "a" if self.columns else "w", newline="")
        self.writer = None

    def on_epoch_end(self, epoch, logs):
        if self.writer is None:
            fresh = self.columns is None
            self.writer = csv.DictWriter(self.file, self.columns or ["epoch", *logs])
            if fresh:
                self.writer.writeheader()
        row = {"epoch": epoch, **logs}
        new = sorted(set(row) - set(self.writer.fieldnames))
        if new:
            raise ValueError(
                f"CSVLogger: {self.path} has the columns {', '.join(self.writer.fieldnames)}, "
                f"but this run also logs {', '.join(new)}; log to a new file or use append=False"
            )
        self.writer.writerow(row)
        self.file.flush()

    def close(self):
        if self.file is not None:
            self.file.close()
            self.file = None


def prepare(callbacks, progress):
    """The callback list for a ``fit`` call: validated, plus a ProgressBar for
    ``progress`` (True, or None for "when a terminal") unless one is already there."""
    if callbacks is None:
        callbacks = []
    if isinstance(callbacks, Callback) or not isinstance(callbacks, (list, tuple)):
        raise TypeError(
            f"callbacks must be a list of fastnn Callback objects; got "
            f"{type(callbacks).__name__} (wrap a single callback in a list)"
        )
    for i, callback in enumerate(callbacks):
        if not isinstance(callback, Callback):
            raise TypeError(
                f"callbacks[{i}] is a {type(callback).__name__}, not a fastnn Callback; "
                f"subclass fastnn.callbacks.Callback and override its on_... hooks"
            )
    if progress not in (None, True, False):
        raise ValueError(f"progress must be None (when a terminal), True or False; "
                         f"got {progress!r}")
    callbacks = list(callbacks)
    if progress is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
        callbacks.append(ProgressBar(enabled=progress))
    return callbacks
