"""A stack of Dense layers' arrays as one table, for the epoch kernels.

The epoch kernels take every layer's arrays (weights, biases, gradients, optimizer state,
step buffers) as one int64 array, a row per layer: its sizes and its arrays' addresses
(``table``), and make each array a view at its address inside the kernel (``matrix``,
``vector``). Passed as tuples of arrays, one tuple per kind of array, they made each
model depth a build of its own, and each build unpacked ~80 array arguments and indexed
each tuple through a switch over its entries: most of a cold compile. With the table
one build serves every depth and a call passes a dozen arguments.

The views own nothing: the caller keeps the arrays alive, C-contiguous, and builds the
table again whenever one of them is replaced. A step buffer is seen with the step's
shape, from its first element: (rows, n_out) in the BLAS kernel, (n_out, rows) in the
loop kernel, so it holds ``n_out`` (``n_in`` for DA) times the batch's rows.
"""

import numba
import numpy as np
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .jit import kernel

try:  # Numba internals, with a public fallback (see the end of this file)
    from numba.np.arrayobj import make_array, populate_array
except ImportError:
    make_array = None

# the table's columns: the layer's sizes, then its arrays' addresses
N_IN, N_OUT, W, B, DW, DB, S1W, S1B, S2W, S2B, Z, A, DZ, DA = range(14)
ARRAYS = (W, B, DW, DB, S1W, S1B, S2W, S2B, Z, A, DZ, DA)  # the columns of addresses


def table(Ws, bs, dWs, dbs, s1W, s1b, s2W, s2b, Zs, As, dZs, dAs):
    """The table of a stack of layers from its arrays, one sequence per column of
    ``ARRAYS``, one entry per layer; the sizes are the weights' shapes."""
    groups = (Ws, bs, dWs, dbs, s1W, s1b, s2W, s2b, Zs, As, dZs, dAs)
    if any(len(group) != len(Ws) for group in groups):
        raise ValueError("every column of the layer table needs one array per layer")
    for group in groups:
        for a in group:
            if not a.flags.c_contiguous:
                raise ValueError("the layer table takes C-contiguous arrays only")
    rows = [[W.shape[0], W.shape[1], *(group[li].ctypes.data for group in groups)]
            for li, W in enumerate(Ws)]
    return np.array(rows, np.int64).reshape(len(Ws), 2 + len(ARRAYS))


def _view(table_type, like, ndim):
    """The codegen of ``matrix`` (``ndim`` 2) or ``vector`` (1): the table's entry
    [li, column] as the data pointer of a C-contiguous array of ``like``'s dtype with
    the given sizes, owning nothing (Numba's array internals)."""
    result = types.Array(like.dtype, ndim, "C")

    def codegen(context, builder, signature, args):
        table, li, column, sizes = args[0], args[1], args[2], args[3:3 + ndim]
        table = make_array(table_type)(context, builder, table)
        entry = cgutils.get_item_pointer(context, builder, table_type, table, [li, column],
                                         wraparound=False)
        item = context.get_data_type(like.dtype)
        itemsize = context.get_abi_sizeof(item)
        shape = [context.cast(builder, n, t, types.intp)
                 for n, t in zip(sizes, signature.args[3:3 + ndim])]
        strides = [context.get_constant(types.intp, itemsize)]
        for n in reversed(shape[1:]):
            strides.insert(0, builder.mul(strides[0], n))
        view = make_array(result)(context, builder)
        populate_array(view, data=builder.inttoptr(builder.load(entry), item.as_pointer()),
                       shape=shape, strides=strides, itemsize=context.get_constant(
                           types.intp, itemsize), meminfo=None)
        return view._getvalue()

    return result, codegen


@intrinsic
def matrix(typingctx, table, li, column, rows, columns, like):
    """Layer ``li``'s array in ``column`` as a C-contiguous (rows, columns) array of
    ``like``'s dtype. An intrinsic, not a helper Numba pastes in: a kernel makes dozens
    of these views, and each pasted helper costs its own typing and inlining."""
    result, codegen = _view(table, like, 2)
    return result(table, li, column, rows, columns, like), codegen


@intrinsic
def vector(typingctx, table, li, column, size, like):
    """Layer ``li``'s array in ``column`` as a 1-D array of ``size`` elements of
    ``like``'s dtype (see ``matrix``)."""
    result, codegen = _view(table, like, 1)
    return result(table, li, column, size, like), codegen


@intrinsic
def _pointer(typingctx, address, like):
    """The int ``address`` as a pointer to elements of ``like``'s dtype (an array)."""
    if not isinstance(address, types.Integer) or not isinstance(like, types.Array):
        return None
    pointer = types.CPointer(like.dtype)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(pointer))

    return pointer(address, like), codegen


def _matrix_by_carray(table, li, column, rows, columns, like):
    """``matrix`` where Numba's array internals are not there: ``numba.carray``."""
    return numba.carray(_pointer(table[li, column], like), (rows, columns))


def _vector_by_carray(table, li, column, size, like):
    """``vector`` where Numba's array internals are not there."""
    return numba.carray(_pointer(table[li, column], like), size)


if make_array is None:
    matrix = kernel(_matrix_by_carray, inline=True)  # noqa: F811
    vector = kernel(_vector_by_carray, inline=True)  # noqa: F811


@kernel(inline=True)
def shaped(buffer, rows, columns):
    """The first rows * columns elements of the C-contiguous ``buffer`` as a C-contiguous
    (rows, columns) array: a step's view of a buffer sized for the largest batch."""
    return numba.carray(_pointer(buffer.ctypes.data, buffer), (rows, columns))
