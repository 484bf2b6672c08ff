"""The cell-module interface, written down: what :mod:`refrnn.layers.stack`, :mod:`refrnn.layers.lengths`,
:mod:`refrnn.layers.bidirectional`, :func:`refrnn.gradcheck` and :mod:`refrnn.verify` rely on when
they take "any registered cell".

A cell is a *module* (not a class) of pure functions over plain arrays, registered with its parameter
container by :func:`refrnn.cells.register`; :func:`refrnn.cells.module_for` finds it from the
parameters. :class:`CellModule` lists the functions every cell module has, and :func:`optional`
reads the two things a cell may add; :func:`check` says what a module lacks.

Shapes: x (T, B, D); y (T, B, O); a state is an array (B, H) or a tuple of them (the LSTM's (h, c)).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class CellModule(Protocol):
    """The functions of a cell module.

    * ``init(input_size, hidden_size, *, rng=None, dtype=np.float64, **options) -> params``
    * ``zero_state(params, batch) -> state``: the all-zero initial state for ``batch`` samples.
    * ``forward(params, x, state0=None) -> (y, state_T, cache)``: the whole sequence; ``state0=None``
      is the zero state; the cache owns (or freezes) everything backward reads.
    * ``backward(params, cache, dy, dstate_T=None) -> (grads, dx, dstate0)``: the gradients of
      ``sum(dy * y) + sum(dstate_T * state_T)``, ``grads`` in the class of ``params``.
    """

    def init(self, input_size: int, hidden_size: int, **options) -> Any: ...

    def zero_state(self, params: Any, batch: int) -> Any: ...

    def forward(self, params: Any, x: np.ndarray, state0: Any = None) -> tuple: ...

    def backward(self, params: Any, cache: Any, dy: np.ndarray, dstate_T: Any = None) -> tuple: ...


OPTIONAL = {
    "couples_samples": "couples_samples(params) -> bool: True when a sample's result depends on the "
    "other samples of the batch (batch statistics); per-sample lengths are then refused",
    "ACCEPTS_LENGTHS": "ACCEPTS_LENGTHS = True: forward takes lengths= itself (a bidirectional layer) "
    "instead of refrnn.layers.lengths grouping the samples by length",
    "TAKES_BACKEND": "TAKES_BACKEND = True: forward and backward take backend= (a layer built from cells, "
    "which runs them on it) instead of refrnn.layers.lengths choosing the cell's twin through refrnn.fast",
}
"""What a cell module may add, and what it means."""


def optional(module, name: str):
    """``module``'s optional member ``name`` (one of :data:`OPTIONAL`), or its default: no coupling,
    lengths handled by :mod:`refrnn.layers.lengths`."""
    if name not in OPTIONAL:
        raise ValueError(f"name: expected one of {', '.join(OPTIONAL)}, got {name!r}")
    default = {"couples_samples": None, "ACCEPTS_LENGTHS": False, "TAKES_BACKEND": False}[name]
    return getattr(module, name, default)


def check(module) -> list[str]:
    """The members of :class:`CellModule` that ``module`` lacks or that are not callable (empty: conforms)."""
    return [name for name in ("init", "zero_state", "forward", "backward") if not callable(getattr(module, name, None))]
