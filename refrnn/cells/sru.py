r"""Reference SRU (Simple Recurrent Unit, Lei et al. 2018): forward over a sequence and hand-derived BPTT.

Equations (``*`` is the element-wise product, ``sigmoid`` the logistic function)::

    U     = x W^T                                         one product for all T steps: (T, B, k*H)
    [U_c, U_f, U_r (, U_s)] = U                           blocks in BLOCKS order
    f_t   = sigmoid(U_f,t + v_f * c_{t-1} + b_f)          forget gate
    r_t   = sigmoid(U_r,t + v_r * c_{t-1} + b_r)          reset (highway) gate; reads c_{t-1}, like the sru package
    c_t   = f_t * c_{t-1} + (1 - f_t) * U_c,t             internal state
    h_t   = r_t * g(c_t) + (1 - r_t) * s_t                highway output   (skip="none": h_t = r_t * g(c_t))
    s_t   = alpha * x_t[o : o+H]                          skip="identity"  (o = ``skip_offset``, 0 when D == H)
    s_t   = alpha * U_s,t                                 skip="projection" (learned skip block, needed when D != H)

Only ``U = x W^T`` mixes units; the recurrence is element-wise per unit, which is what makes the SRU
fast (the paper's Section 3.1). The candidate ``U_c`` has no bias.

Options (named, so a user can match any configuration of the ``sru`` package, see :mod:`refrnn.layouts.sru`):

``v`` (array or ``None``)
    ``[v_f; v_r]`` (2H,), the element-wise recurrent weights (sru's ``weight_c``). ``None`` means the
    model has no ``v`` terms (the 2017 SRU; sru's ``v1=True`` keeps ``weight_c`` frozen at zero):
    the ``v * c_{t-1}`` terms are absent and no gradient is computed for them.
``skip`` ("identity" | "projection" | "none")
    the highway term of ``h``. "identity" adds the input itself (needs ``skip_offset + H <= D``);
    "projection" a fourth weight block ``W_s`` (sru's k=4, used whenever the input width differs
    from the output width); "none" drops the term (sru's ``has_skip_term=False``).
``alpha`` (float, default 1.0)
    the constant highway scale. The SRU paper (Section 3.2) derives ``alpha = sqrt(1 + 2 exp(b))``
    for a reset-gate bias ``b``: see :func:`highway_alpha`. The sru package computes it once, at
    construction, from ``highway_bias`` (the *initial* b_r), stores it in its ``scale_x`` buffer
    (float32-rounded) and applies it at run time only for the identity skip with ``rescale=True``;
    for the projection skip it multiplies the initial ``W_s`` instead, so ``alpha`` is then 1.
    ``alpha`` is a fixed option, not a trained parameter, and does not follow later changes of b_r.
``skip_offset`` (int, default 0)
    first input column of the identity skip. A bidirectional sru layer whose input width is 2H
    hands each direction its own half of ``x``: the reverse direction has ``skip_offset = H``.
``activation`` ("identity" | "tanh")
    ``g`` applied to ``c_t`` in ``h_t``. sru 2.6 uses the identity unless ``use_tanh=True`` (deprecated).

Padding: ``mask_pad`` (T, B), true (non-zero) at padded steps, has sru's semantics: at a padded step
``c_t = c_{t-1}`` (the state passes through unchanged) and ``h_t = 0``. Nothing at a padded step
depends on ``x_t`` or on the parameters, so their gradients from that step are zero and ``dc_{t-1}``
receives ``dc_t`` unchanged. ``backward`` reads the mask from the cache.

Layout (rows of ``W`` stacked in ``BLOCKS`` order, the convention of :mod:`refrnn.cells.gru`)::

    W: (k*H, D) = [W_c; W_f; W_r (; W_s)]      k = 4 with skip="projection", else 3
    v: (2H,)    = [v_f; v_r]    or None
    b: (2H,)    = [b_f; b_r]

State is ``c`` (B, H). Shapes: x (T, B, D); c0 (B, H); y (T, B, H) = h_1..h_T; c_T (B, H); mask_pad (T, B).

Directions: :func:`reverse_forward` runs a layer from t = T-1 down to 0 by flipping time;
:func:`bidirectional_forward` runs a ``(forward, reverse)`` pair of parameter sets and concatenates
their outputs, as a bidirectional sru layer does.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import numpy as np

from .._moved import renamed
from .._checks import count, finite_result, float_array, instance, one_of, positive_int
from ._common import Params, cache_fields, check_cache, check_weight, frozen, gradients, option, sigmoid, size_of, split_gates

BLOCKS = ("c", "f", "r", "s")  # candidate, forget, reset, skip projection (the last only with skip="projection")
SKIPS = ("identity", "projection", "none")
ACTIVATIONS = ("identity", "tanh")


def highway_alpha(highway_bias: float) -> float:
    """The SRU paper's highway scale ``sqrt(1 + 2 exp(b))`` for a reset-gate bias ``b`` (Section 3.2)."""
    return math.sqrt(1.0 + 2.0 * math.exp(highway_bias))


@dataclasses.dataclass(frozen=True)
class SRUParams(Params):
    """SRU weights; field names are the symbols of the module equations, options as documented there."""

    W: np.ndarray
    v: np.ndarray | None
    b: np.ndarray
    skip: str = option("identity")
    alpha: float = option(1.0)
    skip_offset: int = option(0)
    activation: str = option("identity")

    def _check_shapes(self) -> None:
        name = type(self).__name__
        one_of(f"{name}.skip", self.skip, SKIPS)
        one_of(f"{name}.activation", self.activation, ACTIVATIONS)
        b = np.asarray(self.b)
        if b.ndim != 1 or b.shape[0] % 2 or b.shape[0] == 0:
            raise ValueError(f"{name}.b: expected shape (2H,) = [b_f; b_r], got {b.shape}")
        H = b.shape[0] // 2
        k = self.k
        check_weight(name, "W", self.W, (f"{k}H", "D"), {f"{k}H": k * H})
        if self.v is not None:
            check_weight(name, "v", self.v, ("2H",), {"2H": 2 * H})
        alpha = self.alpha
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.floating, np.integer)) or not math.isfinite(alpha):
            raise ValueError(f"{name}.alpha: expected a finite real number, got {alpha!r}")
        # A plain Python float: a NumPy float64 scalar would promote float32 arrays to float64 under NEP 50.
        object.__setattr__(self, "alpha", float(alpha))
        if self.skip == "none" and alpha != 1.0:
            raise ValueError(f"{name}.alpha: skip='none' has no highway term to scale; expected alpha=1.0, got {alpha!r}")
        off = self.skip_offset
        if isinstance(off, bool) or not isinstance(off, (int, np.integer)) or off < 0:
            raise ValueError(f"{name}.skip_offset: expected a non-negative integer, got {off!r}")
        object.__setattr__(self, "skip_offset", int(off))
        D = self.W.shape[1]
        if self.skip == "identity" and off + H > D:
            raise ValueError(
                f"{name}.skip_offset: the identity skip adds x[..., {off}:{off + H}] to h (H={H}), but the input "
                f"has D={D} columns; use skip='projection' when D != H"
            )
        if self.skip != "identity" and off != 0:
            raise ValueError(
                f"{name}.skip_offset: only the identity skip reads x columns; expected 0 with skip={self.skip!r}, got {off}"
            )

    @property
    def k(self) -> int:
        """The number of weight blocks: 4 with a projection skip, else 3."""
        return 4 if self.skip == "projection" else 3

    input_size = size_of("W", 1)
    hidden_size = size_of("b", 0, per=2, doc="H: b is [b_f; b_r], (2H,).")


_TBH = ("T", "B", "H")


@cache_fields(x=("T", "B", "D"), c=("T+1", "B", "H"), f=_TBH, r=_TBH, g=_TBH, U_c=_TBH, s=_TBH, pad=("T", "B", bool))
class SRUCache(NamedTuple):
    """What backward needs, named after the equations. ``c`` holds c_0..c_T (T+1 steps).

    At a padded step ``c[t+1]`` is ``c[t]``, while ``f, r, g`` hold the unused values of the update the
    mask discarded (backward ignores them there)."""

    x: np.ndarray  # (T, B, D)
    c: np.ndarray  # (T+1, B, H)
    f: np.ndarray  # (T, B, H)
    r: np.ndarray  # (T, B, H)
    g: np.ndarray  # (T, B, H): g(c_t)
    U_c: np.ndarray  # (T, B, H)
    s: np.ndarray | None  # (T, B, H): the scaled skip term s_t; None with skip="none"
    pad: np.ndarray | None  # (T, B) bool, true at padded steps; None without a mask


def init(
    input_size: int,
    hidden_size: int,
    *,
    skip: str | None = None,
    v_terms: bool = True,
    rescale: bool = False,
    highway_bias: float = 0.0,
    activation: str = "identity",
    rng=None,
    dtype=np.float64,
) -> SRUParams:
    """The sru package's initialisation (``SRUCell.reset_parameters``, with ``v1=False`` unless ``v_terms`` is off).

    ``W`` uniform with variance 1/D, its f and r blocks and ``v`` scaled by sqrt(0.5) (``v`` then has
    variance 1/2); ``b_f = 0``, ``b_r = highway_bias``. ``skip=None`` picks "identity" when D == H
    and "projection" otherwise. ``rescale`` sets the highway scale ``highway_alpha(highway_bias)``:
    as ``alpha`` for the identity skip, multiplied into the initial ``W_s`` for the projection skip
    (then ``alpha`` is 1), exactly as the sru package does.
    """
    D = positive_int("input_size", input_size)
    H = positive_int("hidden_size", hidden_size)
    rng = np.random.default_rng(rng)
    if skip is None:
        skip = "identity" if D == H else "projection"
    one_of("skip", skip, SKIPS)
    k = 4 if skip == "projection" else 3
    bound = math.sqrt(3.0 / D)
    W = rng.uniform(-bound, bound, size=(k * H, D))
    W[H : 3 * H] *= math.sqrt(0.5)  # the sigmoid gates' blocks, as sru does
    alpha = 1.0
    if rescale and skip != "none":
        if skip == "projection":
            W[3 * H :] *= highway_alpha(highway_bias)
        else:
            alpha = highway_alpha(highway_bias)
    v = rng.uniform(-math.sqrt(3.0), math.sqrt(3.0), size=2 * H) * math.sqrt(0.5) if v_terms else None
    b = np.concatenate([np.zeros(H), np.full(H, float(highway_bias))])
    return SRUParams(
        W.astype(dtype),
        None if v is None else v.astype(dtype),
        b.astype(dtype),
        skip=skip,
        alpha=alpha,
        activation=activation,
    )


def zero_state(params: SRUParams, batch: int) -> np.ndarray:
    instance("params", params, SRUParams)
    return np.zeros((count("batch", batch), params.hidden_size), dtype=params.dtype)


def check_mask(mask_pad, T: int, B: int) -> np.ndarray | None:
    """``mask_pad`` as a (T, B) bool array (true = padded), or None. Bool, integer or float 0/1 entries."""
    if mask_pad is None:
        return None
    if hasattr(mask_pad, "detach"):  # a torch tensor, without importing torch
        mask_pad = mask_pad.detach().cpu().numpy()
    m = np.asarray(mask_pad)
    if m.dtype.kind not in "biuf":
        raise TypeError(f"mask_pad: expected a bool or 0/1 array of shape (T, B), got dtype {m.dtype}")
    if m.shape != (T, B):
        raise ValueError(f"mask_pad: expected shape (T, B) with T={T}, B={B}, got shape {m.shape}")
    if m.dtype.kind != "b" and not np.all((m == 0) | (m == 1)):
        raise ValueError("mask_pad: entries must be 0 (real step) or 1 (padded step); got other values")
    return m.astype(bool)


def check_inputs(params: SRUParams, x, c0, mask_pad=None):
    instance("params", params, SRUParams)
    dims = {"D": params.input_size, "H": params.hidden_size}
    x = float_array("x", x, ("T", "B", "D"), dims, dtype=params.dtype)
    pad = check_mask(mask_pad, x.shape[0], x.shape[1])
    if c0 is None:
        return x, zero_state(params, x.shape[1]), pad
    c0 = float_array("state0", c0, ("B", "H"), {**dims, "B": x.shape[1]}, dtype=params.dtype)
    return x, c0, pad


def _gate_terms(params: SRUParams):
    """(v_f, v_r, b_f, b_r); the v's are None when the model has no v terms."""
    b_f, b_r = split_gates(params.b, ("f", "r"))
    if params.v is None:
        return None, None, b_f, b_r
    v_f, v_r = split_gates(params.v, ("f", "r"))
    return v_f, v_r, b_f, b_r


@renamed(c0="state0")
def forward(params: SRUParams, x, state0=None, mask_pad=None) -> tuple[np.ndarray, np.ndarray, SRUCache]:
    """Run the SRU over ``x``; returns ``(y, c_T, cache)``. ``state0`` (B, H) is c_0, None means zeros; ``mask_pad`` (T, B)
    marks padded steps (see the module docstring). ``y`` is read-only."""
    x, c0, pad = check_inputs(params, x, state0, mask_pad)
    T, B, _ = x.shape
    H = params.hidden_size
    dt = params.dtype
    U = finite_result("x", x @ params.W.T, "the input projection W x")  # (T, B, kH): the only product, for every step at once
    U_c, U_f, U_r = U[..., :H], U[..., H : 2 * H], U[..., 2 * H : 3 * H]
    if params.skip == "identity":
        s = params.alpha * x[..., params.skip_offset : params.skip_offset + H]
    elif params.skip == "projection":
        s = params.alpha * U[..., 3 * H :]
    else:
        s = None
    v_f, v_r, b_f, b_r = _gate_terms(params)
    c = np.empty((T + 1, B, H), dt)
    c[0] = c0
    f, r, g, h = (np.empty((T, B, H), dt) for _ in range(4))
    for t in range(T):
        c_prev = c[t]
        a_f = U_f[t] + b_f
        a_r = U_r[t] + b_r
        if v_f is not None:
            a_f = a_f + v_f * c_prev
            a_r = a_r + v_r * c_prev
        f[t] = sigmoid(a_f)
        r[t] = sigmoid(a_r)
        c[t + 1] = f[t] * c_prev + (1.0 - f[t]) * U_c[t]
        g[t] = np.tanh(c[t + 1]) if params.activation == "tanh" else c[t + 1]
        h[t] = r[t] * g[t] if s is None else r[t] * g[t] + (1.0 - r[t]) * s[t]
        if pad is not None:  # a padded step keeps c and outputs zero (sru's mask_pad)
            padded = pad[t][:, None]
            c[t + 1] = np.where(padded, c_prev, c[t + 1])
            h[t] = np.where(padded, 0.0, h[t])
    finite_result("state0", c[T], "the recurrence (x, c_0 -> c_T)")
    U_c = np.ascontiguousarray(U_c)
    if s is not None:
        s = np.ascontiguousarray(s)
        frozen(s)
    if pad is not None:
        frozen(pad)
    frozen(c, f, r, g, h, U_c)
    return h, c[T].copy(), SRUCache(x, c, f, r, g, U_c, s, pad)


@renamed(dc_T="dstate_T")
def backward(params: SRUParams, cache: SRUCache, dy, dstate_T=None) -> tuple[SRUParams, np.ndarray, np.ndarray]:
    """Backprop through time. ``dy`` (T, B, H) is dL/dy, ``dstate_T`` (B, H) is dL/dc_T (None: zero).

    Returns ``(grads, dx, dc0)`` with ``grads`` an :class:`SRUParams` (``grads.v`` is None when
    ``params.v`` is). Padded steps (the cache's mask) pass ``dc`` through and contribute nothing else.
    """
    instance("params", params, SRUParams)
    sizes = {"D": params.input_size, "H": params.hidden_size}
    present = {"s": params.skip != "none", "pad": None}
    x, c, f, r, g, U_c, s, pad = check_cache(cache, SRUCache, params, sizes, present)
    T, B, H = f.shape
    dims = {"T": T, "B": B, "H": H}
    dt = params.dtype
    dy = float_array("dy", dy, ("T", "B", "H"), dims, dtype=dt)
    dc = np.zeros((B, H), dt) if dstate_T is None else float_array("dstate_T", dstate_T, ("B", "H"), dims, dtype=dt).copy()
    v_f, v_r, _, _ = _gate_terms(params)
    # dU[t]: gradient at the blocks of U = x W^T, [U_c, U_f, U_r (, U_s)]; ds: at the skip term s_t.
    dU = np.zeros((T, B, params.k * H), dt)
    ds = np.zeros((T, B, H), dt) if s is not None else None
    dv = np.zeros(2 * H, dt)
    for t in reversed(range(T)):
        c_prev = c[t]
        dh = dy[t]
        if pad is not None:
            dh = np.where(pad[t][:, None], 0.0, dh)  # h_t = 0 at padded steps: dy is not routed anywhere
        # h_t = r * g(c_t) + (1 - r) * s_t
        dr = dh * g[t] if s is None else dh * (g[t] - s[t])
        dg = dh * r[t]
        if s is not None:
            ds[t] = dh * (1.0 - r[t])
        dct = dc + (dg * (1.0 - g[t] * g[t]) if params.activation == "tanh" else dg)  # total dL/dc_t
        if pad is not None:
            dct = np.where(pad[t][:, None], 0.0, dct)  # c_t = c_{t-1} there: dc goes around the step
        # c_t = f * c_{t-1} + (1 - f) * U_c
        da_f = dct * (c_prev - U_c[t]) * f[t] * (1.0 - f[t])
        da_r = dr * r[t] * (1.0 - r[t])
        dU[t, :, :H] = dct * (1.0 - f[t])
        dU[t, :, H : 2 * H] = da_f
        dU[t, :, 2 * H : 3 * H] = da_r
        dc_prev = dct * f[t]
        if v_f is not None:
            dc_prev = dc_prev + da_f * v_f + da_r * v_r
            dv[:H] += np.sum(da_f * c_prev, axis=0)
            dv[H:] += np.sum(da_r * c_prev, axis=0)
        if pad is not None:
            dc_prev = np.where(pad[t][:, None], dc, dc_prev)
        dc = dc_prev
    alpha = params.alpha
    if params.skip == "projection":
        dU[..., 3 * H :] = alpha * ds
    D = x.shape[2]
    flat = dU.reshape(T * B, params.k * H)
    grads = dict(W=flat.T @ x.reshape(T * B, D), v=None if v_f is None else dv, b=flat[:, H : 3 * H].sum(axis=0))
    dx = dU @ params.W
    if params.skip == "identity":
        dx[..., params.skip_offset : params.skip_offset + H] += alpha * ds
    return gradients(params, grads, dx, dc)


# ----------------------------------------------------------------------------------------------------
# Directions


class BidirectionalCache(NamedTuple):
    forward: SRUCache  # of the forward direction
    reverse: SRUCache  # of the reverse direction, in its own (flipped) time order


def _flip(a):
    return None if a is None else np.asarray(a)[::-1]


def _pair(name: str, value):
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{name}: expected a (forward, reverse) pair, got {type(value).__name__}")
    return tuple(value)


def directions(forward, backward):
    """``(reverse_forward, reverse_backward, bidirectional_forward, bidirectional_backward)`` built on one
    implementation's ``forward`` and ``backward`` (this module's, or a fast twin's with the same contract).

    They stay SRU-specific rather than :mod:`refrnn.layers.bidirectional`'s generic layer because sru's
    padding is ``mask_pad`` (a padded step passes the state through), not lengths.
    """

    @renamed(c0="state0")
    def reverse_forward(params: SRUParams, x, state0=None, mask_pad=None) -> tuple[np.ndarray, np.ndarray, SRUCache]:
        """Run one SRU from t = T-1 down to 0: ``forward`` on time-flipped ``x`` and ``mask_pad``, output
        flipped back so ``y[t]`` is the state after reading ``x[T-1], ..., x[t]``. ``c_T`` is the state
        after ``x[0]``. The cache is in the flipped order; pass it to ``reverse_backward``."""
        instance("params", params, SRUParams)
        x = float_array("x", x, ("T", "B", "D"), {"D": params.input_size}, dtype=params.dtype)
        y, c_end, cache = forward(params, x[::-1], state0, _flip(mask_pad))
        return y[::-1], c_end, cache

    @renamed(dc_T="dstate_T")
    def reverse_backward(params: SRUParams, cache: SRUCache, dy, dstate_T=None) -> tuple[SRUParams, np.ndarray, np.ndarray]:
        """Backward of ``reverse_forward``; ``dy`` in the caller's (unflipped) time order."""
        instance("params", params, SRUParams)
        dy = float_array("dy", dy, ("T", "B", "H"), {"H": params.hidden_size}, dtype=params.dtype)
        grads, dx, dc0 = backward(params, cache, dy[::-1], dstate_T)
        return grads, dx[::-1].copy(), dc0

    def bidirectional_forward(directions, x, state0=None, mask_pad=None):
        """A bidirectional layer: ``directions = (forward_params, reverse_params)``, both reading all of ``x``.

        Returns ``(y, (c_fwd_T, c_rev_T), cache)`` with ``y`` (T, B, H_fwd + H_rev) = ``[y_fwd, y_rev]``
        along the last axis (sru and PyTorch order). ``state0`` is the pair ``(c0_fwd, c0_rev)`` or None;
        ``c_rev_T`` is the reverse direction's state after reading ``x[0]``.
        """
        fwd, rev = _pair("directions", directions)
        c0_f, c0_r = (None, None) if state0 is None else _pair("state0", state0)
        y_f, c_f, cache_f = forward(fwd, x, c0_f, mask_pad)
        y_r, c_r, cache_r = reverse_forward(rev, x, c0_r, mask_pad)
        return np.concatenate([y_f, y_r], axis=-1), (c_f, c_r), BidirectionalCache(cache_f, cache_r)

    def bidirectional_backward(directions, cache: BidirectionalCache, dy, dstate_T=None):
        """Backward of ``bidirectional_forward``; returns ``((grads_fwd, grads_rev), dx, (dc0_fwd, dc0_rev))``."""
        fwd, rev = _pair("directions", directions)
        instance("cache", cache, BidirectionalCache)
        dc_f, dc_r = (None, None) if dstate_T is None else _pair("dstate_T", dstate_T)
        H_f = fwd.hidden_size
        dy = float_array("dy", dy, ("T", "B", "H"), {"H": H_f + rev.hidden_size}, dtype=fwd.dtype)
        g_f, dx_f, dc0_f = backward(fwd, cache.forward, dy[..., :H_f], dc_f)
        g_r, dx_r, dc0_r = reverse_backward(rev, cache.reverse, dy[..., H_f:], dc_r)
        return (g_f, g_r), dx_f + dx_r, (dc0_f, dc0_r)

    return reverse_forward, reverse_backward, bidirectional_forward, bidirectional_backward


reverse_forward, reverse_backward, bidirectional_forward, bidirectional_backward = directions(forward, backward)
