"""Convolution and pooling ops and layers against float64 references written out here
as direct loops, and against PyTorch with the same weights, on every backend."""

import numpy as np
import pytest
from conftest import dev, host

from fastnn import activations, ops
from fastnn.conv import Conv2D
from fastnn.kernels.cuda import conv as cuda_conv
from fastnn.layers import Flatten
from fastnn.pooling import AvgPool2D, GlobalAvgPool2D, MaxPool2D

RNG = np.random.default_rng(25)
RELU, TANH, IDENTITY = (activations.get(n) for n in ("relu", "tanh", "identity"))

# (C, H, W, F (out channels), kernel, stride, padding) with padding ((top, bottom), (left, right))
CONVS = {
    "3x3": (2, 6, 5, 3, (3, 3), (1, 1), ((0, 0), (0, 0))),
    "pad 1": (2, 5, 5, 4, (3, 3), (1, 1), ((1, 1), (1, 1))),
    "stride 2": (3, 7, 9, 2, (3, 3), (2, 2), ((0, 0), (0, 0))),
    "stride 2 pad 1": (1, 6, 6, 2, (3, 3), (2, 2), ((1, 0), (1, 0))),
    "uneven": (2, 6, 7, 3, (2, 3), (2, 1), ((0, 1), (2, 0))),
    "1x1": (4, 3, 3, 2, (1, 1), (1, 1), ((0, 0), (0, 0))),
    "whole image": (2, 4, 4, 3, (4, 4), (1, 1), ((0, 0), (0, 0))),
}


# ---- float64 references, as direct loops ----

def padded(X, padding):
    (top, bottom), (left, right) = padding
    N, C, H, W = X.shape
    out = np.zeros((N, C, H + top + bottom, W + left + right))
    out[:, :, top : top + H, left : left + W] = X
    return out


def windows(shape, size, stride):
    """(y, x, rows, cols) for every output position of a window over ``shape``'s H, W."""
    H, W = shape[-2:]
    OH, OW = (H - size[0]) // stride[0] + 1, (W - size[1]) // stride[1] + 1
    for y in range(OH):
        for x in range(OW):
            r, c = y * stride[0], x * stride[1]
            yield y, x, slice(r, r + size[0]), slice(c, c + size[1])


def reference_conv(X, W, b, stride, padding):
    Xp = padded(X, padding)
    N, F = X.shape[0], W.shape[0]
    spots = list(windows(Xp.shape, W.shape[2:], stride))
    Z = np.zeros((N, F, spots[-1][0] + 1, spots[-1][1] + 1))
    for n in range(N):
        for o in range(F):
            for y, x, rows, cols in spots:
                Z[n, o, y, x] = np.sum(Xp[n, :, rows, cols] * W[o]) + b[o]
    return Z


def reference_conv_grads(X, W, dZ, stride, padding):
    """dW, db, dX of sum(Z * dZ) for Z = conv(X, W) + b."""
    Xp = padded(X, padding)
    dXp, dW = np.zeros_like(Xp), np.zeros_like(W)
    for n in range(X.shape[0]):
        for o in range(W.shape[0]):
            for y, x, rows, cols in windows(Xp.shape, W.shape[2:], stride):
                dW[o] += dZ[n, o, y, x] * Xp[n, :, rows, cols]
                dXp[n, :, rows, cols] += dZ[n, o, y, x] * W[o]
    (top, _), (left, _) = padding
    H, Wd = X.shape[2:]
    return dW, dZ.sum(axis=(0, 2, 3)), dXp[:, :, top : top + H, left : left + Wd]


def first_max(window):
    """Index of the first maximum of a flat window, NaN counting as the largest."""
    pick = 0
    for k in range(1, window.size):
        if np.isnan(window[pick]):
            break
        if window[k] > window[pick] or np.isnan(window[k]):
            pick = k
    return pick


def reference_pool(X, size, stride, kind):
    """(out, dX of sum(out * G) as a function of G) for max (the input chosen: the first
    maximum, NaN counting as the largest) or mean pooling."""
    N, C = X.shape[:2]
    spots = list(windows(X.shape, size, stride))
    out = np.zeros((N, C, spots[-1][0] + 1, spots[-1][1] + 1))
    chosen = {}
    for n in range(N):
        for c in range(C):
            for y, x, rows, cols in spots:
                window = X[n, c, rows, cols].ravel()
                if kind == "mean":
                    out[n, c, y, x] = window.mean()
                    continue
                pick = first_max(window)
                out[n, c, y, x] = window[pick]
                chosen[n, c, y, x] = (rows.start + pick // size[1], cols.start + pick % size[1])

    def grad(G):
        dX = np.zeros_like(X)
        for n in range(N):
            for c in range(C):
                for y, x, rows, cols in spots:
                    if kind == "mean":
                        dX[n, c, rows, cols] += G[n, c, y, x] / (size[0] * size[1])
                    else:
                        dX[(n, c, *chosen[n, c, y, x])] += G[n, c, y, x]
        return dX

    return out, grad


def contiguous(array):
    """C-contiguous, as the ops promise (arrays without ``flags`` are not checked)."""
    flags = getattr(array, "flags", None)
    return flags is None or flags.c_contiguous


def conv_case(name, N=3):
    C, H, W, F, kernel, stride, padding = CONVS[name]
    X = RNG.normal(size=(N, C, H, W))
    Wt = RNG.normal(size=(F, C, *kernel))
    b = RNG.normal(size=F)
    return X, Wt, b, stride, padding


# ---- the ops, on every backend ----

@pytest.mark.parametrize("name", CONVS)
@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-11), ("float32", 2e-5)])
def test_conv_ops_match_the_reference(backend, name, dtype, rtol):
    X, Wt, b, stride, padding = conv_case(name)
    Z_ref = reference_conv(X, Wt, b, stride, padding)
    d = [dev(backend, a, dtype) for a in (X, Wt, b)]
    Z, A, work = backend.ops.conv2d_forward(*d, TANH, stride, padding, True)
    atol = rtol * 10
    np.testing.assert_allclose(host(backend, Z), Z_ref, rtol=rtol, atol=atol)
    np.testing.assert_allclose(host(backend, A), np.tanh(Z_ref), rtol=rtol, atol=atol)
    assert Z.dtype == d[0].dtype and A.shape == Z_ref.shape and contiguous(Z) and contiguous(A)
    dA = RNG.normal(size=Z_ref.shape)
    dZ = dA * (1 - np.tanh(Z_ref) ** 2)
    dW_ref, db_ref, dX_ref = reference_conv_grads(X, Wt, dZ, stride, padding)
    dW, db, dX = backend.ops.conv2d_backward(d[0], d[1], dev(backend, dA, dtype), Z, A, work,
                                             TANH, stride, padding, True)
    for got, want in ((dW, dW_ref), (db, db_ref), (dX, dX_ref)):
        assert got.shape == want.shape and got.dtype == d[0].dtype and contiguous(got)
        np.testing.assert_allclose(host(backend, got), want, rtol=rtol, atol=atol * 10)
    dW2, db2, none = backend.ops.conv2d_backward(d[0], d[1], dev(backend, dA, dtype), Z, A,
                                                 work, TANH, stride, padding, False)
    assert none is None
    np.testing.assert_array_equal(host(backend, dW2), host(backend, dW))


def test_conv_backward_rebuilds_what_a_forward_did_not_keep(backend):
    X, Wt, b, stride, padding = conv_case("stride 2 pad 1")
    d = [dev(backend, a) for a in (X, Wt, b)]
    Z, A, work = backend.ops.conv2d_forward(*d, RELU, stride, padding, False)
    dA = dev(backend, RNG.normal(size=Z.shape))
    kept = backend.ops.conv2d_backward(d[0], d[1], dA, Z, A, work, RELU, stride, padding, True)
    # the generic op's promise, and the CUDA op's (a skip would fail the GPU check)
    takes_none = (ops.GENERIC["conv2d_backward"], cuda_conv.conv2d_backward)
    if getattr(backend.ops.conv2d_backward, "func", None) not in takes_none:
        pytest.skip("work=None is the generic op's promise only")
    again = backend.ops.conv2d_backward(d[0], d[1], dA, Z, A, None, RELU, stride, padding, True)
    for a, b_ in zip(kept, again):
        np.testing.assert_allclose(host(backend, a), host(backend, b_), rtol=1e-13)


POOLS = {  # (H, W, size, stride)
    "2x2": (6, 6, (2, 2), (2, 2)),
    "floor": (7, 5, (2, 2), (2, 2)),
    "overlapping 3/2": (7, 7, (3, 3), (2, 2)),
    "stride 1": (4, 5, (2, 3), (1, 1)),
    "gaps": (8, 8, (2, 2), (3, 3)),
    "whole image": (3, 4, (3, 4), (3, 4)),
}


@pytest.mark.parametrize("kind", ["max", "mean"])
@pytest.mark.parametrize("name", POOLS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_pool_ops_match_the_reference(backend, kind, name, dtype):
    H, W, size, stride = POOLS[name]
    X = RNG.normal(size=(2, 3, H, W))
    out_ref, grad_ref = reference_pool(X, size, stride, kind)
    G = RNG.normal(size=out_ref.shape)
    x, g = dev(backend, X, dtype), dev(backend, G, dtype)
    if kind == "max":
        out, work = backend.ops.maxpool2d_forward(x, size, stride)
        dX = backend.ops.maxpool2d_backward(g, x, out, work, size, stride)
    else:
        out = backend.ops.avgpool2d_forward(x, size, stride)
        dX = backend.ops.avgpool2d_backward(g, tuple(x.shape), size, stride)
    rtol = 1e-12 if dtype == "float64" else 1e-5
    assert out.dtype == x.dtype and dX.dtype == x.dtype and dX.shape == x.shape
    assert contiguous(out) and contiguous(dX)
    np.testing.assert_allclose(host(backend, out), out_ref, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(host(backend, dX), grad_ref(G), rtol=rtol, atol=rtol)


def test_max_pool_ties_go_to_the_first_maximum_and_nan_wins(backend):
    """PyTorch's rule: among equal maxima the first (row-major) gets the gradient. A
    window holding NaN gives NaN, and its gradient goes to the first NaN (PyTorch's CPU
    kernel: the last)."""
    nan = np.nan
    X = np.array([[[[1.0, 3.0, nan, 2.0],
                    [3.0, 0.0, 5.0, nan],
                    [2.0, 2.0, -1.0, -1.0],
                    [2.0, 2.0, -1.0, -1.0]]]])
    x = dev(backend, X)
    out, work = backend.ops.maxpool2d_forward(x, (2, 2), (2, 2))
    got = host(backend, out)
    np.testing.assert_array_equal(got, [[[[3.0, nan], [2.0, -1.0]]]])
    dX = host(backend, backend.ops.maxpool2d_backward(dev(backend, np.ones((1, 1, 2, 2))), x,
                                                      out, work, (2, 2), (2, 2)))
    np.testing.assert_array_equal(dX, [[[[0, 1, 1, 0], [0, 0, 0, 0],
                                         [1, 0, 1, 0], [0, 0, 0, 0]]]])


def test_a_nan_spreads_only_to_the_outputs_whose_windows_hold_it(backend):
    X, Wt, b, stride, padding = conv_case("pad 1", N=2)
    X[1, 0, 2, 3] = np.nan
    Z = host(backend, backend.ops.conv2d_forward(
        *[dev(backend, a) for a in (X, Wt, b)], IDENTITY, stride, padding, True)[0])
    bad = np.isnan(Z)
    assert not bad[0].any()  # the other image is untouched
    expected = np.zeros((5, 5), bool)
    expected[1:4, 2:5] = True  # every 3x3 window (padding 1) around row 2, column 3
    for o in range(Z.shape[1]):
        np.testing.assert_array_equal(bad[1, o], expected)


def test_conv_and_max_pool_overrides_come_in_pairs():
    for name in ("conv2d_forward", "maxpool2d_backward", "conv2d_maxpool_forward"):
        with pytest.raises(ValueError, match="override both or neither"):
            ops.Ops(np, **{name: lambda *args: None})
    assert ops.Ops(np, avgpool2d_forward=lambda *args: None).overridden == (
        "avgpool2d_forward",)


# ---- the layers ----

def built(layer, backend, dtype="float64", seed=0):
    layer.build(backend, backend.dtype(dtype), np.random.default_rng(seed))
    return layer


def test_conv2d_layer_forward_and_backward(backend):
    X, _, _, _, _ = conv_case("stride 2 pad 1")
    layer = built(Conv2D(1, 2, 3, stride=2, padding=((1, 0), (1, 0)), activation="relu"),
                  backend)
    assert layer.W.value.shape == (2, 1, 3, 3) and layer.b.value.shape == (2,)
    layer.b.value[...] = dev(backend, [0.5, -0.5])
    Wt, b = host(backend, layer.W.value), host(backend, layer.b.value)
    A = host(backend, layer.forward(dev(backend, X), training=True))
    Z_ref = reference_conv(X, Wt, b, (2, 2), ((1, 0), (1, 0)))
    np.testing.assert_allclose(A, np.maximum(Z_ref, 0), rtol=1e-12, atol=1e-12)
    dA = RNG.normal(size=A.shape)
    dX = host(backend, layer.backward(dev(backend, dA)))
    dW, db, dX_ref = reference_conv_grads(X, Wt, dA * (Z_ref > 0), (2, 2), ((1, 0), (1, 0)))
    np.testing.assert_allclose(host(backend, layer.W.grad), dW, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(host(backend, layer.b.grad), db, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dX, dX_ref, rtol=1e-12, atol=1e-12)


def test_flatten_and_global_average_pooling(backend):
    X = RNG.normal(size=(2, 3, 4, 5))
    x = dev(backend, X)
    flat = built(Flatten(), backend)
    np.testing.assert_array_equal(host(backend, flat.forward(x)), X.reshape(2, 60))
    dA = RNG.normal(size=(2, 60))
    np.testing.assert_array_equal(host(backend, flat.backward(dev(backend, dA))),
                                  dA.reshape(X.shape))
    pool = built(GlobalAvgPool2D(), backend)
    np.testing.assert_allclose(host(backend, pool.forward(x)), X.mean(axis=(2, 3)), rtol=1e-13)
    dA = RNG.normal(size=(2, 3))
    np.testing.assert_allclose(host(backend, pool.backward(dev(backend, dA))),
                               np.broadcast_to(dA[:, :, None, None] / 20, X.shape), rtol=1e-13)


def test_layer_geometry_and_reprs():
    conv = Conv2D(3, 8, (3, 5), padding="same", activation="relu")
    assert conv.padding == ((1, 1), (2, 2)) and conv.kernel_size == (3, 5)
    assert repr(conv) == "Conv2D(3, 8, (3, 5), padding='same', activation='relu')"
    assert Conv2D(1, 1, 4, padding="same").padding == ((1, 2), (1, 2))  # as PyTorch pads
    assert repr(Conv2D(1, 2, 3, stride=2, padding=1)) == (
        "Conv2D(1, 2, 3, stride=2, padding=1, activation='identity')")
    assert Conv2D(1, 2, 3, padding="valid").padding == ((0, 0), (0, 0))
    assert MaxPool2D(2).stride == (2, 2) and AvgPool2D(3, stride=1).stride == (1, 1)
    assert repr(MaxPool2D(3, stride=2)) == "MaxPool2D(3, stride=2)"
    assert MaxPool2D(2).output_shape((4, 7, 9)) == (4, 3, 4)  # floor mode, as PyTorch
    assert Conv2D(4, 6, 3, stride=2, padding=1).output_shape((4, 7, 9)) == (6, 4, 5)


@pytest.mark.parametrize("call, message", [
    (lambda: Conv2D(1, 2, 3, stride=2, padding="same"), "padding='same' needs stride 1"),
    (lambda: Conv2D(1, 2, 0), "kernel_size must be a positive integer"),
    (lambda: Conv2D(1, 2, (3, 3, 3)), r"kernel_size must be an int or a pair"),
    (lambda: Conv2D(1, 2, 3, padding=-1), "padding must be a non-negative integer"),
    (lambda: Conv2D(1, 2, 3, padding="full"), "padding must be a number of zeros, 'same'"),
    (lambda: Conv2D(0, 2, 3), "in_channels must be a positive integer"),
    (lambda: MaxPool2D(2, stride=0), "stride must be a positive integer"),
    (lambda: AvgPool2D((2, 2, 2)), "size must be an int or a pair"),
    (lambda: MaxPool2D(kernel_size=2), r"^MaxPool2D calls the window's size 'size', not "
                                       r"'kernel_size': write MaxPool2D\(2\)$"),
    (lambda: AvgPool2D(kernel_size=(3, 2), stride=1), r"write AvgPool2D\(\(3, 2\), stride=1\)$"),
    (lambda: MaxPool2D(2, padding=1, ceil_mode=True), r"^MaxPool2D takes only size \(PyTorch's "
                                                      r"kernel_size\) and stride; got padding, "
                                                      r"ceil_mode \(fastnn pools without"),
    (lambda: MaxPool2D(), r"^MaxPool2D needs the window's size, e.g. MaxPool2D\(2\)$"),
])
def test_bad_layer_arguments(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


# ---- against PyTorch, with the same weights ----

def test_conv_and_pools_match_pytorch(backend):
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    for name in ("pad 1", "stride 2", "uneven"):
        X, Wt, b, stride, padding = conv_case(name)
        (top, bottom), (left, right) = padding
        x = torch.tensor(X, requires_grad=True)
        w = torch.tensor(Wt, requires_grad=True)
        bias = torch.tensor(b, requires_grad=True)
        z = functional.conv2d(functional.pad(x, (left, right, top, bottom)), w, bias, stride=stride)
        a = torch.relu(z)
        dA = RNG.normal(size=tuple(z.shape))
        a.backward(torch.tensor(dA))
        d = [dev(backend, v) for v in (X, Wt, b)]
        Z, A, work = backend.ops.conv2d_forward(*d, RELU, stride, padding, False)
        np.testing.assert_allclose(host(backend, A), a.detach().numpy(), rtol=1e-12,
                                   atol=1e-12)
        grads = backend.ops.conv2d_backward(d[0], d[1], dev(backend, dA), Z, A, work, RELU,
                                            stride, padding, True)
        for got, want in zip(grads, (w.grad, bias.grad, x.grad)):
            np.testing.assert_allclose(host(backend, got), want.numpy(), rtol=1e-12, atol=1e-12)
    X = RNG.normal(size=(2, 3, 7, 7)).round(1)  # rounded: some windows hold equal maxima
    for size, stride in (((2, 2), (2, 2)), ((3, 3), (2, 2)), ((2, 3), (1, 2))):
        x = torch.tensor(X, requires_grad=True)
        out = functional.max_pool2d(x, size, stride)
        G = RNG.normal(size=tuple(out.shape))
        out.backward(torch.tensor(G))
        mine, work = backend.ops.maxpool2d_forward(dev(backend, X), size, stride)
        np.testing.assert_array_equal(host(backend, mine), out.detach().numpy())
        dX = backend.ops.maxpool2d_backward(dev(backend, G), dev(backend, X), mine, work, size,
                                            stride)
        np.testing.assert_allclose(host(backend, dX), x.grad.numpy(), rtol=1e-14)
        x = torch.tensor(X, requires_grad=True)
        out = functional.avg_pool2d(x, size, stride)
        out.backward(torch.tensor(G))
        mine = backend.ops.avgpool2d_forward(dev(backend, X), size, stride)
        np.testing.assert_allclose(host(backend, mine), out.detach().numpy(), rtol=1e-13,
                                   atol=1e-15)
        dX = backend.ops.avgpool2d_backward(dev(backend, G), X.shape, size, stride)
        np.testing.assert_allclose(host(backend, dX), x.grad.numpy(), rtol=1e-13, atol=1e-15)
