"""ONNX layout: the ``GRU``, ``LSTM`` and ``RNN`` operators' weight tensors and attributes (plain arrays, no ``onnx`` import).

The operators take, per direction (``num_directions`` = 1, or 2 for ``direction="bidirectional"``,
index 0 forward, 1 reverse)::

    GRU   W (ndir, 3H, D), R (ndir, 3H, H), B (ndir, 6H) = [Wb; Rb]        gate order z, r, h
    LSTM  W (ndir, 4H, D), R (ndir, 4H, H), B (ndir, 8H) = [Wb; Rb]        gate order i, o, f, c
          P (ndir, 3H) peepholes, order i, o, f
    RNN   W (ndir, H, D),  R (ndir, H, H),  B (ndir, 2H) = [Wb; Rb]        activations: one per direction

which are refrnn's ``W_x``, ``W_h``, ``b_x``, ``b_h`` with the gate blocks re-ordered, and ``P`` is
refrnn's ``w_ic``, ``w_oc``, ``w_fc`` (:mod:`refrnn.cells.lstm`; ONNX's ``f`` and ``i`` peep at
``C_{t-1}``, ``o`` at ``C_t``, as there). Both use refrnn's update orientation ``H = (1 - z) * h + z * H_{t-1}``.

The GRU attribute ``linear_before_reset`` selects the reset convention, and ONNX's default is the
*other* one from PyTorch's::

    linear_before_reset=0 (default)  h = tanh(W_h x + Wb_h + R_h (r * H) + Rb_h)      refrnn reset="before"
    linear_before_reset=1            h = tanh(W_h x + Wb_h + r * (R_h H + Rb_h))      refrnn reset="after" (PyTorch)

These are different functions (``r * (R H)`` and ``R (r * H)`` agree for all r only when R is
diagonal), so each refrnn convention maps to exactly one value and a request for the other raises
``ValueError``: an exporter that drops ``linear_before_reset`` from a PyTorch GRU produces a model
that is wrong, not approximate. Every conversion here is a re-ordering, bit-exact both ways.

The RNN's ``activations`` attribute lists one activation per direction; ``Tanh`` and ``Relu`` are
:mod:`refrnn.cells.rnn`'s ``activation`` (a BiLayer's two directions may differ), any other is refused.

Not representable: the LSTM projection (ONNX has none), and the operators' non-default options
(``activations``, ``clip``, ``input_forget``), which :func:`to_onnx` never emits. ``sequence_lens``
corresponds to refrnn's ``lengths`` (:mod:`refrnn.layers.lengths`) and ``layout=1`` to ``batch_first``
(:mod:`refrnn.layers.stack`); both are run-time inputs, not weights.
"""

from __future__ import annotations

import numpy as np

from ..cells import GRUParams, LSTMParams, RNNParams, gru, lstm, rnn
from . import same_dtype, to_numpy

KINDS = ("GRU", "LSTM", "RNN")
ONNX_GATES = {"GRU": ("z", "r", "n"), "LSTM": ("i", "o", "f", "g"), "RNN": ("h",)}  # refrnn names of ONNX's blocks
_REFRNN_GATES = {"GRU": gru.GATES, "LSTM": lstm.GATES, "RNN": rnn.GATES}  # the cells' own order
_BLOCKS = {"GRU": 3, "LSTM": 4, "RNN": 1}
RNN_ACTIVATIONS = {"tanh": "Tanh", "relu": "Relu"}  # refrnn.cells.rnn's activation -> the ONNX name
ONNX_PEEPHOLES = ("w_ic", "w_oc", "w_fc")  # the blocks of P, in order
DIRECTIONS = ("forward", "reverse", "bidirectional")


def _reorder(a: np.ndarray, src: tuple, dst: tuple) -> np.ndarray:
    blocks = dict(zip(src, np.split(a, len(src), axis=0)))
    return np.concatenate([blocks[g] for g in dst], axis=0)


def _convention(linear_before_reset) -> str:
    if linear_before_reset not in (0, 1, False, True):
        raise ValueError(f"linear_before_reset: expected 0 or 1, got {linear_before_reset!r}")
    return "after" if linear_before_reset else "before"


def _rnn_activations(activations, ndir: int) -> tuple[str, ...]:
    """refrnn activation names, one per direction, from an ONNX RNN's ``activations`` (default Tanh)."""
    if activations is None:
        return ("tanh",) * ndir
    if isinstance(activations, (str, bytes)) or len(activations) != ndir:
        raise ValueError(f"activations: expected {ndir} name(s), one per direction, got {activations!r}")
    back = {v.lower(): k for k, v in RNN_ACTIVATIONS.items()}
    out = []
    for a in activations:
        name = a.decode() if isinstance(a, bytes) else a
        if not isinstance(name, str) or name.lower() not in back:
            raise ValueError(
                f"activations: {a!r} has no refrnn equivalent; refrnn.cells.rnn implements "
                f"{', '.join(RNN_ACTIVATIONS.values())} (ONNX names are case-insensitive)"
            )
        out.append(back[name.lower()])
    return tuple(out)


def from_onnx(kind: str, W, R, B=None, P=None, *, linear_before_reset: int = 0, direction: str | None = None, activations=None):
    """refrnn parameters from an ONNX ``GRU``/``LSTM`` node's tensors and attributes.

    ``linear_before_reset`` is the GRU node's attribute (ONNX default 0: reset="before"). ``direction``
    defaults to "forward" for one direction and "bidirectional" for two; a bidirectional node gives a
    :class:`~refrnn.layers.bidirectional.BiLayer`, a one-direction node the cell's parameters (for
    ``direction="reverse"``, run them over the reversed sequence, as the operator does).
    """
    if kind not in KINDS:
        raise ValueError(f"kind: unknown ONNX operator {kind!r}; expected one of {', '.join(KINDS)}")
    if kind != "GRU" and linear_before_reset:
        raise ValueError("linear_before_reset: an attribute of the ONNX GRU only")
    if kind != "RNN" and activations is not None:
        raise ValueError(f"activations: refrnn's {kind} has the operator's default activations only; pass None")
    n = _BLOCKS[kind]
    W, R = to_numpy("W", W, weights=True), to_numpy("R", R, weights=True)
    if R.ndim != 3 or R.shape[0] not in (1, 2) or R.shape[1] != n * R.shape[2]:
        raise ValueError(f"R: expected shape (num_directions, {n}H, H) with num_directions 1 or 2, got {R.shape}")
    ndir, H = R.shape[0], R.shape[2]
    if W.ndim != 3 or W.shape[:2] != (ndir, n * H):
        raise ValueError(f"W: expected shape (num_directions, {n}H, D) with num_directions={ndir}, H={H}, got {W.shape}")
    B = np.zeros((ndir, 2 * n * H), dtype=R.dtype) if B is None else to_numpy("B", B, weights=True)
    if B.shape != (ndir, 2 * n * H):
        raise ValueError(f"B: expected shape (num_directions, {2 * n}H) = {(ndir, 2 * n * H)}, got {B.shape}")
    if P is not None:
        if kind != "LSTM":
            raise ValueError("P: peepholes are an input of the ONNX LSTM only")
        P = to_numpy("P", P, weights=True)
        if P.shape != (ndir, 3 * H):
            raise ValueError(f"P: expected shape (num_directions, 3H) = {(ndir, 3 * H)}, got {P.shape}")
    same_dtype({"R": R, "W": W, "B": B, "P": P})
    if direction is None:
        direction = "bidirectional" if ndir == 2 else "forward"
    if direction not in DIRECTIONS:
        raise ValueError(f"direction: unknown value {direction!r}; expected one of {', '.join(map(repr, DIRECTIONS))}")
    if (direction == "bidirectional") != (ndir == 2):
        raise ValueError(f"direction={direction!r} needs num_directions={2 if direction == 'bidirectional' else 1}, got {ndir}")
    src, dst = ONNX_GATES[kind], _REFRNN_GATES[kind]
    out = []
    for d in range(ndir):
        b_x, b_h = np.split(B[d], 2)
        arrays = dict(
            W_x=_reorder(W[d], src, dst), W_h=_reorder(R[d], src, dst), b_x=_reorder(b_x, src, dst), b_h=_reorder(b_h, src, dst)
        )
        if kind == "GRU":
            out.append(GRUParams(**arrays, reset=_convention(linear_before_reset)))
        elif kind == "RNN":
            out.append(RNNParams(**arrays, activation=_rnn_activations(activations, ndir)[d]))
        else:
            if P is not None:
                arrays.update(zip(ONNX_PEEPHOLES, (a.copy() for a in np.split(P[d], 3))))
            out.append(LSTMParams(**arrays))
    if ndir == 1:
        return out[0]
    from ..layers.bidirectional import BiLayer

    return BiLayer(*out)


def to_onnx(params, *, linear_before_reset: int | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """The ONNX ``GRU``/``LSTM`` node's weight tensors and attributes for one cell or a BiLayer.

    Returns ``(tensors, attributes)``: ``tensors`` has ``W``, ``R``, ``B`` (and ``P`` for an LSTM
    with peepholes; a missing peephole is written as zeros, which is the same function);
    ``attributes`` has ``hidden_size``, ``direction`` and, for a GRU, ``linear_before_reset``, which
    defaults to the weights' own convention; asking for the other raises ``ValueError``.
    """
    from ..layers.bidirectional import BiLayer

    directions = (params.fwd, params.rev) if isinstance(params, BiLayer) else (params,)
    first = directions[0]
    if isinstance(first, GRUParams):
        kind = "GRU"
    elif isinstance(first, LSTMParams):
        kind = "LSTM"
    elif isinstance(first, RNNParams):
        kind = "RNN"
    else:
        raise TypeError(f"params: expected GRUParams, LSTMParams, RNNParams or a BiLayer of them, got {type(first).__name__}")
    for k, d in enumerate(directions):
        where = ("fwd" if k == 0 else "rev") if len(directions) == 2 else "params"
        if type(d) is not type(first) or d.hidden_size != first.hidden_size:
            raise ValueError(f"{where}: an ONNX {kind} node has one cell type and hidden size for both directions")
        if kind == "GRU":
            native = 1 if d.reset == "after" else 0
            if linear_before_reset is not None and int(linear_before_reset) != native:
                raise ValueError(
                    f"{where}: linear_before_reset={int(linear_before_reset)} computes "
                    f"{'r * (R_h H + Rb_h)' if linear_before_reset else 'R_h (r * H) + Rb_h'}, but these weights are "
                    f"reset={d.reset!r}, which computes {'r * (W_hn h + b_hn)' if native else 'W_hn (r * h) + b_hn'}: "
                    f"different functions of H (equal only for a diagonal R_h), so no exact conversion exists "
                    f"(use linear_before_reset={native})"
                )
            if d.reset != first.reset:
                raise ValueError(f"{where}: an ONNX GRU node has one linear_before_reset for both directions; fwd and rev differ")
        elif kind == "LSTM" and d.W_hr is not None:
            raise ValueError(f"{where}: the ONNX LSTM has no projection (W_hr); no exact conversion exists")
    src, dst = _REFRNN_GATES[kind], ONNX_GATES[kind]
    tensors = {
        "W": np.stack([_reorder(d.W_x, src, dst) for d in directions]),
        "R": np.stack([_reorder(d.W_h, src, dst) for d in directions]),
        "B": np.stack([np.concatenate([_reorder(d.b_x, src, dst), _reorder(d.b_h, src, dst)]) for d in directions]),
    }
    if kind == "LSTM" and any(d.has_peepholes for d in directions):
        H = first.hidden_size

        def peep(d, name):
            v = getattr(d, name)
            return np.zeros(H, dtype=d.dtype) if v is None else v

        tensors["P"] = np.stack([np.concatenate([peep(d, name) for name in ONNX_PEEPHOLES]) for d in directions])
    attributes = {"hidden_size": first.hidden_size, "direction": "bidirectional" if len(directions) == 2 else "forward"}
    if kind == "GRU":
        attributes["linear_before_reset"] = 1 if first.reset == "after" else 0
    if kind == "RNN":  # one per direction, so a BiLayer's two directions may differ
        attributes["activations"] = [RNN_ACTIVATIONS[d.activation] for d in directions]
    return tensors, attributes
