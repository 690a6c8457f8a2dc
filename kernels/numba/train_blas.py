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

Layers arrive as one table of their sizes and arrays' addresses (``stack``), activations
as ``kinds``/``alphas``, the optimizer's ``hp`` tuples as ``kernels/hyper.py`` lays them
out; the caller adds the returned step count to its t. The kernel is built per model
configuration (``epoch_kernel``): the forward and backward kinds, the optimizer rule and
the loss are closure constants, so a build compiles only the loops its model runs (see
``train.epoch_kernel``); the depth is not, so one build serves every depth.
"""

import functools

import numpy as np

from .blas import gemm
from .dense import _sum_rows, activation_grad_for, bias_activation_for
from .jit import kernel, mask
from .losses import sigmoid_bce, softmax_xent
from .math import typed_as
from .optimizers import ADAM, SGD, update_for
from .stack import DA, DB, DW, DZ, N_IN, N_OUT, S1B, S1W, S2B, S2W, A, B, W, Z, matrix, vector
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
    def train_epoch(address, ilp64, keeps, kinds, alphas, layers, hpW, hpb, t, X, Y, order,
                    batch, scale, sums, Xbuf, Ybuf):
        """``len(sums)`` epochs of mini-batch steps over the batch-first arrays X and Y
        (each over the rows ``order`` names, if not empty), with the GEMM at ``address``
        and the optimizer at step ``t`` before them; adds epoch e's loss and metric sums
        to ``sums[e]`` and returns the number of steps taken. The loss gradient is
        multiplied by ``scale`` (a data-parallel rank's share of the global batch; 1
        otherwise). ``layers`` is the stack's table (``stack``), its step buffers of
        ``min(batch, m)`` rows, as are ``Xbuf`` and ``Ybuf``, which a shuffled batch is
        gathered into (see ``buffers``). Layer li keeps Z + b only if ``keeps[li]`` (the
        output layer, and hidden activations whose derivative needs z): the others'
        derivatives read A in its place."""
        m, depth = X.shape[0] if order.shape[0] == 0 else order.shape[0], layers.shape[0]
        last = depth - 1
        n_last = layers[last, N_OUT]
        steps = 0
        for epoch in range(sums.shape[0]):
            for start in range(0, m, batch):
                rows = min(batch, m - start)
                Xb = _rows(X, order, start, rows, Xbuf)
                Yb = _rows(Y, order, start, rows, Ybuf)
                for li in range(depth):  # layer li reads Xb or the A of layer li - 1
                    n_in, n_out = layers[li, N_IN], layers[li, N_OUT]
                    In = Xb if li == 0 else matrix(layers, li - 1, A, rows, n_in, X)
                    Z_, A_ = (matrix(layers, li, Z, rows, n_out, X),
                              matrix(layers, li, A, rows, n_out, X))
                    gemm(address, ilp64, In, matrix(layers, li, W, n_in, n_out, X), Z_, 1.0,
                         0.0, False, False)
                    bias_activation_for(FORWARD, kinds[li], Z_, vector(layers, li, B, n_out, X),
                                        Z_, A_, alphas[li], 0, rows, keeps[li])
                Z_, A_ = (matrix(layers, last, Z, rows, n_last, X),
                          matrix(layers, last, A, rows, n_last, X))
                dZ = matrix(layers, last, DZ, rows, n_last, X)
                if LOSS == BCE:
                    loss = sigmoid_bce(Z_, A_, Yb, dZ, scale / max(Z_.size, 1), True)
                else:
                    loss = softmax_xent(Z_, A_, Yb, dZ, scale / max(rows, 1), True)
                sums[epoch, 0] += typed_as(sums, loss) * rows
                sums[epoch, 1] += _score(LOSS, A_.T, Yb.T)
                steps += 1
                hw, hb = hpW, hpb
                if UPDATE and RULE == ADAM:
                    hw, hb = _adam_hp(hpW, t + steps), _adam_hp(hpb, t + steps)
                _sum_rows(dZ, vector(layers, last, DB, n_last, X))
                for li in range(last, -1, -1):
                    n_in, n_out = layers[li, N_IN], layers[li, N_OUT]
                    size = n_in * n_out
                    dZ = matrix(layers, li, DZ, rows, n_out, X)
                    Wl = matrix(layers, li, W, n_in, n_out, X)
                    In = Xb if li == 0 else matrix(layers, li - 1, A, rows, n_in, X)
                    if li > 0:  # the input gradient, with this step's weights
                        dA = matrix(layers, li, DA, rows, n_in, X)
                        gemm(address, ilp64, dZ, Wl, dA, 1.0, 0.0, False, True)
                    if FOLD:
                        gemm(address, ilp64, In, dZ, Wl, -hw[0], 1.0 - hw[0] * hw[1], True,
                             False)
                    else:  # without the optimizer: added to the caller's zeroed dWs
                        gemm(address, ilp64, In, dZ, matrix(layers, li, DW, n_in, n_out, X),
                             1.0, 0.0 if UPDATE else 1.0, True, False)
                    if UPDATE and not FOLD:
                        update_for(RULES, RULE, vector(layers, li, W, size, X),
                                   vector(layers, li, DW, size, X),
                                   vector(layers, li, S1W, size, X),
                                   vector(layers, li, S2W, size, X), hw)
                    if UPDATE:
                        update_for(RULES, RULE, vector(layers, li, B, n_out, X),
                                   vector(layers, li, DB, n_out, X),
                                   vector(layers, li, S1B, n_out, X),
                                   vector(layers, li, S2B, n_out, X), hb)
                    if li > 0:  # through the activation below: its dZ and db
                        below = matrix(layers, li - 1, A, rows, n_in, X)
                        db = vector(layers, li - 1, DB, n_in, X)
                        db[:] = 0
                        Zb = matrix(layers, li - 1, Z if keeps[li - 1] else A, rows, n_in, X)
                        activation_grad_for(BACKWARD, kinds[li - 1], dA, Zb, below,
                                            matrix(layers, li - 1, DZ, rows, n_in, X), db,
                                            alphas[li - 1], 0, rows)
        return steps

    return train_epoch


def buffers(X, Y, Ws, batch):
    """The step buffers for ``train_epoch``: the gathered batch (X, Y), and per layer
    Z, A, dZ and its input gradient (layer 0's is empty), each ``min(batch, m)`` rows, as
    (Xbuf, Ybuf, Zs, As, dZs, dAs). Allocated once by the caller, so a step allocates
    nothing."""
    rows, dtype = min(batch, X.shape[0]), X.dtype
    outputs = [tuple(np.empty((rows, W.shape[1]), dtype) for W in Ws) for _ in range(3)]
    inputs = tuple(np.empty((rows if i else 0, W.shape[0]), dtype) for i, W in enumerate(Ws))
    return (np.empty((rows, X.shape[1]), dtype), np.empty((rows, Y.shape[1]), dtype),
            *outputs, inputs)
