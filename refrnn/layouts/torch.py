"""PyTorch layout: ``nn.GRU``, ``nn.LSTM``, ``nn.GRUCell``, ``nn.LSTMCell`` state dicts.

PyTorch stacks the gates of ``weight_ih_l{k}`` (gates*H, D), ``weight_hh_l{k}`` (gates*H, H),
``bias_ih_l{k}`` and ``bias_hh_l{k}`` (gates*H,) in the orders r, z, n (GRU) and i, f, g, o (LSTM),
uses the update rule ``h' = (1 - z) * n + z * h`` and applies the reset gate after the recurrent
product. Those are refrnn's own conventions (see :mod:`refrnn.cells.gru`), so the conversion is a
renaming: ``W_x = weight_ih``, ``W_h = weight_hh``, ``b_x = bias_ih``, ``b_h = bias_hh``, bit-exact
both ways. Cells (``nn.GRUCell``/``nn.LSTMCell``) use the same names without the ``_l{k}`` suffix.
A module built with ``bias=False`` has no bias entries: they read as zeros.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np

from ..cells import GRUParams, LSTMParams
from . import to_numpy

KINDS = ("GRU", "LSTM", "GRUCell", "LSTMCell")
_KEY = re.compile(r"^(weight|bias)_(ih|hh)(?:_l(\d+))?$")
_FIELDS = {("weight", "ih"): "W_x", ("weight", "hh"): "W_h", ("bias", "ih"): "b_x", ("bias", "hh"): "b_h"}


def _kind(kind: str) -> tuple[type, bool]:
    if kind not in KINDS:
        raise ValueError(f"kind: unknown PyTorch module {kind!r}; expected one of {', '.join(KINDS)}")
    return (GRUParams if kind.startswith("GRU") else LSTMParams), kind.endswith("Cell")


def from_torch(state_dict: Mapping, kind: str):
    """Parameters from a PyTorch state dict: a tuple of layers for ``GRU``/``LSTM``, one container for cells.

    Keys PyTorch would not write for ``kind`` (``_reverse`` directions, ``weight_hr`` projections, a
    stray suffix) raise ``ValueError`` rather than being dropped.
    """
    cls, is_cell = _kind(kind)
    layers: dict[int, dict[str, np.ndarray]] = {}
    for key, value in state_dict.items():
        m = _KEY.match(key)
        if m is None or (m.group(3) is None) != is_cell:
            expect = "weight_ih, weight_hh, bias_ih, bias_hh" if is_cell else "weight_ih_l{k}, weight_hh_l{k}, bias_ih_l{k}, bias_hh_l{k}"
            raise ValueError(f"state_dict: unexpected key {key!r} for torch.nn.{kind}; expected only {expect}")
        layer = 0 if is_cell else int(m.group(3))
        layers.setdefault(layer, {})[_FIELDS[m.group(1), m.group(2)]] = to_numpy(key, value)
    if sorted(layers) != list(range(len(layers))) or not layers:
        raise ValueError(f"state_dict: expected layers 0..L-1 for torch.nn.{kind}, found layers {sorted(layers)}")
    out = []
    for k in range(len(layers)):
        arrays = layers[k]
        for w in ("W_x", "W_h"):
            if w not in arrays:
                raise ValueError(f"state_dict: layer {k} of torch.nn.{kind} lacks its {'weight_ih' if w == 'W_x' else 'weight_hh'} entry")
        for b in ("b_x", "b_h"):  # bias=False modules have no bias entries
            arrays.setdefault(b, np.zeros(arrays["W_h"].shape[0], dtype=arrays["W_h"].dtype))
        out.append(cls(**arrays))
    return out[0] if is_cell else tuple(out)


def to_torch(params, kind: str, *, bias: bool = True) -> dict[str, np.ndarray]:
    """A PyTorch state dict (NumPy arrays) for ``kind``; ``params`` is a sequence of layers, or one
    container for cells. ``bias=False`` targets a module built without biases: they must be zero."""
    cls, is_cell = _kind(kind)
    layers = (params,) if is_cell else tuple(params)
    out: dict[str, np.ndarray] = {}
    for k, p in enumerate(layers):
        if type(p) is not cls:
            raise TypeError(f"params[{k}]: torch.nn.{kind} needs {cls.__name__}, got {type(p).__name__}")
        if isinstance(p, GRUParams) and p.reset != "after":
            raise ValueError(
                f"params[{k}]: torch.nn.{kind} applies the reset gate after the recurrent product (reset='after'); "
                f"these weights are reset='before', which no PyTorch GRU computes, so no exact conversion exists"
            )
        suffix = "" if is_cell else f"_l{k}"
        for (what, side), field in _FIELDS.items():
            arr = getattr(p, field)
            if what == "bias" and not bias:
                if np.any(arr != 0):
                    raise ValueError(f"params[{k}].{field}: bias=False needs zero biases, but this one is non-zero")
                continue
            out[f"{what}_{side}{suffix}"] = np.array(arr, copy=True)
    return out
