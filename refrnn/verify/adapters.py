r"""Layouts (how a candidate receives weights and states, and returns results) and built-in candidates.

A *candidate* is any callable ::

    out = candidate(weights, x, state0)                      # forward only (verify(..., grads=False))
    out = candidate(weights, x, state0, dy, dstate_T)        # forward and backward

returning ``(y, state_T)`` or ``(y, state_T, grads)``. ``weights``, the states and ``grads`` are in the
candidate's *layout*:

* ``torch`` -- ``nn.GRU`` / ``nn.LSTM``. weights: the state dict, ``weight_ih_l{k}`` (G*H, D_k),
  ``weight_hh_l{k}`` (G*H, H or P), ``bias_ih_l{k}``, ``bias_hh_l{k}`` (G*H,), ``weight_hr_l{k}``
  (P, H) with ``proj_size``. States: GRU ``h`` (L, B, H); LSTM the pair ``(h, c)``, (L, B, P) and
  (L, B, H). grads: ``"x"`` (T, B, D), ``"state0"`` (like state0) and one entry per weight name.
* ``torch-cell`` -- ``nn.GRUCell`` / ``nn.LSTMCell``: the same names without ``_l{k}``, one layer;
  states (B, H), grads as above.
* ``sru-cell`` -- ``sru.SRUCell``: ``{"state_dict": ..., "options": ...}`` (see :class:`SRUCellLayout`);
  state ``c`` (B, H); grads ``"x"``, ``"state0"``, ``"weight"``, ``"weight_c"``, ``"bias"``.
* ``refrnn`` -- a tuple of refrnn parameter containers, bottom first (:mod:`refrnn.layers.stack`'s
  signature): states one per layer in the cell's form; grads ``{"layers": (containers...), "x": dx,
  "state0": (per layer...)}`` or the triple ``(layer grads, dx, dstate0)``.

``x`` is (T, B, D) and ``y`` (T, B, H) in every layout (time-major, PyTorch's ``batch_first=False``)
unless a convention says otherwise. ``dy`` has y's shape; gradients are those of
``L = sum(dy * y) + sum(dstate_T * state_T)``.

Conventions (:data:`refrnn.verify.strategies.CONVENTIONS`), drawn only for a candidate that declares
them in its ``conventions`` (an attribute, or ``verify(..., conventions=...)``) and whose layout can
express them (:data:`LAYOUT_CONVENTIONS` says, for every built-in layout side by side, how each is
passed or why it cannot be; ``torch`` and ``refrnn`` have all, ``torch-cell`` unbatched and no initial state):

=====================  ==========================================================================
``bidirectional``      ``torch``: the ``*_reverse`` weights, ``h_n`` (L*2, B, H) ordered layer 0
                       forward, layer 0 reverse, ...; ``refrnn``: :class:`~refrnn.layers.bidirectional.BiLayer`
``lengths``            keyword ``lengths=`` (B,) int64 in 1..T, any order (``pack_padded_sequence(...,
                       enforce_sorted=False)``): outputs past a length are 0, final states at the length
``batch_first``        keyword ``batch_first=``: x, y, dy, dx are (B, T, ...); states keep their shape
``unbatched``          x (T, D), y (T, H), states without the batch axis (B = 1)
``no_initial_state``   ``state0`` is None (zeros); no gradient for it is compared
=====================  ==========================================================================

A layout turns a drawn :class:`~refrnn.verify.strategies.Case` into the candidate's arguments, and
both the candidate's results and the reference's into one flat mapping ``name -> array`` with the
layout's own names (``y``, ``h_n``, ``dweight_hh_l0``, ...), so a report speaks the candidate's language.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from ..layouts import to_numpy
from ..layouts import torch as torch_layout
from ..layers.lengths import tree_map
from .strategies import CELLS, Case, CellConfig


def _np(name: str, value) -> np.ndarray:
    return to_numpy(name, value)


class NotExpressible(NamedTuple):
    """A :data:`LAYOUT_CONVENTIONS` entry saying a layout cannot express a convention, and why."""

    why: str


_ONE_STEP = "torch.nn.GRUCell/LSTMCell take one step of one direction; the caller loops over time"

LAYOUT_CONVENTIONS: dict[str, dict[str, str | NotExpressible]] = {
    "bidirectional": {
        "torch": "weights with *_reverse keys",
        "torch-cell": NotExpressible(_ONE_STEP),
        "refrnn": "BiLayer containers",
        "keras": "keras.layers.Bidirectional(merge_mode='concat'): weights forward then backward",
        "onnx": "direction='bidirectional', tensors with num_directions = 2",
        "flax": "nn.Bidirectional(nn.RNN(cell), nn.RNN(cell)): tree forward_rnn/backward_rnn, carries (forward, backward)",
    },
    "lengths": {
        "torch": "keyword lengths=",
        "torch-cell": NotExpressible(_ONE_STEP),
        "refrnn": "keyword lengths=",
        "keras": "a boolean mask (B, T), keyword lengths=",
        "onnx": "input sequence_lens (B,) int32, keyword lengths=",
        "flax": "seq_lengths=, keyword lengths=; y compared on valid steps only",
    },
    "batch_first": {
        "torch": "keyword batch_first=",
        "torch-cell": NotExpressible(_ONE_STEP),
        "refrnn": "keyword batch_first=",
        "keras": NotExpressible("Keras RNN layers are batch-major only: every problem is handed over as (B, T, D)"),
        "onnx": "attribute layout=1, keyword batch_first=",
        "flax": "nn.RNN(time_major=False), keyword batch_first=",
    },
    "unbatched": {
        "torch": "x of shape (T, D)",
        "torch-cell": "x of shape (T, D)",
        "refrnn": "x of shape (T, D), states without the batch axis",
        "keras": NotExpressible("Keras RNN layers take rank-3 input (batch, time, features)"),
        "onnx": NotExpressible("the ONNX RNN operators take a rank-3 X (seq, batch, input); there is no unbatched form"),
        "flax": "x of shape (T, D), carries without the batch axis",
    },
    "no_initial_state": {
        "torch": "state0 is None",
        "torch-cell": "state0 is None",
        "refrnn": "state0 is None",
        "keras": "initial_state not passed",
        "onnx": "initial_h (and initial_c) omitted",
        "flax": "initial_carry not passed",
    },
}
"""How each built-in layout hands a candidate each convention (:data:`refrnn.verify.strategies.CONVENTIONS`),
side by side: a string says how it is passed, a :class:`NotExpressible` why it cannot be (the report's
coverage shows the reason). A layout missing from a convention's row (``sru-cell`` from all of them)
has no way to express it. Each layout class reads its column with :func:`conventions_of`."""


def conventions_of(layout: str) -> tuple[dict[str, str], dict[str, str]]:
    """Layout ``layout``'s column of :data:`LAYOUT_CONVENTIONS`: ``(CONVENTIONS, NOT_EXPRESSIBLE)`` for
    :class:`Layout`, each convention in the order of :data:`refrnn.verify.strategies.CONVENTIONS`."""
    how, why_not = {}, {}
    for convention, row in LAYOUT_CONVENTIONS.items():
        entry = row.get(layout)
        if isinstance(entry, NotExpressible):
            why_not[convention] = entry.why
        elif entry is not None:
            how[convention] = entry
    return how, why_not


class Layout:
    """How one family of candidates takes its arguments. Subclasses fill in the conversions."""

    name = "?"

    def unsupported(self, config: CellConfig) -> str | None:
        """Why ``config`` cannot be expressed in this layout (None when it can). This base names the
        first convention of ``config`` that the layout cannot express; a subclass checks its own limits
        (layers, cells, options) first and then returns this."""
        for name in config.conventions:
            if name not in self.CONVENTIONS:
                return f"{name}: {self.not_expressible(name)}"
        return None

    def one_layer(self, config: CellConfig, why_one: str, cells, holds: str) -> str | None:
        """Why ``config`` is not one layer of one of ``cells`` (None when it is): the first limits of a
        layout that holds one framework layer. ``why_one`` says why only one; ``holds`` names the cells."""
        if len(config.layers) != 1:
            return why_one
        if config.layers[0].cell not in cells:
            return f"layout {self.name!r} holds {holds}, got {config.layers[0].cell!r}"
        return None

    def options(self, cell: str) -> dict:
        """The cell options this layout can hold (``{"reset": ("after",)}`` for PyTorch's GRU)."""
        return {}

    # Conventions (:data:`refrnn.verify.strategies.CONVENTIONS`) this layout can hand a candidate,
    # each with how it is passed; the others map to why not (shown in the report's coverage). The
    # built-in layouts take theirs from LAYOUT_CONVENTIONS; a layout of one's own sets them here.
    CONVENTIONS: dict[str, str] = {}
    NOT_EXPRESSIBLE: dict[str, str] = {}

    def not_expressible(self, convention: str) -> str:
        """Why ``convention`` cannot be handed to a candidate in this layout."""
        return self.NOT_EXPRESSIBLE.get(convention, f"layout {self.name!r} has no way to express it")

    def arguments(self, case: Case) -> tuple:
        raise NotImplementedError

    def keywords(self, case: Case, declared) -> dict:
        """Keyword arguments for the conventions the candidate declared: ``lengths`` (an int64 array or
        None) and ``batch_first`` (a bool) are passed on every call once declared, so a candidate's
        signature does not depend on what a particular example drew."""
        out = {}
        if "lengths" in declared:
            out["lengths"] = None if case.lengths is None else np.array(case.lengths, copy=True)
        if "batch_first" in declared:
            out["batch_first"] = bool(case.config.batch_first)
        return out

    def reference_outputs(self, case: Case, y, states_T, grads, dx, dstates0) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def candidate_outputs(self, case: Case, result, grads: bool) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def describe(self, case: Case, name: str, index: tuple) -> str:
        """Where ``name[index]`` sits in the model: step, batch row, layer, gate, unit."""
        return f"{name}[{', '.join(map(str, index))}]"


def _unpack(result, grads: bool):
    if not isinstance(result, (tuple, list)) or len(result) not in (2, 3):
        raise TypeError(f"candidate: expected to return (y, state_T) or (y, state_T, grads), got {type(result).__name__}")
    if grads and len(result) != 3:
        raise TypeError("candidate: verify(grads=True) needs (y, state_T, grads); the candidate returned no gradients")
    return result[0], result[1], (result[2] if len(result) == 3 else None)


def _gate_unit(case: Case, layer: int, row: int) -> str:
    spec = case.config.layers[layer]
    gates = CELLS[spec.cell].gates
    g, unit = divmod(row, spec.H)
    return f"gate {gates[g]}, unit {unit}" if g < len(gates) else f"row {row}"


# --------------------------------------------------------------------------------------------- torch
_KEY = re.compile(r"^d?(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)(?:_l(\d+))?(_reverse)?$")


def _time_major_to(case: Case, a: np.ndarray) -> np.ndarray:
    """A (T, B, ...) array in the candidate's axes: (B, T, ...) batch-first, (T, ...) unbatched."""
    if case.config.unbatched:
        return a[:, 0]
    if case.config.batch_first:
        return np.swapaxes(a, 0, 1)
    return a


def _step_row(case: Case, idx: tuple) -> tuple[int, int | None, tuple]:
    """(step, batch row, rest) of an index into an array in the candidate's axes (see _time_major_to)."""
    if case.config.unbatched:
        return idx[0], None, idx[1:]
    if case.config.batch_first:
        return idx[1], idx[0], idx[2:]
    return idx[0], idx[1], idx[2:]


class TorchLayout(Layout):
    """``torch.nn.GRU``/``nn.LSTM`` (``cell=False``) or ``nn.GRUCell``/``nn.LSTMCell`` (``cell=True``).

    Conventions, as PyTorch has them: bidirectional layers add the ``*_reverse`` weights and give
    ``h_n`` (and ``c_n``) of shape (L * 2, B, H) ordered layer 0 forward, layer 0 reverse, layer 1
    forward, ...; ``lengths`` are what ``pack_padded_sequence(x, lengths, enforce_sorted=False)`` takes
    (outputs past a sample's length are zero, its final state is the one at its length); ``batch_first``
    gives x, y, dy and dx as (B, T, ...) while the states keep (L, B, H); unbatched input is x (T, D) with
    states (L, H); no initial state is ``state0=None`` (zeros), and then no gradient for it is compared.
    """

    def __init__(self, cell: bool = False):
        self.cell = cell
        self.name = "torch-cell" if cell else "torch"
        self.CONVENTIONS, self.NOT_EXPRESSIBLE = conventions_of(self.name)

    def kind(self, config: CellConfig) -> str:
        base = {"gru": "GRU", "lstm": "LSTM", "rnn": "RNN"}[config.layers[0].cell]
        return base + ("Cell" if self.cell else "")

    def unsupported(self, config: CellConfig) -> str | None:
        cells = {s.cell for s in config.layers}
        if not cells <= {"gru", "lstm", "rnn"} or len(cells) != 1:
            return f"layout {self.name!r} holds GRU, LSTM or RNN layers of one kind, got {sorted(cells)}"
        if self.cell and len(config.layers) != 1:
            return f"layout 'torch-cell' is one layer, got {len(config.layers)}"
        if len({s.H for s in config.layers}) != 1:
            return f"layout {self.name!r} needs one hidden size for every layer"
        if any(s.opts.get("reset", "after") != "after" for s in config.layers):
            return "PyTorch applies the GRU reset gate after the recurrent product (reset='after')"
        if any(s.opts.get("peepholes") for s in config.layers):
            return "PyTorch's LSTM has no peephole connections"
        if self.cell and any(s.opts.get("proj_size") for s in config.layers):
            return "torch.nn.LSTMCell has no projection (proj_size)"
        return super().unsupported(config)

    def options(self, cell: str) -> dict:
        if cell == "gru":
            return {"reset": ("after",)}
        # PyTorch has no peepholes, and its LSTMCell no projection
        return {"peepholes": (False,), **({"proj": (False,)} if self.cell else {})} if cell == "lstm" else {}

    def is_lstm(self, case: Case) -> bool:
        return case.config.layers[0].cell == "lstm"

    def weights(self, case: Case) -> dict[str, np.ndarray]:
        layers = case.layers[0] if self.cell else case.layers
        return torch_layout.to_torch(layers, self.kind(case.config))

    def state(self, case: Case, states):
        """refrnn's per-layer states -> PyTorch's (L * directions, B, H) stacks ((B, H) for cells;
        without the batch axis for unbatched input); None stays None."""
        if states is None:
            return None
        stacked = torch_layout.state_to_torch(case.layers, states)
        if self.cell:
            stacked = tuple(a[0] for a in stacked) if self.is_lstm(case) else stacked[0]
        if case.config.unbatched:  # B == 1: drop the batch axis, second from last
            stacked = tuple(a[..., 0, :] for a in stacked) if self.is_lstm(case) else stacked[..., 0, :]
        return stacked

    def arguments(self, case: Case) -> tuple:
        args = (self.weights(case), _time_major_to(case, case.x), self.state(case, case.state0))
        if case.dy is not None:
            args += (_time_major_to(case, case.dy), self.state(case, case.dstate_T))
        return args

    def _state_names(self, case: Case, prefix: str) -> tuple[str, ...]:
        # PyTorch's names: h_0, c_0 in, h_n, c_n out; gradients carry a "d" prefix
        which = "0" if prefix else "n"
        return (f"{prefix}h_{which}", f"{prefix}c_{which}") if self.is_lstm(case) else (f"{prefix}h_{which}",)

    def _flat_state(self, case: Case, state, names) -> dict:
        arrays = state if self.is_lstm(case) else (state,)
        if self.is_lstm(case) and (not isinstance(state, (tuple, list)) or len(state) != 2):
            raise TypeError(f"candidate: the LSTM state must be the pair (h, c), got {type(state).__name__}")
        return {n: _np(n, a) for n, a in zip(names, arrays)}

    def reference_outputs(self, case, y, states_T, grads, dx, dstates0):
        out = {"y": _time_major_to(case, y)}
        out.update(self._flat_state(case, self.state(case, states_T), self._state_names(case, "")))
        if grads is not None:
            out["dx"] = _time_major_to(case, dx)
            if case.state0 is not None:  # without an initial state there is no gradient to compare
                out.update(self._flat_state(case, self.state(case, dstates0), self._state_names(case, "d")))
            for key, value in torch_layout.to_torch(grads[0] if self.cell else grads, self.kind(case.config)).items():
                out["d" + key] = value
        return out

    def candidate_outputs(self, case, result, grads: bool):
        y, state_T, g = _unpack(result, grads)
        out = {"y": _np("y", y)}
        out.update(self._flat_state(case, state_T, self._state_names(case, "")))
        if grads:
            if not isinstance(g, Mapping):
                raise TypeError(f"candidate: grads must be a mapping of names to arrays, got {type(g).__name__}")
            if "x" in g:
                out["dx"] = _np("grads['x']", g["x"])
            if "state0" in g and g["state0"] is not None and case.state0 is not None:
                out.update(self._flat_state(case, g["state0"], self._state_names(case, "d")))
            for key, value in g.items():
                if key not in ("x", "state0"):
                    out["d" + key] = _np(f"grads[{key!r}]", value)
        return out

    def describe(self, case: Case, name: str, index: tuple) -> str:
        idx = tuple(int(i) for i in index)
        spec = case.config.layers[-1]
        if name in ("y", "dx"):
            t, b, rest = _step_row(case, idx)
            row = "" if b is None else f", batch row {b}"
            if name == "dx":
                return f"{name}[{', '.join(map(str, idx))}] (step {t}{row}, input feature {rest[0]})"
            unit, where = rest[0], ""
            width = spec.out // (2 if spec.bidirectional else 1)
            if spec.bidirectional:
                where = ", reverse direction" if unit >= width else ", forward direction"
                unit %= width
            return f"{name}[{', '.join(map(str, idx))}] (step {t}{row}{where}, unit {unit})"
        if re.match(r"^d?[hc]_[0n]$", name):
            unit, b = idx[-1], (None if case.config.unbatched else idx[-2])
            row = "" if b is None else f"batch row {b}, "
            if self.cell:
                return f"{name}[{', '.join(map(str, idx))}] ({row}unit {unit})"
            dirs = 2 if spec.bidirectional else 1
            layer, d = divmod(idx[0], dirs)
            direction = (" reverse" if d else " forward") if dirs == 2 else ""
            return f"{name}[{', '.join(map(str, idx))}] (layer {layer}{direction}, {row}unit {unit})"
        m = _KEY.match(name)
        if m:
            layer = int(m.group(2) or 0)
            direction = " reverse" if m.group(3) else ""
            where = f"output unit {idx[0]}" if m.group(1) == "weight_hr" else _gate_unit(case, layer, idx[0])
            col = ""
            if len(idx) == 2:
                col = f", column {idx[1]} ({'input feature' if m.group(1) == 'weight_ih' else 'recurrent unit'} {idx[1]})"
            return f"{name}[{', '.join(map(str, idx))}] (layer {layer}{direction}, {where}{col})"
        return super().describe(case, name, index)


# -------------------------------------------------------------------------------------------- refrnn
class RefrnnLayout(Layout):
    """refrnn's own containers: a candidate with :mod:`refrnn.layers.stack`'s signature (a fast path, a port)."""

    name = "refrnn"
    CONVENTIONS, NOT_EXPRESSIBLE = conventions_of(name)

    @staticmethod
    def _states(case: Case, states):
        if states is None or not case.config.unbatched:
            return states
        return tree_map(lambda a: a[0], states)

    def arguments(self, case: Case) -> tuple:
        args = (case.layers, _time_major_to(case, case.x), self._states(case, case.state0))
        if case.dy is not None:
            args += (_time_major_to(case, case.dy), self._states(case, case.dstate_T))
        return args

    @staticmethod
    def _flat_states(prefix: str, states) -> dict:
        """``state_T[k]``, ``state_T[k][i]``, ``state_T[k][d][i]`` ...: one entry per array, however
        nested (an LSTM's (h, c), a bidirectional layer's pair of states)."""
        out = {}

        def walk(where, s):
            if isinstance(s, (tuple, list)):
                for i, a in enumerate(s):
                    walk(f"{where}[{i}]", a)
            else:
                out[where] = _np(where, s)

        walk(prefix, states)
        return out

    def reference_outputs(self, case, y, states_T, grads, dx, dstates0):
        out = {"y": _time_major_to(case, y), **self._flat_states("state_T", self._states(case, states_T))}
        if grads is not None:
            out["dx"] = _time_major_to(case, dx)
            if case.state0 is not None:
                out.update(self._flat_states("dstate0", self._states(case, dstates0)))
            for k, g in enumerate(grads):
                for name, a in g.arrays().items():
                    out[f"dlayers[{k}].{name}"] = a
        return out

    def candidate_outputs(self, case, result, grads: bool):
        y, states_T, g = _unpack(result, grads)
        out = {"y": _np("y", y), **self._flat_states("state_T", states_T)}
        if grads:
            if isinstance(g, Mapping):
                g = (g.get("layers"), g.get("x"), g.get("state0"))
            layer_grads, dx, dstates0 = g
            out["dx"] = _np("dx", dx)
            if case.state0 is not None:
                out.update(self._flat_states("dstate0", dstates0))
            for k, lg in enumerate(layer_grads):
                for name, a in lg.arrays().items():
                    out[f"dlayers[{k}].{name}"] = _np(name, a)
        return out

    def describe(self, case: Case, name: str, index: tuple) -> str:
        idx = tuple(int(i) for i in index)
        m = re.match(r"^dlayers\[(\d+)\]\.(\w+)$", name)
        if m and len(idx) >= 1:
            return f"{name}[{', '.join(map(str, idx))}] (layer {m.group(1)}, {_gate_unit(case, int(m.group(1)), idx[0])})"
        if name in ("y", "dx") and len(idx) >= 2:
            t, b, rest = _step_row(case, idx)
            row = "" if b is None else f", batch row {b}"
            what = "unit" if name == "y" else "input feature"
            return f"{name}[{', '.join(map(str, idx))}] (step {t}{row}, {what} {rest[0]})"
        return super().describe(case, name, index)


# ----------------------------------------------------------------------------------------------- sru
class SRUCellLayout(Layout):
    """``sru.SRUCell`` (the ``sru`` package, 2.6): one unidirectional layer.

    ``weights`` is ``{"state_dict": {...}, "options": {...}}``: the state dict of
    :func:`refrnn.layouts.sru.to_sru` (``weight`` (D, k*H) with the k blocks interleaved innermost,
    ``weight_c``, ``bias``, ``scale_x``) and the constructor options that are not in it
    (``has_skip_term``, ``rescale``, ``use_tanh``, ``v1``). States are ``c`` (B, H); grads hold
    ``"x"``, ``"state0"`` and one entry per state-dict name (``weight``, ``weight_c``, ``bias``).
    """

    name = "sru-cell"

    def options(self, cell: str) -> dict:
        # sru uses the identity skip exactly when D == H (else a projection), at offset 0
        return {"skip": ("auto", "none"), "skip_offset": (0,)} if cell == "sru" else {}

    def unsupported(self, config: CellConfig) -> str | None:
        if [s.cell for s in config.layers] != ["sru"]:
            return "layout 'sru-cell' is one SRU layer"
        return super().unsupported(config)

    @staticmethod
    def _options(p) -> dict:
        return {"has_skip_term": p.skip != "none", "rescale": p.alpha != 1.0, "use_tanh": p.activation == "tanh", "v1": p.v is None}

    def arguments(self, case: Case) -> tuple:
        from ..layouts.sru import to_sru

        p = case.params
        opts = self._options(p)
        weights = {"state_dict": to_sru(p, "SRUCell", rescale=opts["rescale"]), "options": opts}
        args = (weights, case.x, case.state0[0])
        if case.dy is not None:
            args += (case.dy, case.dstate_T[0])
        return args

    def reference_outputs(self, case, y, states_T, grads, dx, dstates0):
        from ..layouts.sru import to_sru

        out = {"y": y, "c_T": states_T[0]}
        if grads is not None:
            out["dx"] = dx
            out["dc_0"] = dstates0[0]
            g = grads[0]
            if g.v is None:  # the package keeps a frozen all-zero weight_c whose gradient is not compared
                g = g.replace(v=None)
            sd = to_sru(g.replace(alpha=1.0) if g.skip == "identity" else g, "SRUCell", rescale=False)
            for key in ("weight", "bias") + (("weight_c",) if g.v is not None else ()):
                out["d" + key] = sd[key]
        return out

    def candidate_outputs(self, case, result, grads: bool):
        y, c_T, g = _unpack(result, grads)
        out = {"y": _np("y", y), "c_T": _np("c_T", c_T)}
        if grads:
            out["dx"] = _np("grads['x']", g["x"])
            out["dc_0"] = _np("grads['state0']", g["state0"])
            for key in ("weight", "bias", "weight_c"):
                if key in g and (key != "weight_c" or case.params.v is not None):
                    out["d" + key] = _np(f"grads[{key!r}]", g[key])
        return out

    def describe(self, case: Case, name: str, index: tuple) -> str:
        idx = tuple(int(i) for i in index)
        H = case.config.layers[0].H
        if name == "y":
            return f"y[{idx[0]}, {idx[1]}, {idx[2]}] (step {idx[0]}, batch row {idx[1]}, unit {idx[2]})"
        if name == "dweight" and len(idx) == 2:
            k = case.params.k
            unit, block = divmod(idx[1], k)
            return f"dweight[{idx[0]}, {idx[1]}] (input feature {idx[0]}, block {'cfrs'[block]}, unit {unit})"
        if name in ("dbias", "dweight_c"):
            return f"{name}[{idx[0]}] (gate {'fr'[idx[0] // H]}, unit {idx[0] % H})"
        return super().describe(case, name, index)


LAYOUTS: dict[str, Layout] = {
    "torch": TorchLayout(cell=False),
    "torch-cell": TorchLayout(cell=True),
    "sru-cell": SRUCellLayout(),
    "refrnn": RefrnnLayout(),
}


def register_layout(layout: Layout) -> None:
    """Make ``layout`` available to :func:`refrnn.verify.verify` under ``layout.name``."""
    if not isinstance(layout, Layout):
        raise TypeError(f"layout: expected a refrnn.verify.adapters.Layout, got {type(layout).__name__}")
    LAYOUTS[layout.name] = layout


def get_layout(name) -> Layout:
    if isinstance(name, Layout):
        return name
    try:
        return LAYOUTS[name]
    except (KeyError, TypeError):
        raise ValueError(f"layout: unknown layout {name!r}; expected one of {', '.join(map(repr, LAYOUTS))}") from None


# ------------------------------------------------------------------------------------ torch candidates
_TORCH_KINDS = {"GRU": ("gru", "torch"), "LSTM": ("lstm", "torch"), "GRUCell": ("gru", "torch-cell"), "LSTMCell": ("lstm", "torch-cell")}
_TORCH_KINDS.update({"RNN": ("rnn", "torch"), "RNNCell": ("rnn", "torch-cell")})
_TORCH_BLOCKS = {"gru": 3, "lstm": 4, "rnn": 1}  # gate blocks stacked in weight_hh


class TorchModule:
    """A candidate that runs a ``torch.nn`` recurrent module (or a drop-in with the same constructor,
    state-dict names and call signature) on the weights it is given, with autograd for gradients.

    ``factory(D, H, num_layers, dtype, **conventions)`` builds the module for each drawn shape, with
    the keywords ``proj_size=P``, ``bidirectional=True`` and ``batch_first=True`` passed only when a
    problem needs them; the default builds ``torch.nn.<kind>``. Variable lengths go through
    ``pack_padded_sequence(..., enforce_sorted=False)`` and ``pad_packed_sequence(..., total_length=T)``,
    a missing initial state is the module's own default (``hx=None``). Attributes ``cell``, ``layout``,
    ``dtype``, ``name``, ``max_layers`` and ``conventions`` tell :func:`refrnn.verify.verify` how to
    drive it: every convention of the layout. ``nonlinearity`` ("tanh" or "relu") is an ``RNN``'s or
    ``RNNCell``'s, which its state dict does not carry: the candidate declares it as its only
    ``options["activation"]``, so verify draws that activation alone.
    """

    def __init__(self, kind: str = "GRU", *, dtype="float64", factory=None, name=None, nonlinearity: str = "tanh"):
        if kind not in _TORCH_KINDS:
            raise ValueError(f"kind: expected one of {', '.join(_TORCH_KINDS)}, got {kind!r}")
        self.kind = kind
        self.cell, self.layout = _TORCH_KINDS[kind]
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype: expected float32 or float64, got {self.dtype}")
        self.max_layers = 1 if kind.endswith("Cell") else None
        self.conventions = tuple(LAYOUTS[self.layout].CONVENTIONS)
        self.factory = factory
        self.name = name or f"torch.nn.{kind}"
        self.nonlinearity = nonlinearity
        if self.cell == "rnn":
            from ..cells.rnn import ACTIVATIONS

            if nonlinearity not in ACTIVATIONS:
                raise ValueError(f"nonlinearity: expected one of {', '.join(map(repr, ACTIVATIONS))}, got {nonlinearity!r}")
            self.options = {"activation": (nonlinearity,)}
            if name is None:
                self.name = f"torch.nn.{kind}({nonlinearity})"
        elif nonlinearity != "tanh":
            raise ValueError(f"nonlinearity: only RNN and RNNCell take one, not {kind}")

    def __repr__(self) -> str:
        return f"TorchModule({self.kind!r}, dtype={self.dtype.name!r})"

    def _build(self, torch, D: int, H: int, L: int, extra: dict):
        tdtype = torch.float32 if self.dtype == np.float32 else torch.float64
        if self.factory is not None:
            return self.factory(D, H, L, tdtype, **extra)
        cls = getattr(torch.nn, self.kind)
        if self.cell == "rnn":
            extra = {**extra, "nonlinearity": self.nonlinearity}
        if self.kind.endswith("Cell"):
            return cls(D, H, dtype=tdtype, **({"nonlinearity": self.nonlinearity} if self.cell == "rnn" else {}))
        return cls(D, H, num_layers=L, dtype=tdtype, **extra)

    def __call__(self, weights, x, state0, dy=None, dstate_T=None, *, lengths=None, batch_first=False):
        import torch

        is_cell = self.kind.endswith("Cell")
        is_lstm = self.cell == "lstm"
        W = weights["weight_hh" if is_cell else "weight_hh_l0"]
        H = W.shape[0] // _TORCH_BLOCKS[self.cell]
        D = weights["weight_ih" if is_cell else "weight_ih_l0"].shape[1]
        L = 1 if is_cell else sum(1 for k in weights if k.startswith("weight_ih_l") and not k.endswith("_reverse"))
        extra = {}
        if "weight_hr_l0" in weights:
            extra["proj_size"] = weights["weight_hr_l0"].shape[0]
        if "weight_ih_l0_reverse" in weights:
            extra["bidirectional"] = True
        if batch_first:
            extra["batch_first"] = True
        module = self._build(torch, D, H, L, extra)
        module.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in weights.items()})
        want_grads = dy is not None

        def leaf(a):
            return torch.from_numpy(np.array(a, copy=True)).requires_grad_(want_grads)

        tx = leaf(x)
        ts0 = None if state0 is None else (tuple(leaf(a) for a in state0) if is_lstm else (leaf(state0),))
        hx = None if ts0 is None else (ts0 if is_lstm else ts0[0])
        with torch.set_grad_enabled(want_grads), warnings.catch_warnings():
            # proj_size makes PyTorch fall back from oneDNN to its default kernel, and says so
            warnings.filterwarnings("ignore", message="LSTM with projections is not supported with oneDNN")
            if is_cell:
                state, ys = hx, []
                for t in range(tx.shape[0]):
                    state = module(tx[t], state)
                    ys.append(state[0] if is_lstm else state)
                ty = torch.stack(ys)  # T >= 1: verify never draws empty sequences for torch
                tsT = tuple(state) if is_lstm else (state,)
            else:
                inp = tx
                if lengths is not None:
                    pack = torch.nn.utils.rnn.pack_padded_sequence
                    inp = pack(tx, torch.as_tensor(np.asarray(lengths)), batch_first=batch_first, enforce_sorted=False)
                ty, state = module(inp, hx)
                if lengths is not None:
                    T = tx.shape[1 if batch_first else 0]
                    ty, _ = torch.nn.utils.rnn.pad_packed_sequence(ty, batch_first=batch_first, total_length=T)
                tsT = tuple(state) if is_lstm else (state,)
        y = ty.detach().numpy()
        state_T = tuple(s.detach().numpy() for s in tsT) if is_lstm else tsT[0].detach().numpy()
        if not want_grads:
            return y, state_T
        upstream = tuple(dstate_T) if is_lstm else (dstate_T,)
        loss = (ty * torch.from_numpy(np.asarray(dy))).sum()
        for s, g in zip(tsT, upstream):
            loss = loss + (s * torch.from_numpy(np.asarray(g))).sum()
        loss.backward()

        def grad_of(t):
            return np.zeros(tuple(t.shape), dtype=self.dtype) if t.grad is None else t.grad.numpy()

        grads = {name: grad_of(p) for name, p in module.named_parameters()}
        grads["x"] = grad_of(tx)
        if ts0 is not None:
            grads["state0"] = tuple(grad_of(s) for s in ts0) if is_lstm else grad_of(ts0[0])
        return y, state_T, grads


def torch_module(kind: str = "GRU", *, dtype="float64", factory=None, name=None, nonlinearity: str = "tanh") -> TorchModule:
    """A candidate for ``torch.nn.<kind>`` (``GRU``, ``LSTM``, ``RNN``, their ``*Cell``) in ``dtype``;
    ``nonlinearity`` for ``RNN``/``RNNCell``."""
    return TorchModule(kind, dtype=dtype, factory=factory, name=name, nonlinearity=nonlinearity)


class SRUCellModule:
    """A candidate that runs ``sru.SRUCell`` (the ``sru`` package) in ``dtype`` on the weights it is
    given (layout ``sru-cell``), in ``eval()`` mode, with autograd for gradients. Importing ``sru``
    compiles its C++ extension on first use (about 40 s)."""

    cell, layout, max_layers = "sru", "sru-cell", 1

    def __init__(self, *, dtype="float64", name="sru.SRUCell"):
        self.dtype = np.dtype(dtype)
        self.name = name

    def __repr__(self) -> str:
        return f"SRUCellModule(dtype={self.dtype.name!r})"

    def __call__(self, weights, x, state0, dy=None, dstate_T=None):
        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # no CUDA here / CPU with autograd: the package says so
            import sru

            sd, opts = weights["state_dict"], weights["options"]
            D, k_out = sd["weight"].shape
            H = sd["bias"].shape[0] // 2
            module = sru.SRUCell(D, H, **opts)
            module = (module.double() if self.dtype == np.float64 else module.float()).eval()
            module.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()})
            want = dy is not None
            tx = torch.from_numpy(np.array(x, copy=True)).requires_grad_(want)
            tc = torch.from_numpy(np.array(state0, copy=True)).requires_grad_(want)
            with torch.set_grad_enabled(want):
                h, c = module(tx, tc)
            if not want:
                return h.detach().numpy(), c.detach().numpy()
            loss = (h * torch.from_numpy(np.asarray(dy))).sum() + (c * torch.from_numpy(np.asarray(dstate_T))).sum()
            loss.backward()
        grads = {n: p.grad.numpy() for n, p in module.named_parameters() if p.grad is not None}
        grads["x"] = tx.grad.numpy()
        grads["state0"] = tc.grad.numpy()
        return h.detach().numpy(), c.detach().numpy(), grads


def sru_available() -> bool:
    """Whether the ``sru`` package imports and refrnn has an SRU cell and layout to compare it with."""
    if "sru" not in CELLS or "sru-cell" not in LAYOUTS:
        return False
    try:
        import sru  # noqa: F401
    except Exception:
        return False
    return True


def builtin_candidates(dtypes=("float64", "float32")) -> list[TorchModule]:
    """The modules ``refrnn verify torch`` checks, in table order."""
    return [torch_module(kind, dtype=dt) for kind in ("GRU", "GRUCell", "LSTM", "LSTMCell") for dt in dtypes]


__all__ = [
    "LAYOUTS",
    "LAYOUT_CONVENTIONS",
    "Layout",
    "NotExpressible",
    "RefrnnLayout",
    "SRUCellLayout",
    "SRUCellModule",
    "TorchLayout",
    "TorchModule",
    "builtin_candidates",
    "conventions_of",
    "get_layout",
    "register_layout",
    "sru_available",
    "torch_module",
]
