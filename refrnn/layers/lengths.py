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
length, so it is refused: a cell module opts out by defining ``couples_samples(params) -> bool``
(:mod:`refrnn.cells.interface` writes the cell-module interface down).
A module that handles lengths itself (:mod:`refrnn.layers.bidirectional`) sets ``ACCEPTS_LENGTHS = True`` and
takes ``forward(params, x, state0, lengths=...)``.

States are the cell's own (an array, or a tuple of arrays such as the LSTM's ``(h, c)``): every array
in a state has the batch on its first axis.

Shapes: x (T, B, D); lengths (B,) integers; y (T, B, O).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from .._checks import float_array, instance, one_of
from ..cells import module_for
from ..cells.interface import optional
from ..cells._common import frozen


class LengthsCache(NamedTuple):
    """One entry per distinct non-zero length: the sample indices, the length, the cell's cache; and
    ``empty``, the cell's cache of a zero-step run over the whole batch, which backward uses to check
    every sample's ``dstate_T`` (a length-0 sample's included) with the cell's own rules."""

    lengths: np.ndarray  # (B,)
    groups: tuple  # ((idx, L, cell_cache), ...)
    x_shape: tuple  # (T, B, D)
    empty: object = None  # the cell's cache of forward(params, x[:0], state0)


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


def _add(a, b):
    """The sum of two gradient containers of the same class."""
    other = b.arrays()
    return a.replace(**{name: arr + other[name] for name, arr in a.arrays().items()})


LAYER_BACKENDS = ("reference", "jit")


class _Cell(NamedTuple):
    """The functions a layer calls for one cell on one backend."""

    module: object  # the reference module: zero_state, couples_samples, ACCEPTS_LENGTHS
    forward: object
    backward: object


def cell_functions(params, backend: str = "reference") -> _Cell:
    """``forward``/``backward`` of the cell of ``params`` on ``backend`` ("reference" or "jit").

    A layer module that is itself built from cells (a :class:`~refrnn.layers.bidirectional.BiLayer`,
    ``TAKES_BACKEND = True``) gets the backend passed on to its directions. Other cells go through
    :mod:`refrnn.fast`, which falls back to the reference backward where the jit twin has none;
    both backends' caches are the reference's, so the results are the same arrays either way.
    """
    one_of("backend", backend, LAYER_BACKENDS)
    mod = module_for(params)
    if backend == "reference":
        return _Cell(mod, mod.forward, mod.backward)
    if optional(mod, "TAKES_BACKEND"):
        return _Cell(mod, functools.partial(mod.forward, backend=backend), functools.partial(mod.backward, backend=backend))
    from .. import fast

    cell = mod.__name__.rsplit(".", 1)[-1]
    if cell not in fast.CELLS:
        raise ValueError(f"backend: {backend!r} has no {cell} cell (it has {', '.join(fast.CELLS)}); use backend='reference'")
    return _Cell(mod, functools.partial(fast.forward, backend=backend), functools.partial(fast.backward, backend=backend))


def forward(params, x, state0=None, lengths=None, *, backend: str = "reference"):
    """Run one layer (any registered cell, or a :class:`~refrnn.layers.bidirectional.BiLayer`) over a padded batch.

    Returns ``(y, state_T, cache)`` like a cell's ``forward``; ``lengths=None`` is the cell's own forward.
    ``backend`` runs the cell's compiled twin (:func:`cell_functions`).
    """
    cell = cell_functions(params, backend)
    mod = cell.module
    if lengths is None:
        return cell.forward(params, x, state0)
    if optional(mod, "ACCEPTS_LENGTHS"):
        return cell.forward(params, x, state0, lengths=lengths)
    couples = optional(mod, "couples_samples")
    if couples is not None and couples(params):
        raise ValueError(
            f"lengths: {type(params).__name__} with these options couples the samples of a batch (every sample's "
            f"result depends on the others, e.g. through batch statistics), so a per-sample length has no meaning; "
            f"run it without lengths, or in a mode whose samples are independent"
        )
    x = float_array("x", x, ("T", "B", "D"), {"D": params.input_size}, dtype=params.dtype)
    T, B, _ = x.shape
    lengths = check_lengths(lengths, T, B)
    # A zero-step run over the whole batch checks every sample's state0 with the cell's own rules (a
    # length-0 sample's state is never read by a real step) and returns it as a fresh array: the
    # final state of the length-0 samples. It also gives the output width.
    y_e, state_T, empty = cell.forward(params, x[:0], state0)
    state_T = tree_map(np.array, state_T)  # writable: the groups' final states go into it
    if state0 is None:
        state0 = mod.zero_state(params, B)
    y = np.zeros((T, B, y_e.shape[-1]), dtype=params.dtype)
    groups = []
    for L in np.unique(lengths[lengths > 0]):
        idx = np.flatnonzero(lengths == L)
        x_g = x[:L, idx]  # a fresh copy: frozen here, so the cell's cache keeps it without another copy
        frozen(x_g)
        y_g, s_g, cache_g = cell.forward(params, x_g, tree_map(lambda a: np.asarray(a)[idx], state0))
        y[:L, idx] = y_g
        _put(state_T, idx, s_g)
        groups.append((idx, int(L), cache_g))
    return y, state_T, LengthsCache(lengths, tuple(groups), x.shape, empty)


def _check_cache(params, cache) -> tuple:
    instance("cache", cache, LengthsCache)
    shape = cache.x_shape
    if not (isinstance(shape, tuple) and len(shape) == 3 and shape[2] == params.input_size) or cache.empty is None:
        raise ValueError(
            f"cache: expected the LengthsCache that forward returned for these {type(params).__name__} "
            f"(input size D={params.input_size}), got one for x of shape {shape}"
        )
    lengths = cache.lengths
    if not isinstance(lengths, np.ndarray) or lengths.shape != (shape[1],):
        raise ValueError(f"cache.lengths: expected shape (B,) with B={shape[1]}, got {np.shape(lengths)}")
    return shape


def backward(params, cache, dy, dstate_T=None, *, backend: str = "reference"):
    """Backprop through :func:`forward`; returns ``(grads, dx, dstate0)``. ``dy`` past a sample's length is ignored."""
    cell = cell_functions(params, backend)
    if not isinstance(cache, LengthsCache):  # forward ran without lengths (or the module handled them)
        return cell.backward(params, cache, dy, dstate_T)
    T, B, D = _check_cache(params, cache)
    dy = float_array("dy", dy, ("T", "B", "O"), {"T": T, "B": B}, dtype=params.dtype)
    # The zero-step run's backward checks every sample's dstate_T (as forward did state0) and returns
    # it as dstate0 for the length-0 samples; it also checks that the cache fits these parameters.
    _, _, dstate0 = cell.backward(params, cache.empty, dy[:0], dstate_T)
    dstate0 = tree_map(np.array, dstate0)
    dx = np.zeros((T, B, D), dtype=params.dtype)
    grads = None
    for idx, L, cache_g in cache.groups:
        ds_g = None if dstate_T is None else tree_map(lambda a: np.asarray(a)[idx], dstate_T)
        g, dx_g, ds0_g = cell.backward(params, cache_g, dy[:L, idx], ds_g)
        grads = g if grads is None else _add(grads, g)
        dx[:L, idx] = dx_g
        _put(dstate0, idx, ds0_g)
    if grads is None:
        grads = params.map(np.zeros_like)
    return grads, dx, dstate0
