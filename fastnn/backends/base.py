"""The backend object: an array namespace ``xp``, host<->device transfer, a seeded
RNG, and the table of hot-path ops.

The generic ``Backend`` is complete on its own: given any array-API namespace it
runs every op from ``fastnn.ops``. Accelerating backends subclass it and replace
only the ops they speed up.
"""

import numpy as np

from fastnn.ops import Ops


class HostRNG:
    """Seeded random numbers drawn on the host with NumPy's PCG64 and placed on the
    backend's device, so the same seed gives the same numbers on every backend."""

    def __init__(self, backend, seed):
        self.backend = backend
        self.generator = np.random.default_rng(seed)

    def uniform(self, shape, dtype):
        """Uniform [0, 1) samples of ``shape`` as a device array of ``dtype``."""
        return self.backend.asarray(self.generator.random(shape), dtype=dtype)

    def permutation(self, n):
        """A random permutation of ``range(n)`` as a device index array."""
        return self.backend.asarray(self.generator.permutation(n))


class Backend:
    """One array backend. Model code uses only ``xp``, ``ops`` and the methods here."""

    name = "generic"
    rng_class = HostRNG

    def __init__(self, xp, device=None, ops=None):
        self.xp = xp
        self.device = device
        self.ops = ops if ops is not None else Ops(xp)

    def __repr__(self):
        return f"<fastnn backend {self.name!r}>"

    def __deepcopy__(self, memo):
        return self  # a backend is a shared service, never copied with a model

    def dtype(self, name):
        """The namespace's dtype for 'float32' or 'float64'."""
        if name not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64'; got {name!r}")
        return getattr(self.xp, name)

    def is_array(self, x):
        """True if ``x`` is an array that already lives on this backend."""
        raise NotImplementedError

    def asarray(self, x, dtype=None):
        """Host data (or an array of this backend) as an array of this backend."""
        if self.is_array(x):
            return x if dtype is None or x.dtype == dtype else self.xp.astype(x, dtype)
        self.reject_foreign(x)
        return self._from_host(np.asarray(x), dtype)

    def reject_foreign(self, x):
        """Raise a clear TypeError for an array of another backend (never convert it)."""
        if hasattr(x, "__array_namespace__") and not isinstance(x, np.ndarray):
            raise TypeError(
                f"got a {type(x).__module__}.{type(x).__name__} array, but this model runs on "
                f"the {self.name!r} backend; pass NumPy data, or move the model with "
                f"model.to(...) to the backend that owns the array"
            )

    def _from_host(self, host, dtype):
        return self.xp.asarray(host, dtype=dtype, device=self.device)

    def to_numpy(self, x):
        """A device array (or scalar) copied to a NumPy array on the host."""
        return np.asarray(x)

    def rng(self, seed=None):
        """A seeded random generator that makes arrays on this backend."""
        return self.rng_class(self, seed)

    def warmup(self, dtypes=("float32",)):
        """Compile this backend's kernels ahead of use; returns seconds (none to compile)."""
        return 0.0

    def copy(self, x):
        """A device-side copy of ``x``."""
        return self.xp.asarray(x, copy=True)
