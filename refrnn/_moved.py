"""Old module paths kept for one release as thin re-exports of where the code lives now."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import os
import sys
import warnings

# Former module paths -> where the module lives now. The old name imports the very same module
# object (so classes, registries and isinstance checks are shared), after a DeprecationWarning.
MOVED_MODULES = {
    **{f"refrnn.{name}": f"refrnn.layers.{name}" for name in ("stack", "bidirectional", "lengths", "mlp", "deep", "wavefront")},
}


def moved(old: str, new: str):
    """The module ``new``, after a DeprecationWarning that ``old`` is its former name.

    An alias module calls this at import and forwards attribute access to the result, so every
    name the old module had, public or private, resolves to the one definition.
    """
    warnings.warn(f"{old} moved to {new}; the old path goes away in the next release", DeprecationWarning, stacklevel=3)
    return importlib.import_module(new)


def algorithm_keyword(algorithm, **former):
    """The algorithm a fast path was asked for: ``algorithm=``, or a former keyword's value.

    Every fast path names its choice of algorithm ``algorithm=``; ``former`` holds the keywords the
    call also accepts for one release (``strategy=``, ``path=``, ``product=``), None when not given.
    A given one wins, with a DeprecationWarning pointing at the caller.
    """
    for name, value in former.items():
        if value is not None:
            warnings.warn(f"{name}= is deprecated: pass algorithm={value!r}", DeprecationWarning, stacklevel=3)
            return value
    return algorithm


def renamed(**former):
    """Decorator: accept each keyword in ``former`` (old name -> new name) for one release.

    Every cell and fast path names its initial state ``state0`` and the upstream gradient of the
    final state ``dstate_T``; calls written against the former per-cell names (``h0=``, ``c0=``,
    ``dh_T=``, ``dc_T=``) still work, with a DeprecationWarning at the caller. Passing both the old
    and the new name is a TypeError, as any duplicated argument is.
    """
    import functools

    def wrap(fn):
        @functools.wraps(fn)
        def call(*args, **kwargs):
            for old, new in former.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{fn.__qualname__}() got both {old}= and {new}=; pass {new}= only")
                    warnings.warn(f"{old}= is deprecated: pass {new}=", DeprecationWarning, stacklevel=2)
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return call

    return wrap


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Resolves a former module path (:data:`MOVED_MODULES`) to the module that now holds its code."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED_MODULES:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        new = MOVED_MODULES[spec.name]
        warnings.warn(f"{spec.name} moved to {new}; the old path goes away in the next release",
                      DeprecationWarning, stacklevel=_importer_level())
        # The module already imported under its new name stands in for the old one; the import
        # system keeps an existing module's __name__ and __spec__, so it is not imported twice.
        return importlib.import_module(new)

    def exec_module(self, module):
        pass


def _importer_level() -> int:
    """The ``stacklevel`` that points a warning at the code that imported a moved path, past the
    import machinery and refrnn's own ``__getattr__``."""
    here = (os.path.dirname(importlib.__file__), os.path.dirname(__file__) + os.sep + "__init__.py", __file__)
    frame, level = sys._getframe(1), 1
    while frame is not None:
        name = frame.f_code.co_filename
        # warnings.warn itself steps over the frozen import machinery without counting it.
        if not ("importlib" in name and "_bootstrap" in name):
            if not name.startswith(here):
                return level
            level += 1
        frame = frame.f_back
    return level


def install() -> None:
    """Make the former module paths importable (idempotent; called by ``import refrnn``)."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedFinder())


def former_attribute(package: str, name: str):
    """``package.name`` for a former submodule name (``refrnn.stack``): the moved module, after a
    DeprecationWarning; AttributeError for any other name, as a module without it would raise."""
    full = f"{package}.{name}"
    if full in MOVED_MODULES:
        return importlib.import_module(full)
    raise AttributeError(f"module {package!r} has no attribute {name!r}")
