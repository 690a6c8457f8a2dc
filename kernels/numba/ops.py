"""The Numba backend's ops: size rules that pick a kernel, and the outputs they fill.

- Elementwise work (bias + activation, activation backward, optimizer updates) runs
  on one thread below ``PARALLEL_MIN`` elements and across Numba's threads above it.
- A dense layer whose product is small (``m * n_in * n_out <= SMALL_LAYER_MAX``) runs
  as one JIT kernel, product included; larger products go to NumPy's own GEMM and the
  bias and activation are fused into one pass over its output.
- Thread policy: every product of these ops runs with OpenBLAS on one thread, and the
  parallel work is Numba's (a product of ``SPLIT_MIN`` multiply-adds or more is split
  over Numba's threads, ``products``; the conv kernels call the GEMM on each of them), so
  OpenBLAS's thread pool never wakes during a step and never spins beside a parallel
  Numba kernel (see ``gemm_threads``).
Whole training epochs in one kernel call are ``epoch``'s.
The thresholds come from bench/ measurements (see the README's Numba section).
Activations or layouts no kernel covers fall back to the generic op, which is exact.
"""

import contextlib
import functools
import time

import numba
import numpy as np

from fastnn import conv_ops, norm_ops
from fastnn import ops as generic
from fastnn.windows import output_hw

from .. import hyper as layout
from ..activation_codes import CODES, IDENTITY, SOFTMAX, STEP, code_of
from . import batchnorm as batchnorm
from . import blas as blas
from . import conv as conv
from . import dense as dense
from . import losses as losses
from . import optimizers as rules
from . import pool as pool
from . import products as products
from . import softmax as softmax
from . import tally as tallies
from .activations import ANY
from .jit import mask

PARALLEL_MIN = 1 << 18
SMALL_LAYER_MAX = 1 << 13
SPLIT_MIN = 1 << 21  # multiply-adds from which a dense product is split over threads
SUM_CHUNKS = (8, 1 << 19, 64)  # a parallel bias gradient's chunks: at least, elements each, most
_EMPTY = {np.dtype(np.float32): np.empty((0, 0), np.float32),
          np.dtype(np.float64): np.empty((0, 0), np.float64)}


def fits(*arrays):
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
    if spec is None or not fits(*arrays):
        return None
    return spec[0], arrays[0].dtype.type(spec[1])


def _small(X, W):
    return X.shape[0] * W.shape[0] * W.shape[1] <= SMALL_LAYER_MAX


def _threads():
    return numba.get_num_threads()


def _partial_sums(Z):
    """Zeroed rows for a parallel backward's bias gradient, one per chunk of Z's rows:
    the chunks are fixed by Z's shape, not by the thread count, and summed in their
    order, so db has the same bits on any number of threads."""
    least, size, most = SUM_CHUNKS  # 8 chunks cost 2 threads nothing measurable; 64 did
    chunks = min(Z.shape[0], most, max(least, Z.size // size))
    return np.zeros((chunks, Z.shape[1]), Z.dtype)


def dense_forward(X, W, b, activation, keep_z=True):
    spec = _kernel_kind(activation, X, W, b)
    if spec is None:
        return generic.dense_forward(np, X, W, b, activation)
    kind, alpha = spec
    keep_z = keep_z or not activation.derivative_from_output
    small = _small(X, W)
    Z = np.empty((X.shape[0], W.shape[1]), X.dtype) if small else _matmul(X, W)
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
    if kind == SOFTMAX:  # row-wise: its own kernels (A stands in for the unwritten Z out)
        if Z.size >= PARALLEL_MIN:
            # rows in 4 chunks a thread: with one chunk a thread, a thread woken late
            # left (4096, 1024) float32 at 0.97x torch's speed; 1.12x with 8 (AMD EPYC)
            softmax.forward(Z, zero_bias, A, A, False, min(Z.shape[0], 4 * _threads()))
        else:
            softmax.rows(Z, zero_bias, A, A, 0, Z.shape[0], False)
        return A
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
    if kind == SOFTMAX:  # the Jacobian-vector product, row by row
        if Z.size >= PARALLEL_MIN:
            softmax.backward(dA, A, dZ, db, _partial_sums(Z))
        else:
            softmax.grad_rows(dA, A, dZ, db, 0, Z.shape[0])
        return dZ, db
    if Z.size >= PARALLEL_MIN:
        dense.activation_grad_parallel(kind, dA, Z, A, dZ, db, alpha, _partial_sums(Z))
    else:
        _, grad = dense.serial(mask(kind))
        grad(kind, dA, Z, A, dZ, db, alpha, 0, Z.shape[0])
    return dZ, db


def dense_backward(X, W, dZ, need_dx):
    if not fits(X, W, dZ):
        return generic.dense_backward(np, X, W, dZ, need_dx)
    if not _small(X, W):
        return _weight_product(X, dZ), (_matmul(dZ, W, trans_b=True) if need_dx else None)
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
    if not fits(Z, A, Y):
        return generic_op(np, Z, A, Y, need_grad)
    dZ = np.empty_like(Z) if need_grad else _EMPTY[Z.dtype]
    loss = kernel(Z, A, Y, dZ, 1.0 / max(count, 1), need_grad)
    return Z.dtype.type(loss), (dZ if need_grad else None)


def bias_grad(dZ):
    if not fits(dZ) or dZ.ndim != 2:
        return generic.bias_grad(np, dZ)
    db = np.empty(dZ.shape[1], dZ.dtype)
    tallies.column_sums(dZ, db)
    return db


def tally(sums, loss, rows, task, A, Y):
    """One kernel call (``kernels/numba/tally.py``) for the classifiers' scores; the
    generic op for regression and for arrays the kernel does not take."""
    if (task not in ("multiclass", "binary") or not fits(sums, A, Y) or A.ndim != 2
            or A.shape != Y.shape or getattr(loss, "dtype", None) != sums.dtype):
        generic.tally(np, sums, loss, rows, task, A, Y)
    else:
        tallies.tally(sums, loss, rows, A, Y, task == "binary")


def sigmoid_bce(Z, A, Y, need_grad):
    return _loss(losses.sigmoid_bce, generic.sigmoid_bce, Z, A, Y, need_grad, Z.size)


def softmax_xent(Z, A, Y, need_grad):
    return _loss(losses.softmax_xent, generic.softmax_xent, Z, A, Y, need_grad, Z.shape[0])


@functools.lru_cache(maxsize=64)
def hyper(rule, lr, weight_decay, t=1, **settings):
    """The ``hp`` tuple of ``rule`` (a code of ``optimizers.RULES``) from its
    settings, as ``kernels/hyper.py`` lays it out; remembered, since a fit asks for the
    same tuple for every parameter at every step (0.8 us a call made, 0.1 looked up)."""
    return layout.hp(layout.RULES[rule], {"lr": lr, "weight_decay": weight_decay, **settings}, t)


def _update(rule, p, g, s1, s2, hp):
    """Run ``rule`` over p and its state in one kernel call; False if the kernels cannot
    take these arrays (the caller then runs the generic op)."""
    if not fits(p, g, s1, s2):
        return False
    # flat views: one compiled specialization serves weights and biases alike
    p, g, s1, s2 = p.reshape(-1), g.reshape(-1), s1.reshape(-1), s2.reshape(-1)
    if p.size >= PARALLEL_MIN:
        rules.update_parallel(rule, p, g, s1, s2, hp, _threads())
    else:
        _serial_update(rule)(rule, p, g, s1, s2, hp)
    return True


@functools.cache
def _serial_update(rule):
    """The serial update built for ``rule`` alone (``optimizers.rules``)."""
    return rules.rules(mask(rule))


def sgd_update(p, g, lr, weight_decay):
    if not _update(rules.SGD, p, g, p, p, hyper(rules.SGD, lr, weight_decay)):
        generic.sgd_update(np, p, g, lr, weight_decay)


def momentum_update(p, g, v, lr, momentum, weight_decay):
    if not _update(rules.MOMENTUM, p, g, v, p,
                   hyper(rules.MOMENTUM, lr, weight_decay, momentum=momentum)):
        generic.momentum_update(np, p, g, v, lr, momentum, weight_decay)


def nesterov_update(p, g, v, lr, momentum, weight_decay):
    if not _update(rules.NESTEROV, p, g, v, p,
                   hyper(rules.NESTEROV, lr, weight_decay, momentum=momentum)):
        generic.nesterov_update(np, p, g, v, lr, momentum, weight_decay)


def adagrad_update(p, g, h, lr, eps, weight_decay):
    if not _update(rules.ADAGRAD, p, g, h, p, hyper(rules.ADAGRAD, lr, weight_decay, eps=eps)):
        generic.adagrad_update(np, p, g, h, lr, eps, weight_decay)


def rmsprop_update(p, g, h, lr, rho, eps, weight_decay):
    if not _update(rules.RMSPROP, p, g, h, p,
                   hyper(rules.RMSPROP, lr, weight_decay, rho=rho, eps=eps)):
        generic.rmsprop_update(np, p, g, h, lr, rho, eps, weight_decay)


def adam_update(p, g, m, v, lr, beta1, beta2, eps, t, weight_decay):
    hp = hyper(rules.ADAM, lr, weight_decay, beta1=beta1, beta2=beta2, eps=eps, t=t)
    if not _update(rules.ADAM, p, g, m, v, hp):
        generic.adam_update(np, p, g, m, v, lr, beta1, beta2, eps, t, weight_decay)


def _gemm():
    """NumPy's own GEMM (``blas.Gemm``) for the conv kernels, or None where none is found
    (the generic conv ops run then). The epoch module owns the lookup (``_epoch``)."""
    return _epoch().gemm_library()


@functools.cache
def _epoch():
    """The epoch module: it imports this module, so it is imported here on first use
    (once: an import statement run on every ``_gemm`` call cost 0.3 us of its 0.5)."""
    from . import epoch

    return epoch


@functools.cache
def _blas_threads():
    """OpenBLAS's thread-count control in the GEMM's library (``blas.thread_control``),
    or None."""
    gemm = _gemm()
    return None if gemm is None else blas.thread_control(gemm.path)


@contextlib.contextmanager
def _numba_threads(count):
    before = numba.get_num_threads()
    numba.set_num_threads(count)
    try:
        yield
    finally:
        numba.set_num_threads(before)


def gemm_threads():
    """The thread policy of every product these ops run: the GEMM runs on one thread
    (OpenBLAS's count set to 1, then restored: 0.6 us a call, and no worker wakes) and
    the parallel work is Numba's; where that count cannot be set, the kernel itself runs
    on one thread, so the two pools never compete for the cores. Since no product of a
    step runs on OpenBLAS's threads, none leaves them spinning when a parallel Numba
    kernel starts. The results are the same bits either way."""
    control = _blas_threads()
    if control is not None:
        return blas.SingleThreaded(control)
    if numba.get_num_threads() == 1:
        return contextlib.nullcontext()
    return _numba_threads(1)


def _split(macs):
    """True if a product of ``macs`` multiply-adds runs split over Numba's threads (at
    any thread count: the blocks, and so the bits, never depend on it)."""
    return macs >= SPLIT_MIN


def _matmul(a, b, trans_b=False):
    """a @ b (a @ b.T if ``trans_b``), C-contiguous, under ``gemm_threads``: one GEMM
    call, or, for a large product, fixed blocks of the longer side of the result across
    Numba's threads (``products.product``: the smaller operand is the one each block
    packs again); the blocks, and so the bits, depend on the shapes alone."""
    gemm = _gemm()
    if gemm is None:
        return np.matmul(a, b.T if trans_b else b)
    m, n = a.shape[0], (b.shape[0] if trans_b else b.shape[1])
    c = np.empty((m, n), a.dtype)
    split = _split(c.size * a.shape[1])
    by_columns = split and n > m
    block = products.blocks(n if by_columns else m) if split else max(1, m)
    with gemm_threads():
        products.product(gemm.address(a.dtype), gemm.ilp64, a, b, c, trans_b, block,
                         by_columns)
    return c


def _weight_product(x, d):
    """x.T @ d (a dense weight gradient) under ``gemm_threads``, in fixed blocks of its
    rows across Numba's threads for a large product (``products.weight_rows``)."""
    gemm = _gemm()
    if gemm is None:
        return np.matmul(x.T, d)
    c = np.empty((x.shape[1], d.shape[1]), x.dtype)
    block = products.blocks(c.shape[0]) if _split(c.size * x.shape[0]) else max(1, c.shape[0])
    with gemm_threads():
        products.weight_rows(gemm.address(x.dtype), gemm.ilp64, x, d, c, block)
    return c


def _conv_takes(X, W, other):
    """True if the conv kernels take these arrays (layouts are copied if need be)."""
    dtype = X.dtype
    return (dtype in _EMPTY and W.dtype == dtype and other.dtype == dtype
            and _gemm() is not None)


def _conv_kind(activation, dtype):
    """(kind, alpha, fused): the activation's code where the conv kernels fuse it, else
    identity (the ops then apply the activation's own xp code)."""
    spec = code_of(activation)
    if spec is not None and spec[0] in conv.FUSED:
        return spec[0], dtype.type(spec[1]), True
    return IDENTITY, dtype.type(0.0), False


def _geometry(X, W, stride, padding, pooled=False):
    """The kernels' window arguments (kh, kw, top, left), (OH, OW), the output rows per
    tile (even where a 2x2 pool is fused and a tile holds fewer than OH: its windows
    must not straddle two tiles) and whether the tiles are wide (``conv.wide``)."""
    F, C, kh, kw = W.shape
    (top, _), (left, _) = padding
    OH, OW = output_hw(X.shape, (kh, kw), stride, padding)
    is_wide = conv.wide(C * kh * kw, F, stride)
    rows = conv.tile_rows(C * kh * kw, OH, conv.tile_width(OW, kw, is_wide))
    if pooled and rows < OH:
        rows = max(2, rows - rows % 2)
    return (kh, kw, top, left), (OH, OW), rows, is_wide


def conv2d_forward(X, W, b, activation, stride, padding, keep_z=True):
    """The tile + GEMM kernel (``kernels/numba/conv.py``); ``work`` is None: the
    backward rebuilds each tile instead of keeping the im2col matrix."""
    if not _conv_takes(X, W, b):
        return conv_ops.conv2d_forward(np, X, W, b, activation, stride, padding, keep_z)
    kind, alpha, fused = _conv_kind(activation, X.dtype)
    X, b = np.ascontiguousarray(X), np.ascontiguousarray(b)
    F = W.shape[0]
    W2 = np.ascontiguousarray(W).reshape(F, -1)
    window, (OH, OW), rows, is_wide = _geometry(X, W, stride, padding)
    A = np.empty((X.shape[0], F, OH, OW), X.dtype)
    keep = keep_z and kind != IDENTITY  # relu's derivative reads A where Z is not kept
    Z = np.empty_like(A) if keep else A
    forward = conv.forward_kernel(*stride, is_wide, kind, keep)
    gemm = _gemm()
    with gemm_threads():
        forward(gemm.address(X.dtype), gemm.ilp64, X, W2, b, Z, A, _NO_CHOICES, alpha, *window,
                rows, OH, OW)
    if not fused:  # the kernel wrote Z alone
        A = activation.forward(np, Z)
    return Z, A, None


def conv2d_backward(X, W, dA, Z, A, work, activation, stride, padding, need_dx):
    """dW and db summed over fixed chunks of images in a fixed order (the same bits
    at any thread count); dX only if ``need_dx``."""
    if not _conv_takes(X, W, dA):
        return conv_ops.conv2d_backward(np, X, W, dA, Z, A, work, activation, stride, padding,
                                        need_dx)
    kind, alpha, fused = _conv_kind(activation, X.dtype)
    if not fused:
        dA = activation.backward(np, dA, Z, A)
    X, dA, Z, A = (np.ascontiguousarray(a) for a in (X, dA, Z, A))
    window, (OH, OW), rows, is_wide = _geometry(X, W, stride, padding)
    backward = conv.backward_kernel(*stride, is_wide, kind, need_dx)
    return _conv_backward(backward, X, W, dA, Z, A, _NO_CHOICES, alpha, window, rows, OH, OW,
                          need_dx)


def _conv_backward(backward, X, W, dA, Z, A, where, alpha, window, rows, OH, OW, need_dx):
    """Run a conv backward build: (dW, db, dX or None)."""
    F = W.shape[0]
    W2 = np.ascontiguousarray(W).reshape(F, -1)
    dW, db = np.zeros(W2.shape, X.dtype), np.zeros(F, X.dtype)
    dX = np.empty(X.shape if need_dx else (0, 0, 0, 0), X.dtype)  # the kernel zeroes it
    gemm = _gemm()
    with gemm_threads():
        backward(gemm.address(X.dtype), gemm.ilp64, X, W2, dA, Z, A, where, dW, db, dX, alpha,
                 *window, rows, OH, OW, conv.CHUNK)
    return dW.reshape(W.shape), db, (dX if need_dx else None)


_NO_CHOICES = np.empty((0, 0, 0, 0), np.int32)  # the where of the builds without a pool


def _pools(X, W, b, activation, stride, size, pool_stride):
    """True if the pooled conv kernels take this conv + max pool: a 2x2 pool moving by 2,
    the conv's activation one of ``conv.POOLED``, layouts the conv kernels take."""
    kind, _, fused = _conv_kind(activation, X.dtype)
    return (tuple(size) == (2, 2) and tuple(pool_stride) == (2, 2)
            and _conv_takes(X, W, b) and fused and kind in conv.POOLED)


def conv2d_maxpool_forward(X, W, b, activation, stride, padding, size, pool_stride):
    """A conv and the 2x2 max pool after it in one kernel (``conv.forward_kernel``'s pooled
    build): the pooled output written from each tile's product, never the conv's full
    activation; ``work``: the windows' choices (int32, as the output). Other pools and
    activations: this table's conv then pool ops (``conv_ops.conv2d_maxpool_forward``)."""
    if not _pools(X, W, b, activation, stride, size, pool_stride):
        return conv_ops.conv2d_maxpool_forward(_SEPARATE, X, W, b, activation, stride, padding,
                                               size, pool_stride)
    kind, alpha, _ = _conv_kind(activation, X.dtype)
    X, b = np.ascontiguousarray(X), np.ascontiguousarray(b)
    F = W.shape[0]
    W2 = np.ascontiguousarray(W).reshape(F, -1)
    window, (OH, OW), rows, is_wide = _geometry(X, W, stride, padding, pooled=True)
    P = np.empty((X.shape[0], F, OH // 2, OW // 2), X.dtype)
    where = np.empty(P.shape, np.int32)
    forward = conv.forward_kernel(*stride, is_wide, kind, 0, True)
    gemm = _gemm()
    with gemm_threads():
        forward(gemm.address(X.dtype), gemm.ilp64, X, W2, b, P, P, where, alpha, *window, rows,
                OH, OW)
    return P, where


def conv2d_maxpool_backward(X, W, dP, P, work, activation, stride, padding, size, pool_stride,
                            need_dx):
    """The pooled gradient through the pool's choices and the activation's derivative
    straight into each tile of the conv's backward (``conv.backward_kernel``'s pooled
    build), never a full-resolution gradient; the composition where the forward was."""
    if isinstance(work, tuple):  # the forward's composition
        return conv_ops.conv2d_maxpool_backward(_SEPARATE, X, W, dP, P, work, activation,
                                                stride, padding, size, pool_stride, need_dx)
    kind, alpha, _ = _conv_kind(activation, X.dtype)
    X, dP = np.ascontiguousarray(X), np.ascontiguousarray(dP, X.dtype)
    window, (OH, OW), rows, is_wide = _geometry(X, W, stride, padding, pooled=True)
    backward = conv.backward_kernel(*stride, is_wide, kind, need_dx, True)
    return _conv_backward(backward, X, W, dP, P, P, work, alpha, window, rows, OH, OW, need_dx)


def _planes(a):
    """An (N, C, H, W) array as (N*C, H, W), C-contiguous."""
    a = np.ascontiguousarray(a)
    return a.reshape(-1, *a.shape[2:])


def maxpool2d_forward(X, size, stride):
    """Maxima and their positions in one pass (``kernels/numba/pool.py``); ``work``:
    the position in its plane of each window's chosen input, int32."""
    if X.dtype not in _EMPTY:
        return conv_ops.maxpool2d_forward(np, X, size, stride)
    N, C = X.shape[:2]
    OH, OW = output_hw(X.shape, size, stride)
    out = np.empty((N, C, OH, OW), X.dtype)
    where = np.empty((N * C, OH, OW), np.int32)
    pool.max_forward(*size, *stride)(_planes(X), out.reshape(N * C, OH, OW), where)
    return out, where


def maxpool2d_backward(dA, X, out, work, size, stride):
    if X.dtype not in _EMPTY:
        return conv_ops.maxpool2d_backward(np, dA, X, out, work, size, stride)
    dX = np.empty(X.shape, dA.dtype)  # zeroed by the kernel
    pool.max_backward(_planes(dA), work, dX.reshape(-1, *X.shape[2:]))
    return dX


def _vectors(arrays, dtype, count):
    """True if each array is a (count,) vector of ``dtype`` (the per-channel inputs)."""
    return all(a.dtype == dtype and a.shape == (count,) for a in arrays)


def batchnorm_sums(X, center):
    if not fits(X) or (center is not None and not _vectors([center], X.dtype, X.shape[1])):
        return norm_ops.batchnorm_sums(np, X, center)
    out = np.empty(X.shape[:2], X.dtype)
    which, center = ((batchnorm.SUMS, _EMPTY[X.dtype].reshape(0)) if center is None
                     else (batchnorm.SQUARES, center))
    batchnorm.sums(which, X, X, center, out, out)
    return out


def batchnorm_apply(X, mean, inv_std, gamma, beta):
    if not fits(X) or not _vectors((mean, inv_std, gamma, beta), X.dtype, X.shape[1]):
        return norm_ops.batchnorm_apply(np, X, mean, inv_std, gamma, beta)
    X_hat, Z = np.empty_like(X), np.empty_like(X)
    batchnorm.maps(batchnorm.APPLY, X, X, mean, inv_std, gamma, beta, X_hat, Z)
    return X_hat, Z


def batchnorm_grad_sums(dZ, X_hat):
    if not fits(dZ, X_hat) or dZ.shape != X_hat.shape:
        return norm_ops.batchnorm_grad_sums(np, dZ, X_hat)
    out_dz, out_dzx = np.empty(dZ.shape[:2], dZ.dtype), np.empty(dZ.shape[:2], dZ.dtype)
    batchnorm.sums(batchnorm.GRAD_SUMS, dZ, X_hat, _EMPTY[dZ.dtype].reshape(0), out_dz, out_dzx)
    return out_dz, out_dzx


def batchnorm_input_grad(dZ, X_hat, scale, mean_dz, mean_dzx):
    if not fits(dZ, X_hat) or dZ.shape != X_hat.shape or not _vectors(
            (scale, mean_dz, mean_dzx), dZ.dtype, dZ.shape[1]):
        return norm_ops.batchnorm_input_grad(np, dZ, X_hat, scale, mean_dz, mean_dzx)
    dX = np.empty_like(dZ)
    batchnorm.maps(batchnorm.INPUT_GRAD, dZ, X_hat, scale, mean_dz, mean_dzx, scale, dX, dX)
    return dX


class _SEPARATE:
    """This backend's separate conv and pool ops, which the composed conv + pool op
    (``conv_ops.conv2d_maxpool_forward``) calls where the pooled kernels do not fit."""

    conv2d_forward = staticmethod(conv2d_forward)
    conv2d_backward = staticmethod(conv2d_backward)
    maxpool2d_forward = staticmethod(maxpool2d_forward)
    maxpool2d_backward = staticmethod(maxpool2d_backward)


OVERRIDES = {
    name: globals()[name]
    for name in (
        "dense_forward", "activation_forward", "activation_backward", "dense_backward",
        "bias_grad", "layer_backward", "sigmoid_bce", "softmax_xent", "tally", "sgd_update",
        "momentum_update", "nesterov_update", "adagrad_update", "rmsprop_update", "adam_update",
        "conv2d_forward", "conv2d_backward", "maxpool2d_forward", "maxpool2d_backward",
        "conv2d_maxpool_forward", "conv2d_maxpool_backward", "batchnorm_sums",
        "batchnorm_apply", "batchnorm_grad_sums", "batchnorm_input_grad",
    )
}


def warmup(dtypes, activations=None, optimizers=None):
    """Compile (or load from the cache) the op-by-op kernels for each dtype; returns
    seconds. Builds that are made per activation kind and per optimizer rule are
    compiled for the ``activations`` and ``optimizers`` named (None: every one; names
    without a kernel are skipped)."""
    start = time.perf_counter()
    kinds = set(CODES.values()) if activations is None else {
        CODES[name] for name in activations if name in CODES}
    rule_set = set(rules.RULES.values()) if optimizers is None else {
        rules.RULES[name] for name in optimizers if name in rules.RULES}
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
        if SOFTMAX in kinds:  # its own row kernels, serial and parallel
            softmax.rows(Z, b, Z, A, 0, 2, True)
            softmax.grad_rows(A, A, dZ, b.copy(), 0, 2)
            softmax.forward(Z, b, Z, A, True, 1)
            softmax.backward(A, A, dZ, b.copy(), np.zeros((1, 2), dtype))
        tallies.column_sums(Z, b.copy())
        for binary in (False, True):
            tallies.tally(np.zeros(2, dtype), one, 2, Z, A, binary)
        losses.sigmoid_bce(Z, A, A, dZ, 0.25, True)
        losses.softmax_xent(Z, A, A, dZ, 0.5, True)
        hp = (0.1, 0.0, 0.9, 0.1, 0.9, 0.1, 1e-8, 0.1, 0.1)
        p = np.zeros(4, dtype)  # _update passes flat views of weights and biases
        for rule in sorted(rule_set):
            rules.rules(mask(rule))(rule, p, p.copy(), p.copy(), p.copy(), hp)
        rules.update(rules.ADAM, p, p.copy(), p.copy(), p.copy(), hp)  # update_parallel's
        rules.update_parallel(rules.ADAM, p, p.copy(), p.copy(), p.copy(), hp, 1)
    return time.perf_counter() - start
