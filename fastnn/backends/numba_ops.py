"""The Numba backend's ops: size rules that pick a kernel, and the outputs they fill.

- Elementwise work (bias + activation, activation backward, optimizer updates) runs
  on one thread below ``PARALLEL_MIN`` elements and across Numba's threads above it.
- A dense layer whose product is small (``m * n_in * n_out <= SMALL_LAYER_MAX``) runs
  as one JIT kernel, product included; larger products go to BLAS (``np.matmul``) and
  the bias and activation are fused into one pass over its output.
- A model made only of Dense layers, with a cross-entropy loss and no gradient
  clipping, trains a whole epoch per kernel call (``epoch_steps``): a loop kernel
  when every layer has at most ``LOOP_LAYER_MAX`` weights (the planar 2-4-1), else a
  kernel that calls NumPy's own GEMM (plain SGD folded into the weight-gradient
  product); where that GEMM cannot be found, the loop kernel up to
  ``FUSED_EPOCH_MAX`` multiply-adds a step and the op-by-op steps above.
The thresholds come from bench/ measurements (see the README's Numba section).
Activations or layouts no kernel covers fall back to the generic op, which is exact.
"""

import operator
import time

import numba
import numpy as np

from fastnn import ops as generic
from fastnn import optimizers, steps
from fastnn.kernels import numba_blas as blas
from fastnn.kernels import numba_dense as dense
from fastnn.kernels import numba_losses as losses
from fastnn.kernels import numba_optimizers as rules
from fastnn.kernels import numba_train as train
from fastnn.kernels import numba_train_blas as train_blas
from fastnn.kernels.activation_codes import CODES, IDENTITY, SOFTMAX, STEP, code_of
from fastnn.kernels.numba_activations import ANY
from fastnn.kernels.numba_jit import entry_point, mask
from fastnn.layers import Dense, Parameter

PARALLEL_MIN = 1 << 18
SMALL_LAYER_MAX = 1 << 13
LOOP_LAYER_MAX = 32  # weights per layer up to which the loop kernel beats the BLAS one
FUSED_EPOCH_MAX = 1 << 18  # multiply-adds per step (batch * weights) for the loop kernel,
# where no GEMM can be called: above it the op-by-op steps are faster
WARM_BATCH = 128  # warmup(model) compiles the epoch kernel for batches of 2 and of this
_EMPTY = {np.dtype(np.float32): np.empty((0, 0), np.float32),
          np.dtype(np.float64): np.empty((0, 0), np.float64)}


def _fits(*arrays):
    """True if the kernels take these arrays: one float dtype, all C-contiguous."""
    dtype = arrays[0].dtype
    if dtype not in _EMPTY:
        return False
    for a in arrays:
        if a.dtype != dtype or not a.flags.c_contiguous:
            return False
    return True


def _kernel_kind(activation, *arrays):
    """(kind, alpha) if a kernel covers this activation and these arrays, else None."""
    spec = code_of(activation)
    if spec is None or not _fits(*arrays):
        return None
    return spec[0], arrays[0].dtype.type(spec[1])


def _small(X, W):
    return X.shape[0] * W.shape[0] * W.shape[1] <= SMALL_LAYER_MAX


def _threads():
    return numba.get_num_threads()


def dense_forward(X, W, b, activation, keep_z=True):
    spec = _kernel_kind(activation, X, W, b)
    if spec is None:
        return generic.dense_forward(np, X, W, b, activation)
    kind, alpha = spec
    keep_z = keep_z or not activation.derivative_from_output
    small = _small(X, W)
    Z = np.empty((X.shape[0], W.shape[1]), X.dtype) if small else np.matmul(X, W)
    A = Z if kind == IDENTITY else np.empty_like(Z)
    if small:
        dense.small_dense_forward(kind, X, W, b, Z, A, alpha, keep_z)
    elif Z.size >= PARALLEL_MIN:
        dense.bias_activation_parallel(kind, Z, b, Z, A, alpha, keep_z, _threads())
    else:
        forward, _ = dense.serial(mask(kind))
        forward(kind, Z, b, Z, A, alpha, 0, Z.shape[0], keep_z)
    return (Z if keep_z else A), A


def activation_forward(Z, activation):
    spec = _kernel_kind(activation, Z)
    if spec is None or Z.ndim != 2:
        return generic.activation_forward(np, Z, activation)
    kind, alpha = spec
    A = np.empty_like(Z)
    zero_bias = np.zeros(Z.shape[1], Z.dtype)
    if Z.size >= PARALLEL_MIN:  # A stands in for the Z output, which is not written
        dense.bias_activation_parallel(kind, Z, zero_bias, A, A, alpha, False, _threads())
    else:
        forward, _ = dense.serial(mask(kind))
        forward(kind, Z, zero_bias, A, A, alpha, 0, Z.shape[0], False)
    return A


def activation_backward(dA, Z, A, activation):
    spec = _kernel_kind(activation, dA, Z, A)
    if spec is None or spec[0] == STEP:
        return generic.activation_backward(np, dA, Z, A, activation)
    kind, alpha = spec
    dZ = np.empty_like(Z)
    db = np.zeros(Z.shape[1], Z.dtype)
    if Z.size >= PARALLEL_MIN:
        partial = np.zeros((_threads(), Z.shape[1]), Z.dtype)
        dense.activation_grad_parallel(kind, dA, Z, A, dZ, db, alpha, partial)
    else:
        _, grad = dense.serial(mask(kind))
        grad(kind, dA, Z, A, dZ, db, alpha, 0, Z.shape[0])
    return dZ, db


def dense_backward(X, W, dZ, need_dx):
    if not (_fits(X, W, dZ) and _small(X, W)):
        return generic.dense_backward(np, X, W, dZ, need_dx)
    dW = np.empty_like(W)
    dX = np.empty_like(X) if need_dx else _EMPTY[X.dtype]
    dense.small_dense_backward(X, W, dZ, dW, dX, need_dx)
    return dW, (dX if need_dx else None)


def layer_backward(X, W, dA, Z, A, activation, need_dx):
    spec = _kernel_kind(activation, X, W, dA, Z, A)
    if spec is None or spec[0] == STEP or not _small(X, W):
        dZ, db = activation_backward(dA, Z, A, activation)
        dW, dX = dense_backward(X, W, dZ, need_dx)
        return dW, db, dX
    kind, alpha = spec
    dW, db = np.empty_like(W), np.empty(W.shape[1], W.dtype)
    dX = np.empty_like(X) if need_dx else _EMPTY[X.dtype]
    dense.small_layer_backward(kind, X, W, dA, Z, A, np.empty_like(Z), dW, db, dX, alpha,
                               need_dx)
    return dW, db, (dX if need_dx else None)


def _loss(kernel, generic_op, Z, A, Y, need_grad, count):
    if not _fits(Z, A, Y):
        return generic_op(np, Z, A, Y, need_grad)
    dZ = np.empty_like(Z) if need_grad else _EMPTY[Z.dtype]
    loss = kernel(Z, A, Y, dZ, 1.0 / max(count, 1), need_grad)
    return Z.dtype.type(loss), (dZ if need_grad else None)


def sigmoid_bce(Z, A, Y, need_grad):
    return _loss(losses.sigmoid_bce, generic.sigmoid_bce, Z, A, Y, need_grad, Z.size)


def softmax_xent(Z, A, Y, need_grad):
    return _loss(losses.softmax_xent, generic.softmax_xent, Z, A, Y, need_grad, Z.shape[0])


def _hyper(rule, lr, weight_decay, momentum=0.0, eps=0.0, rho=0.0, beta1=0.0, beta2=0.0,
           t=1):
    """The 9-float ``hp`` tuple of ``rule`` (layout in ``numba_optimizers``); floats
    throughout, so every call shares one compiled specialization."""
    if rule in (rules.MOMENTUM, rules.NESTEROV):
        extra = (momentum,)
    elif rule == rules.ADAGRAD:
        extra = (eps,)
    elif rule == rules.RMSPROP:
        extra = (rho, 1.0 - rho, eps)
    elif rule == rules.ADAM:
        extra = (beta1, 1.0 - beta1, beta2, 1.0 - beta2, eps, 1.0 - beta1**t, 1.0 - beta2**t)
    else:
        extra = ()
    hp = (float(lr), float(weight_decay), *map(float, extra))
    return hp + (0.0,) * (9 - len(hp))


def _update(rule, p, g, s1, s2, hp):
    """Run ``rule`` over p and its state in one kernel call; False if the kernels cannot
    take these arrays (the caller then runs the generic op)."""
    if not _fits(p, g, s1, s2):
        return False
    # flat views: one compiled specialization serves weights and biases alike
    p, g, s1, s2 = p.reshape(-1), g.reshape(-1), s1.reshape(-1), s2.reshape(-1)
    if p.size >= PARALLEL_MIN:
        rules.update_parallel(rule, p, g, s1, s2, hp, _threads())
    else:
        rules.rules(mask(rule))(rule, p, g, s1, s2, hp)  # the build for this rule alone
    return True


def sgd_update(p, g, lr, weight_decay):
    if not _update(rules.SGD, p, g, p, p, _hyper(rules.SGD, lr, weight_decay)):
        generic.sgd_update(np, p, g, lr, weight_decay)


def momentum_update(p, g, v, lr, momentum, weight_decay):
    if not _update(rules.MOMENTUM, p, g, v, p,
                   _hyper(rules.MOMENTUM, lr, weight_decay, momentum=momentum)):
        generic.momentum_update(np, p, g, v, lr, momentum, weight_decay)


def nesterov_update(p, g, v, lr, momentum, weight_decay):
    if not _update(rules.NESTEROV, p, g, v, p,
                   _hyper(rules.NESTEROV, lr, weight_decay, momentum=momentum)):
        generic.nesterov_update(np, p, g, v, lr, momentum, weight_decay)


def adagrad_update(p, g, h, lr, eps, weight_decay):
    if not _update(rules.ADAGRAD, p, g, h, p, _hyper(rules.ADAGRAD, lr, weight_decay, eps=eps)):
        generic.adagrad_update(np, p, g, h, lr, eps, weight_decay)


def rmsprop_update(p, g, h, lr, rho, eps, weight_decay):
    if not _update(rules.RMSPROP, p, g, h, p,
                   _hyper(rules.RMSPROP, lr, weight_decay, rho=rho, eps=eps)):
        generic.rmsprop_update(np, p, g, h, lr, rho, eps, weight_decay)


def adam_update(p, g, m, v, lr, beta1, beta2, eps, t, weight_decay):
    hp = _hyper(rules.ADAM, lr, weight_decay, beta1=beta1, beta2=beta2, eps=eps, t=t)
    if not _update(rules.ADAM, p, g, m, v, hp):
        generic.adam_update(np, p, g, m, v, lr, beta1, beta2, eps, t, weight_decay)


_GEMM = []  # NumPy's CBLAS GEMM (or None), looked up on first use


def gemm_library():
    """NumPy's own GEMM for the BLAS epoch kernel, or None where it cannot be found."""
    if not _GEMM:
        _GEMM.append(blas.find())
    return _GEMM[0]


CHUNK_EPOCHS = 256  # at most this many epochs in one kernel call
CHUNK_WORK = 1 << 26  # multiply-adds of the forward products per call (~20-50 ms of work)
LOSS_KINDS = {"binary_crossentropy": train.BCE, "categorical_crossentropy": train.XENT}
HYPER_NAMES = ("momentum", "eps", "rho", "beta1", "beta2")


def epoch_steps(model, X, Y, batch, clip_norm=None, clip_value=None):
    """One kernel call per epoch when every layer is a small Dense layer the kernels
    cover, the loss is a cross-entropy and nothing is clipped; else the generic steps."""
    fused = None
    if clip_norm is None and clip_value is None:
        fused = _FusedEpoch.plan(model, X, Y, batch)
    return fused or steps.epoch_steps(model, X, Y, batch, clip_norm, clip_value)


class _FusedEpoch:
    """``run(order)`` for ``epoch_steps``, and ``run.epochs(count)`` for ``fit`` to run
    ``run.chunk`` epochs a call: the model's arrays gathered once into the tuples the
    epoch kernels take. Stacks of tiny layers run ``numba_train.train_epoch``
    (feature-major loops); the others ``numba_train_blas.train_epoch`` (NumPy's GEMM
    called from the kernel) when that GEMM can be found (see ``plan``)."""

    @classmethod
    def plan(cls, model, X, Y, batch):
        """A fused runner, or None if the model, optimizer or data do not fit a kernel."""
        layers, optimizer = model.layers, model.optimizer
        rule = rules.RULES.get(getattr(optimizer, "name", None))
        loss_kind = LOSS_KINDS.get(model.loss.name)
        if rule is None or loss_kind is None or not all(type(x) is Dense for x in layers):
            return None
        specs = [code_of(layer.activation) for layer in layers]
        if any(spec is None or spec[0] in (STEP, SOFTMAX) for spec in specs[:-1]):
            return None  # the output's activation is the loss's (sigmoid or softmax)
        values = [p.value for p in model.parameters()]
        if not _fits(X, Y, *values) or X.ndim != 2:
            return None
        gemm = None
        if max(layer.n_in * layer.n_out for layer in layers) > LOOP_LAYER_MAX:
            gemm = gemm_library()
        if gemm is None and batch * sum(x.n_in * x.n_out for x in layers) > FUSED_EPOCH_MAX:
            return None  # no GEMM to call, and too big for the loops to beat the op-by-op steps
        return cls(model, X, Y, batch, loss_kind, specs, gemm)

    def __init__(self, model, X, Y, batch, loss_kind, specs, gemm):
        self.model, self.batch, self.loss_kind, self.gemm = model, batch, loss_kind, gemm
        self.X, self.Y = X, Y
        if gemm is None:  # the loop kernel works feature-major
            self.XT, self.YT = np.ascontiguousarray(X.T), np.ascontiguousarray(Y.T)
        else:
            Ws = [layer.W.value for layer in model.layers]
            self.work = train_blas.buffers(X, Y, Ws, batch)
            self.keeps = np.array([not layer.activation.derivative_from_output
                                   for layer in model.layers[:-1]] + [True])
        self.kinds = np.array([kind for kind, _ in specs], np.int64)
        # what the kernel is built for, with the rule and the loss: every layer's kind
        # forward, the hidden layers' backward
        self.masks = (mask(*self.kinds.tolist()), mask(*self.kinds[:-1].tolist()))
        self.alphas = np.array([alpha for _, alpha in specs], X.dtype)
        self.params = model.parameters()
        self.no_order = np.empty(0, np.int64)
        # epochs per call for ``fit`` when nothing happens between epochs: short calls
        # (Python gets control back to raise KeyboardInterrupt, say) that still make the
        # per-call cost vanish for the tiny networks where it matters
        self.samples = X.shape[0]
        work = self.samples * sum(layer.n_in * layer.n_out for layer in model.layers)
        self.chunk = max(1, min(CHUNK_EPOCHS, CHUNK_WORK // max(work, 1)))
        self.bound, self.written = None, ()

    def _folds(self):
        """True if the current optimizer's weight update is folded into the weight-
        gradient GEMM (plain SGD on the BLAS kernel: dW is never formed, and the weights'
        ``grad`` is left None)."""
        rule = rules.RULES.get(getattr(self.model.optimizer, "name", None))
        return self.gemm is not None and rule == rules.SGD

    def _bind(self):
        """Gather the parameters, gradients and optimizer state into the kernel's
        tuples; again whenever a callback swaps the optimizer or a parameter array."""
        optimizer, params = self.model.optimizer, self.params
        self.rule = rules.RULES.get(getattr(optimizer, "name", None))
        self.call = None  # the kernel's entry point, fetched for the new arrays
        if self.rule is None:  # the kernel has no such rule: generic steps from now on
            return
        optimizer.ensure_state(params, self.model.backend)
        self.fold = self._folds()
        self.written = self.params[1::2] if self.fold else self.params
        for p in self.written:  # the kernel writes each step's gradients here
            if p.grad is None or p.grad.shape != p.value.shape or not _fits(p.value, p.grad):
                p.grad = np.empty_like(p.value)
        pairs = list(zip(params, optimizer.state))
        weights, biases = pairs[0::2], pairs[1::2]  # Dense params are (W, b)
        self.Ws, self.bs = (tuple(p.value for p, _ in group) for group in (weights, biases))
        self.dWs = self.Ws if self.fold else tuple(p.grad for p, _ in weights)
        self.dbs = tuple(p.grad for p, _ in biases)
        self.s1W, self.s1b, self.s2W, self.s2b = (
            tuple(_state(p, s, k) for p, s in group)
            for k in (0, 1) for group in (weights, biases)
        )
        self.settings = None  # (lr, weight_decay) the hp tuples were built for

    def _binding(self):
        """The objects the tuples were built from (compared by identity; holding them
        keeps their ids unique). If the optimizer is the bound one, so is the set of
        parameters whose ``grad`` the kernel writes (``written``)."""
        optimizer = self.model.optimizer
        return (optimizer, optimizer.state, *[p.value for p in self.params],
                *[p.grad for p in self.written])

    def __call__(self, order=None):
        """One epoch in ``order`` (None: the data's own); its (loss, metric) sums."""
        return self.epochs(1, order)[0]

    def epochs(self, count, order=None):
        """``count`` epochs in one kernel call, each in ``order``: their sums, (count, 2)."""
        if self.bound is None or not all(map(operator.is_, self._binding(), self.bound)):
            self._bind()
            self.bound = self._binding()
        optimizer = self.model.optimizer
        if self.rule is None:
            run = steps.epoch_steps(self.model, self.X, self.Y, self.batch)
            return np.stack([run(order) for _ in range(count)])
        settings = (optimizer.lr, optimizer.weight_decay)  # a schedule changes lr per epoch
        if settings != self.settings:
            hyper = {name: getattr(optimizer, name) for name in HYPER_NAMES
                     if hasattr(optimizer, name)}
            self.hp_w = _hyper(self.rule, optimizer.lr, optimizer.weight_decay, **hyper)
            self.hp_b = _hyper(self.rule, optimizer.lr, 0.0, **hyper)
            self.settings, self.call = settings, None
        sums = np.zeros((count, 2), self.X.dtype)
        # the shuffle's order: a contiguous int64 array (or the empty one), one type always
        order = self.no_order if order is None else np.ascontiguousarray(order, np.int64)
        head = (self.kinds, self.alphas, self.Ws, self.bs, self.dWs, self.dbs, self.s1W,
                self.s1b, self.s2W, self.s2b, self.hp_w, self.hp_b, int(optimizer.t))
        if self.gemm is None:
            args = (*head, self.XT, self.YT, order, self.batch, sums)
        else:
            args = (self.gemm.address(self.X.dtype), self.gemm.ilp64, self.keeps, *head,
                    self.X, self.Y, order, self.batch, sums, self.work)
        if self.call is None:  # every argument keeps its type until the next _bind
            build = (*self.masks, self.rule, self.loss_kind)
            module = train if self.gemm is None else train_blas
            self.call = entry_point(module.epoch_kernel(*build), args)
        taken = self.call(*args)
        if self.fold:
            for p in self.params[0::2]:
                p.grad = None
        optimizer.t += taken
        return sums


def _state(p, state, k):
    """The k-th state array of a parameter, or the parameter itself where the rule has
    none (the kernel never touches it then)."""
    return state[k] if k < len(state) else p.value


OVERRIDES = {
    name: globals()[name]
    for name in (
        "dense_forward", "activation_forward", "activation_backward", "dense_backward",
        "layer_backward", "sigmoid_bce", "softmax_xent", "sgd_update", "momentum_update",
        "nesterov_update", "adagrad_update", "rmsprop_update", "adam_update", "epoch_steps",
    )
}


def warmup(dtypes, model=None, optimizer=None):
    """Compile (or load from the cache) the kernels for each dtype, and the fused epoch
    for ``model`` if it takes one; returns seconds. Builds that are made per activation
    kind and per optimizer rule are compiled for ``model``'s activations and for
    ``optimizer`` (a name or Optimizer; default: the one ``fit`` would use, the model's
    or plain SGD), or for every kind and rule when there is no model."""
    start = time.perf_counter()
    kinds, rule_set = set(CODES.values()), set(rules.RULES.values())
    if model is not None:
        chosen = optimizers.get(optimizer) if optimizer is not None else model.optimizer
        name = "sgd" if chosen is None else chosen.name
        rule_set = {rules.RULES[name]} if name in rules.RULES else set()
        if rule_set:
            _warm_fused_epoch(model, name)
        kinds = {spec[0] for spec in (code_of(layer.activation) for layer in model.layers
                                      if hasattr(layer, "activation")) if spec}
    for dtype in dtypes:
        one = dtype.type(0.0)
        X, W, b = np.ones((2, 2), dtype), np.ones((2, 2), dtype), np.ones(2, dtype)
        Z, A, dZ = np.ones((2, 2), dtype), np.ones((2, 2), dtype), np.empty((2, 2), dtype)
        dense.small_dense_forward(0, X, W, b, Z, A, one, True)
        # each kind's own build, then the build for any kind (run as identity)
        for build, kind in [(mask(k), k) for k in sorted(kinds)] + [(ANY, IDENTITY)]:
            forward, grad = dense.serial(build)
            forward(kind, Z, b, Z, A, one, 0, 2, True)
            grad(kind, A, Z, A, dZ, b.copy(), one, 0, 2)
        dense.bias_activation_parallel(0, Z, b, Z, A, one, True, 1)
        dense.activation_grad_parallel(0, A, Z, A, dZ, b.copy(), one, np.empty((1, 2), dtype))
        dense.small_dense_backward(X, W, dZ, W.copy(), X.copy(), True)
        dense.small_layer_backward(0, X, W, A, Z, A, dZ, W.copy(), b.copy(), X.copy(), one,
                                   True)
        losses.sigmoid_bce(Z, A, A, dZ, 0.25, True)
        losses.softmax_xent(Z, A, A, dZ, 0.5, True)
        hp = (0.1, 0.0, 0.9, 0.1, 0.9, 0.1, 1e-8, 0.1, 0.1)
        p = np.zeros(4, dtype)  # _update passes flat views of weights and biases
        for rule in sorted(rule_set):
            rules.rules(mask(rule))(rule, p, p.copy(), p.copy(), p.copy(), hp)
        rules.update(rules.ADAM, p, p.copy(), p.copy(), p.copy(), hp)  # update_parallel's
        rules.update_parallel(rules.ADAM, p, p.copy(), p.copy(), p.copy(), hp, 1)
    return time.perf_counter() - start


def _warm_fused_epoch(model, optimizer):
    """Run the epoch kernel once on zero arrays shaped like ``model`` (two samples),
    with a new ``optimizer`` (a rule's name), so the build for its configuration, depth
    and dtype is compiled; the model is untouched. Where no GEMM is found, the kernel a
    batch takes depends on its size: both are compiled where batches of 2 and of
    ``WARM_BATCH`` samples differ."""
    if not all(type(layer) is Dense for layer in model.layers):
        return
    dtype = np.dtype(model.dtype)
    X, Y = np.zeros((2, model.n_in), dtype), np.zeros((2, model.n_out), dtype)
    kernels = set()
    for batch in (2, WARM_BATCH):  # the kernel sees min(batch, 2) rows either way
        probe = _FusedEpoch.plan(_Probe(model, optimizer), X, Y, batch)
        if probe is not None and (probe.gemm is None) not in kernels:
            kernels.add(probe.gemm is None)
            probe()


class _Probe:
    """A stand-in for a Dense-only model: zero copies of its parameters, and a new
    optimizer of the named kind."""

    def __init__(self, model, optimizer):
        self.loss, self.backend, self.layers = model.loss, model.backend, []
        for layer in model.layers:
            copy = Dense(layer.n_in, layer.n_out, layer.activation)
            copy.params = tuple(Parameter(p.name, np.zeros_like(p.value), p.decay)
                                for p in layer.params)
            self.layers.append(copy)
        self.optimizer = optimizers.get(optimizer, lr=0.01)

    def parameters(self):
        return [p for layer in self.layers for p in layer.params]
