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


class GRUStack(NamedTuple):
    """The weights of a homogeneous GRU stack as :func:`gru_diagonals` reads them, layer l at index l
    (C order throughout)."""

    before: int  # 0 for reset="after", 1 for reset="before"
    WxT: np.ndarray  # (max(N-1, 1), H, 3H): W_x^l.T for l = 1..N-1 at index l - 1
    WhT: np.ndarray  # (N, H, G): W_h^l.T (after, G = 3H) or [W_hr; W_hz]^l.T (before, G = 2H)
    WhnT: np.ndarray  # (N, H, H): W_hn^l.T (before); (N, 0, 0), unused, with reset="after"
    bias: np.ndarray  # (N, 4H): folded biases per layer, as in refrnn.jit._kernels


class LSTMStack(NamedTuple):
    """The weights of a homogeneous LSTM stack (no projection) as :func:`lstm_diagonals` reads them."""

    WxT: np.ndarray  # (max(N-1, 1), H, 4H): W_x^l.T for l = 1..N-1 at index l - 1
    WhT: np.ndarray  # (N, H, 4H): W_h^l.T
    bias: np.ndarray  # (N, 4H): b_x + b_h
    peepholes: np.ndarray  # (N, 3, H): [w_ic, w_fc, w_oc] per layer, zeros where absent


@njit(**_kernels.JIT)
def _gru_cell(k, l, ax0, weights, S, y, scratch, gates):
    """Cell (l, t = k - l) of a homogeneous GRU stack, on diagonal k: reads ``S[(k - 1) % 2]`` (what
    diagonal k - 1 wrote), writes layer l of ``S[k % 2]`` (and ``y[t]`` for the top layer). Only
    layer l's scratch is touched: ``scratch`` = (A (N, B, G), AX (N, B, 3H), AN, RH (N, B, H), ANW (N, 2H, B)),
    ``gates`` = (r, z, n, g), each (N, B, H)."""
    A, AX, AN, RH, ANW = scratch
    r, z, n, g = gates
    new, old = S[k % 2], S[(k + 1) % 2]  # (k + 1) % 2 = (k - 1) % 2
    t = k - l
    N, B, H = new.shape[0], new.shape[1], new.shape[2]
    h_prev, h_next = old[l], new[l]
    if l == 0:
        ax = ax0[t]
    else:
        ax = AX[l]
        _kernels._recurrent_product(old[l - 1], weights.WxT[l - 1], ax)  # h^{l-1}_t: the layer below, same step
    a = A[l]
    _kernels._recurrent_product(h_prev, weights.WhT[l], a)
    for b in range(B):  # r and z add their input and recurrent parts; n keeps them apart
        _kernels._add_into(a[b][: 2 * H], ax[b])
    _kernels._gru_gates(weights.before, a, ax, 2 * H, weights.WhnT[l], weights.bias[l], h_prev, h_next,
                        (r[l], z[l], n[l], g[l]), (RH[l], AN[l], ANW[l]), False)
    if l == N - 1:
        _copy_rows(y[t], h_next)


@njit(**_kernels.JIT)
def _lstm_cell(k, l, ax0, weights, S, C, y, scratch, gates):
    """Cell (l, t = k - l) of a homogeneous LSTM stack, on diagonal k: reads ``S``, ``C`` (the double
    buffers of h and c) at ``(k - 1) % 2``, writes layer l at ``k % 2`` (and ``y[t]`` for the top
    layer). ``scratch`` = (A, AX (N, B, 4H)); ``gates`` = (i, f, g, o, tc), each (N, B, H)."""
    A, AX = scratch
    i, f, g, o, tc = gates
    new, old = S[k % 2], S[(k + 1) % 2]
    c_new, c_old = C[k % 2], C[(k + 1) % 2]
    t = k - l
    N = new.shape[0]
    if l == 0:
        ax = ax0[t]
    else:
        ax = AX[l]
        _kernels._recurrent_product(old[l - 1], weights.WxT[l - 1], ax)
    a = A[l]
    _kernels._recurrent_product(old[l], weights.WhT[l], a)
    peep = weights.peepholes[l]
    _kernels._lstm_rows(a, ax, weights.bias[l], (peep[0], peep[1], peep[2]), c_old[l], c_new[l],
                        (i[l], f[l], g[l], o[l], tc[l]), new[l])
    if l == N - 1:
        _copy_rows(y[t], new[l])


# The two walkers below differ only in the cell they call. One walker for both would need the cell
# chosen at compile time (an @overload on the weights' type): measured, that costs 1.1-1.3 s more
# compilation per signature than calling the cell directly.


@njit(**PARALLEL_JIT)
def gru_diagonals(side_by_side, ax0, weights, S, y, scratch, gates):
    """Every diagonal of a homogeneous GRU stack, in order; the cells of one diagonal in a ``prange``
    when ``side_by_side`` (and the diagonal holds more than one), else one after the other.

    ax0 (T, B, 3H): layer 0's input products x @ W_x^0.T, without bias. ``weights``: a
    :class:`GRUStack`. S (2, N, B, H): the state double buffer (module docstring); y (T, B, H) the
    top layer's outputs. ``scratch`` and ``gates``: per-layer buffers, so the cells of a diagonal
    never share one (see :func:`_gru_cell`).
    """
    T = ax0.shape[0]
    N = S.shape[1]
    for k in range(T + N - 1):
        lo = max(0, k - T + 1)
        hi = min(k, N - 1)
        if side_by_side and hi > lo:
            for j in prange(hi - lo + 1):
                _gru_cell(k, lo + j, ax0, weights, S, y, scratch, gates)
        else:  # outside any parallel region: BLAS may spread each product over every core
            for l in range(lo, hi + 1):
                _gru_cell(k, l, ax0, weights, S, y, scratch, gates)


@njit(**PARALLEL_JIT)
def lstm_diagonals(side_by_side, ax0, weights, S, C, y, scratch, gates):
    """Every diagonal of a homogeneous LSTM stack (no projection), as :func:`gru_diagonals`.

    ax0 (T, B, 4H): x @ W_x^0.T without bias; ``weights``: an :class:`LSTMStack`. S, C (2, N, B, H):
    double buffers of h and of the cell state c, by diagonal parity. ``scratch``, ``gates``: see
    :func:`_lstm_cell`.
    """
    T = ax0.shape[0]
    N = S.shape[1]
    for k in range(T + N - 1):
        lo = max(0, k - T + 1)
        hi = min(k, N - 1)
        if side_by_side and hi > lo:
            for j in prange(hi - lo + 1):
                _lstm_cell(k, lo + j, ax0, weights, S, C, y, scratch, gates)
        else:
            for l in range(lo, hi + 1):
                _lstm_cell(k, l, ax0, weights, S, C, y, scratch, gates)


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
        arrays = dict(W_x0T=W_x0T, weights=GRUStack(int(before), WxT, WhT, WhnT, bias))
    else:
        WhT = _c_stack([p.W_h.T for p in layers], dt, ())
        bias = _c_stack([p.b_x + p.b_h for p in layers], dt, ())
        zeros = np.zeros(H, dt)
        peepholes = _c_stack(
            [[zeros if w is None else w for w in (p.w_ic, p.w_fc, p.w_oc)] for p in layers], dt, ()
        )
        arrays = dict(W_x0T=W_x0T, weights=LSTMStack(WxT, WhT, bias, peepholes))
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


def _layer0(w, x):
    """The stack's weights (:class:`GRUStack` or :class:`LSTMStack`) and layer 0's input products
    ``x @ W_x^0.T`` for every step, one GEMM over all T*B rows: (T, B, G*H)."""
    T, B, _ = x.shape
    ax0 = _kernels.input_products(np.ascontiguousarray(x).reshape(T * B, -1), w["W_x0T"])
    return w["weights"], ax0.reshape(T, B, w["W_x0T"].shape[1])


def _gru(w, x, states, side_by_side):
    weights, ax0 = _layer0(w, x)
    T, B, _ = x.shape
    N, H, dt = weights.WhT.shape[0], weights.WhT.shape[1], weights.WhT.dtype
    S = np.empty((2, N, B, H), dt)
    for l, h0 in enumerate(states):
        S[(l - 1) % 2, l] = h0  # the slot "diagonal l - 1" would have written: layer l's first cell reads it
    y = np.empty((T, B, H), dt)
    G = weights.WhT.shape[2]
    A, AX = np.empty((N, B, G), dt), np.empty((N, B, 3 * H), dt)
    AN, RH = np.empty((N, B, H), dt), np.empty((N, B, H), dt)
    ANW = np.empty((N, 2 * H, B), dt)  # each layer's work buffer for (r*h) @ W_hn.T (see _kernels.step_work)
    gates = tuple(np.empty((N, B, H), dt) for _ in range(4))  # r, z, n, g
    gru_diagonals(side_by_side, ax0, weights, S, y, (A, AX, AN, RH, ANW), gates)
    # Layer l's last cell (l, T-1) is on diagonal l + T - 1.
    return y, tuple(S[(l + T - 1) % 2, l].copy() for l in range(N))


def _lstm(w, x, states, side_by_side):
    weights, ax0 = _layer0(w, x)
    T, B, _ = x.shape
    N, H, dt = weights.WhT.shape[0], weights.WhT.shape[1], weights.WhT.dtype
    S, C = np.empty((2, N, B, H), dt), np.empty((2, N, B, H), dt)
    for l, (h0, c0) in enumerate(states):
        S[(l - 1) % 2, l], C[(l - 1) % 2, l] = h0, c0
    y = np.empty((T, B, H), dt)
    A, AX = np.empty((N, B, 4 * H), dt), np.empty((N, B, 4 * H), dt)
    gates = tuple(np.empty((N, B, H), dt) for _ in range(5))  # i, f, g, o, tanh(c)
    lstm_diagonals(side_by_side, ax0, weights, S, C, y, (A, AX), gates)
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
