"""The recurrent products alone, compiled: what ``refrnn bench`` times as the GEMM bound.

Compiled with the kernels' own options and product helper, so that it times exactly the BLAS call
the fast paths make (a Python loop around it would add a dispatch per step to what it measures).
"""

from __future__ import annotations


from ..jit import _kernels
from ..jit._cache import njit


@njit(**_kernels.JIT)
def products_only(h, W_T, out, steps):
    """``steps`` recurrent products ``h @ W_T`` and nothing else."""
    for _ in range(steps):
        _kernels._recurrent_product(h, W_T, out)
