"""Choosing the backend: by ``FASTNN_BACKEND`` at import, or in code.

``get_backend()`` returns the current one; ``set_backend(name)`` switches;
``use_backend(name)`` switches for a ``with`` block. New models are built on the
current backend; ``model.to(name)`` moves an existing one.
"""

import contextlib
import importlib
import os

from fastnn.backends.base import Backend
from fastnn.errors import BackendUnavailable

ENV_VAR = "FASTNN_BACKEND"
DEFAULT = "numpy"
MODULES = {
    "numpy": "fastnn.backends.numpy_backend",
    "numba": "fastnn.backends.numba_backend",
    "cupy": "fastnn.backends.cupy_backend",
}
NAMES = tuple(MODULES)

_instances = {}
_current = None


def canonical_name(value, source="backend"):
    """Normalize a backend name (case, whitespace; empty means the default)."""
    if not isinstance(value, str):
        raise TypeError(f"{source} must be a backend name string; got {type(value).__name__}")
    name = value.strip().lower() or DEFAULT
    if name not in MODULES:
        raise ValueError(
            f"{source}={value!r} is not a fastnn backend; valid names: {', '.join(NAMES)}"
        )
    return name


def load(name):
    """The backend object for ``name`` or a Backend instance; raises BackendUnavailable."""
    if isinstance(name, Backend):
        return name
    name = canonical_name(name)
    if name not in _instances:
        _instances[name] = importlib.import_module(MODULES[name]).create()
    return _instances[name]


def get_backend():
    """The current backend (chosen by FASTNN_BACKEND unless set in code)."""
    return _current


def set_backend(name):
    """Make ``name`` (or a Backend instance) the current backend and return it."""
    global _current
    _current = load(name)
    return _current


@contextlib.contextmanager
def use_backend(name):
    """Run a ``with`` block on another backend, then restore the previous one."""
    previous = _current
    backend = set_backend(name)
    try:
        yield backend
    finally:
        set_backend(previous)


def availability():
    """``{name: None or the reason it cannot run here}`` for every known backend."""
    report = {}
    for name in NAMES:
        try:
            load(name)
            report[name] = None
        except BackendUnavailable as error:
            report[name] = str(error)
    return report


def select_from_environment():
    """Set the current backend from FASTNN_BACKEND (called when fastnn is imported)."""
    return set_backend(canonical_name(os.environ.get(ENV_VAR, ""), source=ENV_VAR))
