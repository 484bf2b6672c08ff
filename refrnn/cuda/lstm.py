r"""LSTM forward over a whole sequence on the GPU: the fast twin of :mod:`refrnn.cells.lstm` (inference).

Equations (the same as the reference; gates stacked i, f, g, o as in PyTorch)::

    a_t = W_x x_t + b_x                                  all T steps in one product
    [i, f, g, o] pre-activations = a_t + W_h h_{t-1} + b_h
    i_t, f_t, o_t = sigmoid(.)        g_t = tanh(.)
    c_t = f_t * c_{t-1} + i_t * g_t
    h_t = o_t * tanh(c_t)

Shapes: x (T, B, D); state0 the pair (h0, c0), each (B, H); y (T, B, H); state_T the pair (h_T, c_T).
Parameters: a :class:`refrnn.cells.lstm.LSTMParams`, or :func:`upload` of one.

``algorithm="tiled"`` (default; ``product=`` is the keyword's former name): one kernel per step; a block of ``tile x tile`` threads owns ``tile``
batch rows and ``tile`` hidden units for all four gates, walks H in shared-memory tiles of h_{t-1} and of
the i, f, g, o rows of W_h, and applies the non-linearities and the c, h update in its epilogue.
``algorithm="cublas"`` (or a callable ``gemm(A, B, C, trans_a, trans_b)``): cuBLAS product, then one fused
point-wise kernel. The input projection of all T steps is one product; one copy in, one copy out.

The contract of every fast path: :func:`forward` returns ``(y, (h_T, c_T), cache)`` (``cache`` None: there
is no GPU backward for the LSTM) and :func:`forward_inference` ``(y, (h_T, c_T))``.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ..cells.lstm import LSTMParams
from . import _activations, _device, _tiles, matmul
from .._moved import algorithm_keyword
from ._device import upload  # noqa: F401 - part of this module's API

cuda = _device.require_cuda()  # module global: the simulator swaps it for its fake module in kernels

TILE = matmul.TILE


@functools.lru_cache(maxsize=None)
def _kernels(dtype: np.dtype, tile: int):
    """The LSTM kernels for one dtype and tile size (compiled on first launch)."""
    nbt, _, _ = _activations.scalars(dtype)
    sigmoid = _activations.sigmoid(dtype)
    tile_unit, flat_unit = _tiles.tile_unit(tile), _tiles.flat_unit
    products4 = _tiles.gate_products(dtype, tile, 4, 4)

    @cuda.jit(device=True)
    def update(a_i, a_f, a_g, a_o, c, t, b, j, h):
        """The cell update of one (b, j) from its four pre-activations; c is the (2, B, H) ping-pong buffer."""
        i = sigmoid(a_i)
        f = sigmoid(a_f)
        g = math.tanh(a_g)
        o = sigmoid(a_o)
        c_new = f * c[t % 2, b, j] + i * g
        c[(t + 1) % 2, b, j] = c_new
        h[t + 1, b, j] = o * math.tanh(c_new)

    @cuda.jit
    def step(ax, W_h, b_h, h, c, t):
        """h[t+1], c_{t+1} from step t: the four gate products and the update in one kernel."""
        acc = cuda.local.array(4, nbt)
        products4(h[t], W_h, 0, acc)
        B, H = h.shape[1], h.shape[2]
        b, j = tile_unit()
        if b < B and j < H:
            update(
                (ax[t, b, j] + acc[0]) + b_h[j],
                (ax[t, b, H + j] + acc[1]) + b_h[H + j],
                (ax[t, b, 2 * H + j] + acc[2]) + b_h[2 * H + j],
                (ax[t, b, 3 * H + j] + acc[3]) + b_h[3 * H + j],
                c, t, b, j, h,
            )

    @cuda.jit
    def pointwise(ax, gh, b_x, b_h, h, c, t):
        """The cuBLAS strategy's epilogue: ax = W_x x (no bias), gh = W_h h_{t-1}; one thread per (b, j)."""
        B, H = h.shape[1], h.shape[2]
        b, j = flat_unit(H)
        if b < B:
            update(
                ((ax[t, b, j] + b_x[j]) + gh[b, j]) + b_h[j],
                ((ax[t, b, H + j] + b_x[H + j]) + gh[b, H + j]) + b_h[H + j],
                ((ax[t, b, 2 * H + j] + b_x[2 * H + j]) + gh[b, 2 * H + j]) + b_h[2 * H + j],
                ((ax[t, b, 3 * H + j] + b_x[3 * H + j]) + gh[b, 3 * H + j]) + b_h[3 * H + j],
                c, t, b, j, h,
            )

    return step, pointwise


def _state0(state0):
    if state0 is None:
        return None, None
    if not isinstance(state0, (tuple, list)) or len(state0) != 2:
        raise TypeError(f"state0: expected the pair (h, c) of arrays of shape (B, H), got {type(state0).__name__}")
    return state0


def project(params, x, *, algorithm="tiled", tile: int = TILE):
    """The first half of :func:`forward`: the input products of all T steps, ``a = x W_x^T`` (T, B, 4H),
    on the device (``x`` a device array (T, B, D); ``params`` uploaded or not)."""
    _device.host_params(params, LSTMParams)
    return matmul.input_projection(_device.upload(params), x, matmul.resolve_product(algorithm), _device.check_tile(tile))


def recurrence(params, ax, h, c, *, algorithm="tiled", tile: int = TILE):
    """The second half of :func:`forward`: the T recurrent steps, in place on device arrays, ``ax`` from
    :func:`project` with the same ``algorithm``, ``h`` (T+1, B, H) and the ring ``c`` (2, B, H) whose
    ``h[0]``, ``c[0]`` are the initial state."""
    _device.host_params(params, LSTMParams)
    _recur(_device.upload(params), ax, h, c, matmul.resolve_product(algorithm), _device.check_tile(tile))


def _recur(P, ax, h, c, gemm, tile):
    """The T recurrent steps in place on ``h`` (T+1, B, H) and ``c`` (2, B, H), h[0] and c[0] set."""
    T, B, H = ax.shape[0], ax.shape[1], h.shape[2]
    step, pointwise = _kernels(np.dtype(h.dtype), tile)
    if gemm is None:
        blocks, threads = _tiles.tile_grid(B, H, tile)
        for t in range(T):
            step[blocks, threads](ax, P.W_h, P.b_h, h, c, t)
        return
    gh = _device.empty((B, 4 * H), h.dtype)
    blocks, threads = _device.launch(B * H)
    for t in range(T):
        gemm(h[t], P.W_h, gh, trans_b=True)
        pointwise[blocks, threads](ax, gh, P.b_x, P.b_h, h, c, t)


def forward(params, x, state0=None, *, algorithm="tiled", tile: int = TILE, product=None):
    """Run the LSTM over ``x`` on the GPU; returns ``(y, (h_T, c_T), None)``: the reference's first two
    results, and no cache (there is no GPU backward).

    Placement as everywhere in :mod:`refrnn.cuda`: NumPy in, NumPy out; device arrays in, device arrays out.
    """
    return (*_run(params, x, state0, algorithm_keyword(algorithm, product=product), tile), None)


def forward_inference(params, x, state0=None, *, algorithm="tiled", tile: int = TILE, product=None):
    """:func:`forward` without the cache: ``(y, (h_T, c_T))``."""
    return _run(params, x, state0, algorithm_keyword(algorithm, product=product), tile)


def _run(params, x, state0, product, tile):
    host = _device.host_params(params, LSTMParams)
    extras = [n for n in ("w_ic", "w_fc", "w_oc", "W_hr") if getattr(host, n, None) is not None]
    if extras:
        raise ValueError(
            f"params: refrnn.cuda.lstm runs the plain LSTM; {', '.join(extras)} (peepholes / projection) are "
            f"not implemented on the GPU: use refrnn.cells.lstm for this model"
        )
    tile = _device.check_tile(tile)
    gemm = matmul.resolve_product(product)
    dt, H = host.dtype, host.hidden_size
    X, on_device = _device.sequence_input(host, x)
    T, B, _ = X.shape
    h0, c0 = _state0(state0)
    h = _device.state_buffer("state0[0] (h)", h0, T + 1, B, H, dt)  # h_0..h_T
    c = _device.state_buffer("state0[1] (c)", c0, 2, B, H, dt)  # c_t lives in c[t % 2]: only the current cell state is kept
    if T > 0 and B > 0:
        P = _device.upload(params)
        _recur(P, matmul.input_projection(P, X, gemm, tile), h, c, gemm, tile)
    y, h_T = _device.sequence_outputs(h, on_device)
    c_T = c[T % 2]
    return y, (h_T, _device.copy(c_T) if on_device else c_T.copy_to_host())
