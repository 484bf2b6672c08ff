"""The device's reachable ceilings, measured: copy bandwidth and fused multiply-add throughput.

Used by :mod:`refrnn.bench.cuda` to turn kernel timings into fractions of what the device can do.
"""

from __future__ import annotations

import functools

import numpy as np

from ..cuda import _device

cuda = _device.require_cuda()  # module global: the simulator swaps it for its fake module in kernels

CHAINS = 8  # independent FMA chains per thread: enough to hide the FMA latency on every GPU since Volta


@functools.lru_cache(maxsize=None)
def fma_kernel(dtype: np.dtype):
    """``kernel[blocks, threads](out, n)``: each thread runs ``CHAINS`` chains of ``n`` FMAs (2 FLOP each)."""
    from numba import from_dtype

    nbt = from_dtype(dtype)
    a, c = nbt(0.999999), nbt(1e-7)

    @cuda.jit(fastmath=True)
    def fma(out, n):
        i = cuda.grid(1)
        x0 = x1 = x2 = x3 = x4 = x5 = x6 = x7 = nbt(i) * c
        for _ in range(n):
            x0 = x0 * a + c
            x1 = x1 * a + c
            x2 = x2 * a + c
            x3 = x3 * a + c
            x4 = x4 * a + c
            x5 = x5 * a + c
            x6 = x6 * a + c
            x7 = x7 * a + c
        out[i] = x0 + x1 + x2 + x3 + x4 + x5 + x6 + x7  # stored, so the chains are not dead code

    return fma


def fma_flops(timer, dtype, blocks: int, threads: int, iters: int) -> float:
    """FLOP/s of :func:`fma_kernel`; ``timer(fn)`` returns seconds per call of ``fn``."""
    out = cuda.device_array(blocks * threads, dtype=dtype)
    kernel = fma_kernel(np.dtype(dtype))
    seconds = timer(lambda: kernel[blocks, threads](out, iters))
    return 2 * CHAINS * iters * blocks * threads / seconds


def copy_bandwidth(timer, nbytes: int) -> float:
    """Bytes/s of a device-to-device copy of ``nbytes``: every byte is read once and written once."""
    src = cuda.device_array(nbytes // 4, dtype=np.float32)
    dst = cuda.device_array_like(src)
    seconds = timer(lambda: dst.copy_to_device(src))
    return 2 * src.nbytes / seconds
