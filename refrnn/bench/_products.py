"""The recurrent products alone, compiled: what ``refrnn bench`` times as the GEMM bound (and, where
the forward takes it, the compiled step product's own time).

Compiled with the kernels' own options and product helper, so that it times exactly the call the
fast paths make (a Python loop around it would add a dispatch per step to what it measures).
"""

from __future__ import annotations

import numpy as np

from ..jit import _kernels
from ..jit._cache import njit


@njit(**_kernels.JIT)
def products_only(h, W_T, out, steps, rowcast):
    """``steps`` products ``h @ W_T`` and nothing else, each as a step of the fast paths makes it
    (:func:`refrnn.jit._kernels._step_product`: transposed for a few rows, or by the compiled kernel of
    :mod:`refrnn.jit._rowcast` with ``rowcast``; with its C-ordered weight copied once here as the fast
    paths hold theirs)."""
    W = np.ascontiguousarray(W_T.T)
    work = _kernels.step_work(W.shape[0], W.shape[1], h.shape[0], out.dtype)
    for _ in range(steps):
        _kernels._step_product(h, W, W_T, work, out, rowcast)
