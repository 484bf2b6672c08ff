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
