r"""Reference GRU: forward over a whole sequence and hand-derived backprop through time.

Equations (library convention; ``*`` is the element-wise product)::

    r_t = sigmoid(W_xr x_t + b_xr + W_hr h_{t-1} + b_hr)            reset gate
    z_t = sigmoid(W_xz x_t + b_xz + W_hz h_{t-1} + b_hz)            update gate
    n_t = tanh(W_xn x_t + b_xn + r_t * (W_hn h_{t-1} + b_hn))       reset="after"  (PyTorch, cuDNN, Keras reset_after=True, ONNX linear_before_reset=1)
    n_t = tanh(W_xn x_t + b_xn + W_hn (r_t * h_{t-1}) + b_hn)       reset="before" (Cho et al. 2014; seed paper Eq. 3; Keras reset_after=False)
    h_t = (1 - z_t) * n_t + z_t * h_{t-1}

Update-rule orientation. refrnn uses PyTorch's orientation, ``h_t = (1 - z) * n + z * h_{t-1}``: ``z`` is
the fraction of the old state *kept*. It is also cuDNN's, Keras's and ONNX's, so conversions to all
of them are pure re-orderings, bit-exact both ways. The seed paper (Eq. 4) writes
``h_t = (1 - z) * h_{t-1} + z * h^_t``, where ``z`` is the fraction *replaced*; since
``1 - sigmoid(a) = sigmoid(-a)``, paper weights become refrnn weights by negating the z rows of
``W_x, W_h, b_x, b_h`` (:func:`refrnn.layouts.paper.flip_update_orientation`). The conditional-computation GRU
(:mod:`refrnn.cells.ccgru`) keeps the paper's orientation because its clipped-tanh ``z`` has no such
identity.

Layout (the same as ``torch.nn.GRU``'s ``weight_ih_l0`` etc., gates stacked in ``GATES`` order)::

    W_x: (3H, D) = [W_xr; W_xz; W_xn]      b_x: (3H,) = [b_xr; b_xz; b_xn]
    W_h: (3H, H) = [W_hr; W_hz; W_hn]      b_h: (3H,) = [b_hr; b_hz; b_hn]

With reset="before" only ``b_xn + b_hn`` matters for n (both receive the same gradient); they are kept
separate so one container serves both conventions and converts from every framework without loss.

Shapes: x (T, B, D); h0 (B, H); y (T, B, H) = h_1..h_T; h_T (B, H). Time-major.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

from .._moved import renamed
from .._checks import finite_result, float_array, instance, one_of, positive_int
from ._common import (
    Params, cache_fields, check_cache, check_weight, check_x_h0, frozen, gradients, option, sigmoid, size_of, split_gates,
    torch_uniform, zero_h,
)

GATES = ("r", "z", "n")
RESETS = ("after", "before")


@dataclasses.dataclass(frozen=True)
class GRUParams(Params):
    """GRU weights; field names are the symbols of the module equations. ``reset`` names the convention."""

    W_x: np.ndarray
    W_h: np.ndarray
    b_x: np.ndarray
    b_h: np.ndarray
    reset: str = option("after")

    def _check_shapes(self) -> None:
        one_of("reset", self.reset, RESETS)
        name = type(self).__name__
        W_h = np.asarray(self.W_h)
        if W_h.ndim != 2 or W_h.shape[0] != 3 * W_h.shape[1]:
            raise ValueError(f"{name}.W_h: expected shape (3H, H), got {W_h.shape}")
        H = W_h.shape[1]
        check_weight(name, "W_x", self.W_x, ("3H", "D"), {"3H": 3 * H})
        check_weight(name, "b_x", self.b_x, ("3H",), {"3H": 3 * H})
        check_weight(name, "b_h", self.b_h, ("3H",), {"3H": 3 * H})

    input_size = size_of("W_x", 1)
    hidden_size = size_of("W_h", 1)


@cache_fields(x=("T", "B", "D"), h=("T+1", "B", "H"), r=("T", "B", "H"), z=("T", "B", "H"), n=("T", "B", "H"), g=("T", "B", "H"))
class GRUCache(NamedTuple):
    """What backward needs, named after the equations. ``h`` holds h_0..h_T (T+1 steps)."""

    x: np.ndarray  # (T, B, D)
    h: np.ndarray  # (T+1, B, H)
    r: np.ndarray  # (T, B, H)
    z: np.ndarray  # (T, B, H)
    n: np.ndarray  # (T, B, H)
    g: np.ndarray  # (T, B, H): W_hn h_{t-1} + b_hn (after) or W_hn (r*h_{t-1}) + b_hn (before)


def init(input_size: int, hidden_size: int, *, reset: str = "after", rng=None, dtype=np.float64) -> GRUParams:
    """PyTorch's default initialisation: every entry uniform in (-1/sqrt(H), 1/sqrt(H))."""
    input_size = positive_int("input_size", input_size)
    hidden_size = positive_int("hidden_size", hidden_size)
    one_of("reset", reset, RESETS)
    u = torch_uniform(rng, hidden_size, dtype)
    H3 = 3 * hidden_size
    return GRUParams(u(H3, input_size), u(H3, hidden_size), u(H3), u(H3), reset=reset)


def zero_state(params: GRUParams, batch: int) -> np.ndarray:
    instance("params", params, GRUParams)
    return zero_h(params, batch)


def check_inputs(params: GRUParams, x, h0) -> tuple[np.ndarray, np.ndarray]:
    return check_x_h0(params, GRUParams, x, h0)


@renamed(h0="state0")
def forward(params: GRUParams, x, state0=None) -> tuple[np.ndarray, np.ndarray, GRUCache]:
    """Run the GRU over ``x``; returns ``(y, h_T, cache)``. ``state0`` (B, H) is h_0; None means zeros.

    The input-side products of all T steps are one product over T*B rows; only ``W_h h`` is per step.
    ``y`` is a read-only view of the cache.
    """
    x, h0 = check_inputs(params, x, state0)
    T, B, _ = x.shape
    H = params.hidden_size
    W_hr, W_hz, W_hn = split_gates(params.W_h, GATES, axis=0)
    b_hr, b_hz, b_hn = split_gates(params.b_h, GATES)
    ax = finite_result("x", x @ params.W_x.T + params.b_x, "the input projection W_x x + b_x")  # (T, B, 3H): all steps at once
    h = np.empty((T + 1, B, H), dtype=params.dtype)
    h[0] = h0
    r, z, n, g = (np.empty((T, B, H), dtype=params.dtype) for _ in range(4))
    for t in range(T):
        ax_r, ax_z, ax_n = split_gates(ax[t], GATES)
        if params.reset == "after":
            ah_r, ah_z, g[t] = split_gates(h[t] @ params.W_h.T + params.b_h, GATES)
            r[t] = sigmoid(ax_r + ah_r)
            z[t] = sigmoid(ax_z + ah_z)
            n[t] = np.tanh(ax_n + r[t] * g[t])
        else:
            r[t] = sigmoid(ax_r + h[t] @ W_hr.T + b_hr)
            z[t] = sigmoid(ax_z + h[t] @ W_hz.T + b_hz)
            g[t] = (r[t] * h[t]) @ W_hn.T + b_hn
            n[t] = np.tanh(ax_n + g[t])
        h[t + 1] = (1.0 - z[t]) * n[t] + z[t] * h[t]
    finite_result("state0", h[T], "the recurrence (x, h_0 -> h_T)")  # a huge finite h0 overflows W_h h
    frozen(h, r, z, n, g)
    return h[1:], h[T].copy(), GRUCache(x, h, r, z, n, g)


@renamed(dh_T="dstate_T")
def backward(params: GRUParams, cache: GRUCache, dy, dstate_T=None) -> tuple[GRUParams, np.ndarray, np.ndarray]:
    """Backprop through time. ``dy`` (T, B, H) is dL/dy, ``dstate_T`` (B, H) is dL/dh_T (None: zero).

    Returns ``(grads, dx, dh0)`` with ``grads`` a :class:`GRUParams`.
    """
    sizes = {"D": params.input_size, "H": params.hidden_size}
    x, h, r, z, n, g = check_cache(cache, GRUCache, instance("params", params, GRUParams), sizes)
    T, B, H = r.shape
    dims = {"T": T, "B": B, "H": H}
    dy = float_array("dy", dy, ("T", "B", "H"), dims, dtype=params.dtype)
    dh = np.zeros((B, H), params.dtype) if dstate_T is None else float_array("dstate_T", dstate_T, ("B", "H"), dims, dtype=params.dtype).copy()
    W_hr, W_hz, W_hn = split_gates(params.W_h, GATES, axis=0)
    W_hrz = params.W_h[: 2 * H]
    # da_x[t]: gradient at the input-side pre-activations [a_r, a_z, a_n]; da_h[t]: at the outputs of
    # the recurrent products [W_hr h, W_hz h, W_hn h] (after) or [W_hr h, W_hz h, W_hn (r*h)] (before).
    da_x = np.empty((T, B, 3 * H), params.dtype)
    da_h = np.empty((T, B, 3 * H), params.dtype)
    for t in reversed(range(T)):
        dh = dh + dy[t]
        h_prev = h[t]
        dn = dh * (1.0 - z[t])
        dz = dh * (h_prev - n[t])
        da_n = dn * (1.0 - n[t] * n[t])
        da_z = dz * z[t] * (1.0 - z[t])
        if params.reset == "after":
            dg = da_n * r[t]
            da_r = da_n * g[t] * r[t] * (1.0 - r[t])
            da_h[t] = np.concatenate([da_r, da_z, dg], axis=-1)
            dh = dh * z[t] + da_h[t] @ params.W_h
        else:
            d_rh = da_n @ W_hn  # gradient at r * h_prev
            da_r = d_rh * h_prev * r[t] * (1.0 - r[t])
            da_h[t] = np.concatenate([da_r, da_z, da_n], axis=-1)
            dh = dh * z[t] + d_rh * r[t] + da_h[t, :, : 2 * H] @ W_hrz
        da_x[t] = np.concatenate([da_r, da_z, da_n], axis=-1)
    D = x.shape[2]
    flat_ax = da_x.reshape(T * B, 3 * H)
    flat_ah = da_h.reshape(T * B, 3 * H)
    h_prev_all = h[:-1].reshape(T * B, H)
    if params.reset == "after":
        dW_h = flat_ah.T @ h_prev_all
    else:
        dW_h = np.concatenate(
            [flat_ah[:, : 2 * H].T @ h_prev_all, flat_ah[:, 2 * H :].T @ (r.reshape(T * B, H) * h_prev_all)], axis=0
        )
    grads = dict(W_x=flat_ax.T @ x.reshape(T * B, D), W_h=dW_h, b_x=flat_ax.sum(axis=0), b_h=flat_ah.sum(axis=0))
    return gradients(params, grads, da_x @ params.W_x, dh)
