r"""Bidirectional layers for any registered cell: one cell reads the sequence forwards, another backwards.

Equations (``cell_f``, ``cell_r`` any two registered cells with the same input size; ``;`` concatenates
the feature axis)::

    (y^f_t, s^f_t) = cell_f(x_t, s^f_{t-1})        t = 1..T       forward direction from s^f_0
    (y^r_t, s^r_t) = cell_r(x_t, s^r_{t+1})        t = T..1       reverse direction from s^r_{T+1}
    y_t = [y^f_t ; y^r_t]

PyTorch's ordering throughout (``torch.nn.GRU/LSTM(bidirectional=True)``): outputs are concatenated
[forward, reverse] at every step; the reverse direction's final state is the state after it has read
step 1 (index 0), i.e. ``s^r_1``; its initial state is the one it starts from at step T. With per-sample
``lengths`` the reverse direction reads each sample's *valid prefix* reversed: it starts at step
``L_b`` (not at the padding) and its outputs are aligned with the forward ones, as packed sequences do.

:class:`BiLayer` is a parameter container for the pair; it registers itself in
:func:`refrnn.cells.module_for`, with this module as its "cell", so :mod:`refrnn.layers.stack`,
:mod:`refrnn.layers.lengths` and :func:`refrnn.gradcheck` take it like any cell. Its state is the
pair ``(state_f, state_r)`` of the two cells' states; its gradients are a ``BiLayer``. Its arrays are
named after PyTorch's convention: the forward cell's names, and the reverse cell's with the suffix
``_reverse`` (``W_x``, ..., ``W_x_reverse``, ...).

Shapes: x (T, B, D); y (T, B, O_f + O_r) (2H for two cells of hidden size H).
"""

from __future__ import annotations

import sys
from typing import NamedTuple

import numpy as np

from . import lengths as _lengths
from .._checks import float_array, instance
from ..cells import module_for, register
from ..cells._common import Params, frozen, owned

SUFFIX = "_reverse"
TAKES_BACKEND = True  # the backend= of refrnn.layers.lengths reaches both directions' cells
ACCEPTS_LENGTHS = True  # :mod:`refrnn.layers.lengths` hands ``lengths`` to forward() instead of grouping samples


class BiLayer(Params):
    """A bidirectional layer: ``fwd`` reads t = 1..T, ``rev`` reads t = T..1 (any registered cells).

    Not a dataclass of arrays itself: :meth:`arrays` flattens both cells' arrays, the reverse cell's
    names suffixed ``_reverse``, and :meth:`replace` takes the same names, so generic tools that walk
    a parameter container (gradcheck, ``map``, ``astype``) work unchanged.
    """

    def __init__(self, fwd, rev):
        for name, p in (("fwd", fwd), ("rev", rev)):
            try:
                mod = module_for(p)
            except TypeError as err:
                raise TypeError(f"{name}: {err}") from None
            if mod is sys.modules[__name__]:
                raise TypeError(f"{name}: a direction of a BiLayer must be a cell, not another BiLayer")
        if fwd.input_size != rev.input_size:
            raise ValueError(f"rev: input size {rev.input_size} does not match fwd's input size {fwd.input_size}")
        if fwd.dtype != rev.dtype:
            raise TypeError(f"rev: dtype {rev.dtype} does not match fwd's dtype {fwd.dtype}")
        object.__setattr__(self, "fwd", fwd)
        object.__setattr__(self, "rev", rev)

    def __setattr__(self, name, value):
        raise AttributeError(f"BiLayer is immutable; use replace(...) to change {name}")

    def __repr__(self) -> str:
        return f"BiLayer(fwd={self.fwd!r}, rev={self.rev!r})"

    def __eq__(self, other) -> bool:
        return self is other

    __hash__ = object.__hash__

    def array_names(self) -> tuple[str, ...]:
        return tuple(self.fwd.array_names()) + tuple(n + SUFFIX for n in self.rev.array_names())

    def arrays(self) -> dict[str, np.ndarray]:
        out = dict(self.fwd.arrays())
        out.update({n + SUFFIX: a for n, a in self.rev.arrays().items()})
        return out

    def replace(self, **changes) -> "BiLayer":
        fwd, rev = {}, {}
        for name, value in changes.items():
            if name in ("fwd", "rev"):
                raise TypeError("BiLayer.replace: build a new BiLayer(fwd, rev) to swap a whole direction")
            (rev if name.endswith(SUFFIX) else fwd)[name.removesuffix(SUFFIX)] = value
        return BiLayer(self.fwd.replace(**fwd) if fwd else self.fwd, self.rev.replace(**rev) if rev else self.rev)

    @property
    def dtype(self) -> np.dtype:
        return self.fwd.dtype

    @property
    def input_size(self) -> int:
        return self.fwd.input_size

    @property
    def hidden_size(self) -> int:
        """The hidden size of one direction (PyTorch's ``hidden_size``); see :attr:`output_size`."""
        return self.fwd.hidden_size

    @property
    def output_size(self) -> int:
        """The width of ``y``: the two directions' output sizes added (2H, or 2P with projections)."""
        return self.fwd.output_size + self.rev.output_size


class BiCache(NamedTuple):
    fwd: object  # the forward cell's cache (or a LengthsCache)
    rev: object  # the reverse cell's cache, over the reversed sequence
    lengths: np.ndarray | None
    split: int  # O_f: y[..., :split] is the forward direction's
    x_shape: tuple = ()  # (T, B, D) of the forward pass


def init(cell, input_size: int, hidden_size: int, *, rng=None, dtype=np.float64, **options) -> BiLayer:
    """A BiLayer of two ``cell`` modules (e.g. :mod:`refrnn.cells.gru`), initialised forward then reverse."""
    rng = np.random.default_rng(rng)
    return BiLayer(*(cell.init(input_size, hidden_size, rng=rng, dtype=dtype, **options) for _ in range(2)))


def zero_state(params: BiLayer, batch: int):
    instance("params", params, BiLayer)
    return (module_for(params.fwd).zero_state(params.fwd, batch), module_for(params.rev).zero_state(params.rev, batch))


def reverse_valid(a: np.ndarray, lengths: np.ndarray | None) -> np.ndarray:
    """``a`` (T, B, ...) with each sample's first ``L_b`` steps reversed and its padding left in place.

    Without lengths, ``a[::-1]``. The map is its own inverse, so the same call reverses the reverse
    direction's inputs and restores the order of its outputs and of their gradients.
    """
    if lengths is None:
        return a[::-1]
    T = a.shape[0]
    t = np.arange(T)[:, None]
    src = np.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)  # (T, B)
    return np.take_along_axis(a, src.reshape(src.shape + (1,) * (a.ndim - 2)), axis=0)


def _pair(name: str, value):
    if value is None:
        return None, None
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(
            f"{name}: a bidirectional layer's state is the pair (state_forward, state_reverse), got {type(value).__name__}"
        )
    return value


def forward(params: BiLayer, x, state0=None, lengths=None, *, backend: str = "reference"):
    """Run both directions; returns ``(y, (state_f, state_r), cache)``. ``state0=None`` means zeros.
    ``backend`` runs both cells on it (:func:`refrnn.layers.lengths.cell_functions`)."""
    instance("params", params, BiLayer)
    # owned once here, so the two directions' caches share one read-only x instead of copying it twice
    x = owned(float_array("x", x, ("T", "B", "D"), {"D": params.input_size}, dtype=params.dtype))
    if lengths is not None:
        lengths = _lengths.check_lengths(lengths, x.shape[0], x.shape[1])
    s0_f, s0_r = _pair("state0", state0)
    x_r = reverse_valid(x, lengths)
    frozen(x_r)  # a view of x, or (with lengths) a fresh array: either way nobody else can write it
    y_f, s_f, cache_f = _lengths.forward(params.fwd, x, s0_f, lengths, backend=backend)
    y_r, s_r, cache_r = _lengths.forward(params.rev, x_r, s0_r, lengths, backend=backend)
    y = np.concatenate([y_f, reverse_valid(y_r, lengths)], axis=-1)
    return y, (s_f, s_r), BiCache(cache_f, cache_r, lengths, y_f.shape[-1], x.shape)


def backward(params: BiLayer, cache: BiCache, dy, dstate_T=None, *, backend: str = "reference"):
    """Backprop through both directions; returns ``(grads, dx, (dstate0_f, dstate0_r))`` with ``grads`` a BiLayer."""
    instance("params", params, BiLayer)
    instance("cache", cache, BiCache)
    if cache.split != params.fwd.output_size or len(cache.x_shape) != 3 or cache.x_shape[2] != params.input_size:
        raise ValueError(
            f"cache: expected the BiCache that forward returned for this BiLayer (input size {params.input_size}, "
            f"forward output size {params.fwd.output_size}), got one for x of shape {cache.x_shape} split at {cache.split}"
        )
    T, B, _ = cache.x_shape
    # dy is the whole layer's (O = O_f + O_r, 2H for two cells of size H): checked before it is split
    dy = float_array("dy", dy, ("T", "B", "O"), {"T": T, "B": B, "O": params.output_size}, dtype=params.dtype)
    ds_f, ds_r = _pair("dstate_T", dstate_T)
    g_f, dx_f, ds0_f = _lengths.backward(params.fwd, cache.fwd, dy[..., : cache.split], ds_f, backend=backend)
    g_r, dx_r, ds0_r = _lengths.backward(params.rev, cache.rev, reverse_valid(dy[..., cache.split :], cache.lengths), ds_r,
                                          backend=backend)
    return BiLayer(g_f, g_r), dx_f + reverse_valid(dx_r, cache.lengths), (ds0_f, ds0_r)


register(BiLayer, sys.modules[__name__])
