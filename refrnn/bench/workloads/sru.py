r"""Workload for ``refrnn bench``: the SRU forward against ``torch.nn.LSTM`` of the same size.

``sru-forward``: T = 100, B = 32, D = H = 1024, float32 (identity skip, v terms, the sru package's
initialisation). Candidates, all over the same seeded input:

* ``njit`` (the subject): :func:`refrnn.jit.sru.forward_inference`, the one GEMM ``U = x W^T`` then
  the element-wise recurrence kernel;
* ``njit, training``: :func:`refrnn.jit.sru.forward`, which also fills the cache for backward;
* ``reference (float32)``: :func:`refrnn.cells.sru.forward`;
* ``torch.nn.LSTM``: an LSTM of the same D, H, T, B with ``torch.set_num_threads`` equal to the
  threads BLAS and numba use. It computes something else on purpose; its ``.twin`` (the NumPy LSTM
  loop of :mod:`refrnn.bench.baselines` on the same weights) is what it is checked against at test sizes;
* ``sgemm: U = x W^T alone``: the subject's one product through the same BLAS call, so the table's
  "GEMM bound" row is the time of the product alone and ``subject / bound`` is the share of the
  recurrence kernel (and of the buffers) on top of it: the profile of the subject, measured.

The bar: njit >= 2.3x faster than torch.nn.LSTM. The FLOP ratio bounds it at 2.67x: per step and
sample the LSTM multiplies 4H x (D + H), the SRU 3H x D, i.e. 8/3 for D = H; the SRU's element-wise
work is O(H) against O(H^2).

Run it alone with ``refrnn bench --only sru-forward``.
"""

from __future__ import annotations

import numpy as np

from ..baselines import bench_threads, numpy_lstm, torch_note, torch_or_none, torch_rnn
from ..registry import SEED, SRU_SIZES, Bar, Case, data, sizes_for, workload

NAME = "sru-forward"
SUBJECT = "njit"
TORCH = "torch.nn.LSTM"
SGEMM = "sgemm: U = x W^T alone"
BAR = 2.3
_FULL = SRU_SIZES["paper"]
_TINY = dict(T=4, B=3, D=8, H=8)


def _torch_lstm(torch, D: int, H: int, x: np.ndarray):
    """``torch.nn.LSTM(D, H)`` over ``x`` from zero states, its weights taken from a refrnn LSTM, and
    that LSTM's NumPy loop as the candidate's ``.twin`` (the same function computed another way)."""
    from ...cells import lstm

    q = lstm.init(D, H, rng=np.random.default_rng([SEED, 1]), dtype=np.float32)
    B = x.shape[1]
    h0, c0 = np.zeros((B, H), np.float32), np.zeros((B, H), np.float32)
    run = torch_rnn(torch, "LSTM", q, x, (h0, c0))
    run.twin = lambda: numpy_lstm(q, x, h0, c0)
    return run


def build(scale: str) -> Case:
    from ...cells import sru as reference
    from ...jit import _kernels
    from ...jit import sru as fast

    s = sizes_for(scale, _FULL, _TINY)
    T, B, D, H = s["T"], s["B"], s["D"], s["H"]
    rng, x = data(D, H, T, B)
    p = reference.init(D, H, rng=rng, dtype=np.float32)
    x2, W_T = x.reshape(T * B, D), np.ascontiguousarray(p.W).T
    cands = {
        SUBJECT: lambda: fast.forward_inference(p, x),
        "njit, training": lambda: fast.forward(p, x),
        "reference (float32)": lambda: reference.forward(p, x),
    }
    torch = torch_or_none(bench_threads())
    if torch is not None:
        cands[TORCH] = _torch_lstm(torch, D, H, x)
    cands[SGEMM] = lambda: _kernels.input_products(x2, W_T)
    bars = (Bar(SUBJECT, TORCH, BAR, f">= {BAR}x faster than torch.nn.LSTM (FLOP-ratio bound 2.67x)"),) if torch else ()
    flops = 2.0 * T * B * D * p.k * H
    lstm_flops = 2.0 * T * B * 4 * H * (D + H)
    notes = (
        f"GFLOP of products: SRU {flops / 1e9:.3g} (U = x W^T), LSTM {lstm_flops / 1e9:.3g}; ratio {lstm_flops / flops:.2f}",
        "GEMM bound = the sgemm candidate: the SRU's one product alone; subject / bound - 1 is the recurrence's share",
    ) + torch_note("vs torch.nn.LSTM")
    return Case(s, cands, SUBJECT, bars, SGEMM, flops, flops, notes)


workload(NAME, "SRU forward, T=100, B=32, D=H=1024 (float32), against torch.nn.LSTM of the same size")(build)


# ---------------------------------------------------------------------------------------------
# sru-train-mid, sru-train-paper: forward and backward back to back (see refrnn.bench.workloads.train_sru_ccgru)
# ---------------------------------------------------------------------------------------------


def build_train(scale: str, size: str) -> Case:
    from ...cells import sru as reference
    from ...jit import sru as fast
    from . import train_sru_ccgru as tr

    s = sizes_for(scale, tr.FULL_SIZES[size], tr.TINY)
    T, B, D, H = s["T"], s["B"], s["D"], s["H"]
    rng, x = data(D, H, T, B)
    p = reference.init(D, H, rng=rng, dtype=np.float32)  # identity skip when D == H, else projection
    dy = tr.upstream(T, B, H)
    k = p.k
    cands = {
        tr.SUBJECT: tr.steps(fast.forward, fast.backward, p, x, dy),
        tr.BEFORE: tr.steps(fast.forward, reference.backward, p, x, dy),
        tr.REFERENCE: tr.steps(reference.forward, reference.backward, p, x, dy),
        **tr.torch_candidates(("LSTM", "GRU"), D, H, x, dy),
    }
    # U = x W^T; dW = dU^T x; dx = dU W: the SRU has no recurrent product
    run, flops = tr.gemm_products(T, B, [(T * B, D, k * H), (k * H, T * B, D), (T * B, k * H, D)], [])
    cands[tr.SGEMM] = run
    notes = (
        f"{tr.STEPS} training steps per call (forward, backward), back to back; skip={p.skip}; run with --pause 0",
        f"GFLOP of products per call: {flops / 1e9:.3g} (U = x W^T, dW = dU^T x, dx = dU W, each one T*B-row GEMM)",
        "torch.nn.LSTM / GRU autograd of the same D, H, T, B: other cells, the comparison point of the forward workload",
    )
    return Case(s, cands, tr.SUBJECT, (), tr.SGEMM, flops, flops, notes)


workload("sru-train-mid", "SRU training step (forward + backward, back to back), T=100, B=32, D=H=256 (float32)")(
    lambda scale: build_train(scale, "h256"))
workload("sru-train-paper", "SRU training step (forward + backward, back to back), T=50, B=64, D=27, H=1024 (float32)")(
    lambda scale: build_train(scale, "h1024"))
