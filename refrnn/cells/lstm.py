r"""Reference LSTM, optionally with peepholes and a projection (LSTMP): forward over a whole sequence and
hand-derived backprop through time.

Equations (``*`` is the element-wise product; the bracketed terms are present only when the optional
parameter is set, and are zero otherwise)::

    i_t = sigmoid(W_xi x_t + b_xi + W_hi h_{t-1} + b_hi [+ w_ic * c_{t-1}])      input gate
    f_t = sigmoid(W_xf x_t + b_xf + W_hf h_{t-1} + b_hf [+ w_fc * c_{t-1}])      forget gate
    g_t = tanh   (W_xg x_t + b_xg + W_hg h_{t-1} + b_hg)                         cell candidate
    c_t = f_t * c_{t-1} + i_t * g_t
    o_t = sigmoid(W_xo x_t + b_xo + W_ho h_{t-1} + b_ho [+ w_oc * c_t])          output gate (peeps at the NEW c_t)
    m_t = o_t * tanh(c_t)
    h_t = m_t                         without a projection
    h_t = W_hr m_t                    with a projection (Sak et al. 2014 LSTMP; PyTorch ``proj_size``)

The peepholes ``w_ic, w_fc, w_oc`` are diagonal (vectors), as in Gers & Schmidhuber, Sak et al. and ONNX
(whose ``P`` input stacks them in the order i, o, f). With a projection the recurrent state ``h`` and the
output have size P (``proj_size``) while the cell state ``c`` keeps size H: the recurrent product is
``W_h h_{t-1}`` with ``W_h`` of shape (4H, P), which is C-LSTM's ``W_{*(xr)} [x_t, y_{t-1}]`` with the
input and recurrent halves kept apart. PyTorch has the projection but no peepholes; ONNX has peepholes
but no projection; this cell has both, each optional.

Layout (the same as ``torch.nn.LSTM``, gates stacked in ``GATES`` order i, f, g, o)::

    W_x: (4H, D) = [W_xi; W_xf; W_xg; W_xo]      b_x: (4H,)
    W_h: (4H, P) = [W_hi; W_hf; W_hg; W_ho]      b_h: (4H,)          P = H without a projection
    w_ic, w_fc, w_oc: (H,) or None                                   peepholes
    W_hr: (P, H) or None                                             projection (PyTorch ``weight_hr_l{k}``)

Other orders: Keras i, f, c, o (same as ours, transposed weights); ONNX i, o, f, c. The layout
converters in :mod:`refrnn.layouts` do the re-ordering.

State is the pair ``(h, c)`` everywhere (arguments, results, gradients).
Shapes: x (T, B, D); h0 (B, P); c0 (B, H); y (T, B, P) = h_1..h_T (P = H without a projection).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

from .._checks import count, finite_result, float_array, instance, positive_int
from ._common import (
    Params, cache_fields, check_cache, check_weight, frozen, gradients, sigmoid, size_of, split_gates, torch_uniform,
)

GATES = ("i", "f", "g", "o")
PEEPHOLES = ("w_ic", "w_fc", "w_oc")


@dataclasses.dataclass(frozen=True)
class LSTMParams(Params):
    """LSTM weights; field names are the symbols of the module equations.

    The peepholes ``w_ic, w_fc, w_oc`` and the projection ``W_hr`` are optional (``None``: absent), so
    ``LSTMParams(W_x, W_h, b_x, b_h)`` is the plain LSTM.
    """

    W_x: np.ndarray
    W_h: np.ndarray
    b_x: np.ndarray
    b_h: np.ndarray
    w_ic: np.ndarray | None = None
    w_fc: np.ndarray | None = None
    w_oc: np.ndarray | None = None
    W_hr: np.ndarray | None = None

    def _check_shapes(self) -> None:
        name = type(self).__name__
        W_h = np.asarray(self.W_h)
        if W_h.ndim != 2 or W_h.shape[0] % 4 or (self.W_hr is None and W_h.shape[0] != 4 * W_h.shape[1]):
            raise ValueError(
                f"{name}.W_h: expected shape (4H, H), got {W_h.shape} (or (4H, P) with a projection W_hr of shape (P, H))"
            )
        H, P = W_h.shape[0] // 4, W_h.shape[1]
        check_weight(name, "W_x", self.W_x, ("4H", "D"), {"4H": 4 * H})
        check_weight(name, "b_x", self.b_x, ("4H",), {"4H": 4 * H})
        check_weight(name, "b_h", self.b_h, ("4H",), {"4H": 4 * H})
        for peephole in PEEPHOLES:
            if getattr(self, peephole) is not None:
                check_weight(name, peephole, getattr(self, peephole), ("H",), {"H": H})
        if self.W_hr is not None:
            check_weight(name, "W_hr", self.W_hr, ("P", "H"), {"P": P, "H": H})

    input_size = size_of("W_x", 1)
    hidden_size = size_of("W_h", 0, per=4, doc="H: the size of the cell state ``c`` and of the gates.")

    @property
    def proj_size(self) -> int:
        """P with a projection, 0 without (PyTorch's convention)."""
        return 0 if self.W_hr is None else self.W_hr.shape[0]

    @property
    def output_size(self) -> int:
        """The size of ``h`` and of the output ``y``: P with a projection, else H."""
        return self.W_h.shape[1]

    @property
    def has_peepholes(self) -> bool:
        return any(getattr(self, p) is not None for p in PEEPHOLES)


_TBH = ("T", "B", "H")


@cache_fields(x=("T", "B", "D"), h=("T+1", "B", "P"), c=("T+1", "B", "H"), i=_TBH, f=_TBH, g=_TBH, o=_TBH, tc=_TBH, m=_TBH)
class LSTMCache(NamedTuple):
    """What backward needs. ``h`` and ``c`` hold steps 0..T; ``tc`` is tanh(c_t) for t = 1..T;
    ``m`` is o_t * tanh(c_t) for t = 1..T when there is a projection (else ``h[1:]`` is m, and ``m`` is None)."""

    x: np.ndarray  # (T, B, D)
    h: np.ndarray  # (T+1, B, P)
    c: np.ndarray  # (T+1, B, H)
    i: np.ndarray  # (T, B, H)
    f: np.ndarray
    g: np.ndarray
    o: np.ndarray
    tc: np.ndarray
    m: np.ndarray | None = None  # (T, B, H), projection only


def init(
    input_size: int,
    hidden_size: int,
    *,
    proj_size: int = 0,
    peepholes: bool = False,
    rng=None,
    dtype=np.float64,
) -> LSTMParams:
    """PyTorch's default initialisation: every entry (projection and peepholes included) uniform in
    (-1/sqrt(H), 1/sqrt(H)). ``proj_size=0`` means no projection, as in ``torch.nn.LSTM``."""
    input_size = positive_int("input_size", input_size)
    hidden_size = positive_int("hidden_size", hidden_size)
    if proj_size != 0:
        proj_size = positive_int("proj_size", proj_size)
    u = torch_uniform(rng, hidden_size, dtype)
    H4 = 4 * hidden_size
    P = proj_size or hidden_size

    p = LSTMParams(u(H4, input_size), u(H4, P), u(H4), u(H4), W_hr=u(P, hidden_size) if proj_size else None)
    if peepholes:
        p = p.replace(**{name: u(hidden_size) for name in PEEPHOLES})
    return p


def zero_state(params: LSTMParams, batch: int) -> tuple[np.ndarray, np.ndarray]:
    instance("params", params, LSTMParams)
    batch = count("batch", batch)
    return (
        np.zeros((batch, params.output_size), dtype=params.dtype),
        np.zeros((batch, params.hidden_size), dtype=params.dtype),
    )


def _state(name: str, state, dims: dict, dtype) -> tuple[np.ndarray, np.ndarray]:
    # h has the output size (P with a projection), c the cell size H.
    h_letter = "P" if dims.get("P", dims.get("H")) != dims.get("H") else "H"
    if not isinstance(state, (tuple, list)) or len(state) != 2:
        raise TypeError(f"{name}: expected the pair (h, c) of arrays of shape (B, {h_letter}), (B, H), got {type(state).__name__}")
    h, c = state
    return (
        float_array(f"{name}[0] (h)", h, ("B", h_letter), dims, dtype=dtype),
        float_array(f"{name}[1] (c)", c, ("B", "H"), dims, dtype=dtype),
    )


def check_inputs(params: LSTMParams, x, state0):
    instance("params", params, LSTMParams)
    dims = {"D": params.input_size, "H": params.hidden_size, "P": params.output_size}
    x = float_array("x", x, ("T", "B", "D"), {"D": params.input_size}, dtype=params.dtype)
    if state0 is None:
        return x, zero_state(params, x.shape[1])
    return x, _state("state0", state0, {**dims, "B": x.shape[1]}, params.dtype)


def forward(params: LSTMParams, x, state0=None):
    """Run the LSTM over ``x``; returns ``(y, (h_T, c_T), cache)``. ``state0=None`` means zeros."""
    x, (h0, c0) = check_inputs(params, x, state0)
    T, B, _ = x.shape
    H, P = params.hidden_size, params.output_size
    w_ic, w_fc, w_oc, W_hr = params.w_ic, params.w_fc, params.w_oc, params.W_hr
    dt = params.dtype
    ax = finite_result("x", x @ params.W_x.T + params.b_x, "the input projection W_x x + b_x")  # (T, B, 4H): all steps
    h = np.empty((T + 1, B, P), dt)
    c = np.empty((T + 1, B, H), dt)
    h[0], c[0] = h0, c0
    i, f, g, o, tc = (np.empty((T, B, H), dt) for _ in range(5))
    m = None if W_hr is None else np.empty((T, B, H), dt)
    for t in range(T):
        a_i, a_f, a_g, a_o = split_gates(ax[t] + h[t] @ params.W_h.T + params.b_h, GATES)
        if w_ic is not None:
            a_i = a_i + w_ic * c[t]
        if w_fc is not None:
            a_f = a_f + w_fc * c[t]
        i[t], f[t], g[t] = sigmoid(a_i), sigmoid(a_f), np.tanh(a_g)
        c[t + 1] = f[t] * c[t] + i[t] * g[t]
        if w_oc is not None:  # the output gate looks at the cell state it is about to expose
            a_o = a_o + w_oc * c[t + 1]
        o[t] = sigmoid(a_o)
        tc[t] = np.tanh(c[t + 1])
        if W_hr is None:
            h[t + 1] = o[t] * tc[t]
        else:
            m[t] = o[t] * tc[t]
            h[t + 1] = m[t] @ W_hr.T
    finite_result("state0", h[T], "the recurrence (x, state0 -> h_T)")
    finite_result("state0", c[T], "the recurrence (x, state0 -> c_T)")
    frozen(h, c, i, f, g, o, tc, *(() if m is None else (m,)))
    return h[1:], (h[T].copy(), c[T].copy()), LSTMCache(x, h, c, i, f, g, o, tc, m)


def backward(params: LSTMParams, cache: LSTMCache, dy, dstate_T=None):
    """Backprop through time. ``dy`` (T, B, P); ``dstate_T`` the pair (dL/dh_T, dL/dc_T) or None.

    Returns ``(grads, dx, (dh0, dc0))`` with ``grads`` an :class:`LSTMParams` that has the same optional
    arrays as ``params``.
    """
    instance("params", params, LSTMParams)
    sizes = {"D": params.input_size, "H": params.hidden_size, "P": params.output_size}
    check_cache(cache, LSTMCache, params, sizes, present={"m": params.W_hr is not None})
    x, h, c, i, f, g, o, tc = cache[:8]
    m = cache.m
    T, B, H = i.shape
    P = params.output_size
    w_ic, w_fc, w_oc, W_hr = params.w_ic, params.w_fc, params.w_oc, params.W_hr
    dims = {"T": T, "B": B, "H": H, "P": P}
    h_letter = "P" if P != H else "H"
    dy = float_array("dy", dy, ("T", "B", h_letter), dims, dtype=params.dtype)
    if dstate_T is None:
        dh, dc = zero_state(params, B)
    else:
        dh, dc = (a.copy() for a in _state("dstate_T", dstate_T, dims, params.dtype))
    da = np.empty((T, B, 4 * H), params.dtype)  # gradient at the gate pre-activations [a_i, a_f, a_g, a_o]
    dh_all = None if W_hr is None else np.empty((T, B, P), params.dtype)  # dL/dh_t, for dW_hr
    for t in reversed(range(T)):
        dh = dh + dy[t]
        if W_hr is None:
            dm = dh
        else:
            dh_all[t] = dh
            dm = dh @ W_hr
        do = dm * tc[t]
        da_o = do * o[t] * (1.0 - o[t])
        dc = dc + dm * o[t] * (1.0 - tc[t] * tc[t])
        if w_oc is not None:
            dc = dc + da_o * w_oc
        di, df, dg = dc * g[t], dc * c[t], dc * i[t]
        dc = dc * f[t]
        da_i, da_f = di * i[t] * (1.0 - i[t]), df * f[t] * (1.0 - f[t])
        if w_ic is not None:
            dc = dc + da_i * w_ic
        if w_fc is not None:
            dc = dc + da_f * w_fc
        da[t] = np.concatenate([da_i, da_f, dg * (1.0 - g[t] * g[t]), da_o], axis=-1)
        dh = da[t] @ params.W_h
    flat = da.reshape(T * B, 4 * H)
    db = flat.sum(axis=0)
    optional = {}
    da_i, da_f, _, da_o = split_gates(da, GATES)
    if w_ic is not None:
        optional["w_ic"] = np.sum(da_i * c[:-1], axis=(0, 1))
    if w_fc is not None:
        optional["w_fc"] = np.sum(da_f * c[:-1], axis=(0, 1))
    if w_oc is not None:
        optional["w_oc"] = np.sum(da_o * c[1:], axis=(0, 1))
    if W_hr is not None:
        optional["W_hr"] = dh_all.reshape(T * B, P).T @ m.reshape(T * B, H)
    grads = dict(W_x=flat.T @ x.reshape(T * B, x.shape[2]), W_h=flat.T @ h[:-1].reshape(T * B, P), b_x=db, b_h=db.copy())
    return gradients(params, {**grads, **optional}, da @ params.W_x, (dh, dc))
