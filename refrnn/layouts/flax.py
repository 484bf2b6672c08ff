r"""Flax layout: ``flax.linen`` ``GRUCell``, ``LSTMCell`` / ``OptimizedLSTMCell`` and ``SimpleCell`` parameters.

A Flax cell keeps one ``Dense`` per gate and side, named after the side (``i`` input, ``h`` hidden)
and refrnn's gate symbol, each a ``{"kernel": (inputs, H)[, "bias": (H,)]}`` mapping; the kernel is
the transpose of the gate's block of refrnn's ``W_x`` / ``W_h``::

    GRUCell            ir iz in (kernel (D, H), bias)   hr hz (kernel (H, H), no bias)   hn (kernel, bias)
    LSTMCell           ii if ig io (kernel (D, H), no bias)   hi hf hg ho (kernel (H, H), bias)
    OptimizedLSTMCell  the same names and shapes as LSTMCell (it concatenates them at call time)
    SimpleCell         i (kernel (D, H), bias)   h (kernel (H, H), no bias)

The gate symbols come from :data:`refrnn.cells.gru.GATES` and :data:`refrnn.cells.lstm.GATES`
(flax's ``r, z, n`` and ``i, f, g, o`` are refrnn's), so there is no reordering, only a split per gate.
Flax's equations (``flax/linen/recurrent.py``) are refrnn's with fewer biases::

    GRUCell   r = sigmoid(W_ir x + b_ir + W_hr h)           z likewise
              n = tanh(W_in x + b_in + r * (W_hn h + b_hn))  h' = (1 - z) * n + z * h
    LSTMCell  i = sigmoid(W_ii x + W_hi h + b_hi) ...        c' = f * c + i * g,  h' = o * tanh(c')
    SimpleCell h' = act(W_i x + b_i + W_h h)

So Flax's GRU is refrnn's ``reset="after"`` (the reset multiplies ``W_hn h + b_hn``); a
``reset="before"`` GRU computes ``W_hn (r * h)``, a different function of h (no weights of one
reproduce the other), and is refused, as are an LSTM's peepholes and projection (Flax has neither).

Biases. Where a gate's two biases are simply summed before its activation (GRU r and z, every LSTM
gate, the SimpleCell), Flax keeps one; where they are not (GRU n: ``b_xn`` outside the reset product,
``b_hn`` inside), Flax keeps both. The mapping is exact both ways:

* parameters, refrnn -> Flax: the one bias is ``b_x + b_h`` (one rounding per entry: it is exactly
  what enters the gate); Flax -> refrnn: ``b_x = bias``, ``b_h = 0``, the same function.
* gradients (``gradient=True``): the gradient of a sum of two biases *is* the gradient of each, so
  refrnn -> Flax takes that common value, and refuses gradients whose two folded entries differ (no
  model with one bias there has them); Flax -> refrnn splits it exactly, copying it into both ``b_x``
  and ``b_h``.

A bidirectional layer (:class:`refrnn.layers.bidirectional.BiLayer`) is ``nn.Bidirectional(nn.RNN(cell),
nn.RNN(cell))``'s tree ``{"forward_rnn": {"cell": ...}, "backward_rnn": {"cell": ...}}``; one
cell is the cell's own tree, which ``nn.RNN`` nests under ``"cell"``. :func:`from_flax` reads any
of those, with or without the outer ``{"params": ...}`` of ``module.init``. A SimpleCell's
activation is not in its weights, so :func:`from_flax` takes it (tanh or relu).

Carries are Flax's: a GRU's and SimpleCell's ``h``, an LSTM's ``(c, h)`` -- the reverse of refrnn's
``(h, c)`` (:func:`state_to_flax`, :func:`state_from_flax`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..cells import GRUParams, LSTMParams, RNNParams
from ..cells import gru as _gru
from ..cells import lstm as _lstm
from ..cells.rnn import ACTIVATIONS
from . import same_dtype, to_numpy

CELLS = ("GRUCell", "LSTMCell", "OptimizedLSTMCell", "SimpleCell")
KIND = {"GRUCell": "gru", "LSTMCell": "lstm", "OptimizedLSTMCell": "lstm", "SimpleCell": "rnn"}
"""Flax cell class name -> refrnn cell."""

# Flax's dense layers per cell: name -> (side, refrnn gate or None for the SimpleCell's one block, has a bias)
_DENSE = {
    "gru": {**{f"i{g}": ("x", g, True) for g in _gru.GATES}, **{f"h{g}": ("h", g, g == "n") for g in _gru.GATES}},
    "lstm": {**{f"i{g}": ("x", g, False) for g in _lstm.GATES}, **{f"h{g}": ("h", g, True) for g in _lstm.GATES}},
    "rnn": {"i": ("x", None, True), "h": ("h", None, False)},
}
_GATES = {"gru": _gru.GATES, "lstm": _lstm.GATES, "rnn": (None,)}
# the gates whose b_x + b_h Flax keeps as one bias (on the side named here)
_FOLDED = {"gru": {"r": "x", "z": "x"}, "lstm": {g: "h" for g in _lstm.GATES}, "rnn": {None: "x"}}


def _kind_of(params) -> str:
    if isinstance(params, GRUParams):
        return "gru"
    if isinstance(params, LSTMParams):
        return "lstm"
    if isinstance(params, RNNParams):
        return "rnn"
    raise TypeError(f"params: expected GRUParams, LSTMParams, RNNParams or a BiLayer of them, got {type(params).__name__}")


def _blocks(a: np.ndarray, gates: tuple) -> dict:
    return dict(zip(gates, np.split(a, len(gates), axis=0)))


def _one_to_flax(p, gradient: bool, where: str) -> dict:
    kind = _kind_of(p)
    if kind == "gru" and p.reset != "after":
        raise ValueError(
            f"{where}params: Flax's GRUCell applies the reset gate after the recurrent product, r * (W_hn h + b_hn); these "
            "weights are reset='before', W_hn (r * h): a different function of h, so no exact conversion exists"
        )
    if kind == "lstm" and (p.has_peepholes or p.W_hr is not None):
        raise ValueError(f"{where}params: Flax's LSTMCell has no peepholes and no projection (W_hr); no exact conversion exists")
    gates = _GATES[kind]
    W = {"x": _blocks(np.asarray(p.W_x), gates), "h": _blocks(np.asarray(p.W_h), gates)}
    b = {"x": _blocks(np.asarray(p.b_x), gates), "h": _blocks(np.asarray(p.b_h), gates)}
    out = {}
    for name, (side, gate, has_bias) in _DENSE[kind].items():
        dense = {"kernel": W[side][gate].T.copy()}
        if has_bias:
            if gate in _FOLDED[kind]:
                bx, bh = b["x"][gate], b["h"][gate]
                if not gradient:
                    bias = bx + bh  # exactly what enters the gate
                elif np.array_equal(bx, bh):
                    bias = bx.copy()  # d(b_x + b_h) is the gradient of each
                else:
                    label = f"gate {gate}" if gate else "the bias"
                    raise ValueError(
                        f"{where}grads: Flax keeps one bias for {label} where refrnn has b_x + b_h, so their gradients must be "
                        f"equal, but db_x and db_h differ there by up to {float(np.max(np.abs(bx - bh))):.3g}"
                    )
            else:
                bias = b[side][gate].copy()
            dense["bias"] = bias
        out[name] = dense
    return out


def to_flax(params, *, gradient: bool = False) -> dict:
    """The Flax parameter tree (NumPy leaves) of one cell's parameters, or of a BiLayer as
    ``nn.Bidirectional(nn.RNN(cell), nn.RNN(cell))`` holds it.

    A cell gives the cell's tree (``{"ir": {"kernel", "bias"}, ...}``; ``nn.RNN`` nests it under
    ``"cell"``). ``gradient=True`` converts gradients (of refrnn's parameters) instead: a folded bias
    gets the common gradient of ``b_x`` and ``b_h`` (see the module docstring), and unequal ones are
    refused with ``ValueError``.
    """
    from ..layers.bidirectional import BiLayer

    if isinstance(params, BiLayer):
        if type(params.fwd) is not type(params.rev) or getattr(params.fwd, "activation", None) != getattr(params.rev, "activation", None):
            raise ValueError("params: nn.Bidirectional here wraps one cell type in both directions; fwd and rev differ")
        return {
            "forward_rnn": {"cell": _one_to_flax(params.fwd, gradient, "fwd: ")},
            "backward_rnn": {"cell": _one_to_flax(params.rev, gradient, "rev: ")},
        }
    return _one_to_flax(params, gradient, "")


def _mapping(name: str, value) -> Mapping:
    if not isinstance(value, Mapping):
        raise TypeError(f"{name}: expected a mapping (a Flax parameter tree), got {type(value).__name__}")
    return value


def _cell_kind(tree: Mapping, where: str) -> str:
    keys = set(map(str, tree))
    for kind, dense in _DENSE.items():
        if keys == set(dense):
            return kind
    best = min(_DENSE, key=lambda k: len(keys ^ set(_DENSE[k])))
    missing, extra = sorted(set(_DENSE[best]) - keys), sorted(keys - set(_DENSE[best]))
    raise ValueError(
        f"{where}: not a GRUCell, LSTMCell or SimpleCell tree: got keys {sorted(keys)}; closest is the "
        f"{ {'gru': 'GRUCell', 'lstm': 'LSTMCell', 'rnn': 'SimpleCell'}[best]} ({', '.join(sorted(_DENSE[best]))})"
        + (f", missing {missing}" if missing else "") + (f", unexpected {extra}" if extra else "")
    )


def _one_from_flax(tree, gradient: bool, activation: str, where: str):
    tree = _mapping(where, tree)
    kind = _cell_kind(tree, where)
    arrays: dict = {"x": {}, "h": {}}
    biases: dict = {"x": {}, "h": {}}
    named: dict = {}  # every array by its place in the tree, for the one dtype check
    H = None
    for name, (side, gate, has_bias) in _DENSE[kind].items():
        dense = _mapping(f"{where}[{name!r}]", tree[name])
        want = {"kernel", "bias"} if has_bias else {"kernel"}
        if set(map(str, dense)) != want:
            raise ValueError(
                f"{where}[{name!r}]: expected the keys {sorted(want)} (Flax's {name} {'has' if has_bias else 'has no'} bias), got {sorted(map(str, dense))}"
            )
        k = to_numpy(f"{where}[{name!r}]['kernel']", dense["kernel"], weights=True)
        if k.ndim != 2 or (H is not None and k.shape[1] != H):
            raise ValueError(f"{where}[{name!r}]['kernel']: expected shape (inputs, H){f' with H={H}' if H else ''}, got {k.shape}")
        H = k.shape[1]
        if side == "h" and k.shape[0] != H:
            raise ValueError(f"{where}[{name!r}]['kernel']: a recurrent kernel has shape (H, H) with H={H}, got {k.shape}")
        arrays[side][gate] = named[f"{where}[{name!r}]['kernel']"] = k
        if has_bias:
            bias = to_numpy(f"{where}[{name!r}]['bias']", dense["bias"], weights=True)
            if bias.shape != (H,):
                raise ValueError(f"{where}[{name!r}]['bias']: expected shape ({H},), got {bias.shape}")
            biases[side][gate] = named[f"{where}[{name!r}]['bias']"] = bias
    gates = _GATES[kind]
    D = {arrays["x"][g].shape[0] for g in gates}
    if len(D) != 1:
        raise ValueError(f"{where}: the input kernels disagree on the input size: {sorted(D)}")
    same_dtype(named)
    dtype = next(iter(named.values())).dtype
    zeros = np.zeros(H, dtype=dtype)
    b = {"x": [], "h": []}
    for g in gates:
        folded = _FOLDED[kind].get(g)
        for side in ("x", "h"):
            if folded is None:
                b[side].append(biases[side].get(g, zeros))
            elif side == folded:
                b[side].append(biases[side][g])
            else:  # the other side of a folded bias: 0 for parameters, the same gradient for gradients
                b[side].append(biases[folded][g] if gradient else zeros)
    W_x = np.concatenate([arrays["x"][g].T for g in gates], axis=0)
    W_h = np.concatenate([arrays["h"][g].T for g in gates], axis=0)
    b_x, b_h = np.concatenate(b["x"]), np.concatenate(b["h"])
    if kind == "gru":
        return GRUParams(W_x, W_h, b_x, b_h, reset="after")
    if kind == "lstm":
        return LSTMParams(W_x, W_h, b_x, b_h)
    return RNNParams(W_x, W_h, b_x, b_h, activation=activation)


def from_flax(tree, *, activation: str = "tanh", gradient: bool = False):
    """refrnn parameters from a Flax parameter tree: a cell's, an ``nn.RNN``'s (``{"cell": ...}``) or an
    ``nn.Bidirectional``'s (``{"forward_rnn": ..., "backward_rnn": ...}``, read into a BiLayer), with or
    without the outer ``{"params": ...}``. The cell is recognised by its dense layers' names; any other
    key is an error. ``activation`` is a SimpleCell's (tanh or relu). ``gradient=True`` reads gradients:
    a folded bias's gradient is copied into both ``b_x`` and ``b_h`` (see the module docstring).
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: refrnn's RNN implements {', '.join(map(repr, ACTIVATIONS))}, got {activation!r}")
    tree = _mapping("tree", tree)
    if set(tree) == {"params"}:
        tree = _mapping("tree['params']", tree["params"])
    if set(tree) == {"cell"}:
        return _one_from_flax(tree["cell"], gradient, activation, "tree['cell']")
    if {"forward_rnn", "backward_rnn"} & set(tree):
        if set(tree) != {"forward_rnn", "backward_rnn"}:
            raise ValueError(f"tree: an nn.Bidirectional tree has exactly forward_rnn and backward_rnn, got {sorted(map(str, tree))}")
        from ..layers.bidirectional import BiLayer

        parts = []
        for d in ("forward_rnn", "backward_rnn"):
            sub = _mapping(f"tree[{d!r}]", tree[d])
            if set(sub) != {"cell"}:
                raise ValueError(f"tree[{d!r}]: expected an nn.RNN's tree {{'cell': ...}}, got keys {sorted(map(str, sub))}")
            parts.append(_one_from_flax(sub["cell"], gradient, activation, f"tree[{d!r}]['cell']"))
        kinds = {type(p) for p in parts}
        if len(kinds) != 1:
            raise ValueError("tree: forward_rnn and backward_rnn hold different cells")
        return BiLayer(*parts)
    if activation != "tanh" and _cell_kind(tree, "tree") != "rnn":
        raise ValueError("activation: only a SimpleCell takes one; GRUCell and LSTMCell have tanh built in")
    return _one_from_flax(tree, gradient, activation, "tree")


def _swap_lstm_pairs(params, state):
    """``state`` with every LSTM's pair reversed, direction by direction: refrnn's ``(h, c)`` and Flax's
    ``(c, h)`` hold the same two arrays in opposite orders, so one swap converts either way."""
    from ..layers.bidirectional import BiLayer

    if state is None:
        return None
    if isinstance(params, BiLayer):
        return (_swap_lstm_pairs(params.fwd, state[0]), _swap_lstm_pairs(params.rev, state[1]))
    if _kind_of(params) == "lstm":
        first, second = state
        return (second, first)
    return state


def state_to_flax(params, state):
    """refrnn's state of one layer (``h``, an LSTM's ``(h, c)``, a BiLayer's pair of those) -> Flax's carry
    (``h``, ``(c, h)``, ``(forward carry, backward carry)``); None stays None."""
    return _swap_lstm_pairs(params, state)


def state_from_flax(params, carry):
    """The inverse of :func:`state_to_flax`."""
    return _swap_lstm_pairs(params, carry)


__all__ = ["CELLS", "KIND", "from_flax", "state_from_flax", "state_to_flax", "to_flax"]
