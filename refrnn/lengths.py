r"""Variable-length batches for any registered cell: per-sample ``lengths``, like PyTorch's packed sequences.

Semantics (sample b of length ``L_b``, ``0 <= L_b <= T``; x is right-padded, padding values ignored)::

    y[t, b]   = cell output at step t        for t < L_b
    y[t, b]   = 0                            for t >= L_b          (pad_packed_sequence's padding value)
    state_T_b = the state after step L_b - 1 (the initial state when L_b = 0)

and gradients flow only through the valid steps: ``dx[t, b] = 0`` for ``t >= L_b``, ``dy`` there is ignored,
and the upstream ``dstate_T`` of sample b enters at its step ``L_b - 1``. This is exactly
``torch.nn.utils.rnn.pack_padded_sequence`` followed by ``pad_packed_sequence(..., total_length=T)``,
with or without ``enforce_sorted``: the batch may be in any order. A length of 0, which PyTorch refuses,
is allowed here and passes the state through unchanged.

Mechanism (cell-agnostic on purpose, so every cell gets it without code of its own): the samples are
grouped by length, and each group runs through the cell's own ``forward``/``backward`` on its valid
prefix ``x[:L, group]``. That uses only the batch independence of a recurrent cell (sample b's
results depend on sample b's inputs alone), costs one cell call per distinct length (at most B), and
cannot disagree with the cell's unmasked equations. It is a reference, not a fast path: a fused kernel
would mask inside one loop instead.

A cell whose samples are *coupled* (the conditional-computation GRU normalising with batch statistics
in training mode: every sample's gate depends on the whole batch) has no per-sample meaning for a
length, so it is refused: a cell module opts out by defining ``couples_samples(params) -> bool``.
A module that handles lengths itself (:mod:`refrnn.bidirectional`) sets ``ACCEPTS_LENGTHS = True`` and
takes ``forward(params, x, state0, lengths=...)``.

States are the cell's own (an array, or a tuple of arrays such as the LSTM's ``(h, c)``): every array
in a state has the batch on its first axis.

Shapes: x (T, B, D); lengths (B,) integers; y (T, B, O).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._checks import float_array
from .cells import module_for


class LengthsCache(NamedTuple):
    """One entry per distinct non-zero length: the sample indices, the length, the cell's cache."""

    lengths: np.ndarray  # (B,)
    groups: tuple  # ((idx, L, cell_cache), ...)
    x_shape: tuple  # (T, B, D)


def check_lengths(lengths, T: int, B: int) -> np.ndarray:
    """``lengths`` as a (B,) int64 array with every entry in 0..T, or raise."""
    if hasattr(lengths, "detach"):  # a torch tensor, as pack_padded_sequence takes, without importing torch
        lengths = lengths.detach().cpu().numpy()
    arr = np.asarray(lengths)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"lengths: expected integers, got dtype {arr.dtype}")
    if arr.shape != (B,):
        raise ValueError(f"lengths: expected shape (B,) with B={B}, got shape {arr.shape}")
    if np.any(arr < 0) or np.any(arr > T):
        raise ValueError(f"lengths: every length must be in 0..T (T={T}), got {arr.tolist()}")
    return arr.astype(np.int64)


def tree_map(fn, *trees):
    """``fn`` applied to the arrays of one or more states of the same structure (arrays, tuples of them)."""
    if isinstance(trees[0], (tuple, list)):
        return tuple(tree_map(fn, *items) for items in zip(*trees))
    return fn(*trees)


def _put(dst, idx, src) -> None:
    """``dst[idx] = src`` for every array of two states of the same structure."""
    tree_map(lambda d, s: d.__setitem__(idx, s), dst, src)


def _check_batch(name: str, state, B: int) -> None:
    def check(a):
        a = np.asarray(a)
        if a.ndim == 0 or a.shape[0] != B:
            raise ValueError(f"{name}: every array of the state needs the batch first (B={B}), got shape {a.shape}")

    tree_map(check, state)


def _add(a, b):
    """The sum of two gradient containers of the same class."""
    other = b.arrays()
    return a.replace(**{name: arr + other[name] for name, arr in a.arrays().items()})


def forward(params, x, state0=None, lengths=None):
    """Run one layer (any registered cell, or a :class:`~refrnn.bidirectional.BiLayer`) over a padded batch.

    Returns ``(y, state_T, cache)`` like a cell's ``forward``; ``lengths=None`` is the cell's own forward.
    """
    mod = module_for(params)
    if lengths is None:
        return mod.forward(params, x, state0)
    if getattr(mod, "ACCEPTS_LENGTHS", False):
        return mod.forward(params, x, state0, lengths=lengths)
    couples = getattr(mod, "couples_samples", None)
    if couples is not None and couples(params):
        raise ValueError(
            f"lengths: {type(params).__name__} with these options couples the samples of a batch (every sample's "
            f"result depends on the others, e.g. through batch statistics), so a per-sample length has no meaning; "
            f"run it without lengths, or in a mode whose samples are independent"
        )
    x = float_array("x", x, ("T", "B", "D"), {"D": params.input_size}, dtype=params.dtype)
    T, B, _ = x.shape
    lengths = check_lengths(lengths, T, B)
    if state0 is None:
        state0 = mod.zero_state(params, B)
    _check_batch("state0", state0, B)
    state_T = tree_map(lambda a: np.array(a, dtype=params.dtype, copy=True), state0)  # L = 0: unchanged
    y, groups = None, []
    for L in np.unique(lengths[lengths > 0]):
        idx = np.flatnonzero(lengths == L)
        y_g, s_g, cache_g = mod.forward(params, x[:L, idx], tree_map(lambda a: np.asarray(a)[idx], state0))
        if y is None:
            y = np.zeros((T, B, y_g.shape[-1]), dtype=params.dtype)
        y[:L, idx] = y_g
        _put(state_T, idx, s_g)
        groups.append((idx, int(L), cache_g))
    if y is None:  # every sample has length 0: learn the output width from an empty run
        y_e, _, _ = mod.forward(params, x[:0], state0)
        y = np.zeros((T, B, y_e.shape[-1]), dtype=params.dtype)
    return y, state_T, LengthsCache(lengths, tuple(groups), x.shape)


def backward(params, cache, dy, dstate_T=None):
    """Backprop through :func:`forward`; returns ``(grads, dx, dstate0)``. ``dy`` past a sample's length is ignored."""
    if not isinstance(cache, LengthsCache):  # forward ran without lengths (or the module handled them)
        return module_for(params).backward(params, cache, dy, dstate_T)
    mod = module_for(params)
    T, B, D = cache.x_shape
    dy = float_array("dy", dy, ("T", "B", "O"), {"T": T, "B": B}, dtype=params.dtype)
    template = mod.zero_state(params, B)
    if dstate_T is None:
        dstate0 = template
    else:
        _check_batch("dstate_T", dstate_T, B)
        dstate0 = tree_map(lambda a: np.array(a, dtype=params.dtype, copy=True), dstate_T)
    dx = np.zeros((T, B, D), dtype=params.dtype)
    grads = None
    for idx, L, cache_g in cache.groups:
        ds_g = None if dstate_T is None else tree_map(lambda a: np.asarray(a)[idx], dstate_T)
        g, dx_g, ds0_g = mod.backward(params, cache_g, dy[:L, idx], ds_g)
        grads = g if grads is None else _add(grads, g)
        dx[:L, idx] = dx_g
        _put(dstate0, idx, ds0_g)
    if grads is None:
        grads = params.map(np.zeros_like)
    return grads, dx, dstate0
