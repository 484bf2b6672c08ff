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

Three entry points, like the reference: :func:`forward` fills a :class:`refrnn.cells.gru.GRUCache`
(training), :func:`backward` consumes one (from this forward or the reference's; the reference's
backward takes this forward's just as well), :func:`forward_inference` keeps only the outputs.

:func:`backward` is :func:`refrnn.cells.gru.backward` compiled (:mod:`refrnn.jit._backward`): per
step one fused element-wise pass and the recurrence's product(s), then one GEMM over all T*B rows
per weight gradient and one for ``dx``. Every product of a jit forward and backward runs on the one
BLAS numba calls, so a training loop never alternates two OpenBLAS thread pools (see there).

:func:`forward_inference` in float32 with a batch that is a multiple of 16 and a weight of at least
4 MB (:func:`refrnn.jit._rowcast.applies`) makes every product, the input products included, with
the compiled kernel of :mod:`refrnn.jit._rowcast` instead of BLAS: 1.3-1.5x faster at the paper's
size with AVX-512, 1.25x with AVX2, where the rule also asks for an input at most a quarter of the
state's width (4 D <= H). Its sums run in another order than BLAS's, so there its outputs equal
:func:`forward`'s within float32 rounding rather than bit for bit. The GRU's training step keeps BLAS: a step loop
alternating between the kernel's threads and BLAS's lost more than the kernel gained (B=32 H=256
training step 45 -> 57-67 ms), and the GRU's training bars are met on BLAS. (The LSTM's step runs
wholly on the kernel where its rule holds, weight gradients included: see :mod:`refrnn.jit.lstm`.)

float64 agrees with the reference to 1e-10 (libm activations, only rounding order differs);
float32 uses a polynomial exp (see :mod:`refrnn.jit._kernels`) and agrees within the tolerance
argued in ``tests/test_jit_gru_lstm.py``.

Shapes: x (T, B, D); state0 (B, H); y (T, B, H); h_T (B, H); dy (T, B, H); dstate_T (B, H). Time-major.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._checks import float_array, instance
from .._moved import algorithm_keyword, renamed
from ..cells import gru as reference
from ..cells._common import check_cache, frozen, gradients
from ..cells.gru import GRUCache, GRUParams
from . import _backward, _buffers, _kernels, _onepool, _rowcast, _strategy

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


def _run(params, x, state0, algorithm, prepared, train):
    x, h0 = reference.check_inputs(params, x, state0)
    prepared = _strategy.prepared_for(params, algorithm, prepared, prepare, Prepared, _strategy.resolver(params, x.shape[1]))
    T, B, _ = x.shape
    H = params.hidden_size
    dt = params.dtype
    steps = T if train else 1  # inference: one-step scratch buffers (see _kernels)
    shapes = ((T + 1, B, H), *[(steps, B, H)] * 4)
    # Training: the whole cache in one block, kept for the next call (see _buffers); inference: hs
    # and one step of gates, in a block of their own.
    _, hs, r, z, n, g = _buffers.carved("gru cache" if train else "gru inference", dt, *shapes)
    hs[0] = h0
    if T * B == 0:  # no step to take: y (T, B, H) and the cache are empty, h_T = h0, as in the reference
        return x, hs, (r, z, n, g)
    p = prepared
    xc = np.ascontiguousarray(x)
    before = params.reset == "before"
    rowcast = not train and _rowcast.applies(dt, B, params.W_h.size, params.input_size, H)  # see the module docstring
    if prepared.algorithm == "batched":
        x2 = xc.reshape(T * B, -1)
        ax = _kernels.forward_inputs(x2, p.W_xT, rowcast)
        _kernels.gru_batched(before, ax.reshape(T, B, 3 * H), p.W_hT, p.W_hnT, p.bias, hs, (r, z, n, g), rowcast)
    else:
        _kernels.gru_fused(before, xc, p.W_hT, p.W_xT, p.W_hnT, p.bias, hs, (r, z, n, g), rowcast)
    return x, hs, (r, z, n, g)


@renamed(h0="state0")
def forward(params: GRUParams, x, state0=None, *, algorithm: str = "auto", prepared: Prepared | None = None,
            strategy: str | None = None):
    """Training forward: ``(y, h_T, cache)`` exactly as :func:`refrnn.cells.gru.forward` returns them.

    ``cache`` is a :class:`refrnn.cells.gru.GRUCache` for :func:`backward` (or the reference's).
    ``h0=`` is the former name of ``state0``.
    """
    algorithm = algorithm_keyword(algorithm, strategy=strategy)
    x, hs, (r, z, n, g) = _run(params, x, state0, algorithm, prepared, train=True)
    frozen(hs.base, hs, r, z, n, g)
    return hs[1:], hs[-1].copy(), GRUCache(x, hs, r, z, n, g)


@renamed(h0="state0")
def forward_inference(params: GRUParams, x, state0=None, *, algorithm: str = "auto", prepared: Prepared | None = None,
                      strategy: str | None = None):
    """Inference forward: ``(y, h_T)``, no cache kept."""
    algorithm = algorithm_keyword(algorithm, strategy=strategy)
    _, hs, _ = _run(params, x, state0, algorithm, prepared, train=False)
    return hs[1:], hs[-1].copy()


@renamed(dh_T="dstate_T")
def backward(params: GRUParams, cache: GRUCache, dy, dstate_T=None) -> tuple[GRUParams, np.ndarray, np.ndarray]:
    """Backprop through time, compiled: ``(grads, dx, dh0)`` as :func:`refrnn.cells.gru.backward` returns them.

    ``dy`` (T, B, H) is dL/dy, ``dstate_T`` (B, H) is dL/dh_T (None: zero; ``dh_T=`` is its former
    name); ``cache`` the :class:`refrnn.cells.gru.GRUCache` of either forward. ``grads`` is a
    :class:`refrnn.cells.gru.GRUParams`.
    """
    instance("params", params, GRUParams)
    sizes = {"D": params.input_size, "H": params.hidden_size}
    x, h, r, z, n, g = check_cache(cache, GRUCache, params, sizes)
    T, B, H = r.shape
    D, dt = x.shape[2], params.dtype
    dims = {"T": T, "B": B, "H": H}
    dy = float_array("dy", dy, ("T", "B", "H"), dims, dtype=dt)
    dh = np.zeros((B, H), dt) if dstate_T is None else float_array("dstate_T", dstate_T, ("B", "H"), dims, dtype=dt).copy()
    if T * B == 0:  # nothing to propagate: zero weight gradients, dh0 = dh_T, as in the reference
        zeros = dict(W_x=np.zeros((3 * H, D), dt), W_h=np.zeros((3 * H, H), dt), b_x=np.zeros(3 * H, dt), b_h=np.zeros(3 * H, dt))
        return gradients(params, zeros, np.zeros((T, B, D), dt), dh)
    cached = tuple(_onepool.readonly(a) for a in (x, h, r, z, n, g))
    W_x, W_h = _onepool.readonly(params.W_x), _onepool.readonly(params.W_h)
    dy = _onepool.readonly(dy)
    x_c, h_c = cached[0], cached[1]
    dx = np.empty((T * B, D), dt)
    dW_x, dW_h = np.empty((3 * H, D), dt), np.empty((3 * H, H), dt)
    if params.reset == "after":
        da_x, da_h = np.empty((T, B, 3 * H), dt), np.empty((T, B, 3 * H), dt)
        acc_x, acc_hn = np.zeros(3 * H), np.zeros(H)
        W_hT = _onepool.readonly(_kernels.transposed_weight(W_h, B))
        _backward.gru_after_backward(cached, dy, (W_h, W_hT), dh, (da_x, da_h), (acc_x, acc_hn))
        _backward.weight_gradient(da_x, x_c, dW_x)
        _backward.weight_gradient(da_h, h_c[:-1], dW_h)
        _backward.input_gradient(da_x, W_x, dx)
        b_x = acc_x.astype(dt)
        b_h = np.concatenate([b_x[: 2 * H], acc_hn.astype(dt)])
    else:
        d_rz, d_n, rh = np.empty((T, B, 2 * H), dt), np.empty((T, B, H), dt), np.empty((T, B, H), dt)
        acc_rz, acc_n = np.zeros(2 * H), np.zeros(H)
        W_hT = tuple(_onepool.readonly(_kernels.transposed_weight(w, B)) for w in (W_h[: 2 * H], W_h[2 * H :]))
        _backward.gru_before_backward(cached, dy, (W_h, *W_hT), dh, (d_rz, d_n, rh), (acc_rz, acc_n))
        _backward.weight_gradient(d_rz, x_c, dW_x[: 2 * H])
        _backward.weight_gradient(d_n, x_c, dW_x[2 * H :])
        _backward.weight_gradient(d_rz, h_c[:-1], dW_h[: 2 * H])
        _backward.weight_gradient(d_n, rh, dW_h[2 * H :])
        dx_n = np.empty((T * B, D), dt)
        _backward.input_gradient(d_rz, W_x[: 2 * H], dx)
        _backward.input_gradient(d_n, W_x[2 * H :], dx_n)
        dx += dx_n
        b_x = np.concatenate([acc_rz, acc_n]).astype(dt)
        b_h = b_x.copy()
    grads = dict(W_x=dW_x, W_h=dW_h, b_x=b_x, b_h=b_h)
    return gradients(params, grads, dx.reshape(T, B, D), dh)
