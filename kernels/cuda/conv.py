"""The CuPy backend's convolution and pooling ops (the contract of ``fastnn.conv_ops``):
the kernels of ``conv_source`` plus cuBLAS GEMMs through ``xp.matmul``.

conv2d_forward: im2col into cols (C*kh*kw, N*OH*OW), Zt = W (F, C*kh*kw) @ cols in
one GEMM, then one pass writing Z = Zt transposed to NCHW plus the bias and A = f(Z).
conv2d_backward: one pass writing dZt = (dA * f'(Z)) transposed, db = its row sums,
dW = dZt @ cols^T and dcols = W^T @ dZt (two GEMMs), col2im as a gather. Max pooling
keeps the index of each window's chosen input (``work``) and its backward gathers by
it; average pooling needs no work. Nothing is read back to the host, and every sum
is in a fixed order (deterministic).

Arrays that are not C-contiguous are copied first (on the device); a dtype other
than float32/float64 runs the generic op (forward and backward alike: each decides by
X's dtype). An activation without a fused kernel (a user's own) runs its own forward
and backward between the kernels.
"""

import numpy as np

from fastnn import conv_ops as generic
from fastnn.windows import output_hw

from . import source
from .ops import _blocks, _fused_name, _require_arrays


def conv2d_forward(xp, launcher, X, W, b, activation, stride, padding, keep_z=True):
    """(Z, A, work): work is the columns (C*kh*kw, N*OH*OW), for the backward's dW."""
    _require_arrays(launcher, X=X, W=W, b=b)
    dtype_name = _supported(xp, X)
    if dtype_name is None:
        return generic.conv2d_forward(xp, X, W, b, activation, stride, padding, keep_z)
    X, W, b = (_contiguous(xp, a) for a in (X, W, b))
    F = W.shape[0]
    cols, (OH, OW) = _im2col(xp, launcher, dtype_name, X, W.shape[2:], stride, padding)
    Zt = xp.matmul(xp.reshape(W, (F, -1)), cols)  # (F, N*OH*OW)
    N, P = X.shape[0], OH * OW
    act = _fused_name(activation, source.ACTIVATIONS)
    Z = xp.empty((N, F, OH, OW), dtype=X.dtype)
    alpha = getattr(activation, "alpha", 0.0)
    if act is None or act == "identity":  # Z alone; a user's activation after it
        launcher.launch("conv_bias_act_forward", dtype_name, "identity", _blocks(Z.size),
                        (Zt, b, Z, Z, N, F, P, 1, alpha))
        return Z, (Z if act else activation.forward(xp, Z)), cols
    skip_z = not keep_z and activation.derivative_from_output  # A alone, returned as Z too
    A = Z if skip_z else xp.empty_like(Z)
    launcher.launch("conv_bias_act_forward", dtype_name, act, _blocks(Z.size),
                    (Zt, b, Z, A, N, F, P, int(not skip_z), alpha))
    return Z, A, cols


def conv2d_backward(xp, launcher, X, W, dA, Z, A, work, activation, stride, padding,
                    need_dx):
    """(dW, db, dX or None); ``work`` None (a forward outside training) rebuilds cols."""
    dtype_name = _supported(xp, X)
    if dtype_name is None:
        return generic.conv2d_backward(xp, X, W, dA, Z, A, work, activation, stride,
                                       padding, need_dx)
    X, W, dA = (_contiguous(xp, a) for a in (X, W, dA))
    F, C, kh, kw = W.shape
    N, _, OH, OW = dA.shape
    act = _fused_name(activation, source.DIFFERENTIABLE)
    if act is None:  # a user's activation: its own backward, then the transposing pass
        dZ = _contiguous(xp, activation.backward(xp, dA, Z, A))
        inputs, act = (dZ, dZ, dZ), "identity"
    else:
        inputs = (dA, _contiguous(xp, Z), _contiguous(xp, A))
    dZt = xp.empty((F, N * OH * OW), dtype=dA.dtype)
    alpha = getattr(activation, "alpha", 0.0)
    launcher.launch("conv_act_backward", dtype_name, act, _blocks(dZt.size),
                    (*inputs, dZt, N, F, OH * OW, alpha, 1.0 - alpha))
    db = xp.sum(dZt, axis=1)
    cols = work if work is not None else _im2col(xp, launcher, dtype_name, X, (kh, kw),
                                                 stride, padding)[0]
    dW = xp.reshape(xp.matmul(dZt, cols.T), W.shape)
    if not need_dx:
        return dW, db, None
    dcols = xp.matmul(xp.reshape(W, (F, -1)).T, dZt)  # (C*kh*kw, N*OH*OW)
    return dW, db, _col2im(xp, launcher, dtype_name, dcols, X.shape, (kh, kw), stride,
                           padding)


def maxpool2d_forward(xp, launcher, X, size, stride):
    """(out, work): work is the index y*W + x of each window's chosen input in its
    plane (int32, shaped as out)."""
    _require_arrays(launcher, X=X)
    dtype_name = _supported(xp, X)
    if dtype_name is None:
        return generic.maxpool2d_forward(xp, X, size, stride)
    X = _contiguous(xp, X)
    out_shape = (*X.shape[:2], *output_hw(X.shape, size, stride))
    out = xp.empty(out_shape, dtype=X.dtype)
    chosen = xp.empty(out_shape, dtype=xp.int32)
    launcher.launch("maxpool_forward", dtype_name, None, _blocks(out.size),
                    (X, out, chosen, *_geometry(X.shape, size, stride, out_shape)))
    return out, chosen


def maxpool2d_backward(xp, launcher, dA, X, out, work, size, stride):
    dtype_name = _supported(xp, X)
    if dtype_name is None:
        return generic.maxpool2d_backward(xp, dA, X, out, work, size, stride)
    dA = _contiguous(xp, dA)
    dX = xp.empty(X.shape, dtype=dA.dtype)
    launcher.launch("maxpool_backward", dtype_name, None, _blocks(dX.size),
                    (dA, work, dX, *_geometry(X.shape, size, stride, dA.shape)))
    return dX


def avgpool2d_forward(xp, launcher, X, size, stride):
    _require_arrays(launcher, X=X)
    dtype_name = _supported(xp, X)
    if dtype_name is None:
        return generic.avgpool2d_forward(xp, X, size, stride)
    X = _contiguous(xp, X)
    out_shape = (*X.shape[:2], *output_hw(X.shape, size, stride))
    out = xp.empty(out_shape, dtype=X.dtype)
    launcher.launch("avgpool_forward", dtype_name, None, _blocks(out.size),
                    (X, out, *_geometry(X.shape, size, stride, out_shape)))
    return out


def avgpool2d_backward(xp, launcher, dA, shape, size, stride):
    dtype_name = _supported(xp, dA)
    if dtype_name is None:
        return generic.avgpool2d_backward(xp, dA, shape, size, stride)
    dA = _contiguous(xp, dA)
    dX = xp.empty(tuple(shape), dtype=dA.dtype)
    launcher.launch("avgpool_backward", dtype_name, None, _blocks(dX.size),
                    (dA, dX, *_geometry(shape, size, stride, dA.shape)))
    return dX


FUSED = {f.__name__: f for f in (conv2d_forward, conv2d_backward, maxpool2d_forward,
                                 maxpool2d_backward, avgpool2d_forward, avgpool2d_backward)}


def _im2col(xp, launcher, dtype_name, X, size, stride, padding):
    """(cols (C*kh*kw, N*OH*OW), (OH, OW)): column n*OH*OW + p holds image n's padded
    input under output position p, rows in (c, i, j) order as W.reshape(F, -1)'s."""
    N, C, H, W = X.shape
    (top, bottom), (left, right) = padding
    OH, OW = output_hw(X.shape, size, stride, padding)
    cols = xp.empty((C * size[0] * size[1], N * OH * OW), dtype=X.dtype)
    launcher.launch("im2col", dtype_name, None, _blocks(cols.size),
                    (X, cols, N, C, H, W, *size, *stride, OH, OW, top, left))
    return cols, (OH, OW)


def _col2im(xp, launcher, dtype_name, dcols, shape, size, stride, padding):
    """The adjoint of ``_im2col``: dX of ``shape`` from dcols laid out as its cols."""
    N, C, H, W = shape
    (top, _), (left, _) = padding
    OH, OW = output_hw(shape, size, stride, padding)
    dX = xp.empty(tuple(shape), dtype=dcols.dtype)
    launcher.launch("col2im", dtype_name, None, _blocks(dX.size),
                    (dcols, dX, N, C, H, W, *size, *stride, OH, OW, top, left))
    return dX


def _geometry(shape, size, stride, out_shape):
    """The pooling kernels' (planes, h, w, kh, kw, sh, sw, oh, ow)."""
    N, C, H, W = shape
    return (N * C, H, W, *size, *stride, *out_shape[2:])


def _supported(xp, X):
    """X's dtype name when the kernels take it (float32 or float64), else None."""
    return np.dtype(X.dtype).name if X.dtype in (xp.float32, xp.float64) else None


def _contiguous(xp, a):
    """``a`` itself when C-contiguous, else a C-ordered copy (on the same device)."""
    if a.flags.c_contiguous:
        return a
    copy = xp.empty(a.shape, dtype=a.dtype)
    copy[...] = a
    return copy
