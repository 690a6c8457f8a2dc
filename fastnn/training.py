"""The training loop behind ``Sequential.fit``.

Per epoch: optionally shuffle (on the device), run mini-batch steps, and read one
scalar back to the host, the epoch's loss, to log it and to check that training has
not diverged. The loss and metric are summed on the device meanwhile, so there is no
per-step synchronisation.
"""

import numpy as np

from fastnn import metrics, optimizers
from fastnn.errors import TrainingDiverged
from fastnn.validation import positive_int, positive_number


def fit(model, X, y, epochs=1, batch_size=None, optimizer=None, lr=None, shuffle=True,
        seed=None, validation_data=None, verbose=0):
    """Train ``model`` on (X, y) and return the per-epoch history.

    batch_size: rows per step; None trains full-batch (the tutorials' gradient descent).
    optimizer: a name ('sgd', 'momentum', 'nesterov', 'adagrad', 'rmsprop', 'adam') or an
        Optimizer; None keeps the model's current optimizer, else plain SGD. ``lr`` sets
        the learning rate for a named (or kept) optimizer.
    seed: fixes shuffling and dropout masks; None uses the model's seed.
    validation_data: (X_val, y_val), evaluated after each epoch.
    verbose: 0 is silent; k > 0 prints every k-th epoch and the last.

    If the loss or the parameters become NaN or infinite, training stops with
    TrainingDiverged and the model keeps the last finite parameters.
    """
    epochs = positive_int("epochs", epochs)
    if batch_size is not None:
        batch_size = positive_int("batch_size", batch_size)
    verbose = int(verbose)
    model.check_trainable()
    X, Y = model.prepare(X, y)
    val = None
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("validation_data must be a pair (X_val, y_val)")
        val = model.prepare(*validation_data, names=("X_val", "y_val"))
    model.optimizer = _choose_optimizer(model.optimizer, optimizer, lr)

    seed = model.seed if seed is None else seed
    backend, xp, task = model.backend, model.backend.xp, model.task
    rng = backend.rng(seed)
    for i, layer in enumerate(model.layers):
        if hasattr(layer, "reseed"):
            layer.reseed(None if seed is None else [seed, i + 1])

    m = X.shape[0]
    step = m if batch_size is None else min(batch_size, m)
    params = model.parameters()
    snapshots = [[backend.copy(p.value) for p in params] for _ in range(2)]
    metric = metrics.name_for(task)
    history = {"loss": [], metric: []}
    if val is not None:
        history.update({"val_loss": [], f"val_{metric}": []})
    model.history = history

    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        for epoch in range(1, epochs + 1):
            start_of_epoch = snapshots[epoch % 2]
            for saved, p in zip(start_of_epoch, params):
                saved[...] = p.value
            order = rng.permutation(m) if shuffle and step < m else None
            loss_sum, score_sum = 0.0, 0.0
            for start in range(0, m, step):
                stop = min(start + step, m)  # out-of-range slice ends are not portable
                if order is None:
                    Xb, Yb = X[start:stop, ...], Y[start:stop, ...]
                else:
                    idx = order[start:stop]
                    Xb, Yb = xp.take(X, idx, axis=0), xp.take(Y, idx, axis=0)
                loss, A = model.compute_gradients(Xb, Yb)
                model.optimizer.step(params, backend)
                loss_sum = loss_sum + loss * Xb.shape[0]
                score_sum = score_sum + metrics.batch_score(xp, task, A, Yb)
            loss_total, score_total = backend.read_scalars(loss_sum, score_sum)  # one read
            epoch_loss = loss_total / m
            if not np.isfinite(epoch_loss):
                _restore(model, params, snapshots, epoch)
                raise TrainingDiverged(
                    f"training diverged at epoch {epoch}: the loss became {epoch_loss}; the "
                    f"model keeps the last finite parameters. Lower the learning rate "
                    f"(lr={model.optimizer.lr}), standardize the inputs, or use 'adam'",
                    history,
                )
            history["loss"].append(epoch_loss)
            history[metric].append(metrics.finish(task, score_total, m))
            if val is not None:
                for key, value in model.evaluate_prepared(*val).items():
                    history[f"val_{key}"].append(value)
            if verbose > 0 and (epoch % verbose == 0 or epoch == epochs):
                print(_progress_line(epoch, epochs, history))
        if not backend.read_bool(_all_finite(xp, params)):
            _restore(model, params, snapshots, epochs)
            raise TrainingDiverged(
                "training diverged in its last epoch: the parameters became NaN or infinite; "
                "the model keeps the last finite parameters. Lower the learning rate",
                history,
            )
    return history


def _choose_optimizer(current, optimizer, lr):
    if optimizer is None and current is not None:
        if lr is not None:
            current.lr = positive_number("lr", lr, hint="; the learning rate must be > 0")
        return current
    return optimizers.get("sgd" if optimizer is None else optimizer, lr=lr)


def _restore(model, params, snapshots, epoch):
    """Put back the newest snapshot whose values are all finite (epoch start or the one
    before: a finite loss in an epoch's first step shows its start was finite)."""
    xp = model.backend.xp
    for saved in (snapshots[epoch % 2], snapshots[(epoch - 1) % 2]):
        if model.backend.read_bool(_all_finite(xp, saved)):
            for s, p in zip(saved, params):
                p.value[...] = s
            return


def _all_finite(xp, arrays):
    """A device boolean: every value of every array (or Parameter) is finite."""
    values = [getattr(a, "value", a) for a in arrays]
    return xp.all(xp.stack([xp.all(xp.isfinite(v)) for v in values]))


def _progress_line(epoch, epochs, history):
    parts = [f"epoch {epoch}/{epochs}"]
    parts += [f"{key} {values[-1]:.4f}" for key, values in history.items()]
    return " - ".join(parts)
