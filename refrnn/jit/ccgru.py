r"""Fast conditional-computation GRU (numba): the z-sparse inference paths of Davis & Arel, a dense
twin, and compiled training (forward and backward).

The twin of :mod:`refrnn.cells.ccgru`: same parameters, same outputs. Training. In training mode
with batch statistics, :func:`forward` runs :func:`forward_train`, the compiled dense twin of the
reference's forward that fills its :class:`refrnn.cells.ccgru.CCGRUCache` (batch statistics and
updated running statistics included), and :func:`backward` is the compiled twin of the reference's
backward (every variant and normalisation; it accepts either forward's cache). Their kernels and
the products they make are described in :mod:`refrnn.jit._ccgru_train`.

Inference (running or folded statistics). The point of the cell is that an update gate ``z`` that is *exactly* zero makes a unit
copy its state, so the reset gate and proposal of that unit need not be computed at all::

    z_t = cliptanh(BN(a_t, s))                        first, for every unit (cheap: bottleneck or blocks)
    A_t = {j : z_tj != 0}                             the active units of this step (per sample)
    for j in A_t:
        r_tj = sigmoid(W_r[j] x + U_r[j] h + b_r[j])
        ĥ_tj = tanh(W_h[j] x + r_tj * (U_h[j] h) + b_h[j])
        h_tj = (1 - z_tj) * h_j + z_tj * ĥ_tj
    for j not in A_t:
        h_tj = h_j                                   a copy, bit for bit

(equations and conventions of :mod:`refrnn.cells.ccgru`: paper orientation, reset outside ``U_h h``,
``BN(a, s) = (a - mean) * inv_std + s`` with the running statistics, ``inv_std = 1`` when folded).

Three paths, chosen with ``algorithm`` (``"sparse"`` picks the sparse one that suits the variant;
``path=`` is the keyword's former name):

* ``"dense"``: every unit computed, the baseline the speed-ups are measured against, made as fast
  as we could: per step, B = 1: one GEMV ``h @ [U_r; U_h].T``; B > 1: the same product in tiles of
  16 units (32 columns), tiles in parallel, then a fused, vectorised pass over the units. In float32
  a tile's product is one call of the compiled kernel of :mod:`refrnn.jit._rowcast` on its thread
  (:func:`~refrnn.jit._rowcast.serial`, no packing copy), and so is the tile's input side
  ``x_t @ [W_r; W_h]_tile.T``, as on the block path (the same bits as the block path with every
  block active); otherwise (B = 1, float64) the input products of all T*B rows are one GEMM, and a
  tile's product is BLAS in row chunks small enough for OpenBLAS's no-packing kernels
  (:data:`SMALL_GEMM_MNK`). (With the one GEMM, its 26 MB result read back a step at a time, the
  float32 dense path at B = 64, H = 1024 had taken 59-67 ms against 51-55 for the block path with
  every block active; with the input side per tile, 56 against 55-56.)
* ``"unstructured"`` (any variant; meant for B = 1, the paper's single stream): per sample, the
  active units are listed and each computes its dot products against its own weights. The paper
  copies the active weight rows to scratch and calls GEMV; here the weights are stored
  *unit-major* once, in :func:`prepare`, so the "gather" is free: row j of ``P`` (H, 2D + 2H) is
  ``[W_r[j], W_h[j], U_r[j], U_h[j]]``, one contiguous stretch of memory per active unit, read in
  two passes, against ``x_t`` and against ``h_{t-1}``. No weight is copied per step, none is read
  for an inactive unit.
* ``"block"`` (block variant, batch B; paper Fig. 3): z is constant on each of the g blocks of
  ``bs = H/g`` units. Per block, the samples whose block is active form one matrix that
  multiplies the block's recurrent weights, ``h_sel @ [U_r; U_h]_block.T``, stored per tile of the
  block, contiguous (the same small products as the dense path, on n_k <= B rows; in float32 the
  kernel reads those rows of ``h`` and ``x`` in place, in float64 they are copied for BLAS and the
  small input side (K = D) is a loop vectorised over the outputs); the results are scattered back.
  Blocks run in parallel. Inactive (sample, block) pairs copy their state.

The update gate is computed in the same way by every path (one helper, :func:`_gate_z`): its input
side for all T steps is one GEMM, its recurrent side one product per step, the samples split
between the threads on the batch paths.

Measured on 2 Zen 3 cores (AVX2, float32, B = 64, T = 50, H = 1024, blocks of 16, medians): the
dense path took 420 ms with its tile products through OpenBLAS, whose AVX2 build has no
no-packing kernels and packs the tile's weights on every call (6 x 1024 x 32: 34-39 us against 4-5
through the kernel); 230-260 ms through the kernel. The block path at z-density 0.10: 124 -> 58
ms, then 40 ms with the gate's product split between the two threads (it had taken 13 of the 42
ms on one).

Layout rules that mattered (each measured, see the comments where they apply): every array a loop
reads is a contiguous 1-d slice (rows of 2-d slices are not, and are not vectorised); no index
with a run-time offset (``a[a0 + k]``) inside a reduction; no branch around a function call in a
loop; ``error_model="numpy"`` so divisions do not test for zero.

Activations. float32 uses the vectorisable polynomial ``exp`` of :mod:`refrnn.jit._kernels` (no
SVML in this llvmlite, so ``math.exp`` in a loop runs scalar; the on-disk cache of
:mod:`refrnn.jit._cache` recompiles these kernels when that module changes). float64 uses libm and
agrees with the reference to 1e-10.

Shapes: x (T, B, D); h0 (B, H); y (T, B, H) = h_1..h_T; h_T (B, H); z (T, B, H) when asked for.
"""

from __future__ import annotations

import contextlib
import warnings
from typing import NamedTuple

import numpy as np
from numba import get_num_threads, prange

from .._checks import finite_result, float_array, one_of
from .._moved import algorithm_keyword, renamed
from ..cells import ccgru as reference
from ..cells._common import check_cache, frozen, gradients
from . import _blas, _buffers, _ccgru_train, _onepool, _rowcast, _strategy
from ._cache import njit
from ._kernels import _add_into, _copy
from ._kernels import sigmoid as _sigmoid
from ._kernels import tanh as _tanh

ALGORITHMS = ("sparse", "dense", "unstructured", "block")
PATHS = ALGORITHMS  # the former name
_VARIANT_CODE = {"full": 0, "lowrank": 1, "block": 2}

# Kernels contract a*b+c into fused multiply-adds only. The dot-product helpers alone also allow
# reassociation: that is what lets LLVM split a sum into several vector accumulators.
# Every function uses error_model="numpy": with numba's default ("python") each float division
# tests its divisor for zero to raise ZeroDivisionError, and that branch stops LLVM vectorising
# any loop that divides (measured: tanh over 1024 float32 units 4.6 us, 0.4 us without it).
# A division by zero cannot occur here anyway: the divisors are 1 + exp(.) >= 1.
FASTMATH = {"contract"}
DOT_FASTMATH = {"contract", "reassoc"}

# OpenBLAS (the BLAS behind SciPy, which numba calls) multiplies small matrices with kernels that
# skip its packing copies when M*N*K <= 1e6 (its sgemm_small_kernel_permit for AVX-512 CPUs).
# Measured here, float32, (64 x 1024) @ (1024 x 2048) on one core: one GEMM 74 GFLOP/s; the same
# product as 64 column tiles of 32, each over 30-row chunks of the batch (M*N*K = 983040),
# 108 GFLOP/s; chunks of 32 rows (1048576) fall back to packing, 60 GFLOP/s. So tile products
# take at most this many M*N*K, dense and sparse paths alike (the baseline is the best dense).
SMALL_GEMM_MNK = 1_000_000
TILE = 16  # units per tile: 2*16 = 32 output columns, two float32 AVX-512 vectors


# ---------------------------------------------------------------------------------------------
# Kernels
# ---------------------------------------------------------------------------------------------


@njit(cache=True, fastmath=DOT_FASTMATH, error_model="numpy")
def _dot(a, b):
    """``a . b`` over equal-length 1-d arrays, vectorised with several accumulators."""
    acc = b.dtype.type(0.0)
    for k in range(b.shape[0]):
        acc += a[k] * b[k]
    return acc


@njit(cache=True, fastmath=DOT_FASTMATH, error_model="numpy")
def _dot2(a, c, b):
    """``(a . b, c . b)`` over equal-length 1-d arrays in one pass over ``b``, vectorised.

    Callers pass slices rather than offsets: ``a[a0 + k]`` with a run-time ``a0`` keeps numba's
    negative-index wrap-around test in the loop, which stopped LLVM vectorising it (measured:
    1.8 us instead of 0.07 us for a 1024-long float32 dot).
    """
    s_a = b.dtype.type(0.0)
    s_c = b.dtype.type(0.0)
    for k in range(b.shape[0]):
        s_a += a[k] * b[k]
        s_c += c[k] * b[k]
    return s_a, s_c


@njit(cache=True, fastmath=DOT_FASTMATH, error_model="numpy")
def _dot4(a, b, c, d, x):
    """``(a . x, b . x, c . x, d . x)`` in one pass over ``x`` (each ``x[k]`` loaded once)."""
    s_a = x.dtype.type(0.0)
    s_b = s_a
    s_c = s_a
    s_d = s_a
    for k in range(x.shape[0]):
        xk = x[k]
        s_a += a[k] * xk
        s_b += b[k] * xk
        s_c += c[k] * xk
        s_d += d[k] * xk
    return s_a, s_b, s_c, s_d


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _chunk_rows(x, W, rows):
    """Rows of ``x`` per product ``x @ W`` on one thread: all ``rows`` where the compiled kernel takes
    the product (:func:`refrnn.jit._rowcast.into_serial`), else chunks small enough for OpenBLAS's
    no-packing kernels (SMALL_GEMM_MNK)."""
    if _rowcast.takes(x, W):
        return max(1, rows)
    return max(1, SMALL_GEMM_MNK // (W.shape[0] * W.shape[1]))


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _small_products(x, W, out):
    """out = x @ W on the calling thread, in chunks of :func:`_chunk_rows` rows."""
    B = x.shape[0]
    m = _chunk_rows(x, W, B)
    for i0 in range(0, B, m):
        i1 = min(B, i0 + m)
        _rowcast.into_serial(x[i0:i1], W, out[i0:i1])


class ZGate(NamedTuple):
    """The update-gate fields of a :class:`Prepared` (same names, same arrays) as one kernel
    argument: what :func:`_gate_z` reads. Built by :func:`_z_gate`."""

    variant: int
    bs: int
    U_z: np.ndarray
    U_zT: np.ndarray
    W_zT: np.ndarray
    b_z: np.ndarray
    mean: np.ndarray
    inv_std: np.ndarray
    s: np.generic


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _z_scratch(gate, B):
    """``(u, a)`` for :func:`_gate_z` and the (B, K) gate ``zk``, allocated once per kernel call."""
    dt = gate.mean.dtype
    work = (np.empty((B, gate.U_z.shape[0]), dt), np.empty((B, gate.W_zT.shape[1]), dt))
    return work, np.empty((B, gate.mean.shape[0]), dt)


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _gate_z(gate, t, pxz, hs, work, zk, zs, r0, r1):
    """Update gate of step t for the samples r0 .. r1-1 (Eqs. 1, 6-11, inference statistics) into
    ``zk`` and ``zs[t]`` (``zs`` (T, B, H) keeps every step, (1, B, H) is scratch: see :func:`_z_slot`).
    Samples are independent here, so the batch paths split them between threads.

    ``work`` = (u, a) from :func:`_z_scratch`. ``u = pxz[t] + h_{t-1} @ U_zT`` (U_zT = U_z.T; both
    are stored) is ``a`` itself (full) or the bottleneck pre-activation (lowrank, block); ``zk``
    (B, K) receives ``cliptanh((a - mean) * inv_std + s)`` (the reference's expression, term for
    term) and ``zu`` (B, H) the gate of every unit (``zk`` itself, or each block value repeated
    over its ``bs`` units).

    A batch of one sample is done by hand: the products are small (g x H and H x g at rank g) and a
    product call costs about as much as the work; the low-rank expansion ``W_z z_lr`` also skips the
    bottleneck units the relu set to zero (their terms are exactly zero).
    """
    variant, bs, U_z, U_zT, W_zT, b_z, mean, inv_std, s = gate
    u, a = work
    pxz_t, h, zu = pxz[t], hs[t], zs[_z_slot(t, zs)]
    H = h.shape[1]
    K = zk.shape[1]
    zero = h.dtype.type(0.0)
    # By the batch, not by this worker's share: a share of one row taking the hand-written dot while
    # the same row in a larger share takes the product would make the bits depend on the thread count.
    one_row = h.shape[0] == 1
    if one_row:
        h_0, u_0 = h[r0], u[r0]
        for i in range(U_z.shape[0]):
            u_0[i] = _dot(U_z[i], h_0)
    else:
        _small_products(h[r0:r1], U_zT, u[r0:r1])
    for b in range(r0, r1):
        u_b, p_b = u[b], pxz_t[b]
        if variant == 0:
            for i in range(u_b.shape[0]):
                u_b[i] += p_b[i]
        else:
            for i in range(u_b.shape[0]):
                u_b[i] = max(u_b[i] + p_b[i], zero)  # relu: the bottleneck z_lr
    if variant == 1:
        if one_row:
            a_0, u_0 = a[r0], u[r0]
            _copy(a_0, b_z)
            for i in range(W_zT.shape[0]):
                zi = u_0[i]
                if zi != zero:
                    w_i = W_zT[i]
                    for j in range(H):
                        a_0[j] += zi * w_i[j]
        else:
            _small_products(u[r0:r1], W_zT, a[r0:r1])
            for b in range(r0, r1):
                a_b = a[b]
                for j in range(H):
                    a_b[j] += b_z[j]
        act = a
    else:
        act = u
    for b in range(r0, r1):
        act_b, zk_b = act[b], zk[b]
        for k in range(K):
            v = (act_b[k] - mean[k]) * inv_std[k] + s
            t = _tanh(v)  # computed unconditionally: a select vectorises, a branch around a call does not
            zk_b[k] = t if v > zero else zero  # cliptanh, Eq. 6: exactly 0 when v <= 0
        zu_b = zu[b]
        if variant == 2:
            for k in range(K):
                zu_b[k * bs : (k + 1) * bs] = zk_b[k]
        else:
            _copy(zu_b, zk_b)


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _share(w, workers, B):
    """Samples ``(r0, r1)`` of worker w when ``workers`` split a batch of B for the update gate."""
    per = -(-B // workers)
    return min(B, w * per), min(B, (w + 1) * per)


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _z_slot(t, zs):
    """The step of ``zs`` that receives step t's gate: t itself, or 0 when ``zs`` is (1, B, H) scratch."""
    return min(t, zs.shape[0] - 1)


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _tile_pass(p, p_rows, p_off, c, c_off, rows, z_t, h_t, h_next, j0, tu):
    """Activations and state update of the units ``j0 .. j0+tu`` (one tile) for samples ``rows``.

    For the i-th sample ``b = rows[i]``: ``p[p_rows[i], p_off:]`` holds ``[W_r x + b_r, W_h x + b_h]``
    and ``c[i, c_off:]`` holds ``[U_r h, U_h h]``, 2tu values each (the tile's r half, then its ĥ
    half). Every array is indexed through contiguous 1-d slices: a row of a 2-d *slice* would be
    a non-contiguous array type, and LLVM does not vectorise loops over those (measured: 0.87 ms
    instead of 0.13 ms for the 64x1024 units of one step).
    """
    one = h_t.dtype.type(1.0)
    for i in range(rows.shape[0]):
        b = rows[i]
        p_i = p[p_rows[i]][p_off : p_off + 2 * tu]
        c_i = c[i][c_off : c_off + 2 * tu]
        z_b = z_t[b][j0 : j0 + tu]
        h_b = h_t[b][j0 : j0 + tu]
        hn_b = h_next[b][j0 : j0 + tu]
        for v in range(tu):
            r = _sigmoid(p_i[v] + c_i[v])
            h_hat = _tanh(p_i[tu + v] + r * c_i[tu + v])
            zj = z_b[v]
            hn_b[v] = (one - zj) * h_b[v] + zj * h_hat


@njit(cache=True, fastmath=FASTMATH, error_model="numpy", parallel=True)
def dense_forward(gate, x, px, pxz, U_tT, Ut, Wt, b_t, hs, zs, workers):
    """Every unit computed. Units are grouped in tiles of ``tu``; columns of px, U_tT and Ut are
    in *tile order* (per tile: its r columns, then its ĥ columns).

    The input side, ``x @ W_rh.T + b_rh``, comes one of two ways. With ``px`` (T, B, 2H) in tile
    order, computed by the caller for all steps (one GEMM). Or, when ``px`` is empty (T = 0), per
    tile and step, ``x_t @ Wt[k] + b`` (Wt (H/tu, D, 2tu), b_t (2H,): the block path's layout), by the
    compiled kernel on the tile's thread, as the block path does it (the caller's choice for B > 1
    on the kernel, see the module docstring).
    B = 1: one GEMV a step, ``h @ U_tT`` with U_tT (H, 2H) = U_rh.T in tile order (``px`` given).
    B > 1: per tile, Ut[k] (H, 2tu) multiplies the batch ``m`` rows at a time (:func:`_chunk_rows`:
    all of them on the kernel); the tiles run in parallel (``prange``).
    ``gate``: :class:`ZGate`, its samples split between ``workers`` threads. hs (T+1, B, H): the
    caller fills hs[0]. zs: (T, B, H) gate history, or (1, B, H) scratch.
    """
    T, B, H = hs.shape[0] - 1, hs.shape[1], hs.shape[2]
    dt = hs.dtype
    n_tiles, tu = Ut.shape[0], Ut.shape[2] // 2
    m = _chunk_rows(hs[0], Ut[0], B)
    work, zk = _z_scratch(gate, B)
    q = np.empty((1, 2 * H), dt)
    rows = np.arange(B)
    for t in range(T):
        if B == 1:  # one sample: no parallel region a step for it
            _gate_z(gate, t, pxz, hs, work, zk, zs, 0, 1)
        else:
            for w in prange(workers):
                r0, r1 = _share(w, workers, B)
                if r0 < r1:
                    _gate_z(gate, t, pxz, hs, work, zk, zs, r0, r1)
        zu = zs[_z_slot(t, zs)]
        h_t, h_next, x_t = hs[t], hs[t + 1], x[t]
        if B == 1:
            px_t = px[t]
            np.dot(h_t[0], U_tT, q[0])
            for k in range(n_tiles):
                lo = 2 * tu * k
                _tile_pass(px_t, rows, lo, q, lo, rows, zu, h_t, h_next, k * tu, tu)
            continue
        for k in prange(n_tiles):
            c = np.empty((m, 2 * tu), dt)
            lo = 2 * tu * k
            if px.shape[0] == 0:
                p = np.empty((B, 2 * tu), dt)
                _rowcast.into_serial(x_t, Wt[k], p)
                b_k = b_t[lo : lo + 2 * tu]
                for i in range(B):
                    _add_into(p[i], b_k)
                _dense_tile(p, 0, Ut[k], c, rows, zu, h_t, h_next, k * tu)
            else:
                _dense_tile(px[t], lo, Ut[k], c, rows, zu, h_t, h_next, k * tu)


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _dense_tile(p, p_off, U, c, rows, zu, h_t, h_next, j0):
    """One tile of a dense step, every sample: ``h_t @ U`` in chunks of ``c``'s rows, then the
    tile's pass, its input side at column ``p_off`` of ``p`` (see :func:`_tile_pass`)."""
    B, m, tu = h_t.shape[0], c.shape[0], c.shape[1] // 2
    for i0 in range(0, B, m):
        i1 = min(B, i0 + m)
        _rowcast.into_serial(h_t[i0:i1], U, c[: i1 - i0])
        _tile_pass(p, rows[i0:i1], p_off, c, 0, rows[i0:i1], zu, h_t, h_next, j0, tu)


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def unstructured_forward(gate, x, pxz, P, b_rh, hs, zs):
    """Per sample, only the active units; P (H, 2D + 2H) holds unit j's rows [W_r, W_h, U_r, U_h];
    ``gate``: :class:`ZGate`.

    Active units are taken two at a time: ``(W_r x, W_h x)`` of each from one pass over ``x``, and
    ``(U_r h, U_h h)`` of both from one pass over ``h`` (four contiguous row streams, each ``h[k]``
    loaded once for four products). ĥ's input and recurrent parts stay apart because r multiplies
    the latter. Results go to compact buffers, the activation pass over them is a plain vectorised
    loop, then they are scattered back. An odd count pairs its last unit with itself.

    Measured (one core, H = 1024, rank 16, per step at z-density 0.1 / 1.0): units one at a time
    23.8 / 190 us, two at a time 22.1 / 172 us, four at a time 26.4 / 196 us; dense 125 us.
    """
    T, B, D = x.shape
    H = hs.shape[2]
    ru = 2 * D  # where the U rows start
    dt = hs.dtype
    one = dt.type(1.0)
    work, zk = _z_scratch(gate, B)
    idx = np.empty(H + 1, np.int64)
    buf = np.empty((4, H + 1), dt)  # compact per-active-unit values
    a_r, a_hx, a_hh, h_n = buf[0], buf[1], buf[2], buf[3]
    for t in range(T):
        _gate_z(gate, t, pxz, hs, work, zk, zs, 0, B)
        zu = zs[_z_slot(t, zs)]
        for b in range(B):
            h_b, h_next, z_b, x_b = hs[t, b], hs[t + 1, b], zu[b], x[t, b]
            # Branch-free compaction: every unit is first copied (z = 0: the state carries over,
            # nothing is computed); the index list grows only where z != 0. No mispredictions.
            n = 0
            for j in range(H):
                h_next[j] = h_b[j]
                idx[n] = j
                n += z_b[j] != 0
            if n == 0:
                continue
            idx[n] = idx[n - 1]
            for i in range(0, n, 2):
                j0, j1 = idx[i], idx[i + 1]
                p0, p1 = P[j0], P[j1]
                x0, y0 = _dot2(p0[:D], p0[D:ru], x_b)
                x1, y1 = _dot2(p1[:D], p1[D:ru], x_b)
                r0, g0, r1, g1 = _dot4(p0[ru : ru + H], p0[ru + H :], p1[ru : ru + H], p1[ru + H :], h_b)
                a_r[i], a_hx[i], a_hh[i] = x0 + r0 + b_rh[j0], y0 + b_rh[H + j0], g0
                a_r[i + 1], a_hx[i + 1], a_hh[i + 1] = x1 + r1 + b_rh[j1], y1 + b_rh[H + j1], g1
            for i in range(n):
                j = idx[i]
                zj = z_b[j]
                r = _sigmoid(a_r[i])
                h_hat = _tanh(a_hx[i] + r * a_hh[i])
                h_n[i] = (one - zj) * h_b[j] + zj * h_hat
            for i in range(n):
                h_next[idx[i]] = h_n[i]


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _block_step(kb, bs, x_t, h_t, h_next, zk, zu, weights, work, local):
    """Block ``kb`` of one step: gather the samples whose block is active, multiply, scatter.

    ``weights`` = (Ut, Wt, b_t) as in :func:`block_forward`; ``work`` = (sel, offsets, h_buf, c,
    p_buf), the worker's scratch, whose ``c`` (m, 2tu) takes the tile products ``m`` rows at a time;
    ``offsets`` (2, B) the active samples' row offsets into ``h_t`` and ``x_t``. On the compiled
    kernel (float32) the products read those rows where they are
    (:func:`refrnn.jit._rowcast.serial_gathered`, the same bits as over copies of them), the input
    side (K = D) too, its bias added after; otherwise (BLAS) the rows of ``h_t`` are copied into
    ``h_buf`` first and the input side is a loop vectorised over the tile's 2tu outputs, from the
    bias on. (At z-density 0.25, bs = 16, that loop had taken 1.9 of the block path's 22 ms.)
    """
    Ut, Wt, b_t = weights
    sel, offsets, h_buf, c, p_buf = work
    h_off, x_off = offsets[0], offsets[1]
    B, H = h_t.shape
    D = x_t.shape[1]
    tu = Ut.shape[2] // 2
    m = c.shape[0]
    lo = kb * bs
    n = 0
    for b in range(B):  # inactive (sample, block) pairs keep the copy of h_t made for the step
        sel[n] = b
        h_off[n], x_off[n] = b * H, b * D
        n += zk[b, kb] != 0
    if n == 0:
        return
    in_place = _rowcast.takes(h_t, Ut[0])
    h_sel = h_t  # BLAS with every sample active, or the kernel (which picks the rows itself)
    if n < B and not in_place:
        h_sel = h_buf[: n * H].reshape(n, H)
        for i in range(n):
            _copy(h_sel[i], h_t[sel[i]])
    p = p_buf[: n * 2 * tu].reshape(n, 2 * tu)
    for k in range(lo // tu, (lo + bs) // tu):
        W, b_k = Wt[k], b_t[2 * tu * k : 2 * tu * (k + 1)]
        if in_place:
            _rowcast.serial_gathered_into(x_t, x_off[:n], W, p)
            for i in range(n):
                _add_into(p[i], b_k)
        else:
            for i in range(n):
                x_b, p_i = x_t[sel[i]], p[i]
                _copy(p_i, b_k)
                for d in range(D):
                    xd, w_d = x_b[d], W[d]
                    for v in range(2 * tu):
                        p_i[v] += xd * w_d[v]
        for i0 in range(0, n, m):
            i1 = min(n, i0 + m)
            if in_place:
                _rowcast.serial_gathered_into(h_t, h_off[i0:i1], Ut[k], c[: i1 - i0])
            else:
                _rowcast.into_serial(h_sel[i0:i1], Ut[k], c[: i1 - i0])
            _tile_pass(p, local[i0:i1], 0, c, 0, sel[i0:i1], zu, h_t, h_next, k * tu, tu)


@njit(cache=True, fastmath=FASTMATH, error_model="numpy", parallel=True)
def block_forward(gate, x, pxz, weights, hs, zs, workers):
    """Block-sparse: per block, the samples whose block is active are gathered and multiplied
    together (paper Fig. 3); ``workers`` threads share the blocks (``prange``). ``gate``: the
    :class:`ZGate` of the block variant.

    ``weights`` = (Ut, Wt, b_t): Ut (H/tu, H, 2tu), Wt (H/tu, D, 2tu) and b_t (2H,) hold, per tile
    of ``tu`` units (tiles never straddle a block), ``[U_r; U_h]`` and ``[W_r; W_h]`` rows of its
    units, transposed and contiguous, and their biases. A block is ``bs/tu`` tiles; each tile
    product takes the gathered rows ``m`` at a time (:func:`_chunk_rows`), and so does the input
    side (K = D, small) on the kernel (see :func:`_block_step`). Inactive (sample, block) pairs copy their state: the
    whole state is copied first (one vectorised pass; per-block slices cost 0.1 ms a step at
    B=64, g=64), then each active block overwrites its units. Each thread copies the samples whose
    gate it computed, in the gate's parallel loop (the copy on one thread took 74 us of a 640 us
    step at B = 64, H = 1024, z-density 0.1).

    Each worker takes its blocks in the opposite order every other step, so that the weights it
    read last, still in its L2, are the first it reads next (its share, 4 MB at H = 1024 on two
    threads, does not fit in 2 MB of L2; read in the same order every step, each step had fetched
    all of it again): at z-density 0.25, bs = 16, 27.8 -> 24.1 ms (2 cores, medians); the products
    alone, 64 blocks of 1024 x 32 against 6 gathered rows, 151 -> 119 us a step.
    """
    Ut = weights[0]
    T, B, D = x.shape
    H = hs.shape[2]
    g, bs = gate.U_z.shape[0], gate.bs
    tu = Ut.shape[2] // 2
    m = _chunk_rows(hs[0], Ut[0], B)
    dt = hs.dtype
    z_work, zk = _z_scratch(gate, B)
    # Scratch per worker, allocated once. Worker w takes the blocks w, w + workers, ...
    # (numba.get_thread_id would index per-thread scratch too, but it stops on-disk caching).
    sel_buf = np.empty((workers, B), np.int64)
    offsets_buf = np.empty((workers, 2, B), np.int64)
    h_buf = np.empty((workers, B * H if not _rowcast.takes(hs[0], Ut[0]) else 0), dt)
    c_buf = np.empty((workers, m, 2 * tu), dt)
    p_buf = np.empty((workers, B * 2 * tu), dt)
    local = np.arange(B)
    for t in range(T):
        h_t, h_next, x_t = hs[t], hs[t + 1], x[t]
        for w in prange(workers):
            r0, r1 = _share(w, workers, B)
            if r0 < r1:
                _gate_z(gate, t, pxz, hs, z_work, zk, zs, r0, r1)
            for b in range(r0, r1):  # z = 0 copies the state: one copy now, active blocks overwrite theirs
                _copy(h_next[b], h_t[b])
        zu = zs[_z_slot(t, zs)]
        for w in prange(workers):
            work = (sel_buf[w], offsets_buf[w], h_buf[w], c_buf[w], p_buf[w])
            nb = blocks_of(w, workers, g)
            for i in range(nb):
                _block_step(block_order(w, workers, nb, t, i), bs, x_t, h_t, h_next, zk, zu, weights, work, local)


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def blocks_of(w, workers, g):
    """How many of the g blocks worker w takes in :func:`block_forward`: blocks w, w + workers, ..."""
    return (g - w + workers - 1) // workers


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def block_order(w, workers, nb, t, i):
    """The i-th of worker w's ``nb`` blocks at step t: its blocks in order at even steps, reversed at
    odd ones (so that the weights it read last, still in its L2, are the first it reads next)."""
    return w + (i if t % 2 == 0 else nb - 1 - i) * workers


# ---------------------------------------------------------------------------------------------
# Python side
# ---------------------------------------------------------------------------------------------


class Prepared(NamedTuple):
    """Weights re-arranged once per parameter set for one path (build with :func:`prepare`)."""

    algorithm: str  # "dense", "unstructured" or "block"
    variant: int  # 0 full, 1 lowrank, 2 block
    bs: int  # units per block (1 unless block variant)
    tu: int  # units per tile (dense with B > 1, block)
    W_zxT: np.ndarray  # (D, H or g): input side of the z path, for all steps at once
    b_zx: np.ndarray  # (H or g,)
    U_z: np.ndarray  # (H or g, H): recurrent side of the z path (rows: B = 1)
    U_zT: np.ndarray  # (H, H or g): the same, transposed (B > 1)
    W_zT: np.ndarray  # lowrank: (g, H) = W_z.T; else (0, 0) or (0, g)
    b_z: np.ndarray  # lowrank: (H,); else (0,)
    mean: np.ndarray  # (K,) running mean
    inv_std: np.ndarray  # (K,) 1/sqrt(running_var + eps), ones when folded
    s: np.generic  # the shift, as a scalar of the params' dtype
    weights: dict  # the path's r/ĥ weights, see prepare()
    params: object

    @property
    def path(self) -> str:  # the former name of the field
        return self.algorithm


class Cache(NamedTuple):
    """What the inference paths' :func:`forward` keeps besides the outputs (nothing for a backward:
    training mode returns the reference's :class:`refrnn.cells.ccgru.CCGRUCache` instead)."""

    z: np.ndarray  # (T, B, H): the update gate the path used; where it is 0 the unit was not computed


def _largest_divisor(n: int, at_most: int) -> int:
    return max(d for d in range(1, min(n, at_most) + 1) if n % d == 0)


def _tile_rows(H: int, tu: int) -> np.ndarray:
    """Row order of [W_rh or U_rh] by tile: per tile of ``tu`` units, its r rows then its ĥ rows."""
    units = np.arange(H).reshape(H // tu, tu)
    return np.concatenate([units, units + H], axis=1).ravel()


def _resolve_path(params, algorithm: str) -> str:
    one_of("algorithm", algorithm, ALGORITHMS)
    if algorithm == "sparse":
        return "block" if params.variant == "block" else "unstructured"
    if algorithm == "block" and params.variant != "block":
        raise ValueError(
            f"algorithm: 'block' needs the block variant (z constant on blocks of units), got variant "
            f"{params.variant!r}; use algorithm='unstructured'"
        )
    return algorithm


def _check_inference(params) -> None:
    if params.mode == "train" and params.norm == "batch":
        raise ValueError(
            "params.mode: the fast paths are inference paths (running or folded statistics); got "
            "mode='train' with norm='batch', whose z depends on the whole batch. Use "
            "params.replace(mode='inference') or refrnn.cells.ccgru.fold_normalization(params)."
        )


def prepare(params, algorithm: str = "sparse", *, path: str | None = None) -> Prepared:
    """Re-arrange the weights once for ``algorithm`` (copies, about the size of ``W_rh`` and ``U_rh``).

    ``weights`` holds, for "dense": ``W_tT`` (D, 2H), ``b_t`` (2H,), ``U_tT`` (H, 2H) (transposed,
    columns in tile order), ``Ut`` (H/tu, H, 2tu) and ``Wt`` (H/tu, D, 2tu) (per tile); for
    "unstructured": ``P`` (H, 2D+2H) unit-major and ``b_rh``; for "block": ``Ut``, ``Wt`` and ``b_t``.
    Pass the result as ``prepared=`` to reuse it across calls with the same ``params``.
    """
    reference._check_params(params)
    _check_inference(params)
    path = _resolve_path(params, algorithm_keyword(algorithm, path=path))
    dt, H, D = params.dtype, params.hidden_size, params.input_size
    variant = params.variant

    def c(a):
        # Every array a kernel receives is a fresh, writable, C-ordered copy: numba compiles one
        # machine-code version per layout and writability, so this keeps it to one per dtype.
        return np.array(a, dtype=dt, order="C")

    if variant == "full":
        W_zx, b_zx, U_z = params.W_z, params.b_z, params.U_z
        W_zT, b_z = np.empty((0, 0), dt), np.empty(0, dt)
    else:
        W_zx, b_zx, U_z = params.W_z_lr, params.b_z_lr, params.U_z_lr
        if variant == "lowrank":
            W_zT, b_z = params.W_z.T, params.b_z
        else:
            W_zT, b_z = np.empty((0, params.g), dt), np.empty(0, dt)
    if params.norm == "folded":
        inv_std = np.ones_like(params.running_mean)
    else:  # the same expression, in the same dtype, as the reference's
        inv_std = 1.0 / np.sqrt(params.running_var + params.eps)
    bs = params.block_size if variant == "block" else 1
    # Tiles never straddle a block, so a block path's tile is all active or all inactive.
    tu = _largest_divisor(bs if variant == "block" else H, TILE)
    rows = _tile_rows(H, tu)
    W_t, U_t, b_t = params.W_rh[rows], params.U_rh[rows], params.b_rh[rows]
    per_tile = (H // tu, 2 * tu)
    if path == "dense":
        weights = dict(
            W_tT=c(W_t.T), b_t=c(b_t), U_tT=c(U_t.T),
            Ut=c(U_t.reshape(*per_tile, H).transpose(0, 2, 1)),
            Wt=c(W_t.reshape(*per_tile, D).transpose(0, 2, 1)),
        )
    elif path == "unstructured":
        W_r, W_h = params.W_rh[:H], params.W_rh[H:]
        U_r, U_h = params.U_rh[:H], params.U_rh[H:]
        weights = dict(P=c(np.concatenate([W_r, W_h, U_r, U_h], axis=1)), b_rh=c(params.b_rh))
    else:
        weights = dict(
            Ut=c(U_t.reshape(*per_tile, H).transpose(0, 2, 1)),
            Wt=c(W_t.reshape(*per_tile, D).transpose(0, 2, 1)),
            b_t=c(b_t),
        )
    return Prepared(
        path, _VARIANT_CODE[variant], bs, tu, c(W_zx.T), c(b_zx), c(U_z), c(U_z.T), c(W_zT), c(b_z),
        c(params.running_mean), c(inv_std), dt.type(params.s), weights, params,
    )


@renamed(h0="state0")
def forward(params, x, state0=None, *, algorithm: str = "sparse", prepared: Prepared | None = None):
    """``(y, h_T, cache)``. Inference mode (running or folded statistics): the inference path that
    also keeps the update gate, ``cache`` a :class:`Cache`. Training mode with batch statistics:
    :func:`forward_train`, ``cache`` the reference's :class:`refrnn.cells.ccgru.CCGRUCache` for
    :func:`backward` (training computes every unit: ``algorithm`` may only be its default or
    ``"dense"``, and ``prepared`` must be None).

    ``algorithm``: ``"sparse"`` (block path for the block variant, else unstructured), ``"dense"``,
    ``"unstructured"`` or ``"block"``. ``y`` and ``h_T`` equal :func:`refrnn.cells.ccgru.forward` of
    the same params in inference mode (``y`` is a fresh writable array here, not a read-only view).
    """
    reference._check_params(params)
    if reference._batch_statistics(params):
        if algorithm not in ("sparse", "dense") or prepared is not None:
            raise ValueError(
                f"algorithm: training mode with batch statistics runs the dense compiled forward "
                f"(every unit); got algorithm={algorithm!r}{' and a prepared layout' if prepared is not None else ''}"
            )
        return forward_train(params, x, state0)
    y, h_T, z = _run(params, x, state0, algorithm, prepared, keep_z=True)
    return y, h_T, Cache(z)


@renamed(h0="state0")
def forward_inference(params, x, state0=None, *, algorithm: str = "sparse", prepared: Prepared | None = None,
                      path: str | None = None, return_z: bool | None = None):
    """Inference forward: ``(y, h_T)``; :func:`forward` also returns the update gate.

    ``path=`` is the former name of ``algorithm=``. ``return_z=True``, deprecated, returns
    ``(y, h_T, z)`` like ``forward`` with ``cache.z`` unpacked.
    """
    algorithm = algorithm_keyword(algorithm, path=path)
    if return_z is not None:
        warnings.warn("return_z= is deprecated: forward() returns (y, h_T, cache) with cache.z", DeprecationWarning, stacklevel=2)
    y, h_T, z = _run(params, x, state0, algorithm, prepared, keep_z=bool(return_z))
    return (y, h_T, z) if return_z else (y, h_T)


def _z_gate(p: Prepared) -> ZGate:
    return ZGate(p.variant, p.bs, p.U_z, p.U_zT, p.W_zT, p.b_z, p.mean, p.inv_std, p.s)


def _run(params, x, h0, algorithm, prepared, keep_z):
    reference._check_params(params)
    _check_inference(params)
    x, h0 = reference.check_inputs(params, x, h0)
    prepared = _strategy.prepared_for(params, algorithm, prepared, prepare, Prepared, lambda a: _resolve_path(params, a))
    path = prepared.algorithm
    p, w = prepared, prepared.weights
    T, B, D = x.shape
    H, dt = params.hidden_size, params.dtype
    x = np.ascontiguousarray(x)
    # Both in one block kept for the next call (see refrnn.jit._buffers): 13 MB at T=50 B=64 H=1024,
    # whose fresh pages had cost every call about 2 ms of faults, a seventh of the block path's time.
    _, hs, zs = _buffers.carved("ccgru inference", dt, (T + 1, B, H), (T if keep_z else 1, B, H))
    hs[0] = h0
    if T * B == 0:  # no step to take: y (T, B, H) and z are empty, h_T = h0, as in the reference
        return hs[1:], hs[-1].copy(), zs if keep_z else None
    flat_x = x.reshape(T * B, D)
    # The dense and block paths parallelise over tiles or blocks themselves (prange), each thread
    # making small products: BLAS threads on top only oversubscribe the cores (see refrnn.jit._blas;
    # the dense path at B = 1, H = 1024 took 30 or 117 ms a run with BLAS on two threads, a steady 28 ms
    # on one). The unstructured path is sequential and never calls BLAS inside its loop.
    with _blas.threads(1) if path in ("block", "dense") else contextlib.nullcontext():
        pxz = (np.dot(flat_x, p.W_zxT) + p.b_zx).reshape(T, B, -1)
        gate = _z_gate(p)
        if path == "dense":
            if B > 1 and dt == np.float32 and (2 * p.tu) % _rowcast.LANES == 0:
                px = np.empty((0, B, 2 * H), dt)  # the kernel takes the input side per tile
            else:
                # Into a kept buffer: 26 MB at T=50 B=64 H=1024, whose fresh pages (twice, with a
                # temporary for the bias) had cost the dense path 5-10 ms a call.
                px = _buffers.empty("ccgru inputs", (T * B, 2 * H), dt)
                np.dot(flat_x, w["W_tT"], out=px)
                px += w["b_t"]
                px = px.reshape(T, B, 2 * H)
            dense_forward(gate, x, px, pxz, w["U_tT"], w["Ut"], w["Wt"], w["b_t"], hs, zs, get_num_threads())
        elif path == "unstructured":
            unstructured_forward(gate, x, pxz, w["P"], w["b_rh"], hs, zs)
        else:
            workers = min(get_num_threads(), params.g)
            block_forward(gate, x, pxz, (w["Ut"], w["Wt"], w["b_t"]), hs, zs, workers)
    return hs[1:], hs[-1].copy(), zs if keep_z else None


# ---------------------------------------------------------------------------------------------
# Training: the compiled twin of the reference's forward (its cache) and backward
# ---------------------------------------------------------------------------------------------


_readonly = _onepool.readonly
_product = _onepool.product


# Per-step products smaller than this (M*N*K of one step's recurrent product) run on one BLAS thread.
# Measured on 2 shared cores (load ~4), block z, T*B-row GEMMs on the default threads either way:
# T=100, B=32, H=256 (32 x 256 x 528 a step): forward kernel 1219 ms with two BLAS threads, 33 ms
# with one; T=50, B=64, H=1024 (64 x 1024 x 2112): 93 ms with two, 137 ms with one. Small products
# gain nothing from a second thread, and its hand-overs and spinning cost far more when the cores
# are shared.
ONE_THREAD_STEP_MNK = 1 << 24


def _step_threads(B: int, H: int, Kz: int):
    """BLAS threads for the kernels' per-step products: one when they are small (see above)."""
    return _blas.threads(1) if B * H * (2 * H + Kz) < ONE_THREAD_STEP_MNK else contextlib.nullcontext()


def _U_zh(params):
    return params.U_z if params.variant == "full" else params.U_z_lr


def _mode_code(params) -> int:
    if reference._batch_statistics(params):
        return _ccgru_train.BATCH
    return _ccgru_train.FOLDED if params.norm == "folded" else _ccgru_train.RUNNING


@renamed(h0="state0")
def forward_train(params, x, state0=None):
    """The compiled twin of :func:`refrnn.cells.ccgru.forward`, in any mode: ``(y, h_T, cache)`` with
    ``cache`` a :class:`refrnn.cells.ccgru.CCGRUCache` (the same arrays, within rounding; the running
    statistics in ``cache.running_*`` updated in training mode), for :func:`backward` or the
    reference's. ``y`` is a read-only view of the cache, as the reference's."""
    x, h0 = reference.check_inputs(params, x, state0)
    T, B, D = x.shape
    H, K, dt, variant = params.hidden_size, params.gate_width, params.dtype, params.variant
    mode = _mode_code(params)
    W_zx, b_zx = reference._z_input_side(params)
    U_zh = _U_zh(params)
    Kz = U_zh.shape[0]
    x2 = _readonly(x).reshape(T * B, D)
    px = finite_result("x", _product(x2, params.W_rh.T) + params.b_rh, "the input projection W_rh x + b_rh")
    pxz = finite_result("x", _product(x2, W_zx.T) + b_zx, "the update gate's input projection")
    U_allT = np.concatenate([params.U_rh, U_zh]).T  # (H, 2H + Kz), Fortran-ordered: BLAS reads it in place
    if variant == "lowrank":
        W_zT, b_z = np.array(params.W_z.T, order="C"), np.array(params.b_z)
    else:
        W_zT, b_z = np.empty((0, 0), dt), np.array(params.b_z) if variant == "full" else np.empty(0, dt)
    rm, rv = np.array(params.running_mean), np.array(params.running_var)
    if mode == _ccgru_train.RUNNING:  # the reference's expression, in the params' dtype
        inv_fixed = 1.0 / np.sqrt(params.running_var + params.eps)
    else:
        inv_fixed = np.ones(K, dt)
    m = params.momentum
    opts = (mode, dt.type(params.s), dt.type(params.eps), dt.type(m), dt.type(1.0 - m), dt.type(B / (B - 1) if B > 1 else 0.0))
    hs = np.empty((T + 1, B, H), dt)
    hs[0] = h0
    r, h_hat, Uh, z = (np.empty((T, B, H), dt) for _ in range(4))
    z_lr = np.empty((T, B, params.g) if variant != "full" else (0, B, 0), dt)
    n_hat = np.empty((T, B, K), dt)
    inv_std = np.empty((T, K), dt)
    scratch = (np.empty((B, 2 * H + Kz), dt), np.empty((B, Kz), dt), np.empty((B, K), dt))
    if T > 0:
        with _step_threads(B, H, Kz):
            bad = _ccgru_train.forward_kernel(
                _VARIANT_CODE[variant], params.block_size if variant == "block" else 1, opts,
                px.reshape(T, B, 2 * H), pxz.reshape(T, B, Kz), (U_allT, W_zT, b_z), (rm, rv, np.ascontiguousarray(inv_fixed)),
                hs, (r, h_hat, Uh, z, z_lr, n_hat, inv_std), scratch,
            )
        if bad >= 0:
            raise ValueError(f"x: the batch variance of the update gate's pre-activation overflowed at step {bad}; "
                             f"the input (or h0) is too large for {dt}")
    finite_result("h0", hs[T], "the recurrence (x, h0 -> h_T)")
    z_lr = None if variant == "full" else z_lr
    frozen(*[a for a in (hs, r, h_hat, Uh, z, z_lr, n_hat, inv_std, rm, rv) if a is not None])
    cache = reference.CCGRUCache(x, hs, r, h_hat, Uh, z, z_lr, n_hat, inv_std, rm, rv)
    return hs[1:], hs[T].copy(), cache


@renamed(dh_T="dstate_T")
def backward(params, cache, dy, dstate_T=None):
    """The compiled twin of :func:`refrnn.cells.ccgru.backward`: ``(grads, dx, dh0)``, ``grads`` in
    the class of ``params``. ``cache`` is the :class:`refrnn.cells.ccgru.CCGRUCache` of
    :func:`forward_train` (or of the reference's forward); ``dy`` (T, B, H) is dL/dy and
    ``dstate_T`` (B, H) dL/dh_T (None: zero). In training mode with batch statistics the gradient
    flows through each step's batch mean and variance.
    """
    reference._check_params(params)
    if isinstance(cache, Cache):
        raise TypeError("cache: expected the CCGRUCache of a training forward (refrnn.jit.ccgru.forward_train, or "
                        "forward in training mode); got the inference path's Cache, which keeps only z")
    sizes = {"D": params.input_size, "H": params.hidden_size, "K": params.gate_width, "g": getattr(params, "g", 0)}
    check_cache(cache, reference.CCGRUCache, params, sizes, present={"z_lr": params.variant != "full"})
    x, h, r, h_hat, Uh, z, z_lr, n_hat, inv_std = cache[:9]
    T, B, H = r.shape
    D, K, dt, variant = params.input_size, params.gate_width, params.dtype, params.variant
    dims = {"T": T, "B": B, "H": H}
    dy = float_array("dy", dy, ("T", "B", "H"), dims, dtype=dt)
    dh = np.zeros((B, H), dt) if dstate_T is None else float_array("dstate_T", dstate_T, ("B", "H"), dims, dtype=dt).copy()
    mode = _mode_code(params)
    W_zx, _ = reference._z_input_side(params)
    U_zh = _U_zh(params)
    Kz = U_zh.shape[0]
    U_all = np.concatenate([params.U_rh, U_zh])  # (2H + Kz, H): the step's one recurrent product
    W_z = np.array(params.W_z) if variant == "lowrank" else np.empty((0, 0), dt)
    dp = np.empty((T, B, 2 * H), dt)  # at [W_r x + U_r h + b_r, W_h x + r*(U_h h) + b_h]
    dqu = np.empty((T, B, 2 * H + Kz), dt)  # at [U_r h, U_h h] and at the x-fed z pre-activation (du)
    du = np.empty((T, B, Kz), dt)
    da = np.empty((T, B, K), dt)  # at a
    da_hat = np.empty((T, B, K), dt)  # at BN(a, s)
    C = _readonly
    z_lr_k = C(np.empty((0, B, 0), dt) if z_lr is None else z_lr)
    if T > 0:
        with _step_threads(B, H, Kz):
            _ccgru_train.backward_kernel(
                _VARIANT_CODE[variant], params.block_size if variant == "block" else 1, mode, C(dy), dh, U_all, W_z,
                (C(h), C(r), C(h_hat), C(Uh), C(z), z_lr_k, C(n_hat), C(inv_std)), (dp, dqu, du, da, da_hat),
                (np.empty((B, H), dt), np.empty((B, Kz), dt), np.empty((B, H), dt)),
            )
    TB = T * B
    flat_x = C(x).reshape(TB, D)
    h_prev = C(h)[:-1].reshape(TB, H)
    flat_dp, flat_du, flat_da = dp.reshape(TB, 2 * H), du.reshape(TB, Kz), da.reshape(TB, K)
    G_h = _product(dqu.reshape(TB, 2 * H + Kz).T, h_prev)  # [dU_r; dU_h; dU_zh]: one GEMM over all T*B rows
    frozen(G_h)
    grads = dict(W_rh=_product(flat_dp.T, flat_x), U_rh=G_h[: 2 * H], b_rh=flat_dp.sum(axis=0))
    if mode == _ccgru_train.BATCH:  # the output does not depend on the running statistics, nor on b_z
        d_rm, d_rv, d_bz = np.zeros(K, dt), np.zeros(K, dt), np.zeros(H, dt)
    else:
        d_bz = flat_da.sum(axis=0)
        d_rm = -d_bz
        if mode == _ccgru_train.FOLDED:
            d_rv = np.zeros(K, dt)
        else:  # d n_hat / d var = -n_hat * inv_std^2 / 2, as in the reference
            d_rv = -0.5 / (params.running_var + params.eps) * (da_hat * n_hat).reshape(TB, K).sum(axis=0)
    dW_zx = _product(flat_du.T, flat_x)
    if variant == "full":
        grads.update(W_z=dW_zx, U_z=G_h[2 * H :], b_z=d_bz)
    else:
        grads.update(W_z_lr=dW_zx, U_z_lr=G_h[2 * H :], b_z_lr=flat_du.sum(axis=0))
        if variant == "lowrank":
            grads.update(W_z=_product(flat_da.T, C(z_lr).reshape(TB, z_lr.shape[-1])), b_z=d_bz)
    grads.update(running_mean=d_rm, running_var=d_rv)
    dx = _product(flat_dp, C(params.W_rh)) + _product(flat_du, C(W_zx))
    return gradients(params, grads, dx.reshape(T, B, D), dh)
