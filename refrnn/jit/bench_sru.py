"""Deprecated: moved to :mod:`refrnn.bench.workloads.sru` (run with ``refrnn bench --only sru-forward``)."""

from .._moved import moved

_new = moved(__name__, "refrnn.bench.workloads.sru")


def __getattr__(name):
    return getattr(_new, name)


if __name__ == "__main__":
    import sys

    from ..bench import cli

    raise SystemExit(cli.main(["--only", _new.NAME, *sys.argv[1:]]))
