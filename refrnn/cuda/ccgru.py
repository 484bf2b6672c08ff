r"""Conditional-computation GRU, block-sparse inference on the GPU: the fast twin of the block variant of
:mod:`refrnn.cells.ccgru` (inference statistics or folded normalisation).

Equations (the reference's block variant, paper orientation; ``*`` is the element-wise product)::

    p_t   = W_rh x_t + b_rh                    = [p_r, p_h]        all T steps in one product
    u_t   = W_z^lr x_t + b_z^lr + U_z^lr h_{t-1}                    (g,) per sequence
    z_k   = cliptanh((relu(u_t) - running_mean) * inv_std + s)      one gate value per block k < g
    r_t   = sigmoid(p_r + U_r h_{t-1})                              } only for the units of blocks
    ĥ_t   = tanh(p_h + r_t * (U_h h_{t-1}))                         } with z_k > 0
    h_t   = (1 - z) * h_{t-1} + z * ĥ_t         z_k = 0: h_t = h_{t-1} on the block, bit for bit

``inv_std = 1/sqrt(running_var + eps)`` (norm="batch", mode="inference"), or 1 with norm="folded".
Training-mode batch statistics need every sequence's gate before any block can be skipped and are
refused. Shapes: x (T, B, D); h0 (B, H); y (T, B, H); h_T (B, H); blocks of H/g contiguous units.

Per step, three kernels:

1. *gate*: one thread per (sequence b, block k) computes ``z_k``; where it is non-zero the thread appends
   b to block k's list of active sequences (an atomic counter per block and step);
2. *block product*: per block k, one tiled shared-memory product of the *gathered* active rows of
   h_{t-1} with the block's r and ĥ rows of ``U_rh`` (both gates in one pass, as in :mod:`refrnn.cuda.gru`),
   and the gate and state update in the epilogue. Thread blocks past a block's active count exit at
   once, so the work done is proportional to the number of active (sequence, block) pairs;
3. *copy-forward*: one thread per (b, unit) copies h_{t-1} to h_t where the unit's block is inactive.

The order in which the atomics fill an active list varies from run to run; every sequence's row is
computed on its own, so the results do not.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from .._moved import renamed
from .._checks import one_of
from ..cells.ccgru import CCGRUBlockParams, PARAM_CLASSES
from . import _activations, _device, _tiles, matmul
from ._device import upload  # noqa: F401 - part of this module's API

cuda = _device.require_cuda()  # module global: the simulator swaps it for its fake module in kernels

TILE = matmul.TILE


@functools.lru_cache(maxsize=None)
def _kernels(dtype: np.dtype, tile: int):
    """The conditional GRU's three per-step kernels for one dtype and tile size (compiled on first launch)."""
    nbt, zero, one = _activations.scalars(dtype)
    pad = tile + 1  # one padding column: threads of a warp read a column of sh_w in distinct banks
    sigmoid = _activations.sigmoid(dtype)
    flat_unit = _tiles.flat_unit

    @cuda.jit
    def gate(px_z, U_z_lr, running_mean, inv_std, s, h, t, z, count, active):
        """z[b, k] of step t; appends b to block k's active list where z[b, k] > 0."""
        B, g = z.shape
        H = h.shape[2]
        b, k = flat_unit(g)
        if b < B:
            acc = zero
            for m in range(H):
                acc += h[t, b, m] * U_z_lr[k, m]
            u = px_z[t, b, k] + acc
            a = u if u > zero else zero  # relu
            v = (a - running_mean[k]) * inv_std[k] + s
            zk = math.tanh(v) if v > zero else zero  # cliptanh: exactly 0 for v <= 0
            z[b, k] = zk
            if zk > zero:
                slot = cuda.atomic.add(count, (t, k), 1)
                active[k, slot] = b

    @cuda.jit
    def block_product(p, U_rh, h, t, z, count, active):
        """Per block k: [U_r; U_h] rows of the block times the gathered active rows of h[t], then the update."""
        B, H = h.shape[1], h.shape[2]
        g = z.shape[1]
        bs = H // g
        unit_tiles = (bs + tile - 1) // tile
        k = cuda.blockIdx.x // unit_tiles
        j0 = k * bs + (cuda.blockIdx.x - k * unit_tiles) * tile  # first unit of this thread block
        j_end = (k + 1) * bs
        n_active = count[t, k]
        first = cuda.blockIdx.y * tile
        if first >= n_active:  # the same for every thread of the block: safe before any syncthreads
            return
        sh_s = cuda.shared.array((tile, pad), nbt)
        sh_w = cuda.shared.array((2, tile, pad), nbt)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        i = first + ty  # this thread's position in the active list
        b = active[k, i] if i < n_active else 0
        u = j0 + ty  # the U_rh row (per gate) this thread loads
        acc_r = zero
        acc_h = zero
        for k0 in range(0, H, tile):
            m = k0 + tx
            sh_s[ty, tx] = h[t, b, m] if (i < n_active and m < H) else zero
            inside = u < j_end and m < H
            sh_w[0, ty, tx] = U_rh[u, m] if inside else zero
            sh_w[1, ty, tx] = U_rh[H + u, m] if inside else zero
            cuda.syncthreads()
            for kk in range(tile):
                hs = sh_s[ty, kk]
                acc_r += hs * sh_w[0, tx, kk]
                acc_h += hs * sh_w[1, tx, kk]
            cuda.syncthreads()
        j = j0 + tx
        if i < n_active and j < j_end:
            r = sigmoid(p[t, b, j] + acc_r)
            h_hat = math.tanh(p[t, b, H + j] + r * acc_h)
            zk = z[b, k]
            h[t + 1, b, j] = (one - zk) * h[t, b, j] + zk * h_hat

    @cuda.jit
    def copy_forward(h, t, z):
        """h[t+1, b, j] = h[t, b, j] on every unit whose block's gate is exactly zero."""
        B, H = h.shape[1], h.shape[2]
        bs = H // z.shape[1]
        b, j = flat_unit(H)
        if b < B:
            if z[b, j // bs] == zero:
                h[t + 1, b, j] = h[t, b, j]

    return gate, block_product, copy_forward


def _check(host):
    if not isinstance(host, CCGRUBlockParams):
        if isinstance(host, PARAM_CLASSES):
            raise ValueError(
                f"params: the GPU path skips blocks of units, so it needs the block variant (CCGRUBlockParams); "
                f"got the {host.variant!r} variant ({type(host).__name__}): use refrnn.cells.ccgru"
            )
        raise TypeError(f"params: expected CCGRUBlockParams (or refrnn.cuda upload() of one), got {type(host).__name__}")
    if host.norm == "batch" and host.mode == "train":
        raise ValueError(
            "params: mode='train' normalises with batch statistics, which need every sequence's gate before any "
            "block can be skipped; the GPU path is for inference: params.replace(mode='inference') or fold_normalization"
        )
    if host.norm == "batch" and np.any(host.running_var < 0):
        raise ValueError(f"params.running_var: variances must be non-negative, got min {np.min(host.running_var)}")


ALGORITHMS = ("block",)  # the one GPU algorithm: block-sparse


@renamed(h0="state0")
def forward(params, x, state0=None, *, algorithm="block", tile: int = TILE):
    """Block-sparse inference over ``x``; returns ``(y, h_T, None)``: the reference's first two results,
    and no cache (inference only).

    Placement as everywhere in :mod:`refrnn.cuda`: NumPy in, NumPy out; device arrays in, device arrays out.
    """
    return (*forward_inference(params, x, state0, algorithm=algorithm, tile=tile), None)


@renamed(h0="state0")
def forward_inference(params, x, state0=None, *, algorithm="block", tile: int = TILE):
    """Block-sparse inference over ``x``: ``(y, h_T)``."""
    one_of("algorithm", algorithm, ALGORITHMS)
    host = params.host if isinstance(params, _device.DeviceParams) else params
    _check(host)
    tile = _device.check_tile(tile)
    dt, D, H, g = host.dtype, host.input_size, host.hidden_size, host.g
    X, on_device = _device.sequence_input(host, x)
    T, B, _ = X.shape
    h = _device.state_buffer("state0", state0, T + 1, B, H, dt)  # h_0..h_T
    if T > 0 and B > 0:
        P = _device.upload(params)
        gate, block_product, copy_forward = _kernels(dt, tile)
        # The same inverse standard deviation the reference computes, in the parameters' dtype.
        inv = np.ones(g, dt) if host.norm == "folded" else (1.0 / np.sqrt(host.running_var + host.eps)).astype(dt)
        inv_std = cuda.to_device(inv)
        p = _device.empty((T, B, 2 * H), dt)
        px_z = _device.empty((T, B, g), dt)
        matmul.gemm(X.reshape(T * B, D), P.W_rh, p.reshape(T * B, 2 * H), bias=P.b_rh, trans_b=True, tile=tile)
        matmul.gemm(X.reshape(T * B, D), P.W_z_lr, px_z.reshape(T * B, g), bias=P.b_z_lr, trans_b=True, tile=tile)
        z = _device.empty((B, g), dt)
        count = cuda.to_device(np.zeros((T, g), np.int32))  # active sequences per (step, block)
        active = _device.empty((g, B), np.int32)  # block k's active sequences: active[k, :count[t, k]]
        s = dt.type(host.s)
        gate_grid, copy_grid = _device.launch(B * g), _device.launch(B * H)
        product_grid = (g * _device.grid(host.block_size, tile), _device.grid(B, tile)), (tile, tile)
        for t in range(T):
            gate[gate_grid](px_z, P.U_z_lr, P.running_mean, inv_std, s, h, t, z, count, active)
            block_product[product_grid](p, P.U_rh, h, t, z, count, active)
            copy_forward[copy_grid](h, t, z)
    return _device.sequence_outputs(h, on_device)
