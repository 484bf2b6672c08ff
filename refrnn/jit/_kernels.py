r"""The compiled code behind :mod:`refrnn.jit`: activations and the GRU/LSTM forward loops.

Everything numba compiles for the dense cells lives in this one module; the kernels of the other
cells call its activations and row loops. They are compiled with :func:`refrnn.jit._cache.njit`,
whose on-disk cache is stale as soon as this file (or any other jit file a kernel reaches) changes,
so a kernel elsewhere never keeps an edited helper's old machine code.

Activations. This llvmlite has no SVML, so ``math.exp``/``math.tanh`` inside a loop compile to
scalar libm calls: a fused GRU gate pass over 64x1024 units took 2.0 ms that way, against 0.56 ms
for NumPy's SIMD ufuncs. For float32 we therefore evaluate ``exp`` ourselves, in plain arithmetic
that LLVM vectorises (16 lanes with AVX-512)::

    exp(a) = 2^k * exp(s),   k = floor(a*log2(e) + 1/2),   s = a - k*ln2  in [-ln2/2, ln2/2]
    exp(s) ~ 1 + s + s^2 * P(s)           P: Cephes' degree-5 minimax polynomial (expf)
    2^k    = the float32 whose bits are (k + 127) << 23      (an integer shift, no libm call)

``ln2`` is split in two (Cody-Waite: 0.693359375, exactly representable with few bits, plus a
small correction) so ``k*ln2`` is subtracted without cancellation error. Measured over
[-87, 88]: relative error below 3.0e-7 (2.5 ulp), about 12x faster than ``math.exp`` in a
loop and 2.4x faster than ``np.exp``. ``sigmoid`` and ``tanh`` are built from it:

    sigmoid(a) = 1 / (1 + exp(-a))
    tanh(a)    = sign(a) * (1 - e) / (1 + e),   e = exp(-2|a|)  in (0, 1], so nothing overflows

Their absolute errors are 9e-8 at most, like NumPy's float32 ufuncs (a dense grid over [-100, 100]
in ``tests/test_jit_gru_lstm.py`` asserts 1.5e-7); what that means for whole sequences is argued
next to the float32 tolerance in that test file. With it, the whole GRU element-wise step over
64x1024 units (both gates, n, the update) takes 0.10 ms on one core here, against 0.26 ms for the
same step in NumPy ufuncs; the LSTM step 0.16 ms.

float64 keeps libm (``math.exp``, ``math.tanh``): the float64 fast paths must agree with the
reference to 1e-10, and float64 is the checking precision, not the fast one.

The kernels are compiled with ``fastmath={"contract"}`` only (fused multiply-add): the loops
vectorise without the other fast-math flags, and ``nnan``/``ninf`` would license LLVM to
assume away the ``exp`` overflow that ``sigmoid`` relies on for very negative arguments. What
does block vectorisation, and is avoided here, is (1) numba's default ``error_model="python"``
(a zero-division check, i.e. a branch to an exception, in every ``/``), and (2) loops that touch
more arrays than LLVM will check for overlap at run time: see "Row loops" below.

Kernel conventions (shared by every kernel below):

* ``hs`` (T+1, B, H) holds h_0..h_T; the caller fills ``hs[0]``. ``y`` is the view ``hs[1:]``.
* Gate outputs arrive as one tuple, ``gates`` = ``(r, z, n, g)`` or ``(i, f, g, o, tc)``, of (T, B, H)
  arrays in training mode, filled for either backward (the reference's or
  :mod:`refrnn.jit._backward`'s); in inference mode they are one-step (1, B, H) scratch buffers, so
  the same loop runs with nothing kept: step t writes index ``min(t, len - 1)``. The step helpers
  take the tuple of that step's (B, H) slices.
* The LSTM cell history ``cs`` is (T+1, B, H) in training mode and a two-slot ring (2, B, H) in
  inference mode: step t reads slot ``t % len`` and writes ``(t + 1) % len``.
* Biases are folded once, in Python, into one vector ``bias``; the input products ``ax`` come without
  bias, so no pass over the (T, B, G*H) array is spent adding it.
* Every product goes through ``np.dot`` here, i.e. one BLAS library and one thread pool.
* Weights arrive as transposed views (``W_h.T`` of a C-ordered ``W_h``, hence Fortran-ordered):
  BLAS reads them in place, nothing is copied per call, and every call has the same array types
  (one compilation per dtype).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic, overload

from . import _rowcast
from ._cache import njit

FASTMATH = {"contract"}
# error_model="numpy": a float division by zero gives inf (IEEE) instead of raising; the check that
# raising needs is a branch in every division, and a loop with a branch to an exception is not
# vectorised (sigmoid's 1 / (1 + e) kept the whole gate loop scalar).
JIT = dict(cache=True, fastmath=FASTMATH, error_model="numpy")

# ---------------------------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------------------------

_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693359375)  # ln 2 = _LN2_HI + _LN2_LO (Cody-Waite split)
_LN2_LO = np.float32(-2.12194440e-4)
_P0 = np.float32(1.9875691500e-4)  # Cephes expf: exp(s) ~ 1 + s + s^2 (((((P0 s + P1) s + P2) s + P3) s + P4) s + P5)
_P1 = np.float32(1.3981999507e-3)
_P2 = np.float32(8.3334519073e-3)
_P3 = np.float32(4.1665795894e-2)
_P4 = np.float32(1.6666665459e-1)
_P5 = np.float32(5.0000001201e-1)
# Clamp so that k + 127 stays in the normal-exponent range [1, 254]: exp(88) = 1.65e38 < 3.4e38.
# Clamping only moves results that are within 5e-39 of 0 (sigmoid) or already saturated.
_HI = np.float32(88.0)
_LO = np.float32(-87.0)
_ZERO = np.float32(0.0)
_HALF = np.float32(0.5)
_ONE = np.float32(1.0)
_MINUS_TWO = np.float32(-2.0)


@intrinsic
def _float32_from_bits(typingctx, bits):
    """Reinterpret the low 32 bits of an integer as a float32 (no conversion)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        (value,) = args
        if value.type.width != 32:
            value = builder.trunc(value, ir.IntType(32))
        return builder.bitcast(value, ir.FloatType())

    return types.float32(bits), codegen


@njit(**JIT)
def exp32(a):
    """float32 exp by range reduction and a polynomial; vectorisable (see the module docstring)."""
    a = min(max(a, _LO), _HI)
    k = np.floor(a * _LOG2E + _HALF)
    s = a - k * _LN2_HI - k * _LN2_LO
    p = ((((_P0 * s + _P1) * s + _P2) * s + _P3) * s + _P4) * s + _P5
    return (p * (s * s) + s + _ONE) * _float32_from_bits((np.int32(k) + 127) << 23)


def sigmoid(a):
    """1 / (1 + exp(-a)) inside njit code: polynomial exp for float32, libm for float64."""
    raise NotImplementedError("refrnn.jit._kernels.sigmoid is callable from numba-compiled code only")


def tanh(a):
    """tanh inside njit code: built from the polynomial exp for float32, libm for float64."""
    raise NotImplementedError("refrnn.jit._kernels.tanh is callable from numba-compiled code only")


def _is_float32(a) -> bool:
    return isinstance(a, types.Float) and a.bitwidth == 32


# The overloads are not cached on disk: numba would stamp them with this file alone, while this file
# reaches another (refrnn.jit._rowcast). They compile in milliseconds, and every cached kernel holds
# their machine code already.
_OVERLOAD_JIT = {k: v for k, v in JIT.items() if k != "cache"}


@overload(sigmoid, jit_options=_OVERLOAD_JIT)
def _sigmoid_impl(a):
    if _is_float32(a):
        return lambda a: _ONE / (_ONE + exp32(-a))
    if isinstance(a, types.Float):
        # The reference's formula; exp(-a) overflowing to inf gives the correct limit 1/inf = 0.
        return lambda a: 1.0 / (1.0 + math.exp(-a))
    return None


@overload(tanh, jit_options=_OVERLOAD_JIT)
def _tanh_impl(a):
    if _is_float32(a):

        def tanh32(a):
            e = exp32(_MINUS_TWO * abs(a))
            t = (_ONE - e) / (_ONE + e)
            return t if a >= _ZERO else -t

        return tanh32
    if isinstance(a, types.Float):
        return lambda a: math.tanh(a)
    return None


@njit(**JIT)
def activate(kind, a, out):
    """Element-wise ``out = sigmoid(a)`` (kind 0) or ``tanh(a)`` (kind 1), for tests and benchmarks."""
    flat_a = a.ravel()
    flat_out = out.ravel()
    if kind == 0:
        for i in range(flat_a.size):
            flat_out[i] = sigmoid(flat_a[i])
    else:
        for i in range(flat_a.size):
            flat_out[i] = tanh(flat_a[i])


# ---------------------------------------------------------------------------------------------
# Row loops. Each writes one array from at most four others, all 1-D and contiguous: LLVM
# vectorises a loop only when it can rule out overlap between what it writes and what it reads,
# by run-time address checks whose number it caps (8 by default). One loop over all the gates of a
# unit reads and writes ~10 arrays and stays scalar (measured: no packed instruction at all); split
# like this, every loop is SIMD, and the rows (H floats each) stay in L1 between the loops.
# ---------------------------------------------------------------------------------------------


@njit(**JIT)
def _add_into(out, a):
    """out += a[:len(out)]"""
    for j in range(out.shape[0]):
        out[j] += a[j]


@njit(**JIT)
def _add_product_into(out, a, b):
    """out += a * b (elementwise, over len(out); ``out`` may be a float64 accumulator)"""
    for j in range(out.shape[0]):
        out[j] += a[j] * b[j]


@njit(**JIT)
def _sigmoid_of(out, a, bias):
    """out = sigmoid(a + bias)"""
    for j in range(out.shape[0]):
        out[j] = sigmoid(a[j] + bias[j])


@njit(**JIT)
def _sigmoid_peephole(out, a, bias, w, c):
    """out = sigmoid(a + bias + w * c)"""
    for j in range(out.shape[0]):
        out[j] = sigmoid(a[j] + bias[j] + w[j] * c[j])


@njit(**JIT)
def _tanh_of(out, a, bias):
    """out = tanh(a + bias)"""
    for j in range(out.shape[0]):
        out[j] = tanh(a[j] + bias[j])


@njit(**JIT)
def _tanh_of_sum(out, a, bias, g):
    """out = tanh(a + bias + g)"""
    for j in range(out.shape[0]):
        out[j] = tanh(a[j] + bias[j] + g[j])


@njit(**JIT)
def _tanh_reset_after(out, a, bias, r, g):
    """out = tanh(a + bias + r * g)"""
    for j in range(out.shape[0]):
        out[j] = tanh(a[j] + bias[j] + r[j] * g[j])


@njit(**JIT)
def _tanh(out, a):
    for j in range(out.shape[0]):
        out[j] = tanh(a[j])


@njit(**JIT)
def _copy(out, a):
    """out = a, as a plain loop: numba's ``out[:] = a`` first checks the two for overlap and may copy
    through a temporary (measured 3x slower for gathering rows)."""
    for j in range(out.shape[0]):
        out[j] = a[j]


@njit(**JIT)
def _sum(out, a, bias):
    """out = a + bias"""
    for j in range(out.shape[0]):
        out[j] = a[j] + bias[j]


@njit(**JIT)
def _product(out, a, b):
    """out = a * b"""
    for j in range(out.shape[0]):
        out[j] = a[j] * b[j]


@njit(**JIT)
def _interpolate(out, n, z, h):
    """out = n + z * (h - n), i.e. (1 - z) * n + z * h: the GRU update, one product fewer."""
    for j in range(out.shape[0]):
        out[j] = n[j] + z[j] * (h[j] - n[j])


@njit(**JIT)
def _cell(out, f, c_prev, i, g):
    """out = f * c_prev + i * g"""
    for j in range(out.shape[0]):
        out[j] = f[j] * c_prev[j] + i[j] * g[j]


# The two forms the gradient at a sigmoid gate's pre-activation takes, in the backward passes of the
# GRU, the LSTM and the SRU: upstream gradient times what the gate multiplies, times s' = s (1 - s).


@njit(**JIT)
def _sigmoid_grad_of_product(out, a, b, s):
    """out = a * b * s * (1 - s)"""
    for j in range(out.shape[0]):
        out[j] = a[j] * b[j] * s[j] * (1.0 - s[j])


@njit(**JIT)
def _sigmoid_grad_of_difference(out, a, b, c, s):
    """out = a * (b - c) * s * (1 - s): the gate blends b and c"""
    for j in range(out.shape[0]):
        out[j] = a[j] * (b[j] - c[j]) * s[j] * (1.0 - s[j])


# ---------------------------------------------------------------------------------------------
# GRU. Folded bias (4H,) = [b_xr + b_hr, b_xz + b_hz, b_xn, b_hn].
# ---------------------------------------------------------------------------------------------


@njit(**JIT)
def _recurrent_product(h, W_T, out):
    """out = h @ W_T; with one row, a matrix-vector product (GEMV), which BLAS does faster than a
    one-row GEMM."""
    if h.shape[0] == 1:
        np.dot(h[0], W_T, out[0])
    else:
        np.dot(h, W_T, out)


# A step's product has few rows (the batch) against a wide weight. For 2 <= B <= 32, SciPy's OpenBLAS
# computes ``h @ W.T`` 1.3-1.8x faster the other way round, as ``W @ h.T`` into an (N, B) buffer,
# even counting the transpose back (2 cores, native kernel, medians of 9 interleaved rounds, B=32:
# 256->1024 80 -> 57 us, 1024->256 104 -> 62 us, 1024->4096 1.69 -> 1.24 ms). At B = 48 to 128 the
# product alone is still 1.05-1.3x faster that way at depths 1024-4096 (1.0 at depth 256), but the
# whole paper-size LSTM/GRU forward and training step at B = 64 were not faster with it, in processes
# alternating with the direct order (LSTM step 331-379 ms direct, 349-364 transposed; forward 101-130
# against 108-114). So larger batches keep the direct product, and one row keeps its GEMV.
TRANSPOSED_MAX_ROWS = 32


@njit(**JIT)
def takes_transposed(B):
    """Whether a step's product of ``B`` rows runs transposed (see above): the one rule, read by the
    kernels and by :func:`transposed_weight`."""
    return 1 < B <= TRANSPOSED_MAX_ROWS


@njit(**JIT)
def _transpose_into(out, a):
    """out (B, N) = a (N, B).T, a block of 32 rows of ``a`` at a time: each row of ``out`` then gets
    32 adjacent floats (two cache lines) per visit, gathered from 32 rows that stay in L1, and LLVM
    vectorises the gather. 3-4x faster than the 8-row blocks this replaced, at every shape measured
    (N = 256-4096, B = 2-128): 4096x64 in 54 us instead of 175 us, about 40 GB/s."""
    _transpose_block(out, a, 0, a.shape[1], 0, a.shape[0])


@njit(**JIT)
def _transpose_block(out, a, r0, r1, c0, c1):
    """out[r0:r1, c0:c1] = a[c0:c1, r0:r1].T, ``a`` (N, B), ``out`` (B, N): :func:`_transpose_into`
    on a share of it (a task's, when the tasks split both the rows and the columns). Each row of
    ``out`` is indexed whole: a slice of it per block of 32 made a whole transpose 25% slower."""
    n32 = c1 - (c1 - c0) % 32
    for j in range(c0, n32, 32):
        block = a[j : j + 32]
        for b in range(r0, r1):
            o = out[b]
            for r in range(32):
                o[j + r] = block[r, b]
    for j in range(n32, c1):
        a_j = a[j]
        for b in range(r0, r1):
            out[b, j] = a_j[b]


@njit(**JIT)
def _step_product(h, W, W_T, work, out, rowcast):
    """out (B, N) = h (B, K) @ W_T, the product of one step; ``W`` (N, K) C-ordered and ``W_T`` (K, N)
    hold the same weight (one usually a view of the other), ``work`` is an (N, B) buffer, or (N + K, B)
    with ``rowcast``.

    ``rowcast`` (the caller checked :func:`refrnn.jit._rowcast.applies`): ``h.T`` into the last K rows
    of ``work``, ``W @ h.T`` by :func:`refrnn.jit._rowcast.product` into its first N, transposed into
    ``out``. Otherwise, where :func:`takes_transposed` says so, ``W @ h.T`` by BLAS into ``work``,
    transposed into ``out`` (see above why); else exactly :func:`_recurrent_product`."""
    N = W.shape[0]
    if rowcast:
        hT = work[N : N + h.shape[1]]
        _transpose_into(hT, h)
        _rowcast.into(W, hT, work[:N])
        _transpose_into(out, work[:N])
    elif takes_transposed(h.shape[0]):
        np.dot(W, h.T, work[:N])
        _transpose_into(out, work[:N])
    else:
        _recurrent_product(h, W_T, out)


@njit(**JIT)
def step_work(N, K, B, dtype):
    """The ``work`` buffer of :func:`_step_product` for a product (B, K) -> (B, N), either order."""
    return np.empty((N + K, B), dtype)


def transposed_weight(W, rows, rowcast=False):
    """The ``W`` argument :func:`_step_product` reads for a product ``h @ W`` of ``rows`` rows, ``W``
    stored (K, N) as the backward's weights are: ``W.T`` copied C-ordered where the transposed order
    or the compiled kernel (``rowcast``) is taken, else an empty (0, 0) array of the same type
    (nothing to copy)."""
    if rowcast or takes_transposed(rows):
        return np.ascontiguousarray(W.T)
    return np.empty((0, 0), W.dtype)


@njit(**JIT)
def input_products(x2, W_xT):
    """x2 (T*B, D) @ W_xT (D, G*H): every step's input products in one GEMM. Done here rather than
    with NumPy's ``@`` so that the whole forward uses one BLAS (SciPy's, which numba calls): NumPy's
    OpenBLAS is a second library with its own thread pool, whose threads keep spinning for a while
    after a call and would compete with the recurrent products on a 2-core machine."""
    return np.dot(x2, W_xT)


def forward_inputs(x2, W_xT, rowcast):
    """Every step's input products ``x2 (T*B, D) @ W_xT (D, G*H)`` for a forward: with ``rowcast`` by
    :func:`refrnn.jit._rowcast.matmul` where G*H is a multiple of its 16 lanes (so that the step
    loop after it stays on numba's threads), else by :func:`input_products` (BLAS)."""
    if rowcast and W_xT.shape[1] % _rowcast.LANES == 0:
        return _rowcast.matmul(x2, W_xT)
    return input_products(x2, W_xT)


@njit(**JIT)
def _concatenate_rows(out, x, h):
    """out[b] = [x[b], h[b]] for every row: the operand [x_t, h_{t-1}] of the fused product. (An
    explicit loop: NumPy-style 2-D slice assignment costs seconds of compilation per signature.)"""
    D = x.shape[1]
    for b in range(out.shape[0]):
        o, x_b, h_b = out[b], x[b], h[b]
        for j in range(D):
            o[j] = x_b[j]
        for j in range(h_b.shape[0]):
            o[D + j] = h_b[j]


@njit(**JIT)
def _gru_after_units(a, xn, xn_from, bias, h, h_next, r, z, n, g, lo, hi):
    """The element-wise step of reset="after" over units ``[lo, hi)`` of every row b: a[b] (3H) =
    [a_r, a_z, W_hn h] without bias, xn[b, xn_from:] (H) = W_xn x. Writes r, z, n, g and h_next.
    Units are independent of each other, so any split of them gives the same bits.

    Rows are passed whole and sliced here, so every loop sees contiguous 1-D arrays (a strided 2-D
    slice made LLVM gather).
    """
    H = h.shape[1]
    b_r, b_z, b_n, b_g = bias[lo:hi], bias[H + lo : H + hi], bias[2 * H + lo : 2 * H + hi], bias[3 * H + lo : 3 * H + hi]
    for b in range(h.shape[0]):
        a_b, xn_b = a[b], xn[b][xn_from:]
        r_b, z_b, n_b, g_b = r[b][lo:hi], z[b][lo:hi], n[b][lo:hi], g[b][lo:hi]
        _sigmoid_of(r_b, a_b[lo:hi], b_r)
        _sigmoid_of(z_b, a_b[H + lo : H + hi], b_z)
        _sum(g_b, a_b[2 * H + lo : 2 * H + hi], b_g)
        _tanh_reset_after(n_b, xn_b[lo:hi], b_n, r_b, g_b)
        _interpolate(h_next[b][lo:hi], n_b, z_b, h[b][lo:hi])


@njit(**JIT)
def _gru_after_rows(a, xn, xn_from, bias, h, h_next, r, z, n, g):
    """:func:`_gru_after_units` over every unit, on this thread."""
    _gru_after_units(a, xn, xn_from, bias, h, h_next, r, z, n, g, 0, h.shape[1])


@njit(**JIT)
def _gru_before_rows_rz(a, bias, h, r, z, rh):
    """First pass of reset="before": a[b] (2H) = [a_r, a_z] without bias; writes r, z and r * h."""
    H = h.shape[1]
    for b in range(h.shape[0]):
        a_b = a[b]
        _sigmoid_of(r[b], a_b[:H], bias[:H])
        _sigmoid_of(z[b], a_b[H : 2 * H], bias[H : 2 * H])
        _product(rh[b], r[b], h[b])


@njit(**JIT)
def _gru_before_rows_n(an, xn, xn_from, bias, h, h_next, z, n, g):
    """Second pass of reset="before": an[b] = W_hn (r * h), xn[b, xn_from:] = W_xn x; writes g, n, h_next."""
    H = h.shape[1]
    for b in range(h.shape[0]):
        _sum(g[b], an[b], bias[3 * H :])
        _tanh_of_sum(n[b], xn[b][xn_from:], bias[2 * H : 3 * H], g[b])
        _interpolate(h_next[b], n[b], z[b], h[b])


@njit(**JIT)
def _gru_gates(before, a, xn, xn_from, W_hnT, bias, h, h_next, gates, work, rowcast):
    """The rest of a GRU step once its first product is in, for every row: ``a`` (B, G) holds the
    pre-activations without bias, [a_r, a_z] whole and, with reset="after" (G = 3H), W_hn h;
    ``xn[b, xn_from:]`` (H) = W_xn x. Writes ``gates`` = (r, z, n, g) of this step, each (B, H),
    and ``h_next``.

    reset="before" (``before`` true) makes the step's second product here, ``(r*h) @ W_hn.T``,
    through ``work`` = (rh, an, its :func:`step_work`). Callers pass ``xn_from`` as a run-time integer (``D - D``
    rather than the literal 0): a literal argument makes numba compile a second specialisation.
    """
    r, z, n, g = gates
    if before:
        rh, an, an_work = work
        _gru_before_rows_rz(a, bias, h, r, z, rh)
        _step_product(rh, W_hnT.T, W_hnT, an_work, an, rowcast)
        _gru_before_rows_n(an, xn, xn_from, bias, h, h_next, z, n, g)
    else:
        _gru_after_rows(a, xn, xn_from, bias, h, h_next, r, z, n, g)


@njit(**JIT)
def gru_batched(before, ax, W_hT, W_hnT, bias, hs, gates, rowcast):
    """Input products precomputed: ax (T, B, 3H) = x @ W_x.T. ``gates`` = (r, z, n, g).

    reset="after": W_hT (H, 3H) = W_h.T, one product per step, ``h_{t-1} @ W_h.T``, then one
    element-wise pass over the B*H units. reset="before" (``before``): W_hT (H, 2H) = [W_hr; W_hz].T
    and W_hnT (H, H) = W_hn.T; two products per step, because n needs ``r * h_{t-1}`` before its
    product can start: ``h @ [W_hr; W_hz].T``, a pass computing r, z and r*h, then
    ``(r*h) @ W_hn.T`` and a pass for n, h. ``rowcast``: every product by :mod:`refrnn.jit._rowcast`.
    """
    T, B, H = ax.shape[0], ax.shape[1], hs.shape[2]
    a = np.empty((B, W_hT.shape[1]), hs.dtype)
    a_T = step_work(W_hT.shape[1], H, B, hs.dtype)
    work = (np.empty((B, H), hs.dtype), np.empty((B, H), hs.dtype), step_work(H, H, B, hs.dtype))
    r, z, n, g = gates
    last = r.shape[0] - 1
    for t in range(T):
        _step_product(hs[t], W_hT.T, W_hT, a_T, a, rowcast)
        for b in range(B):  # r and z add their input and recurrent parts; n keeps them apart
            _add_into(a[b][: 2 * H], ax[t, b])
        k = min(t, last)
        _gru_gates(before, a, ax[t], 2 * H, W_hnT, bias, hs[t], hs[t + 1], (r[k], z[k], n[k], g[k]), work, rowcast)


@njit(**JIT)
def gru_fused(before, x, F_T, W_xnT, W_hnT, bias, hs, gates, rowcast):
    """One product per step over the concatenation ``[x_t, h_{t-1}]`` (B, D+H). ``gates`` = (r, z, n, g).

    reset="after": F_T (D+H, 3H) = [[W_xr, W_xz, 0], [W_hr, W_hz, W_hn]] transposed blockwise: its
    columns give a_r and a_z whole and W_hn h, which the reset gate multiplies on its own.
    reset="before" (``before``): F_T (D+H, 2H) = [[W_xr, W_xz], [W_hr, W_hz]] transposed
    blockwise, and ``(r*h) @ W_hn.T`` (W_hnT (H, H)) separately (the cache needs
    g = W_hn (r*h) + b_hn on its own). W_xn x_t, the one part that cannot join (it would need an
    H x H block of zeros), is a small second product with W_xnT (D, H). ``rowcast``: every product
    by :mod:`refrnn.jit._rowcast`.
    """
    T, B, D = x.shape
    H = hs.shape[2]
    xh = np.empty((B, D + H), hs.dtype)
    a = np.empty((B, F_T.shape[1]), hs.dtype)
    a_T = step_work(F_T.shape[1], D + H, B, hs.dtype)
    axn, axn_work = np.empty((B, H), hs.dtype), step_work(H, D, B, hs.dtype)
    work = (np.empty((B, H), hs.dtype), np.empty((B, H), hs.dtype), step_work(H, H, B, hs.dtype))
    r, z, n, g = gates
    last = r.shape[0] - 1
    for t in range(T):
        _concatenate_rows(xh, x[t], hs[t])
        _step_product(xh, F_T.T, F_T, a_T, a, rowcast)
        _step_product(x[t], W_xnT.T, W_xnT, axn_work, axn, rowcast)
        k = min(t, last)
        _gru_gates(before, a, axn, D - D, W_hnT, bias, hs[t], hs[t + 1], (r[k], z[k], n[k], g[k]), work, rowcast)


@njit(parallel=True, **JIT)
def _gru_epilogue(work, xnT, a, ax, xn, bias, h, h_next, gates, hT):
    """A reset="after" step's product ``work`` (3H, B) made into h_t, in the tasks of
    :func:`pass_tasks` over numba's threads (the products run there too): each task transposes its
    share of the three bands of ``work`` into ``a`` (B, 3H), adds the input products ``ax`` (B, 3H)
    to the r and z parts and takes ``W_xn x`` from them ("batched"; ``xnT`` then a (0, B) array), or
    transposes its share of ``xnT`` (H, B) = W_xn x_t.T into ``xn`` (B, H) ("fused"; ``ax`` then a
    (0, 3H) array), runs :func:`_gru_after_units`, and writes its share of h_t.T into ``hT`` (H, B),
    the next product's operand. ``gates`` = (r, z, n, g) of this step."""
    B, H = h.shape
    r, z, n, g = gates
    batched = ax.shape[0] > 0
    rows, units = pass_tasks(B, H)
    for task in prange(rows * units):
        b0, b1, lo, hi = task_span(task, B, H, rows, units)
        for q in range(3):
            _transpose_block(a, work, b0, b1, q * H + lo, q * H + hi)
        if batched:
            for b in range(b0, b1):
                a_b, ax_b = a[b], ax[b]
                _add_into(a_b[lo:hi], ax_b[lo:hi])
                _add_into(a_b[H + lo : H + hi], ax_b[H + lo : H + hi])
            xs, xn_from = ax[b0:b1], 2 * H
        else:
            _transpose_block(xn, xnT, b0, b1, lo, hi)
            xs, xn_from = xn[b0:b1], H - H
        _gru_after_units(a[b0:b1], xs, xn_from, bias, h[b0:b1], h_next[b0:b1],
                         r[b0:b1], z[b0:b1], n[b0:b1], g[b0:b1], lo, hi)
        _transpose_block(hT, h_next, lo, hi, b0, b1)


@njit(**JIT)
def gru_kernel(x, ax, W_xf, W_xn, W_h, bias, hs, gates):
    """The reset="after" step loop of either order with every product on the compiled kernel of
    :mod:`refrnn.jit._rowcast`, float32; ``W_h`` (3H, H) C-ordered, read where it is.

    "fused": ``x`` (T, B, D), ``ax`` a (T, 0, 3H) array, ``W_xf`` (3H, D) = [W_xr; W_xz; 0] and
    ``W_xn`` (H, D). Each step's product is ``[W_xf | W_h] @ [x_t | h_{t-1}].T`` by
    :func:`refrnn.jit._rowcast.product_pair` (the concatenated weight never built; the n rows of
    ``W_xf`` are zero because the reset gate multiplies W_hn h alone), then ``W_xn @ x_t.T``, a
    small second product. "batched": ``ax`` (T, B, 3H) the input products, ``x`` a (T, B, 0)
    array, ``W_xf`` a (3H, 0) one and ``W_xn`` an (H, 0) one.

    The operand ``[x_t | h_{t-1}].T`` stays in the last D + H rows of one buffer from step to step,
    :func:`_gru_epilogue` writing h_t.T there task by task (see :func:`lstm_kernel`)."""
    T, B, D = x.shape
    H = hs.shape[2]
    N = 3 * H
    work = np.empty((N + D + H, B), hs.dtype)
    xnT = np.empty((H if D > 0 else 0, B), hs.dtype)
    a, xn = np.empty((B, N), hs.dtype), np.empty((B, H), hs.dtype)
    r, z, n, g = gates
    _transpose_into(work[N + D :], hs[0])
    for t in range(T):
        if D > 0:
            _transpose_into(work[N : N + D], x[t])
            _rowcast.into(W_xn, work[N : N + D], xnT)
        _rowcast.product_pair(W_xf, work[N : N + D], W_h, work[N + D :], work[:N])
        k = min(t, r.shape[0] - 1)
        _gru_epilogue(work[:N], xnT, a, ax[t], xn, bias, hs[t], hs[t + 1], (r[k], z[k], n[k], g[k]), work[N + D :])


# ---------------------------------------------------------------------------------------------
# LSTM. Folded bias (4H,) = b_x + b_h; gates i, f, g, o. Peepholes = (w_ic, w_fc, w_oc), each (H,),
# zero vectors when the cell has none (adding 0.0 changes no bit). The projection W_hr is (P, H);
# without one it is a (0, H) array, and m = o * tanh(c) is written straight into h.
# ---------------------------------------------------------------------------------------------


@njit(**JIT)
def _lstm_units(a, ax, bias, peepholes, c_prev, c_next, gates, m, lo, hi):
    """The element-wise pass of one step over units ``[lo, hi)`` of every row: ``a`` (B, 4H) holds
    the step's pre-activations without bias, less the input products ``ax`` (B, 4H) when those come
    apart (added here, while the row is in L1; a (0, 4H) array when ``a`` has them already).
    ``peepholes`` = (w_ic, w_fc, w_oc); ``gates`` = (i, f, g, o, tc) of this step, each (B, H);
    writes them, ``c_next`` and ``m`` = o * tanh(c). Units are independent of each other, so any
    split of them gives the same bits."""
    i, f, g, o, tc = gates
    w_ic, w_fc, w_oc = peepholes[0][lo:hi], peepholes[1][lo:hi], peepholes[2][lo:hi]
    add_input = ax.shape[0] > 0
    H = c_prev.shape[1]
    b_i, b_f, b_g, b_o = bias[lo:hi], bias[H + lo : H + hi], bias[2 * H + lo : 2 * H + hi], bias[3 * H + lo : 3 * H + hi]
    for b in range(c_prev.shape[0]):
        a_b, cp, cn = a[b], c_prev[b][lo:hi], c_next[b][lo:hi]
        a_i, a_f, a_g, a_o = a_b[lo:hi], a_b[H + lo : H + hi], a_b[2 * H + lo : 2 * H + hi], a_b[3 * H + lo : 3 * H + hi]
        if add_input:  # every LSTM gate adds its input and recurrent parts
            ax_b = ax[b]
            _add_into(a_i, ax_b[lo:hi])
            _add_into(a_f, ax_b[H + lo : H + hi])
            _add_into(a_g, ax_b[2 * H + lo : 2 * H + hi])
            _add_into(a_o, ax_b[3 * H + lo : 3 * H + hi])
        i_b, f_b, g_b, o_b, tc_b = i[b][lo:hi], f[b][lo:hi], g[b][lo:hi], o[b][lo:hi], tc[b][lo:hi]
        _sigmoid_peephole(i_b, a_i, b_i, w_ic, cp)
        _sigmoid_peephole(f_b, a_f, b_f, w_fc, cp)
        _tanh_of(g_b, a_g, b_g)
        _cell(cn, f_b, cp, i_b, g_b)
        _sigmoid_peephole(o_b, a_o, b_o, w_oc, cn)  # the new c: see the reference
        _tanh(tc_b, cn)
        _product(m[b][lo:hi], o_b, tc_b)


@njit(**JIT)
def _lstm_rows(a, ax, bias, peepholes, c_prev, c_next, gates, m):
    """:func:`_lstm_units` over every unit, on this thread."""
    _lstm_units(a, ax, bias, peepholes, c_prev, c_next, gates, m, 0, c_prev.shape[1])


# Units per task of an inference step's pass in the product's (4H, B) layout
# (:func:`_lstm_epilogue_transposed`), whose loops run along the batch: a multiple of 16 lanes, and
# few enough tasks that one step's parallel region costs little next to the pass (H = 1024: 16).
UNITS = 64

# The tasks of a training step's element-wise pass over numba's threads (the step loops on the
# compiled kernel, forward and backward): groups of ROW_GROUP rows (the batch) times groups of at
# least MIN_UNITS units, about MIN_TASKS of them. Every loop of a pass runs along the units of one
# row, and its cost is mostly the loop's own entry (the vectorised body's checks and remainder)
# when it is short: measured over 100 steps of the LSTM at B=32 H=256 (2 cores, float32), the
# forward's pass (transposes included) 5.2 ms in tasks of 64 units on two threads, 3.7 on one thread
# over whole rows, 2.4 in two groups of 16 whole rows; the backward's 3.2, 2.1 and 1.5; at B=64
# H=1024, 22.0 / 25.2 / 11.5 ms and 17.8 / 12.2 / 6.0 over 50 steps. 16 float32 are 64 bytes, a
# cache line: tasks writing their columns of h_t.T (H, B) write whole lines where its rows start on one.
ROW_GROUP = 16
MIN_UNITS = 256
MIN_TASKS = 4


@njit(**JIT)
def pass_tasks(B, H):
    """``(row groups, unit groups)`` of a step's pass over B rows of H units (see ROW_GROUP)."""
    rows = max(1, B // ROW_GROUP)
    return rows, max(1, min(H // MIN_UNITS, -(-MIN_TASKS // rows)))


@njit(**JIT)
def task_span(task, B, H, rows, units):
    """``(b0, b1, lo, hi)``: the rows and units of task ``task`` of :func:`pass_tasks`' ``rows x
    units`` tasks; the unit groups' edges on multiples of 16."""
    r, u = task // units, task % units
    lo = 0 if u == 0 else (u * H // units) // 16 * 16
    hi = H if u == units - 1 else ((u + 1) * H // units) // 16 * 16
    return r * B // rows, (r + 1) * B // rows, lo, hi


@njit(**JIT)
def _lstm_task(a, ax, bias, peepholes, c_prev, c_next, gates, m, b0, b1, lo, hi):
    """:func:`_lstm_units` over rows ``[b0, b1)`` and units ``[lo, hi)``."""
    i, f, g, o, tc = gates
    _lstm_units(a[b0:b1], ax[b0:b1], bias, peepholes, c_prev[b0:b1], c_next[b0:b1],
                (i[b0:b1], f[b0:b1], g[b0:b1], o[b0:b1], tc[b0:b1]), m[b0:b1], lo, hi)


@njit(parallel=True, **JIT)
def _lstm_rows_parallel(a, ax, bias, peepholes, c_prev, c_next, gates, m):
    """:func:`_lstm_rows` in the tasks of :func:`pass_tasks` over numba's threads: the same bits. For
    a step loop whose products run on numba's threads too (the compiled kernel); next to BLAS's
    threads a second pool would cost more than it saves (see :mod:`refrnn.jit._rowcast`)."""
    B, H = c_prev.shape
    rows, units = pass_tasks(B, H)
    for task in prange(rows * units):
        b0, b1, lo, hi = task_span(task, B, H, rows, units)
        _lstm_task(a, ax, bias, peepholes, c_prev, c_next, gates, m, b0, b1, lo, hi)


@njit(parallel=True, **JIT)
def _lstm_epilogue(work, a, ax, bias, peepholes, c_prev, c_next, gates, h, hT):
    """A step's product ``work`` (4H, B) = W @ [x_t | h_{t-1}].T made into h_t, for a cell without a
    projection, in the tasks of :func:`pass_tasks` over numba's threads: each task transposes its
    share of the four gate bands of ``work`` into ``a`` (B, 4H), runs :func:`_lstm_units` on it
    (``h`` (B, H) gets m), and writes its share of h_t.T into ``hT`` (H, B), the next product's
    operand. The same bits as the transposes and :func:`_lstm_rows` one after the other on one thread."""
    B, H = c_prev.shape
    rows, units = pass_tasks(B, H)
    for task in prange(rows * units):
        b0, b1, lo, hi = task_span(task, B, H, rows, units)
        for q in range(4):
            _transpose_block(a, work, b0, b1, q * H + lo, q * H + hi)
        _lstm_task(a, ax, bias, peepholes, c_prev, c_next, gates, h, b0, b1, lo, hi)
        _transpose_block(hT, h, lo, hi, b0, b1)


@njit(**JIT)
def _lstm_units_transposed(work, bias, peepholes, c_prev, c_next, hT, lo, hi):
    """The element-wise pass of one inference step over units ``[lo, hi)``, in the product's own
    layout: ``work`` (4H, B) = W @ [x_t | h_{t-1}].T, ``c_prev``/``c_next`` (H, B), ``hT`` (H, B)
    receives h_t.T. Each unit's gates run along the batch, contiguous; per element the same
    operations in the same order as :func:`_lstm_units`, so the same bits."""
    H, B = c_prev.shape
    w_ic, w_fc, w_oc = peepholes
    for j in range(lo, hi):
        a_i, a_f, a_g, a_o = work[j], work[H + j], work[2 * H + j], work[3 * H + j]
        cp, cn, h = c_prev[j], c_next[j], hT[j]
        b_i, b_f, b_g, b_o = bias[j], bias[H + j], bias[2 * H + j], bias[3 * H + j]
        p_i, p_f, p_o = w_ic[j], w_fc[j], w_oc[j]
        for b in range(B):
            i = sigmoid(a_i[b] + b_i + p_i * cp[b])
            f = sigmoid(a_f[b] + b_f + p_f * cp[b])
            g = tanh(a_g[b] + b_g)
            c = f * cp[b] + i * g
            cn[b] = c
            h[b] = sigmoid(a_o[b] + b_o + p_o * c) * tanh(c)


@njit(parallel=True, **JIT)
def _lstm_epilogue_transposed(work, bias, peepholes, c_prev, c_next, hT, h):
    """:func:`_lstm_units_transposed` in tasks of UNITS units over numba's threads, each task then
    writing its units of h_t into ``h`` (B, H), the output: an inference step keeps no gates, so
    the product needs no transpose at all (against :func:`_lstm_epilogue`'s four bands a step)."""
    H = c_prev.shape[0]
    for task in prange(-(-H // UNITS)):
        lo, hi = task * UNITS, min(H, (task + 1) * UNITS)
        _lstm_units_transposed(work, bias, peepholes, c_prev, c_next, hT, lo, hi)
        _transpose_block(h, hT, 0, h.shape[0], lo, hi)


@njit(**JIT)
def lstm_kernel_inference(x, W_x, W_h, bias, peepholes, hs, cs):
    """:func:`lstm_kernel` for inference in the "fused" order: the cell state is kept transposed
    (H, B) too, in a ring of two, and each step's pass runs in the product's layout
    (:func:`_lstm_epilogue_transposed`); ``cs`` (2, B, H) gets the last state in slot T % 2."""
    T, B, D = x.shape
    H = cs.shape[2]
    N = 4 * H
    work = np.empty((N + D + H, B), cs.dtype)
    cT = np.empty((2, H, B), cs.dtype)
    _transpose_into(work[N + D :], hs[0])
    _transpose_into(cT[0], cs[0])
    for t in range(T):
        if D > 0:
            _transpose_into(work[N : N + D], x[t])
        _rowcast.product_pair(W_x, work[N : N + D], W_h, work[N + D :], work[:N])
        _lstm_epilogue_transposed(work[:N], bias, peepholes, cT[t % 2], cT[(t + 1) % 2], work[N + D :], hs[t + 1])
    _transpose_into(cs[T % 2], cT[T % 2])


@njit(**JIT)
def lstm_kernel(x, ax, W_x, W_h, bias, peepholes, hs, cs, gates):
    """The step loop of either order with every product on the compiled kernel of
    :mod:`refrnn.jit._rowcast`, float32, for a cell without a projection; ``W_x`` (4H, D) and ``W_h``
    (4H, H) C-ordered, read where they are. "fused": ``x`` (T, B, D), ``ax`` a (T, 0, 4H) array, and
    each step's product is ``[W_x | W_h] @ [x_t | h_{t-1}].T`` by
    :func:`refrnn.jit._rowcast.product_pair` (the concatenated weight never built). "batched": ``ax``
    (T, B, 4H) the input products, ``x`` a (T, B, 0) array and ``W_x`` a (4H, 0) one.

    The product's operand ``[x_t | h_{t-1}].T`` stays in the last D + H rows of one buffer from step
    to step: :func:`_lstm_epilogue` writes h_t.T there, task by task, so that no step transposes the
    state or the (4H, B) product on one thread (about 90 us of each 2 ms step at the paper's size)."""
    T, B, D = x.shape
    H = cs.shape[2]
    N = 4 * H
    work = np.empty((N + D + H, B), cs.dtype)
    a = np.empty((B, N), cs.dtype)
    i, f, g, o, tc = gates
    _transpose_into(work[N + D :], hs[0])
    for t in range(T):
        if D > 0:
            _transpose_into(work[N : N + D], x[t])
        _rowcast.product_pair(W_x, work[N : N + D], W_h, work[N + D :], work[:N])
        k = min(t, i.shape[0] - 1)
        _lstm_epilogue(work[:N], a, ax[t], bias, peepholes, cs[t % cs.shape[0]], cs[(t + 1) % cs.shape[0]],
                       (i[k], f[k], g[k], o[k], tc[k]), hs[t + 1], work[N + D :])


@njit(**JIT)
def _lstm_step(t, a, ax, bias, peepholes, W_hr, hs, cs, gates, m, m_T, rowcast):
    """Step t: the element-wise pass (:func:`_lstm_rows`) into slot ``min(t, len - 1)`` of ``gates``
    = (i, f, g, o, tc), then the projection if any (``m_T`` (P, B) its buffer, see :func:`_step_product`)."""
    i, f, g, o, tc = gates
    k = min(t, i.shape[0] - 1)
    project = W_hr.shape[0] > 0
    c_prev, c_next = cs[t % cs.shape[0]], cs[(t + 1) % cs.shape[0]]
    m_out = m[min(t, m.shape[0] - 1)] if project else hs[t + 1]
    if rowcast:
        _lstm_rows_parallel(a, ax, bias, peepholes, c_prev, c_next, (i[k], f[k], g[k], o[k], tc[k]), m_out)
    else:
        _lstm_rows(a, ax, bias, peepholes, c_prev, c_next, (i[k], f[k], g[k], o[k], tc[k]), m_out)
    if project:
        _step_product(m_out, W_hr, W_hr.T, m_T, hs[t + 1], rowcast)


@njit(**JIT)
def lstm_batched(ax, W_hT, bias, peepholes, W_hr, hs, cs, gates, m, rowcast):
    """Input products precomputed: ax (T, B, 4H) = x @ W_x.T; W_hT (P, 4H). One product per step."""
    T, B, H = ax.shape[0], ax.shape[1], cs.shape[2]
    a, a_T, m_T = np.empty((B, 4 * H), cs.dtype), step_work(4 * H, W_hT.shape[0], B, cs.dtype), step_work(W_hr.shape[0], H, B, cs.dtype)
    for t in range(T):
        _step_product(hs[t], W_hT.T, W_hT, a_T, a, rowcast)
        _lstm_step(t, a, ax[t], bias, peepholes, W_hr, hs, cs, gates, m, m_T, rowcast)


@njit(**JIT)
def lstm_fused(x, F_T, bias, peepholes, W_hr, hs, cs, gates, m, rowcast):
    """One product per step: ``[x_t, h_{t-1}] @ [W_x | W_h].T`` with F_T (D+P, 4H). Every LSTM gate
    adds its input and recurrent parts, so this is the whole of the step's matrix work (with a
    projection, ``m_t @ W_hr.T`` follows)."""
    T, B, D = x.shape
    H, P = cs.shape[2], hs.shape[2]
    xh = np.empty((B, D + P), cs.dtype)
    a, a_T, m_T = np.empty((B, 4 * H), cs.dtype), step_work(4 * H, D + P, B, cs.dtype), step_work(W_hr.shape[0], H, B, cs.dtype)
    no_input = np.empty((0, 4 * H), cs.dtype)  # the product has the input part already
    for t in range(T):
        _concatenate_rows(xh, x[t], hs[t])
        _step_product(xh, F_T.T, F_T, a_T, a, rowcast)
        _lstm_step(t, a, no_input, bias, peepholes, W_hr, hs, cs, gates, m, m_T, rowcast)
