r"""Training workloads for ``refrnn bench``: forward and backward of the SRU and the conditional GRU, back to back.

``sru-train-mid``, ``sru-train-paper``, ``ccgru-train-mid`` and ``ccgru-train-paper`` (registered by
:mod:`refrnn.bench.workloads.sru` and :mod:`refrnn.bench.workloads.ccgru`) time what a training loop
runs: every candidate makes :data:`STEPS` training steps (forward, then backward with a fixed random
upstream gradient), one right after the other with no pause between forward, backward and the next
step. Run them with ``--pause 0`` so that nothing settles between candidates either. Sizes: T = 100,
B = 32, D = H = 256; and the seed paper's character LM, T = 50, B = 64, D = 27 (one-hot), H = 1024.
float32. The conditional GRU is the block variant with blocks of 16 units (g = H/16), in training
mode with batch statistics, as ``refrnn reproduce`` trains it.

Candidates:

* ``refrnn compiled`` (the subject): the jit module's ``forward`` then ``backward``; every product in
  SciPy's OpenBLAS, one thread pool;
* ``jit forward + reference backward``: what training ran before the compiled backward existed; the
  hand-over between the two libraries' OpenBLAS pools after each forward is what it measures;
* ``reference``: :mod:`refrnn.cells` forward and backward (NumPy);
* ``torch.nn.LSTM`` / ``torch.nn.GRU`` autograd (forward, then ``backward`` of ``sum(y * dy)``) of
  the same D, H, T, B: the comparison point for the SRU, as in the forward workload, and a dense GRU
  of the same size for the conditional GRU (torch has no such cell);
* ``sgemm: the products alone``: every matrix product the subject makes in its steps, of the same
  shapes, through the same BLAS call, and nothing else: the GEMM bound of the step.
"""

from __future__ import annotations

import numpy as np

from ..baselines import bench_threads, recurrent_products, torch_or_none
from ..registry import SEED

STEPS = 2  # training steps per timed call, back to back
SUBJECT = "refrnn compiled"
BEFORE = "jit forward + reference backward"
REFERENCE = "reference (float32)"
SGEMM = "sgemm: the products alone"
FULL_SIZES = {"h256": dict(T=100, B=32, D=256, H=256), "h1024": dict(T=50, B=64, D=27, H=1024)}
TINY = dict(T=3, B=3, D=8, H=8)


def steps(forward, backward, params, x, dy):
    """A call making :data:`STEPS` training steps back to back: ``forward`` then ``backward``.
    Returns ``(y, grads, dx, dstate0)`` of the last step (y first, as every bench candidate)."""

    def run():
        out = None
        for _ in range(STEPS):
            y, _, cache = forward(params, x)
            out = (y, *backward(params, cache, dy))
        return out

    return run


def torch_autograd(torch, kind: str, D: int, H: int, x: np.ndarray, dy: np.ndarray):
    """``torch.nn.<kind>`` ("LSTM" or "GRU") forward and backward of ``sum(y * dy)``, :data:`STEPS`
    times back to back, from zero states, its weights taken from a refrnn cell; ``.twin`` is the
    NumPy loop of :mod:`refrnn.bench.baselines` on the same weights (the forward, for the check)."""
    from ...cells import gru, lstm
    from ..baselines import numpy_gru, numpy_lstm, torch_module

    cell = lstm if kind == "LSTM" else gru
    q = cell.init(D, H, rng=np.random.default_rng([SEED, 1]), dtype=np.float32)
    module = torch_module(torch, kind, q)
    tx, tdy = torch.from_numpy(x), torch.from_numpy(dy)

    def run():
        for _ in range(STEPS):
            module.zero_grad(set_to_none=False)
            y, _ = module(tx)
            y.backward(tdy)
        return (y.detach(),)

    B = x.shape[1]
    zeros = np.zeros((B, H), np.float32)
    run.twin = (lambda: numpy_lstm(q, x, zeros, zeros)) if kind == "LSTM" else (lambda: numpy_gru(q, x, zeros))
    return run


def gemm_products(T, B, shapes, recurrent, step_threads=None):
    """The products of :data:`STEPS` training steps alone: ``shapes`` lists the (M, K, N) of the
    one-off GEMMs (input projections and weight gradients), ``recurrent`` the (K, N) weights of the
    per-step products (each T times with B rows), run inside ``step_threads()`` (the BLAS thread
    setting the subject's kernels use for them; None: the default). Returns ``(run, flops)``."""
    import contextlib
    from ...jit._onepool import product

    rng = np.random.default_rng(SEED)
    pairs = [(rng.standard_normal((M, K)).astype(np.float32), rng.standard_normal((K, N)).astype(np.float32))
             for M, K, N in shapes]
    per_step = recurrent_products(T, B, *[rng.standard_normal(s).astype(np.float32) for s in recurrent]) if recurrent else None
    flops = STEPS * (sum(2.0 * M * K * N for M, K, N in shapes) + sum(2.0 * T * B * K * N for K, N in recurrent))

    def run():
        for _ in range(STEPS):
            for a, b in pairs:
                product(a, b)
            if per_step is not None:
                with (step_threads or contextlib.nullcontext)():
                    per_step()

    return run, flops


def torch_candidates(kinds, D, H, x, dy) -> dict:
    torch = torch_or_none(bench_threads())
    if torch is None:
        return {}
    return {f"torch.nn.{k} autograd": torch_autograd(torch, k, D, H, x, dy) for k in kinds}


def upstream(T, B, H):
    """The fixed upstream gradient dL/dy of every step (seeded, small: a loss's gradient)."""
    return (0.01 * np.random.default_rng([SEED, 2]).standard_normal((T, B, H))).astype(np.float32)
