"""Stacked recurrent layers: the output sequence of layer l is the input sequence of layer l+1.

Layers may be of any cell (and mixed), including bidirectional layers
(:class:`refrnn.layers.bidirectional.BiLayer`); each layer's state has that layer's form (``h`` for a GRU,
``(h, c)`` for an LSTM, ``(state_f, state_r)`` for a bidirectional layer). States are tuples with one
entry per layer, bottom layer first; :func:`refrnn.layouts.torch.state_to_torch` turns them into
PyTorch's ``h_n`` (layer 0 forward, layer 0 reverse, layer 1 forward, ...).

This module is also the entry point with PyTorch's input conventions (``torch.nn.GRU/LSTM``):

* ``lengths`` (B,): variable-length batch, as with ``pack_padded_sequence`` (any order, i.e.
  ``enforce_sorted=False``); every layer sees the same lengths (:mod:`refrnn.layers.lengths`).
* ``batch_first=True``: x (B, T, D), y (B, T, O); states keep the batch first as always (as in PyTorch,
  where ``batch_first`` does not apply to ``h_0``/``h_n``).
* unbatched input: x (T, D), y (T, O), every state array without its batch axis ((H,) instead of (B, H)).

The per-cell functions stay time-major and batched; only this wrapper moves axes.

Shapes: x (T, B, D); y (T, B, O_last) where O is a layer's output size (H, P with a projection, or the
sum of both directions' for a bidirectional layer).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from . import lengths as _lengths
from .._moved import renamed
from .._checks import as_array, float_array, instance, one_of, positive_int
from ..cells import module_for


class StackCache(NamedTuple):
    layers: tuple  # one cell cache per layer, bottom first
    batch_first: bool = False
    unbatched: bool = False
    backend: str = "reference"  # the one forward ran the cells on; backward runs them on it too


def _layers(layers) -> tuple:
    if not isinstance(layers, Sequence) or isinstance(layers, (str, bytes)) or len(layers) == 0:
        raise TypeError(f"layers: expected a non-empty sequence of cell parameters, got {type(layers).__name__}")
    layers = tuple(layers)
    for k, p in enumerate(layers):  # an unknown container is named before its sizes are looked at
        try:
            module_for(p)
        except TypeError as err:
            raise TypeError(f"layers[{k}]: {err}") from None
    for k, (below, above) in enumerate(zip(layers, layers[1:])):
        if above.input_size != below.output_size:
            what = "hidden size" if below.output_size == below.hidden_size else "output size"
            raise ValueError(
                f"layers[{k + 1}]: input size {above.input_size} does not match layers[{k}]'s {what} {below.output_size}"
            )
    return layers


def _per_layer(name: str, value, n: int) -> tuple:
    if value is None:
        return (None,) * n
    if not isinstance(value, (tuple, list)) or len(value) != n:
        raise ValueError(f"{name}: expected a sequence of {n} per-layer states (or None), got {type(value).__name__}")
    return tuple(value)


def _add_batch_axis(name: str, state):
    """An unbatched state (arrays of shape (H,)) as a batch of one ((1, H))."""

    def add(a):
        a = np.asarray(a)
        if a.ndim != 1:
            raise ValueError(
                f"{name}: with unbatched input (x of shape (T, D)) every state array is unbatched, of shape (H,); "
                f"got shape {a.shape}"
            )
        return a[None]

    return None if state is None else _lengths.tree_map(add, state)


def init(
    cell,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    *,
    bidirectional: bool = False,
    rng=None,
    dtype=np.float64,
    **options,
) -> tuple:
    """Layers shaped like ``torch.nn.GRU/LSTM(input_size, hidden_size, num_layers, bidirectional=...)``.

    ``cell`` is a cell module (:mod:`refrnn.cells.gru`, :mod:`refrnn.cells.lstm`, ...); ``options`` go to
    its ``init`` (``reset=`` for a GRU, ``proj_size=``/``peepholes=`` for an LSTM). Layer k > 0 reads
    the output of layer k - 1, of width ``output_size`` (twice that when bidirectional).
    """
    from . import bidirectional as bi

    if not callable(getattr(cell, "init", None)) or not callable(getattr(cell, "forward", None)):
        raise TypeError(f"cell: expected a cell module (refrnn.gru, refrnn.lstm, ...), got {cell!r}")
    positive_int("input_size", input_size)
    positive_int("hidden_size", hidden_size)
    rng = np.random.default_rng(rng)
    layers, d = [], input_size
    for _ in range(positive_int("num_layers", num_layers)):
        if bidirectional:
            layer = bi.init(cell, d, hidden_size, rng=rng, dtype=dtype, **options)
        else:
            layer = cell.init(d, hidden_size, rng=rng, dtype=dtype, **options)
        layers.append(layer)
        d = layer.output_size
    return tuple(layers)


def forward(layers, x, state0=None, *, lengths=None, batch_first: bool = False, backend: str = "reference"):
    """Run every layer over the sequence in turn; returns ``(y, states_T, cache)``.

    ``lengths``, ``batch_first`` and unbatched (2-d) ``x`` as in the module docstring. ``backend="jit"``
    runs every cell on its compiled twin (:func:`refrnn.layers.lengths.cell_functions`); the cache
    remembers it, so :func:`backward` uses the same.
    """
    layers = _layers(layers)
    one_of("backend", backend, _lengths.LAYER_BACKENDS)
    state0 = _per_layer("state0", state0, len(layers))
    if not isinstance(batch_first, (bool, np.bool_)):
        raise TypeError(f"batch_first: expected True or False, got {batch_first!r}")
    first = layers[0]
    x = as_array("x", x)
    xa = float_array("x", x, ("T", "D") if x.ndim == 2 else ("B", "T", "D") if batch_first else ("T", "B", "D"),
                     {"D": first.input_size}, dtype=first.dtype)  # in the caller's layout, before any transpose
    unbatched = xa.ndim == 2
    x = xa
    if unbatched:
        if lengths is not None:
            raise ValueError("lengths: unbatched input (x of shape (T, D)) is a single sequence; pass x as (T, 1, D) to give it a length")
        x = xa[:, None]
        state0 = tuple(_add_batch_axis(f"state0[{k}]", s) for k, s in enumerate(state0))
    elif batch_first:
        x = xa.transpose(1, 0, 2)
    states, caches = [], []
    for params, s0 in zip(layers, state0):
        x, s_T, cache = _lengths.forward(params, x, s0, lengths, backend=backend)
        states.append(s_T)
        caches.append(cache)
    y, states = x, tuple(states)
    if unbatched:
        y = y[:, 0]
        states = _lengths.tree_map(lambda a: a[0], states)
    elif batch_first:
        y = y.transpose(1, 0, 2)
    return y, states, StackCache(tuple(caches), bool(batch_first) and not unbatched, unbatched, backend)


def _time_and_batch(layer_cache) -> tuple[int, int]:
    """(T, B) of the forward pass that made one layer's cache (a cell's, a LengthsCache or a BiCache)."""
    shape = getattr(layer_cache, "x_shape", None)
    if shape is None:
        x = getattr(layer_cache, "x", None)
        shape = getattr(x, "shape", None)
    if not isinstance(shape, tuple) or len(shape) != 3:
        raise TypeError(f"cache.layers: expected the per-layer caches of forward, got {type(layer_cache).__name__}")
    return shape[0], shape[1]


@renamed(dstates_T="dstate_T")
def backward(layers, cache: StackCache, dy, dstate_T=None):
    """Backprop through every layer, top first; returns ``(grads, dx, dstates0)`` (tuples per layer).

    ``dy``, ``dx`` and the states have the layout :func:`forward` was called with.
    """
    layers = _layers(layers)
    dstate_T = _per_layer("dstate_T", dstate_T, len(layers))
    instance("cache", cache, StackCache)
    if not isinstance(cache.layers, tuple) or len(cache.layers) != len(layers):
        got = len(cache.layers) if isinstance(cache.layers, tuple) else type(cache.layers).__name__
        raise ValueError(f"cache: expected the StackCache that forward returned for these {len(layers)} layers, got one for {got}")
    T, B = _time_and_batch(cache.layers[-1])
    top = layers[-1]
    # dy in the caller's layout, checked before any transpose so the error quotes the caller's shape
    if cache.unbatched:
        dy = float_array("dy", dy, ("T", "O"), {"T": T, "O": top.output_size}, dtype=top.dtype)[:, None]
        dstate_T = tuple(_add_batch_axis(f"dstate_T[{k}]", s) for k, s in enumerate(dstate_T))
    elif cache.batch_first:
        dy = float_array("dy", dy, ("B", "T", "O"), {"T": T, "B": B, "O": top.output_size}, dtype=top.dtype).transpose(1, 0, 2)
    else:
        dy = float_array("dy", dy, ("T", "B", "O"), {"T": T, "B": B, "O": top.output_size}, dtype=top.dtype)
    grads, dstates0 = [None] * len(layers), [None] * len(layers)
    for k in reversed(range(len(layers))):
        grads[k], dy, dstates0[k] = _lengths.backward(layers[k], cache.layers[k], dy, dstate_T[k], backend=cache.backend)
    dx, dstates0 = dy, tuple(dstates0)
    if cache.unbatched:
        dx = dx[:, 0]
        dstates0 = _lengths.tree_map(lambda a: a[0], dstates0)
    elif cache.batch_first:
        dx = dx.transpose(1, 0, 2)
    return tuple(grads), dx, dstates0
