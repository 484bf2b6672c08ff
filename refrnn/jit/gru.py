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

:func:`forward` and :func:`forward_inference` in float32 with a batch that is a multiple of 16 and a
weight of at least 48K elements with AVX-512, 4 MB and an input at most a quarter of the state's
width (4 D <= H) with AVX2 (:func:`refrnn.jit._rowcast.applies`) make every product with the
compiled kernel of :mod:`refrnn.jit._rowcast` instead of BLAS. With reset="after" (3H a multiple of
16) the step loop is :func:`refrnn.jit._kernels.gru_kernel`: the fused order reads W_x and W_h where
they are (no concatenated weight is built, so a training loop, whose weights change every step, pays
nothing for it), the element-wise pass runs in tasks of rows and units on the kernel's threads
(:func:`refrnn.jit._kernels.pass_tasks`), and :func:`backward` then takes the kernel too: its step
product over W_h packed once, its weight gradients and ``dx`` by :func:`refrnn.jit._rowcast.gemm`,
its element-wise pass split the same way. A training step then never calls BLAS, whose threads would
fight numba's after every hand-over. reset="before" keeps the per-step transposing products of
:func:`refrnn.jit._kernels.gru_fused` for inference and BLAS for training. The kernel's sums run in
another order than BLAS's, so there its results equal the BLAS path's within float32 rounding rather
than bit for bit.

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


def _on_kernel(params: GRUParams, B: int) -> bool:
    """Whether a forward's step loop is :func:`refrnn.jit._kernels.gru_kernel` (every product on
    the compiled kernel, the element-wise pass split over the same threads): where
    :func:`refrnn.jit._rowcast.applies`, for reset="after" with 3H a multiple of the kernel's 16
    lanes. A training step's backward then takes the kernel too (:func:`backward`)."""
    return (params.reset == "after" and (3 * params.hidden_size) % _rowcast.LANES == 0
            and _rowcast.applies(params.dtype, B, params.W_h.size, params.input_size, params.hidden_size))


def _run(params, x, state0, algorithm, prepared, train):
    x, h0 = reference.check_inputs(params, x, state0)
    T, B, _ = x.shape
    H = params.hidden_size
    dt = params.dtype
    kernel = _on_kernel(params, B)
    algorithm, prepared = _strategy.algorithm_and_layout(params, algorithm, prepared, prepare, Prepared, B, kernel)
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
    if kernel:  # either order, W_x and W_h read where they are (see _kernels.gru_kernel)
        W_h = np.ascontiguousarray(params.W_h)
        if algorithm == "batched":
            ax = _kernels.forward_inputs(xc.reshape(T * B, -1), p.W_xT, True).reshape(T, B, 3 * H)
            _kernels.gru_kernel(np.empty((T, B, 0), dt), ax, np.empty((3 * H, 0), dt), np.empty((H, 0), dt), W_h,
                                p.bias, hs, (r, z, n, g))
        else:
            W_x = np.ascontiguousarray(params.W_x)
            W_xf = np.zeros_like(W_x)
            W_xf[: 2 * H] = W_x[: 2 * H]
            _kernels.gru_kernel(xc, np.empty((T, 0, 3 * H), dt), W_xf, W_x[2 * H :], W_h, p.bias, hs, (r, z, n, g))
        return x, hs, (r, z, n, g)
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
        kernel = _on_kernel(params, B)
        da_x, da_h = _buffers.carved("gru da", dt, (T, B, 3 * H), (T, B, 3 * H))[1:]
        acc_x, acc_hn = _backward.unit_sums(B, H, kernel, 3 * H, H)
        packs = kernel and _rowcast.packs_step_weight(H)
        packed = (_rowcast.panels(W_h, _buffers.empty("gru panels", _rowcast.panels_shape(3 * H, H), dt))
                  if packs else np.zeros((0, 0, _rowcast.PANEL), np.float32))
        W_hT = np.empty((0, 0), dt) if packs else _kernels.transposed_weight(W_h, B, kernel)
        weights = (W_h, _onepool.readonly(W_hT), _onepool.readonly(packed))
        _backward.gru_after_backward(cached, dy, weights, dh, (da_x, da_h), (acc_x, acc_hn), kernel)
        if kernel:  # dx and W_x padded to the kernel's width with zero columns, as in jit.lstm.backward
            D16 = -(-D // _rowcast.LANES) * _rowcast.LANES
            W_x16 = np.zeros((3 * H, D16), dt)
            W_x16[:, :D] = params.W_x
            dx16 = np.empty((T * B, D16), dt)
            work = _buffers.carved("gru gradient work", dt, (D + H, T * B), (D + H, 3 * H), (D, H))[1:]
            _backward.rowcast_gradients((da_x, da_h), x_c, h_c[:-1], W_x16, work, dW_x, dW_h, dx16)
            dx = dx16 if D16 == D else np.ascontiguousarray(dx16[:, :D])
        else:
            _backward.weight_gradient(da_x, x_c, dW_x)
            _backward.weight_gradient(da_h, h_c[:-1], dW_h)
            _backward.input_gradient(da_x, W_x, dx)
        b_x = _backward.total(acc_x).astype(dt)
        b_h = np.concatenate([b_x[: 2 * H], _backward.total(acc_hn).astype(dt)])
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
