r"""Reference wavefront evaluation of stacked recurrent layers: anti-diagonal order, forward only.

Equations (layer l = 0..N-1, step t = 0..T-1, ``cell_l`` the cell of layer l, ``h^{-1}_t = x_t``)::

    h^l_t = cell_l(h^l_{t-1}, h^{l-1}_t)

Cell (l, t) needs only (l, t-1), its own layer's previous step, and (l-1, t), the layer below at the
same step. Every cell on the anti-diagonal ``k = l + t`` therefore depends on diagonal ``k - 1`` and
nothing later, so all cells of one diagonal are independent of each other and could run at once::

    k = 0:  (0,0)
    k = 1:  (0,1) (1,0)
    k = 2:  (0,2) (1,1) (2,0)          ...          k = T+N-2:  (N-1,T-1)

The critical path is ``T + N - 1`` diagonals, against ``T * N`` dependent steps when the layers run one
after the other (:mod:`refrnn.layers.stack`): layer l at step t needs only layer l at t-1 and layer l-1
at t, so the cells of one diagonal are independent.

This module is the *reference* for that order: it computes the cells diagonal by diagonal, one cell at a
time, each with its cell module's own ``forward`` on a one-step slice and the carried state, so its
results equal :func:`refrnn.layers.stack.forward` up to rounding (the products are the same, only their
grouping into BLAS calls differs). Fast executors that batch a diagonal are checked against it.
Inference only: no cache, no backward.

Shapes: x (T, B, D); y (T, B, H_last); states one per layer, bottom first, each in its cell's form.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import stack
from .._checks import float_array, positive_int
from .bidirectional import BiLayer
from ..cells import module_for


class Schedule(NamedTuple):
    """The anti-diagonals of a T-step, N-layer grid and the critical-path length (the number of diagonals)."""

    diagonals: list  # diagonals[k] = [(l, t), ...] with l + t = k, l ascending
    critical_path: int  # T + N - 1

    @property
    def layer_by_layer(self) -> int:
        """The critical path when the layers run one after the other: every cell in turn, T * N."""
        return sum(len(d) for d in self.diagonals)


def schedule(T: int, N: int) -> Schedule:
    """The cells (l, t) of ``N`` layers over ``T`` steps grouped by anti-diagonal ``k = l + t``."""
    T = positive_int("T", T)
    N = positive_int("N", N)
    diagonals = [[(l, k - l) for l in range(max(0, k - T + 1), min(k, N - 1) + 1)] for k in range(T + N - 1)]
    return Schedule(diagonals, T + N - 1)


def check_inputs(layers, x, state0):
    """``(layers, x, state0)`` checked for a wavefront: a non-empty stack without bidirectional layers,
    ``x`` (T >= 1, B, D) of the first layer's width and dtype, one state entry per layer (None: zeros)."""
    layers = stack._layers(layers)
    state0 = stack._per_layer("state0", state0, len(layers))
    first = layers[0]
    x = float_array("x", x, ("T", "B", "D"), {"D": first.input_size}, dtype=first.dtype)
    if x.shape[0] == 0:
        raise ValueError(f"x: the wavefront needs at least one step, got shape {x.shape} (T=0)")
    if any(isinstance(p, BiLayer) for p in layers):
        raise ValueError(
            "layers: a bidirectional layer's reverse direction needs the whole input sequence before its first "
            "step, so it has no place on a wavefront; pass unidirectional layers"
        )
    return layers, x, state0


def forward(layers, x, state0=None) -> tuple[np.ndarray, tuple]:
    """Run the stack over ``x`` in anti-diagonal order; returns ``(y, states_T)`` like :func:`refrnn.layers.stack.forward`.

    ``layers`` is a sequence of cell parameter containers (any registered cells, mixed allowed), bottom
    first; ``state0`` is None (zeros) or one state per layer. ``x`` must have at least one step.
    """
    layers, x, state0 = check_inputs(layers, x, state0)
    N = len(layers)
    T, B, _ = x.shape
    cells = [module_for(p) for p in layers]
    state = [cell.zero_state(p, B) if s is None else s for cell, p, s in zip(cells, layers, state0)]
    # h[l][t] = h^l_t, filled as the wavefront passes; layer l's input sequence is h[l-1] (x for l = 0)
    h = [np.empty((T, B, p.output_size), dtype=p.dtype) for p in layers]
    for diagonal in schedule(T, N).diagonals:
        for l, t in diagonal:  # independent of each other: any order (or all at once) gives the same result
            below = x if l == 0 else h[l - 1]
            y, state[l], _ = cells[l].forward(layers[l], below[t : t + 1], state[l])
            h[l][t] = y[0]
    return h[-1], tuple(state)
