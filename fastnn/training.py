"""The training loop behind ``Sequential.fit``.

Per epoch: set the learning rate from the schedule, optionally shuffle (on the
device), run mini-batch steps (with gradient clipping done on the device), then read
the epoch's loss and metric sums back together in one transfer, to log them and to
check that training has not diverged. There is no per-step synchronisation.

The epochs run through an ``EpochRunner`` (``fastnn.runner``) that ``epoch_runner``
chooses, here and nowhere else: the backend's fused runner for the training's
plain-data plan where it offers one (``fastnn.plan.describe``, ``Backend.fused_epoch``:
the Numba backend's runs a whole epoch per kernel call, and several per call when
nothing happens between them, ``_epochs_at_once``), else the generic steps of
``fastnn.steps``, recorded and replayed where the backend records (``fastnn.replay``).
A runner is bound to the optimizer it was made with; when a callback replaces the
model's optimizer, the next epoch describes the training again and gets a new one.

Randomness is derived per epoch from (seed, global epoch number): the shuffle from
``backend.rng([seed, 0, epoch])`` and the dropout layer at index i from
``[seed, i + 1, epoch]``. ``model.epochs_trained`` counts epochs across ``fit`` calls
and checkpoints, so 2 epochs, save, load and 2 more epochs give exactly the
parameters of 4 epochs in one call, and a second ``fit`` continues the streams
instead of replaying them.
"""

import numpy as np

from fastnn import callbacks as callback_lists
from fastnn import metrics, optimizers, replay
from fastnn.distributed import data_parallel
from fastnn.errors import TrainingDiverged
from fastnn.outofcore import Rows
from fastnn.plan import describe
from fastnn.schedules import Schedule
from fastnn.steps import Steps
from fastnn.validation import count_or_flag, positive_int, positive_number, seed_or_none

SHUFFLE_STREAM = 0  # the second seed word of the shuffle; dropout layer i uses i + 1


def fit(model, X, y, epochs=1, batch_size=None, optimizer=None, lr=None, shuffle=True,
        seed=None, validation_data=None, verbose=0, callbacks=None, lr_schedule=None,
        clip_norm=None, clip_value=None, progress=False, distributed=None):
    """Train ``model`` on (X, y) and return this call's per-epoch history.

    X, y (and validation_data): NumPy arrays (or the backend's), or out-of-core data, a
    ``np.memmap`` or an array-like that slices, read a batch at a time
    (``fastnn.outofcore``).

    batch_size: rows per step; None trains full-batch (the tutorials' gradient descent).
    optimizer: a name ('sgd', 'momentum', 'nesterov', 'adagrad', 'rmsprop', 'adam') or an
        Optimizer; None keeps the model's current optimizer, else plain SGD. ``lr`` sets
        the learning rate for a named (or kept) optimizer, and a kept schedule's base.
    seed: a non-negative int fixing shuffling and dropout masks; None continues with
        the seed of the model's previous training (``model.train_seed``), else the
        model's seed, else a fresh random one (kept in ``model.train_seed``).
    validation_data: (X_val, y_val), evaluated after each epoch.
    verbose: 0 is silent; k > 0 prints every k-th epoch and the last.
    callbacks: a list of ``fastnn.callbacks.Callback`` objects (EarlyStopping, ...).
    lr_schedule: a ``fastnn.schedules`` schedule (StepDecay, CosineDecay) starting from
        the optimizer's learning rate; None keeps the model's current one.
    clip_norm: rescale the gradients so their global L2 norm is at most this.
    clip_value: clip every gradient entry to [-clip_value, clip_value] (before clip_norm).
    progress: True shows a tqdm bar over the epochs, None shows it only when stdout and
        stderr are terminals, False (the default) never.

    distributed: None trains in this process; True (MPI's COMM_WORLD), a
        ``fastnn.distributed.DataParallel`` or an mpi4py communicator trains
        data-parallel: every rank calls fit alike and gets the parameters and history of
        one process training on the same global batches, up to the order of additions
        (see ``fastnn.distributed``).

    If the loss or the parameters become NaN or infinite, training stops with
    TrainingDiverged and the model keeps the last parameters (from the start of this
    epoch or the one before) whose loss on the training data is finite.
    """
    args = (model, X, y, epochs, batch_size, optimizer, lr, shuffle, seed, validation_data,
            verbose, callbacks, lr_schedule, clip_norm, clip_value, progress)
    session = data_parallel.join(distributed)
    if session is None:
        return _fit(*args, None)
    with session.guard():  # a failure on one rank ends every rank, never a hang
        return _fit(*args, session)


def _fit(model, X, y, epochs, batch_size, optimizer, lr, shuffle, seed, validation_data,
         verbose, callbacks, lr_schedule, clip_norm, clip_value, progress, session):
    """``fit``; ``session`` is None, or the data-parallel session of this rank."""
    epochs = positive_int("epochs", epochs)
    if batch_size is not None:
        batch_size = positive_int("batch_size", batch_size)
    verbose = count_or_flag("verbose", verbose, "0 is silent, k prints every k-th epoch")
    clip_norm = None if clip_norm is None else positive_number("clip_norm", clip_norm)
    clip_value = None if clip_value is None else positive_number("clip_value", clip_value)
    callbacks = callback_lists.prepare(callbacks, progress)
    if lr_schedule is not None and not isinstance(lr_schedule, Schedule):
        raise TypeError(
            f"lr_schedule must be a fastnn.schedules schedule such as StepDecay(10, 0.5) or "
            f"CosineDecay(100); got {type(lr_schedule).__name__}"
        )
    seed = _choose_seed(model, seed)
    model.check_trainable()
    X, Y = model.prepare(X, y)
    val = _prepare_validation(model, validation_data)
    model.optimizer = _choose_optimizer(model.optimizer, optimizer, lr)
    model.lr_schedule = _choose_schedule(model, lr_schedule, lr)
    model.train_seed = seed
    if session is not None:  # agree with the other ranks; take rank 0's state and seed
        seed = session.start(model, X, val, seed, {
            "epochs": epochs, "batch_size": batch_size, "shuffle": bool(shuffle),
            "clip_norm": clip_norm, "clip_value": clip_value, "validation": val is not None})
        verbose, callbacks = session.for_rank(verbose, callbacks)
    m = X.shape[0] if session is None else session.samples
    step = m if batch_size is None else min(batch_size, m)
    training = Training(model, (X, Y), val, session, step, (clip_norm, clip_value))
    return training.run(epochs, seed, bool(shuffle) and step < m, verbose, callbacks)


def _prepare_validation(model, validation_data):
    """The prepared (X_val, Y_val), or None."""
    if validation_data is None:
        return None
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
        raise ValueError("validation_data must be a pair (X_val, y_val)")
    return model.prepare(*validation_data, names=("X_val", "y_val"))


class Training:
    """One ``fit`` call's epochs, after its arguments were checked and its data
    prepared: ``run`` trains, logs, calls the callbacks and handles divergence."""

    def __init__(self, model, data, val, session, step, clipping):
        self.model, self.data, self.val, self.session = model, data, val, session
        self.step, self.clipping = step, clipping
        self.m = data[0].shape[0] if session is None else session.samples
        self.state = model.parameters() + model.buffers()
        backend = model.backend
        self.snapshots = [[backend.copy(p.value) for p in self.state] for _ in range(2)]
        self.snapshot_epochs = [model.epochs_trained] * 2  # epochs trained when each was taken
        self.dropouts = [(i, layer) for i, layer in enumerate(model.layers)
                         if hasattr(layer, "reseed")]
        self.metric = metrics.name_for(model.task)
        self.runner = self.bound = None
        self.logs = {}

    def new_runner(self):
        """The runner for the model's current optimizer (see ``epoch_runner``)."""
        self.bound = self.model.optimizer
        return epoch_runner(self.model, *self.data, self.step, *self.clipping, self.session)

    def run(self, epochs, seed, shuffle, verbose, callbacks):
        """Train ``epochs`` epochs; returns this call's history."""
        model = self.model
        self.epochs, self.seed, self.shuffle = epochs, seed, shuffle
        self.verbose, self.callbacks = verbose, callbacks
        self.history = {"loss": [], self.metric: []}
        if self.val is not None:
            self.history.update({"val_loss": [], f"val_{self.metric}": []})
        model.history = self.history
        model.stop_training = False
        for callback in callbacks:
            callback.model = model
            callback.params = {"epochs": epochs, "steps": -(-self.m // self.step)}
        self.runner = self.new_runner()
        try:
            for callback in callbacks:
                callback.on_train_begin(self.logs)
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                self.train()
            self.runner.finish()
            for callback in callbacks:
                callback.on_train_end(self.logs)
        finally:
            self.runner.finish()
            for callback in callbacks:
                callback.close()
        return self.history

    def train(self):
        """The epochs: in chunks where nothing happens between them, else one by one;
        then the check that the parameters are finite."""
        done = 0
        if self.runner.chunk > 1 and self.nothing_between_epochs():
            done = _epochs_at_once(self.model, self.runner, self.state, self.epochs,
                                   self.history, self.verbose)
        local = done
        for local in range(done + 1, self.epochs + 1):
            if self.epoch(local):
                break
        if not _all_finite(self.model.backend, [p.value for p in self.state]):
            kept = self.restore(local)
            raise TrainingDiverged(
                f"training diverged in its last epoch: the parameters became NaN or "
                f"infinite; {kept}. Lower the learning rate or clip gradients "
                f"(clip_norm=...)",
                self.history,
            )

    def nothing_between_epochs(self):
        """True if nothing but logging happens between epochs (``_epochs_at_once``)."""
        return not (self.callbacks or self.val is not None or self.model.lr_schedule
                    is not None or self.dropouts or self.shuffle)

    def epoch(self, local):
        """Epoch ``local`` of this call (1-based); True if training should stop."""
        model = self.model
        epoch = model.epochs_trained + 1
        if model.optimizer is not self.bound:  # a callback replaced it
            self.runner = self.new_runner()
        if model.lr_schedule is not None:
            model.optimizer.lr = model.lr_schedule.lr(model.epochs_trained)
        for callback in self.callbacks:
            callback.on_epoch_begin(epoch, self.logs)
        for saved, p in zip(self.snapshots[local % 2], self.state):
            saved[...] = p.value
        self.snapshot_epochs[local % 2] = model.epochs_trained
        for i, layer in self.dropouts:
            layer.reseed([self.seed, i + 1, epoch])
        order = None
        if self.shuffle:
            order = model.backend.rng([self.seed, SHUFFLE_STREAM, epoch]).permutation(self.m)
        sums = self.runner.run(order)
        self.log(local, epoch, *model.backend.to_numpy(sums).tolist())  # one transfer
        if self.callbacks:
            self.runner.finish()
            self.logs = {key: values[-1] for key, values in self.history.items()}
            for callback in self.callbacks:
                callback.on_epoch_end(epoch, self.logs)
        if self.session is not None:  # every rank stops if a callback stops one
            model.stop_training = self.session.any(model.stop_training)
        return model.stop_training

    def log(self, local, epoch, loss_sum, score_sum):
        """Record epoch ``epoch``'s loss and metric (and validation), or raise
        TrainingDiverged if its loss is not finite."""
        model, history = self.model, self.history
        epoch_loss = loss_sum / self.m
        if not np.isfinite(epoch_loss):
            kept = self.restore(local)
            raise TrainingDiverged(
                f"training diverged at epoch {epoch}: the loss became {epoch_loss}; "
                f"{kept}. Lower the learning rate (lr={model.optimizer.lr}), clip "
                f"gradients (clip_norm=...), standardize the inputs, or use 'adam'",
                history,
            )
        history["loss"].append(epoch_loss)
        history[self.metric].append(metrics.finish(model.task, score_sum, self.m))
        if self.val is not None:
            for key, value in _evaluate(model, *self.val, self.session).items():
                history[f"val_{key}"].append(value)
        model.epochs_trained = epoch
        if self.verbose > 0 and (local % self.verbose == 0 or local == self.epochs):
            print(_progress_line(local, self.epochs, history))

    def restore(self, local):
        """``_restore`` of this training's snapshots; what the model keeps."""
        return _restore(self.model, self.state, self.snapshots, self.snapshot_epochs, local,
                        *self.data, self.session)


def epoch_runner(model, X, Y, batch, clip_norm=None, clip_value=None, session=None):
    """The ``EpochRunner`` (``fastnn.runner``) that ``fit`` trains the model's current
    optimizer with on the prepared (X, Y), chosen here and nowhere else, first that
    applies:

    1. the backend's fused runner for the training's plan (``fastnn.plan.describe``;
       ``Backend.fused_epoch`` offers one or returns None), given the batches of a
       data-parallel ``session`` (whose gradients it sums between its steps) or none;
    2. on a backend that records steps (CUDA graphs), the generic steps recorded once
       and replayed (``fastnn.replay``), unless the model or the epoch does not qualify
       (``replay.unsuitable``) or the steps talk to other ranks;
    3. the generic steps (``fastnn.steps.Steps``), which train any model anywhere.

    Out-of-core data (``fastnn.outofcore.Rows``) takes 3: a fused epoch wants the data
    in memory, and a recording cannot read the host between steps."""
    batches = None if session is None else session.batches(model, X, Y, batch)
    streamed = isinstance(X, Rows) or isinstance(Y, Rows)  # read from the host per step
    plan = None if streamed else describe(model, X, batch, clip_norm, clip_value)
    if plan is not None:
        run = model.backend.fused_epoch(plan, X, Y, model.parameters(), model.optimizer,
                                        batches)
        if run is not None:
            return run
    steps = Steps(model, X, Y, batch, clip_norm, clip_value, batches)
    if (steps.batches.local and not streamed
            and replay.unsuitable(model, steps.steps_per_epoch) is None):
        return replay.Replayer(model, steps)
    return steps


def _epochs_at_once(model, run_epoch, state, epochs, history, verbose):
    """Run epochs ``run_epoch.chunk`` at a time (``run_epoch.epochs``, one kernel call
    each), for a ``fit`` with nothing to do between epochs but log them: the same
    arithmetic as an epoch per call, without the ~10 us of Python and argument passing
    per epoch (most of a planar step). Returns the number of epochs run. A chunk whose
    losses or final parameters are not all finite is undone (parameters, optimizer
    state and step count put back) and left to the epoch-by-epoch loop, which runs it
    again identically and reports the divergence as always."""
    backend, optimizer, m = model.backend, model.optimizer, run_epoch.samples
    metric, done = metrics.name_for(model.task), 0
    while done < epochs:
        count = min(run_epoch.chunk, epochs - done)
        if verbose > 0:  # end a chunk where a line is printed
            count = min(count, verbose - done % verbose)
        values = [backend.copy(p.value) for p in state]
        slots, t = optimizer.state, optimizer.t
        saved_slots = [tuple(backend.copy(a) for a in arrays) for arrays in slots]
        sums = backend.to_numpy(run_epoch.epochs(count))  # one transfer per chunk
        losses = sums[:, 0].astype(np.float64) / m  # as the per-epoch loop divides
        if not (np.all(np.isfinite(losses)) and _all_finite(backend, [p.value for p in state])):
            for saved, p in zip(values, state):
                p.value[...] = saved
            if saved_slots:
                for arrays, saved in zip(optimizer.state, saved_slots):
                    for a, b in zip(arrays, saved):
                        a[...] = b
            else:  # made by this chunk: made again
                optimizer.state = []
            optimizer.t = t
            return done
        history["loss"].extend(losses.tolist())
        history[metric].extend(metrics.finish(model.task, score, m) for score in sums[:, 1])
        done += count
        model.epochs_trained += count
        if verbose > 0 and (done % verbose == 0 or done == epochs):
            print(_progress_line(done, epochs, history))
    return done


def _choose_optimizer(current, optimizer, lr):
    if optimizer is None and current is not None:
        if lr is not None:
            current.lr = positive_number("lr", lr, hint="; the learning rate must be > 0")
        return current
    return optimizers.get("sgd" if optimizer is None else optimizer, lr=lr)


def _choose_schedule(model, schedule, lr):
    """A new schedule starts from the optimizer's lr now; ``lr=`` resets a kept one's base."""
    if schedule is None:
        if model.lr_schedule is not None and lr is not None:
            model.lr_schedule.start(model.optimizer.lr, model.lr_schedule.start_epoch)
        return model.lr_schedule
    schedule = type(schedule)(**schedule.settings())  # the model gets its own copy
    schedule.start(model.optimizer.lr, model.epochs_trained)
    return schedule


def _choose_seed(model, seed):
    if seed is None:
        seed = model.train_seed if model.train_seed is not None else model.seed
    if seed is None:
        return int(np.random.default_rng().integers(2**63))
    return seed_or_none("seed", seed)


def _all_finite(backend, arrays):
    """True if every array is finite, in one read from the device."""
    xp = backend.xp
    flags = xp.stack([xp.all(xp.isfinite(a)) for a in arrays])
    return bool(backend.to_numpy(xp.all(flags)))


def _evaluate(model, X, Y, session, training=False):
    """``model.evaluate_prepared`` on (X, Y): the validation data, or the ``training``
    data; in a data-parallel ``session``, over every rank's part of it."""
    if session is None:
        return model.evaluate_prepared(X, Y)
    return session.evaluate(model, X, Y, session.rows if training else None)


def _restore(model, state, snapshots, snapshot_epochs, local, X, Y, session=None):
    """Put back the newest snapshot (the start of epoch ``local`` of this call, or of the
    one before) whose values are all finite and whose loss on the training data is
    finite too, in evaluation mode as ``predict`` and ``evaluate`` see it (so are the
    outputs): finite values alone can be ~1e27, whose outputs overflow. Sets the epoch
    count that goes with it; returns what the model keeps, for the error message. In a
    data-parallel ``session`` the loss is taken over every rank's rows, so every rank
    keeps the same snapshot."""
    kept = None
    for i in (local % 2, (local - 1) % 2):
        if not _all_finite(model.backend, snapshots[i]):
            continue
        for saved, p in zip(snapshots[i], state):
            p.value[...] = saved
        model.epochs_trained, kept = snapshot_epochs[i], snapshot_epochs[i] + 1
        if np.isfinite(_evaluate(model, X, Y, session, training=True)["loss"]):
            return (f"the model keeps the last parameters whose loss on the training data "
                    f"is finite, from the start of epoch {kept}")
    if kept is None:
        return "no finite parameters were kept (the model's are not finite)"
    return (f"the model keeps the parameters from the start of epoch {kept}, but even "
            f"their loss on the training data is not finite: retrain it from the start")


def _progress_line(epoch, epochs, history):
    parts = [f"epoch {epoch}/{epochs}"]
    parts += [f"{key} {values[-1]:.4f}" for key, values in history.items()]
    return " - ".join(parts)
