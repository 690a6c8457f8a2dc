"""Each activation's forward and derivative for the Numba kernels, in one place.

Kernels receive an activation as an integer ``kind`` (and ``alpha`` for leaky ReLU).
``forward_block`` and ``grad_block`` pick the kind once and then run a flat loop
that calls only that kind's scalar function, so LLVM inlines it and vectorizes the
loop (a branch on ``kind`` inside the loop defeats the vectorizer). Softmax is
row-wise and lives in ``numba_dense``; step has a forward only.

Each block comes in one build per kind as well as the build for ``ANY`` kind (see
``for_kind``): a build for relu compiles relu's loop alone, not the exp, tanh and
log1p of the others, which is most of a first training step's compile time.
"""

from numba import njit, types
from numba.extending import overload

from .numba_jit import kernel
from .numba_math import typed, vexp, vlog1p_unit, vsigmoid, vtanh

IDENTITY, RELU, LEAKY_RELU, SIGMOID, TANH, SOFTPLUS, SOFTMAX, STEP = range(8)
ANY = -1  # a build for any kind: it reads the kind from its ``kind`` argument
KINDS = {
    "identity": IDENTITY, "relu": RELU, "leaky_relu": LEAKY_RELU, "sigmoid": SIGMOID,
    "tanh": TANH, "softplus": SOFTPLUS, "softmax": SOFTMAX, "step": STEP,
}


def kind_of(activation):
    """(kind, alpha) for a fastnn Activation, or None if no kernel covers it."""
    kind = KINDS.get(activation.name)
    if kind is None:
        return None
    return kind, float(getattr(activation, "alpha", 0.0))


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


def for_kind(KIND):
    """(forward_block, grad_block) built for ``KIND``, a kind or ``ANY``.

    Every branch reads ``KIND == X or KIND == ANY and kind == X``: ``KIND`` is a
    constant of the closure, so Numba prunes the branches of other kinds before it
    types them, and a build for one kind compiles that kind's loop and nothing else.
    Builds are cached on disk like any kernel (the closure holds only an int)."""

    @kernel
    def forward_block(kind, z, bias, a, alpha):
        """a = f(z + bias) over equal-length 1-D arrays z and a, with ``bias`` repeating
        every ``len(bias)`` elements (a whole number of rows' bias); z is only read.

        Each span of ``len(bias)`` elements is one flat loop per kind, so callers pass
        either a block-sized tile (narrow rows) or the bias row itself (wide rows).
        Indices are plain loop counters: a computed index (base + k) gets Numba's
        negative-index check, which stops LLVM from vectorizing the loop."""
        width = max(bias.shape[0], 1)
        for start in range(0, z.shape[0], width):
            zs, out = z[start:start + width], a[start:start + width]
            count = zs.shape[0]
            if KIND == RELU or KIND == ANY and kind == RELU:
                for k in range(count):
                    v = zs[k] + bias[k]
                    out[k] = relu(v, alpha)
            elif KIND == LEAKY_RELU or KIND == ANY and kind == LEAKY_RELU:
                for k in range(count):
                    v = zs[k] + bias[k]
                    out[k] = leaky_relu(v, alpha)
            elif KIND == SIGMOID or KIND == ANY and kind == SIGMOID:
                for k in range(count):
                    v = zs[k] + bias[k]
                    out[k] = vsigmoid(v)
            elif KIND == TANH or KIND == ANY and kind == TANH:
                for k in range(count):
                    v = zs[k] + bias[k]
                    out[k] = vtanh(v)
            elif KIND == SOFTPLUS or KIND == ANY and kind == SOFTPLUS:
                for k in range(count):
                    v = zs[k] + bias[k]
                    out[k] = softplus(v, alpha)
            elif KIND == STEP or KIND == ANY and kind == STEP:
                for k in range(count):
                    v = zs[k] + bias[k]
                    out[k] = step(v, alpha)
            else:  # identity
                for k in range(count):
                    out[k] = zs[k] + bias[k]

    @kernel
    def grad_block(kind, da, z, a, dz, acc, alpha):
        """dz = da * f'(z) over equal-length 1-D arrays, and acc += dz with ``acc`` repeating
        every ``len(acc)`` elements (it collects a whole number of rows' bias gradient).

        One call covers a whole span, block by block: a call per block measured 5-15%
        slower on (4096, 1024) float32 arrays, which are larger than the caches."""
        width = max(acc.shape[0], 1)
        for start in range(0, z.shape[0], width):
            stop = start + width
            das, zs, As, out = da[start:stop], z[start:stop], a[start:stop], dz[start:stop]
            if KIND == RELU or KIND == ANY and kind == RELU:
                for k in range(zs.shape[0]):
                    g = relu_grad(das[k], zs[k], As[k], alpha)
                    out[k] = g
                    acc[k] += g
            elif KIND == LEAKY_RELU or KIND == ANY and kind == LEAKY_RELU:
                for k in range(zs.shape[0]):
                    g = leaky_relu_grad(das[k], zs[k], As[k], alpha)
                    out[k] = g
                    acc[k] += g
            elif KIND == SIGMOID or KIND == ANY and kind == SIGMOID:
                for k in range(zs.shape[0]):
                    g = sigmoid_grad(das[k], zs[k], As[k], alpha)
                    out[k] = g
                    acc[k] += g
            elif KIND == TANH or KIND == ANY and kind == TANH:
                for k in range(zs.shape[0]):
                    g = tanh_grad(das[k], zs[k], As[k], alpha)
                    out[k] = g
                    acc[k] += g
            elif KIND == SOFTPLUS or KIND == ANY and kind == SOFTPLUS:
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


BUILDS = {kind: for_kind(kind) for kind in (ANY, *KINDS.values())}  # compiled on first call
forward_block, grad_block = BUILDS[ANY]


def forward_block_for(KIND, kind, z, bias, a, alpha):
    """``BUILDS[KIND]``'s forward_block, from Numba code where ``KIND`` is a constant (a
    per-kind kernel's closure constant). A kernel's closure may hold no dispatcher:
    Numba would give the kernel a new cache key in every process."""
    raise NotImplementedError("only callable from Numba-compiled code")


def grad_block_for(KIND, kind, da, z, a, dz, acc, alpha):
    """``BUILDS[KIND]``'s grad_block, like ``forward_block_for``."""
    raise NotImplementedError("only callable from Numba-compiled code")


@overload(forward_block_for, prefer_literal=True)
def _forward_block_for(KIND, kind, z, bias, a, alpha):
    if not isinstance(KIND, types.IntegerLiteral):
        return None
    block = BUILDS[KIND.literal_value][0]
    return lambda KIND, kind, z, bias, a, alpha: block(kind, z, bias, a, alpha)


@overload(grad_block_for, prefer_literal=True)
def _grad_block_for(KIND, kind, da, z, a, dz, acc, alpha):
    if not isinstance(KIND, types.IntegerLiteral):
        return None
    block = BUILDS[KIND.literal_value][1]
    return lambda KIND, kind, da, z, a, dz, acc, alpha: block(kind, da, z, a, dz, acc, alpha)
