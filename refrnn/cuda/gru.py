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
from . import _activations, _device, matmul
from .._moved import algorithm_keyword, renamed
from ._device import upload  # noqa: F401 - part of this module's API (upload(params) once, call many times)

cuda = _device.require_cuda()  # module global: the simulator swaps it for its fake module in kernels

TILE = matmul.TILE
POINTWISE_BLOCK = 256


@functools.lru_cache(maxsize=None)
def _kernels(dtype: np.dtype, tile: int):
    """The GRU kernels for one dtype and tile size (compiled on first launch)."""
    nbt, zero, one = _activations.scalars(dtype)
    pad = tile + 1  # one padding column: threads of a warp read a column of sh_w in distinct banks
    sigmoid = _activations.sigmoid(dtype)

    def gate_products(ngates):
        @cuda.jit(device=True)
        def products(src, W, gate0, acc, sh_s, sh_w):
            """acc[q] = sum_k src[b, k] * W[(gate0 + q) * H + j, k], q < ngates, for this thread's (b, j).

            Block (bx, by) covers batch rows by*tile.. and units bx*tile..; each K-step loads one tile of
            src and one tile of each gate's rows of W, every thread loading one element of each.
            """
            B, K = src.shape
            H = W.shape[0] // 3
            tx = cuda.threadIdx.x
            ty = cuda.threadIdx.y
            b = cuda.blockIdx.y * tile + ty
            u = cuda.blockIdx.x * tile + ty  # the W row this thread loads (thread tx reads column k0+tx)
            for q in range(ngates):
                acc[q] = zero
            for k0 in range(0, K, tile):
                k = k0 + tx
                sh_s[ty, tx] = src[b, k] if (b < B and k < K) else zero
                for q in range(ngates):
                    sh_w[q, ty, tx] = W[(gate0 + q) * H + u, k] if (u < H and k < K) else zero
                cuda.syncthreads()
                for kk in range(tile):
                    s = sh_s[ty, kk]
                    for q in range(ngates):
                        acc[q] += s * sh_w[q, tx, kk]
                cuda.syncthreads()

        return products

    products3 = gate_products(3)
    products2 = gate_products(2)
    products1 = gate_products(1)

    @cuda.jit
    def step_after(ax, W_h, b_h, h, t):
        """h[t+1] from h[t], reset="after": the r, z, n products and the whole update in one kernel."""
        sh_s = cuda.shared.array((tile, pad), nbt)
        sh_w = cuda.shared.array((3, tile, pad), nbt)
        acc = cuda.local.array(3, nbt)
        h_prev = h[t]
        products3(h_prev, W_h, 0, acc, sh_s, sh_w)
        B, H = h_prev.shape
        j = cuda.blockIdx.x * tile + cuda.threadIdx.x
        b = cuda.blockIdx.y * tile + cuda.threadIdx.y
        if b < B and j < H:
            r = sigmoid(ax[t, b, j] + (acc[0] + b_h[j]))
            z = sigmoid(ax[t, b, H + j] + (acc[1] + b_h[H + j]))
            g = acc[2] + b_h[2 * H + j]
            n = math.tanh(ax[t, b, 2 * H + j] + r * g)
            h[t + 1, b, j] = (one - z) * n + z * h_prev[b, j]

    @cuda.jit
    def step_before_rz(ax, W_h, b_h, h, t, z_buf, rh_buf):
        """reset="before", first half: r and z of step t; stores z and r * h_{t-1}."""
        sh_s = cuda.shared.array((tile, pad), nbt)
        sh_w = cuda.shared.array((2, tile, pad), nbt)
        acc = cuda.local.array(2, nbt)
        h_prev = h[t]
        products2(h_prev, W_h, 0, acc, sh_s, sh_w)
        B, H = h_prev.shape
        j = cuda.blockIdx.x * tile + cuda.threadIdx.x
        b = cuda.blockIdx.y * tile + cuda.threadIdx.y
        if b < B and j < H:
            r = sigmoid(ax[t, b, j] + (acc[0] + b_h[j]))
            z_buf[b, j] = sigmoid(ax[t, b, H + j] + (acc[1] + b_h[H + j]))
            rh_buf[b, j] = r * h_prev[b, j]

    @cuda.jit
    def step_before_n(ax, W_h, b_h, h, t, z_buf, rh_buf):
        """reset="before", second half: n = tanh(a_n + W_hn (r * h) + b_hn) and the update."""
        sh_s = cuda.shared.array((tile, pad), nbt)
        sh_w = cuda.shared.array((1, tile, pad), nbt)
        acc = cuda.local.array(1, nbt)
        products1(rh_buf, W_h, 2, acc, sh_s, sh_w)
        B, H = rh_buf.shape
        j = cuda.blockIdx.x * tile + cuda.threadIdx.x
        b = cuda.blockIdx.y * tile + cuda.threadIdx.y
        if b < B and j < H:
            n = math.tanh(ax[t, b, 2 * H + j] + (acc[0] + b_h[2 * H + j]))
            z = z_buf[b, j]
            h[t + 1, b, j] = (one - z) * n + z * h[t, b, j]

    # --- point-wise kernels of the cuBLAS strategy: one thread per (b, j) -------------------------
    # ax holds W_x x without b_x there (the vendor product has no bias); gh holds W_h h (or W_hn (r*h)).

    @cuda.jit
    def pointwise_after(ax, gh, b_x, b_h, h, t):
        B, H = h.shape[1], h.shape[2]
        i = cuda.grid(1)
        if i < B * H:
            b = i // H
            j = i - b * H
            r = sigmoid((ax[t, b, j] + b_x[j]) + (gh[b, j] + b_h[j]))
            z = sigmoid((ax[t, b, H + j] + b_x[H + j]) + (gh[b, H + j] + b_h[H + j]))
            g = gh[b, 2 * H + j] + b_h[2 * H + j]
            n = math.tanh((ax[t, b, 2 * H + j] + b_x[2 * H + j]) + r * g)
            h[t + 1, b, j] = (one - z) * n + z * h[t, b, j]

    @cuda.jit
    def pointwise_before_rz(ax, gh, b_x, b_h, h, t, z_buf, rh_buf):
        B, H = h.shape[1], h.shape[2]
        i = cuda.grid(1)
        if i < B * H:
            b = i // H
            j = i - b * H
            r = sigmoid((ax[t, b, j] + b_x[j]) + (gh[b, j] + b_h[j]))
            z_buf[b, j] = sigmoid((ax[t, b, H + j] + b_x[H + j]) + (gh[b, H + j] + b_h[H + j]))
            rh_buf[b, j] = r * h[t, b, j]

    @cuda.jit
    def pointwise_before_n(ax, gn, b_x, b_h, h, t, z_buf):
        B, H = h.shape[1], h.shape[2]
        i = cuda.grid(1)
        if i < B * H:
            b = i // H
            j = i - b * H
            n = math.tanh((ax[t, b, 2 * H + j] + b_x[2 * H + j]) + (gn[b, j] + b_h[2 * H + j]))
            z = z_buf[b, j]
            h[t + 1, b, j] = (one - z) * n + z * h[t, b, j]

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
    y, h_T = _run(params, x, state0, algorithm_keyword(algorithm, product=product), tile)
    return y, h_T, None


@renamed(h0="state0")
def forward_inference(params, x, state0=None, *, algorithm="tiled", tile: int = TILE, product=None):
    """:func:`forward` without the cache: ``(y, h_T)``."""
    return _run(params, x, state0, algorithm_keyword(algorithm, product=product), tile)


def _run(params, x, h0, product, tile):
    host = _device.host_params(params, GRUParams)
    tile = _device.check_tile(tile)
    gemm = matmul.resolve_product(product)
    dt = host.dtype
    D, H = host.input_size, host.hidden_size
    X, on_device = _device.device_input("x", x, ("T", "B", "D"), {"D": D}, dtype=dt)
    T, B, _ = X.shape
    h = _device.empty((T + 1, B, H), dt)  # h_0..h_T: each step reads h[t] and writes h[t+1]
    h[0].copy_to_device(_device.device_state("state0", h0, ("B", "H"), {"B": B, "H": H}, dtype=dt))
    if T == 0 or B == 0:
        return _device.output(h[1:], on_device), _device.output(h[T], on_device)
    P = _device.upload(host) if not isinstance(params, _device.DeviceParams) else params
    ax = matmul.input_projection(P, X, gemm, tile)
    _recur(host, P, ax, h, gemm, tile)
    return _outputs(h, T, on_device)


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
        blocks, threads = (_device.grid(H, tile), _device.grid(B, tile)), (tile, tile)
        for t in range(T):
            if host.reset == "after":
                k["step_after"][blocks, threads](ax, P.W_h, P.b_h, h, t)
            else:
                k["step_before_rz"][blocks, threads](ax, P.W_h, P.b_h, h, t, z_buf, rh_buf)
                k["step_before_n"][blocks, threads](ax, P.W_h, P.b_h, h, t, z_buf, rh_buf)
        return
    threads = min(POINTWISE_BLOCK, B * H)
    blocks = _device.grid(B * H, threads)
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


def _outputs(h, T, on_device):
    if on_device:  # y is a view of the state buffer; h_T gets its own memory like the reference's copy
        h_T = _device.empty(h.shape[1:], h.dtype)
        h_T.copy_to_device(h[T])
        return h[1:], h_T
    y = h[1:].copy_to_host()  # the one copy out
    return y, y[T - 1].copy()
