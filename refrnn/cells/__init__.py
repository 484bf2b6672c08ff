"""Reference cells. Each is a module of pure functions over plain arrays::

    params = <cell>.init(D, H, rng=0)
    y, state_T, cache = <cell>.forward(params, x, state0)
    grads, dx, dstate0 = <cell>.backward(params, cache, dy, dstate_T)

:func:`module_for` is the one place that maps a parameter container to its cell module.
"""

from __future__ import annotations

from . import ccgru, gru, lstm, rnn, sru
from .ccgru import CCGRUBlockParams, CCGRULowRankParams, CCGRUParams
from .gru import GRUParams
from .lstm import LSTMParams
from .rnn import RNNParams
from .sru import SRUParams

_MODULES = {GRUParams: gru, LSTMParams: lstm, RNNParams: rnn, SRUParams: sru}
_MODULES.update(dict.fromkeys(ccgru.PARAM_CLASSES, ccgru))  # one class per update-gate variant


def register(params_cls, module) -> None:
    """Make ``module`` (with ``forward``, ``backward``, ``zero_state``) the cell of ``params_cls``."""
    _MODULES[params_cls] = module


def module_for(params):
    """The cell module whose ``forward``/``backward`` take ``params``."""
    try:
        return _MODULES[type(params)]
    except KeyError:
        known = ", ".join(cls.__name__ for cls in _MODULES)
        raise TypeError(f"params: expected one of {known}, got {type(params).__name__}") from None


__all__ = [
    "ccgru",
    "gru",
    "lstm",
    "rnn",
    "sru",
    "CCGRUBlockParams",
    "CCGRULowRankParams",
    "CCGRUParams",
    "GRUParams",
    "LSTMParams",
    "RNNParams",
    "SRUParams",
    "module_for",
    "register",
]
