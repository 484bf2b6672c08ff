"""PyTorch layout: ``nn.GRU``, ``nn.LSTM``, ``nn.GRUCell``, ``nn.LSTMCell`` state dicts, and ``h_n``/``c_n``.

PyTorch stacks the gates of ``weight_ih_l{k}`` (gates*H, D), ``weight_hh_l{k}`` (gates*H, H),
``bias_ih_l{k}`` and ``bias_hh_l{k}`` (gates*H,) in the orders r, z, n (GRU) and i, f, g, o (LSTM),
uses the update rule ``h' = (1 - z) * n + z * h`` and applies the reset gate after the recurrent
product. Those are refrnn's own conventions (see :mod:`refrnn.cells.gru`), so the conversion is a
renaming: ``W_x = weight_ih``, ``W_h = weight_hh``, ``b_x = bias_ih``, ``b_h = bias_hh``, bit-exact
both ways. Cells (``nn.GRUCell``/``nn.LSTMCell``) use the same names without the ``_l{k}`` suffix.
A module built with ``bias=False`` has no bias entries: they read as zeros.

``bidirectional=True`` adds the reverse direction's entries, suffixed ``_reverse``, which become a
:class:`refrnn.bidirectional.BiLayer` per layer. ``nn.LSTM(proj_size=P)`` adds ``weight_hr_l{k}`` (P, H),
refrnn's ``W_hr`` (:mod:`refrnn.cells.lstm`); ``weight_hh_l{k}`` is then (4H, P). PyTorch has no
peephole connections, so an LSTM with peepholes is refused.

States: PyTorch's ``h_n`` is one array (L * num_directions, B, H_out) ordered layer 0 forward, layer 0
reverse, layer 1 forward, ...; ``c_n`` likewise with the cell size H. :func:`state_to_torch` and
:func:`state_from_torch` convert between that and refrnn's per-layer tuples (:mod:`refrnn.stack`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from ..cells import GRUParams, LSTMParams
from . import to_numpy

KINDS = ("GRU", "LSTM", "GRUCell", "LSTMCell")
_KEY = re.compile(r"^(weight|bias)_(ih|hh|hr)(?:_l(\d+))?(_reverse)?$")
_FIELDS = {("weight", "ih"): "W_x", ("weight", "hh"): "W_h", ("bias", "ih"): "b_x", ("bias", "hh"): "b_h"}


def _kind(kind: str) -> tuple[type, bool]:
    if kind not in KINDS:
        raise ValueError(f"kind: unknown PyTorch module {kind!r}; expected one of {', '.join(KINDS)}")
    return (GRUParams if kind.startswith("GRU") else LSTMParams), kind.endswith("Cell")


def _field(kind: str, what: str, side: str) -> str | None:
    if (what, side) in _FIELDS:
        return _FIELDS[what, side]
    if (what, side) == ("weight", "hr") and kind == "LSTM":
        return "W_hr"
    return None


def from_torch(state_dict: Mapping, kind: str, *, bidirectional: bool = False):
    """Parameters from a PyTorch state dict: a tuple of layers for ``GRU``/``LSTM``, one container for cells.

    ``bidirectional=True`` (as the module was built) reads the ``_reverse`` entries: every layer is
    then a :class:`~refrnn.bidirectional.BiLayer`. Keys PyTorch would not write for ``kind`` (a
    ``_reverse`` entry without ``bidirectional=True``, ``weight_hr`` outside ``LSTM``, a stray suffix)
    raise ``ValueError`` rather than being dropped.
    """
    cls, is_cell = _kind(kind)
    if bidirectional and is_cell:
        raise ValueError(f"bidirectional: torch.nn.{kind} has no reverse direction")
    directions = (False, True) if bidirectional else (False,)
    layers: dict[tuple[int, bool], dict[str, np.ndarray]] = {}
    for key, value in state_dict.items():
        m = _KEY.match(key)
        field = None if m is None else _field(kind, m.group(1), m.group(2))
        if field is None or (m.group(3) is None) != is_cell or (m.group(4) is not None and not bidirectional):
            expect = "weight_ih, weight_hh, bias_ih, bias_hh" if is_cell else "weight_ih_l{k}, weight_hh_l{k}, bias_ih_l{k}, bias_hh_l{k}"
            if kind == "LSTM":
                expect += ", weight_hr_l{k}"
            hint = "; a bidirectional module's state dict needs from_torch(..., bidirectional=True)" if m and m.group(4) else ""
            raise ValueError(f"state_dict: unexpected key {key!r} for torch.nn.{kind}; expected only {expect}{hint}")
        layer = 0 if is_cell else int(m.group(3))
        layers.setdefault((layer, m.group(4) is not None), {})[field] = to_numpy(key, value)
    numbers = sorted({k for k, _ in layers})
    if numbers != list(range(len(numbers))) or not layers:
        raise ValueError(f"state_dict: expected layers 0..L-1 for torch.nn.{kind}, found layers {numbers}")
    out = []
    for k in numbers:
        per_direction = []
        for reverse in directions:
            suffix = "_reverse" if reverse else ""
            arrays = layers.get((k, reverse), {})
            for w in ("W_x", "W_h"):
                if w not in arrays:
                    name = "weight_ih" if w == "W_x" else "weight_hh"
                    key = f"{name}{'' if is_cell else f'_l{k}'}{suffix}"
                    raise ValueError(f"state_dict: layer {k} of torch.nn.{kind} lacks its {key} entry")
            for b in ("b_x", "b_h"):  # bias=False modules have no bias entries
                arrays.setdefault(b, np.zeros(arrays["W_h"].shape[0], dtype=arrays["W_h"].dtype))
            per_direction.append(cls(**arrays))
        if bidirectional:
            from ..bidirectional import BiLayer

            out.append(BiLayer(*per_direction))
        else:
            out.append(per_direction[0])
    return out[0] if is_cell else tuple(out)


def _directions(p) -> tuple:
    from ..bidirectional import BiLayer

    return (p.fwd, p.rev) if isinstance(p, BiLayer) else (p,)


def to_torch(params, kind: str, *, bias: bool = True) -> dict[str, np.ndarray]:
    """A PyTorch state dict (NumPy arrays) for ``kind``; ``params`` is a sequence of layers, or one
    container for cells. ``bias=False`` targets a module built without biases: they must be zero.

    Bidirectional layers (BiLayer) write the ``_reverse`` entries; PyTorch needs every layer to be
    bidirectional or none, and one hidden (and projection) size for all layers and directions.
    """
    cls, is_cell = _kind(kind)
    layers = (params,) if is_cell else tuple(params)
    out: dict[str, np.ndarray] = {}
    ndirs = {len(_directions(p)) for p in layers}
    if len(ndirs) > 1:
        raise ValueError(f"params: torch.nn.{kind} is bidirectional in every layer or in none; these layers mix both")
    first = _directions(layers[0])[0]
    for k, p in enumerate(layers):
        for reverse, d in enumerate(_directions(p)):
            where = f"params[{k}]" + (".rev" if reverse else ".fwd" if len(_directions(p)) == 2 else "")
            if type(d) is not cls:
                raise TypeError(f"{where}: torch.nn.{kind} needs {cls.__name__}, got {type(d).__name__}")
            if isinstance(d, GRUParams) and d.reset != "after":
                raise ValueError(
                    f"{where}: torch.nn.{kind} applies the reset gate after the recurrent product (reset='after'); "
                    f"these weights are reset='before', which no PyTorch GRU computes, so no exact conversion exists"
                )
            if isinstance(d, LSTMParams):
                if d.has_peepholes:
                    raise ValueError(
                        f"{where}: torch.nn.{kind} has no peephole connections (w_ic, w_fc, w_oc); no exact conversion exists"
                    )
                if d.W_hr is not None and is_cell:
                    raise ValueError(f"{where}: torch.nn.LSTMCell has no projection (W_hr); use torch.nn.LSTM(proj_size=...)")
            if (d.hidden_size, getattr(d, "proj_size", 0)) != (first.hidden_size, getattr(first, "proj_size", 0)):
                raise ValueError(
                    f"{where}: torch.nn.{kind} has one hidden size (and proj_size) for every layer and direction; "
                    f"got {d.hidden_size} (proj {getattr(d, 'proj_size', 0)}) here and {first.hidden_size} "
                    f"(proj {getattr(first, 'proj_size', 0)}) in layer 0"
                )
            suffix = ("" if is_cell else f"_l{k}") + ("_reverse" if reverse else "")
            for (what, side), field in _FIELDS.items():
                arr = getattr(d, field)
                if what == "bias" and not bias:
                    if np.any(arr != 0):
                        raise ValueError(f"{where}.{field}: bias=False needs zero biases, but this one is non-zero")
                    continue
                out[f"{what}_{side}{suffix}"] = np.array(arr, copy=True)
            if getattr(d, "W_hr", None) is not None:
                out[f"weight_hr{suffix}"] = np.array(d.W_hr, copy=True)
    return out


def state_to_torch(layers, states):
    """PyTorch's ``h_n`` (GRU) or ``(h_n, c_n)`` (LSTM) from refrnn's per-layer states.

    ``h_n`` is (L * num_directions, B, H_out), ordered layer 0 forward, layer 0 reverse, layer 1 ...;
    unbatched states (arrays of shape (H,)) give (L * num_directions, H_out).
    """
    layers, states = tuple(layers), tuple(states)
    if len(states) != len(layers):
        raise ValueError(f"states: expected {len(layers)} per-layer states, got {len(states)}")
    flat = []
    for p, s in zip(layers, states):
        flat.extend(s if len(_directions(p)) == 2 else (s,))
    if isinstance(_directions(layers[0])[0], LSTMParams):
        return np.stack([s[0] for s in flat]), np.stack([s[1] for s in flat])
    return np.stack(flat)


def state_from_torch(layers, h_n, c_n=None) -> tuple:
    """refrnn's per-layer states from PyTorch's ``h_n`` (and ``c_n`` for an LSTM); see :func:`state_to_torch`."""
    layers = tuple(layers)
    h_n = to_numpy("h_n", h_n)
    is_lstm = isinstance(_directions(layers[0])[0], LSTMParams)
    if is_lstm != (c_n is not None):
        raise ValueError("c_n: an LSTM's state needs both h_n and c_n; other cells take h_n only")
    c_n = None if c_n is None else to_numpy("c_n", c_n)
    n = sum(len(_directions(p)) for p in layers)
    for name, a in (("h_n", h_n), ("c_n", c_n)):
        if a is not None and a.shape[0] != n:
            raise ValueError(f"{name}: expected {n} = layers * directions entries on the first axis, got shape {a.shape}")
    out, j = [], 0
    for p in layers:
        per = []
        for _ in _directions(p):
            per.append((h_n[j], c_n[j]) if is_lstm else h_n[j])
            j += 1
        out.append(tuple(per) if len(per) == 2 else per[0])
    return tuple(out)
