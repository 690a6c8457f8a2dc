"""The CuPy backend's fused hot-path ops: launch plans for the kernels in
``source`` and the ops-table entries built on them.

The functions here are written against an ``xp`` (for matmuls through cuBLAS,
allocation and the final sums) and a ``launcher`` that runs a named kernel
instance on arrays of that xp. The CuPy backend passes CuPy and a RawModule
launcher; the test suite passes NumPy and the same CUDA source compiled for the
CPU, so the launch plans and kernel arithmetic are checked without a GPU.

An op falls back to the generic one from ``fastnn.ops`` where a kernel does not
apply: an activation without a fused kernel (softmax backward, custom classes),
a dtype other than float32/float64, or arrays that are not C-contiguous.
"""

import functools
import inspect
import math
import numbers

import numpy as np

from fastnn import ops as generic
from fastnn.activations import builtin_name

from .. import hyper
from . import source

BLOCK = 256
MAX_BLOCKS = 4096  # grid-stride loops: enough blocks to fill an H100 several times over
REDUCE_BLOCKS = 256  # sigmoid_bce: BLOCK * REDUCE_BLOCKS partial sums at most
TARGET_THREADS = 65536  # act_backward_partial: (chunk, column) threads to aim for
MIN_ROWS = 16  # ... each summing at least this many rows


class Launcher:
    """Runs kernel instances; subclasses give ``array_type`` and ``run``."""

    array_type = None
    description = "device"

    def launch(self, name, dtype_name, act, blocks, args):
        scalars = {"T": np.dtype(dtype_name).type, "long long": np.int64, "int": np.int32}
        typed = [
            a if ctype.endswith("*") else scalars[ctype](a)
            for (ctype, _), a in zip(source.parameters(name), args)
        ]
        self.run(source.instance(name, dtype_name, act), blocks, BLOCK, typed)

    def run(self, instance, blocks, threads, args):
        raise NotImplementedError


def _blocks(work, limit=MAX_BLOCKS):
    return max(1, min(limit, -(-work // BLOCK)))


def _dtype_name(xp, *arrays):
    """'float32'/'float64' if every array has that dtype and is C-contiguous, else None."""
    dtype = arrays[0].dtype
    if dtype not in (xp.float32, xp.float64):
        return None
    if any(a.dtype != dtype or not a.flags.c_contiguous for a in arrays):
        return None
    return np.dtype(dtype).name


def _fused_name(activation, table):
    """The activation's name if a kernel in ``table`` replaces it (a built-in used as
    is: see ``activation_codes``), else None."""
    name = builtin_name(activation)
    return name if name in table else None


def dense_forward(xp, launcher, X, W, b, activation, keep_z=True):
    """Z = X @ W (cuBLAS), then one kernel: Z += b and A = f(Z)."""
    _require_arrays(launcher, X=X, W=W, b=b)
    Z = xp.matmul(X, W)
    dtype_name = _dtype_name(xp, Z, b)
    act = _fused_name(activation, (*source.ACTIVATIONS, "softmax"))
    m, n = Z.shape
    if dtype_name is None or act is None:
        Z = Z + b
        return Z, activation.forward(xp, Z)
    A = Z if act == "identity" else xp.empty_like(Z)
    if act == "softmax":  # one thread per row
        launcher.launch("bias_softmax_forward", dtype_name, None, _blocks(m), (Z, b, A, m, n))
    else:
        alpha = getattr(activation, "alpha", 0.0)
        launcher.launch("bias_act_forward", dtype_name, act, _blocks(m * n),
                        (Z, b, A, m, n, alpha))
    return Z, A


def activation_backward(xp, launcher, dA, Z, A, activation):
    """dZ = dA * f'(Z) and db = sum(dZ) over the batch: per-chunk column sums in one
    kernel, then one thread per column adds the chunks (no atomics: deterministic)."""
    act = _fused_name(activation, source.DIFFERENTIABLE)
    dtype_name = _dtype_name(xp, dA, Z, A)
    if act is None or dtype_name is None:
        return generic.activation_backward(xp, dA, Z, A, activation)
    m, n = Z.shape
    rows = max(MIN_ROWS, -(-m * n // TARGET_THREADS))
    chunks = -(-m // rows)
    dZ = dA if act == "identity" else xp.empty_like(dA)
    partial = xp.empty((chunks, n), dtype=Z.dtype)
    alpha = getattr(activation, "alpha", 0.0)
    launcher.launch("act_backward_partial", dtype_name, act, _blocks(chunks * n),
                    (dA, Z, A, dZ, partial, m, n, rows, alpha, 1.0 - alpha))
    db = xp.empty((n,), dtype=Z.dtype)
    launcher.launch("column_sum", dtype_name, None, _blocks(n), (partial, db, chunks, n))
    return dZ, db


def softmax_xent(xp, launcher, Z, A, Y, need_grad):
    """Cross-entropy of softmax(Z) and dZ = (A - Y) / m; one thread per row."""
    dtype_name = _dtype_name(xp, Z, A, Y)
    if dtype_name is None:
        return generic.softmax_xent(xp, Z, A, Y, need_grad)
    m, n = Z.shape
    row_loss = xp.empty((m,), dtype=Z.dtype)
    dZ = xp.empty_like(Z) if need_grad else row_loss  # unused without need_grad
    launcher.launch("softmax_xent_rows", dtype_name, None, _blocks(m),
                    (Z, A, Y, dZ, row_loss, m, n, int(need_grad)))
    loss = -xp.sum(row_loss) / m
    return loss, (dZ if need_grad else None)


def sigmoid_bce(xp, launcher, Z, A, Y, need_grad):
    """Binary cross-entropy from the logits and dZ = (A - Y) / N in one pass; the
    per-thread partial sums are added by one reduction."""
    dtype_name = _dtype_name(xp, Z, A, Y)
    if dtype_name is None:
        return generic.sigmoid_bce(xp, Z, A, Y, need_grad)
    size = Z.shape[0] * Z.shape[1]
    blocks = _blocks(size, REDUCE_BLOCKS)
    partial = xp.empty((blocks * BLOCK,), dtype=Z.dtype)
    dZ = xp.empty_like(Z) if need_grad else partial
    launcher.launch("sigmoid_bce_partial", dtype_name, None, blocks,
                    (Z, A, Y, dZ, partial, size, int(need_grad)))
    loss = xp.sum(partial) / size
    return loss, (dZ if need_grad else None)


def _update(name, kernel, state_count, fixed):
    """The optimizer op ``name``: one pass of ``kernel`` over p, g and the state arrays.
    Its scalar parameters are named after the slots of ``kernels/hyper.py``, computed
    from the op's settings (named as the generic op names them) once per step as the
    reference computes them; ``fixed`` gives the kernel's other scalars. A step
    recorded for replay passes its learning rate and step count on the device (see
    ``fastnn.replay``); the kernel takes numbers only, so the generic op runs then."""
    fallback = generic.GENERIC[name]
    rule = name.removesuffix("_update")
    setting_names = list(inspect.signature(fallback).parameters)[3 + state_count:]
    scalar_names = [pname for _, pname in source.parameters(kernel)[3 + state_count:]]

    def op(xp, launcher, p, g, *rest):
        arrays, settings = rest[:state_count], rest[state_count:]
        dtype_name = _dtype_name(xp, p, g, *arrays)
        if dtype_name is None or not all(isinstance(h, numbers.Real) for h in settings):
            return fallback(xp, p, g, *rest)
        named = dict(zip(setting_names, settings))
        values = {**hyper.values(rule, named, named.get("t", 1)), **fixed}
        size = math.prod(p.shape)
        launcher.launch(kernel, dtype_name, None, _blocks(size),
                        (p, g, *arrays, size, *(values[n] for n in scalar_names)))

    op.__name__ = name
    op.__doc__ = f"{fallback.__doc__} (one fused kernel pass)"
    return op


UPDATES = {  # op: (kernel, state arrays, the kernel's scalars besides the hp slots)
    "sgd_update": ("sgd_update", 0, {}),
    "momentum_update": ("momentum_update", 1, {"nesterov": 0}),
    "nesterov_update": ("momentum_update", 1, {"nesterov": 1}),
    "adagrad_update": ("rmsprop_update", 1, {"rho": 1.0, "rho2": 1.0}),  # h = h + g^2
    "rmsprop_update": ("rmsprop_update", 1, {}),
    "adam_update": ("adam_update", 2, {}),
}
FUSED = {
    "dense_forward": dense_forward,
    "activation_backward": activation_backward,
    "softmax_xent": softmax_xent,
    "sigmoid_bce": sigmoid_bce,
    **{name: _update(name, *spec) for name, spec in UPDATES.items()},
}


def overrides(xp, launcher):
    """The ops-table entries for ``fastnn.ops.Ops(xp, **overrides(xp, launcher))``: the
    ops above and the convolution and pooling ops of ``conv``."""
    from . import conv  # it builds on this module's launch helpers: imported here, once used

    fused = {**FUSED, **conv.FUSED}
    return {name: functools.partial(op, xp, launcher) for name, op in fused.items()}


def _require_arrays(launcher, **arrays):
    """Clear TypeError for a layer-level call with arrays of another kind (e.g. NumPy
    arrays given to a CuPy model's ``forward``)."""
    for what, a in arrays.items():
        if not isinstance(a, launcher.array_type):
            raise TypeError(
                f"{what} is a {type(a).__module__}.{type(a).__name__}, but this model's "
                f"layer-level API works on {launcher.description} arrays "
                f"({launcher.array_type.__module__}.{launcher.array_type.__name__}); move it "
                f"with model.backend.asarray(...), or use fit/predict/evaluate, which "
                f"accept NumPy input"
            )
