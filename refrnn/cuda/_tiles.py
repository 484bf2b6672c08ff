"""The pieces of the per-step kernels that every GPU cell shares: which ``(b, j)`` a thread owns, and the
tiled shared-memory product of a batch of rows with some gates' rows of a stacked weight matrix.

Two thread layouts are used throughout :mod:`refrnn.cuda`:

* *tiled*: a block of ``tile x tile`` threads owns ``tile`` batch rows (``threadIdx.y``) and ``tile``
  hidden units (``threadIdx.x``), so that it can share tiles of ``h_{t-1}`` and of ``W_h`` in shared
  memory (:func:`tile_unit`, :func:`gate_products`; launched with :func:`tile_grid`);
* *flat*: one thread per element of a ``(rows, n)`` array, consecutive threads on consecutive columns so
  that a warp reads and writes a contiguous run (:func:`flat_unit`; launched with
  :func:`refrnn.cuda._device.launch`).
"""

from __future__ import annotations

import functools

import numpy as np

from . import _activations, _device

cuda = _device.require_cuda()  # module global: the simulator swaps it for its fake module in kernels


@functools.lru_cache(maxsize=None)
def tile_unit(tile: int):
    """The device function ``tile_unit() -> (b, j)``: the batch row and hidden unit of this thread in the
    tiled layout (thread x walks units, so a warp writes a contiguous run of ``h[t, b, :]``)."""

    @cuda.jit(device=True)
    def tile_unit():
        return cuda.blockIdx.y * tile + cuda.threadIdx.y, cuda.blockIdx.x * tile + cuda.threadIdx.x

    return tile_unit


def tile_grid(B: int, H: int, tile: int):
    """The launch configuration ``(blocks, threads)`` of a tiled kernel over B batch rows and H units."""
    return (_device.grid(H, tile), _device.grid(B, tile)), (tile, tile)


@cuda.jit(device=True)
def flat_unit(n):
    """``(row, col)`` of this thread in the flat layout over an array with ``n`` columns. Rows past the
    array's end mean the thread has nothing to do (the caller checks ``row < rows``)."""
    i = cuda.grid(1)
    row = i // n
    return row, i - row * n


@functools.lru_cache(maxsize=None)
def gate_products(dtype: np.dtype, tile: int, ngates: int, nblocks: int):
    """The device function ``products(src, W, gate0, acc)``: for this thread's ``(b, j)`` (tiled layout),
    ``acc[q] = sum_k src[b, k] * W[(gate0 + q) * H + j, k]`` for ``q < ngates``, where ``W`` stacks
    ``nblocks`` gate blocks of ``H`` rows (3 for the GRU, 4 for the LSTM) and ``src`` is ``(B, K)``.

    Block (bx, by) covers batch rows ``by*tile..`` and units ``bx*tile..`` *for all ngates gates at once*:
    each K-step loads one tile of ``src`` and one tile of each gate's rows of ``W`` into shared memory,
    every thread loading one element of each, so the epilogue of the calling kernel finds all the
    pre-activations of its ``(b, j)`` in ``acc`` without the product going through global memory. Every
    thread of the block must call it (it synchronises the block).
    """
    nbt, zero, _ = _activations.scalars(dtype)
    pad = tile + 1  # one padding column: threads of a warp read a column of sh_w in distinct banks

    @cuda.jit(device=True)
    def products(src, W, gate0, acc):
        B, K = src.shape
        H = W.shape[0] // nblocks
        sh_s = cuda.shared.array((tile, pad), nbt)
        sh_w = cuda.shared.array((ngates, tile, pad), nbt)
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
