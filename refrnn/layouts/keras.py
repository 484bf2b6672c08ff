"""Keras layout: ``keras.layers.GRU``, ``LSTM`` and ``Bidirectional`` weights, as ``layer.get_weights()`` lists them.

Keras keeps weights as (inputs, gates*U) matrices, columns stacked per gate, and the biases apart::

    GRU   kernel (D, 3U), recurrent_kernel (U, 3U), gate order z, r, h
          bias (2, 3U) = [input bias; recurrent bias]     reset_after=True  (Keras 3's default)
          bias (3U,)   = input bias only                  reset_after=False
    LSTM  kernel (D, 4U), recurrent_kernel (U, 4U), bias (4U,), gate order i, f, c, o

Keras's GRU updates ``h = z * h_{t-1} + (1 - z) * hh``, refrnn's orientation, so z needs no negation;
its gate order z, r, h is refrnn's r, z, n with the first two blocks swapped (copying PyTorch/refrnn
weights without that swap is a known porting bug, and a wrong model rather than an error).

The reset conventions are different functions, not different parameterisations::

    reset_after=True  (refrnn reset="after"):   hh = tanh(W_xh x + b_xh + r * (W_hh h + b_hh))
    reset_after=False (refrnn reset="before"):  hh = tanh(W_xh x + b_xh + W_hh (r * h))

For all inputs ``r * (W h) = W (r * h)`` would need W to commute with every diagonal matrix diag(r),
i.e. to be diagonal itself, so no weights of one convention reproduce a general model of the other:
a cross-convention conversion is refused with an error, never approximated.

A reset_after=False layer has one bias per gate; refrnn's ``b_x + b_h`` is exactly what enters each
gate there (with reset="before", ``b_hn`` sits outside the reset product, like ``b_xn``), so the two
are summed on the way to Keras (one rounding per entry) and read back as ``b_x = bias, b_h = 0``. The
LSTM's single bias works the same way. Everything else is a re-ordering, bit-exact both ways.

``keras.layers.Bidirectional`` lists the forward layer's weights, then the backward layer's; its
backward layer runs ``go_backwards=True`` and its outputs are re-aligned in time (merge_mode="concat"
gives [forward, backward] per step), which is :class:`refrnn.layers.bidirectional.BiLayer`.

``SimpleRNN`` is :mod:`refrnn.cells.rnn`: kernel (D, U), recurrent_kernel (U, U), one bias (U,) =
``b_x + b_h`` (read back as ``b_x = bias, b_h = 0``, like the LSTM's); its ``activation`` is not in
the weights, so :func:`from_keras` takes it (tanh or relu).

Keras has no peepholes and no projection: such LSTMs are refused. ``use_bias=False`` layers list
two arrays per direction (no bias): they read as zero biases.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..cells import GRUParams, LSTMParams, RNNParams, gru, lstm, rnn
from . import same_dtype, to_numpy

KINDS = ("GRU", "LSTM", "SimpleRNN")
KERAS_GATES = {"GRU": ("z", "r", "n"), "LSTM": ("i", "f", "g", "o"), "SimpleRNN": ("h",)}  # refrnn names of Keras's blocks
_REFRNN_GATES = {"GRU": gru.GATES, "LSTM": lstm.GATES, "SimpleRNN": rnn.GATES}  # the cells' own order
_BLOCKS = {"GRU": 3, "LSTM": 4, "SimpleRNN": 1}
ACTIVATIONS = ("tanh", "relu")  # SimpleRNN activations refrnn.cells.rnn implements
_NAMES = ("kernel", "recurrent_kernel", "bias")


def _reorder(a: np.ndarray, src: tuple, dst: tuple, axis: int) -> np.ndarray:
    blocks = dict(zip(src, np.split(a, len(src), axis=axis)))
    return np.concatenate([blocks[g] for g in dst], axis=axis)


def _kind(kind: str) -> int:
    if kind not in KINDS:
        raise ValueError(f"kind: unknown Keras layer {kind!r}; expected one of {', '.join(KINDS)}")
    return _BLOCKS[kind]


def _as_list(weights) -> list:
    """The one strict parser of a layer's weights: ``get_weights()``'s list, or a mapping by name with
    ``kernel`` and ``recurrent_kernel`` required and ``bias`` optional (``use_bias=False``)."""
    if isinstance(weights, Mapping):
        unknown = set(weights) - set(_NAMES)
        if unknown:
            raise ValueError(f"weights: unexpected names {sorted(map(str, unknown))}; expected {', '.join(_NAMES)}")
        missing = [n for n in _NAMES[:2] if n not in weights]
        if missing:
            raise ValueError(f"weights: missing {', '.join(missing)}; a Keras RNN layer always has kernel and recurrent_kernel")
        return [weights[n] for n in _NAMES if n in weights]
    if isinstance(weights, Sequence) and not isinstance(weights, (str, bytes)):
        return list(weights)
    raise TypeError(f"weights: expected layer.get_weights()'s list or a mapping of {', '.join(_NAMES)}, got {type(weights).__name__}")


def _one_from_keras(arrays: list, kind: str, reset_after: bool, where: str, activation: str = "tanh"):
    n = _kind(kind)
    kernel = to_numpy(f"{where}kernel", arrays[0], weights=True)
    rec = to_numpy(f"{where}recurrent_kernel", arrays[1], weights=True)
    same_dtype({f"{where}recurrent_kernel": rec, f"{where}kernel": kernel})
    if rec.ndim != 2 or rec.shape[1] != n * rec.shape[0]:
        raise ValueError(f"{where}recurrent_kernel: expected shape (U, {n}U), got {rec.shape}")
    U = rec.shape[0]
    if kernel.ndim != 2 or kernel.shape[1] != n * U:
        raise ValueError(f"{where}kernel: expected shape (D, {n}U) with U={U}, got {kernel.shape}")
    src, dst = KERAS_GATES[kind], _REFRNN_GATES[kind]
    W_x = _reorder(kernel.T, src, dst, axis=0)
    W_h = _reorder(rec.T, src, dst, axis=0)
    zeros = np.zeros(n * U, dtype=rec.dtype)
    if len(arrays) == 2:
        b_x, b_h = zeros, zeros.copy()
    else:
        bias = to_numpy(f"{where}bias", arrays[2], weights=True)
        same_dtype({f"{where}recurrent_kernel": rec, f"{where}bias": bias})
        if kind == "GRU" and reset_after:
            if bias.shape != (2, n * U):
                hint = " (that is a reset_after=False layer's bias: pass reset_after=False)" if bias.shape == (n * U,) else ""
                raise ValueError(f"{where}bias: a reset_after=True GRU's bias has shape (2, 3U) with U={U}, got {bias.shape}{hint}")
            b_x, b_h = _reorder(bias[0], src, dst, 0), _reorder(bias[1], src, dst, 0)
        else:
            if bias.shape != (n * U,):
                hint = ""
                if kind == "GRU" and bias.shape == (2, n * U):
                    hint = " (that is a reset_after=True layer's bias: pass reset_after=True)"
                raise ValueError(f"{where}bias: expected shape ({n}U,) with U={U}, got {bias.shape}{hint}")
            b_x, b_h = _reorder(bias, src, dst, 0), zeros
    if kind == "GRU":
        return GRUParams(W_x, W_h, b_x, b_h, reset="after" if reset_after else "before")
    if kind == "SimpleRNN":
        return RNNParams(W_x, W_h, b_x, b_h, activation=activation)
    return LSTMParams(W_x, W_h, b_x, b_h)


def from_keras(weights, kind: str, *, reset_after: bool = True, bidirectional: bool = False, activation: str = "tanh"):
    """refrnn parameters from a Keras layer's weights (``layer.get_weights()`` order, or a mapping by name).

    ``reset_after`` must be the GRU layer's setting (Keras 3's default True); it selects the refrnn
    convention (True: reset="after", False: reset="before"). ``bidirectional=True`` reads a
    ``keras.layers.Bidirectional`` layer's list (forward weights, then backward) into a BiLayer.
    ``activation`` is a ``SimpleRNN``'s ("tanh" or "relu"; its weights do not record it).
    """
    _kind(kind)
    if kind == "SimpleRNN" and activation not in ACTIVATIONS:
        raise ValueError(f"activation: refrnn's RNN implements {', '.join(map(repr, ACTIVATIONS))}, got {activation!r}")
    if kind != "SimpleRNN" and activation != "tanh":
        raise ValueError(f"activation: only a SimpleRNN takes one here; a Keras {kind} is checked with its defaults")
    if isinstance(weights, Mapping) and bidirectional:
        raise TypeError("weights: a Bidirectional layer's weights are get_weights()'s list (forward, then backward), not a mapping")
    arrays = _as_list(weights)
    per = len(arrays) // 2 if bidirectional else len(arrays)
    if per not in (2, 3) or per * (2 if bidirectional else 1) != len(arrays):
        what = "a Bidirectional layer's 4 or 6" if bidirectional else "2 or 3"
        raise ValueError(f"weights: expected {what} arrays (kernel, recurrent_kernel[, bias] per direction), got {len(arrays)}")
    if not bidirectional:
        return _one_from_keras(arrays, kind, reset_after, "", activation)
    from ..layers.bidirectional import BiLayer

    return BiLayer(
        _one_from_keras(arrays[:per], kind, reset_after, "forward ", activation),
        _one_from_keras(arrays[per:], kind, reset_after, "backward ", activation),
    )


def _one_to_keras(p, reset_after: bool | None, use_bias: bool, where: str) -> list[np.ndarray]:
    if isinstance(p, GRUParams):
        kind = "GRU"
        native = p.reset == "after"
        if reset_after is not None and reset_after != native:
            raise ValueError(
                f"{where}reset_after={reset_after}: these weights are reset={p.reset!r}, and a Keras GRU with "
                f"reset_after={reset_after} computes {'r * (W_hh h + b_hh)' if reset_after else 'W_hh (r * h)'} where they "
                f"compute {'r * (W_hh h + b_hh)' if native else 'W_hh (r * h)'}: different functions of h, so no weights of "
                f"one reproduce the other and no exact conversion exists (use reset_after={native})"
            )
        reset_after = native
    elif isinstance(p, RNNParams):
        kind = "SimpleRNN"
    elif isinstance(p, LSTMParams):
        kind = "LSTM"
        if p.has_peepholes or p.W_hr is not None:
            raise ValueError(f"{where}params: a Keras LSTM has no peepholes and no projection (W_hr); no exact conversion exists")
    else:
        raise TypeError(f"{where}params: expected GRUParams, LSTMParams or RNNParams, got {type(p).__name__}")
    src, dst = _REFRNN_GATES[kind], KERAS_GATES[kind]
    out = [_reorder(p.W_x, src, dst, 0).T.copy(), _reorder(p.W_h, src, dst, 0).T.copy()]
    if kind == "GRU" and reset_after:
        bias = np.stack([_reorder(p.b_x, src, dst, 0), _reorder(p.b_h, src, dst, 0)])
    else:
        bias = _reorder(p.b_x + p.b_h, src, dst, 0)  # one bias per gate: see the module docstring
    if use_bias:
        out.append(bias)
    elif np.any(bias != 0):
        raise ValueError(f"{where}params: use_bias=False needs zero biases, but these are non-zero")
    return out


def to_keras(params, *, reset_after: bool | None = None, use_bias: bool = True) -> list[np.ndarray]:
    """A Keras layer's weights (``layer.set_weights()`` order) from one cell's parameters or a BiLayer.

    ``reset_after`` defaults to the weights' own convention; asking for the other one raises
    ``ValueError`` (see the module docstring). A BiLayer gives a ``Bidirectional`` layer's list.
    """
    from ..layers.bidirectional import BiLayer

    if isinstance(params, BiLayer):
        same = all(getattr(params.fwd, o, None) == getattr(params.rev, o, None) for o in ("reset", "activation"))
        if type(params.fwd) is not type(params.rev) or not same:
            raise ValueError(
                "params: keras.layers.Bidirectional wraps one layer configuration for both directions; fwd and rev differ"
            )
        return _one_to_keras(params.fwd, reset_after, use_bias, "fwd: ") + _one_to_keras(params.rev, reset_after, use_bias, "rev: ")
    return _one_to_keras(params, reset_after, use_bias, "")
