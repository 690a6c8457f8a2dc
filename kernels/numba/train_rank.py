"""A data-parallel rank's epoch in one kernel call: every step's gradients, their sum over
the ranks, and the update, with no Python between the steps but the sum itself.

Per step the kernel calls the epoch kernel built without the optimizer (``UPDATE=False``,
of ``train_blas`` or of ``train``, as a subroutine) on this rank's rows of the global
batch, its loss gradient scaled by the rank's share of that batch; then the C function
at ``hook`` (the caller's, ``ctypes``), which sums the gradients over the ranks in
place and returns 0, or non-zero to stop the epoch there; then the optimizer's rule
(``update_for``, as the epoch kernels apply it) on every parameter from the sum,
at step ``t + steps``. The same arithmetic in the same order as a kernel call per step
and an update call after the sum, so the same bits, without the Python of those two
calls a step (their arguments' types, the slicing of the step's rows).

The BLAS kernel built without the optimizer adds the weight gradients to ``dWs``
(a product with beta = 1): this kernel zeroes them once per call, and after each
step's update but the last, block by block within the update's pass, while they are
in the cache, where OpenBLAS would zero them before each product in a pass of its own.

The steps arrive as arrays (``starts``, ``stops``: each step's rows of this rank,
``scales``: its share of the global batch), worked out once per epoch by the caller; the
layers as the epoch kernels' table (``stack``).
"""

import functools

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from . import train, train_blas
from .jit import call_subroutine, kernel, mask
from .optimizers import ADAM
from .stack import DW, N_IN, N_OUT, vector
from .train import _adam_hp, _clear, update_layers


@intrinsic
def call_hook(typingctx, address):
    """``int hook(void)`` at ``address``: the caller's sum over the ranks; its status."""

    def codegen(context, builder, signature, args):
        hook = ir.FunctionType(ir.IntType(32), [])
        return builder.call(builder.inttoptr(args[0], hook.as_pointer()), [])

    return types.int32(address), codegen


@intrinsic
def gradients_for(typingctx, FORWARD, BACKWARD, RULE, LOSS, BLAS, *args):
    """``train_blas.epoch_kernel(FORWARD, BACKWARD, RULE, LOSS, False)(*args)`` (or
    ``train``'s where ``BLAS`` is 0), called as a subroutine: its steps taken. The
    keys are ints known when the caller compiles (its build's closure constants)."""
    keys = (FORWARD, BACKWARD, RULE, LOSS, BLAS)
    if not all(isinstance(key, types.IntegerLiteral) for key in keys):
        return None
    values = [key.literal_value for key in keys]
    build = (train_blas if values[4] else train).epoch_kernel(*values[:4], False)
    arg_types = tuple(types.unliteral(t) for t in args)

    def codegen(context, builder, signature, values):
        values = cgutils.unpack_tuple(builder, values[5], len(args))
        return call_subroutine(context, builder, build, types.intp(*arg_types), values, args)

    return types.intp(*keys, types.StarArgTuple.from_types(args)), codegen


@functools.cache
def rank_epoch_kernel(FORWARD, BACKWARD, RULE, LOSS, BLAS):
    """``rank_epoch`` built for one configuration (``train_blas.epoch_kernel``'s keys and
    whether the steps take the BLAS kernel, 1, or the loop kernel, 0)."""

    RULES = mask(RULE)

    @kernel(build=(FORWARD, BACKWARD, RULE, LOSS, BLAS))
    def rank_epoch(hook, address, ilp64, keeps, kinds, alphas, layers, hpW, hpb, t, X, Y,
                   order, starts, stops, scales, sums, Xbuf, Ybuf):
        """The steps ``starts[j]..stops[j]-1`` of the data (rows of the batch-first X and
        Y for the BLAS kernel, else columns of the feature-major ones), or of ``order``
        where it is not empty, from the optimizer's step ``t``; adds the loss and metric
        sums to ``sums[0]`` and returns the steps taken (fewer than ``len(starts)`` if
        the hook stopped the epoch). The BLAS kernel alone reads ``address``, ``ilp64``
        and ``keeps``."""
        steps = 0
        if BLAS:  # the BLAS kernel adds the weights' gradients to dWs
            for li in range(layers.shape[0]):
                _clear(vector(layers, li, DW, layers[li, N_IN] * layers[li, N_OUT], X))
        for j in range(starts.shape[0]):
            start, stop = starts[j], stops[j]
            rows = stop - start
            if BLAS:
                if order.shape[0] == 0:
                    gradients_for(FORWARD, BACKWARD, RULE, LOSS, BLAS, address, ilp64, keeps,
                                  kinds, alphas, layers, hpW, hpb, 0, X[start:stop],
                                  Y[start:stop], order, rows, scales[j], sums, Xbuf, Ybuf)
                else:
                    gradients_for(FORWARD, BACKWARD, RULE, LOSS, BLAS, address, ilp64, keeps,
                                  kinds, alphas, layers, hpW, hpb, 0, X, Y, order[start:stop],
                                  rows, scales[j], sums, Xbuf, Ybuf)
            else:
                gradients_for(FORWARD, BACKWARD, RULE, LOSS, BLAS, kinds, alphas, layers, hpW,
                              hpb, 0, X, Y, order[start:stop], rows, scales[j], sums, Xbuf,
                              Ybuf)
            if call_hook(hook) != 0:
                return steps
            steps += 1
            hw, hb = hpW, hpb
            if RULE == ADAM:
                hw, hb = _adam_hp(hpW, t + steps), _adam_hp(hpb, t + steps)
            clear = BLAS != 0 and j < starts.shape[0] - 1  # the last step's sum stays in dWs
            update_layers(RULES, RULE, layers, hw, hb, clear, X)
        return steps

    return rank_epoch
