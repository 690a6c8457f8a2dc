"""Activation functions: the registry of the built-in ones, one spec per file.

Each module of this package except ``base`` defines one activation, a subclass of
``Activation`` (see ``base`` for what a spec holds). ``SPECS`` lists them in the order
of their module names, and everything else is derived from it: ``TABLE`` and
``ALIASES`` for lookup by name, the integer codes the kernels know them by
(``kernels/activation_codes.py``), the generated Numba and CUDA kernels, the gradient
checks, the parity tests, the benchmarks and the docs' list. Adding a file here adds
an activation everywhere.
"""

import importlib
import pkgutil
import zlib
from pathlib import Path

from fastnn.names import builtin, lookup, normalize

from .base import Activation, stable_sigmoid

_MODULES = [importlib.import_module(f"{__name__}.{info.name}")
            for info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name)
            if info.name != "base"]
SPECS = tuple(cls for module in _MODULES for cls in vars(module).values()
              if isinstance(cls, type) and issubclass(cls, Activation)
              and cls.__module__ == module.__name__)
TABLE = {cls.name: cls for cls in SPECS}
ALIASES = {normalize(alias): cls.name for cls in SPECS for alias in cls.aliases}
# the spec files' contents: the Numba kernels' names carry it, so that a kernel cached
# on disk before a spec changed is never loaded (Numba checks only the kernel's own file)
FINGERPRINT = zlib.crc32(b"".join(Path(m.__file__).read_bytes() for m in _MODULES))
globals().update({cls.__name__: cls for cls in SPECS})  # fastnn.activations.ReLU, ...

__all__ = ["Activation", "SPECS", "TABLE", "ALIASES", "get", "builtin_name",
           "stable_sigmoid", *(cls.__name__ for cls in SPECS)]


def builtin_name(activation):
    """The name of a built-in activation used as is (its class exactly, not a subclass),
    else None: only these may be replaced by a backend's fused kernels, so a user's
    subclass that keeps a built-in's name still runs its own forward and derivative."""
    return builtin(activation, TABLE)


def get(activation="identity", **params):
    """An Activation from a name ('relu', 'leaky_relu', ...), a config dict, or an instance."""
    if isinstance(activation, Activation):
        return activation
    if isinstance(activation, dict):
        params = {k: v for k, v in activation.items() if k != "name"}
        activation = activation.get("name", "identity")
    if isinstance(activation, str):
        activation = ALIASES.get(normalize(activation), activation)
    cls = lookup("activation", activation, TABLE)
    try:
        return cls(**params)
    except TypeError:
        raise TypeError(f"activation {cls.name!r} takes no parameters {sorted(params)}") from None


def trainable():
    """The names of the built-in activations a hidden layer can train through."""
    return [cls.name for cls in SPECS if cls.differentiable]
