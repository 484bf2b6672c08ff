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
from ._kernels import JIT
from ._kernels import sigmoid as _sigmoid
from ._kernels import tanh as _tanh

BATCH, RUNNING, FOLDED = 0, 1, 2


@njit(**JIT)
def _gates_row(p_b, q_b, pz_b, r_b, hh_b, Uh_b, u_b, H):
    """One sample's gates: r = sigmoid(p_r + q_r), ĥ = tanh(p_h + r * U_h h), u = q_z + pxz."""
    for j in range(H):
        rj = _sigmoid(p_b[j] + q_b[j])
        r_b[j] = rj
        uh = q_b[H + j]
        Uh_b[j] = uh
        hh_b[j] = _tanh(p_b[H + j] + rj * uh)
    for i in range(u_b.shape[0]):
        u_b[i] = q_b[2 * H + i] + pz_b[i]


@njit(**JIT)
def forward_kernel(variant, bs, opts, px, pxz, U_allT, W_zT, b_z, rm, rv, inv_fixed, hs, cache, scratch):
    """The recurrence of :func:`refrnn.cells.ccgru.forward`, t = 0 .. T-1.

    ``opts`` = (mode, s, eps, momentum, 1 - momentum, B/(B-1)) as scalars of the dtype (mode an int).
    ``px`` (T, B, 2H) = x W_rh^T + b_rh, ``pxz`` (T, B, Kz) = x W_zx^T + b_zx (all steps, by the
    caller). ``U_allT`` (H, 2H + Kz) = [U_rh; U_zh]^T. ``W_zT`` (g, H) and ``b_z`` (H,): the low-rank
    expansion (else empty). ``rm, rv`` (K,): running statistics, updated in place in mode 0.
    ``inv_fixed`` (K,): 1/sqrt(running_var + eps) (mode 1) or ones (mode 2).
    ``cache`` = (r, h_hat, Uh, z, z_lr, n_hat, inv_std), the reference cache's arrays; ``z_lr`` is
    (0, B, 0) for the full variant. ``scratch`` = (q (B, 2H + Kz), u (B, Kz), a (B, K)).
    Returns -1, or the first step whose batch variance overflowed (the caller raises).
    """
    mode, s, eps, m, keep, unbias = opts
    r, h_hat, Uh, z, z_lr, n_hat, inv_std = cache
    q, u, a = scratch
    T, B, H = r.shape
    K = a.shape[1]
    zero = px.dtype.type(0.0)
    one = px.dtype.type(1.0)
    nB = px.dtype.type(B)
    mu = np.empty(K, px.dtype)
    var = np.empty(K, px.dtype)
    for t in range(T):
        h_t, h_n = hs[t], hs[t + 1]
        np.dot(h_t, U_allT, q)
        for b in range(B):
            _gates_row(px[t, b], q[b], pxz[t, b], r[t, b], h_hat[t, b], Uh[t, b], u[b], H)
        if variant == 0:
            for b in range(B):
                a_b, u_b = a[b], u[b]
                for k in range(K):
                    a_b[k] = u_b[k]
        else:
            for b in range(B):
                zl_b, u_b = z_lr[t, b], u[b]
                for i in range(zl_b.shape[0]):
                    zl_b[i] = max(u_b[i], zero)  # relu: the bottleneck z_lr
            if variant == 1:
                np.dot(z_lr[t], W_zT, a)
                if mode != BATCH:
                    for b in range(B):
                        a_b = a[b]
                        for k in range(K):
                            a_b[k] += b_z[k]
            else:
                for b in range(B):
                    a_b, zl_b = a[b], z_lr[t, b]
                    for k in range(K):
                        a_b[k] = zl_b[k]
        inv_t, n_t = inv_std[t], n_hat[t]
        if mode == BATCH:
            for k in range(K):
                mu[k] = zero
                var[k] = zero
            for b in range(B):
                a_b = a[b]
                for k in range(K):
                    mu[k] += a_b[k]
            for k in range(K):
                mu[k] = mu[k] / nB
            for b in range(B):
                a_b = a[b]
                for k in range(K):
                    d = a_b[k] - mu[k]
                    var[k] += d * d
            bad = False
            for k in range(K):
                var[k] = var[k] / nB
                inv_t[k] = one / np.sqrt(var[k] + eps)
                bad = bad or not math.isfinite(var[k])
            if bad:  # finite but huge inputs: BN would zero the gate silently
                return t
            for b in range(B):
                a_b, n_b = a[b], n_t[b]
                for k in range(K):
                    n_b[k] = (a_b[k] - mu[k]) * inv_t[k]
            for k in range(K):
                # b_z was left out of a (it cancels against the batch mean) but belongs to the mean
                bz = b_z[k] if variant != 2 else zero
                rm[k] = keep * rm[k] + m * (mu[k] + bz)
                rv[k] = keep * rv[k] + m * (var[k] * unbias)
        else:
            for k in range(K):
                inv_t[k] = inv_fixed[k]
            for b in range(B):
                a_b, n_b = a[b], n_t[b]
                for k in range(K):
                    n_b[k] = (a_b[k] - rm[k]) * inv_t[k]
        for b in range(B):
            n_b, z_b, hh_b, hp_b, hn_b = n_t[b], z[t, b], h_hat[t, b], h_t[b], h_n[b]
            for k in range(K):
                v = n_b[k] + s
                zk = _tanh(v)
                zk = zk if v > zero else zero  # cliptanh (Eq. 6): exactly +0 when v <= 0
                for j in range(k * bs, (k + 1) * bs):
                    z_b[j] = zk
            for j in range(H):
                zj = z_b[j]
                hn_b[j] = (one - zj) * hp_b[j] + zj * hh_b[j]
    return -1


@njit(**JIT)
def _derivatives_row(dh_b, dy_b, z_b, hh_b, hp_b, Uh_b, r_b, dp_b, dq_b, dz_b):
    """One sample's step of BPTT through r, ĥ and the state update, in one pass over the units.

    dh += dy; dz = dh (ĥ - h); dc = dh z (1 - ĥ^2); dp = [dc U_h h r (1 - r), dc]; dq = [dp_r, dc r].
    """
    H = dh_b.shape[0]
    one = dh_b.dtype.type(1.0)
    for j in range(H):
        dh = dh_b[j] + dy_b[j]
        dh_b[j] = dh
        hh, rj = hh_b[j], r_b[j]
        dz_b[j] = dh * (hh - hp_b[j])
        dc = (dh * z_b[j]) * (one - hh * hh)
        dp_r = dc * Uh_b[j] * rj * (one - rj)
        dp_b[j] = dp_r
        dp_b[H + j] = dc
        dq_b[j] = dp_r
        dq_b[H + j] = dc * rj


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
    nB = dy.dtype.type(B)
    g_mean = np.empty(K, dy.dtype)
    gn_mean = np.empty(K, dy.dtype)
    for t in range(T - 1, -1, -1):
        h_prev = hs[t]
        for b in range(B):
            _derivatives_row(dh[b], dy[t, b], z[t, b], h_hat[t, b], h_prev[b], Uh[t, b], r[t, b],
                             dp[t, b], dqu[t, b], dz[b])
        for b in range(B):
            z_b, dz_b, g_b = z[t, b], dz[b], da_hat[t, b]
            for k in range(K):
                zk = z_b[k * bs]
                dzk = zero
                for j in range(k * bs, (k + 1) * bs):  # a block value fed bs units: sum their gradients
                    dzk += dz_b[j]
                # z_k > 0 exactly where BN(a, s) > 0: cliptanh's derivative there, 0 elsewhere
                g_b[k] = dzk * (one - zk * zk) if zk > zero else zero
        inv_t, da_t = inv_std[t], da[t]
        if mode == BATCH:
            for k in range(K):
                g_mean[k] = zero
                gn_mean[k] = zero
            for b in range(B):
                g_b, n_b = da_hat[t, b], n_hat[t, b]
                for k in range(K):
                    g_mean[k] += g_b[k]
                    gn_mean[k] += g_b[k] * n_b[k]
            for k in range(K):
                g_mean[k] = g_mean[k] / nB
                gn_mean[k] = gn_mean[k] / nB
            for b in range(B):
                g_b, n_b, d_b = da_hat[t, b], n_hat[t, b], da_t[b]
                for k in range(K):
                    d_b[k] = inv_t[k] * (g_b[k] - g_mean[k] - n_b[k] * gn_mean[k])
        else:
            for b in range(B):
                g_b, d_b = da_hat[t, b], da_t[b]
                for k in range(K):
                    d_b[k] = inv_t[k] * g_b[k]
        if variant == 0:
            for b in range(B):
                d_b, du_b, dq_b = da_t[b], du[t, b], dqu[t, b]
                for k in range(K):
                    du_b[k] = d_b[k]
                    dq_b[2 * H + k] = d_b[k]
        else:
            if variant == 1:
                np.dot(da_t, W_z, dzlr)
                src = dzlr
            else:
                src = da_t
            for b in range(B):
                s_b, zl_b, du_b, dq_b = src[b], z_lr[t, b], du[t, b], dqu[t, b]
                for i in range(Kz):
                    v = s_b[i] if zl_b[i] > zero else zero  # relu': z_lr > 0 exactly where its input is
                    du_b[i] = v
                    dq_b[2 * H + i] = v
        np.dot(dqu[t], U_all, rec)
        for b in range(B):
            dh_b, z_b, rec_b = dh[b], z[t, b], rec[b]
            for j in range(H):
                dh_b[j] = dh_b[j] * (one - z_b[j]) + rec_b[j]
