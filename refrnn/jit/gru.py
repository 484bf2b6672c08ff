r"""Fast GRU forward (numba), the twin of :mod:`refrnn.cells.gru`: same parameters, same results.

Equations: those of :mod:`refrnn.cells.gru` (both reset conventions), computed in one of two
orders, chosen by ``algorithm``::

    "batched"  A_x = x @ W_x.T for all T*B rows at once (one GEMM), then per step
               A_h = h_{t-1} @ W_h.T (one product over all gates; two with reset="before"),
               then one fused pass over the B*H units: gates, activations, state update.
    "fused"    per step, the product [x_t, h_{t-1}] @ [W_x | W_h].T (the weights side by side, not
               block-diagonal: that would compute the two parts apart) for the gates whose input and
               recurrent parts add: r and z, plus W_hn h with reset="after"; W_xn x_t is a small
               second product, since the reset gate touches only the recurrent part of n.

"batched" pays one large GEMM and a (T, B, 3H) buffer, and its per-step products have K = H;
"fused" keeps nothing across steps and its per-step products have K = D + H. ``refrnn bench``
shows which wins where; ``algorithm="auto"`` (the default) picks by the rule measured there
(:mod:`refrnn.jit._strategy`: "fused" for B >= 2 and D <= H/8, else "batched"), or takes the
algorithm of the ``prepared`` layout passed in. ``strategy=`` is the keyword's former name.

Two entry points, like the reference: :func:`forward` fills a :class:`refrnn.cells.gru.GRUCache`
that :func:`refrnn.cells.gru.backward` consumes (training); :func:`forward_inference` keeps only
the outputs.

float64 agrees with the reference to 1e-10 (libm activations, only rounding order differs);
float32 uses a polynomial exp (see :mod:`refrnn.jit._kernels`) and agrees within the tolerance
argued in ``tests/test_jit_gru_lstm.py``.

Shapes: x (T, B, D); h0 (B, H); y (T, B, H); h_T (B, H). Time-major.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._moved import algorithm_keyword
from ..cells import gru as reference
from ..cells._common import frozen
from ..cells.gru import GRUCache, GRUParams
from . import _kernels, _strategy

ALGORITHMS = ("batched", "fused")  # what prepare() builds; forward also takes "auto" (refrnn.jit._strategy)
STRATEGIES = ALGORITHMS  # the former name


@_strategy.former_field_names
class Prepared(NamedTuple):
    """Weights re-arranged once per parameter set for one algorithm (build with :func:`prepare`)."""

    algorithm: str
    reset: str
    bias: np.ndarray  # (4H,) folded bias [b_xr + b_hr, b_xz + b_hz, b_xn, b_hn]
    W_xT: np.ndarray  # batched: (D, 3H) = W_x.T (a view)        fused: (D, H) = W_xn.T (a view)
    W_hT: np.ndarray  # batched: W_h.T, or [W_hr; W_hz].T (before)  fused: F.T, (D+H, 3H) or (D+H, 2H)
    W_hnT: np.ndarray  # (H, H) = W_hn.T, used by reset="before" only
    params: GRUParams


def prepare(params: GRUParams, algorithm: str = "batched", *, strategy: str | None = None) -> Prepared:
    """Transpose (views, no copy) and, for "fused", concatenate the weights once.

    Pass the result as ``prepared=`` to reuse it across calls with the same ``params`` (the
    fused layout copies W_h, about 12 MB at H=1024: worth doing once, not per sequence).
    """
    algorithm = _strategy.prepare_algorithm(params, GRUParams, algorithm, strategy)
    H, D = params.hidden_size, params.input_size
    # C order (no copy when already so): the kernels then always see the same array types, and
    # the transposed views below are Fortran-ordered, which BLAS reads in place.
    W_x, W_h = np.ascontiguousarray(params.W_x), np.ascontiguousarray(params.W_h)
    b_x, b_h = params.b_x, params.b_h
    bias = np.concatenate([b_x[: 2 * H] + b_h[: 2 * H], b_x[2 * H :], b_h[2 * H :]])
    W_hnT = W_h[2 * H :].T
    if algorithm == "batched":
        W_hT = W_h.T if params.reset == "after" else W_h[: 2 * H].T
        return Prepared(algorithm, params.reset, bias, W_x.T, W_hT, W_hnT, params)
    rows = 3 * H if params.reset == "after" else 2 * H
    F = np.zeros((rows, D + H), params.dtype)
    F[: 2 * H, :D] = W_x[: 2 * H]
    F[:, D:] = W_h[:rows]
    frozen(F)
    return Prepared(algorithm, params.reset, bias, W_x[2 * H :].T, F.T, W_hnT, params)


def _run(params, x, h0, algorithm, prepared, train):
    x, h0 = reference.check_inputs(params, x, h0)
    prepared = _strategy.prepared_for(params, algorithm, prepared, prepare, Prepared, _strategy.resolver(params, x.shape[1]))
    T, B, _ = x.shape
    H = params.hidden_size
    dt = params.dtype
    hs = np.empty((T + 1, B, H), dt)
    hs[0] = h0
    steps = T if train else 1  # inference: one-step scratch buffers (see _kernels)
    r, z, n, g = (np.empty((steps, B, H), dt) for _ in range(4))
    if T * B == 0:  # no step to take: y (T, B, H) and the cache are empty, h_T = h0, as in the reference
        return x, hs, (r, z, n, g)
    p = prepared
    xc = np.ascontiguousarray(x)
    if prepared.algorithm == "batched":
        ax = _kernels.input_products(xc.reshape(T * B, -1), p.W_xT).reshape(T, B, 3 * H)
        if params.reset == "after":
            _kernels.gru_after_batched(ax, p.W_hT, p.bias, hs, r, z, n, g)
        else:
            _kernels.gru_before_batched(ax, p.W_hT, p.W_hnT, p.bias, hs, r, z, n, g)
    elif params.reset == "after":
        _kernels.gru_after_fused(xc, p.W_hT, p.W_xT, p.bias, hs, r, z, n, g)
    else:
        _kernels.gru_before_fused(xc, p.W_hT, p.W_xT, p.W_hnT, p.bias, hs, r, z, n, g)
    return x, hs, (r, z, n, g)


def forward(params: GRUParams, x, h0=None, *, algorithm: str = "auto", prepared: Prepared | None = None,
            strategy: str | None = None):
    """Training forward: ``(y, h_T, cache)`` exactly as :func:`refrnn.cells.gru.forward` returns them.

    ``cache`` is a :class:`refrnn.cells.gru.GRUCache` for :func:`refrnn.cells.gru.backward`.
    """
    algorithm = algorithm_keyword(algorithm, strategy=strategy)
    x, hs, (r, z, n, g) = _run(params, x, h0, algorithm, prepared, train=True)
    frozen(hs, r, z, n, g)
    return hs[1:], hs[-1].copy(), GRUCache(x, hs, r, z, n, g)


def forward_inference(params: GRUParams, x, h0=None, *, algorithm: str = "auto", prepared: Prepared | None = None,
                      strategy: str | None = None):
    """Inference forward: ``(y, h_T)``, no cache kept."""
    algorithm = algorithm_keyword(algorithm, strategy=strategy)
    _, hs, _ = _run(params, x, h0, algorithm, prepared, train=False)
    return hs[1:], hs[-1].copy()
