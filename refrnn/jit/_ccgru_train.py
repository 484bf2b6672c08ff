r"""Compiled training of the conditional GRU: the forward that fills the reference's cache, and BPTT.

The twin of :func:`refrnn.cells.ccgru.forward` and :func:`refrnn.cells.ccgru.backward` for every variant
(full, low-rank, block z) and every normalisation (batch statistics in training mode, running
statistics, folded), computing every unit densely as the reference does. The public entry points
are :func:`refrnn.jit.ccgru.forward` (training mode), :func:`refrnn.jit.ccgru.forward_train` and
:func:`refrnn.jit.ccgru.backward`; this module holds their kernels.

Products. The recurrent side of a step is ONE product: ``h_{t-1} @ [U_r; U_h; U_zh]^T`` (B, 2H + Kz)
gives ``U_r h``, ``U_h h`` and the update gate's recurrent term together (``U_zh`` is ``U_z`` or
``U_z^lr``, ``Kz`` its rows: H or g). Backward mirrors it: per step one product
``[dq_r, dq_h, du] @ [U_r; U_h; U_zh]`` (B, H) carries dL/dh_{t-1}, and after the loop one T*B-row
GEMM per weight (``dq^T h``, ``dp^T x``, ``du^T x``, and ``da^T z_lr`` for the low-rank ``W_z``),
as the reference's backward batches them. The low-rank gate adds one small product a step
(``z_lr W_z^T`` forward, ``da W_z`` backward). Every product is ``np.dot`` inside numba, i.e. the one
OpenBLAS that SciPy ships and its one thread pool: no NumPy ``@`` runs between them, so the two
pools of NumPy's and SciPy's OpenBLAS never alternate (on two cores that alternation starves both).
Small per-step products run on one BLAS thread (:data:`refrnn.jit.ccgru.ONE_THREAD_STEP_MNK`).

Element-wise work. Per step and sample, one pass over the units computes the gates and the state
(forward), or all gate derivatives, ``dp``, ``dq`` and ``dz`` (backward). The batch statistics need
column sums over the B samples, accumulated row by row into (K,) vectors.

Array conventions: ``hs`` (T+1, B, H) holds h_0..h_T (the caller fills ``hs[0]``); cache arrays are
the reference's :class:`refrnn.cells.ccgru.CCGRUCache` fields, filled in place. ``mode`` codes:
0 batch statistics (training), 1 running statistics, 2 folded (``inv_std`` = 1).
"""

from __future__ import annotations

import math

import numpy as np

from ._cache import njit
from ._kernels import JIT, _add_into, _copy, _product, _sigmoid_of, _sum
from ._kernels import tanh as _tanh

BATCH, RUNNING, FOLDED = 0, 1, 2


# Row loops: each writes one contiguous 1-d row from at most four others, so that LLVM's run-time
# overlap checks stay within its cap and every loop is SIMD (see refrnn.jit._kernels, "Row loops";
# one loop over every gate of a unit touches ~10 arrays and stays scalar).


@njit(**JIT)
def _tanh_gated(out, a, r, g):
    """out = tanh(a + r * g): ĥ from its input part (bias included) and the reset-gated U_h h."""
    for j in range(out.shape[0]):
        out[j] = _tanh(a[j] + r[j] * g[j])


@njit(**JIT)
def _cliptanh(out, n, s):
    """out = cliptanh(n + s) (Eq. 6): tanh where positive, exactly +0 elsewhere."""
    zero = out.dtype.type(0.0)
    for k in range(out.shape[0]):
        v = n[k] + s
        t = _tanh(v)  # unconditionally: a select vectorises, a branch around a call does not
        out[k] = t if v > zero else zero


@njit(**JIT)
def _blend(out, z, h, h_hat):
    """out = (1 - z) * h + z * ĥ, the reference's expression: z = 0 copies h bit for bit."""
    one = out.dtype.type(1.0)
    for j in range(out.shape[0]):
        out[j] = (one - z[j]) * h[j] + z[j] * h_hat[j]


@njit(**JIT)
def _relu(out, a):
    zero = out.dtype.type(0.0)
    for i in range(out.shape[0]):
        out[i] = max(a[i], zero)


@njit(**JIT)
def _normalise(out, a, mean, inv):
    """out = (a - mean) * inv"""
    for k in range(out.shape[0]):
        out[k] = (a[k] - mean[k]) * inv[k]


@njit(**JIT)
def _batch_statistics(a, eps, mu, var, inv):
    """The batch statistics of ``a`` (B, K), as the reference's: ``mu`` (K,) its mean over the B rows,
    ``var`` (K,) the biased variance about it (a second pass), ``inv`` = 1/sqrt(var + eps). Returns
    whether a variance overflowed (finite but huge inputs: BN would zero the gate silently)."""
    K = a.shape[1]
    zero = a.dtype.type(0.0)
    one = a.dtype.type(1.0)
    nB = a.dtype.type(a.shape[0])
    for k in range(K):
        mu[k] = zero
        var[k] = zero
    for b in range(a.shape[0]):
        a_b = a[b]
        for k in range(K):
            mu[k] += a_b[k]
    for k in range(K):
        mu[k] = mu[k] / nB
    for b in range(a.shape[0]):
        a_b = a[b]
        for k in range(K):
            d = a_b[k] - mu[k]
            var[k] += d * d
    bad = False
    for k in range(K):
        var[k] = var[k] / nB
        inv[k] = one / np.sqrt(var[k] + eps)
        bad = bad or not math.isfinite(var[k])
    return bad


@njit(**JIT)
def forward_kernel(variant, bs, opts, px, pxz, weights, stats, hs, cache, scratch):
    """The recurrence of :func:`refrnn.cells.ccgru.forward`, t = 0 .. T-1.

    ``opts`` = (mode, s, eps, momentum, 1 - momentum, B/(B-1)) as scalars of the dtype (mode an int).
    ``px`` (T, B, 2H) = x W_rh^T + b_rh, ``pxz`` (T, B, Kz) = x W_zx^T + b_zx (all steps, by the
    caller). ``weights`` = (U_allT, W_zT, b_z): ``U_allT`` (H, 2H + Kz) = [U_rh; U_zh]^T, ``W_zT``
    (g, H) and ``b_z`` (H,) the low-rank expansion (else empty). ``stats`` = (rm, rv, inv_fixed):
    ``rm, rv`` (K,) the running statistics, updated in place in mode 0; ``inv_fixed`` (K,)
    1/sqrt(running_var + eps) (mode 1) or ones (mode 2).
    ``cache`` = (r, h_hat, Uh, z, z_lr, n_hat, inv_std), the reference cache's arrays; ``z_lr`` is
    (0, B, 0) for the full variant. ``scratch`` = (q (B, 2H + Kz), u (B, Kz), a (B, K)).
    Returns -1, or the first step whose batch variance overflowed (the caller raises).
    """
    mode, s, eps, m, keep, unbias = opts
    U_allT, W_zT, b_z = weights
    rm, rv, inv_fixed = stats
    r, h_hat, Uh, z, z_lr, n_hat, inv_std = cache
    q, u, a = scratch
    T, B, H = r.shape
    K = a.shape[1]
    zero = px.dtype.type(0.0)
    mu = np.empty(K, px.dtype)
    var = np.empty(K, px.dtype)
    for t in range(T):
        h_t, h_n = hs[t], hs[t + 1]
        np.dot(h_t, U_allT, q)
        for b in range(B):
            p_b, q_b, r_b, Uh_b = px[t, b], q[b], r[t, b], Uh[t, b]
            _sigmoid_of(r_b, p_b[:H], q_b[:H])
            _copy(Uh_b, q_b[H : 2 * H])
            _tanh_gated(h_hat[t, b], p_b[H:], r_b, Uh_b)
            _sum(u[b], q_b[2 * H :], pxz[t, b])
        if variant == 0:
            for b in range(B):
                _copy(a[b], u[b])
        else:
            for b in range(B):
                _relu(z_lr[t, b], u[b])  # the bottleneck z_lr
            if variant == 1:
                np.dot(z_lr[t], W_zT, a)
                if mode != BATCH:
                    for b in range(B):
                        a_b = a[b]
                        for k in range(K):
                            a_b[k] += b_z[k]
            else:
                for b in range(B):
                    _copy(a[b], z_lr[t, b])
        inv_t, n_t = inv_std[t], n_hat[t]
        if mode == BATCH:
            if _batch_statistics(a, eps, mu, var, inv_t):
                return t
            for b in range(B):
                _normalise(n_t[b], a[b], mu, inv_t)
            for k in range(K):
                # b_z was left out of a (it cancels against the batch mean) but belongs to the mean
                bz = b_z[k] if variant != 2 else zero
                rm[k] = keep * rm[k] + m * (mu[k] + bz)
                rv[k] = keep * rv[k] + m * (var[k] * unbias)
        else:
            for k in range(K):
                inv_t[k] = inv_fixed[k]
            for b in range(B):
                _normalise(n_t[b], a[b], rm, inv_t)
        for b in range(B):
            z_b = z[t, b]
            if bs == 1:
                _cliptanh(z_b, n_t[b], s)
            else:  # one value per block, repeated over its bs units
                zk_b = a[b]  # a is spent: reuse it
                _cliptanh(zk_b, n_t[b], s)
                for k in range(K):
                    zk = zk_b[k]
                    for j in range(k * bs, (k + 1) * bs):
                        z_b[j] = zk
            _blend(h_n[b], z_b, h_t[b], h_hat[t, b])
    return -1


@njit(**JIT)
def _dz(out, dh, h_hat, h):
    """out = dh * (ĥ - h): dL/dz"""
    for j in range(out.shape[0]):
        out[j] = dh[j] * (h_hat[j] - h[j])


@njit(**JIT)
def _dc(out, dh, z, h_hat):
    """out = dh * z * (1 - ĥ^2): dL/d(ĥ's pre-activation)"""
    one = out.dtype.type(1.0)
    for j in range(out.shape[0]):
        out[j] = (dh[j] * z[j]) * (one - h_hat[j] * h_hat[j])


@njit(**JIT)
def _dp_r(out, dc, Uh, r):
    """out = dc * U_h h * r * (1 - r): dL/d(r's pre-activation)"""
    one = out.dtype.type(1.0)
    for j in range(out.shape[0]):
        out[j] = dc[j] * Uh[j] * r[j] * (one - r[j])


@njit(**JIT)
def _dcliptanh(out, dz, z):
    """out = dz * (1 - z^2) where z > 0, else 0: z > 0 exactly where BN(a, s) > 0."""
    zero = out.dtype.type(0.0)
    one = out.dtype.type(1.0)
    for k in range(out.shape[0]):
        zk = z[k]
        out[k] = dz[k] * (one - zk * zk) if zk > zero else zero


@njit(**JIT)
def _relu_grad(out, g, a):
    """out = g where a > 0, else 0 (relu', read from its output z_lr)"""
    zero = out.dtype.type(0.0)
    for i in range(out.shape[0]):
        out[i] = g[i] if a[i] > zero else zero


@njit(**JIT)
def _bn_grad(out, g, n, g_mean, gn_mean, inv):
    """out = inv * (g - mean(g) - n * mean(g n)): through the batch mean and variance"""
    for k in range(out.shape[0]):
        out[k] = inv[k] * (g[k] - g_mean[k] - n[k] * gn_mean[k])


@njit(**JIT)
def _carry(dh, z, rec):
    """dh = dh * (1 - z) + rec: dL/dh_{t-1} from the state update and the recurrent products"""
    one = dh.dtype.type(1.0)
    for j in range(dh.shape[0]):
        dh[j] = dh[j] * (one - z[j]) + rec[j]


@njit(**JIT)
def _batch_norm_grad(g, n, inv, g_mean, gn_mean, out):
    """The gradient through batch statistics, every row: ``out`` (B, K) from ``g`` (B, K) at
    BN(a, s), ``n`` (B, K) = n_hat and ``inv`` (K,); ``g_mean``, ``gn_mean`` (K,) are scratch for
    the means of g and of g * n over the B rows."""
    K = g.shape[1]
    zero = g.dtype.type(0.0)
    nB = g.dtype.type(g.shape[0])
    for k in range(K):
        g_mean[k] = zero
        gn_mean[k] = zero
    for b in range(g.shape[0]):
        g_b, n_b = g[b], n[b]
        for k in range(K):
            g_mean[k] += g_b[k]
            gn_mean[k] += g_b[k] * n_b[k]
    for k in range(K):
        g_mean[k] = g_mean[k] / nB
        gn_mean[k] = gn_mean[k] / nB
    for b in range(g.shape[0]):
        _bn_grad(out[b], g[b], n[b], g_mean, gn_mean, inv)


@njit(**JIT)
def backward_kernel(variant, bs, mode, dy, dh, U_all, W_z, cache, grads, scratch):
    """BPTT of :func:`refrnn.cells.ccgru.backward`, t = T-1 .. 0.

    ``dh`` (B, H): dL/dh_T on entry, dL/dh_0 on exit. ``U_all`` (2H + Kz, H) = [U_rh; U_zh];
    ``W_z`` (H, g) the low-rank expansion (else empty). ``cache`` = (hs, r, h_hat, Uh, z, z_lr,
    n_hat, inv_std). Writes ``grads`` = (dp (T, B, 2H), dqu (T, B, 2H + Kz) = [dq_r, dq_h, du],
    du (T, B, Kz), da (T, B, K), da_hat (T, B, K)). ``scratch`` = (dz (B, H), dzlr (B, Kz), rec (B, H)).
    """
    hs, r, h_hat, Uh, z, z_lr, n_hat, inv_std = cache
    dp, dqu, du, da, da_hat = grads
    dz, dzlr, rec = scratch
    T, B, H = r.shape
    K = da.shape[2]
    Kz = du.shape[2]
    zero = dy.dtype.type(0.0)
    one = dy.dtype.type(1.0)
    g_mean = np.empty(K, dy.dtype)
    gn_mean = np.empty(K, dy.dtype)
    for t in range(T - 1, -1, -1):
        h_prev = hs[t]
        for b in range(B):
            # One pass of row loops over the sample's units: dh, dz, dc, dp = [dp_r, dc], dq = [dp_r, dc r].
            dh_b, z_b, hh_b, r_b, dp_b, dq_b, dz_b = dh[b], z[t, b], h_hat[t, b], r[t, b], dp[t, b], dqu[t, b], dz[b]
            _add_into(dh_b, dy[t, b])
            _dz(dz_b, dh_b, hh_b, h_prev[b])
            dc = dp_b[H:]
            _dc(dc, dh_b, z_b, hh_b)
            _dp_r(dp_b[:H], dc, Uh[t, b], r_b)
            _copy(dq_b[:H], dp_b[:H])
            _product(dq_b[H : 2 * H], dc, r_b)
            if bs == 1:
                _dcliptanh(da_hat[t, b], dz_b, z_b)
            else:
                g_b = da_hat[t, b]
                for k in range(K):
                    zk = z_b[k * bs]
                    dzk = zero
                    for j in range(k * bs, (k + 1) * bs):  # a block value fed bs units: sum their gradients
                        dzk += dz_b[j]
                    g_b[k] = dzk * (one - zk * zk) if zk > zero else zero
        inv_t, da_t = inv_std[t], da[t]
        if mode == BATCH:
            _batch_norm_grad(da_hat[t], n_hat[t], inv_t, g_mean, gn_mean, da_t)
        else:
            for b in range(B):
                _product(da_t[b], inv_t, da_hat[t, b])
        if variant == 0:
            for b in range(B):
                _copy(du[t, b], da_t[b])
                _copy(dqu[t, b][2 * H :], da_t[b])
        else:
            if variant == 1:
                np.dot(da_t, W_z, dzlr)
                src = dzlr
            else:
                src = da_t
            for b in range(B):
                _relu_grad(du[t, b], src[b], z_lr[t, b])  # z_lr > 0 exactly where relu's input is
                _copy(dqu[t, b][2 * H :], du[t, b])
        np.dot(dqu[t], U_all, rec)
        for b in range(B):
            _carry(dh[b], z[t, b], rec[b])
