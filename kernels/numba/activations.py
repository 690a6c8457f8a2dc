"""Each activation's forward and derivative for the Numba kernels, in one place.

Kernels receive an activation as an integer ``kind``, its code in
``activation_codes`` (and ``alpha`` for leaky ReLU).
``forward_block`` and ``grad_block`` pick the kind once and then run a flat loop
that calls only that kind's scalar function, so LLVM inlines it and vectorizes the
loop (a branch on ``kind`` inside the loop defeats the vectorizer). Softmax is
row-wise and lives in ``numba_dense``; step has a forward only.

Each block is built for a set of kinds, a bit mask (``mask``; see ``blocks``): a build
for relu compiles relu's loop alone, not the exp, tanh and log1p of the others, which
is most of a first training step's compile time; ``ANY`` is the build for every kind.
"""

import functools

from numba import njit

from ..activation_codes import CODES, LEAKY_RELU, RELU, SIGMOID, SOFTPLUS, STEP, TANH
from .jit import by_constant, kernel, mask, members, prefer_wide_vectors, sole
from .math import typed, vexp, vlog1p_unit, vsigmoid, vtanh

ANY = mask(*CODES.values())  # the build for every kind


# forward f(z) and gradient da * f'(z) given z and a = f(z), one pair per kind;
# NaN inputs stay NaN (max() would drop them).

@njit(inline="always")
def relu(z, alpha):
    return max(z, typed(z, 0.0)) if z == z else z


@njit(inline="always")
def relu_grad(da, z, a, alpha):
    return da if z > typed(z, 0.0) else typed(z, 0.0) * da


@njit(inline="always")
def leaky_relu(z, alpha):
    return max(z, alpha * z) if z == z else z


@njit(inline="always")
def leaky_relu_grad(da, z, a, alpha):
    return da if z > typed(z, 0.0) else alpha * da


@njit(inline="always")
def sigmoid_grad(da, z, a, alpha):
    return da * a * (typed(a, 1.0) - a)


@njit(inline="always")
def tanh_grad(da, z, a, alpha):
    return da * (typed(a, 1.0) - a * a)


@njit(inline="always")
def softplus(z, alpha):
    return max(z, typed(z, 0.0)) + vlog1p_unit(vexp(-abs(z))) if z == z else z


@njit(inline="always")
def softplus_grad(da, z, a, alpha):
    return da * vsigmoid(z)


@njit(inline="always")
def step(z, alpha):
    return typed(z, 1.0) if z > typed(z, 0.0) else typed(z, 0.0)


@functools.cache
def blocks(MASK):
    """(forward_block, grad_block) built for the kinds in ``MASK`` (see ``mask``).

    Every branch reads ``X == SOLE or X in IN and kind == X``, with ``IN`` and ``SOLE``
    constants of the closure (the kinds, and the only kind if there is one), so Numba
    prunes the branches of kinds not in the build before it types them: a build for
    relu compiles relu's loop and nothing else, and never reads ``kind``. A build for
    several kinds tests ``kind`` once per call; the caller passes one of its kinds (any
    other runs as identity). Builds are cached on disk like any kernel (the closure
    holds only ints)."""
    IN, SOLE = members(MASK), sole(MASK)

    @kernel(build=(MASK,))
    def forward_block(kind, z, bias, a, alpha):
        """a = f(z + bias) over equal-length 1-D arrays z and a, with ``bias`` repeating
        every ``len(bias)`` elements (a whole number of rows' bias); z is only read.

        Each span of ``len(bias)`` elements is one flat loop per kind, so callers pass
        either a block-sized tile (narrow rows) or the bias row itself (wide rows).
        Indices are plain loop counters: a computed index (base + k) gets Numba's
        negative-index check, which stops LLVM from vectorizing the loop."""
        prefer_wide_vectors()
        width = max(bias.shape[0], 1)
        for start in range(0, z.shape[0], width):
            zs, out = z[start:start + width], a[start:start + width]
            count = zs.shape[0]
            if RELU == SOLE or RELU in IN and kind == RELU:
                for k in range(count):
                    v = zs[k] + bias[k]
                    out[k] = relu(v, alpha)
            elif LEAKY_RELU == SOLE or LEAKY_RELU in IN and kind == LEAKY_RELU:
                for k in range(count):
                    v = zs[k] + bias[k]
                    out[k] = leaky_relu(v, alpha)
            elif SIGMOID == SOLE or SIGMOID in IN and kind == SIGMOID:
                for k in range(count):
                    v = zs[k] + bias[k]
                    out[k] = vsigmoid(v)
            elif TANH == SOLE or TANH in IN and kind == TANH:
                for k in range(count):
                    v = zs[k] + bias[k]
                    out[k] = vtanh(v)
            elif SOFTPLUS == SOLE or SOFTPLUS in IN and kind == SOFTPLUS:
                for k in range(count):
                    v = zs[k] + bias[k]
                    out[k] = softplus(v, alpha)
            elif STEP == SOLE or STEP in IN and kind == STEP:
                for k in range(count):
                    v = zs[k] + bias[k]
                    out[k] = step(v, alpha)
            else:  # identity
                for k in range(count):
                    out[k] = zs[k] + bias[k]

    @kernel(build=(MASK,))
    def grad_block(kind, da, z, a, dz, acc, alpha):
        """dz = da * f'(z) over equal-length 1-D arrays, and acc += dz with ``acc`` repeating
        every ``len(acc)`` elements (it collects a whole number of rows' bias gradient).

        One call covers a whole span, block by block: a call per block measured 5-15%
        slower on (4096, 1024) float32 arrays, which are larger than the caches."""
        prefer_wide_vectors()
        width = max(acc.shape[0], 1)
        for start in range(0, z.shape[0], width):
            stop = start + width
            das, zs, As, out = da[start:stop], z[start:stop], a[start:stop], dz[start:stop]
            if RELU == SOLE or RELU in IN and kind == RELU:
                for k in range(zs.shape[0]):
                    g = relu_grad(das[k], zs[k], As[k], alpha)
                    out[k] = g
                    acc[k] += g
            elif LEAKY_RELU == SOLE or LEAKY_RELU in IN and kind == LEAKY_RELU:
                for k in range(zs.shape[0]):
                    g = leaky_relu_grad(das[k], zs[k], As[k], alpha)
                    out[k] = g
                    acc[k] += g
            elif SIGMOID == SOLE or SIGMOID in IN and kind == SIGMOID:
                for k in range(zs.shape[0]):
                    g = sigmoid_grad(das[k], zs[k], As[k], alpha)
                    out[k] = g
                    acc[k] += g
            elif TANH == SOLE or TANH in IN and kind == TANH:
                for k in range(zs.shape[0]):
                    g = tanh_grad(das[k], zs[k], As[k], alpha)
                    out[k] = g
                    acc[k] += g
            elif SOFTPLUS == SOLE or SOFTPLUS in IN and kind == SOFTPLUS:
                for k in range(zs.shape[0]):
                    g = softplus_grad(das[k], zs[k], As[k], alpha)
                    out[k] = g
                    acc[k] += g
            else:  # identity
                for k in range(zs.shape[0]):
                    g = das[k]
                    out[k] = g
                    acc[k] += g

    return forward_block, grad_block


def _forward_block(MASK):
    """``forward_block`` built for the kinds in ``MASK``."""
    return blocks(MASK)[0]


def _grad_block(MASK):
    """``grad_block`` built for the kinds in ``MASK``."""
    return blocks(MASK)[1]


# forward_block_for(MASK, kind, ...) and grad_block_for(MASK, kind, ...) from kernels
# whose MASK is a constant; forward_block and grad_block themselves are for any kind
forward_block_for, grad_block_for = by_constant(_forward_block), by_constant(_grad_block)
forward_block, grad_block = _forward_block(ANY), _grad_block(ANY)
