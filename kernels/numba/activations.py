"""The Numba kernels of every elementwise activation, generated from the registry.

Kernels receive an activation as an integer ``kind``, its code in ``activation_codes``
(and ``alpha``, its parameter). Each activation's scalar forward ``f(z, alpha)`` and
gradient ``g(da, z, a, alpha)`` come from its spec (``numba()`` in its file under
``fastnn/activations/``); ``forward_of(K, ...)``/``grad_of(K, ...)`` paste kind K's into
the calling kernel, K being a constant where the kernel is compiled.

``forward_block`` and ``grad_block`` pick the kind once and then run a flat loop that
calls only that kind's scalar function, so LLVM inlines it and vectorizes the loop (a
branch on ``kind`` inside the loop defeats the vectorizer). The loop is written once
for every kind (``_one_kind``): the registry decides which kinds there are, and no
branch per kind is written by hand. Softmax is row-wise and lives in ``dense``; step
has a forward only.

Each block is built for a set of kinds, a bit mask (``mask``; see ``blocks``): a build
for relu compiles relu's loop alone, not the exp, tanh and log1p of the others, which
is most of a first training step's compile time; ``ANY`` is the build for every kind.
"""

import functools

import numba
from numba import literal_unroll, types
from numba.extending import overload

from ..activation_codes import CODES, IDENTITY, SOFTMAX, SPEC_OF
from .jit import (
    OPTIONS,
    by_constant,
    kernel,
    mask,
    members,
    prefer_wide_vectors,
)
from .math import vexp, vlog1p_unit, vsigmoid, vtanh

ANY = mask(*CODES.values())  # the build for every kind
IDENTITY_MASK = mask(IDENTITY)


def in_blocks(bits):
    """The kinds of the mask ``bits`` whose elements run in blocks (the mask a caller's
    blocks are built for): softmax is row-wise, so its callers run it themselves, and a
    build for relu and a softmax output needs relu's loop alone (a one-kind build,
    which reads no ``kind``: 0.2-0.3 s less to compile than the pasted pair's)."""
    return bits & ~mask(SOFTMAX) or IDENTITY_MASK


@functools.cache
def scalars(code):
    """(forward, gradient) of kind ``code`` as Numba functions (None where it has none),
    inlined into the kernels that call them (Numba's ``inline="always"``)."""
    pair = SPEC_OF[code].numba() or (None, None)
    compile_ = numba.njit(**dict(OPTIONS, cache=False, inline="always"))
    return tuple(None if f is None else compile_(f) for f in pair)


FORWARD = tuple(code for code in SPEC_OF if scalars(code)[0] is not None)  # kinds with kernels
GRAD = tuple(code for code in SPEC_OF if scalars(code)[1] is not None)


def forward_of(code, z, alpha):
    """f(z) of kind ``code``, an integer constant of the calling kernel's build."""


def grad_of(code, da, z, a, alpha):
    """da * f'(z) of kind ``code``, given z and a = f(z)."""


@overload(forward_of, inline="always")
def _forward_of(code, z, alpha):
    """Kind K's forward pasted into the caller (Numba IR): a call of a compiled function
    of its own, even one LLVM may inline, measured 10x slower for softplus, whose
    function is too large for LLVM's inliner once exp and log1p are in it."""
    if isinstance(code, types.IntegerLiteral):
        forward = scalars(code.literal_value)[0]
        return lambda code, z, alpha: forward(z, alpha)


@overload(grad_of, inline="always")
def _grad_of(code, da, z, a, alpha):
    if isinstance(code, types.IntegerLiteral):
        grad = scalars(code.literal_value)[1]
        return lambda code, da, z, a, alpha: grad(da, z, a, alpha)


@functools.cache
def blocks(MASK):
    """(forward_block, grad_block) built for the kinds in ``MASK`` (see ``mask``): a build
    for one kind compiles that kind's loop and nothing else (``_one_kind``); a build for
    several tests ``kind`` once per call, and runs that kind's loop, pasted in one
    function with the others' (``_pasted_forward``) or its one-kind build
    (``_some_forward``) where two kinds call a function in common (``_apart``). Builds
    are cached on disk like any kernel (the closure holds only ints)."""
    kinds = members(MASK)
    if len(kinds) == 1:
        forward = kinds[0] if kinds[0] in FORWARD else IDENTITY
        return _one_kind(MASK, forward, kinds[0] if kinds[0] in GRAD else IDENTITY)
    forwards = tuple(k for k in kinds if k in FORWARD) or (IDENTITY,)
    grads = tuple(k for k in kinds if k in GRAD) or (IDENTITY,)
    return (_pasted_forward(MASK, forwards) if _apart(forwards, 0) else
            _some_forward(MASK, forwards),
            _pasted_grad(MASK, grads) if _apart(grads, 1) else _some_grad(MASK, grads))


SHARED = (vexp, vtanh, vsigmoid, vlog1p_unit)  # compiled functions the kernels call


def _apart(kinds, which):
    """True if no two of the kinds' forward (``which`` 0) or gradient (1) functions call
    one of the ``SHARED`` functions: then one function can hold all their loops (one
    compile). LLVM inlines such a function into a loop only where it has one caller."""
    seen = []
    for code in kinds:
        cells = scalars(code)[which].py_func.__closure__ or ()
        seen += [f for f in SHARED if any(c.cell_contents is f for c in cells)]
    return len(seen) == len(set(map(id, seen)))


def _one_kind(MASK, FORWARD_KIND, GRAD_KIND):
    """The blocks of a build for one kind: they never read ``kind``."""

    @kernel(build=(MASK,))
    def forward_block(kind, z, bias, a, alpha):
        """a = f(z + bias) over equal-length 1-D arrays z and a, with ``bias`` repeating
        every ``len(bias)`` elements (a whole number of rows' bias); z is only read.

        Each span of ``len(bias)`` elements is one flat loop, so callers pass either a
        block-sized tile (narrow rows) or the bias row itself (wide rows). Indices are
        plain loop counters: a computed index (base + k) gets Numba's negative-index
        check, which stops LLVM from vectorizing the loop."""
        prefer_wide_vectors()
        width = max(bias.shape[0], 1)
        for start in range(0, z.shape[0], width):
            zs, out = z[start:start + width], a[start:start + width]
            for k in range(zs.shape[0]):
                out[k] = forward_of(FORWARD_KIND, zs[k] + bias[k], alpha)

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
            for k in range(zs.shape[0]):
                g = grad_of(GRAD_KIND, das[k], zs[k], As[k], alpha)
                out[k] = g
                acc[k] += g

    return forward_block, grad_block


def _pasted_forward(MASK, FORWARDS):
    """``forward_block`` for several kinds in one function: one loop per kind, unrolled
    over the kinds (``literal_unroll``), each run only for its own ``kind``."""

    @kernel(build=(MASK,))
    def forward_block(kind, z, bias, a, alpha):
        prefer_wide_vectors()
        width = max(bias.shape[0], 1)
        for start in range(0, z.shape[0], width):
            zs, out = z[start:start + width], a[start:start + width]
            done = False
            for K in literal_unroll(FORWARDS):
                if kind == K:
                    for k in range(zs.shape[0]):
                        out[k] = forward_of(K, zs[k] + bias[k], alpha)
                    done = True
            if not done:
                for k in range(zs.shape[0]):
                    out[k] = zs[k] + bias[k]

    return forward_block


def _pasted_grad(MASK, GRADS):
    """``grad_block`` for several kinds in one function (see ``_pasted_forward``)."""

    @kernel(build=(MASK,))
    def grad_block(kind, da, z, a, dz, acc, alpha):
        prefer_wide_vectors()
        width = max(acc.shape[0], 1)
        for start in range(0, z.shape[0], width):
            stop = start + width
            das, zs, As, out = da[start:stop], z[start:stop], a[start:stop], dz[start:stop]
            done = False
            for K in literal_unroll(GRADS):
                if kind == K:
                    for k in range(zs.shape[0]):
                        g = grad_of(K, das[k], zs[k], As[k], alpha)
                        out[k] = g
                        acc[k] += g
                    done = True
            if not done:
                for k in range(zs.shape[0]):
                    g = das[k]
                    out[k] = g
                    acc[k] += g

    return grad_block


def _some_forward(MASK, FORWARDS):
    """``forward_block`` for several kinds that call one function in common: it calls the
    one-kind build of the kind it is given (a kind outside the build runs as identity),
    each compiled apart with its loop alone."""
    ONES = tuple(mask(k) for k in FORWARDS)  # the one-kind builds' masks, in order

    @kernel(build=(MASK,))
    def forward_block(kind, z, bias, a, alpha):
        prefer_wide_vectors()  # LLVM may inline the one-kind loop here: keep its vectors
        done = False
        for ONE in literal_unroll(ONES):
            if ONE == 1 << kind:
                forward_block_for(ONE, kind, z, bias, a, alpha)
                done = True
        if not done:
            forward_block_for(IDENTITY_MASK, kind, z, bias, a, alpha)

    return forward_block


def _some_grad(MASK, GRADS):
    """``grad_block`` for several kinds that call one function in common (see
    ``_some_forward``)."""
    ONES = tuple(mask(k) for k in GRADS)

    @kernel(build=(MASK,))
    def grad_block(kind, da, z, a, dz, acc, alpha):
        prefer_wide_vectors()
        done = False
        for ONE in literal_unroll(ONES):
            if ONE == 1 << kind:
                grad_block_for(ONE, kind, da, z, a, dz, acc, alpha)
                done = True
        if not done:
            grad_block_for(IDENTITY_MASK, kind, da, z, a, dz, acc, alpha)

    return grad_block


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
