"""Deprecated: moved to :mod:`refrnn.bench.workloads.ccgru` (run with ``refrnn bench --only NAME``)."""

from .._moved import moved

_new = moved(__name__, "refrnn.bench.workloads.ccgru")


def __getattr__(name):
    return getattr(_new, name)


def main(argv=None) -> int:
    """``refrnn bench`` over the sparse conditional-GRU workloads (all of them unless ``--only`` names some)."""
    import sys

    from ..bench import cli

    argv = sys.argv[1:] if argv is None else list(argv)
    only = [] if "--only" in argv else [a for name in _new.NAMES for a in ("--only", name)]
    return cli.main(only + argv)


if __name__ == "__main__":
    raise SystemExit(main())
