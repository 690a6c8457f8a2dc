"""A model's training described as plain data, for backends that fuse whole epochs.

``describe(model, X, Y, batch, ...)`` gives a frozen ``DensePlan``: each layer's shape
and activation (name and alpha), the loss, the optimizer's rule and settings, the
dtype, the batch size and the sample count. Nothing in it refers back to the model,
so a backend decides from it alone whether it has a fused epoch for this training
(``Backend.fused_epoch``), and no backend module needs to know fastnn's layer,
optimizer or training classes.

Only built-in classes used as they are qualify, checked by exact type: a stack of
``Dense`` layers with built-in activations, a built-in loss and a built-in optimizer,
and no gradient clipping. Anything else (a user's subclass, even one that keeps a
built-in's name, Dropout, BatchNorm, convolution and pooling layers, clipping) gives
None, and ``fit`` runs the generic steps of ``fastnn.steps``, which call each
object's own methods.
"""

import dataclasses

import numpy as np

from fastnn import backends, losses, optimizers
from fastnn.activations import builtin_name
from fastnn.backends.base import Backend
from fastnn.layers import Dense
from fastnn.names import builtin


@dataclasses.dataclass(frozen=True)
class DenseLayerPlan:
    """One Dense layer: ``n_in`` inputs, ``n_out`` units, a built-in activation by
    name (``alpha`` for leaky_relu, else 0), and whether its derivative can be
    computed from the layer's output alone (so the pre-activation need not be kept)."""

    n_in: int
    n_out: int
    activation: str
    alpha: float = 0.0
    derivative_from_output: bool = True


@dataclasses.dataclass(frozen=True)
class DensePlan:
    """One ``fit`` of a stack of Dense layers, as plain data.

    ``loss`` and ``optimizer`` are the built-in classes' names, with their settings as
    (name, value) pairs (the optimizer's as they were when it was described: a schedule
    may change ``lr`` per epoch later, so a runner reads the optimizer's current values
    each call). ``batch`` rows per step over ``samples`` rows of data."""

    layers: tuple
    loss: str
    loss_settings: tuple
    optimizer: str
    settings: tuple
    dtype: str
    batch: int
    samples: int

    @property
    def steps_per_epoch(self):
        return -(-self.samples // self.batch)


def describe(model, X, batch, clip_norm=None, clip_value=None, optimizer=None):
    """The ``DensePlan`` of training ``model`` on the prepared X in batches of ``batch``
    rows with ``optimizer`` (None: the model's), or None where only the generic steps
    apply (see the module docstring)."""
    optimizer = model.optimizer if optimizer is None else optimizer
    if clip_norm is not None or clip_value is not None or X.ndim != 2:
        return None
    if builtin(optimizer, optimizers.TABLE) is None or builtin(model.loss, losses.TABLE) is None:
        return None
    layers = []
    for layer in model.layers:
        if type(layer) is not Dense or builtin_name(layer.activation) is None:
            return None
        act = layer.activation
        layers.append(DenseLayerPlan(layer.n_in, layer.n_out, act.name,
                                     float(getattr(act, "alpha", 0.0)),
                                     act.derivative_from_output))
    return DensePlan(tuple(layers), model.loss.name, tuple(sorted(vars(model.loss).items())),
                     optimizer.name,
                     tuple(sorted(optimizer.config().items())), model.dtype_name, int(batch),
                     int(X.shape[0]))


def warmup(target=None, optimizer=None):
    """Compile ahead of use the kernels that ``target`` will run; returns the seconds taken.

    ``target`` is a model (its backend, dtype and activations), a backend or backend
    name (float32 and float64, every activation and optimizer), or None for the current
    backend. With a model, ``optimizer`` (a name or Optimizer) is the one ``fit`` will
    be given; None means the one it would use (the model's, or plain SGD), and the
    fused epoch of its plan is compiled too where the backend has one. Only JIT
    backends (numba) have anything to compile; later processes load the compiled
    kernels from the cache.
    """
    if target is None or isinstance(target, (str, Backend)):
        if optimizer is not None:
            raise ValueError("warmup(optimizer=...) needs a model: call warmup(model, "
                             "optimizer) to compile the epoch kernel fit will run")
        return backends.load(target or backends.get_backend()).warmup(("float32", "float64"))
    model = target
    if optimizer is not None:
        chosen = optimizers.get(optimizer)
    else:
        chosen = model.optimizer if model.optimizer is not None else optimizers.get("sgd")
    names = {builtin_name(layer.activation) for layer in model.layers
             if hasattr(layer, "activation")} - {None}
    rules = (chosen.name,) if builtin(chosen, optimizers.TABLE) else ()
    plan = describe(model, np.zeros((2, *model.input_shape)), 2, optimizer=chosen)
    return model.backend.warmup((model.dtype_name,), activations=sorted(names),
                                optimizers=rules, plans=() if plan is None else (plan,))
