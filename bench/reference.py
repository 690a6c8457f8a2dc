"""Float64 NumPy formulas that the workload checks compare results with (each
activation's textbook formula, from its spec, written apart from the code it checks),
and the error measure used across backends."""

import numpy as np

from fastnn import activations


# each activation's textbook float64 formulas, from its spec (``reference`` and
# ``reference_backward``, written apart from the forward and derivative fastnn runs)
def _backward(act):
    return lambda dA, z, a: act.reference_backward(dA, z)


FORWARD = {cls.name: cls().reference for cls in activations.SPECS}
BACKWARD = {cls.name: _backward(cls()) for cls in activations.SPECS  # dZ from (dA, z, f(z))
            if cls.differentiable}


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
