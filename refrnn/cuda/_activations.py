"""What every GPU cell's kernels share, per dtype: typed constants and device functions."""

from __future__ import annotations

import functools
import math

import numpy as np

from . import _device

cuda = _device.require_cuda()  # module global: the simulator swaps it for its fake module in kernels


def scalars(dtype: np.dtype):
    """``(nbt, zero, one)``: the numba scalar type of ``dtype`` and its 0 and 1. Typed constants keep
    float32 kernels in float32 arithmetic (a Python float would promote every expression to float64)."""
    from numba import from_dtype

    nbt = from_dtype(np.dtype(dtype))
    return nbt, nbt(0), nbt(1)


@functools.lru_cache(maxsize=None)
def sigmoid(dtype: np.dtype):
    """The device function ``sigmoid(a)`` in ``dtype`` arithmetic (typed constants keep float32 in float32)."""
    _, zero, one = scalars(dtype)

    @cuda.jit(device=True)
    def sigmoid(a):
        # Two branches so exp never overflows (the simulator raises on overflow; a GPU would return inf,
        # which gives the same limit).
        if a >= zero:
            return one / (one + math.exp(-a))
        e = math.exp(a)
        return e / (one + e)

    return sigmoid
