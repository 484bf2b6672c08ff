"""The compiled kernels take their operands in a few named groups, not in long positional lists.

A kernel's arrays travel as tuples or NamedTuples (the weights of one cell, a cache, the outputs, the
scratch), which numba passes at no cost; with every array positional, a kernel grew to 21 arguments
and each call site repeated them all in order.
"""

import importlib
import inspect
import pkgutil

import pytest

pytest.importorskip("numba")

MOST = 12  # positional arguments of any compiled function in refrnn.jit


def _kernels():
    from numba.core.dispatcher import Dispatcher

    import refrnn.jit

    for info in pkgutil.iter_modules(refrnn.jit.__path__):
        module = importlib.import_module(f"refrnn.jit.{info.name}")
        for value in vars(module).values():
            if isinstance(value, Dispatcher) and inspect.getmodule(value.py_func) is module:
                yield f"{module.__name__}.{value.py_func.__name__}", value.py_func


def test_no_kernel_takes_more_than_twelve_arguments():
    counts = {name: len(inspect.signature(f).parameters) for name, f in _kernels()}
    assert len(counts) > 40
    too_many = {name: n for name, n in counts.items() if n > MOST}
    assert not too_many, too_many

