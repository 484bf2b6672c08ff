"""Deprecated: moved to :mod:`refrnn.bench.workloads.deep` (run with ``refrnn bench --only deep-T50-B1-N4``)."""

from .._moved import moved

_new = moved(__name__, "refrnn.bench.workloads.deep")


def __getattr__(name):
    return getattr(_new, name)
