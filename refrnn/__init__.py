"""refrnn: ground-truth recurrent cells in NumPy with hand-derived backprop, and fast paths proven equal.

Importing refrnn imports NumPy only. Numba, torch and the CUDA kernels load on first use of the
code that needs them.

Quick start::

    import numpy as np
    from refrnn import gru
    p = gru.init(input_size=8, hidden_size=16, rng=0)
    x = np.random.default_rng(1).standard_normal((20, 4, 8))   # (T, B, D), time-major
    y, h_T, cache = gru.forward(p, x)
    grads, dx, dh0 = gru.backward(p, cache, dy=np.ones_like(y))
"""

import sys as _sys

from . import _moved, cells, layers, layouts
from .cells import GRUParams, LSTMParams, RNNParams, SRUParams, ccgru, gru, lstm, module_for, rnn, sru
from .cells._common import map_params
from .finite_differences import GradcheckReport, gradcheck

# The cells are documented as refrnn.gru, refrnn.lstm, ...: make those real import paths too
# (``import refrnn.gru``, ``from refrnn.lstm import LSTMParams``), the same module objects as refrnn.cells.*.
for _cell in ("gru", "lstm", "rnn", "sru", "ccgru"):
    _sys.modules[f"{__name__}.{_cell}"] = getattr(cells, _cell)
del _cell

# refrnn.layers.stack, refrnn.layers.bidirectional, ... were top-level modules before refrnn.layers held them.
_moved.install()


def __getattr__(name):
    return _moved.former_attribute(__name__, name)


__version__ = "0.1.0"

__all__ = [
    "ccgru",
    "GRUParams",
    "GradcheckReport",
    "LSTMParams",
    "SRUParams",
    "gradcheck",
    "gru",
    "layers",
    "layouts",
    "lstm",
    "map_params",
    "module_for",
    "RNNParams",
    "rnn",
    "sru",
]
