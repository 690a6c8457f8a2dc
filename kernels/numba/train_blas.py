"""A whole training epoch of a stack of Dense layers in one kernel call, products by BLAS.

For stacks with layers too big for ``train``'s loops (the MLP 784-256-256-10,
anything past 32 weights a layer), the products go to NumPy's own GEMM, called from
inside the kernel (``blas``), so a step costs its GEMMs plus one serial pass
per elementwise job and no Python at all. Arrays are batch-first as everywhere else
in fastnn. The step's buffers come from the caller (``buffers``), allocated once, so
no step allocates (a fresh buffer of 128 KiB or more can be new pages from the OS,
faulted in on first touch). The elementwise work is the op-by-op kernels'
(``bias_activation``, ``activation_grad``, the loss kernels, ``update``), so results
match the op-by-op path to rounding.

Each layer's backward runs in this order: its input gradient (with the weights of
this step), then its update, then the layer below; this equals computing every
gradient first and updating after. For plain SGD (``RULE == SGD``), the update is folded
into the weight-gradient product, W = (1 - lr * wd) W - lr * (in^T dZ), so dW is never
written and the update costs no pass of its own; the caller forms the last step's
weight gradients afterwards, when they are read, from the step buffers (``work``),
which still hold that step's inputs and dZ.

Layers arrive as tuples of arrays, activations as ``kinds``/``alphas``, the optimizer's
``hp`` tuples as ``kernels/hyper.py`` lays them out; the caller adds the returned step
count to its t. The kernel is built per model configuration (``epoch_kernel``): the
forward and backward kinds, the optimizer rule and the loss are closure constants, so a
build compiles only the loops its model runs (see ``train.epoch_kernel``).
"""

import functools

import numpy as np

from .blas import gemm
from .dense import _sum_rows, activation_grad_for, bias_activation_for
from .jit import flat, kernel, mask
from .losses import sigmoid_bce, softmax_xent
from .math import typed_as
from .optimizers import ADAM, SGD, update_for
from .train import BCE, _adam_hp, _score


@kernel(inline=True)
def _rows(source, order, start, rows, out):
    """Rows start..start+rows-1 of ``source`` (a view), or its rows
    ``order[start:start+rows]`` gathered into ``out[:rows]`` when ``order`` is not empty.
    Copied element by element: an array assigned to a slice (``out[i, :] = ...``)
    compiles Numba's shape-mismatch message, string formatting and all: 2.4 s cold."""
    if order.shape[0] == 0:
        return source[start:start + rows]
    for i in range(rows):
        row, target = source[order[start + i]], out[i]
        for j in range(row.shape[0]):
            target[j] = row[j]
    return out[:rows]


@functools.cache
def epoch_kernel(FORWARD, BACKWARD, RULE, LOSS, UPDATE=True):
    """``train_epoch`` built for one configuration: the masks of the forward kinds (every
    layer's) and the backward kinds (the hidden layers'), the optimizer rule and the loss
    kind, all constants of the build. ``UPDATE=False`` builds it without the optimizer:
    each step's gradients are left in ``dWs`` and ``dbs`` for the caller to combine and
    apply (data-parallel ranks, one step per call: ``train_rank``). The weights' are
    then added to ``dWs``, which the caller zeroes: a product with beta = 0 has
    OpenBLAS zero its output in a pass of its own, which the caller does in its update
    pass instead (the same bits: the product is added to the zeros either way)."""
    RULES, FOLD = mask(RULE), RULE == SGD and UPDATE

    @kernel(build=(FORWARD, BACKWARD, RULE, LOSS) + (() if UPDATE else (0,)))
    def train_epoch(address, ilp64, keeps, kinds, alphas, Ws, bs, dWs, dbs, s1W, s1b,
                    s2W, s2b, hpW, hpb, t, X, Y, order, batch, scale, sums, work):
        """``len(sums)`` epochs of mini-batch steps over the batch-first arrays X and Y
        (each over the rows ``order`` names, if not empty), with the GEMM at ``address``
        and the optimizer at step ``t`` before them; adds epoch e's loss and metric sums
        to ``sums[e]`` and returns the number of steps taken. The loss gradient is
        multiplied by ``scale`` (a data-parallel rank's share of the global batch; 1
        otherwise). ``work`` holds the step's buffers, each with ``min(batch, m)`` rows
        (see ``buffers``). Layer li keeps Z + b only if ``keeps[li]`` (the output layer,
        and hidden activations whose derivative needs z): the others' derivatives read
        A in its place."""
        Xbuf, Ybuf, Zs, As, dZs, dAs = work
        m, layers = X.shape[0] if order.shape[0] == 0 else order.shape[0], len(Ws)
        steps = 0
        for epoch in range(sums.shape[0]):
            for start in range(0, m, batch):
                rows = min(batch, m - start)
                ins = [_rows(X, order, start, rows, Xbuf)]  # layer li reads ins[li]
                Yb = _rows(Y, order, start, rows, Ybuf)
                for li in range(layers):
                    Z, A = Zs[li][:rows], As[li][:rows]
                    gemm(address, ilp64, ins[li], Ws[li], Z, 1.0, 0.0, False, False)
                    bias_activation_for(FORWARD, kinds[li], Z, bs[li], Z, A, alphas[li], 0,
                                        rows, keeps[li])
                    ins.append(A)
                Z, A, dZ = Zs[layers - 1][:rows], ins[layers], dZs[layers - 1][:rows]
                if LOSS == BCE:
                    loss = sigmoid_bce(Z, A, Yb, dZ, scale / max(Z.size, 1), True)
                else:
                    loss = softmax_xent(Z, A, Yb, dZ, scale / max(rows, 1), True)
                sums[epoch, 0] += typed_as(sums, loss) * rows
                sums[epoch, 1] += _score(LOSS, A.T, Yb.T)
                steps += 1
                hw, hb = hpW, hpb
                if UPDATE and RULE == ADAM:
                    hw, hb = _adam_hp(hpW, t + steps), _adam_hp(hpb, t + steps)
                _sum_rows(dZ, dbs[layers - 1])
                for li in range(layers - 1, -1, -1):
                    dZ = dZs[li][:rows]
                    if li > 0:  # the input gradient, with this step's weights
                        dA = dAs[li][:rows]
                        gemm(address, ilp64, dZ, Ws[li], dA, 1.0, 0.0, False, True)
                    if FOLD:
                        gemm(address, ilp64, ins[li], dZ, Ws[li], -hw[0], 1.0 - hw[0] * hw[1],
                             True, False)
                    else:  # without the optimizer: added to the caller's zeroed dWs
                        gemm(address, ilp64, ins[li], dZ, dWs[li], 1.0, 0.0 if UPDATE else 1.0,
                             True, False)
                    if UPDATE and not FOLD:
                        update_for(RULES, RULE, flat(Ws[li]), flat(dWs[li]),
                                   flat(s1W[li]), flat(s2W[li]), hw)
                    if UPDATE:
                        update_for(RULES, RULE, bs[li], dbs[li], s1b[li], s2b[li], hb)
                    if li > 0:  # through the activation below: its dZ and db
                        below = As[li - 1][:rows]
                        dbs[li - 1][:] = 0
                        Zb = Zs[li - 1][:rows] if keeps[li - 1] else below
                        activation_grad_for(BACKWARD, kinds[li - 1], dA, Zb, below,
                                            dZs[li - 1][:rows], dbs[li - 1], alphas[li - 1], 0,
                                            rows)
        return steps

    return train_epoch


def buffers(X, Y, Ws, batch):
    """The ``work`` tuple for ``train_epoch``: the gathered batch (X, Y), and per layer
    Z, A, dZ and its input gradient (layer 0's is empty), each ``min(batch, m)`` rows.
    Allocated once by the caller, so a step allocates nothing."""
    rows, dtype = min(batch, X.shape[0]), X.dtype
    outputs = [tuple(np.empty((rows, W.shape[1]), dtype) for W in Ws) for _ in range(3)]
    inputs = tuple(np.empty((rows if i else 0, W.shape[0]), dtype) for i, W in enumerate(Ws))
    return (np.empty((rows, X.shape[1]), dtype), np.empty((rows, Y.shape[1]), dtype),
            *outputs, inputs)
