"""Convolution kernels: im2col one cache-sized tile at a time, NumPy's own GEMM on it,
bias and activation fused into the write of the output.

Direct convolution loops do not vectorize in Numba (SimpleConvNet's first conv ran at
scalar speed, 5x slower than a tile + GEMM). So each image's input windows are copied
into a tile (C*kh*kw, rows*OW) of at most ``TILE`` numbers (128 KiB in float32, it
stays in L2), multiplied by the weights with the GEMM NumPy uses (``blas.gemm``), and
the product is written out with the bias added and the activation applied. A step
never holds the whole im2col matrix (N*OH*OW, C*kh*kw): memory is a tile per thread.

The forward runs across threads over images. The backward runs over fixed chunks of
``CHUNK`` images: each chunk sums its own dW and db in image order, and the chunks'
partial sums are added in chunk order, so results do not depend on the thread count
(bit-identical at 1 and 2 threads). It rebuilds each tile (cheaper than keeping
them), and col2im is adds into the chunk's own images, so no two threads write one
number. The layer that needs no input gradient (the model's first) skips that GEMM
and col2im.

With stride 1, where the tile has more rows than the product (K > F, as LeNet-5's
convs), the tiles are "wide" (see ``_wide_image``): one contiguous copy per tile row.

Activations: identity, relu and leaky relu are fused here (``FUSED``); the ops run
any other one with its own xp code on the kernel's Z (see ``ops.conv2d_forward``).

Each kernel is built for one variant (``forward_kernel``, ``backward_kernel``): the
stride, the tile form, the activation, and whether Z is written or dX computed are
constants of the build, so a fit compiles only the code it runs (Numba drops the
branches not taken before typing them). A parallel kernel is only a ``prange`` loop
calling a serial build for one image or chunk (``_image``, ``_chunk``: the tile form's
``_forward_image``, ``_backward_chunk`` or the wide form's, keyed by ``pack`` of those
constants and linked in as subroutines, ``jit.by_constant``): Numba's parfor passes,
and the threaded function they outline and compile again, then see one call instead of
the whole body (the digits CNN's conv backward compiled in ~3.8 s instead of ~5.6 s of
CPU, docs/backends/numba.md).
"""

import functools

import numpy as np
from numba import prange

from ..activation_codes import IDENTITY, LEAKY_RELU, RELU
from .activations import scalars
from .blas import gemm
from .jit import by_constant, kernel

FUSED = (IDENTITY, RELU, LEAKY_RELU)
POOLED = (IDENTITY, RELU)  # the activations whose builds also fuse a 2x2 max pool
relu, relu_grad = scalars(RELU)  # the specs' scalar functions (fastnn/activations/)
leaky_relu, leaky_relu_grad = scalars(LEAKY_RELU)
TILE = 1 << 15  # numbers in one im2col tile
CHUNK = 4  # images whose dW and db one partial sum holds (fixed: thread-count free)
KEY_BASE = 1 << 12  # a build key's base (``pack``): strides and codes below it


def tile_rows(K, OH, width):
    """Output rows per tile: as many as fit in ``TILE`` numbers, at least one; ``width``
    is a tile row's (``tile_width``)."""
    return max(1, min(OH, TILE // max(1, K * width)))


def wide(K, F, stride):
    """True where the wide-tile kernels (stride 1 only) run: where the tile has more rows
    than the product (K > F). They trade each tile row's per-output-row copies (K * rows
    short loops) for a per-output-row write (F * rows short loops) and a product
    Wp / OW as wide. Measured, one thread, ms forward / backward, old -> wide: LeNet's
    first conv (K 25, F 6) 1.27 / 1.55 -> 1.05 / 1.23; its second (K 150, F 16)
    1.98 / 4.45 -> 1.49 / 3.79; SimpleConvNet's (K 25, F 30) 1.65 / 2.50 -> 2.47 / 2.86."""
    return tuple(stride) == (1, 1) and K > F


def tile_width(OW, kw, is_wide):
    """Numbers a tile holds per output row: OW, or the padded width OW + kw - 1 for the
    wide tiles."""
    return OW + kw - 1 if is_wide else OW


@kernel(inline=True)
def _span(OW, sw, j, left, W):
    """The output columns x whose input column x*sw + j - left lies inside 0..W-1."""
    first = 0
    if left > j:
        first = (left - j + sw - 1) // sw
    last = OW
    if W - 1 + left - j < 0:
        last = 0
    else:
        last = min(OW, (W - 1 + left - j) // sw + 1)
    return first, max(first, last)


@kernel(inline=True)
def fill_tile(x, tile, kh, kw, sh, sw, top, left, r0, rows, OW):
    """tile[(c, i, j), y*OW + x] = the padded image x at (c, (r0 + y)*sh + i - top,
    x*sw + j - left), zero outside the image, for y < rows. Copies run as plain loops
    over slices (a slice assignment calls a general copy routine, which cost more than
    LeNet's 10-number rows; a computed index gets a negative-index check per element,
    which stops the loop from vectorizing)."""
    C, H, W = x.shape
    for c in range(C):
        for i in range(kh):
            for j in range(kw):
                k = (c * kh + i) * kw + j
                first, last = _span(OW, sw, j, left, W)
                for y in range(rows):
                    h = (r0 + y) * sh + i - top
                    dst = tile[k, y * OW:(y + 1) * OW]
                    if h < 0 or h >= H:
                        for p in range(OW):
                            dst[p] = 0
                        continue
                    for p in range(first):
                        dst[p] = 0
                    for p in range(last, OW):
                        dst[p] = 0
                    if sw == 1:  # plain counters over slices: the copy vectorizes
                        out, src = dst[first:last], x[c, h, first + j - left:last + j - left]
                        for p in range(last - first):
                            out[p] = src[p]
                    else:
                        src = x[c, h]
                        for p in range(first, last):
                            dst[p] = src[p * sw + j - left]


@kernel(inline=True)
def add_tile(dx, tile, kh, kw, sh, sw, top, left, r0, rows, OW):
    """col2im: the adjoint of ``fill_tile``, adding each tile entry into dx (C, H, W)."""
    C, H, W = dx.shape
    for c in range(C):
        for i in range(kh):
            for j in range(kw):
                k = (c * kh + i) * kw + j
                first, last = _span(OW, sw, j, left, W)
                for y in range(rows):
                    h = (r0 + y) * sh + i - top
                    if h < 0 or h >= H:
                        continue
                    src = tile[k, y * OW:(y + 1) * OW]
                    if sw == 1:
                        out, part = dx[c, h, first + j - left:last + j - left], src[first:last]
                        for p in range(last - first):
                            out[p] += part[p]
                    else:
                        dst = dx[c, h]
                        for p in range(first, last):
                            dst[p * sw + j - left] += src[p]


@kernel(inline=True)
def _zero(x):
    """x[...] = 0 for a C-contiguous x: the backward kernels zero each image's dX as they
    reach it (in cache, across threads) instead of taking it zeroed from ``np.zeros``."""
    flat = x.reshape(x.size)
    for p in range(flat.size):
        flat[p] = 0


@kernel(inline=True)
def _write_row(kind, src, bias, zs, as_, alpha, keep_z, n):
    """as_[p] = f(src[p] + bias) for p < n, and zs[p] = src[p] + bias if keep_z (and f
    is not the identity, whose z is its a): one row of a conv output's write."""
    if kind == RELU:
        for p in range(n):
            as_[p] = relu(src[p] + bias, alpha)
    elif kind == LEAKY_RELU:
        for p in range(n):
            as_[p] = leaky_relu(src[p] + bias, alpha)
    else:
        for p in range(n):
            as_[p] = src[p] + bias
    if keep_z and kind != IDENTITY:
        for p in range(n):
            zs[p] = src[p] + bias


@kernel(inline=True)
def _grad_row(kind, d, z, a, out, alpha, n):
    """out[p] = d[p] * f'(z[p]) for p < n (z or a read, as the activation needs)."""
    if kind == RELU:
        for p in range(n):
            out[p] = relu_grad(d[p], z[p], a[p], alpha)
    elif kind == LEAKY_RELU:
        for p in range(n):
            out[p] = leaky_relu_grad(d[p], z[p], a[p], alpha)
    else:
        for p in range(n):
            out[p] = d[p]


@kernel(reassociate=True)
def _total(x, n, start):
    """start + x[0] + ... + x[n - 1], in the vectorized order of partial sums this code
    compiles to (the same at any thread count): a sum in plain order is one add at a
    time, and it took 1.8 of SimpleConvNet's 3.0 ms of conv backward (one thread, AMD
    EPYC), 0.3 this way."""
    total = start
    for p in range(n):
        total += x[p]
    return total


@kernel(inline=True)
def _add_chunks(dWs, dbs, dW, db):
    """dW (F, K) += each chunk's transposed sum dWs[c] (K, F) and db += dbs[c], chunk
    after chunk. The chunks sum dW^T += tile @ dz^T: OpenBLAS ran dW += dz @ tile^T
    (the transposed tile) 2.5x slower for LeNet's second conv (2.05 against 0.82 ms for
    its 128 products, one thread, AMD EPYC)."""
    chunks, K, F = dWs.shape
    for c in range(chunks):
        for f in range(F):
            row = dW[f]
            for k in range(K):
                row[k] += dWs[c, k, f]
            db[f] += dbs[c, f]


@kernel(inline=True)
def _write(kind, out, b, z, a, alpha, keep_z, start, stride):
    """z = out + b (one bias per row of out), a = f(z), row f of out going to the flat
    z and a at f*stride + start; z is not written unless keep_z."""
    F, P = out.shape
    for f in range(F):
        at = f * stride + start
        _write_row(kind, out[f], b[f], z[at:at + P], a[at:at + P], alpha, keep_z, P)


@kernel(inline=True)
def _grad(kind, dA, Z, A, dz, db, alpha, start, stride):
    """dz = dA * f'(Z) (Z or A read, as the activation needs) and db += its row sums;
    row f of dz comes from the flat dA, Z, A at f*stride + start."""
    F, P = dz.shape
    for f in range(F):
        at = f * stride + start
        out = dz[f]
        _grad_row(kind, dA[at:at + P], Z[at:at + P], A[at:at + P], out, alpha, P)
        db[f] = _total(out, P, db[f])


@kernel(inline=True)
def _write_pool(kind, out, b, P, where, alpha, r0, rows):
    """The 2x2 max pool (stride 2) of z = out + b (one bias per row of out), through the
    activation: P[f, (r0 + y) // 2, x] = f(max of the window) (relu(max z) = max(relu z):
    relu never reorders), for the ``rows`` (even, or the image's last) output rows of
    the tile, laid out ``width // rows`` apart in out's rows; where = the chosen input
    as y * that width + x in the image (the index the backward's dz tile needs). The
    pool's rule: the first maximum in row-major order, the first NaN if any
    (``pool.max_forward``); the bias is added before comparing, so ties are z's. The
    full-resolution activation is never written. Each pair of rows is read through a
    slice of its own: indexing out's row at computed offsets ran 2x slower (0.80 against
    0.40 ms for LeNet's first conv, 128 images, one thread, AMD EPYC)."""
    F, width = out.shape
    Wp = width // rows
    PW = P.shape[2]
    for f in range(F):
        bias = b[f]
        for py in range(rows // 2):
            y = r0 // 2 + py
            top = out[f, 2 * py * Wp:(2 * py + 1) * Wp]
            bottom = out[f, (2 * py + 1) * Wp:(2 * py + 2) * Wp]
            best, at = P[f, y], where[f, y]
            base, down = np.int32(2 * y * Wp), np.int32(Wp)
            for px in range(PW):
                m, k = top[2 * px] + bias, np.int32(0)
                v = top[2 * px + 1] + bias
                take = (v > m) | ((v != v) & (m == m))
                m = v if take else m
                k = np.int32(1) if take else k
                v = bottom[2 * px] + bias
                take = (v > m) | ((v != v) & (m == m))
                m = v if take else m
                k = down if take else k
                v = bottom[2 * px + 1] + bias
                take = (v > m) | ((v != v) & (m == m))
                m = v if take else m
                k = down + np.int32(1) if take else k
                best[px] = relu(m, alpha) if kind == RELU else m
                at[px] = base + np.int32(2 * px) + k


@kernel(inline=True)
def _grad_pool(kind, dP, P, where, dz, db, alpha, r0, rows):
    """dz (F, rows * width) for the tile from the pooled gradient dP (F, PH, PW): zero
    but at each window's chosen input (``_write_pool``'s where), which gets dP times
    the activation's derivative there (relu's from the pooled output: P > 0 iff the
    chosen z > 0), the same dz the pool's backward then ``_grad`` would give; db[f] +=
    its row sums (in ``_grad``'s order: the zeros add nothing)."""
    F, width = dz.shape
    Wp = width // rows
    PW = P.shape[2]
    shift = r0 * Wp
    for f in range(F):
        out = dz[f]
        for t in range(width):
            out[t] = 0
        for y in range(r0 // 2, (r0 + rows) // 2):
            d, a, at = dP[f, y], P[f, y], where[f, y]
            for px in range(PW):
                out[at[px] - shift] = relu_grad(d[px], a[px], a[px], alpha) if kind == RELU \
                    else d[px]
        db[f] = _total(out, width, db[f])


def pack(*numbers):
    """One int for a build's constants (each below ``KEY_BASE``): what ``by_constant``
    keys a serial build by, unpacked by ``unpack``."""
    key = 0
    for number in numbers:
        if not 0 <= number < KEY_BASE:
            raise ValueError(f"conv kernels are built for numbers 0..{KEY_BASE - 1}, not {number}")
        key = key * KEY_BASE + int(number)
    return key


def unpack(key, count):
    """The ``count`` numbers ``pack`` made ``key`` of."""
    numbers = []
    for _ in range(count):
        key, number = divmod(key, KEY_BASE)
        numbers.append(number)
    return tuple(reversed(numbers))


def _forward_image(key):
    """The serial body of ``forward`` for one image, built for ``pack(FORM, SH, SW, KIND,
    KEEP_Z)`` (``FORM``: 2 if a max pool is fused, ``pooled``): the parallel kernel is a
    loop over images calling it, so Numba's parfor passes (and the outlined body compiled
    again) see a one-line loop, not this code."""
    FORM, SH, SW, KIND, KEEP_Z = unpack(key, 5)
    POOL = FORM >> 1

    @kernel(build=(FORM, SH, SW, KIND, KEEP_Z))
    def forward_image(address, ilp64, X, W2, b, Z, A, where, alpha, kh, kw, top, left, rows,
                      OH, OW, n):
        """Z[n] = conv(X[n], W) + b and A[n] = f(Z[n]), ``rows`` output rows per tile;
        with ``POOL``, A[n] = their 2x2 max pool and where[n] its choices instead."""
        F, K = W2.shape
        buffer = np.empty(K * rows * OW, X.dtype)
        product = np.empty(F * rows * OW, X.dtype)
        for r0 in range(0, OH, rows):
            count = min(rows, OH - r0)
            width = count * OW
            tile = buffer[:K * width].reshape((K, width))
            out = product[:F * width].reshape((F, width))
            fill_tile(X[n], tile, kh, kw, SH, SW, top, left, r0, count, OW)
            gemm(address, ilp64, W2, tile, out, 1.0, 0.0, False, False)
            if POOL:
                _write_pool(KIND, out, b, A[n], where[n], alpha, r0, count)
            else:
                _write(KIND, out, b, Z[n].reshape(F * OH * OW), A[n].reshape(F * OH * OW),
                       alpha, KEEP_Z, r0 * OW, OH * OW)

    return forward_image


def _backward_chunk(key):
    """The serial body of ``backward`` for one chunk of images, built for ``pack(FORM, SH,
    SW, KIND, NEED_DX)`` (as ``_forward_image``)."""
    FORM, SH, SW, KIND, NEED_DX = unpack(key, 5)
    POOL = FORM >> 1

    @kernel(build=(FORM, SH, SW, KIND, NEED_DX))
    def backward_chunk(address, ilp64, X, W2, dA, Z, A, where, dWc, dbc, dX, alpha, kh, kw,
                       top, left, rows, OH, OW, lo, hi):
        """dWc (K, F) = the images lo..hi-1's dW, transposed, and dbc (F,) their db, summed
        in image order (both overwritten); with ``NEED_DX`` their dX (overwritten). With
        ``POOL``, dA and A are the pooled gradient and output, where the pool's choices."""
        F, K = W2.shape
        _zero(dWc)
        _zero(dbc)
        buffer = np.empty(K * rows * OW, X.dtype)
        grads = np.empty(F * rows * OW, X.dtype)
        back = np.empty(K * rows * OW if NEED_DX else 0, X.dtype)
        for n in range(lo, hi):
            if NEED_DX:
                _zero(dX[n])
            for r0 in range(0, OH, rows):
                count = min(rows, OH - r0)
                width = count * OW
                tile = buffer[:K * width].reshape((K, width))
                dz = grads[:F * width].reshape((F, width))
                if POOL:
                    _grad_pool(KIND, dA[n], A[n], where[n], dz, dbc, alpha, r0, count)
                else:
                    size = F * OH * OW
                    _grad(KIND, dA[n].reshape(size), Z[n].reshape(size), A[n].reshape(size), dz,
                          dbc, alpha, r0 * OW, OH * OW)
                fill_tile(X[n], tile, kh, kw, SH, SW, top, left, r0, count, OW)
                gemm(address, ilp64, tile, dz, dWc, 1.0, 1.0, False, True)
                if NEED_DX:
                    dcols = back[:K * width].reshape((K, width))
                    gemm(address, ilp64, W2, dz, dcols, 1.0, 0.0, True, False)
                    add_tile(dX[n], dcols, kh, kw, SH, SW, top, left, r0, count, OW)

    return backward_chunk



@functools.cache
def forward_kernel(SH, SW, is_wide, kind, keep_z, pooled=False):
    """The forward kernel built for one variant, and nothing else compiled: the stride
    (a stride known when the kernel compiles lets LLVM simplify the tile's index
    arithmetic and vectorize its copies; as an argument, SimpleConvNet's tiles took
    3.5x as long), the wide tiles (stride 1, ``_wide_image``) or not, the activation
    and whether Z is written (never for the identity, whose Z is its A). The choices are
    constants of the build (``KEY``, which the serial body is built for): Numba prunes
    the branches not taken before it types the code, so a fit compiles only the paths it
    runs (see docs/backends/numba.md for the compile times). ``pooled``: the build
    that writes the 2x2 max pool (stride 2) of A instead of A (``_write_pool``), for
    the activations in ``POOLED``; its tiles hold an even number of rows."""
    _check_kind(kind, pooled)
    if (kind == IDENTITY or pooled) and keep_z:
        return forward_kernel(SH, SW, is_wide, kind, 0, pooled)  # one build, under one name
    KEY = pack(_form(is_wide, pooled), SH, SW, kind, int(keep_z))

    @kernel(parallel=True, build=(KEY,))
    def forward(address, ilp64, X, W2, b, Z, A, where, alpha, kh, kw, top, left, rows, OH, OW):
        """Z (N, F, OH, OW) = conv(X, W) + b and A = f(Z), image by image across threads,
        ``rows`` output rows per tile (wide tiles: rows of the padded width). Without
        ``KEEP_Z`` Z is not written (it may be A). Pooled, A (N, F, OH // 2, OW // 2) is
        f(Z)'s 2x2 max pool and where (int32, as A) the windows' choices; Z is not read."""
        for n in prange(X.shape[0]):
            _image_for(KEY, address, ilp64, X, W2, b, Z, A, where, alpha, kh, kw, top, left,
                       rows, OH, OW, n)

    return forward


@functools.cache
def backward_kernel(SH, SW, is_wide, kind, need_dx, pooled=False):
    """The backward kernel built for one variant (as ``forward_kernel``): the stride,
    the tile form, the activation, whether dX is computed (the model's first layer
    needs none: its build has no column-gradient GEMM and no col2im at all) and whether
    a 2x2 max pool is fused (its gradient goes straight into each tile's dz,
    ``_grad_pool``)."""
    _check_kind(kind, pooled)
    KEY = pack(_form(is_wide, pooled), SH, SW, kind, int(need_dx))

    @kernel(parallel=True, build=(KEY,))
    def backward(address, ilp64, X, W2, dA, Z, A, where, dW, db, dX, alpha, kh, kw, top, left,
                 rows, OH, OW, chunk):
        """dW (F, K), db (F,) and, with ``NEED_DX``, dX (N, C, H, W) (overwritten) from
        dA, Z, A (N, F, OH, OW), or pooled from the pooled gradient dA, output A and the
        choices where (Z unread). Chunks of ``chunk`` images run across threads; each sums
        its images' dW and db in order, then the chunks' sums are added in order."""
        N = X.shape[0]
        F, K = W2.shape
        chunks = (N + chunk - 1) // chunk
        dWs = np.empty((chunks, K, F), dW.dtype)  # each chunk's dW, transposed
        dbs = np.empty((chunks, F), db.dtype)  # (zeroed by the chunk: no parallel np.zeros)
        for c in prange(chunks):
            _chunk_for(KEY, address, ilp64, X, W2, dA, Z, A, where, dWs[c], dbs[c], dX, alpha,
                       kh, kw, top, left, rows, OH, OW, c * chunk, min(N, (c + 1) * chunk))
        _add_chunks(dWs, dbs, dW, db)

    return backward


# ---- stride 1: the "wide" tile, one contiguous copy per tile row ----
#
# With stride 1 the window row (c, i, j) of the output rows r0.. is the padded image's
# plane, flat, from (r0 + i) * Wp + j on, if the outputs are laid out Wp wide instead of
# OW (Wp = OW + kw - 1, the padded width): the extra kw - 1 columns of each output row
# are junk, dropped on write-out and given a zero gradient. So a tile row is one long
# copy instead of ``rows`` copies of OW numbers (LeNet's second conv: 10 copies of 10
# numbers per tile row, where loop overhead cost more than the copies), for a product
# Wp / OW as wide (1.4x there). Padding is applied once per image into a zeroed buffer.


@kernel(inline=True)
def _pad(x, xp, top, left):
    """xp[c, top + h, left + w] = x[c, h, w]; the rest of xp stays as it is (zeros)."""
    C, H, W = x.shape
    for c in range(C):
        for h in range(H):
            src, dst = x[c, h], xp[c, top + h, left:left + W]
            for w in range(W):
                dst[w] = src[w]


@kernel(inline=True)
def _unpad(xp, x, top, left):
    """x[c, h, w] = xp[c, top + h, left + w]: ``_pad``'s adjoint for a gradient."""
    C, H, W = x.shape
    for c in range(C):
        for h in range(H):
            src, dst = xp[c, top + h, left:left + W], x[c, h]
            for w in range(W):
                dst[w] = src[w]


@kernel(inline=True)
def fill_wide(xp, tile, kh, kw, r0, rows, OW):
    """tile[(c, i, j), t] = xp[c] flat at (r0 + i) * Wp + j + t, for t < (rows - 1) * Wp
    + OW; the last row's kw - 1 junk columns are set to zero (they would run past the
    plane, and must be finite: their zero gradient times the tile enters dW)."""
    C, Hp, Wp = xp.shape
    span = (rows - 1) * Wp + OW
    for c in range(C):
        plane = xp[c].reshape(Hp * Wp)
        for i in range(kh):
            for j in range(kw):
                dst = tile[(c * kh + i) * kw + j]
                src = plane[(r0 + i) * Wp + j:(r0 + i) * Wp + j + span]
                for t in range(span):
                    dst[t] = src[t]
                for t in range(span, rows * Wp):
                    dst[t] = 0


@kernel(inline=True)
def add_wide(dxp, tile, kh, kw, r0, rows, OW):
    """col2im for ``fill_wide``: each tile entry added back where it was read (the junk
    columns carry zeros, so they add nothing)."""
    C, Hp, Wp = dxp.shape
    span = (rows - 1) * Wp + OW
    for c in range(C):
        plane = dxp[c].reshape(Hp * Wp)
        for i in range(kh):
            for j in range(kw):
                src = tile[(c * kh + i) * kw + j]
                dst = plane[(r0 + i) * Wp + j:(r0 + i) * Wp + j + span]
                for t in range(span):
                    dst[t] += src[t]


@kernel(inline=True)
def _write_wide(kind, out, b, z, a, alpha, keep_z, r0, rows, OW):
    """z[f, r0 + y, p] = out[f, y * Wp + p] + b[f] and a = f(z), for p < OW (z, a:
    (F, OH, OW)); z is not written unless keep_z."""
    F, width = out.shape
    Wp = width // rows
    for f in range(F):
        bias = b[f]
        for y in range(rows):
            _write_row(kind, out[f, y * Wp:y * Wp + OW], bias, z[f, r0 + y], a[f, r0 + y],
                       alpha, keep_z, OW)


@kernel(inline=True)
def _grad_wide(kind, dA, Z, A, dz, db, alpha, r0, rows, OW):
    """dz[f, y * Wp + p] = dA * f'(Z) at (f, r0 + y, p) for p < OW, zero in the junk
    columns; db[f] += the row sums (dA, Z, A: (F, OH, OW))."""
    F, width = dz.shape
    Wp = width // rows
    for f in range(F):
        for y in range(rows):
            out = dz[f, y * Wp:(y + 1) * Wp]
            _grad_row(kind, dA[f, r0 + y], Z[f, r0 + y], A[f, r0 + y], out, alpha, OW)
            for p in range(OW, Wp):
                out[p] = 0
        db[f] = _total(dz[f], rows * Wp, db[f])  # the junk columns add zeros


def _wide_image(key):
    """``_forward_image`` for wide tiles (stride 1), built for ``pack(FORM, 1, 1, KIND,
    KEEP_Z)``."""
    FORM, _, _, KIND, KEEP_Z = unpack(key, 5)
    POOL = FORM >> 1

    @kernel(build=(FORM, KIND, KEEP_Z))
    def wide_image(address, ilp64, X, W2, b, Z, A, where, alpha, kh, kw, top, left, rows, OH,
                   OW, n):
        """``forward_image`` for stride 1 with wide tiles of ``rows`` output rows."""
        N, C, H, W = X.shape
        F, K = W2.shape
        Hp, Wp = OH + kh - 1, OW + kw - 1
        buffer = np.empty(K * rows * Wp, X.dtype)
        product = np.empty(F * rows * Wp, X.dtype)
        xp = X[n]
        if top != 0 or left != 0 or Hp != H or Wp != W:
            xp = np.zeros((C, Hp, Wp), X.dtype)
            _pad(X[n], xp, top, left)
        for r0 in range(0, OH, rows):
            count = min(rows, OH - r0)
            tile = buffer[:K * count * Wp].reshape((K, count * Wp))
            out = product[:F * count * Wp].reshape((F, count * Wp))
            fill_wide(xp, tile, kh, kw, r0, count, OW)
            gemm(address, ilp64, W2, tile, out, 1.0, 0.0, False, False)
            if POOL:
                _write_pool(KIND, out, b, A[n], where[n], alpha, r0, count)
            else:
                _write_wide(KIND, out, b, Z[n], A[n], alpha, KEEP_Z, r0, count, OW)

    return wide_image


def _wide_chunk(key):
    """``_backward_chunk`` for wide tiles (stride 1), built for ``pack(FORM, 1, 1, KIND,
    NEED_DX)``."""
    FORM, _, _, KIND, NEED_DX = unpack(key, 5)
    POOL = FORM >> 1

    @kernel(build=(FORM, KIND, NEED_DX))
    def wide_chunk(address, ilp64, X, W2, dA, Z, A, where, dWc, dbc, dX, alpha, kh, kw, top,
                   left, rows, OH, OW, lo, hi):
        """``backward_chunk`` for stride 1 with wide tiles: the same sums, in the same
        order."""
        N, C, H, W = X.shape
        F, K = W2.shape
        Hp, Wp = OH + kh - 1, OW + kw - 1
        padded = top != 0 or left != 0 or Hp != H or Wp != W
        _zero(dWc)
        _zero(dbc)
        buffer = np.empty(K * rows * Wp, X.dtype)
        grads = np.empty(F * rows * Wp, X.dtype)
        back = np.empty(K * rows * Wp if NEED_DX else 0, X.dtype)
        xp = np.zeros((C, Hp, Wp), X.dtype)
        dxp = np.zeros((C, Hp, Wp), X.dtype)
        for n in range(lo, hi):
            image, dimage = X[n], dX[n] if NEED_DX else dxp
            if padded:
                _pad(X[n], xp, top, left)
                image = xp
                if NEED_DX:
                    _zero(dxp)
                    dimage = dxp
            elif NEED_DX:
                _zero(dimage)
            for r0 in range(0, OH, rows):
                count = min(rows, OH - r0)
                tile = buffer[:K * count * Wp].reshape((K, count * Wp))
                dz = grads[:F * count * Wp].reshape((F, count * Wp))
                if POOL:
                    _grad_pool(KIND, dA[n], A[n], where[n], dz, dbc, alpha, r0, count)
                else:
                    _grad_wide(KIND, dA[n], Z[n], A[n], dz, dbc, alpha, r0, count, OW)
                fill_wide(image, tile, kh, kw, r0, count, OW)
                gemm(address, ilp64, tile, dz, dWc, 1.0, 1.0, False, True)
                if NEED_DX:
                    dcols = back[:K * count * Wp].reshape((K, count * Wp))
                    gemm(address, ilp64, W2, dz, dcols, 1.0, 0.0, True, False)
                    add_wide(dimage, dcols, kh, kw, r0, count, OW)
            if NEED_DX and padded:
                _unpad(dxp, dX[n], top, left)

    return wide_chunk


def _check_kind(kind, pooled):
    """Refuse an activation code the (pooled) builds do not fuse."""
    if kind not in (POOLED if pooled else FUSED):
        raise ValueError(f"conv kernels fuse the activation codes {FUSED} ({POOLED} with a "
                         f"max pool), not {kind}")


def _form(is_wide, pooled):
    """A build key's first number: 1 for the wide tiles, plus 2 with a fused max pool."""
    return int(is_wide) + 2 * int(pooled)


def _image(key):
    """The serial per-image forward for ``pack(FORM, SH, SW, KIND, KEEP_Z)``: the wide
    tiles' (``_wide_image``) where ``FORM`` says wide, else ``_forward_image``."""
    return (_wide_image if key // KEY_BASE**4 & 1 else _forward_image)(key)


def _chunk(key):
    """The serial backward of a chunk for ``pack(FORM, SH, SW, KIND, NEED_DX)``, as
    ``_image``: ``_wide_chunk`` or ``_backward_chunk``."""
    return (_wide_chunk if key // KEY_BASE**4 & 1 else _backward_chunk)(key)


_image_for, _chunk_for = by_constant(_image), by_constant(_chunk)  # f(KEY, *its arguments)
