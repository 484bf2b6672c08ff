r"""The compiled backward passes of :mod:`refrnn.jit.gru` and :mod:`refrnn.jit.lstm`.

Each kernel is :func:`refrnn.cells.gru.backward` / :func:`refrnn.cells.lstm.backward` line for line,
with the same names, in the same order of work:

1. backwards through time, per step: one fused element-wise pass over the B rows that turns the
   gradient at ``h_t`` (and ``c_t``) into the gradients at the gate pre-activations (``da_x``,
   ``da_h`` for the GRU, ``da`` for the LSTM), stored for all steps, and accumulates the bias (and
   peephole) gradients while the rows are in L1; then the one per-step product of the recurrence
   (``da_h[t] @ W_h``; the GRU with reset="before" has two, since ``d(r*h)`` needs ``da_n @ W_hn``
   before ``da_r`` exists);
2. after the loop, the products batched over all T*B rows: one GEMM per weight gradient
   (``da.T @ x``, ``da.T @ h_prev``) and one for ``dx = da @ W_x``.

Every product is an ``np.dot`` inside numba, i.e. SciPy's OpenBLAS, the library the jit forward
uses too, except in the LSTM's and the GRU's (reset="after") training steps on the compiled kernel
of :mod:`refrnn.jit._rowcast` (``rowcast``; see :mod:`refrnn.jit.lstm` and :mod:`refrnn.jit.gru`),
where none is. That is the point of compiling the
products as well as the element-wise passes: NumPy's ``@`` runs on NumPy's own bundled OpenBLAS,
a second library with a second thread pool, and on two cores the idle-spinning workers of one pool
starve the other after every hand-over. Measured here (2 cores, float32, GRU T=100, B=32,
D=H=256): jit forward 16 ms, reference backward 29 ms, each alone; the two back to back 160-177
ms, against 63 ms for the reference forward and backward (one pool); the same pair with NumPy's
pool limited to one thread, 70 ms.

The element-wise passes are split into row loops over at most one written and five read 1-D arrays
(see "Row loops" in :mod:`refrnn.jit._kernels`: LLVM vectorises a loop only when it can rule out
overlap by a few run-time checks). Sums over T*B rows (biases, peepholes) accumulate in float64
whatever the dtype: a float32 running sum of 3200 rows would lose ~3 decimal digits in the worst
case, against NumPy's pairwise ``sum`` in the reference.

Argument grouping: the cache arrays arrive as one tuple, the outputs as another (numba passes a
tuple of arrays at no cost), so no kernel takes more than eight arguments.
"""

from __future__ import annotations

import numpy as np
from numba import prange

from . import _kernels, _rowcast
from ._cache import njit
from ._kernels import JIT, _sigmoid_grad_of_difference, _sigmoid_grad_of_product

def unit_sums(B: int, H: int, rowcast: bool, *widths: int) -> tuple[np.ndarray, ...]:
    """Zeroed float64 sums of a backward's bias (and peephole) gradients, one (R, width) array per
    width: R the groups of rows of the element-wise pass's tasks on the compiled kernel
    (:func:`refrnn.jit._kernels.pass_tasks` of B rows of H units) with ``rowcast``, else 1."""
    groups = _kernels.pass_tasks(B, H)[0] if rowcast else 1
    return tuple(np.zeros((groups, w)) for w in widths)


def total(sums: np.ndarray) -> np.ndarray:
    """A :func:`unit_sums` array's groups added up in order: (width,) float64."""
    out = sums[0].copy()
    for group in sums[1:]:
        out += group
    return out


# ---------------------------------------------------------------------------------------------
# Row loops (1-D, contiguous; one array written). ``acc`` accumulators are float64.
# ---------------------------------------------------------------------------------------------


@njit(**JIT)
def _total(dh, dy, rec):
    """dh += dy + rec: the gradient at h_t, from the output, the next step's state and its product."""
    for j in range(dh.shape[0]):
        dh[j] += dy[j] + rec[j]


@njit(**JIT)
def _sum_to(out, a, b):
    """out = a + b"""
    for j in range(out.shape[0]):
        out[j] = a[j] + b[j]


@njit(**JIT)
def _gru_da_n(out, dh, z, n):
    """da_n = dh * (1 - z) * (1 - n^2)"""
    for j in range(out.shape[0]):
        out[j] = dh[j] * (1.0 - z[j]) * (1.0 - n[j] * n[j])


@njit(**JIT)
def _scale(out, a):
    """out *= a"""
    for j in range(out.shape[0]):
        out[j] *= a[j]


@njit(**JIT)
def _gru_before_dh(dh, z, d_rh, r):
    """dh = dh * z + d_rh * r"""
    for j in range(dh.shape[0]):
        dh[j] = dh[j] * z[j] + d_rh[j] * r[j]


@njit(**JIT)
def _lstm_dc(dc, dm, o, tc, da_o, w_oc):
    """dc += dm * o * (1 - tanh(c)^2) + da_o * w_oc"""
    for j in range(dc.shape[0]):
        dc[j] += dm[j] * o[j] * (1.0 - tc[j] * tc[j]) + da_o[j] * w_oc[j]


@njit(**JIT)
def _lstm_da_g(out, dc, i, g):
    """da_g = dc * i * (1 - g^2)"""
    for j in range(out.shape[0]):
        out[j] = dc[j] * i[j] * (1.0 - g[j] * g[j])


@njit(**JIT)
def _lstm_dc_prev(dc, f, da_i, w_ic, da_f, w_fc):
    """dc = dc * f + da_i * w_ic + da_f * w_fc: the gradient at c_{t-1}"""
    for j in range(dc.shape[0]):
        dc[j] = dc[j] * f[j] + da_i[j] * w_ic[j] + da_f[j] * w_fc[j]


# ---------------------------------------------------------------------------------------------
# GRU. cache = (x, h, r, z, n, g) as in GRUCache; weights C-ordered; dh (B, H) holds dL/dh_T on
# entry and dL/dh_0 on return.
# ---------------------------------------------------------------------------------------------


@njit(**JIT)
def _gru_after_units(dh, dy, rec, step, da_x, da_h, acc, lo, hi):
    """One step of reset="after" over units ``[lo, hi)`` of every row: da_x = [da_r, da_z, da_n],
    da_h = [da_r, da_z, dg], dh becomes dh * z (the part that skips the product), the bias sums
    grow. ``step`` = (h_prev, r, z, n, g) of this step; ``acc`` = (b_x sum, b_hn sum). Each unit's
    sums take its rows in order, so any split of the units gives the same bits."""
    h_prev, r, z, n, g = step
    acc_x, acc_hn = acc
    H = dh.shape[1]
    s_r, s_z, s_n, s_hn = acc_x[lo:hi], acc_x[H + lo : H + hi], acc_x[2 * H + lo : 2 * H + hi], acc_hn[lo:hi]
    for b in range(dh.shape[0]):
        dh_b, ax, ah = dh[b][lo:hi], da_x[b], da_h[b]
        ax_r, ax_z, ax_n, ah_n = ax[lo:hi], ax[H + lo : H + hi], ax[2 * H + lo : 2 * H + hi], ah[2 * H + lo : 2 * H + hi]
        r_b, z_b, n_b = r[b][lo:hi], z[b][lo:hi], n[b][lo:hi]
        _total(dh_b, dy[b][lo:hi], rec[b][lo:hi])
        _gru_da_n(ax_n, dh_b, z_b, n_b)
        _sigmoid_grad_of_difference(ax_z, dh_b, h_prev[b][lo:hi], n_b, z_b)  # da_z = dh * (h_prev - n) * z'
        _sigmoid_grad_of_product(ax_r, ax_n, g[b][lo:hi], r_b)  # da_r = da_n * g * r'
        _kernels._product(ah_n, ax_n, r_b)  # dg = da_n * r
        _kernels._copy(ah[lo:hi], ax_r)
        _kernels._copy(ah[H + lo : H + hi], ax_z)
        _scale(dh_b, z_b)
        _kernels._add_into(s_r, ax_r)
        _kernels._add_into(s_z, ax_z)
        _kernels._add_into(s_n, ax_n)
        _kernels._add_into(s_hn, ah_n)


@njit(parallel=True, **JIT)
def _gru_after_rows_parallel(dh, dy, rec, step, da_x, da_h, acc):
    """:func:`_gru_after_units` in the tasks of :func:`refrnn.jit._kernels.pass_tasks` over numba's
    threads, for a step loop whose products run on numba's threads too. ``acc`` = (b_x sums (R, 3H),
    b_hn sums (R, H)), one row of sums per group of rows (R groups): each takes its rows in order, so
    the bits depend on the batch alone, not on the thread count; the caller adds the groups up in order."""
    B, H = dh.shape
    rows, units = _kernels.pass_tasks(B, H)
    h_prev, r, z, n, g = step
    for task in prange(rows * units):
        b0, b1, lo, hi = _kernels.task_span(task, B, H, rows, units)
        group = task // units
        step_rows = (h_prev[b0:b1], r[b0:b1], z[b0:b1], n[b0:b1], g[b0:b1])
        _gru_after_units(dh[b0:b1], dy[b0:b1], rec[b0:b1], step_rows, da_x[b0:b1], da_h[b0:b1],
                         (acc[0][group], acc[1][group]), lo, hi)


@njit(**JIT)
def gru_after_backward(cache, dy, W_h, dh, out, acc, rowcast):
    """reset="after": per step one product ``da_h[t] @ W_h`` (B x 3H x H), by the compiled kernel
    with ``rowcast`` (the element-wise pass then split over the same threads).

    ``W_h`` = (W_h (3H, H), its transpose for :func:`refrnn.jit._kernels._step_product`, from
    ``transposed_weight``, and its panels where the step product goes through
    :func:`refrnn.jit._rowcast.packed` instead, else an empty (0, 0, PANEL) array); ``out`` =
    (da_x, da_h), each (T, B, 3H); ``acc`` = (b_x sums (R, 3H), b_hn sums (R, H)), float64, one row
    per group of rows of :func:`_gru_after_rows_parallel` with ``rowcast``, else R = 1.
    """
    _, h, r, z, n, g = cache
    da_x, da_h = out
    W_h, W_hT, packed = W_h
    T, B, H = r.shape
    rec = np.zeros(dh.shape, dh.dtype)
    rec_T = _kernels.step_work(H, 3 * H if rowcast else 0, B, dh.dtype)
    for t in range(T - 1, -1, -1):
        step = (h[t], r[t], z[t], n[t], g[t])
        if rowcast:
            _gru_after_rows_parallel(dh, dy[t], rec, step, da_x[t], da_h[t], acc)
        else:
            _gru_after_units(dh, dy[t], rec, step, da_x[t], da_h[t], (acc[0][0], acc[1][0]), 0, H)
        if packed.shape[0] > 0:
            _rowcast.packed_into(da_h[t], packed, rec)
        else:
            _kernels._step_product(da_h[t], W_hT, W_h, rec_T, rec, rowcast)
    for b in range(B):
        _kernels._add_into(dh[b], rec[b])


@njit(**JIT)
def _gru_before_rows_n(dh, dy, rec, h_prev, z, n, d_rz, d_n):
    """First pass of reset="before": dh in full, da_n and da_z (da_r needs d(r*h), a product away)."""
    H = dh.shape[1]
    for b in range(dh.shape[0]):
        dh_b = dh[b]
        _total(dh_b, dy[b], rec[b])
        _gru_da_n(d_n[b], dh_b, z[b], n[b])
        _sigmoid_grad_of_difference(d_rz[b][H:], dh_b, h_prev[b], n[b], z[b])  # da_z = dh * (h_prev - n) * z'


@njit(**JIT)
def _gru_before_rows_r(dh, d_rh, h_prev, r, z, d_rz, d_n, rh, acc_rz, acc_n):
    """Second pass of reset="before": da_r from d(r*h), dh * z + d(r*h) * r, r * h_prev for dW_hn."""
    H = dh.shape[1]
    for b in range(dh.shape[0]):
        drz_b = d_rz[b]
        _sigmoid_grad_of_product(drz_b[:H], d_rh[b], h_prev[b], r[b])  # da_r = d(r*h) * h_prev * r'
        _gru_before_dh(dh[b], z[b], d_rh[b], r[b])
        _kernels._product(rh[b], r[b], h_prev[b])
        _kernels._add_into(acc_rz, drz_b)
        _kernels._add_into(acc_n, d_n[b])


@njit(**JIT)
def gru_before_backward(cache, dy, W_h, dh, out, acc):
    """reset="before": per step ``d_rh = da_n @ W_hn`` (B x H x H), then ``[da_r, da_z] @ [W_hr; W_hz]``.

    ``W_h`` = (W_h (3H, H), then the transposes of its blocks [W_hr; W_hz] and W_hn for
    :func:`refrnn.jit._kernels._step_product`, from ``transposed_weight``); ``out`` = (d_rz (T, B, 2H)
    = [da_r, da_z], d_n (T, B, H) = da_n, rh (T, B, H) = r * h_prev); ``acc`` = (sums of d_rz (2H,),
    of d_n (H,)), float64. With reset="before" da_h = da_x.
    """
    _, h, r, z, n, _ = cache
    d_rz, d_n, rh = out
    acc_rz, acc_n = acc
    T, B, H = r.shape
    W_h, W_hrzT, W_hnT = W_h
    W_hrz, W_hn = W_h[: 2 * H], W_h[2 * H :]
    rec = np.zeros(dh.shape, dh.dtype)
    d_rh = np.empty(dh.shape, dh.dtype)
    work = np.empty((H, B), dh.dtype)
    for t in range(T - 1, -1, -1):
        _gru_before_rows_n(dh, dy[t], rec, h[t], z[t], n[t], d_rz[t], d_n[t])
        _kernels._step_product(d_n[t], W_hnT, W_hn, work, d_rh, False)
        _gru_before_rows_r(dh, d_rh, h[t], r[t], z[t], d_rz[t], d_n[t], rh[t], acc_rz, acc_n)
        _kernels._step_product(d_rz[t], W_hrzT, W_hrz, work, rec, False)
    for b in range(B):
        _kernels._add_into(dh[b], rec[b])


@njit(**JIT)
def weight_gradient(da, a, out):
    """out = da.T @ a over all T*B rows: da (T, B, G), a (T, B, K) -> out (G, K). One GEMM (da.T is
    a Fortran-ordered view, which BLAS reads in place)."""
    T, B = da.shape[0], da.shape[1]
    np.dot(da.reshape(T * B, da.shape[2]).T, a.reshape(T * B, a.shape[2]), out)


@njit(**JIT)
def rowcast_gradients(da, x, h_prev, W_x, work, dW_x, dW_h, dx):
    """A training backward's products after its loop, float32, on the compiled kernel of
    :mod:`refrnn.jit._rowcast` (the training step then never calls BLAS: see there). ``da`` =
    (da_x, da_h), each (T, B, G): the gradients at the pre-activations that the input's weight and the
    recurrent weight multiply. They may differ in their last ``S`` columns only, S = ``work[2]``'s
    width (the GRU's n part, da_n against da_n * r); the LSTM passes one array twice and S = 0.

    * ``[dW_x | dW_h].T (D+P, G) = [x | h_prev].T (D+P, T*B) @ da_h (T*B, G)``, one product, its
      operand and its result transposed through ``work`` = (aT (D+P, T*B), gT (D+P, G), gxT (D, S));
      where S > 0, dW_x's last S rows come from ``x.T @ da_x[:, G-S:]`` into gxT instead;
    * ``dx (T*B, D16) = da_x (T*B, G) @ W_x (G, D16)``, with ``W_x`` and ``dx`` padded with zero
      columns to a multiple of 16 (the kernel's width) by the caller.
    """
    da_x, da_h = da
    T, B, G = da_x.shape
    D, P = x.shape[2], h_prev.shape[2]
    aT, gT, gxT = work
    split = G - gxT.shape[1]
    dx2 = da_x.reshape(T * B, G)
    _kernels._transpose_into(aT[:D], x.reshape(T * B, D))
    _kernels._transpose_into(aT[D:], h_prev.reshape(T * B, P))
    _rowcast.gemm(aT, da_h.reshape(T * B, G), gT)
    if split < G:
        _rowcast.gemm(aT[:D], dx2[:, split:], gxT)
        _kernels._transpose_into(dW_x[split:], gxT)
    _kernels._transpose_into(dW_x[:split], gT[:D, :split])
    _kernels._transpose_into(dW_h, gT[D:])
    _rowcast.gemm(dx2, W_x, dx)


@njit(**JIT)
def input_gradient(da, W, out):
    """out = da @ W over all T*B rows: da (T, B, G), W (G, D) -> out (T*B, D). One GEMM."""
    T, B = da.shape[0], da.shape[1]
    np.dot(da.reshape(T * B, da.shape[2]), W, out)


# ---------------------------------------------------------------------------------------------
# LSTM. cache = (x, h, c, i, f, g, o, tc, m) as in LSTMCache, m a (0, B, H) array without a
# projection; peepholes (w_ic, w_fc, w_oc) are zero vectors when absent; W_hr (P, H) or (0, H).
# ---------------------------------------------------------------------------------------------


@njit(**JIT)
def _lstm_units(dm, dc, c_prev, c_next, gates, peepholes, da, acc, peeps, lo, hi):
    """One step's element-wise pass over units ``[lo, hi)`` of every row: dm (B, H) the gradient at
    m_t, dc (B, H) at c_t (becomes the gradient at c_{t-1}); da (B, 4H) = [da_i, da_f, da_g, da_o].
    Each unit's sums in ``acc`` take its rows in order, so any split of the units gives the same bits."""
    i, f, g, o, tc = gates
    w_ic, w_fc, w_oc = peepholes[0][lo:hi], peepholes[1][lo:hi], peepholes[2][lo:hi]
    acc_b, acc_ic, acc_fc, acc_oc = acc
    H = dc.shape[1]
    s_i, s_f, s_g, s_o = acc_b[lo:hi], acc_b[H + lo : H + hi], acc_b[2 * H + lo : 2 * H + hi], acc_b[3 * H + lo : 3 * H + hi]
    for b in range(dc.shape[0]):
        da_b, dc_b, dm_b = da[b], dc[b][lo:hi], dm[b][lo:hi]
        da_i, da_f, da_g, da_o = da_b[lo:hi], da_b[H + lo : H + hi], da_b[2 * H + lo : 2 * H + hi], da_b[3 * H + lo : 3 * H + hi]
        i_b, f_b, g_b, o_b, tc_b, cp = i[b][lo:hi], f[b][lo:hi], g[b][lo:hi], o[b][lo:hi], tc[b][lo:hi], c_prev[b][lo:hi]
        _sigmoid_grad_of_product(da_o, dm_b, tc_b, o_b)  # do = dm * tanh(c)
        _lstm_dc(dc_b, dm_b, o_b, tc_b, da_o, w_oc)
        _sigmoid_grad_of_product(da_i, dc_b, g_b, i_b)  # di = dc * g
        _sigmoid_grad_of_product(da_f, dc_b, cp, f_b)  # df = dc * c_{t-1}
        _lstm_da_g(da_g, dc_b, i_b, g_b)
        _lstm_dc_prev(dc_b, f_b, da_i, w_ic, da_f, w_fc)
        _kernels._add_into(s_i, da_i)
        _kernels._add_into(s_f, da_f)
        _kernels._add_into(s_g, da_g)
        _kernels._add_into(s_o, da_o)
        if peeps:
            _kernels._add_product_into(acc_ic[lo:hi], da_i, cp)
            _kernels._add_product_into(acc_fc[lo:hi], da_f, cp)
            _kernels._add_product_into(acc_oc[lo:hi], da_o, c_next[b][lo:hi])


@njit(**JIT)
def _lstm_rows(dm, dc, c_prev, c_next, gates, peepholes, da, acc, peeps):
    """:func:`_lstm_units` over every unit, on this thread."""
    _lstm_units(dm, dc, c_prev, c_next, gates, peepholes, da, acc, peeps, 0, dc.shape[1])


@njit(parallel=True, **JIT)
def _lstm_rows_parallel(dy, rec, dm, dc, c_prev, c_next, gates, peepholes, da, acc, peeps):
    """``dm = dy + rec`` (the gradient at h_t without a projection) and :func:`_lstm_rows` in the
    tasks of :func:`refrnn.jit._kernels.pass_tasks` over numba's threads, for a step loop whose
    products run on numba's threads too (see :func:`refrnn.jit._kernels._lstm_rows_parallel`).
    ``acc`` holds one row of sums per group of rows, as in :func:`_gru_after_rows_parallel`."""
    B, H = dc.shape
    rows, units = _kernels.pass_tasks(B, H)
    i, f, g, o, tc = gates
    for task in prange(rows * units):
        b0, b1, lo, hi = _kernels.task_span(task, B, H, rows, units)
        for b in range(b0, b1):
            _sum_to(dm[b][lo:hi], dy[b][lo:hi], rec[b][lo:hi])
        group = task // units
        gate_rows = (i[b0:b1], f[b0:b1], g[b0:b1], o[b0:b1], tc[b0:b1])
        sums = (acc[0][group], acc[1][group], acc[2][group], acc[3][group])
        _lstm_units(dm[b0:b1], dc[b0:b1], c_prev[b0:b1], c_next[b0:b1], gate_rows, peepholes, da[b0:b1], sums, peeps, lo, hi)


@njit(**JIT)
def lstm_backward(cache, dy, weights, state, da, dh_all, acc, peeps, rowcast):
    """Per step (projection: ``dm = dh @ W_hr``, B x P x H), the fused pass, then ``da[t] @ W_h``
    (B x 4H x P), by the compiled kernel with ``rowcast`` (its transpose then a C-ordered copy).

    ``weights`` = ((W_h (4H, P), its transpose, its panels), (W_hr (P, H) or (0, H), its transpose),
    (w_ic, w_fc, w_oc)), the transposes for :func:`refrnn.jit._kernels._step_product` (from
    ``transposed_weight``); the panels of W_h (:func:`refrnn.jit._rowcast.panels`) where the step
    product goes through :func:`refrnn.jit._rowcast.packed` instead, else an empty (0, 0, PANEL)
    array; ``state`` = (dh (B, P),
    dc (B, H)): dL/d(h_T, c_T) on entry, dL/d(h_0, c_0) on return; ``da`` (T, B, 4H); ``dh_all``
    (T, B, P) keeps dL/dh_t for dW_hr (a (0, B, P) array without a projection); ``acc`` = float64
    sums (R, 4H), (R, H), (R, H), (R, H) of da and of the peephole products, one row per group of
    rows of :func:`_lstm_rows_parallel` with ``rowcast``, else R = 1; ``peeps``: accumulate those.
    """
    _, h, c, i, f, g, o, tc, _ = cache
    (W_h, W_hT, packed), (W_hr, W_hrT), peepholes = weights
    dh, dc = state
    T, B, H = i.shape
    project = W_hr.shape[0] > 0
    rec = dh.copy()  # dL/dh_T goes in through the same addition as every later step's product
    dm = np.empty((B, H), dh.dtype)
    rec_T, dm_T = _kernels.step_work(rec.shape[1], da.shape[2] if rowcast else 0, B, dh.dtype), np.empty((H, B), dh.dtype)
    acc1 = (acc[0][0], acc[1][0], acc[2][0], acc[3][0])  # the one group off the kernel
    for t in range(T - 1, -1, -1):
        if project:
            dh_t = dh_all[t]
            for b in range(B):
                _sum_to(dh_t[b], dy[t][b], rec[b])
            _kernels._step_product(dh_t, W_hrT, W_hr, dm_T, dm, False)
            _lstm_rows(dm, dc, c[t], c[t + 1], (i[t], f[t], g[t], o[t], tc[t]), peepholes, da[t], acc1, peeps)
        elif rowcast:
            _lstm_rows_parallel(dy[t], rec, dm, dc, c[t], c[t + 1], (i[t], f[t], g[t], o[t], tc[t]), peepholes, da[t], acc, peeps)
        else:
            for b in range(B):
                _sum_to(dm[b], dy[t][b], rec[b])
            _lstm_rows(dm, dc, c[t], c[t + 1], (i[t], f[t], g[t], o[t], tc[t]), peepholes, da[t], acc1, peeps)
        if packed.shape[0] > 0:
            _rowcast.packed_into(da[t], packed, rec)
        else:
            _kernels._step_product(da[t], W_hT, W_h, rec_T, rec, rowcast)
    for b in range(B):
        _kernels._copy(dh[b], rec[b])
