r"""GRU forward over a whole sequence on the GPU: the fast twin of :mod:`refrnn.cells.gru` (inference).

Equations (the same as the reference, both reset conventions; ``*`` is the element-wise product)::

    a_t = W_x x_t + b_x                                              all T steps in one product
    r_t = sigmoid(a_r,t + W_hr h_{t-1} + b_hr)
    z_t = sigmoid(a_z,t + W_hz h_{t-1} + b_hz)
    n_t = tanh(a_n,t + r_t * (W_hn h_{t-1} + b_hn))                  reset="after"
    n_t = tanh(a_n,t + W_hn (r_t * h_{t-1}) + b_hn)                  reset="before"
    h_t = (1 - z_t) * n_t + z_t * h_{t-1}

Shapes: x (T, B, D); h0 (B, H); y (T, B, H) = h_1..h_T; h_T (B, H). Parameters: a
:class:`refrnn.cells.gru.GRUParams`, or :func:`upload` of one.

Two algorithms for the per-step recurrent product (``algorithm=``; ``product=`` is its former name):

``"tiled"`` (default)
    One kernel per step (two with reset="before"). A block of ``tile x tile`` threads owns ``tile`` batch
    rows and ``tile`` hidden units *for all three gates*: it walks H in shared-memory tiles of h_{t-1}
    and of the r, z, n rows of W_h, so each thread ends with the three pre-activations of its (b, j)
    and applies the gate non-linearities and the state update in the epilogue, without writing the
    product to memory. reset="before" needs r for *every* unit before the n product, a grid-wide
    dependency, so that convention takes one fused kernel for r, z (writing z and r * h) and one for n, h.
``"cublas"`` (or a callable ``gemm(A, B, C, trans_a, trans_b)``)
    The product through cuBLAS (CuPy or PyTorch), then one fused point-wise kernel for the gates and the
    update: the usual split, for comparison.

The input projection of all T steps is one product (refrnn's tiled kernel, or cuBLAS with
``algorithm="cublas"``). Everything stays on the device between steps: one copy in and one copy out.

The contract of every fast path: :func:`forward` returns ``(y, h_T, cache)`` (``cache`` None: there is no
GPU backward for the GRU) and :func:`forward_inference` ``(y, h_T)``.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ..cells.gru import GRUParams
from . import _activations, _device, _tiles, matmul
from .._moved import algorithm_keyword, renamed
from ._device import upload  # noqa: F401 - part of this module's API (upload(params) once, call many times)

cuda = _device.require_cuda()  # module global: the simulator swaps it for its fake module in kernels

TILE = matmul.TILE


@functools.lru_cache(maxsize=None)
def _kernels(dtype: np.dtype, tile: int):
    """The GRU kernels for one dtype and tile size (compiled on first launch)."""
    nbt, _, one = _activations.scalars(dtype)
    sigmoid = _activations.sigmoid(dtype)
    tile_unit, flat_unit = _tiles.tile_unit(tile), _tiles.flat_unit
    products3, products2, products1 = (_tiles.gate_products(dtype, tile, n, 3) for n in (3, 2, 1))

    @cuda.jit(device=True)
    def update(z, n, h_prev):
        return (one - z) * n + z * h_prev

    # --- tiled kernels: ax holds W_x x + b_x; acc the recurrent products of this thread's (b, j) ------

    @cuda.jit(device=True)
    def rz_tiled(ax, acc, b_h, t, b, j, H):
        r = sigmoid(ax[t, b, j] + (acc[0] + b_h[j]))
        z = sigmoid(ax[t, b, H + j] + (acc[1] + b_h[H + j]))
        return r, z

    @cuda.jit
    def step_after(ax, W_h, b_h, h, t):
        """h[t+1] from h[t], reset="after": the r, z, n products and the whole update in one kernel."""
        acc = cuda.local.array(3, nbt)
        products3(h[t], W_h, 0, acc)
        B, H = h.shape[1], h.shape[2]
        b, j = tile_unit()
        if b < B and j < H:
            r, z = rz_tiled(ax, acc, b_h, t, b, j, H)
            n = math.tanh(ax[t, b, 2 * H + j] + r * (acc[2] + b_h[2 * H + j]))
            h[t + 1, b, j] = update(z, n, h[t, b, j])

    @cuda.jit
    def step_before_rz(ax, W_h, b_h, h, t, z_buf, rh_buf):
        """reset="before", first half: r and z of step t; stores z and r * h_{t-1}."""
        acc = cuda.local.array(2, nbt)
        products2(h[t], W_h, 0, acc)
        B, H = h.shape[1], h.shape[2]
        b, j = tile_unit()
        if b < B and j < H:
            r, z = rz_tiled(ax, acc, b_h, t, b, j, H)
            z_buf[b, j] = z
            rh_buf[b, j] = r * h[t, b, j]

    @cuda.jit
    def step_before_n(ax, W_h, b_h, h, t, z_buf, rh_buf):
        """reset="before", second half: n = tanh(a_n + W_hn (r * h) + b_hn) and the update."""
        acc = cuda.local.array(1, nbt)
        products1(rh_buf, W_h, 2, acc)
        B, H = rh_buf.shape
        b, j = tile_unit()
        if b < B and j < H:
            n = math.tanh(ax[t, b, 2 * H + j] + (acc[0] + b_h[2 * H + j]))
            h[t + 1, b, j] = update(z_buf[b, j], n, h[t, b, j])

    # --- point-wise kernels of the cuBLAS strategy: one thread per (b, j) -------------------------
    # ax holds W_x x without b_x there (the vendor product has no bias); gh holds W_h h (or W_hn (r*h)).

    @cuda.jit(device=True)
    def rz_pointwise(ax, gh, b_x, b_h, t, b, j, H):
        r = sigmoid((ax[t, b, j] + b_x[j]) + (gh[b, j] + b_h[j]))
        z = sigmoid((ax[t, b, H + j] + b_x[H + j]) + (gh[b, H + j] + b_h[H + j]))
        return r, z

    @cuda.jit
    def pointwise_after(ax, gh, b_x, b_h, h, t):
        B, H = h.shape[1], h.shape[2]
        b, j = flat_unit(H)
        if b < B:
            r, z = rz_pointwise(ax, gh, b_x, b_h, t, b, j, H)
            n = math.tanh((ax[t, b, 2 * H + j] + b_x[2 * H + j]) + r * (gh[b, 2 * H + j] + b_h[2 * H + j]))
            h[t + 1, b, j] = update(z, n, h[t, b, j])

    @cuda.jit
    def pointwise_before_rz(ax, gh, b_x, b_h, h, t, z_buf, rh_buf):
        B, H = h.shape[1], h.shape[2]
        b, j = flat_unit(H)
        if b < B:
            r, z = rz_pointwise(ax, gh, b_x, b_h, t, b, j, H)
            z_buf[b, j] = z
            rh_buf[b, j] = r * h[t, b, j]

    @cuda.jit
    def pointwise_before_n(ax, gn, b_x, b_h, h, t, z_buf):
        B, H = h.shape[1], h.shape[2]
        b, j = flat_unit(H)
        if b < B:
            n = math.tanh((ax[t, b, 2 * H + j] + b_x[2 * H + j]) + (gn[b, j] + b_h[2 * H + j]))
            h[t + 1, b, j] = update(z_buf[b, j], n, h[t, b, j])

    return {
        "step_after": step_after,
        "step_before_rz": step_before_rz,
        "step_before_n": step_before_n,
        "pointwise_after": pointwise_after,
        "pointwise_before_rz": pointwise_before_rz,
        "pointwise_before_n": pointwise_before_n,
    }


@renamed(h0="state0")
def forward(params, x, state0=None, *, algorithm="tiled", tile: int = TILE, product=None):
    """Run the GRU over ``x`` on the GPU; returns ``(y, h_T, None)``: the reference's first two results,
    and no cache (there is no GPU backward).

    ``x`` and ``state0`` (h_0) may be NumPy arrays (copied in; results copied out) or device arrays (used in place;
    results returned as device arrays). ``algorithm`` picks the recurrent product (module docstring;
    ``product=`` is its former name); ``tile`` is the thread-block tile edge of refrnn's kernels (a
    power of two <= 32).
    """
    return (*_run(params, x, state0, algorithm_keyword(algorithm, product=product), tile), None)


@renamed(h0="state0")
def forward_inference(params, x, state0=None, *, algorithm="tiled", tile: int = TILE, product=None):
    """:func:`forward` without the cache: ``(y, h_T)``."""
    return _run(params, x, state0, algorithm_keyword(algorithm, product=product), tile)


def _run(params, x, h0, product, tile):
    host = _device.host_params(params, GRUParams)
    tile = _device.check_tile(tile)
    gemm = matmul.resolve_product(product)
    X, on_device = _device.sequence_input(host, x)
    T, B, _ = X.shape
    h = _device.state_buffer("state0", h0, T + 1, B, host.hidden_size, host.dtype)  # h_0..h_T
    if T > 0 and B > 0:
        P = _device.upload(params)
        _recur(host, P, matmul.input_projection(P, X, gemm, tile), h, gemm, tile)
    return _device.sequence_outputs(h, on_device)


def project(params, x, *, algorithm="tiled", tile: int = TILE):
    """The first half of :func:`forward`: the input products of all T steps, ``a = x W_x^T`` (T, B, 3H),
    on the device (``x`` a device array (T, B, D); ``params`` uploaded or not)."""
    _device.host_params(params, GRUParams)
    return matmul.input_projection(_device.upload(params), x, matmul.resolve_product(algorithm), _device.check_tile(tile))


def recurrence(params, ax, h, *, algorithm="tiled", tile: int = TILE):
    """The second half of :func:`forward`: the T recurrent steps, in place on device arrays, ``ax`` from
    :func:`project` with the same ``algorithm`` and ``h`` (T+1, B, H) whose ``h[0]`` is the initial state."""
    host = _device.host_params(params, GRUParams)
    _recur(host, _device.upload(params), ax, h, matmul.resolve_product(algorithm), _device.check_tile(tile))


def _recur(host, P, ax, h, gemm, tile):
    """The T recurrent steps, in place on ``h`` (T+1, B, H) whose h[0] is set."""
    T, B, H = ax.shape[0], ax.shape[1], h.shape[2]
    dt = h.dtype
    k = _kernels(np.dtype(dt), tile)
    z_buf = rh_buf = None
    if host.reset == "before":
        z_buf, rh_buf = _device.empty((B, H), dt), _device.empty((B, H), dt)
    if gemm is None:
        blocks, threads = _tiles.tile_grid(B, H, tile)
        for t in range(T):
            if host.reset == "after":
                k["step_after"][blocks, threads](ax, P.W_h, P.b_h, h, t)
            else:
                k["step_before_rz"][blocks, threads](ax, P.W_h, P.b_h, h, t, z_buf, rh_buf)
                k["step_before_n"][blocks, threads](ax, P.W_h, P.b_h, h, t, z_buf, rh_buf)
        return
    blocks, threads = _device.launch(B * H)
    if host.reset == "after":
        gh = _device.empty((B, 3 * H), dt)
        for t in range(T):
            gemm(h[t], P.W_h, gh, trans_b=True)
            k["pointwise_after"][blocks, threads](ax, gh, P.b_x, P.b_h, h, t)
    else:
        gh, gn = _device.empty((B, 2 * H), dt), _device.empty((B, H), dt)
        W_hrz, W_hn = P.W_h[: 2 * H], P.W_h[2 * H :]
        for t in range(T):
            gemm(h[t], W_hrz, gh, trans_b=True)
            k["pointwise_before_rz"][blocks, threads](ax, gh, P.b_x, P.b_h, h, t, z_buf, rh_buf)
            gemm(rh_buf, W_hn, gn, trans_b=True)
            k["pointwise_before_n"][blocks, threads](ax, gn, P.b_x, P.b_h, h, t, z_buf)
