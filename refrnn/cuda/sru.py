r"""SRU forward and backward on the GPU: the fast twin of :mod:`refrnn.cells.sru`.

Equations (the reference's, every option included; ``*`` is the element-wise product)::

    U     = x W^T                                   one product for all T steps: (T*B, k*H)
    f_t   = sigmoid(U_f,t + v_f * c_{t-1} + b_f)
    r_t   = sigmoid(U_r,t + v_r * c_{t-1} + b_r)    (v terms absent when params.v is None)
    c_t   = f_t * c_{t-1} + (1 - f_t) * U_c,t
    h_t   = r_t * g(c_t) + (1 - r_t) * s_t          s_t = alpha * x_t[o:o+H] | alpha * U_s,t | absent
    padded step (mask_pad true): c_t = c_{t-1}, h_t = 0

Shapes: x (T, B, D); c0 (B, H); y (T, B, H); c_T (B, H); mask_pad (T, B), host array.

Kernels, as in the paper's Section 3.1:

* the product ``U = x W^T`` (and in backward ``dW = dU^T x``, ``dx = dU W``): through cuBLAS when CuPy or a
  CUDA build of PyTorch is importable (``algorithm="auto"``, the default; ``product=`` is the keyword's
  former name), else refrnn's tiled kernel;
* the recurrence: one thread per (batch, hidden unit) with the time loop inside. Consecutive threads own
  consecutive units, so every read of ``U[t, b, :]`` and write of ``h[t, b, :]`` is coalesced, and the
  state stays in a register for all T steps: the kernel streams ``U`` once and is bound by memory
  bandwidth, which is the point of the SRU;
* backward: the same thread layout walking time backwards. It stores nothing but ``c_0..c_T`` from the
  forward pass and recomputes ``f``, ``r`` and ``g`` from ``U`` and ``c`` (as the sru package does), writes
  ``dU`` for the products, and accumulates each thread's share of ``dv`` in registers; ``db`` and ``dv``
  are then column sums.

The recurrence kernels are compiled once per dtype and model options (skip, its offset and ``alpha``,
activation, v terms: :func:`_kernels`), which are their compile-time constants; a launch passes arrays
(the per-unit b_f, b_r, v_f, v_r stacked in one, see :func:`upload`) and the call's two flags.

``forward`` returns ``(y, c_T, cache)`` like the reference; ``cache`` is a :class:`SRUDeviceCache` of device
arrays for :func:`backward` (``store_cache=False``: inference, ``c_1..c_{T-1}`` are not written, cache None).
Placement: NumPy in, NumPy out; device arrays in, device arrays out. Gradients of the parameters are
always returned as an :class:`~refrnn.cells.sru.SRUParams` of NumPy arrays, since parameters live on the
host in refrnn (upload them once with :func:`upload` for repeated calls).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np

from ..cells.sru import SRUParams, check_mask
from . import _activations, _device, _tiles, matmul
from .._moved import algorithm_keyword, renamed

cuda = _device.require_cuda()  # module global: the simulator swaps it for its fake module in kernels

TILE = matmul.TILE

# Rows of the per-unit parameter array ``vb`` the recurrence kernels read (see upload).
B_F, B_R, V_F, V_R = 0, 1, 2, 3


class SRUDeviceCache(NamedTuple):
    """What :func:`backward` needs, on the device, named after the equations."""

    x: object  # (T, B, D): the input as given (no copy when it was already on the device)
    U: object  # (T, B, kH): x W^T
    c: object  # (T+1, B, H): c_0..c_T
    pad: object  # (T, B) uint8 on the device, or None without a mask
    on_device: bool  # whether the caller passed device arrays (decides where dx, dc0 go)


@functools.lru_cache(maxsize=None)
def _kernels(dtype: np.dtype, skip: str = "identity", skip_offset: int = 0, alpha: float = 1.0,
             activation: str = "identity", has_v: bool = True):
    """``(recurrence, recurrence_backward, column_sums, add_skip)`` for one dtype and one model's options.

    The options (which skip term, its column offset in x and its scale ``alpha``, the activation g,
    whether there are v terms) are fixed for a model, so they are compile-time constants of the
    recurrence kernels: every branch on them is decided when the kernel compiles, and a launch passes
    only arrays and the two flags of the call (is there a padding mask, are c_1..c_{T-1} kept).
    """
    recurrence, recurrence_backward = _recurrence_kernels(np.dtype(dtype), skip, skip_offset, alpha, activation, has_v)
    return (recurrence, recurrence_backward, *_reduction_kernels(np.dtype(dtype)))


@functools.lru_cache(maxsize=None)
def _recurrence_kernels(dtype, skip, off, alpha, activation, has_v):
    """The forward and backward recurrence kernels of :func:`_kernels`, for one option set."""
    nbt, zero, one = _activations.scalars(dtype)
    sigmoid = _activations.sigmoid(dtype)
    flat_unit = _tiles.flat_unit
    alpha = nbt(alpha)
    has_skip, projection = skip != "none", skip == "projection"
    use_tanh = activation == "tanh"

    @cuda.jit(device=True)
    def unit_params(vb, j):
        """``(b_f, b_r, v_f, v_r)`` of unit j, read once per thread (the v terms are 0 without v)."""
        if has_v:
            return vb[B_F, j], vb[B_R, j], vb[V_F, j], vb[V_R, j]
        return vb[B_F, j], vb[B_R, j], zero, zero

    @cuda.jit(device=True)
    def gates(U, w, t, b, j, H, c_prev):
        """``(f_t, r_t)`` of (b, j) from U, the unit's parameters ``w`` and c_{t-1}."""
        b_f, b_r, v_f, v_r = w
        a_f = U[t, b, H + j] + b_f
        a_r = U[t, b, 2 * H + j] + b_r
        if has_v:
            a_f = a_f + v_f * c_prev
            a_r = a_r + v_r * c_prev
        return sigmoid(a_f), sigmoid(a_r)

    @cuda.jit(device=True)
    def g_of(c_t):
        return math.tanh(c_t) if use_tanh else c_t

    @cuda.jit(device=True)
    def skip_term(x, U, t, b, j, H):
        if projection:
            return alpha * U[t, b, 3 * H + j]
        return alpha * x[t, b, off + j]

    @cuda.jit
    def recurrence(U, x, vb, c0, pad, h, c, c_T, has_pad, keep_c):
        """Forward: one thread per (b, j); c stays in a register for all T steps."""
        T, B, H = h.shape
        b, j = flat_unit(H)
        if b >= B:
            return
        w = unit_params(vb, j)
        c_prev = c0[b, j]
        if keep_c:
            c[0, b, j] = c_prev
        for t in range(T):
            if has_pad and pad[t, b] != 0:
                h[t, b, j] = zero  # the state passes through a padded step unchanged
            else:
                f, r = gates(U, w, t, b, j, H, c_prev)
                c_prev = f * c_prev + (one - f) * U[t, b, j]
                g = g_of(c_prev)
                if has_skip:
                    h[t, b, j] = r * g + (one - r) * skip_term(x, U, t, b, j, H)
                else:
                    h[t, b, j] = r * g
            if keep_c:
                c[t + 1, b, j] = c_prev
        c_T[b, j] = c_prev

    @cuda.jit
    def recurrence_backward(U, x, vb, c, pad, dy, dc_T, dU, ds, dc0, dv_part, has_pad):
        """Backward: one thread per (b, j), t = T-1 .. 0; f, r, g recomputed from U and the stored c."""
        T, B, H = dy.shape
        b, j = flat_unit(H)
        if b >= B:
            return
        w = unit_params(vb, j)
        v_f, v_r = w[2], w[3]
        dc = dc_T[b, j]
        dv_f = zero
        dv_r = zero
        for t in range(T - 1, -1, -1):
            if has_pad and pad[t, b] != 0:
                # Nothing at a padded step depends on x_t or the parameters; dc goes around the step.
                dU[t, b, j] = zero
                dU[t, b, H + j] = zero
                dU[t, b, 2 * H + j] = zero
                if projection:
                    dU[t, b, 3 * H + j] = zero
                elif has_skip:
                    ds[t, b, j] = zero
                continue
            c_prev = c[t, b, j]
            c_t = c[t + 1, b, j]
            U_c = U[t, b, j]
            f, r = gates(U, w, t, b, j, H, c_prev)
            g = g_of(c_t)
            dh = dy[t, b, j]
            if has_skip:
                dr = dh * (g - skip_term(x, U, t, b, j, H))
                d_skip = alpha * (dh * (one - r))  # gradient at U_s (projection) or at x's skip columns
                if projection:
                    dU[t, b, 3 * H + j] = d_skip
                else:
                    ds[t, b, j] = d_skip
            else:
                dr = dh * g
            dg = dh * r
            dct = dc + (dg * (one - g * g) if use_tanh else dg)
            da_f = dct * (c_prev - U_c) * f * (one - f)
            da_r = dr * r * (one - r)
            dU[t, b, j] = dct * (one - f)
            dU[t, b, H + j] = da_f
            dU[t, b, 2 * H + j] = da_r
            dc = dct * f
            if has_v:
                dc = dc + da_f * v_f + da_r * v_r
                dv_f += da_f * c_prev
                dv_r += da_r * c_prev
        dc0[b, j] = dc
        dv_part[b, j] = dv_f
        dv_part[b, H + j] = dv_r

    return recurrence, recurrence_backward


@functools.lru_cache(maxsize=None)
def _reduction_kernels(dtype):
    """``(column_sums, add_skip)``: what backward does after the recurrence, the same for every model."""
    _, zero, _ = _activations.scalars(dtype)

    @cuda.jit
    def column_sums(A, col0, out):
        """out[n] = sum_m A[m, col0 + n]: one thread per column, so a warp reads a contiguous row segment."""
        n = cuda.grid(1)
        if n < out.shape[0]:
            acc = zero
            for m in range(A.shape[0]):
                acc += A[m, col0 + n]
            out[n] = acc

    @cuda.jit
    def add_skip(dx, ds, off):
        """dx[t, b, off + j] += ds[t, b, j]: the identity skip's gradient, added after dx = dU W."""
        T, B, H = ds.shape
        i = cuda.grid(1)
        if i < T * B * H:
            tb = i // H
            j = i - tb * H
            t = tb // B
            b = tb - t * B
            dx[t, b, off + j] += ds[t, b, j]

    return column_sums, add_skip


def _model_kernels(host):
    """The kernels of the model ``host`` (its dtype and options, see :func:`_kernels`)."""
    return _kernels(np.dtype(host.dtype), host.skip, host.skip_offset, host.alpha, host.activation, host.v is not None)


def upload(params) -> _device.DeviceParams:
    """Copy the parameters to the device once, for repeated GPU calls (a :class:`~refrnn.cuda._device.DeviceParams`).

    ``b`` and ``v`` go up as one array ``vb`` (2 or 4, H): rows b_f, b_r, then v_f, v_r when the model has
    v terms, which the recurrence kernels take as one argument. ``P.b`` and ``P.v`` are views of it, so
    the stacked copy can never disagree with them.
    """
    if isinstance(params, _device.DeviceParams):
        return params
    host = _device.host_params(params, SRUParams)
    H = host.hidden_size
    arrays = {"W": cuda.to_device(np.ascontiguousarray(host.W))}
    per_unit = host.b if host.v is None else np.concatenate([host.b, host.v])
    arrays["vb"] = vb = cuda.to_device(np.ascontiguousarray(per_unit.reshape(-1, H)))
    arrays["b"] = vb[B_F : B_R + 1].reshape(2 * H)
    if host.v is not None:
        arrays["v"] = vb[V_F : V_R + 1].reshape(2 * H)
    return _device.DeviceParams(host, arrays)


def _unit_params(host, P):
    """``vb`` of :func:`upload`; for parameters uploaded by another module's ``upload``, stacked here."""
    if "vb" in P.arrays:
        return P.arrays["vb"]
    H = host.hidden_size
    if host.v is None:
        return P.b.reshape(2, H)
    vb = _device.empty((4, H), host.dtype)
    vb[B_F : B_R + 1].copy_to_device(P.b.reshape(2, H))
    vb[V_F : V_R + 1].copy_to_device(P.v.reshape(2, H))
    return vb


@functools.lru_cache(maxsize=None)
def _dummy(shape, dtype):
    """A placeholder for an argument a launch does not use (never written): made once, not per call."""
    return cuda.to_device(np.zeros(shape, dtype=dtype))


def _gemm_for(gemm, tile):
    """The strategy's ``gemm(A, B, C, trans_a, trans_b)``: the vendor one, or refrnn's tiled kernel."""
    if gemm is not None:
        return gemm
    return functools.partial(matmul.tiled_gemm, tile=tile)


def recurrence(params, U, x, c0, h, c_T):
    """The recurrence of :func:`forward` in inference, alone, in place on device arrays: ``U = x W^T``
    (T, B, kH), ``x`` (T, B, D) (read by the identity skip), ``c0`` (B, H); writes ``h`` (T, B, H) and
    ``c_T`` (B, H). No mask, nothing kept for backward."""
    host = _device.host_params(params, SRUParams)
    _recurrence(host, upload(params), U, x, c0, None, h, None, c_T)


def _recurrence(host, P, U, X, C0, d_pad, h, c, c_T):
    """Launch the forward recurrence kernel; ``c`` (T+1, B, H) receives every state, or is None
    (inference: only ``c_T`` is written)."""
    B, H = c_T.shape
    if B * H == 0:
        return
    dt = np.dtype(h.dtype)
    recurrence = _model_kernels(host)[0]
    recurrence[_device.launch(B * H)](
        U, X, _unit_params(host, P), C0, _dummy((1, 1), np.uint8) if d_pad is None else d_pad, h,
        _dummy((1, 1, 1), dt) if c is None else c, c_T, d_pad is not None, c is not None,
    )


@renamed(c0="state0")
def forward(params, x, state0=None, mask_pad=None, *, algorithm="auto", tile: int = TILE, store_cache: bool = True,
            product=None):
    """Run the SRU over ``x`` on the GPU; returns ``(y, c_T, cache)`` (``cache`` None without ``store_cache``).

    ``algorithm`` (formerly ``product=``): "auto" (cuBLAS when available, else tiled), "cublas", "tiled",
    or a callable ``gemm(A, B, C, trans_a, trans_b)``; ``tile`` is the tile edge of refrnn's product kernel.
    """
    host = _device.host_params(params, SRUParams)
    tile = _device.check_tile(tile)
    gemm = _gemm_for(matmul.resolve_product(algorithm_keyword(algorithm, product=product)), tile)
    dt, D, H, k = host.dtype, host.input_size, host.hidden_size, host.k
    X, on_device = _device.sequence_input(host, x)
    T, B, _ = X.shape
    C0 = _device.device_state("state0", state0, ("B", "H"), {"B": B, "H": H}, dtype=dt)
    pad = check_mask(mask_pad, T, B)
    P = upload(params)
    U = _device.empty((T, B, k * H), dt)
    if T * B > 0:
        gemm(X.reshape(T * B, D), P.W, U.reshape(T * B, k * H), trans_b=True)
    h = _device.empty((T, B, H), dt)
    c = _device.empty((T + 1, B, H), dt) if store_cache else None
    c_T = _device.empty((B, H), dt)
    d_pad = None if pad is None else cuda.to_device(pad.astype(np.uint8))
    _recurrence(host, P, U, X, C0, d_pad, h, c, c_T)
    cache = SRUDeviceCache(X, U, c, d_pad, on_device) if store_cache else None
    return _device.output(h, on_device), _device.output(c_T, on_device), cache


@renamed(c0="state0")
def forward_inference(params, x, state0=None, mask_pad=None, *, algorithm="auto", tile: int = TILE, product=None):
    """Inference forward: ``(y, c_T)``, nothing kept for backward (only ``c_T`` of the states is written)."""
    y, c_T, _ = forward(params, x, state0, mask_pad, algorithm=algorithm_keyword(algorithm, product=product), tile=tile,
                        store_cache=False)
    return y, c_T


@renamed(dc_T="dstate_T")
def backward(params, cache: SRUDeviceCache, dy, dstate_T=None, *, algorithm="auto", tile: int = TILE, product=None):
    """Backprop through time on the GPU; returns ``(grads, dx, dc0)`` equal to the reference's.

    ``grads`` is an :class:`SRUParams` of NumPy arrays; ``dx`` and ``dc0`` follow the placement of the
    forward pass's ``x`` (and ``dy`` may be given on the host or on the device either way).
    """
    host = _device.host_params(params, SRUParams)
    if not isinstance(cache, SRUDeviceCache):
        raise TypeError(f"cache: expected the SRUDeviceCache of refrnn.cuda.sru.forward, got {type(cache).__name__}")
    tile = _device.check_tile(tile)
    gemm = _gemm_for(matmul.resolve_product(algorithm_keyword(algorithm, product=product)), tile)
    dt, D, H, k = host.dtype, host.input_size, host.hidden_size, host.k
    X, U, c, d_pad, on_device = cache
    T, B, _ = X.shape
    if tuple(U.shape) != (T, B, k * H):
        raise ValueError(f"cache: its U has shape {tuple(U.shape)}, but params need (T, B, kH) = {(T, B, k * H)}")
    dims = {"T": T, "B": B, "H": H}
    dY, _ = _device.device_input("dy", dy, ("T", "B", "H"), dims, dtype=dt)
    dC = _device.device_state("dstate_T", dstate_T, ("B", "H"), dims, dtype=dt)
    P = upload(params)
    _, recurrence_backward, column_sums, add_skip = _model_kernels(host)

    dU = _device.empty((T, B, k * H), dt)
    ds = _device.empty((T, B, H), dt) if host.skip == "identity" else _dummy((1, 1, 1), dt)
    dc0 = _device.empty((B, H), dt)
    dv_part = _device.empty((B, 2 * H), dt)  # each (b, j) thread's share of dv, summed over b below
    if B * H > 0:
        recurrence_backward[_device.launch(B * H)](
            U, X, _unit_params(host, P), c, _dummy((1, 1), np.uint8) if d_pad is None else d_pad, dY, dC, dU, ds,
            dc0, dv_part, d_pad is not None,
        )
    else:
        dc0.copy_to_device(dC)
    flat = dU.reshape(T * B, k * H)
    dW = _device.empty((k * H, D), dt)
    dx = _device.empty((T, B, D), dt)
    db = _device.empty(2 * H, dt)
    dv = _device.empty(2 * H, dt)
    if T * B > 0:
        gemm(flat, X.reshape(T * B, D), dW, trans_a=True)
        gemm(flat, P.W, dx.reshape(T * B, D))
    else:
        dW.copy_to_device(np.zeros((k * H, D), dt))
        dx.copy_to_device(np.zeros((T, B, D), dt))
    column_sums[_device.launch(2 * H)](flat, H, db)
    column_sums[_device.launch(2 * H)](dv_part, 0, dv)
    if host.skip == "identity" and T * B * H > 0:
        add_skip[_device.launch(T * B * H)](dx, ds, host.skip_offset)
    grads = host.replace(W=dW.copy_to_host(), v=None if host.v is None else dv.copy_to_host(), b=db.copy_to_host())
    return grads, _device.output(dx, on_device), _device.output(dc0, on_device)
