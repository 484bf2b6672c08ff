r"""Fast wavefront executor for stacked layers (numba): the twin of :mod:`refrnn.layers.wavefront`, forward for inference.

Equations (layer l = 0..N-1, step t = 0..T-1, ``h^{-1}_t = x_t``; those of :mod:`refrnn.layers.wavefront`)::

    h^l_t = cell_l(h^l_{t-1}, h^{l-1}_t)

    diagonal k = 0 .. T+N-2:   every cell (l, t) with l + t = k, all at once
                               (each reads only cells of diagonal k - 1)

The critical path is ``T + N - 1`` dependent diagonals instead of the ``T * N`` dependent steps of
running the layers one after the other (:func:`refrnn.layers.stack.forward`, :func:`refrnn.jit.gru.forward_inference`
layer by layer). The FLOPs are the same; what changes is which products may run side by side.

Two executors, chosen by the layers (:func:`plan` says which):

* **Homogeneous stack** (every layer a GRU with the same ``reset``, or every layer an LSTM without
  a projection, peepholes allowed; one hidden size H, hence D = H for layers l >= 1): one compiled
  kernel walks the diagonals. On a diagonal, the active layers ``l`` run side by side in a
  ``prange`` loop (or in turn, see "Threads" below), each doing its own products
  (``h^{l-1}_t W_x^l.T`` and ``h^l_{t-1} W_h^l.T`` through ``np.dot``, a GEMV when B = 1) and
  then the fused element-wise pass of :mod:`refrnn.jit._kernels` (the same row loops as the
  single-layer fast paths). Layer 0's input products depend only on ``x``, so they are
  one GEMM over all ``T*B`` rows before the first diagonal, as in the single-layer "batched" path.
  States live in a double buffer indexed by the diagonal's parity: diagonal k reads slot
  ``(k-1) % 2`` (its own layer's previous step, and the layer below's same step) and writes slot
  ``k % 2``; the initial state of layer l is put in slot ``(l-1) % 2``, the diagonal before its
  first cell. The top layer also copies each new state into ``y``.
* **Any other stack** (SRU, the conditional GRU :mod:`refrnn.cells.ccgru`, mixed cells, an LSTM with
  a projection): the same diagonal order, cell by cell in Python, each cell one step of its fast
  path where one exists (:func:`refrnn.jit.gru.forward_inference`, :func:`refrnn.jit.lstm.forward_inference`,
  :func:`refrnn.jit.ccgru.forward_inference` in inference mode) or of its reference ``forward`` on a
  one-step slice (SRU, a conditional GRU with training-mode batch statistics). The cells of a
  diagonal run one after the other here: this path is correct in wavefront order, not faster than
  layer by layer (one Python call per cell).

Bidirectional layers cannot be a wavefront (the reverse direction needs all of ``x`` before its first
step): refused with ValueError, as by the reference.

Threads. A diagonal's cells can run side by side (a ``prange`` over them, each cell's products
through BLAS from its own thread) or one after the other (outside any parallel region, so BLAS may
spread each product over every core). By default they run in turn: ``threads=n >= 2`` puts them side
by side on at most n threads. Side by side was meant for products so small that BLAS runs each on one
thread (OpenBLAS does up to M*N*K = 65536 * 4 for a GEMM, and the GEMVs of B = 1 at H = 256; above
that each product already spreads over the cores), but on the 2-core machine of ``refrnn bench`` it
lost there too (quiet machine, H = 256, B = 1, medians: T = 50, N = 2..8: 107-109 ms against 2.6-13 ms
in turn; T = 200: 12-70 ms against 8-36 ms), and at B = 64 it oversubscribes the cores (2-2.2 s
against 0.15-0.93 s at T = 200). ``refrnn bench`` times both.

On a machine shared with other busy processes, the per-diagonal barrier of the ``prange`` is the
weak point: GNU OpenMP (Numba's default threading layer here) spins at barriers, and a spinning
thread whose partner was descheduled burns its time slice. ``OMP_WAIT_POLICY=passive`` (set before
the first parallel call) or ``NUMBA_THREADING_LAYER=workqueue`` make the wait sleep instead.

Precision. float64 equals :func:`refrnn.layers.stack.forward` to rounding (the same products, grouped into
other BLAS calls; libm activations): ``tests/test_jit_wavefront.py`` asserts 1e-12. float32 uses the
polynomial ``exp`` of :mod:`refrnn.jit._kernels`, like the single-layer fast paths.

The kernels reuse the row loops of :mod:`refrnn.jit._kernels`; their on-disk cache
(:mod:`refrnn.jit._cache`) is stale as soon as that file changes, so they never run an old copy.

Shapes: x (T, B, D); y (T, B, H_last); states one per layer, bottom first, each in its cell's form
(``h`` (B, H) for a GRU, ``(h, c)`` for an LSTM).
"""

from __future__ import annotations

import contextlib
from typing import NamedTuple

import numpy as np
from numba import prange

from ..layers import stack
from ..layers import wavefront as reference
from .._checks import positive_int
from ..cells import ccgru as ccgru_ref
from ..cells import module_for
from ..cells.gru import GRUParams
from ..cells.lstm import LSTMParams
from . import _blas, _kernels
from ._cache import njit

# The kernels below contain a prange over layers; everything else as in _kernels (see its docstring
# for why error_model="numpy" and fastmath={"contract"} only).
PARALLEL_JIT = dict(_kernels.JIT, parallel=True)

KINDS = ("gru", "lstm", "cells")


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------


@njit(**_kernels.JIT)
def _copy_rows(dst, src):
    """dst[b] = src[b] for 2-D (B, H) arrays, as plain loops (slice assignment compiles slowly)."""
    for b in range(dst.shape[0]):
        d, s = dst[b], src[b]
        for j in range(d.shape[0]):
            d[j] = s[j]


@njit(**_kernels.JIT)
def _gru_cell(l, t, before, ax0, WxT, WhT, WhnT, bias, old, new, y, A, AX, AN, RH, r, z, n, g):
    """Cell (l, t) of a homogeneous GRU stack: reads ``old`` (what diagonal k - 1 wrote), writes
    ``new[l]`` (and ``y[t]`` for the top layer). Only layer l's scratch is touched."""
    N, H = new.shape[0], new.shape[2]
    B = new.shape[1]
    h_prev = old[l]
    h_next = new[l]
    if l == 0:
        ax = ax0[t]
    else:
        ax = AX[l]
        _kernels._recurrent_product(old[l - 1], WxT[l - 1], ax)  # h^{l-1}_t: the layer below, same step
    a = A[l]
    _kernels._recurrent_product(h_prev, WhT[l], a)
    bias_l = bias[l]
    if before == 0:
        for b in range(B):  # r and z add their input and recurrent parts; n keeps them apart
            _kernels._add_into(a[b][: 2 * H], ax[b])
        _kernels._gru_after_rows(a, ax, 2 * H, bias_l, h_prev, h_next, r[l], z[l], n[l], g[l])
    else:
        for b in range(B):
            _kernels._add_into(a[b], ax[b])
        _kernels._gru_before_rows_rz(a, bias_l, h_prev, r[l], z[l], RH[l])
        _kernels._recurrent_product(RH[l], WhnT[l], AN[l])
        _kernels._gru_before_rows_n(AN[l], ax, 2 * H, bias_l, h_prev, h_next, z[l], n[l], g[l])
    if l == N - 1:
        _copy_rows(y[t], h_next)


@njit(**PARALLEL_JIT)
def gru_diagonals(side_by_side, before, ax0, WxT, WhT, WhnT, bias, S, y, A, AX, AN, RH, r, z, n, g):
    """Every diagonal of a homogeneous GRU stack, in order; the cells of one diagonal in a ``prange``
    when ``side_by_side`` (and the diagonal holds more than one), else one after the other.

    before: 0 for reset="after", 1 for reset="before".
    ax0 (T, B, 3H): layer 0's input products x @ W_x^0.T, without bias.
    WxT (max(N-1, 1), H, 3H): W_x^l.T for l = 1..N-1 at index l - 1 (C order).
    WhT (N, H, G): W_h^l.T (after, G = 3H) or [W_hr; W_hz]^l.T (before, G = 2H).
    WhnT (N, H, H): W_hn^l.T (before); unused with reset="after".
    bias (N, 4H): folded biases per layer, as in :mod:`refrnn.jit._kernels`.
    S (2, N, B, H): the state double buffer (module docstring); y (T, B, H) the top layer's outputs.
    A (N, B, G), AX (N, B, 3H), AN, RH, r, z, n, g (N, B, H): per-layer scratch, so the cells of a
    diagonal never share a buffer.
    """
    T = ax0.shape[0]
    N = S.shape[1]
    for k in range(T + N - 1):
        lo = max(0, k - T + 1)
        hi = min(k, N - 1)
        new = S[k % 2]
        old = S[(k + 1) % 2]  # = S[(k - 1) % 2]: what diagonal k - 1 wrote
        if side_by_side and hi > lo:
            for j in prange(hi - lo + 1):
                _gru_cell(lo + j, k - lo - j, before, ax0, WxT, WhT, WhnT, bias, old, new, y, A, AX, AN, RH, r, z, n, g)
        else:  # outside any parallel region: BLAS may spread each product over every core
            for l in range(lo, hi + 1):
                _gru_cell(l, k - l, before, ax0, WxT, WhT, WhnT, bias, old, new, y, A, AX, AN, RH, r, z, n, g)


@njit(**_kernels.JIT)
def _lstm_cell(l, t, ax0, WxT, WhT, bias, w_ic, w_fc, w_oc, old, new, c_old, c_new, y, A, AX, i, f, g, o, tc):
    """Cell (l, t) of a homogeneous LSTM stack: reads ``old``, ``c_old`` (diagonal k - 1), writes
    ``new[l]``, ``c_new[l]`` (and ``y[t]`` for the top layer)."""
    N, B, H = new.shape[0], new.shape[1], new.shape[2]
    if l == 0:
        ax = ax0[t]
    else:
        ax = AX[l]
        _kernels._recurrent_product(old[l - 1], WxT[l - 1], ax)
    a = A[l]
    _kernels._recurrent_product(old[l], WhT[l], a)
    bias_l, h_next, cp_l, cn_l = bias[l], new[l], c_old[l], c_new[l]
    i_l, f_l, g_l, o_l, tc_l = i[l], f[l], g[l], o[l], tc[l]
    for b in range(B):
        a_b, cp = a[b], cp_l[b]
        _kernels._add_into(a_b, ax[b])  # every LSTM gate adds its input and recurrent parts
        _kernels._sigmoid_peephole(i_l[b], a_b[:H], bias_l[:H], w_ic[l], cp)
        _kernels._sigmoid_peephole(f_l[b], a_b[H : 2 * H], bias_l[H : 2 * H], w_fc[l], cp)
        _kernels._tanh_of(g_l[b], a_b[2 * H : 3 * H], bias_l[2 * H : 3 * H])
        _kernels._cell(cn_l[b], f_l[b], cp, i_l[b], g_l[b])
        _kernels._sigmoid_peephole(o_l[b], a_b[3 * H :], bias_l[3 * H :], w_oc[l], cn_l[b])  # the new c
        _kernels._tanh(tc_l[b], cn_l[b])
        _kernels._product(h_next[b], o_l[b], tc_l[b])
    if l == N - 1:
        _copy_rows(y[t], h_next)


@njit(**PARALLEL_JIT)
def lstm_diagonals(side_by_side, ax0, WxT, WhT, bias, w_ic, w_fc, w_oc, S, C, y, A, AX, i, f, g, o, tc):
    """Every diagonal of a homogeneous LSTM stack (no projection), as :func:`gru_diagonals`.

    ax0 (T, B, 4H): x @ W_x^0.T without bias; WxT (max(N-1, 1), H, 4H): W_x^l.T at index l - 1;
    WhT (N, H, 4H); bias (N, 4H) = b_x + b_h; w_ic, w_fc, w_oc (N, H) peepholes (zeros where absent).
    S, C (2, N, B, H): double buffers of h and of the cell state c, by diagonal parity.
    A, AX (N, B, 4H), i, f, g, o, tc (N, B, H): per-layer scratch.
    """
    T = ax0.shape[0]
    N = S.shape[1]
    for k in range(T + N - 1):
        lo = max(0, k - T + 1)
        hi = min(k, N - 1)
        new, old = S[k % 2], S[(k + 1) % 2]
        c_new, c_old = C[k % 2], C[(k + 1) % 2]
        if side_by_side and hi > lo:
            for j in prange(hi - lo + 1):
                _lstm_cell(lo + j, k - lo - j, ax0, WxT, WhT, bias, w_ic, w_fc, w_oc, old, new, c_old, c_new, y, A, AX, i, f, g, o, tc)
        else:
            for l in range(lo, hi + 1):
                _lstm_cell(l, k - l, ax0, WxT, WhT, bias, w_ic, w_fc, w_oc, old, new, c_old, c_new, y, A, AX, i, f, g, o, tc)


# ---------------------------------------------------------------------------------------------
# Preparing a stack
# ---------------------------------------------------------------------------------------------


class Prepared(NamedTuple):
    """A stack's weights re-arranged once for the executor :func:`plan` chose (build with :func:`prepare`)."""

    kind: str  # "gru", "lstm" (one compiled kernel) or "cells" (cell by cell)
    arrays: dict  # kernel operands (homogeneous kinds) or per-layer one-step functions ("cells")
    layers: tuple


def plan(layers) -> str:
    """Which executor runs ``layers``: "gru" or "lstm" (homogeneous: one kernel, a ``prange`` over the
    layers of each diagonal) or "cells" (cell by cell in wavefront order)."""
    layers = stack._layers(layers)
    H = layers[0].hidden_size
    if not all(p.hidden_size == H and p.output_size == H for p in layers):
        return "cells"
    if all(isinstance(p, GRUParams) and p.reset == layers[0].reset for p in layers):
        return "gru"
    if all(isinstance(p, LSTMParams) and p.W_hr is None for p in layers):
        return "lstm"
    return "cells"


def _c_stack(arrays, dt, shape):
    """The arrays stacked along a new first axis in one C-ordered block (``shape`` when there are none)."""
    if not arrays:
        return np.zeros(shape, dt)
    return np.ascontiguousarray(np.stack(arrays), dtype=dt)


def _one_step(p):
    """``step(x_t, state) -> (y_t, state)`` over a one-step slice x_t (1, B, D): the cell's fast path
    where there is one (GRU, LSTM, conditional GRU in inference), else its reference ``forward``."""
    if isinstance(p, GRUParams):
        from . import gru as fast

        prepared = fast.prepare(p)
        return lambda x_t, s: fast.forward_inference(p, x_t, s, prepared=prepared)
    if isinstance(p, LSTMParams):
        from . import lstm as fast

        prepared = fast.prepare(p)
        return lambda x_t, s: fast.forward_inference(p, x_t, s, prepared=prepared)
    if isinstance(p, ccgru_ref.PARAM_CLASSES) and not ccgru_ref.couples_samples(p):
        from . import ccgru as fast

        prepared = fast.prepare(p, "dense")
        return lambda x_t, s: fast.forward_inference(p, x_t, s, algorithm="dense", prepared=prepared)
    cell = module_for(p)  # SRU, conditional GRU with batch statistics, any other registered cell

    def step(x_t, s):
        y, s, _ = cell.forward(p, x_t, s)
        return y, s

    return step


def prepare(layers) -> Prepared:
    """Transpose, stack and fold the layers' weights once; pass the result as ``prepared=`` to reuse it."""
    layers = stack._layers(layers)
    _check_dtypes(layers)
    kind = plan(layers)
    dt = layers[0].dtype
    N, H = len(layers), layers[0].hidden_size
    if kind == "cells":
        return Prepared(kind, {"steps": tuple(_one_step(p) for p in layers)}, layers)
    W_x0T = np.ascontiguousarray(layers[0].W_x).T  # a Fortran-ordered view, read by BLAS in place
    upper = [np.ascontiguousarray(p.W_x.T) for p in layers[1:]]  # C order: WxT[l] is then a C matrix
    G = 3 if kind == "gru" else 4
    WxT = _c_stack(upper, dt, (1, H, G * H))
    if kind == "gru":
        before = layers[0].reset == "before"
        rows = 2 * H if before else 3 * H
        WhT = _c_stack([p.W_h[:rows].T for p in layers], dt, ())
        WhnT = _c_stack([p.W_h[2 * H :].T for p in layers], dt, ()) if before else np.zeros((N, 0, 0), dt)
        bias = _c_stack(
            [np.concatenate([p.b_x[: 2 * H] + p.b_h[: 2 * H], p.b_x[2 * H :], p.b_h[2 * H :]]) for p in layers], dt, ()
        )
        arrays = dict(before=int(before), W_x0T=W_x0T, WxT=WxT, WhT=WhT, WhnT=WhnT, bias=bias)
    else:
        WhT = _c_stack([p.W_h.T for p in layers], dt, ())
        bias = _c_stack([p.b_x + p.b_h for p in layers], dt, ())
        peep = {
            name: _c_stack([np.zeros(H, dt) if getattr(p, name) is None else getattr(p, name) for p in layers], dt, ())
            for name in ("w_ic", "w_fc", "w_oc")
        }
        arrays = dict(W_x0T=W_x0T, WxT=WxT, WhT=WhT, bias=bias, **peep)
    return Prepared(kind, arrays, layers)


def _check_dtypes(layers) -> None:
    dt = layers[0].dtype
    for k, p in enumerate(layers):
        if p.dtype != dt:
            raise TypeError(f"layers[{k}]: dtype {p.dtype} does not match layers[0]'s dtype {dt}; convert explicitly")


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def forward(layers, x, state0=None, *, prepared: Prepared | None = None, threads: int | None = None):
    """Run the stack over ``x`` along anti-diagonals; returns ``(y, states_T)`` like :func:`refrnn.layers.wavefront.forward`.

    ``layers``: cell parameter containers, bottom first (any registered cells, mixed allowed; no
    :class:`refrnn.layers.bidirectional.BiLayer`). ``state0``: None (zeros) or one state per layer (None
    entries mean zeros). ``prepared``: :func:`prepare` of these very layers. ``threads``: None or 1
    (the cells of a diagonal one after the other, each product on every core BLAS uses) or n >= 2
    (side by side on at most n threads); see the module docstring for the measurements.
    """
    layers, x, state0 = reference.check_inputs(layers, x, state0)
    N = len(layers)
    T, B, _ = x.shape
    _check_dtypes(layers)
    if prepared is None:
        prepared = prepare(layers)
    elif not isinstance(prepared, Prepared) or len(prepared.layers) != N or any(
        a is not b for a, b in zip(prepared.layers, layers)
    ):
        raise ValueError(f"prepared: expected prepare(layers) for these very layers, got {type(prepared).__name__}")
    # Every state is checked by its own cell, against a one-step probe of the layer's input width:
    # the same messages as the reference (``h0: expected shape (B, H) ...``, ``state0: expected the pair``).
    states = []
    for p, s in zip(layers, state0):
        cell = module_for(p)
        if hasattr(cell, "check_inputs"):
            probe = np.zeros((1, B, p.input_size), p.dtype)
            s = cell.check_inputs(p, probe, s)[1]
        elif s is None:  # a registered cell without check_inputs: its own forward checks the state
            s = cell.zero_state(p, B)
        states.append(s)
    if threads is not None:
        threads = positive_int("threads", threads)
    if prepared.kind == "cells":
        return _cells(prepared.arrays["steps"], layers, x, states)
    if B == 0:  # nothing to compute, and the kernels' (T*B, D) views do not exist: the reference's empty result
        return reference.forward(layers, x, states)
    import numba

    side_by_side = threads is not None and threads > 1
    saved = numba.get_num_threads()
    if side_by_side:
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    # Side by side, every product runs inside a parallel region: a threaded OpenBLAS called from an
    # OpenMP loop may hang (and says so on every call), so BLAS runs on one thread there; the cells
    # of a diagonal are the parallelism.
    blas = _blas.threads(1) if side_by_side else contextlib.nullcontext()
    try:
        run = _gru if prepared.kind == "gru" else _lstm
        with blas:
            return run(prepared.arrays, x, states, side_by_side)
    finally:
        numba.set_num_threads(saved)


def _gru(w, x, states, side_by_side):
    T, B, _ = x.shape
    N, H, dt = w["WhT"].shape[0], w["WhT"].shape[1], w["WhT"].dtype
    xc = np.ascontiguousarray(x)
    ax0 = _kernels.input_products(xc.reshape(T * B, -1), w["W_x0T"]).reshape(T, B, 3 * H)
    S = np.empty((2, N, B, H), dt)
    for l, h0 in enumerate(states):
        S[(l - 1) % 2, l] = h0  # the slot "diagonal l - 1" would have written: layer l's first cell reads it
    y = np.empty((T, B, H), dt)
    G = w["WhT"].shape[2]
    A, AX = np.empty((N, B, G), dt), np.empty((N, B, 3 * H), dt)
    AN, RH, r, z, n, g = (np.empty((N, B, H), dt) for _ in range(6))
    gru_diagonals(side_by_side, w["before"], ax0, w["WxT"], w["WhT"], w["WhnT"], w["bias"], S, y, A, AX, AN, RH, r, z, n, g)
    # Layer l's last cell (l, T-1) is on diagonal l + T - 1.
    return y, tuple(S[(l + T - 1) % 2, l].copy() for l in range(N))


def _lstm(w, x, states, side_by_side):
    T, B, _ = x.shape
    N, H, dt = w["WhT"].shape[0], w["WhT"].shape[1], w["WhT"].dtype
    xc = np.ascontiguousarray(x)
    ax0 = _kernels.input_products(xc.reshape(T * B, -1), w["W_x0T"]).reshape(T, B, 4 * H)
    S, C = np.empty((2, N, B, H), dt), np.empty((2, N, B, H), dt)
    for l, (h0, c0) in enumerate(states):
        S[(l - 1) % 2, l], C[(l - 1) % 2, l] = h0, c0
    y = np.empty((T, B, H), dt)
    A, AX = np.empty((N, B, 4 * H), dt), np.empty((N, B, 4 * H), dt)
    i, f, g, o, tc = (np.empty((N, B, H), dt) for _ in range(5))
    lstm_diagonals(side_by_side, ax0, w["WxT"], w["WhT"], w["bias"], w["w_ic"], w["w_fc"], w["w_oc"], S, C, y, A, AX, i, f, g, o, tc)
    last = [(l + T - 1) % 2 for l in range(N)]
    return y, tuple((S[k, l].copy(), C[k, l].copy()) for l, k in enumerate(last))


def _cells(steps, layers, x, states):
    """Cell by cell in diagonal order (the layers of a diagonal in turn): any registered cells."""
    T, B, _ = x.shape
    N = len(layers)
    h = [np.empty((T, B, p.output_size), p.dtype) for p in layers]  # h[l][t] = h^l_t; layer l+1 reads h[l]
    for k in range(T + N - 1):
        for l in range(max(0, k - T + 1), min(k, N - 1) + 1):
            t = k - l
            below = x if l == 0 else h[l - 1]
            y_t, states[l] = steps[l](below[t : t + 1], states[l])
            h[l][t] = y_t[0]
    return h[-1], tuple(states)
