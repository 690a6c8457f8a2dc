"""How fastnn compiles its Numba kernels: one decorator, and where compiled code is cached.

Kernels compile lazily on first use (never at import) with ``cache=True``, so a later
process loads machine code from disk instead of compiling again. Numba caches next to
the source file, else in the user-wide cache directory, and fails at import if neither
is writable (a read-only site-packages and HOME). ``cache_directory()`` checks this
first: it respects ``NUMBA_CACHE_DIR``, keeps Numba's own choice when that works, else
falls back to a per-user folder in the temp directory, else compiles without caching.

``error_model="numpy"`` lets float division by zero give inf instead of raising, so
loops with divisions vectorize; ``fastmath={"contract"}`` allows fused multiply-adds
and nothing else (no reassociation, so range reductions stay exact).
"""

import functools
import os
import tempfile

import numba
from numba import types
from numba.extending import overload
from numba.misc.appdirs import AppDirs

HERE = os.path.dirname(os.path.abspath(__file__))
NUMBA_DEFAULT = "numba default"


def writable(directory):
    """True if files can be created in ``directory`` (made if missing)."""
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
        return True
    except OSError:
        return False


def cache_directory(environ=os.environ, in_tree=None, user_wide=None, fallback=None,
                    is_writable=writable):
    """Where compiled kernels go: a path, NUMBA_DEFAULT, or None (no caching possible)."""
    if environ.get("NUMBA_CACHE_DIR"):
        path = environ["NUMBA_CACHE_DIR"]
        return path if is_writable(path) else None
    in_tree = in_tree or os.path.join(HERE, "__pycache__")
    user_wide = user_wide or AppDirs(appname="numba", appauthor=False).user_cache_dir
    if is_writable(in_tree) or is_writable(user_wide):
        return NUMBA_DEFAULT
    user = getattr(os, "getuid", lambda: "user")()
    fallback = fallback or os.path.join(tempfile.gettempdir(), f"fastnn-numba-{user}")
    return fallback if is_writable(fallback) else None


CACHE_DIR = cache_directory()
if CACHE_DIR not in (None, NUMBA_DEFAULT):
    numba.config.CACHE_DIR = CACHE_DIR  # read when each kernel below is decorated

OPTIONS = {"cache": CACHE_DIR is not None, "error_model": "numpy", "fastmath": {"contract"}}


def kernel(function=None, *, parallel=False, reassociate=False):
    """``numba.njit`` with fastnn's options; ``parallel=True`` for prange kernels,
    ``reassociate=True`` to let sums split into partial sums (reductions only)."""
    options = dict(OPTIONS, fastmath={"contract", "reassoc"}) if reassociate else OPTIONS
    decorate = numba.njit(parallel=parallel, **options)
    return decorate if function is None else decorate(function)


def mask(*numbers):
    """The bit mask of a set of small numbers (activation kinds, optimizer rules): what a
    build for those of them is keyed by (see ``by_constant``)."""
    return sum(1 << k for k in set(numbers))


def members(bits):
    """The numbers in the mask ``bits``, as a tuple (a build's kinds or rules)."""
    return tuple(k for k in range(bits.bit_length()) if bits >> k & 1)


def sole(bits):
    """The one number in the mask ``bits``, or -1 if it holds several: a build for one
    kind tests ``X == SOLE`` (a constant) and never reads the kind at run time."""
    numbers = members(bits)
    return numbers[0] if len(numbers) == 1 else -1


def by_constant(factory):
    """A function for kernels to call as ``f(KEY, args)``, meaning ``factory(KEY)(*args)``
    with ``KEY`` an int known when the caller compiles (a closure constant of the
    caller's build) and ``args`` a tuple. ``factory(KEY)`` returns a kernel built for
    that key, made once per key (``f.build``). A kernel's closure may hold only plain
    values: holding a kernel would give the caller a new cache key in every process, so
    builds reach each other through these functions. The step between is inlined at
    Numba level (a separate function measured 0.1-0.3 s of compile time per call site);
    Numba's inliner takes no ``*args``, hence the tuple."""
    build = functools.cache(factory)

    def call(key, args):
        raise NotImplementedError("only callable from Numba-compiled code")

    @overload(call, prefer_literal=True, inline="always")
    def _call(key, args):
        if not isinstance(key, types.IntegerLiteral):
            return None
        chosen = build(key.literal_value)
        return lambda key, args: chosen(*args)

    call.build = build
    call.__name__ = call.__qualname__ = f"{factory.__name__}_by_constant"
    call.__doc__ = factory.__doc__
    return call
