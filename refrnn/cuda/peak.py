"""Deprecated: moved to :mod:`refrnn.bench._peak` (the device ceilings are a benchmark's, not a kernel's)."""

from .._moved import moved

_new = moved(__name__, "refrnn.bench._peak")


def __getattr__(name):
    return getattr(_new, name)
