"""Old module paths kept for one release as thin re-exports of where the code lives now."""

from __future__ import annotations

import importlib
import warnings


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
