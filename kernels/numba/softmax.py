"""Row-wise softmax for the Numba kernels: forward (with the bias added) and its
backward, the Jacobian-vector product a * (dA - sum(dA * a)), fused with the bias
gradient.

A row is worked on in three passes while it sits in L1: w = z + b stored with its running
maximum, e = exp(w - max) stored over it with the running sum, then the row scaled by
1 / sum. The exp is ``math.vexp_nonpositive`` (its argument is never above 0), which
vectorizes (this Numba has no SVML); the sum is reassociated into partial sums per vector
lane (``reassociate=True``; the exp itself is a subroutine compiled without
reassociation, so its range reduction stays exact). LLVM does not vectorize a running
float maximum (a compare and select per element) without assuming no NaNs, so the
maximum is taken over integers that order as the floats do (``_order_key``), an integer
maximum LLVM vectorizes: the bias pass with it costs what the bias pass alone did. On
(256, 1024) float32, one thread (AMD EPYC): 0.75 -> 0.43 ns an element, 0.1 of it per
pass for the bias with the maximum and for the scaling, 0.23 for exp with the sum.

NaN in a row makes the whole row NaN, as in the reference (``activations.Softmax``):
a NaN orders above +inf or below -inf by its sign bit, so it is the maximum (every
exponent NaN) or below it (its exp, so the sum, NaN). An infinite maximum gives NaN where
the reference does (inf - inf); a row of -inf is NaN in both.

``rows``/``grad_rows`` work on a row range; ``forward``/``backward`` split the rows
across Numba's threads (``prange`` over chunks), the backward summing each chunk's bias
gradient into its own row of ``partial``. The ops (``ops.py``) run the serial kernels
below ``ops.PARALLEL_MIN`` elements. A softmax output layer (``dense.bias_activation``)
keeps plain loops: its few units gain nothing here, and these kernels take longer to
compile (MLP start-up 0.6 s slower cold when the layer called ``rows``).
"""

from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic

from .jit import kernel, prefer_wide_vectors
from .math import typed, typed_as, vexp_nonpositive

_KEYS = {types.float32: types.int32, types.float64: types.int64}  # float type: its key's


def _flip_negatives(builder, bits):
    """bits ^ (0x7f..f where the sign bit is set): the map between a float's bits and its
    order key, either way (it is its own inverse)."""
    width = bits.type.width
    sign = builder.ashr(bits, ir.Constant(bits.type, width - 1))
    return builder.xor(bits, builder.and_(sign, ir.Constant(bits.type, (1 << width - 1) - 1)))


@intrinsic
def _order_key(typingctx, x):
    """x's bits as a signed integer of its width, negative floats' magnitude bits flipped:
    the keys order as the floats do (-0 just below +0; NaN above inf or below -inf, by its
    sign bit)."""
    if x not in _KEYS:
        return None

    def codegen(context, builder, signature, args):
        return _flip_negatives(builder, builder.bitcast(args[0], context.get_value_type(_KEYS[x])))

    return _KEYS[x](x), codegen


@intrinsic
def _from_order_key(typingctx, key, like):
    """The float, of ``like``'s type, whose ``_order_key`` is ``key``."""
    if like not in _KEYS or not isinstance(key, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        bits = context.cast(builder, args[0], key, _KEYS[like])
        return builder.bitcast(_flip_negatives(builder, bits), context.get_value_type(like))

    return like(key, like), codegen


@kernel(reassociate=True)
def rows(Z, b, Z_out, A, lo, hi, keep_z):
    """A = softmax(Z + b) for rows lo..hi-1, and Z_out = Z + b when ``keep_z`` (Z_out
    may be Z itself; Z is only read otherwise). z + b is stored into A with its maximum,
    and the passes after it work on that row in place."""
    prefer_wide_vectors()
    n = Z.shape[1]
    if n == 0:
        return
    for i in range(lo, hi):
        z, a = Z[i], A[i]
        first = z[0] + b[0]
        key = _order_key(first)
        if keep_z:
            out = Z_out[i]
            for j in range(n):
                w = z[j] + b[j]
                out[j] = w
                a[j] = w
                key = max(key, _order_key(w))
        else:
            for j in range(n):
                w = z[j] + b[j]
                a[j] = w
                key = max(key, _order_key(w))
        top = _from_order_key(key, first)
        total = typed(top, 0.0)
        for j in range(n):
            e = vexp_nonpositive(a[j] - top)
            a[j] = e
            total += e
        scale = typed(top, 1.0) / total
        for j in range(n):
            a[j] *= scale


@kernel(reassociate=True)
def grad_rows(dA, A, dZ, db, lo, hi):
    """dZ = a * (dA - sum(dA * a)) row by row, for rows lo..hi-1, and db += the sum of
    those rows of dZ (the caller zeroes db)."""
    prefer_wide_vectors()
    n = A.shape[1]
    for i in range(lo, hi):
        da, a, g = dA[i], A[i], dZ[i]
        inner = typed_as(db, 0.0)
        for j in range(n):
            inner += da[j] * a[j]
        for j in range(n):
            v = a[j] * (da[j] - inner)
            g[j] = v
            db[j] += v


@kernel(parallel=True)
def forward(Z, b, Z_out, A, keep_z, chunks):
    """``rows`` over every row, ``chunks`` row ranges across the threads."""
    m = Z.shape[0]
    for c in prange(chunks):
        rows(Z, b, Z_out, A, c * m // chunks, (c + 1) * m // chunks, keep_z)


@kernel(parallel=True)
def backward(dA, A, dZ, db, partial):
    """``grad_rows`` over every row, one chunk of rows per row of ``partial`` (zeros on
    entry), whose bias gradients are added into db at the end."""
    m, chunks = A.shape[0], partial.shape[0]
    for c in prange(chunks):
        grad_rows(dA, A, dZ, partial[c], c * m // chunks, (c + 1) * m // chunks)
    for j in range(db.shape[0]):
        total = partial[0, j]
        for c in range(1, chunks):
            total += partial[c, j]
        db[j] = total

