r"""Fast LSTM forward (numba), the twin of :mod:`refrnn.cells.lstm`: same parameters, same results.

Equations: those of :mod:`refrnn.cells.lstm` (gates i, f, g, o; peepholes and projection when the
parameters have them, both inside the same fused pass), computed in one of two orders::

    "batched"  A_x = x @ W_x.T for all T*B rows at once (one GEMM), then per step one product
               A_h = h_{t-1} @ W_h.T over all four gates, then one fused pass over the B*H units.
    "fused"    per step the single product [x_t, h_{t-1}] @ [W_x | W_h].T (the weights side by
               side: every LSTM gate adds its input and recurrent parts, so nothing stays outside it).

``algorithm="auto"`` (the default) picks one by the rule measured with ``refrnn bench``
(:mod:`refrnn.jit._strategy`), or takes the algorithm of the ``prepared`` layout passed in.
``strategy=`` is the keyword's former name.

:func:`forward` fills a :class:`refrnn.cells.lstm.LSTMCache` for :func:`refrnn.cells.lstm.backward`;
:func:`forward_inference` keeps only the outputs (and two steps of c).

State is the pair ``(h, c)``. Shapes: x (T, B, D); h0 (B, P); c0 (B, H); y (T, B, P); P = H
without a projection.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._moved import algorithm_keyword
from ..cells import lstm as reference
from ..cells._common import frozen
from ..cells.lstm import LSTMCache, LSTMParams
from . import _kernels, _strategy

ALGORITHMS = ("batched", "fused")  # what prepare() builds; forward also takes "auto" (refrnn.jit._strategy)
STRATEGIES = ALGORITHMS  # the former name


@_strategy.former_field_names
class Prepared(NamedTuple):
    """Weights re-arranged once per parameter set for one algorithm (build with :func:`prepare`)."""

    algorithm: str
    bias: np.ndarray  # (4H,) folded bias b_x + b_h
    W_xT: np.ndarray  # (D, 4H) = W_x.T (a view)
    W_hT: np.ndarray  # batched: (P, 4H) = W_h.T (a view); fused: (D+P, 4H) = [W_x | W_h].T
    peepholes: tuple  # (w_ic, w_fc, w_oc), each (H,); zeros for a cell without peepholes
    W_hr: np.ndarray  # (P, H), or (0, H) without a projection
    params: LSTMParams


def prepare(params: LSTMParams, algorithm: str = "batched", *, strategy: str | None = None) -> Prepared:
    """Transpose (views) and, for "fused", concatenate the weights once; pass as ``prepared=``."""
    algorithm = _strategy.prepare_algorithm(params, LSTMParams, algorithm, strategy)
    H, dt = params.hidden_size, params.dtype
    # C order everywhere (no copy when already so): the kernels then always see the same array
    # types, and transposed views are Fortran-ordered, which BLAS reads in place.
    W_x, W_h = np.ascontiguousarray(params.W_x), np.ascontiguousarray(params.W_h)
    bias = params.b_x + params.b_h
    peepholes = tuple(np.zeros(H, dt) if w is None else np.ascontiguousarray(w) for w in (params.w_ic, params.w_fc, params.w_oc))
    W_hr = np.zeros((0, H), dt) if params.W_hr is None else np.ascontiguousarray(params.W_hr)
    if algorithm == "batched":
        W_hT = W_h.T
    else:
        F = np.concatenate([W_x, W_h], axis=1)
        frozen(F)
        W_hT = F.T
    return Prepared(algorithm, bias, W_x.T, W_hT, peepholes, W_hr, params)


def _run(params, x, state0, algorithm, prepared, train):
    x, (h0, c0) = reference.check_inputs(params, x, state0)
    prepared = _strategy.prepared_for(params, algorithm, prepared, prepare, Prepared, _strategy.resolver(params, x.shape[1]))
    T, B, _ = x.shape
    H, P = params.hidden_size, params.output_size
    dt = params.dtype
    hs = np.empty((T + 1, B, P), dt)
    cs = np.empty((T + 1 if train else 2, B, H), dt)  # inference: a two-slot ring (see _kernels)
    hs[0], cs[0] = h0, c0
    steps = T if train else 1
    gates = tuple(np.empty((steps, B, H), dt) for _ in range(5))  # i, f, g, o, tanh(c)
    m = np.empty((steps if params.W_hr is not None else 0, B, H), dt)  # o * tanh(c), projection only
    if T * B == 0:  # no step to take: y and the cache are empty, the state stays state0, as in the reference
        return x, hs, cs, gates, (m if params.W_hr is not None else None)
    p = prepared
    xc = np.ascontiguousarray(x)
    if prepared.algorithm == "batched":
        ax = _kernels.input_products(xc.reshape(T * B, -1), p.W_xT).reshape(T, B, 4 * H)
        _kernels.lstm_batched(ax, p.W_hT, p.bias, *p.peepholes, p.W_hr, hs, cs, *gates, m)
    else:
        _kernels.lstm_fused(xc, p.W_hT, p.bias, *p.peepholes, p.W_hr, hs, cs, *gates, m)
    return x, hs, cs, gates, (m if params.W_hr is not None else None)


def forward(params: LSTMParams, x, state0=None, *, algorithm: str = "auto", prepared: Prepared | None = None,
            strategy: str | None = None):
    """Training forward: ``(y, (h_T, c_T), cache)`` exactly as :func:`refrnn.cells.lstm.forward`."""
    algorithm = algorithm_keyword(algorithm, strategy=strategy)
    x, hs, cs, gates, m = _run(params, x, state0, algorithm, prepared, train=True)
    frozen(hs, cs, *gates, *(() if m is None else (m,)))
    return hs[1:], (hs[-1].copy(), cs[-1].copy()), LSTMCache(x, hs, cs, *gates, m)


def forward_inference(params: LSTMParams, x, state0=None, *, algorithm: str = "auto", prepared: Prepared | None = None,
                      strategy: str | None = None):
    """Inference forward: ``(y, (h_T, c_T))``, no cache kept."""
    algorithm = algorithm_keyword(algorithm, strategy=strategy)
    x, hs, cs, _, _ = _run(params, x, state0, algorithm, prepared, train=False)
    return hs[1:], (hs[-1].copy(), cs[x.shape[0] % 2].copy())
