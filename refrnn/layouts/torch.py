"""PyTorch layout: ``nn.GRU``, ``nn.LSTM``, ``nn.RNN`` and their ``*Cell`` state dicts, and ``h_n``/``c_n``.

PyTorch stacks the gates of ``weight_ih_l{k}`` (gates*H, D), ``weight_hh_l{k}`` (gates*H, H),
``bias_ih_l{k}`` and ``bias_hh_l{k}`` (gates*H,) in the orders r, z, n (GRU) and i, f, g, o (LSTM),
uses the update rule ``h' = (1 - z) * n + z * h`` and applies the reset gate after the recurrent
product; ``nn.RNN`` has one block (:mod:`refrnn.cells.rnn`) and a ``nonlinearity`` the state dict
does not record. Those are refrnn's own conventions (see :mod:`refrnn.cells.gru`), so the conversion is a
renaming: ``W_x = weight_ih``, ``W_h = weight_hh``, ``b_x = bias_ih``, ``b_h = bias_hh``, bit-exact
both ways. Cells (``nn.GRUCell``/``nn.LSTMCell``) use the same names without the ``_l{k}`` suffix.
A module built with ``bias=False`` has no bias entries: they read as zeros. The keys are parsed
strictly (:func:`_parse_keys`): a layer number is written as PyTorch writes it (``_l1``, never
``_l01``), every layer and direction has both weights, and its biases are both present or both
absent (a lone ``bias_ih`` is a truncated dict, not a ``bias=False`` module).

``bidirectional=True`` adds the reverse direction's entries, suffixed ``_reverse``, which become a
:class:`refrnn.layers.bidirectional.BiLayer` per layer. ``nn.LSTM(proj_size=P)`` adds ``weight_hr_l{k}`` (P, H),
refrnn's ``W_hr`` (:mod:`refrnn.cells.lstm`); ``weight_hh_l{k}`` is then (4H, P). PyTorch has no
peephole connections, so an LSTM with peepholes is refused.

States: PyTorch's ``h_n`` is one array (L * num_directions, B, H_out) ordered layer 0 forward, layer 0
reverse, layer 1 forward, ...; ``c_n`` likewise with the cell size H. :func:`state_to_torch` and
:func:`state_from_torch` convert between that and refrnn's per-layer tuples (:mod:`refrnn.layers.stack`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from ..cells import GRUParams, LSTMParams, RNNParams
from . import same_dtype, to_numpy

KINDS = ("GRU", "LSTM", "GRUCell", "LSTMCell", "RNN", "RNNCell")
_CLASSES = {"GRU": GRUParams, "LSTM": LSTMParams, "RNN": RNNParams}
_CELLS = (GRUParams, LSTMParams, RNNParams)
_KEY = re.compile(r"^(weight|bias)_(ih|hh|hr)(?:_l(0|[1-9][0-9]*))?(_reverse)?$")  # _l01 is no PyTorch key
_FIELDS = {("weight", "ih"): "W_x", ("weight", "hh"): "W_h", ("bias", "ih"): "b_x", ("bias", "hh"): "b_h"}


def _kind(kind: str) -> tuple[type, bool]:
    if kind not in KINDS:
        raise ValueError(f"kind: unknown PyTorch module {kind!r}; expected one of {', '.join(KINDS)}")
    return _CLASSES[kind.removesuffix("Cell")], kind.endswith("Cell")


def _field(kind: str, what: str, side: str) -> str | None:
    if (what, side) in _FIELDS:
        return _FIELDS[what, side]
    if (what, side) == ("weight", "hr") and kind == "LSTM":
        return "W_hr"
    return None


def _parse_keys(state_dict, kind: str, bidirectional: bool) -> dict:
    """The one strict parser of a PyTorch state dict: ``{(layer, reverse): {field: array}}``, or raise.

    Every key must be one PyTorch writes for ``kind`` (exactly; see :data:`_KEY`), every value a finite
    float array; layers must be numbered 0..L-1.
    """
    cls, is_cell = _kind(kind)
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict: expected a mapping of names to arrays (module.state_dict()), got {type(state_dict).__name__}")
    if len(state_dict) == 0:
        raise ValueError(f"state_dict: empty; expected the weights of a torch.nn.{kind}")
    expect = "weight_ih, weight_hh, bias_ih, bias_hh" if is_cell else "weight_ih_l{k}, weight_hh_l{k}, bias_ih_l{k}, bias_hh_l{k}"
    if kind == "LSTM":
        expect += ", weight_hr_l{k}"
    layers: dict[tuple[int, bool], dict[str, np.ndarray]] = {}
    for key, value in state_dict.items():
        m = _KEY.match(key) if isinstance(key, str) else None
        field = None if m is None else _field(kind, m.group(1), m.group(2))
        if field is None or (m.group(3) is None) != is_cell or (m.group(4) is not None and not bidirectional):
            hint = "; a bidirectional module's state dict needs from_torch(..., bidirectional=True)" if m and m.group(4) else ""
            raise ValueError(f"state_dict: unexpected key {key!r} for torch.nn.{kind}; expected only {expect}{hint}")
        layer = 0 if is_cell else int(m.group(3))
        arr = to_numpy(f"state_dict[{key!r}]", value, weights=True)
        ndim = 2 if m.group(1) == "weight" else 1
        if arr.ndim != ndim or arr.size == 0:
            raise ValueError(f"state_dict[{key!r}]: expected a non-empty {ndim}-d array, got shape {arr.shape}")
        layers.setdefault((layer, m.group(4) is not None), {})[field] = arr
    numbers = sorted({k for k, _ in layers})
    if numbers != list(range(len(numbers))):
        raise ValueError(f"state_dict: expected layers 0..L-1 for torch.nn.{kind}, found layers {numbers}")
    return layers


def from_torch(state_dict: Mapping, kind: str, *, bidirectional: bool = False, nonlinearity: str = "tanh"):
    """Parameters from a PyTorch state dict: a tuple of layers for ``GRU``/``LSTM``, one container for cells.

    ``bidirectional=True`` (as the module was built) reads the ``_reverse`` entries: every layer is
    then a :class:`~refrnn.layers.bidirectional.BiLayer`. Keys PyTorch would not write for ``kind`` (a
    ``_reverse`` entry without ``bidirectional=True``, ``weight_hr`` outside ``LSTM``, a stray suffix,
    a layer number with a leading zero), a missing weight, or one bias of a pair raise ``ValueError``
    rather than being dropped or zero-filled. ``nonlinearity`` is an ``RNN``/``RNNCell``'s (``"tanh"`` or
    ``"relu"``): the state dict does not record it.
    """
    cls, is_cell = _kind(kind)
    if cls is RNNParams:
        from ..cells.rnn import ACTIVATIONS

        if nonlinearity not in ACTIVATIONS:
            raise ValueError(f"nonlinearity: expected one of {', '.join(map(repr, ACTIVATIONS))}, got {nonlinearity!r}")
    elif nonlinearity != "tanh":
        raise ValueError(f"nonlinearity: only torch.nn.RNN and RNNCell take one, not torch.nn.{kind}")
    if bidirectional and is_cell:
        raise ValueError(f"bidirectional: torch.nn.{kind} has no reverse direction")
    layers = _parse_keys(state_dict, kind, bidirectional)
    directions = (False, True) if bidirectional else (False,)
    names = {"W_x": "weight_ih", "W_h": "weight_hh", "b_x": "bias_ih", "b_h": "bias_hh", "W_hr": "weight_hr"}
    out = []
    for k in sorted({k for k, _ in layers}):
        per_direction = []
        for reverse in directions:
            suffix = ("" if is_cell else f"_l{k}") + ("_reverse" if reverse else "")
            arrays = dict(layers.get((k, reverse), {}))
            for w in ("W_x", "W_h"):
                if w not in arrays:
                    raise ValueError(f"state_dict: layer {k} of torch.nn.{kind} lacks its {names[w]}{suffix} entry")
            biases = [b for b in ("b_x", "b_h") if b in arrays]
            if len(biases) == 1:  # bias=False modules have no bias entries at all: both or none
                missing = "b_h" if biases == ["b_x"] else "b_x"
                raise ValueError(
                    f"state_dict: {names[biases[0]]}{suffix} is present but {names[missing]}{suffix} is missing; a "
                    f"torch.nn.{kind} has both biases of a layer (bias=True) or neither (bias=False)"
                )
            if not biases:
                zeros = np.zeros(arrays["W_h"].shape[0], dtype=arrays["W_h"].dtype)
                zeros.setflags(write=False)
                arrays.update(b_x=zeros, b_h=zeros)
            same_dtype({f"state_dict[{names[f] + suffix!r}]": a for f, a in arrays.items()})
            try:
                per_direction.append(cls(**arrays, activation=nonlinearity) if cls is RNNParams else cls(**arrays))
            except (ValueError, TypeError) as err:
                keys = ", ".join(names[f] + suffix for f in arrays if f in names)
                raise type(err)(f"state_dict: the entries {keys} do not form a torch.nn.{kind} layer: {err}") from None
        if bidirectional:
            from ..layers.bidirectional import BiLayer

            try:
                out.append(BiLayer(*per_direction))
            except (ValueError, TypeError) as err:
                raise type(err)(f"state_dict: layer {k}'s two directions do not fit together: {err}") from None
        else:
            out.append(per_direction[0])
    return out[0] if is_cell else tuple(out)


def _directions(p) -> tuple:
    from ..layers.bidirectional import BiLayer

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


def _state_layers(layers) -> tuple:
    """``layers`` as a non-empty tuple of GRU, LSTM or RNN layers (BiLayers of them allowed), or raise."""
    from ..layers.bidirectional import BiLayer

    if isinstance(layers, (*_CELLS, BiLayer)):
        layers = (layers,)
    if not isinstance(layers, (tuple, list)) or len(layers) == 0:
        raise TypeError(f"layers: expected a non-empty sequence of GRU, LSTM or RNN layers, got {type(layers).__name__}")
    layers = tuple(layers)
    for k, p in enumerate(layers):
        if not isinstance(p, (*_CELLS, BiLayer)) or not all(isinstance(d, _CELLS) for d in _directions(p)):
            raise TypeError(f"layers[{k}]: expected GRUParams, LSTMParams, RNNParams or a BiLayer of them, got {type(p).__name__}")
        if any(type(d) is not type(_directions(layers[0])[0]) for d in _directions(p)):
            raise TypeError(f"layers[{k}]: a torch.nn.GRU/LSTM/RNN has one cell type in every layer and direction")
    return layers


def _state_array(name: str, value, size: int, batch_shape: list) -> np.ndarray:
    """One direction's state array: shape batch_shape + (size,), the batch shape shared by all entries."""
    if not isinstance(value, np.ndarray) and not hasattr(value, "__array__"):
        raise TypeError(f"{name}: expected an array of shape (B, {size}) or ({size},), got {type(value).__name__}")
    a = to_numpy(name, value)
    if a.ndim not in (1, 2) or a.shape[-1] != size or (batch_shape and a.shape[:-1] != batch_shape[0]):
        want = f"{batch_shape[0] + (size,)}" if batch_shape else f"(B, {size}) or ({size},)"
        raise ValueError(f"{name}: expected shape {want}, got shape {a.shape}")
    batch_shape.append(a.shape[:-1])
    return a


def state_to_torch(layers, states):
    """PyTorch's ``h_n`` (GRU) or ``(h_n, c_n)`` (LSTM) from refrnn's per-layer states.

    ``h_n`` is (L * num_directions, B, H_out), ordered layer 0 forward, layer 0 reverse, layer 1 ...;
    unbatched states (arrays of shape (H,)) give (L * num_directions, H_out). A bidirectional layer's
    state must be the pair (forward, reverse); an LSTM direction's the pair (h, c).
    """
    layers = _state_layers(layers)
    if not isinstance(states, (tuple, list)):
        raise TypeError(f"states: expected a sequence of {len(layers)} per-layer states, got {type(states).__name__}")
    states = tuple(states)
    if len(states) != len(layers):
        raise ValueError(f"states: expected {len(layers)} per-layer states, got {len(states)}")
    is_lstm = isinstance(_directions(layers[0])[0], LSTMParams)
    hs, cs, batch = [], [], []
    for k, (p, s) in enumerate(zip(layers, states)):
        dirs = _directions(p)
        if len(dirs) == 2:
            if not isinstance(s, (tuple, list)) or len(s) != 2:
                raise TypeError(f"states[{k}]: a bidirectional layer's state is the pair (forward, reverse), got {type(s).__name__}")
            parts = [(f"states[{k}][{j}]", part) for j, part in enumerate(s)]
        else:
            parts = [(f"states[{k}]", s)]
        for d, (where, part) in zip(dirs, parts):
            if is_lstm:
                if not isinstance(part, (tuple, list)) or len(part) != 2:
                    raise TypeError(f"{where}: an LSTM direction's state is the pair (h, c), got {type(part).__name__}")
                hs.append(_state_array(f"{where}[0] (h)", part[0], d.output_size, batch))
                cs.append(_state_array(f"{where}[1] (c)", part[1], d.hidden_size, batch))
            else:
                hs.append(_state_array(where, part, d.hidden_size, batch))
    if is_lstm:
        return np.stack(hs), np.stack(cs)
    return np.stack(hs)


def state_from_torch(layers, h_n, c_n=None) -> tuple:
    """refrnn's per-layer states from PyTorch's ``h_n`` (and ``c_n`` for an LSTM); see :func:`state_to_torch`."""
    layers = _state_layers(layers)
    h_n = to_numpy("h_n", h_n)
    is_lstm = isinstance(_directions(layers[0])[0], LSTMParams)
    if is_lstm != (c_n is not None):
        raise ValueError("c_n: an LSTM's state needs both h_n and c_n; other cells take h_n only")
    c_n = None if c_n is None else to_numpy("c_n", c_n)
    dirs = [d for p in layers for d in _directions(p)]
    n = len(dirs)
    for name, a, size in (("h_n", h_n, dirs[0].output_size), ("c_n", c_n, dirs[0].hidden_size)):
        if a is None:
            continue
        if a.ndim not in (2, 3) or a.shape[0] != n or a.shape[-1] != size:
            raise ValueError(
                f"{name}: expected shape (layers * directions, B, {size}) or (layers * directions, {size}) with "
                f"layers * directions = {n}, got shape {a.shape}"
            )
    if c_n is not None and c_n.shape[:-1] != h_n.shape[:-1]:
        raise ValueError(f"c_n: shape {c_n.shape} does not match h_n's shape {h_n.shape} in its leading axes")
    out, j = [], 0
    for p in layers:
        per = []
        for _ in _directions(p):
            per.append((h_n[j], c_n[j]) if is_lstm else h_n[j])
            j += 1
        out.append(tuple(per) if len(per) == 2 else per[0])
    return tuple(out)
