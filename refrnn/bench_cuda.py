"""Deprecated: moved to :mod:`refrnn.bench.cuda` (run with ``refrnn bench-cuda``)."""

from ._moved import moved

_new = moved(__name__, "refrnn.bench.cuda")


def __getattr__(name):
    return getattr(_new, name)


if __name__ == "__main__":
    raise SystemExit(_new.main())
