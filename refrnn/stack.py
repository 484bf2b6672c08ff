"""Stacked recurrent layers: the output sequence of layer l is the input sequence of layer l+1.

Layers may be of any cell (and mixed); each layer's state has that cell's form (``h`` for a GRU,
``(h, c)`` for an LSTM). States are tuples with one entry per layer, bottom layer first, as in
PyTorch's ``h_n[l]``.

Shapes: x (T, B, D); y (T, B, H_last).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from .cells import module_for


class StackCache(NamedTuple):
    layers: tuple  # one cell cache per layer, bottom first


def _layers(layers) -> tuple:
    if not isinstance(layers, Sequence) or isinstance(layers, (str, bytes)) or len(layers) == 0:
        raise TypeError(f"layers: expected a non-empty sequence of cell parameters, got {type(layers).__name__}")
    layers = tuple(layers)
    for k, (below, above) in enumerate(zip(layers, layers[1:])):
        if above.input_size != below.hidden_size:
            raise ValueError(
                f"layers[{k + 1}]: input size {above.input_size} does not match layers[{k}]'s hidden size {below.hidden_size}"
            )
    return layers


def _per_layer(name: str, value, n: int) -> tuple:
    if value is None:
        return (None,) * n
    if not isinstance(value, (tuple, list)) or len(value) != n:
        raise ValueError(f"{name}: expected a sequence of {n} per-layer states (or None), got {type(value).__name__}")
    return tuple(value)


def forward(layers, x, state0=None):
    """Run every layer over the sequence in turn; returns ``(y, states_T, cache)``."""
    layers = _layers(layers)
    state0 = _per_layer("state0", state0, len(layers))
    states, caches = [], []
    for params, s0 in zip(layers, state0):
        x, s_T, cache = module_for(params).forward(params, x, s0)
        states.append(s_T)
        caches.append(cache)
    return x, tuple(states), StackCache(tuple(caches))


def backward(layers, cache: StackCache, dy, dstates_T=None):
    """Backprop through every layer, top first; returns ``(grads, dx, dstates0)`` (tuples per layer)."""
    layers = _layers(layers)
    dstates_T = _per_layer("dstates_T", dstates_T, len(layers))
    grads, dstates0 = [None] * len(layers), [None] * len(layers)
    for k in reversed(range(len(layers))):
        grads[k], dy, dstates0[k] = module_for(layers[k]).backward(layers[k], cache.layers[k], dy, dstates_T[k])
    return tuple(grads), dy, tuple(dstates0)
