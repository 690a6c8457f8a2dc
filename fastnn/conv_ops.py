"""The convolution and pooling ops of the ops table, written once against the array API.

Convolution is im2col (strided slices of the padded input stacked into a matrix per
image), one batched GEMM with the weights, and for the input gradient col2im (kh*kw
slice-adds, never a scatter-add). Only slicing, ``stack``, ``reshape``, ``matmul``,
``permute_dims`` and reductions are used, so the same code runs on NumPy, CuPy and
the strict stand-in; the Numba and CUDA backends override these ops with fused kernels.

The contract every backend's version keeps (``fastnn.ops.Ops`` binds ``xp``):

- Layout is NCHW as in PyTorch. ``X`` (N, C, H, W) is float32 or float64; ``W``
  (F, C, kh, kw) is PyTorch's weight layout for F output channels (filters) and ``b``
  (F,); every array of one call has X's dtype and device.
- ``stride`` is (sh, sw), ``size`` (pooling) is (kh, kw): Python ints >= 1.
  ``padding`` is ((top, bottom), (left, right)), Python ints >= 0: zeros around X.
- The output is OH x OW with OH = (H + top + bottom - kh) // sh + 1 (OW alike).
  ``Conv2D`` only builds when the division is exact; the pooling layers floor it as
  PyTorch does, so the last rows and columns of an input may lie in no window
  (their gradient is 0). The layer guarantees 1 <= kh <= H + top + bottom.
- Arguments are arrays (any strides: a view such as a Flatten reshape or a sliced
  batch may come in) or the Python values above, never None, except ``work``.
  An override checks the layout its kernel takes and copies or falls back to the
  generic op otherwise (as ``fastnn.kernels.numba.ops.fits`` does). No op writes to
  its inputs. The arrays returned are new, C-contiguous and in X's dtype, except
  that ``Z`` may be ``A`` itself (see ``conv2d_forward``).
- ``work`` is private to a forward/backward pair: whatever the backend's forward
  keeps for its backward (or None). ``Ops`` accepts an override of one op of a pair
  only together with the other, so a backward only ever sees its own forward's work.
  The backward gets back exactly the arrays its forward was given and returned,
  unmodified.
"""

from fastnn.windows import output_hw


def conv2d_forward(xp, X, W, b, activation, stride, padding, keep_z=True):
    """Z = conv2d(X, W) + b (PyTorch's cross-correlation) and A = activation(Z), each
    (N, F, OH, OW); returns (Z, A, work).

    ``keep_z=False`` says only A is needed later: a backend may then return A in Z's
    place when ``activation.derivative_from_output`` (as ``dense_forward``). ``work``:
    here the im2col matrix (N, C*kh*kw, OH*OW), kept for the backward's dW.
    """
    F, C, kh, kw = W.shape
    cols, (OH, OW) = im2col(xp, X, (kh, kw), stride, padding)
    Z = xp.matmul(xp.reshape(W, (F, C * kh * kw)), cols)  # (N, F, OH*OW): NCHW already
    Z += xp.reshape(b, (F, 1))
    Z = xp.reshape(Z, (X.shape[0], F, OH, OW))
    return Z, activation.forward(xp, Z), cols


def conv2d_backward(xp, X, W, dA, Z, A, work, activation, stride, padding, need_dx):
    """The whole backward of a conv layer from its output gradient dA (N, F, OH, OW):
    dZ = activation.backward(dA, Z, A), then (dW (F, C, kh, kw), db (F,) = dZ summed
    over N, OH and OW, dX (N, C, H, W) or None when ``need_dx`` is False: the model's
    first layer). ``work`` is the forward's; the generic op also takes None (it then
    builds the im2col matrix again)."""
    F, C, kh, kw = W.shape
    N, _, OH, OW = dA.shape
    dZ = activation.backward(xp, dA, Z, A)
    db = xp.sum(dZ, axis=(0, 2, 3))
    cols = work if work is not None else im2col(xp, X, (kh, kw), stride, padding)[0]
    dZ = xp.reshape(dZ, (N, F, OH * OW))
    # one GEMM per image, then the sum over images in a fixed order
    dW = xp.sum(xp.matmul(dZ, xp.permute_dims(cols, (0, 2, 1))), axis=0)
    dW = xp.reshape(dW, W.shape)
    if not need_dx:
        return dW, db, None
    # dX with the batch last, (C*kh*kw, OH*OW*N) from one GEMM: col2im's slice-adds
    # then run along rows of OW*N numbers, not OW (3x faster for LeNet's second conv)
    dZ = xp.reshape(xp.permute_dims(xp.reshape(dZ, (N, F, OH, OW)), (1, 2, 3, 0)), (F, -1))
    dcols = xp.matmul(xp.permute_dims(xp.reshape(W, (F, C * kh * kw)), (1, 0)), dZ)
    return dW, db, col2im(xp, dcols, X.shape, (kh, kw), stride, padding)


def maxpool2d_forward(xp, X, size, stride):
    """The maximum of each kh x kw window, (N, C, OH, OW), no padding, floor mode;
    returns (out, work).

    NaN counts as larger than any number, so a window holding NaN gives NaN. Each
    window's gradient goes to one input: its first maximum in row-major order (PyTorch's
    rule for equal maxima; for NaN PyTorch's CPU kernel takes the last NaN, fastnn the
    first). ``work``: here one boolean (N, C, OH, OW) array per window offset, true
    where that offset holds the chosen input."""
    parts = _windows(X, size, stride, output_hw(X.shape, size, stride))
    out = xp.asarray(parts[0], copy=True) if len(parts) == 1 else parts[0]
    for part in parts[1:]:
        out = xp.maximum(out, part)  # NaN propagates
    taken, chosen = None, []
    for part in parts:
        hit = (part >= out) | xp.isnan(part)  # the maximum, or a NaN
        hit = hit if taken is None else hit & ~taken
        taken = hit if taken is None else taken | hit
        chosen.append(hit)
    return out, tuple(chosen)


def maxpool2d_backward(xp, dA, X, out, work, size, stride):
    """dX (N, C, H, W): each entry of dA (N, C, OH, OW) added at its window's chosen
    input (see ``maxpool2d_forward``); overlapping windows add up, inputs in no window
    get 0. X, out and work are the forward's."""
    dX = xp.zeros(X.shape, dtype=dA.dtype, device=dA.device)
    apart = stride[0] >= size[0] and stride[1] >= size[1]  # no input in two windows
    for hit, (rows, cols) in zip(work, _slices(size, stride, dA.shape[2:])):
        share = dA * xp.astype(hit, dA.dtype)
        if apart:
            dX[:, :, rows, cols] = share
        else:
            dX[:, :, rows, cols] += share
    return dX


def conv2d_maxpool_forward(ops, X, W, b, activation, stride, padding, size, pool_stride):
    """A conv layer and the max pool right after it as one op: (out, work), out the
    pool's output (N, F, PH, PW). Composed of the table ``ops``'s own conv and pool ops
    (every backend's version, unless it fuses the pair: the Numba backend writes the
    pooled output from the conv's tiles). The conv's Z is never read (keep_z=False)."""
    Z, A, conv_work = ops.conv2d_forward(X, W, b, activation, stride, padding, False)
    out, pool_work = ops.maxpool2d_forward(A, size, pool_stride)
    return out, (Z, A, conv_work, pool_work)


def conv2d_maxpool_backward(ops, X, W, dP, out, work, activation, stride, padding, size,
                            pool_stride, need_dx):
    """``conv2d_maxpool_forward``'s backward from the pool's output gradient dP: (dW, db,
    dX or None), as ``conv2d_backward``."""
    Z, A, conv_work, pool_work = work
    dA = ops.maxpool2d_backward(dP, A, out, pool_work, size, pool_stride)
    return ops.conv2d_backward(X, W, dA, Z, A, conv_work, activation, stride, padding, need_dx)


def avgpool2d_forward(xp, X, size, stride):
    """The mean of each kh x kw window (dividing by kh*kw), (N, C, OH, OW), no padding,
    floor mode."""
    kh, kw = size
    N, C, _, _ = X.shape
    OH, OW = output_hw(X.shape, size, stride)
    if tuple(stride) == tuple(size):  # side by side: one reduction over a reshape
        blocks = xp.reshape(X[:, :, : OH * kh, : OW * kw], (N, C, OH, kh, OW, kw))
        return xp.mean(blocks, axis=(3, 5))
    parts = _windows(X, size, stride, (OH, OW))
    total = xp.asarray(parts[0], copy=True)
    for part in parts[1:]:
        total += part
    total /= kh * kw
    return total


def avgpool2d_backward(xp, dA, shape, size, stride):
    """dX of ``shape`` (the input's (N, C, H, W)): each entry of dA / (kh*kw) added at
    every input of its window; inputs in no window get 0."""
    kh, kw = size
    N, C, OH, OW = dA.shape
    share = dA / (kh * kw)
    dX = xp.zeros(shape, dtype=dA.dtype, device=dA.device)
    if tuple(stride) == tuple(size):
        spread = xp.broadcast_to(xp.reshape(share, (N, C, OH, 1, OW, 1)), (N, C, OH, kh, OW, kw))
        dX[:, :, : OH * kh, : OW * kw] = xp.reshape(spread, (N, C, OH * kh, OW * kw))
        return dX
    for rows, cols in _slices(size, stride, (OH, OW)):
        dX[:, :, rows, cols] += share
    return dX


# ---- im2col and col2im ----

def im2col(xp, X, size, stride, padding):
    """X's windows as one matrix per image, (N, C*kh*kw, OH*OW), and (OH, OW): column p
    of image n holds the padded input under output position p, its rows in (c, i, j)
    order, the order of ``W.reshape(F, C*kh*kw)``'s columns."""
    N, C = X.shape[:2]
    padded = _pad(xp, X, padding)
    OH, OW = output_hw(padded.shape, size, stride)
    cols = xp.stack(_windows(padded, size, stride, (OH, OW)), axis=2)  # (N, C, kh*kw, OH, OW)
    return xp.reshape(cols, (N, C * size[0] * size[1], OH * OW)), (OH, OW)


def col2im(xp, cols, shape, size, stride, padding):
    """The adjoint of im2col for columns laid out batch last, (C*kh*kw, OH*OW*N), rows
    in (c, i, j) order: dX of ``shape`` (N, C, H, W), C-contiguous, with every entry
    added at the input position its window offset and output position come from (one
    slice-add per window offset), padding cut off."""
    N, C, H, W = shape
    (top, bottom), (left, right) = padding
    OH, OW = output_hw(shape, size, stride, padding)
    parts = xp.reshape(cols, (C, size[0] * size[1], OH, OW, N))
    dX = xp.zeros((C, H + top + bottom, W + left + right, N), dtype=cols.dtype,
                  device=cols.device)
    for k, (rows, columns) in enumerate(_slices(size, stride, (OH, OW))):
        dX[:, rows, columns, :] += parts[:, k, ...]
    dX = xp.permute_dims(dX[:, top : top + H, left : left + W, :], (3, 0, 1, 2))
    return xp.reshape(xp.reshape(dX, (-1,)), shape)  # a C-ordered copy


def _pad(xp, X, padding):
    (top, bottom), (left, right) = padding
    if not (top or bottom or left or right):
        return X
    N, C, H, W = X.shape
    padded = xp.zeros((N, C, H + top + bottom, W + left + right), dtype=X.dtype,
                      device=X.device)
    padded[:, :, top : top + H, left : left + W] = X
    return padded


def _slices(size, stride, out_hw):
    """For each offset (i, j) of a window, row-major: the (rows, columns) slices that
    pick the input at that offset in every window (ends exact: never past the input)."""
    (kh, kw), (sh, sw), (OH, OW) = size, stride, out_hw
    return [(slice(i, i + sh * (OH - 1) + 1, sh), slice(j, j + sw * (OW - 1) + 1, sw))
            for i in range(kh) for j in range(kw)]


def _windows(X, size, stride, out_hw):
    """The kh*kw strided views of X (N, C, OH, OW), one per window offset (row-major)."""
    return [X[:, :, rows, cols] for rows, cols in _slices(size, stride, out_hw)]
