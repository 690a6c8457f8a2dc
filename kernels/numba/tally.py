"""The step's running sums in one kernel call: a batch's loss and its score added to
the epoch's (loss sum, metric sum), and a dense output layer's bias gradient.

Each NumPy call of a training step is a few microseconds on its own but 5-40 after the
step's convolutions have filled the caches: ``metrics.batch_score`` (two arg-maxes, a
comparison, a cast and a sum) and the two scalar additions after it took 0.05-0.07 ms
of a LeNet-5 step at one thread, this kernel one call. Both give the generic op's bits:
the score is an exact count, and the column sums add the rows in NumPy's order.
"""

from .jit import kernel
from .math import typed_as


@kernel(inline=True)
def _argmax(a, i):
    """``np.argmax(a[i])``: the first largest entry of row i, or its first NaN."""
    best = 0
    for j in range(1, a.shape[1]):
        if a[i, best] != a[i, best]:
            break
        if a[i, j] > a[i, best] or a[i, j] != a[i, j]:
            best = j
    return best


@kernel
def tally(sums, loss, rows, A, Y, binary):
    """sums[0] += loss * rows; sums[1] += the batch's score (``metrics.batch_score``):
    the rows whose arg-max class in A is Y's, or (``binary``) the outputs on Y's side of
    0.5 over the outputs per row. A and Y: (rows, n_out), of sums' dtype."""
    sums[0] += loss * typed_as(sums, rows)
    m, n = A.shape
    count = 0
    if binary:
        half = typed_as(A, 0.5)
        for i in range(m):
            for j in range(n):
                count += (A[i, j] >= half) == (Y[i, j] >= half)
        sums[1] += typed_as(sums, count) / typed_as(sums, n)
    else:
        for i in range(m):
            count += _argmax(A, i) == _argmax(Y, i)
        sums[1] += typed_as(sums, count)


@kernel
def column_sums(d, out):
    """out = d (m, n) summed over its rows, row after row as ``np.sum(d, axis=0)`` adds
    them (so the same bits): a dense output layer's bias gradient from its dZ."""
    m, n = d.shape
    for j in range(n):
        out[j] = d[0, j] if m else typed_as(out, 0.0)
    for i in range(1, m):
        for j in range(n):
            out[j] += d[i, j]
