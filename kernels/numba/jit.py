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
``no_cfunc_wrapper=True``: Numba makes a C-callable wrapper for every compile, used only
where a kernel is passed as a first-class function, which fastnn never does; without it
each compile lowers, optimizes and emits less code (the moons epoch kernel's wrapper was
660 of its 11,663 lines of IR; 3-8% of the planar and moons kernels' cold compile).
"""

import functools
import glob
import os
import tempfile
import zlib
from pathlib import Path

import numba
from llvmlite import binding as llvm
from numba import types
from numba.core import cgutils, compiler
from numba.core.compiler_lock import global_compiler_lock
from numba.extending import intrinsic

from fastnn.activations import FINGERPRINT as SPECS

try:  # Numba internals with public fallbacks (see cache_directory and flat)
    from numba.misc.appdirs import AppDirs
except ImportError:
    AppDirs = None
try:
    from numba.core.imputils import impl_ret_borrowed
    from numba.np.arrayobj import make_array, populate_array
except ImportError:
    make_array = None

HERE = os.path.dirname(os.path.abspath(__file__))


def sources_key(specs=SPECS, folder=HERE):
    """A checksum of what kernels are compiled from: the activation specs (``specs``, their
    fingerprint) and every Python file of the kernel layer (this folder and the one above),
    which kernels inline from each other."""
    paths = sorted(glob.glob(os.path.join(folder, "*.py"))
                   + glob.glob(os.path.join(os.path.dirname(folder), "*.py")))
    data = b"".join(Path(path).read_bytes() for path in paths)
    return zlib.crc32(data, specs)


SOURCES_KEY = sources_key()
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
    if user_wide is None:
        user_wide = (AppDirs(appname="numba", appauthor=False).user_cache_dir if AppDirs
                     else os.path.join(os.path.expanduser("~"), ".cache", "numba"))
    if is_writable(in_tree) or is_writable(user_wide):
        return NUMBA_DEFAULT
    user = getattr(os, "getuid", lambda: "user")()
    fallback = fallback or os.path.join(tempfile.gettempdir(), f"fastnn-numba-{user}")
    return fallback if is_writable(fallback) else None


CACHE_DIR = cache_directory()
if CACHE_DIR not in (None, NUMBA_DEFAULT):
    numba.config.CACHE_DIR = CACHE_DIR  # read when each kernel below is decorated

OPTIONS = {"cache": CACHE_DIR is not None, "error_model": "numpy", "fastmath": {"contract"},
           "no_cfunc_wrapper": True}


def kernel(function=None, *, parallel=False, reassociate=False, inline=False, build=None):
    """``numba.njit`` with fastnn's options; ``parallel=True`` for prange kernels,
    ``reassociate=True`` to let sums split into partial sums (reductions only).

    ``inline=True`` for helpers called from other kernels: Numba pastes their code
    into each caller before typing it, instead of compiling them as functions of their
    own (each one cost 0.1-0.3 s cold, and its code was optimized again in every
    caller). They take the caller's options, so reassociating helpers stay functions.
    Called from Python they compile as usual.

    ``build`` (a tuple of ints) names a kernel made by a factory for that key: every
    build of a factory shares its Python name, and compiled code names functions by
    that and a per-process counter, so a build loaded from the cache and another one
    compiled in this process could meet under one symbol, and one of them would run
    the other's code (seen: tanh's blocks ran softplus's loop). The key in the name
    keeps builds apart.

    Every name also carries ``SOURCES_KEY``, a checksum of the activation specs and of
    the kernel layer's files: kernels inline the specs' scalar functions (written in
    ``fastnn/activations/``) and helpers from other kernel files (``math.py``...), and
    Numba's cache checks only the kernel's own file, so any changed source gives every
    kernel a new name (a new cache entry) instead of loading code compiled from the old
    one (seen: dense builds cached before a change to ``math.py`` kept its old exp)."""
    options = dict(OPTIONS, fastmath={"contract", "reassoc"}) if reassociate else OPTIONS
    if inline:
        options = dict(options, inline="always")
    njit = numba.njit(parallel=parallel, **options)

    def decorate(function):
        function.__qualname__ += f"@{SOURCES_KEY:08x}"
        if build is not None:
            function.__qualname__ += "[" + ",".join(map(str, build)) + "]"
        return njit(function)

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


subroutines_compiled = set()  # kernels this process compiled as subroutines (diagnostics)
_subroutines = {}  # (code, signature, closure) -> (compile result, its _Linkable code)
# what a code library must have for ``_Linkable`` (Numba internals): without them,
# subroutines are compiled and linked by Numba's own ``compile_subroutine``
LINKABLE_NEEDS = ("_final_module", "_linking_libraries")


def call_subroutine(context, builder, kernel, signature, values, value_types):
    """Lower a call of ``kernel`` (a dispatcher) on ``values`` of ``value_types``, compiled
    for ``signature`` as a subroutine of the caller: the kernel's Python function is
    compiled once per signature and closure (with the kernel's own options) and its code
    linked into the caller's (``_Linkable``). Unlike a call of the dispatcher, this makes
    no Python or C wrapper, no dispatcher entry and no cache file for it: the caller's
    cache holds the subroutine's code (start-up figures in docs/backends/numba.md)."""
    function = kernel.py_func
    key = (function.__code__, signature,
           tuple(cell.cell_contents for cell in function.__closure__ or ()))
    if key not in _subroutines:
        flags = compiler.Flags()
        kernel.targetdescr.options.parse_as_flags(flags, kernel.targetoptions)
        flags.no_compile = flags.no_cpython_wrapper = flags.no_cfunc_wrapper = True
        with global_compiler_lock:
            library = context.codegen().create_library(function.__name__)
            if all(hasattr(library, name) for name in LINKABLE_NEEDS):
                compiled = compiler.compile_internal(context.typing_context, context, library,
                                                     function, signature.args,
                                                     signature.return_type, flags, locals={})
                _subroutines[key] = compiled, _Linkable(library)
            else:  # Numba's own way, finalizing the subroutine's code first (slower)
                _subroutines[key] = flags, None
        subroutines_compiled.add(kernel)
    compiled, code = _subroutines[key]
    if code is None:
        compiled = context.compile_subroutine(builder, function, signature, flags=compiled)
    else:
        code.link_into(context.active_code_library)
    values = [context.cast(builder, v, t, a)
              for v, t, a in zip(values, value_types, signature.args)]
    return context.call_internal(builder, compiled.fndesc, signature, values)


class _Linkable:
    """A subroutine's code library, linked into its callers' without being finalized.

    Numba's own ``compile_subroutine`` finalizes a subroutine's library before linking
    it: module-level optimization and machine code for code that is only ever inlined
    into its callers, whose own finalization optimizes it all again (0.7 s of the MLP's
    cold ``fit``). This object stands in for the library in the caller's list of
    libraries to link, with the two members the caller's ``finalize`` reads: a copy of
    the function-optimized module with its functions made ``linkonce_odr``, as Numba
    makes them for linking (one subroutine, many callers; dropped where it was inlined
    everywhere), and the library's ``_reload_init``."""

    def __init__(self, library):
        module = library._final_module.clone()
        for function in module.functions:
            if not function.is_declaration and function.linkage == llvm.Linkage.external:
                function.linkage = "linkonce_odr"
        self.module, self.links = module, library._linking_libraries
        if hasattr(library, "_reload_init"):  # Numba 0.62+: callers' finalize reads it
            self._reload_init = library._reload_init

    def link_into(self, target):
        """Have the code library ``target`` link this code, then the libraries this code
        links, in that order: a linked module's ``linkonce_odr`` functions are kept only
        if code linked before them calls them."""
        target.add_linking_library(self)
        for library in self.links:
            target.add_linking_library(library)

    def _ensure_finalized(self):
        """Nothing to do: the caller's finalization optimizes this code."""

    def _get_module_for_linking(self):
        return self.module


def _void_call(kernel, args, star):
    """The codegen of an intrinsic that calls ``kernel`` as a subroutine on its star
    arguments ``args`` (the intrinsic's argument number ``star``) and returns nothing;
    constants such as ``True`` are taken as plain values, so every combination of them
    shares one compile."""
    arg_types = tuple(types.unliteral(t) for t in args)

    def codegen(context, builder, sig, values):
        values = cgutils.unpack_tuple(builder, values[star], len(args))
        call_subroutine(context, builder, kernel, types.none(*arg_types), values, args)
        return context.get_dummy_value()

    return codegen


def subroutine(kernel):
    """A function for kernels to call instead of ``kernel`` (which returns nothing): it
    calls ``kernel`` as a subroutine (``call_subroutine``), compiled once for the
    arguments' types, not once for each combination of constant arguments."""

    @intrinsic
    def call(typingctx, *args):
        return types.none(types.StarArgTuple.from_types(args)), _void_call(kernel, args, 0)

    return call


def by_constant(factory):
    """A function for kernels to call as ``f(KEY, *args)``, meaning ``factory(KEY)(*args)``
    with ``KEY`` an int known when the caller compiles (a closure constant of the
    caller's build); the build returns nothing. ``factory(KEY)`` returns a kernel built
    for that key, made once per key (``f.build``). A kernel's closure may hold only
    plain values: holding a kernel would give the caller a new cache key in every
    process, so builds reach each other through these functions, which call the build
    as a subroutine (``call_subroutine``)."""
    build = functools.cache(factory)

    @intrinsic
    def call(typingctx, key, *args):
        if not isinstance(key, types.IntegerLiteral):
            return None
        return (types.none(key, types.StarArgTuple.from_types(args)),
                _void_call(build(key.literal_value), args, 1))

    call.build = build
    return call


def entry_point(kernel, args):
    """``kernel``'s compiled code for the types of ``args`` (compiled, or loaded from the
    cache, if need be), as a function to call with arguments of exactly those types. A
    dispatcher call first works out every argument's Numba type (~1.5 us for the epoch
    kernels' 20, half a planar step's kernel time); a caller that passes the same
    arrays call after call can do that once. Arguments of other types would be read as
    these, so callers re-fetch whenever an argument's type may change."""
    signature = tuple(kernel.typeof_pyval(a) for a in args)
    if signature not in kernel.overloads:
        kernel.compile(signature)
    # the dispatcher itself where a compile result has no entry point (Numba internals)
    return getattr(kernel.overloads[signature], "entry_point", kernel)


WIDE_VECTORS = '"prefer-vector-width"="512"'  # LLVM's function attribute, as IR text


@intrinsic
def prefer_wide_vectors(typingctx):
    """Let LLVM vectorize the calling kernel's loops with the widest registers the CPU
    has: on AVX-512 CPUs it uses 256-bit ones unless a function asks for more, and the
    exp and rational loops of sigmoid and tanh are bound by arithmetic there, not memory
    (sigmoid over 8 MiB on one core: 0.85 -> 0.69 ms, a copy 0.61; results bit for bit
    the same). No effect on CPUs without 512-bit registers. Call it first in a kernel
    whose long elementwise loops should get it, and in the kernels that inline them."""

    def codegen(context, builder, signature, args):
        attributes = builder.function.attributes
        if isinstance(attributes, set):  # llvmlite's add() refuses it; else go without
            set.add(attributes, WIDE_VECTORS)
        return context.get_dummy_value()

    return types.none(), codegen


def _flat_by_reshape(array):
    """``flat`` where Numba's array internals are not there: the general reshape."""
    return array.reshape(-1)


@intrinsic
def flat(typingctx, array):
    """A C-contiguous array as a 1-D view of all its elements: ``array.reshape(-1)``
    without the general reshape's shape normalisation and error path, which cost
    ~0.3 s of compile time in every process that compiles a kernel using it."""
    if not isinstance(array, types.Array) or array.layout != "C":
        return None
    result = array.copy(ndim=1)

    def codegen(context, builder, signature, args):
        source = make_array(array)(context, builder, args[0])
        view = make_array(result)(context, builder)
        populate_array(view, data=source.data, shape=[source.nitems],
                       strides=[source.itemsize], itemsize=source.itemsize,
                       meminfo=source.meminfo, parent=source.parent)
        return impl_ret_borrowed(context, builder, result, view._getvalue())

    return result(array), codegen


if make_array is None:
    flat = kernel(_flat_by_reshape, inline=True)  # noqa: F811
