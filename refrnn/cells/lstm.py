r"""Reference LSTM: forward over a whole sequence and hand-derived backprop through time.

Equations (``*`` is the element-wise product)::

    i_t = sigmoid(W_xi x_t + b_xi + W_hi h_{t-1} + b_hi)      input gate
    f_t = sigmoid(W_xf x_t + b_xf + W_hf h_{t-1} + b_hf)      forget gate
    g_t = tanh   (W_xg x_t + b_xg + W_hg h_{t-1} + b_hg)      cell candidate
    o_t = sigmoid(W_xo x_t + b_xo + W_ho h_{t-1} + b_ho)      output gate
    c_t = f_t * c_{t-1} + i_t * g_t
    h_t = o_t * tanh(c_t)

Layout (the same as ``torch.nn.LSTM``, gates stacked in ``GATES`` order i, f, g, o)::

    W_x: (4H, D) = [W_xi; W_xf; W_xg; W_xo]      b_x: (4H,)
    W_h: (4H, H) = [W_hi; W_hf; W_hg; W_ho]      b_h: (4H,)

Other orders: Keras i, f, c, o (same as ours, transposed weights); ONNX i, o, f, c. The layout
converters in :mod:`refrnn.layouts` do the re-ordering.

State is the pair ``(h, c)`` everywhere (arguments, results, gradients).
Shapes: x (T, B, D); h0, c0 (B, H); y (T, B, H) = h_1..h_T.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

from .._checks import float_array
from ._common import Params, check_weight, frozen, sigmoid, split_gates

GATES = ("i", "f", "g", "o")


@dataclasses.dataclass(frozen=True)
class LSTMParams(Params):
    """LSTM weights; field names are the symbols of the module equations."""

    W_x: np.ndarray
    W_h: np.ndarray
    b_x: np.ndarray
    b_h: np.ndarray

    def _check_shapes(self) -> None:
        name = type(self).__name__
        W_h = np.asarray(self.W_h)
        if W_h.ndim != 2 or W_h.shape[0] != 4 * W_h.shape[1]:
            raise ValueError(f"{name}.W_h: expected shape (4H, H), got {W_h.shape}")
        H = W_h.shape[1]
        check_weight(name, "W_x", self.W_x, ("4H", "D"), {"4H": 4 * H})
        check_weight(name, "b_x", self.b_x, ("4H",), {"4H": 4 * H})
        check_weight(name, "b_h", self.b_h, ("4H",), {"4H": 4 * H})

    @property
    def input_size(self) -> int:
        return self.W_x.shape[1]

    @property
    def hidden_size(self) -> int:
        return self.W_h.shape[1]


class LSTMCache(NamedTuple):
    """What backward needs. ``h`` and ``c`` hold steps 0..T; ``tc`` is tanh(c_t) for t = 1..T."""

    x: np.ndarray  # (T, B, D)
    h: np.ndarray  # (T+1, B, H)
    c: np.ndarray  # (T+1, B, H)
    i: np.ndarray  # (T, B, H)
    f: np.ndarray
    g: np.ndarray
    o: np.ndarray
    tc: np.ndarray


def init(input_size: int, hidden_size: int, *, rng=None, dtype=np.float64) -> LSTMParams:
    """PyTorch's default initialisation: every entry uniform in (-1/sqrt(H), 1/sqrt(H))."""
    rng = np.random.default_rng(rng)
    k = 1.0 / np.sqrt(hidden_size)
    H4 = 4 * hidden_size

    def u(*shape):
        return rng.uniform(-k, k, size=shape).astype(dtype)

    return LSTMParams(u(H4, input_size), u(H4, hidden_size), u(H4), u(H4))


def zero_state(params: LSTMParams, batch: int) -> tuple[np.ndarray, np.ndarray]:
    zeros = np.zeros((batch, params.hidden_size), dtype=params.dtype)
    return zeros, zeros.copy()


def _state(name: str, state, dims: dict, dtype) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(state, (tuple, list)) or len(state) != 2:
        raise TypeError(f"{name}: expected the pair (h, c) of arrays of shape (B, H), got {type(state).__name__}")
    h, c = state
    return (
        float_array(f"{name}[0] (h)", h, ("B", "H"), dims, dtype=dtype),
        float_array(f"{name}[1] (c)", c, ("B", "H"), dims, dtype=dtype),
    )


def check_inputs(params: LSTMParams, x, state0):
    dims = {"D": params.input_size, "H": params.hidden_size}
    x = float_array("x", x, ("T", "B", "D"), dims, dtype=params.dtype)
    if state0 is None:
        return x, zero_state(params, x.shape[1])
    return x, _state("state0", state0, {**dims, "B": x.shape[1]}, params.dtype)


def forward(params: LSTMParams, x, state0=None):
    """Run the LSTM over ``x``; returns ``(y, (h_T, c_T), cache)``. ``state0=None`` means zeros."""
    x, (h0, c0) = check_inputs(params, x, state0)
    T, B, _ = x.shape
    H = params.hidden_size
    dt = params.dtype
    ax = x @ params.W_x.T + params.b_x  # (T, B, 4H): every step's input projection at once
    h = np.empty((T + 1, B, H), dt)
    c = np.empty((T + 1, B, H), dt)
    h[0], c[0] = h0, c0
    i, f, g, o, tc = (np.empty((T, B, H), dt) for _ in range(5))
    for t in range(T):
        a_i, a_f, a_g, a_o = split_gates(ax[t] + h[t] @ params.W_h.T + params.b_h, GATES)
        i[t], f[t], g[t], o[t] = sigmoid(a_i), sigmoid(a_f), np.tanh(a_g), sigmoid(a_o)
        c[t + 1] = f[t] * c[t] + i[t] * g[t]
        tc[t] = np.tanh(c[t + 1])
        h[t + 1] = o[t] * tc[t]
    frozen(h, c, i, f, g, o, tc)
    return h[1:], (h[T].copy(), c[T].copy()), LSTMCache(x, h, c, i, f, g, o, tc)


def backward(params: LSTMParams, cache: LSTMCache, dy, dstate_T=None):
    """Backprop through time. ``dy`` (T, B, H); ``dstate_T`` the pair (dL/dh_T, dL/dc_T) or None.

    Returns ``(grads, dx, (dh0, dc0))`` with ``grads`` an :class:`LSTMParams`.
    """
    x, h, c, i, f, g, o, tc = cache
    T, B, H = i.shape
    dims = {"T": T, "B": B, "H": H}
    dy = float_array("dy", dy, ("T", "B", "H"), dims, dtype=params.dtype)
    if dstate_T is None:
        dh, dc = zero_state(params, B)
    else:
        dh, dc = (a.copy() for a in _state("dstate_T", dstate_T, dims, params.dtype))
    da = np.empty((T, B, 4 * H), params.dtype)  # gradient at the gate pre-activations [a_i, a_f, a_g, a_o]
    for t in reversed(range(T)):
        dh = dh + dy[t]
        do = dh * tc[t]
        dc = dc + dh * o[t] * (1.0 - tc[t] * tc[t])
        di, df, dg = dc * g[t], dc * c[t], dc * i[t]
        dc = dc * f[t]
        da[t] = np.concatenate(
            [di * i[t] * (1.0 - i[t]), df * f[t] * (1.0 - f[t]), dg * (1.0 - g[t] * g[t]), do * o[t] * (1.0 - o[t])],
            axis=-1,
        )
        dh = da[t] @ params.W_h
    flat = da.reshape(T * B, 4 * H)
    db = flat.sum(axis=0)
    grads = LSTMParams(
        W_x=flat.T @ x.reshape(T * B, x.shape[2]),
        W_h=flat.T @ h[:-1].reshape(T * B, H),
        b_x=db,
        b_h=db.copy(),
    )
    return grads, da @ params.W_x, (dh, dc)
