r"""Reference vanilla (Elman) RNN: forward over a whole sequence and hand-derived backprop through time.

Equations (``act`` is ``tanh`` or ``relu``, PyTorch's ``nonlinearity``)::

    h_t = act(W_x x_t + b_x + W_h h_{t-1} + b_h)

Both biases are kept, as ``torch.nn.RNN`` does (only their sum matters: both receive the same
gradient), so the conversion from PyTorch is a renaming and the one to Keras ``SimpleRNN`` (one bias)
or ONNX ``RNN`` (``[Wb; Rb]``) is exact in the direction it is read back.

Backward uses the stored outputs only: ``act'(a_t)`` is ``1 - h_t^2`` for tanh and ``[h_t > 0]`` for
relu (``h_t > 0`` exactly when ``a_t > 0``; at ``a_t = 0`` the derivative is taken as 0, PyTorch's
``threshold_backward`` convention).

Layout (the same as ``torch.nn.RNN``'s ``weight_ih_l0``, ``weight_hh_l0``, ``bias_ih_l0``, ``bias_hh_l0``)::

    W_x: (H, D)    W_h: (H, H)    b_x: (H,)    b_h: (H,)

Shapes: x (T, B, D); h0 (B, H); y (T, B, H) = h_1..h_T; h_T (B, H). Time-major.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

from .._moved import renamed
from .._checks import finite_result, float_array, instance, one_of, positive_int
from ._common import (
    Params, cache_fields, check_cache, check_weight, check_x_h0, frozen, gradients, option, size_of, torch_uniform, zero_h,
)

GATES = ("h",)  # one block: the stacked-gate helpers (saturation pins, reports) see a one-gate cell
ACTIVATIONS = ("tanh", "relu")


@dataclasses.dataclass(frozen=True)
class RNNParams(Params):
    """Vanilla RNN weights; field names are the symbols of the module equations. ``activation`` is
    ``"tanh"`` or ``"relu"`` (PyTorch's ``nonlinearity``)."""

    W_x: np.ndarray
    W_h: np.ndarray
    b_x: np.ndarray
    b_h: np.ndarray
    activation: str = option("tanh")

    def _check_shapes(self) -> None:
        one_of("activation", self.activation, ACTIVATIONS)
        name = type(self).__name__
        W_h = np.asarray(self.W_h)
        if W_h.ndim != 2 or W_h.shape[0] != W_h.shape[1]:
            raise ValueError(f"{name}.W_h: expected shape (H, H), got {W_h.shape}")
        H = W_h.shape[1]
        check_weight(name, "W_x", self.W_x, ("H", "D"), {"H": H})
        check_weight(name, "b_x", self.b_x, ("H",), {"H": H})
        check_weight(name, "b_h", self.b_h, ("H",), {"H": H})

    input_size = size_of("W_x", 1)
    hidden_size = size_of("W_h", 1)


@cache_fields(x=("T", "B", "D"), h=("T+1", "B", "H"))
class RNNCache(NamedTuple):
    """What backward needs. ``h`` holds h_0..h_T (T+1 steps); the activation's derivative is read from it."""

    x: np.ndarray  # (T, B, D)
    h: np.ndarray  # (T+1, B, H)


def init(input_size: int, hidden_size: int, *, activation: str = "tanh", rng=None, dtype=np.float64) -> RNNParams:
    """PyTorch's default initialisation: every entry uniform in (-1/sqrt(H), 1/sqrt(H))."""
    input_size = positive_int("input_size", input_size)
    hidden_size = positive_int("hidden_size", hidden_size)
    one_of("activation", activation, ACTIVATIONS)
    u = torch_uniform(rng, hidden_size, dtype)
    return RNNParams(u(hidden_size, input_size), u(hidden_size, hidden_size), u(hidden_size), u(hidden_size), activation=activation)


def zero_state(params: RNNParams, batch: int) -> np.ndarray:
    instance("params", params, RNNParams)
    return zero_h(params, batch)


def check_inputs(params: RNNParams, x, h0) -> tuple[np.ndarray, np.ndarray]:
    return check_x_h0(params, RNNParams, x, h0)


@renamed(h0="state0")
def forward(params: RNNParams, x, state0=None) -> tuple[np.ndarray, np.ndarray, RNNCache]:
    """Run the RNN over ``x``; returns ``(y, h_T, cache)``. ``state0`` (B, H) is h_0; None means zeros.

    The input-side products of all T steps are one product over T*B rows; only ``W_h h`` is per step.
    ``y`` is a read-only view of the cache.
    """
    x, h0 = check_inputs(params, x, state0)
    T, B, _ = x.shape
    ax = finite_result("x", x @ params.W_x.T + params.b_x, "the input projection W_x x + b_x")  # (T, B, H)
    h = np.empty((T + 1, B, params.hidden_size), dtype=params.dtype)
    h[0] = h0
    relu = params.activation == "relu"
    for t in range(T):
        a = ax[t] + h[t] @ params.W_h.T + params.b_h
        h[t + 1] = np.maximum(a, 0.0) if relu else np.tanh(a)
    finite_result("state0", h[T], "the recurrence (x, h_0 -> h_T)")  # relu is unbounded: a huge h0 overflows
    frozen(h)
    return h[1:], h[T].copy(), RNNCache(x, h)


@renamed(dh_T="dstate_T")
def backward(params: RNNParams, cache: RNNCache, dy, dstate_T=None) -> tuple[RNNParams, np.ndarray, np.ndarray]:
    """Backprop through time. ``dy`` (T, B, H) is dL/dy, ``dstate_T`` (B, H) is dL/dh_T (None: zero).

    Returns ``(grads, dx, dh0)`` with ``grads`` an :class:`RNNParams`.
    """
    sizes = {"D": params.input_size, "H": params.hidden_size}
    x, h = check_cache(cache, RNNCache, instance("params", params, RNNParams), sizes)
    T, B, H = h.shape[0] - 1, h.shape[1], h.shape[2]
    dims = {"T": T, "B": B, "H": H}
    dy = float_array("dy", dy, ("T", "B", "H"), dims, dtype=params.dtype)
    dh = np.zeros((B, H), params.dtype) if dstate_T is None else float_array("dstate_T", dstate_T, ("B", "H"), dims, dtype=params.dtype).copy()
    # act'(a_t) from the output h_t: 1 - h^2 (tanh), [h > 0] (relu)
    out = h[1:]
    slope = (out > 0).astype(params.dtype) if params.activation == "relu" else 1.0 - out * out
    da = np.empty((T, B, H), params.dtype)  # gradient at the pre-activation a_t
    for t in reversed(range(T)):
        dh = dh + dy[t]  # backprop into h_t: from the output and from step t + 1
        da[t] = dh * slope[t]
        dh = da[t] @ params.W_h
    D = x.shape[2]
    flat = da.reshape(T * B, H)
    db = flat.sum(axis=0)
    grads = dict(W_x=flat.T @ x.reshape(T * B, D), W_h=flat.T @ h[:-1].reshape(T * B, H), b_x=db, b_h=db.copy())
    return gradients(params, grads, da @ params.W_x, dh)
