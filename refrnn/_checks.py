"""Argument checking shared by every public entry point.

The rule is the same everywhere: an argument with the wrong rank, shape or dtype raises an error that
names the argument, the shape it was given and the shape expected (dimension letters as in the
docstrings: T steps, B batch, D input size, H hidden size). Nothing is broadcast silently.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _describe(letters: tuple[str, ...], sizes: Mapping[str, int]) -> str:
    parts = [f"{k}={sizes[k]}" for k in letters if k in sizes]
    shape = "(" + ", ".join(letters) + ("," if len(letters) == 1 else "") + ")"
    return shape + (" with " + ", ".join(parts) if parts else "")


def as_array(name: str, value) -> np.ndarray:
    """``np.asarray(value)``, with a ragged or otherwise unconvertible value refused by ``name``."""
    if isinstance(value, np.ndarray):
        return value
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{name}: cannot be read as an array ({err}); got {type(value).__name__}") from None


def float_array(
    name: str,
    value,
    letters: tuple[str, ...],
    sizes: Mapping[str, int] | None = None,
    dtype: np.dtype | None = None,
    finite: bool = True,
) -> np.ndarray:
    """Return ``value`` as a float ndarray of rank ``len(letters)``, or raise.

    ``sizes`` fixes some of the letters (``{"D": 3}``); letters not in it are free but must agree
    with each other where they repeat. ``dtype`` is the dtype the caller's parameters use: a
    different float dtype is a ``TypeError`` (we never up- or down-cast behind the user's back).
    """
    sizes = dict(sizes or {})
    arr = as_array(name, value)
    if arr.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected a float32 or float64 array, got dtype {arr.dtype}")
    if dtype is not None and arr.dtype != dtype:
        raise TypeError(
            f"{name}: dtype {arr.dtype} does not match the parameters' dtype {np.dtype(dtype)}; "
            f"convert explicitly (refrnn never casts silently)"
        )
    expected = _describe(letters, sizes)
    if arr.ndim != len(letters):
        raise ValueError(f"{name}: expected a {len(letters)}-d array of shape {expected}, got shape {arr.shape}")
    seen: dict[str, int] = {}
    for letter, n in zip(letters, arr.shape):
        want = sizes.get(letter, seen.get(letter))
        if want is not None and n != want:
            raise ValueError(f"{name}: expected shape {expected}, got shape {arr.shape} ({letter}={n}, expected {want})")
        seen[letter] = n
    if finite and not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: contains NaN or infinity (shape {arr.shape}); refrnn requires finite values")
    return arr


def one_of(name: str, value, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name}: unknown value {value!r}; expected one of {', '.join(map(repr, allowed))}")
    return value


def positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


def count(name: str, value) -> int:
    """A non-negative integer (a batch size may be 0), or raise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name}: expected a non-negative integer, got {value!r}")
    return int(value)


def instance(name: str, value, cls):
    """``value`` if it is a ``cls`` (a class or a tuple of classes), else a TypeError naming ``name``."""
    if not isinstance(value, cls):
        names = ", ".join(c.__name__ for c in (cls if isinstance(cls, tuple) else (cls,)))
        raise TypeError(f"{name}: expected {names}, got {type(value).__name__}")
    return value


def finite_result(name: str, value: np.ndarray, what: str) -> np.ndarray:
    """``value``, an intermediate computed from argument ``name``, if finite; else refuse by that name
    (a finite but huge input whose products overflow must not turn into saturated or zeroed gates)."""
    if not np.all(np.isfinite(value)):
        raise ValueError(f"{name}: {what} overflowed to inf/NaN; the input is too large for {value.dtype}")
    return value
