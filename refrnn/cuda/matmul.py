r"""refrnn's own tiled shared-memory matrix product, and the cuBLAS alternative.

Equation::

    C = op(A) @ op(B) (+ bias broadcast over rows)      op(X) = X or X.T

Shapes: op(A) (M, K), op(B) (K, N), C (M, N), bias (N,). Every operand is a C-contiguous 2-d array;
a transposed operand is the untransposed array plus a flag, so the weights of a cell, stored (gH, D) as
in PyTorch, are used as they are for ``x @ W.T``.

Kernel: one thread per element of C; a block of ``tile x tile`` threads computes a ``tile x tile`` tile
of C and walks K in steps of ``tile``. Each step, the block's threads copy one tile of op(A) and one of
op(B) into shared memory, each thread reading consecutive addresses of the operand as stored (coalesced
for both orientations), then every thread reads ``tile`` values from each shared tile. So every global
element is read ``K / tile`` times fewer than by a naive kernel. Shared tiles have one padding column,
so the transposed stores hit distinct memory banks.

The same module exposes :func:`cublas_gemm`, the vendor product through CuPy or a CUDA build of
PyTorch, which wrap the Numba device arrays without a copy through ``__cuda_array_interface__``.
"""

from __future__ import annotations

import functools

import numpy as np

from . import _device

# A module global on purpose: the simulator swaps module globals bound to numba.cuda for its fake module.
cuda = _device.require_cuda()

TILE = 16  # 16 x 16 = 256 threads a block: full occupancy on every GPU since Kepler, 2 tiles of shared memory


@functools.lru_cache(maxsize=None)
def _gemm_kernel(dtype: np.dtype, tile: int):
    from numba import from_dtype

    nbt = from_dtype(dtype)
    zero = nbt(0)
    pad = tile + 1

    @cuda.jit(device=True)
    def load_tile(X, transposed, sh, r0, c0, R, C):
        """``sh[r, c] = op(X)[r0 + r, c0 + c]`` for this thread's one element (zero past op(X)'s (R, C) edge).

        Thread (ty, tx) loads the element whose *stored* fast index is tx, so a warp reads one run of
        consecutive addresses whichever way X is stored: (R, C), or (C, R) when ``transposed``.
        """
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        if transposed:
            r, c = r0 + tx, c0 + ty
            sh[tx, ty] = X[c, r] if (r < R and c < C) else zero
        else:
            r, c = r0 + ty, c0 + tx
            sh[ty, tx] = X[r, c] if (r < R and c < C) else zero

    @cuda.jit
    def gemm(A, B, C, bias, trans_a, trans_b, has_bias):
        M, N = C.shape
        K = A.shape[0] if trans_a else A.shape[1]
        sh_a = cuda.shared.array((tile, pad), nbt)  # sh_a[m, k]: a tile of op(A)
        sh_b = cuda.shared.array((tile, pad), nbt)  # sh_b[k, n]: a tile of op(B)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        m0 = cuda.blockIdx.y * tile
        n0 = cuda.blockIdx.x * tile
        acc = zero
        for k0 in range(0, K, tile):
            load_tile(A, trans_a, sh_a, m0, k0, M, K)
            load_tile(B, trans_b, sh_b, k0, n0, K, N)
            cuda.syncthreads()
            for kk in range(tile):
                acc += sh_a[ty, kk] * sh_b[kk, tx]
            cuda.syncthreads()
        m = m0 + ty
        n = n0 + tx
        if m < M and n < N:
            C[m, n] = acc + bias[n] if has_bias else acc

    return gemm


def gemm(A, B, C, *, bias=None, trans_a: bool = False, trans_b: bool = False, tile: int = TILE) -> None:
    """``C[...] = op(A) @ op(B) (+ bias)`` on device arrays (no checks beyond shapes: internal use)."""
    M, N = C.shape
    a_rows, K = A.shape[::-1] if trans_a else A.shape
    b_rows, b_cols = B.shape[::-1] if trans_b else B.shape
    if (a_rows, b_rows, b_cols) != (M, K, N):
        ta, tb = ".T" if trans_a else "", ".T" if trans_b else ""
        raise ValueError(f"gemm: op(A) = {A.shape}{ta} times op(B) = {B.shape}{tb} does not give C of shape {C.shape}")
    if M == 0 or N == 0:
        return
    has_bias = bias is not None
    if not has_bias:
        bias = _dummy(C.dtype)
    kernel = _gemm_kernel(np.dtype(C.dtype), tile)
    kernel[(_device.grid(N, tile), _device.grid(M, tile)), (tile, tile)](A, B, C, bias, trans_a, trans_b, has_bias)


@functools.lru_cache(maxsize=None)
def _dummy(dtype):
    return cuda.to_device(np.zeros(1, dtype=dtype))


def matmul(a, b, *, bias=None, trans_a: bool = False, trans_b: bool = False, tile: int = TILE):
    """``op(a) @ op(b) (+ bias)`` with the tiled kernel; host arrays in, host array out, or device in and out.

    Shapes: op(a) (M, K), op(b) (K, N), bias (N,) -> (M, N). ``a`` fixes the dtype; the others must match.
    """
    tile = _device.check_tile(tile)
    dtype = _device.dtype_of(a)
    A, on_device = _device.device_input("a", a, ("K", "M") if trans_a else ("M", "K"), dtype=dtype)
    M, K = (A.shape[1], A.shape[0]) if trans_a else A.shape
    B, _ = _device.device_input("b", b, ("N", "K") if trans_b else ("K", "N"), {"K": K}, dtype=dtype)
    N = B.shape[0] if trans_b else B.shape[1]
    bias_d = None if bias is None else _device.device_input("bias", bias, ("N",), {"N": N}, dtype=dtype)[0]
    C = _device.empty((M, N), dtype)
    gemm(A, B, C, bias=bias_d, trans_a=trans_a, trans_b=trans_b, tile=tile)
    return _device.output(C, on_device)


# --- the vendor product ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def cublas_gemm():
    """``gemm(A, B, C, trans_a=False, trans_b=False)``: ``C[...] = op(A) @ op(B)`` through cuBLAS, or a
    RuntimeError saying why not.

    CuPy is preferred (it is lighter to import); a CUDA build of PyTorch works too. Both wrap the Numba
    device arrays in place through ``__cuda_array_interface__`` and run on the legacy default stream, the
    one Numba launches on, so no extra synchronisation is needed. ``gemm.provider`` names the library.
    """
    if _device.simulated():
        raise RuntimeError("product='cublas' cannot run under the CUDA simulator (cuBLAS needs real device memory)")
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:

            def gemm_cupy(A, B, C, trans_a=False, trans_b=False):
                a, b = cupy.asarray(A), cupy.asarray(B)
                cupy.matmul(a.T if trans_a else a, b.T if trans_b else b, out=cupy.asarray(C))

            gemm_cupy.provider = "cupy " + cupy.__version__
            return gemm_cupy
    except Exception:  # noqa: BLE001 - CuPy missing or unusable: try PyTorch
        pass
    try:
        import torch

        if torch.cuda.is_available():

            def gemm_torch(A, B, C, trans_a=False, trans_b=False):
                a, b = torch.as_tensor(A, device="cuda"), torch.as_tensor(B, device="cuda")
                torch.matmul(a.T if trans_a else a, b.T if trans_b else b, out=torch.as_tensor(C, device="cuda"))

            gemm_torch.provider = "torch " + torch.__version__
            return gemm_torch
    except Exception:  # noqa: BLE001
        pass
    raise RuntimeError("product='cublas' needs CuPy or a CUDA build of PyTorch; neither is importable with a GPU")


def tiled_gemm(A, B, C, trans_a=False, trans_b=False, *, tile: int = TILE):
    """:func:`gemm` with the vendor products' signature (no bias)."""
    gemm(A, B, C, trans_a=trans_a, trans_b=trans_b, tile=tile)


def input_projection(P, X, vendor, tile):
    """``a = x W_x^T`` for all T steps in one product: (T, B, G*H) on the device, from uploaded params ``P``.

    refrnn's tiled kernel (``vendor`` None) adds ``b_x`` here; a vendor product has no bias, so the
    point-wise kernels of that strategy add it.
    """
    T, B, D = X.shape
    G = P.W_x.shape[0]
    ax = _device.empty((T, B, G), X.dtype)
    if vendor is None:
        gemm(X.reshape(T * B, D), P.W_x, ax.reshape(T * B, G), bias=P.b_x, trans_b=True, tile=tile)
    else:
        vendor(X.reshape(T * B, D), P.W_x, ax.reshape(T * B, G), trans_b=True)
    return ax


def resolve_product(product):
    """The product strategy (the ``algorithm=`` of the GPU paths): ``"tiled"`` (refrnn's kernels), ``"cublas"``, ``"auto"`` (cuBLAS when CuPy or
    PyTorch-CUDA can run it, else tiled), or a callable ``gemm(A, B, C, trans_a=False, trans_b=False)``
    computing ``C[...] = op(A) @ op(B)`` on device arrays (any vendor product; the tests pass a host-side
    one to run the point-wise kernels under the simulator). Returns None for "tiled", else the callable."""
    if callable(product):
        return product
    if product == "tiled":
        return None
    if product == "cublas":
        return cublas_gemm()
    if product == "auto":
        try:
            return cublas_gemm()
        except RuntimeError:
            return None
    raise ValueError(
        f"algorithm: unknown value {product!r}; expected 'tiled', 'cublas', 'auto' or a callable gemm(A, B, C, trans_a, trans_b)"
    )
