"""Float64 NumPy formulas, written out independently of fastnn, that the workload
checks compare results with, and the error measure used across backends."""

import numpy as np


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # an exact identity, free of overflow


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


FORWARD = {
    "relu": lambda z: np.maximum(z, 0.0),
    "leaky_relu": lambda z: np.where(z > 0, z, 0.01 * z),
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "softplus": lambda z: np.logaddexp(z, 0.0),
    "softmax": _softmax,
}

BACKWARD = {  # dZ from (dA, z, a = f(z))
    "relu": lambda dA, z, a: dA * (z > 0),
    "leaky_relu": lambda dA, z, a: dA * np.where(z > 0, 1.0, 0.01),
    "sigmoid": lambda dA, z, a: dA * a * (1.0 - a),
    "tanh": lambda dA, z, a: dA * (1.0 - a * a),
    "softplus": lambda dA, z, a: dA * _sigmoid(z),
    "softmax": lambda dA, z, a: a * (dA - (dA * a).sum(axis=1, keepdims=True)),
}


def relative_error(result, reference):
    """max |x - ref| / max |ref| over paired lists of arrays (the infinity-norm relative
    error); 0.0 when they agree exactly."""
    worst = 0.0
    for x, ref in zip(result, reference, strict=True):
        x, ref = np.asarray(x, dtype=np.float64), np.asarray(ref, dtype=np.float64)
        if x.shape != ref.shape:
            raise ValueError(f"result of shape {x.shape} compared with reference {ref.shape}")
        scale = max(float(np.max(np.abs(ref), initial=0.0)), np.finfo(np.float64).tiny)
        worst = max(worst, float(np.max(np.abs(x - ref), initial=0.0)) / scale)
    return worst


def assert_close(result, expected, dtype, what):
    """Each result array within the dtype's tolerance of the float64 formula."""
    tol = 2e-5 if dtype == "float32" else 1e-11
    error = relative_error(result, expected)
    assert error <= tol, f"{what}: relative error {error:.2e} exceeds {tol:.0e}"
