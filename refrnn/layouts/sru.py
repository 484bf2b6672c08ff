r"""The ``sru`` package's layout (version 2.6.0): ``sru.SRUCell`` and ``sru.SRU`` state dicts.

Read from ``sru/modules.py`` and ``sru/ops.py`` of sru 2.6.0 and checked against it by running it
(tests/test_sru_package.py). One layer (``SRUCell``; layer ``l`` of ``SRU`` under ``rnn_lst.{l}.``)
holds, with ``ndir`` = 2 for a bidirectional layer, else 1, and ``out = ndir * H``::

    weight    (D, out * k)    the k blocks interleaved innermost: column (dir * H + j) * k + m, m in
                              (candidate, forget, reset, skip projection) -- ``weight.view(D, ndir, H, k)``
    weight_c  (2 * out,)      flat; viewed as (2, ndir, H) = [v_f | v_r], each direction's H entries in turn
    bias      (2 * out,)      flat; viewed as (2, ndir, H) = [b_f | b_r]; ``highway_bias`` initialises b_r
    scale_x   (1,)            a buffer: the highway scale alpha (see below)

``k`` is 4 exactly when ``has_skip_term`` is on and ``D != out`` (the fourth block is the skip
projection ``W_s``), else 3. refrnn's :class:`~refrnn.cells.sru.SRUParams` stacks the same blocks as
rows, ``W = [W_c; W_f; W_r (; W_s)]`` (k*H, D), ``v = [v_f; v_r]``, ``b = [b_f; b_r]``, one parameter
set per direction. Conversion is a re-ordering, bit-exact both ways.

Options that are not in the state dict and must be given (or read with :func:`sru_options`):

``bidirectional``
    A bidirectional layer maps to a pair ``(forward, reverse)`` of parameter sets (run them with
    :func:`refrnn.cells.sru.bidirectional_forward`). With ``k = 3`` and a skip term its input has
    width ``2H`` and each direction's highway adds its own half of ``x``: ``skip_offset`` 0 and H.
``has_skip_term`` (default True)
    off: ``skip="none"``.
``rescale`` (default: True for ``SRUCell``, False for ``SRU`` -- the package's defaults differ)
    With ``k = 3`` the package multiplies ``x`` by ``scale_x`` at run time when ``rescale`` is on.
    ``scale_x`` is ``sqrt(1 + 2 exp(highway_bias))`` computed once at construction and stored in a
    float32 buffer (so it is float32-rounded even in a float64 module); it becomes ``alpha``. With
    ``k = 4`` nothing is scaled at run time (the package multiplied the initial skip block by the
    scale instead), so ``alpha = 1`` and ``scale_x`` is ignored.
``use_tanh`` (default False)
    ``activation="tanh"`` (the package's deprecated ``use_tanh``; identity otherwise).
``v_terms`` (default True)
    off: the package's ``v1=True``, which freezes ``weight_c`` at zero; it must be zero and
    becomes ``v=None``.

Not convertible (a ``ValueError`` names the key): ``projection_size``/``n_proj`` (``weight_proj``),
``layer_norm``, ``custom_m`` and ``proj_input_to_hidden_first`` (``input_to_hidden``). Dropout is a
training-time feature of the module, not of the layout: compare in ``eval()`` mode.

Padding (``mask_pad``: c kept, h zeroed at padded steps) is a forward argument in both libraries; see
:mod:`refrnn.cells.sru`. ``SRU``'s final state ``c`` is (L, B, out): per layer, ``[c_fwd | c_rev]``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import numpy as np

from ..cells.sru import SRUParams
from . import to_numpy

KINDS = ("SRU", "SRUCell")
RESCALE_DEFAULT = {"SRU": False, "SRUCell": True}
_LAYER_KEYS = ("weight", "weight_c", "bias", "scale_x")
_UNSUPPORTED = {
    "weight_proj": "projection_size/n_proj > 0",
    "layer_norm": "layer_norm=True",
    "custom_m": "custom_m",
    "input_to_hidden": "proj_input_to_hidden_first=True",
}


def _kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind: unknown sru module {kind!r}; expected one of {', '.join(KINDS)}")
    return kind


def _rescale(kind: str, rescale) -> bool:
    return RESCALE_DEFAULT[kind] if rescale is None else bool(rescale)


def sru_options(module) -> dict:
    """The conversion options of an ``sru.SRU`` or ``sru.SRUCell`` instance, read from its attributes
    (no torch import): ``{"kind", "bidirectional", "has_skip_term", "rescale", "use_tanh", "v_terms"}``.

    Raises ``ValueError`` for features refrnn does not model (projection, layer norm, custom_m)."""
    if hasattr(module, "rnn_lst"):
        kind, cells = "SRU", list(module.rnn_lst)
        if getattr(module, "input_to_hidden", None) is not None:
            raise ValueError(f"module: {_UNSUPPORTED['input_to_hidden']} is not supported by refrnn's SRU layout")
    elif hasattr(module, "weight_c") and hasattr(module, "num_matrices"):
        kind, cells = "SRUCell", [module]
    else:
        raise TypeError(f"module: expected an sru.SRU or sru.SRUCell, got {type(module).__name__}")
    for k, cell in enumerate(cells):
        for attr, what in (("projection_size", "weight_proj"), ("layer_norm", "layer_norm"), ("custom_m", "custom_m")):
            if getattr(cell, attr, None):
                raise ValueError(f"module: layer {k} uses {_UNSUPPORTED[what]}, which refrnn's SRU layout does not support")
        if cell.activation_type not in (0, 1):
            raise ValueError(
                f"module: layer {k} has activation_type {cell.activation_type}; sru 2.6 defines 0 (identity) and 1 (tanh)"
            )
    cell = cells[0]
    return {
        "kind": kind,
        "bidirectional": bool(cell.bidirectional),
        "has_skip_term": bool(cell.has_skip_term),
        "rescale": bool(cell.rescale),
        "use_tanh": cell.activation_type == 1,
        "v_terms": not cell.v1,
    }


def _layer_from_sru(where: str, arrays: dict, *, ndir, has_skip_term, rescale, use_tanh, v_terms):
    for key in ("weight", "weight_c", "bias"):
        if key not in arrays:
            raise ValueError(f"state_dict: {where} lacks its {key!r} entry")
    weight, weight_c, bias = arrays["weight"], arrays["weight_c"], arrays["bias"]
    if weight_c.ndim != 1 or weight_c.shape[0] == 0 or weight_c.shape[0] % (2 * ndir):
        raise ValueError(f"state_dict: {where}weight_c: expected shape (2*{ndir}*H,) for ndir={ndir}, got {weight_c.shape}")
    H = weight_c.shape[0] // (2 * ndir)
    out = ndir * H
    if bias.shape != weight_c.shape:
        raise ValueError(f"state_dict: {where}bias: expected shape {weight_c.shape} like weight_c, got {bias.shape}")
    if weight.ndim != 2 or weight.shape[1] % out or weight.shape[1] // out not in (3, 4):
        raise ValueError(f"state_dict: {where}weight: expected shape (D, {out}*k) with k = 3 or 4, got {weight.shape}")
    D, k = weight.shape[0], weight.shape[1] // out
    k_sru = 4 if has_skip_term and D != out else 3
    if k != k_sru:
        raise ValueError(
            f"state_dict: {where}weight has k={k} blocks, but sru uses k={k_sru} for input size {D}, output size {out} "
            f"and has_skip_term={has_skip_term}; check has_skip_term and bidirectional"
        )
    if not v_terms and np.any(weight_c != 0):
        raise ValueError(f"state_dict: {where}weight_c is non-zero, but v_terms=False (sru's v1=True) needs it zero")
    if not has_skip_term:
        skip, alpha = "none", 1.0
    elif k == 4:
        skip, alpha = "projection", 1.0  # sru applies no scale at run time with a skip projection
    else:
        skip, alpha = "identity", 1.0
        if rescale:
            if "scale_x" not in arrays:
                raise ValueError(f"state_dict: {where} lacks 'scale_x', which rescale=True applies to the skip term")
            scale_x = arrays["scale_x"]
            if scale_x.shape != (1,):
                raise ValueError(f"state_dict: {where}scale_x: expected shape (1,), got {scale_x.shape}")
            alpha = float(scale_x[0])
    blocks = weight.reshape(D, ndir, H, k)
    wc, b = weight_c.reshape(2, ndir, H), bias.reshape(2, ndir, H)
    directions = []
    for d in range(ndir):
        directions.append(
            SRUParams(
                W=np.ascontiguousarray(blocks[:, d].transpose(2, 1, 0).reshape(k * H, D)),
                v=np.concatenate([wc[0, d], wc[1, d]]) if v_terms else None,
                b=np.concatenate([b[0, d], b[1, d]]),
                skip=skip,
                alpha=alpha,
                skip_offset=d * H if skip == "identity" else 0,
                activation="tanh" if use_tanh else "identity",
            )
        )
    return directions[0] if ndir == 1 else tuple(directions)


def from_sru(
    state_dict: Mapping,
    kind: str = "SRU",
    *,
    bidirectional: bool = False,
    has_skip_term: bool = True,
    rescale: bool | None = None,
    use_tanh: bool = False,
    v_terms: bool = True,
):
    """Parameters from an sru state dict (arrays or tensors). ``kind="SRU"``: a tuple of layers, bottom
    first; ``"SRUCell"``: one layer. A layer is an :class:`SRUParams`, or a ``(forward, reverse)`` pair
    when ``bidirectional``. ``rescale=None`` takes the kind's default (see the module docstring)."""
    kind = _kind(kind)
    rescale = _rescale(kind, rescale)
    ndir = 2 if bidirectional else 1
    layers: dict[int, dict[str, np.ndarray]] = {}
    pattern = re.compile(r"^rnn_lst\.(\d+)\.(\w+)$" if kind == "SRU" else r"^()(\w+)$")
    for key, value in state_dict.items():
        m = pattern.match(key)
        if m is None or m.group(2) not in _LAYER_KEYS:
            for prefix, what in _UNSUPPORTED.items():
                if prefix in key:
                    raise ValueError(f"state_dict: key {key!r} comes from {what}, which refrnn's SRU layout does not support")
            expect = "rnn_lst.{l}.weight, .weight_c, .bias, .scale_x" if kind == "SRU" else "weight, weight_c, bias, scale_x"
            raise ValueError(f"state_dict: unexpected key {key!r} for sru.{kind}; expected only {expect}")
        layer = int(m.group(1)) if kind == "SRU" else 0
        layers.setdefault(layer, {})[m.group(2)] = to_numpy(key, value)
    if not layers or sorted(layers) != list(range(len(layers))):
        raise ValueError(f"state_dict: expected layers 0..L-1 for sru.{kind}, found layers {sorted(layers)}")
    out = tuple(
        _layer_from_sru(
            f"rnn_lst.{l}." if kind == "SRU" else "",
            layers[l],
            ndir=ndir,
            has_skip_term=has_skip_term,
            rescale=rescale,
            use_tanh=use_tanh,
            v_terms=v_terms,
        )
        for l in range(len(layers))
    )
    return out if kind == "SRU" else out[0]


def _directions(where: str, layer) -> tuple[SRUParams, ...]:
    if isinstance(layer, SRUParams):
        return (layer,)
    if isinstance(layer, (tuple, list)) and len(layer) == 2 and all(isinstance(p, SRUParams) for p in layer):
        return tuple(layer)
    raise TypeError(f"{where}: expected SRUParams or a (forward, reverse) pair of SRUParams, got {type(layer).__name__}")


def _layer_to_sru(where: str, dirs: tuple[SRUParams, ...], rescale: bool) -> dict[str, np.ndarray]:
    ndir = len(dirs)
    first = dirs[0]
    D, H, dt = first.input_size, first.hidden_size, first.dtype
    out = ndir * H
    for d, p in enumerate(dirs):
        here = f"{where}[{d}]" if ndir == 2 else where
        if (p.input_size, p.hidden_size, p.dtype) != (D, H, dt):
            raise ValueError(
                f"{here}: both directions need one input size, hidden size and dtype; "
                f"got {p.input_size, p.hidden_size, p.dtype} and {D, H, dt}"
            )
        for opt in ("skip", "activation"):
            if getattr(p, opt) != getattr(first, opt):
                raise ValueError(
                    f"{here}.{opt}: sru uses one {opt} for both directions; got {getattr(p, opt)!r} and {getattr(first, opt)!r}"
                )
        if (p.v is None) != (first.v is None):
            raise ValueError(f"{here}.v: sru has v terms in both directions or in neither (v1)")
        if p.skip != "none":
            want = "projection" if D != out else "identity"
            if p.skip != want:
                raise ValueError(
                    f"{here}.skip: sru uses a {want} skip for input size {D} and output size {out}, got {p.skip!r}; no exact conversion"
                )
        if p.skip == "identity":
            if p.skip_offset != d * H:
                raise ValueError(
                    f"{here}.skip_offset: sru's direction {d} adds x[..., {d * H}:{(d + 1) * H}], got skip_offset={p.skip_offset}"
                )
            if p.alpha != first.alpha:
                raise ValueError(
                    f"{here}.alpha: sru has one scale_x per layer; the directions have {p.alpha!r} and {first.alpha!r}"
                )
            if not rescale and p.alpha != 1.0:
                raise ValueError(
                    f"{here}.alpha: is {p.alpha!r}, but sru scales the skip term only with rescale=True; pass rescale=True"
                )
        if p.skip == "projection" and p.alpha != 1.0:
            raise ValueError(
                f"{here}.alpha: sru applies no scale to a skip projection at run time; fold it into W_s "
                f"(W_s * alpha, then alpha=1.0) before converting, got alpha={p.alpha!r}"
            )
    k = first.k
    blocks = np.empty((D, ndir, H, k), dt)
    wc = np.zeros((2, ndir, H), dt)
    bias = np.empty((2, ndir, H), dt)
    for d, p in enumerate(dirs):
        blocks[:, d] = p.W.reshape(k, H, D).transpose(2, 1, 0)
        if p.v is not None:
            wc[0, d], wc[1, d] = p.v[:H], p.v[H:]
        bias[0, d], bias[1, d] = p.b[:H], p.b[H:]
    alpha = first.alpha if first.skip == "identity" else 1.0
    return {
        "weight": blocks.reshape(D, out * k),
        "weight_c": wc.reshape(2 * out),
        "bias": bias.reshape(2 * out),
        "scale_x": np.array([alpha], dtype=dt),
    }


def to_sru(params, kind: str = "SRU", *, rescale: bool | None = None) -> dict[str, np.ndarray]:
    """An sru state dict (NumPy arrays) for ``kind``: ``params`` is a sequence of layers for ``SRU``, one
    layer for ``SRUCell``; a layer is an :class:`SRUParams` or a ``(forward, reverse)`` pair.

    The target module must be built with the matching options (``bidirectional``, ``has_skip_term``,
    ``use_tanh``, ``v1=True`` when ``v`` is None, and ``rescale``: needed when an identity skip has
    ``alpha != 1``). ``scale_x`` is written as ``alpha`` for an identity skip and 1.0 otherwise (the
    package ignores it there). Parameters sru cannot express raise ``ValueError``.
    """
    kind = _kind(kind)
    rescale = _rescale(kind, rescale)
    if kind == "SRUCell":
        return _layer_to_sru("params", _directions("params", params), rescale)
    if isinstance(params, SRUParams) or not isinstance(params, Sequence) or len(params) == 0:
        raise TypeError(f"params: sru.SRU needs a non-empty sequence of layers, got {type(params).__name__}")
    layers = [_directions(f"params[{l}]", layer) for l, layer in enumerate(params)]
    for l, dirs in enumerate(layers[1:], start=1):
        if len(dirs) != len(layers[0]):
            raise ValueError(f"params[{l}]: sru.SRU layers are all bidirectional or all not; layer 0 differs")
        if dirs[0].activation != layers[0][0].activation:
            raise ValueError(
                f"params[{l}].activation: sru.SRU uses one activation for every layer; "
                f"got {dirs[0].activation!r} and {layers[0][0].activation!r}"
            )
        if (dirs[0].skip == "none") != (layers[0][0].skip == "none"):
            raise ValueError(f"params[{l}].skip: sru.SRU has a skip term in every layer or in none (has_skip_term)")
        if (dirs[0].v is None) != (layers[0][0].v is None):
            raise ValueError(f"params[{l}].v: sru.SRU has v terms in every layer or in none (v1)")
    out: dict[str, np.ndarray] = {}
    for l, dirs in enumerate(layers):
        for key, value in _layer_to_sru(f"params[{l}]", dirs, rescale).items():
            out[f"rnn_lst.{l}.{key}"] = value
    return out
