"""A whole training epoch of a stack of small Dense layers in one kernel call.

For the tutorials' tiny networks (the planar 2-4-1 net) a step's arithmetic takes a
few microseconds, so the Python calls between ops cost more than the work. This
kernel runs every step of an epoch: gather the batch, each layer's product, bias and
activation, the loss from the logits, backprop through every layer, and the
optimizer update.

Inside, arrays are feature-major, (units, batch) as in the tutorials, so that with
1-8 units every loop runs along the batch over contiguous memory and vectorizes.
The caller passes the data transposed once (XT, YT). Products are summed in the same
order as the op-by-op kernels (over inputs, then the bias added), activations and
the sigmoid + BCE loss use the same element functions, and only the weight and bias
gradients' sums over the batch are reassociated (``_dot``).

Layers arrive as one table of their sizes and arrays' addresses (``stack``), with step
buffers the caller allocates once (``buffers``), their activations as ``kinds``/``alphas``
arrays, and the optimizer's ``hp`` tuples as ``kernels/hyper.py`` lays them out; the
caller adds the returned step count to its t.

The kernel is built per model configuration (``epoch_kernel``): the masks of the
forward and backward kinds, the optimizer rule and the loss are constants of the
build, so Numba prunes every other kind's, rule's and loss's code before typing it
(compile times in docs/backends/numba.md). The depth is not a constant: one build
serves every depth, its layers a loop at run time.
"""

import functools
import math

import numpy as np

from .. import hyper
from ..activation_codes import SOFTMAX
from .activations import forward_block_for, grad_block_for, in_blocks
from .dense import _zeros
from .jit import by_constant, kernel, mask, members, sole
from .losses import sigmoid_bce
from .math import typed_as, vexp
from .optimizers import ADAM, update_for
from .stack import (
    DA,
    DB,
    DW,
    DZ,
    N_IN,
    N_OUT,
    S1B,
    S1W,
    S2B,
    S2W,
    A,
    B,
    W,
    Z,
    matrix,
    shaped,
    vector,
)

BLOCK = 4096  # elements a block of the update and clear pass (16 KiB of float32)
BCE, XENT = 0, 1  # output losses: sigmoid + binary cross-entropy, softmax + cross-entropy


@kernel(reassociate=True)
def _dot(a, b):
    """sum(a * b) over equal-length 1-D arrays, as partial sums per vector lane."""
    total = typed_as(a, 0.0)
    for i in range(a.shape[0]):
        total += a[i] * b[i]
    return total


@kernel(reassociate=True)
def _sum(a):
    """sum(a) over a 1-D array, as partial sums per vector lane."""
    total = typed_as(a, 0.0)
    for i in range(a.shape[0]):
        total += a[i]
    return total


@kernel(inline=True)
def _columns(source, order, start, rows, out):
    """Columns start..start+rows-1 of a (features, samples) array, or the columns
    ``order[start:start+rows]`` when ``order`` is not empty: ``source`` itself where
    that is all of it, else copied into ``out`` (a 1-D buffer of at least features *
    rows elements) seen as (features, rows); contiguous either way."""
    if order.shape[0] == 0 and start == 0 and rows == source.shape[1]:
        return source
    out = shaped(out, source.shape[0], rows)
    for k in range(source.shape[0]):
        row, column = out[k], source[k]
        if order.shape[0] == 0:  # a loop, not row[:] = ...: see numba_train_blas._rows
            for i in range(rows):
                row[i] = column[start + i]
        else:
            for i in range(rows):
                row[i] = column[order[start + i]]
    return out


@kernel(inline=True)
def _combine(out, rows, weights):
    """out = sum over r of weights[r] * rows[r], accumulated in order of r: a layer's
    units from its inputs (forward) or its inputs' gradients from its units (backward)."""
    out[:] = 0
    for r in range(rows.shape[0]):
        w, row = weights[r], rows[r]
        for i in range(out.shape[0]):
            out[i] += row[i] * w


@kernel(inline=True)
def _column_exp_sum(ZT, i):
    """(top, sum of exp(z - top)) over column i of ZT, top being its largest entry."""
    top = ZT[0, i]
    for j in range(ZT.shape[0]):
        top = max(top, ZT[j, i])
    total = typed_as(ZT, 0.0)
    for j in range(ZT.shape[0]):
        total += vexp(ZT[j, i] - top)
    return top, total


@functools.cache
def _forward_build(MASK):
    """``forward`` built for the kinds in ``MASK``."""
    IN, SOLE, BLOCKS = members(MASK), sole(MASK), in_blocks(MASK)

    @kernel(build=(MASK,))
    def forward(kind, inT, W, b, ZT, AT, alpha, zeros):
        """ZT = (in @ W + b)^T and AT = f(ZT), feature-major."""
        n_in, n_out = W.shape
        for j in range(n_out):
            z = ZT[j]
            _combine(z, inT, W[:, j])
            bj = b[j]
            for i in range(z.shape[0]):
                z[i] += bj
        if SOFTMAX == SOLE or SOFTMAX in IN and kind == SOFTMAX:  # per sample (column)
            for i in range(ZT.shape[1]):
                top, total = _column_exp_sum(ZT, i)
                for j in range(n_out):
                    AT[j, i] = vexp(ZT[j, i] - top) / total
        else:
            for j in range(n_out):
                forward_block_for(BLOCKS, kind, ZT[j], zeros, AT[j], alpha)

    return forward


_forward = by_constant(_forward_build)  # _forward(MASK, kind, inT, ...)


@kernel(inline=True)
def _softmax_xent(ZT, AT, YT, dZT, scale):
    """Mean cross-entropy of softmax columns; dZT = (a - y) * scale / batch."""
    n, m = ZT.shape
    scale = typed_as(dZT, scale / max(m, 1))
    total = 0.0
    for i in range(m):
        top, sum_exp = _column_exp_sum(ZT, i)
        log_sum = math.log(sum_exp)
        for j in range(n):
            total -= YT[j, i] * ((ZT[j, i] - top) - log_sum)
            dZT[j, i] = (AT[j, i] - YT[j, i]) * scale
    return total / max(m, 1)


@kernel(inline=True)
def _score(loss_kind, AT, YT):
    """The batch's metric sum: outputs on the right side of 0.5 (binary, averaged over
    output units) or samples whose arg-max class is right (multiclass)."""
    n, m = AT.shape
    total = 0.0
    if loss_kind == BCE:
        for j in range(n):
            a, y = AT[j], YT[j]
            for i in range(m):
                total += 1.0 if (a[i] >= 0.5) == (y[i] >= 0.5) else 0.0
        return total / n
    for i in range(m):
        best, truth = 0, 0
        for j in range(1, n):
            if AT[j, i] > AT[best, i]:
                best = j
            if YT[j, i] > YT[truth, i]:
                truth = j
        total += 1.0 if best == truth else 0.0
    return total


@kernel(inline=True)
def _backward(inT, W, dZT, dW, db, dInT, need_dx):
    """db = row sums of dZT, dW = in^T dZ, and dInT = (dZ W^T)^T when need_dx."""
    n_in, n_out = W.shape
    for j in range(n_out):
        g = dZT[j]
        db[j] = _sum(g)
        for k in range(n_in):
            dW[k, j] = _dot(inT[k], g)
    if need_dx:
        for k in range(n_in):
            _combine(dInT[k], dZT, W[k])


FIX1, FIX2 = hyper.slot("adam", "fix1"), hyper.slot("adam", "fix2")
BETA1, BETA2 = hyper.slot("adam", "beta1"), hyper.slot("adam", "beta2")
assert (FIX1, FIX2) == (hyper.SIZE - 2, hyper.SIZE - 1), "_adam_hp replaces the last two"


@kernel(inline=True)
def _adam_hp(hp, t):
    """hp with Adam's bias corrections (``kernels/hyper.py``'s fix1, fix2) for step t."""
    return hp[:FIX1] + (1.0 - hp[BETA1] ** float(t), 1.0 - hp[BETA2] ** float(t))


@kernel(inline=True)
def _clear(a):
    """a[:] = 0, as a loop from 0 (a slice assignment compiles Numba's shape checks; a
    loop from another start keeps its negative-index checks and does not vectorize:
    12 times slower)."""
    for i in range(a.shape[0]):
        a[i] = 0


@kernel(inline=True)
def _update(RULES, RULE, p, g, s1, s2, hp, clear):
    """``update_for`` over the flat arrays, and, if ``clear``, g zeroed for the BLAS
    kernel's next step: block by block, so the zeros are written while g is in the
    cache (a pass of its own over the MLP's 1.08 MB took about as long as the update).
    The rule is elementwise: the same bits as one call over the whole arrays."""
    for lo in range(0, p.shape[0], BLOCK):
        hi = min(lo + BLOCK, p.shape[0])
        update_for(RULES, RULE, p[lo:hi], g[lo:hi], s1[lo:hi], s2[lo:hi], hp)
        if clear:
            _clear(g[lo:hi])


@kernel(inline=True)
def update_layers(RULES, RULE, layers, hw, hb, clear, like):
    """Every layer of the stack's table (``stack``) updated from its gradients by the
    rule, with ``hw``/``hb`` its weights'/biases' hyper-parameters for this step (of
    ``like``'s dtype); with ``clear``, the weight gradients zeroed as they are read (the
    rank kernel's BLAS steps add to them). The loop kernel's update and the rank
    kernel's."""
    for li in range(layers.shape[0]):
        size, n_out = layers[li, N_IN] * layers[li, N_OUT], layers[li, N_OUT]
        _update(RULES, RULE, vector(layers, li, W, size, like), vector(layers, li, DW, size, like),
                vector(layers, li, S1W, size, like), vector(layers, li, S2W, size, like), hw,
                clear)
        update_for(RULES, RULE, vector(layers, li, B, n_out, like),
                   vector(layers, li, DB, n_out, like), vector(layers, li, S1B, n_out, like),
                   vector(layers, li, S2B, n_out, like), hb)


@functools.cache
def epoch_kernel(FORWARD, BACKWARD, RULE, LOSS, UPDATE=True):
    """``train_epoch`` built for one configuration: the masks of the forward kinds (every
    layer's) and the backward kinds (the hidden layers'), the optimizer rule and the loss
    kind, all constants of the build. ``UPDATE=False`` builds it without the optimizer:
    each step's gradients are left in ``dWs`` and ``dbs`` for the caller to combine and
    apply (data-parallel ranks, one step per call, then their update: ``train_rank``)."""

    RULES = mask(RULE)

    @kernel(build=(FORWARD, BACKWARD, RULE, LOSS) + (() if UPDATE else (0,)))
    def train_epoch(kinds, alphas, layers, hpW, hpb, t, XT, YT, order, batch, scale, sums,
                    XTbuf, YTbuf):
        """``len(sums)`` epochs of mini-batch steps over the (features, samples) arrays XT
        and YT (each over the samples ``order`` names, if not empty), with the optimizer
        at step ``t`` before them; adds epoch e's loss and metric sums to ``sums[e]`` and
        returns the number of steps taken. The loss gradient is multiplied by ``scale``
        (a data-parallel rank's share of the global batch; 1 otherwise). ``layers`` is
        the stack's table (``stack``), its step buffers seen feature-major, (units,
        rows), as are ``XTbuf`` and ``YTbuf``, which a batch is gathered into unless it
        is all of XT and YT (see ``buffers``)."""
        m, depth = XT.shape[1] if order.shape[0] == 0 else order.shape[0], layers.shape[0]
        last = depth - 1
        n_last = layers[last, N_OUT]
        steps = 0
        for epoch in range(sums.shape[0]):
            for start in range(0, m, batch):
                rows = min(batch, m - start)
                zeros = _zeros(rows, XT)  # the forward's bias of 0 (z + b is already in ZT)
                unread = _zeros(rows, XT)  # grad_block's bias-gradient sums: _backward has db
                XTb = _columns(XT, order, start, rows, XTbuf)
                YTb = _columns(YT, order, start, rows, YTbuf)
                for li in range(depth):  # layer li reads XTb or the AT of layer li - 1
                    n_in, n_out = layers[li, N_IN], layers[li, N_OUT]
                    inT = XTb if li == 0 else matrix(layers, li - 1, A, n_in, rows, XT)
                    _forward(FORWARD, kinds[li], inT, matrix(layers, li, W, n_in, n_out, XT),
                             vector(layers, li, B, n_out, XT),
                             matrix(layers, li, Z, n_out, rows, XT),
                             matrix(layers, li, A, n_out, rows, XT), alphas[li], zeros)
                ZT, AT = (matrix(layers, last, Z, n_last, rows, XT),
                          matrix(layers, last, A, n_last, rows, XT))
                dZT = matrix(layers, last, DZ, n_last, rows, XT)
                if LOSS == BCE:
                    loss = sigmoid_bce(ZT, AT, YTb, dZT, scale / max(ZT.size, 1), True)
                else:
                    loss = _softmax_xent(ZT, AT, YTb, dZT, scale)
                sums[epoch, 0] += typed_as(sums, loss) * rows
                sums[epoch, 1] += _score(LOSS, AT, YTb)
                for li in range(last, -1, -1):
                    n_in, n_out = layers[li, N_IN], layers[li, N_OUT]
                    need_dx = li > 0
                    inT = XTb if li == 0 else matrix(layers, li - 1, A, n_in, rows, XT)
                    dInT = matrix(layers, li, DA, n_in if need_dx else 0, rows, XT)
                    dZT = matrix(layers, li, DZ, n_out, rows, XT)
                    _backward(inT, matrix(layers, li, W, n_in, n_out, XT), dZT,
                              matrix(layers, li, DW, n_in, n_out, XT),
                              vector(layers, li, DB, n_out, XT), dInT, need_dx)
                    if need_dx:  # through the activation of the layer below
                        ZTb = matrix(layers, li - 1, Z, n_in, rows, XT)
                        dZTb = matrix(layers, li - 1, DZ, n_in, rows, XT)
                        for j in range(n_in):
                            grad_block_for(BACKWARD, kinds[li - 1], dInT[j], ZTb[j], inT[j],
                                           dZTb[j], unread, alphas[li - 1])
                steps += 1
                if UPDATE:  # step t + steps's update of every layer from its gradients
                    hw, hb = hpW, hpb
                    if RULE == ADAM:
                        hw, hb = _adam_hp(hpW, t + steps), _adam_hp(hpb, t + steps)
                    update_layers(RULES, RULE, layers, hw, hb, False, XT)
        return steps

    return train_epoch


def buffers(XT, YT, Ws, batch):
    """The step buffers for ``train_epoch``, flat: a gathered batch of XT and of YT, and
    per layer Z, A, dZ and its input gradient (layer 0's is empty), for ``min(batch, m)``
    samples, as (XTbuf, YTbuf, Zs, As, dZs, dAs). Allocated once by the caller, so a step
    allocates nothing but two rows of zeros."""
    rows, dtype = min(batch, XT.shape[1]), XT.dtype
    outputs = [tuple(np.empty(rows * W.shape[1], dtype) for W in Ws) for _ in range(3)]
    inputs = tuple(np.empty(rows * W.shape[0] if i else 0, dtype) for i, W in enumerate(Ws))
    return (np.empty(rows * XT.shape[0], dtype), np.empty(rows * YT.shape[0], dtype),
            *outputs, inputs)
