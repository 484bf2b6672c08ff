"""The recurrent products alone, compiled: what ``refrnn bench`` times as the GEMM bound (and, where
the forward takes it, the compiled step product's own time).

Compiled with the kernels' own options and product helper, so that it times exactly the call the
fast paths make (a Python loop around it would add a dispatch per step to what it measures).
"""

from __future__ import annotations

import numpy as np
from numba import prange

from ..jit import _kernels, ccgru
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


@njit(cache=True, fastmath={"contract", "reassoc"}, error_model="numpy", parallel=True)
def weights_streamed(Ut, Wt, active, bs, workers, out):
    """The memory traffic of the conditional GRU's block path and nothing else: at every step t, each
    weight tile of every block active at t (``active`` (T, g), in some sample) is read once, summed
    into ``out[w]`` so the reads are not dead code. ``Ut`` (H/tu, H, 2tu) and ``Wt`` (H/tu, D, 2tu)
    are :func:`refrnn.jit.ccgru.prepare`'s block layout; ``workers`` threads share the blocks and
    take them in the order :func:`refrnn.jit.ccgru.block_forward` does (its ``blocks_of`` and
    ``block_order``: w, w + workers, ..., reversed every other step), so the weights get the same
    chance to be found in L2. A vectorised sum reads far faster than L3 delivers, so its time is
    what streaming those bytes costs."""
    T, g = active.shape
    tu = Ut.shape[2] // 2
    for t in range(T):
        for w in prange(workers):
            acc = Ut.dtype.type(0.0)
            nb = ccgru.blocks_of(w, workers, g)
            for i in range(nb):
                kb = ccgru.block_order(w, workers, nb, t, i)
                if active[t, kb]:
                    for k in range(kb * bs // tu, (kb + 1) * bs // tu):
                        u, v = Ut[k].reshape(-1), Wt[k].reshape(-1)
                        for j in range(u.shape[0]):
                            acc += u[j]
                        for j in range(v.shape[0]):
                            acc += v[j]
            out[w] += acc
