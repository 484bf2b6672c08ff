"""Numba's on-disk cache, keyed by a kernel's own file *and* every :mod:`refrnn.jit` file it compiles with.

Numba's ``cache=True`` stores machine code next to the source and decides whether it is stale from
a stamp of the defining file alone. A kernel's machine code also contains every helper it calls
(``sigmoid``, ``tanh``, the row loops of :mod:`refrnn.jit._kernels`), so a kernel in another file
would keep running an edited helper's old code. Here the stamp is numba's own stamp of the file
together with the hashes of every :mod:`refrnn.jit` module the defining module reaches through its
globals (imported modules, and functions imported from them), transitively. Editing any of those
files changes the stamp, and numba then discards the cached index and compiles afresh; nothing else
changes (cache directory, file names, what is stored).

Every compiled function of refrnn is decorated with :func:`njit` from here (a test checks that none
escapes it).
"""

from __future__ import annotations

import hashlib
import sys
import types

import numba
from numba.core.caching import CompileResultCacheImpl, FunctionCache

_FOLLOW = "refrnn.jit"  # the modules whose sources are folded in (every compiled helper lives there)


def _file_hash(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def _reached(module_name: str) -> dict[str, str]:
    """``{module: file}`` of ``module_name`` and of every :mod:`refrnn.jit` module its globals reach."""
    reached: dict[str, str] = {}
    todo = [module_name]
    while todo:
        name = todo.pop()
        module = sys.modules.get(name)
        path = getattr(module, "__file__", None)
        if name in reached or path is None:
            continue
        reached[name] = path
        for value in list(vars(module).values()):
            if isinstance(value, types.ModuleType):
                dep = value.__name__
            else:
                dep = getattr(getattr(value, "py_func", value), "__module__", None)
            if isinstance(dep, str) and (dep == _FOLLOW or dep.startswith(_FOLLOW + ".")) and dep not in reached:
                todo.append(dep)
    return reached


def sources_stamp(module_name: str) -> tuple[tuple[str, str], ...]:
    """``((module, sha256 of its file), ...)`` for :func:`_reached`, sorted: what a kernel's stamp folds in."""
    return tuple(sorted((name, _file_hash(path)) for name, path in _reached(module_name).items()))


class _Locator:
    """Numba's locator for the function (where its cache lives), with a stamp covering every reached file."""

    def __init__(self, inner, module_name: str):
        self._inner = inner
        self._module_name = module_name

    def get_source_stamp(self):
        return self._inner.get_source_stamp(), sources_stamp(self._module_name)

    def __getattr__(self, name):
        return getattr(self._inner, name)


class _CacheImpl(CompileResultCacheImpl):
    def __init__(self, py_func):
        super().__init__(py_func)
        self._locator = _Locator(self._locator, py_func.__module__)


class PackageCache(FunctionCache):
    """:class:`numba.core.caching.FunctionCache` with the stamp of :class:`_Locator`."""

    _impl_class = _CacheImpl


def njit(*args, **options):
    """``numba.njit``; with ``cache=True`` the on-disk cache is a :class:`PackageCache`."""

    def decorate(func):
        dispatcher = numba.njit(**options)(func)
        if options.get("cache"):
            dispatcher._cache = PackageCache(func)  # what Dispatcher.enable_caching sets, with our stamp
        return dispatcher

    return decorate(args[0]) if args else decorate
