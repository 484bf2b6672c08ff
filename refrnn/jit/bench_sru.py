r"""Workload for ``refrnn bench``: the SRU forward (issue 4, item 2) against ``torch.nn.LSTM`` of the same size.

``sru-forward``: T = 100, B = 32, D = H = 1024, float32 (identity skip, v terms, the sru package's
initialisation). Candidates, all over the same seeded input:

* ``njit`` (the subject): :func:`refrnn.jit.sru.forward_inference`, the one GEMM ``U = x W^T`` then
  the element-wise recurrence kernel;
* ``njit, training``: :func:`refrnn.jit.sru.forward`, which also fills the cache for backward;
* ``reference (float32)``: :func:`refrnn.cells.sru.forward`;
* ``torch.nn.LSTM``: an LSTM of the same D, H, T, B with ``torch.set_num_threads`` equal to the
  threads BLAS and numba use. It computes something else on purpose; its ``.twin`` (the NumPy LSTM
  loop of :mod:`refrnn.bench` on the same weights) is what it is checked against at test sizes;
* ``sgemm: U = x W^T alone``: the subject's one product through the same BLAS call, so the table's
  "GEMM bound" row is the time of the product alone and ``subject / bound`` is the share of the
  recurrence kernel (and of the buffers) on top of it: the profile of the subject, measured.

The bar: njit >= 2.3x faster than torch.nn.LSTM. The FLOP ratio bounds it at 2.67x: per step and
sample the LSTM multiplies 4H x (D + H), the SRU 3H x D, i.e. 8/3 for D = H; the SRU's element-wise
work is O(H) against O(H^2).

Registration in :mod:`refrnn.bench`: importing this module registers the workload. It can also be
run on its own: ``python -m refrnn.jit.bench_sru [--quick]`` (same table, this workload only).
"""

from __future__ import annotations

import numpy as np

from ..bench import SEED, WORKLOADS, Bar, Case, _data, _torch, _torch_note, bench_threads, numpy_lstm, sizes_for, workload

NAME = "sru-forward"
SUBJECT = "njit"
TORCH = "torch.nn.LSTM"
SGEMM = "sgemm: U = x W^T alone"
BAR = 2.3
_FULL = dict(T=100, B=32, D=1024, H=1024)
_TINY = dict(T=4, B=3, D=8, H=8)


def _torch_lstm(torch, D: int, H: int, x: np.ndarray):
    """``torch.nn.LSTM(D, H)`` over ``x`` from zero states, its weights taken from a refrnn LSTM, and
    that LSTM's NumPy loop as the candidate's ``.twin`` (the same function computed another way)."""
    from ..cells import lstm

    q = lstm.init(D, H, rng=np.random.default_rng([SEED, 1]), dtype=np.float32)
    module = torch.nn.LSTM(D, H)
    with torch.no_grad():
        for name, field in (("weight_ih_l0", "W_x"), ("weight_hh_l0", "W_h"), ("bias_ih_l0", "b_x"), ("bias_hh_l0", "b_h")):
            getattr(module, name).copy_(torch.from_numpy(getattr(q, field)))
    B = x.shape[1]
    h0, c0 = np.zeros((B, H), np.float32), np.zeros((B, H), np.float32)
    tx, th, tc = torch.from_numpy(x), torch.from_numpy(h0)[None], torch.from_numpy(c0)[None]

    def run():
        with torch.inference_mode():
            return module(tx, (th, tc))

    run.twin = lambda: numpy_lstm(q, x, h0, c0)
    return run


def build(scale: str) -> Case:
    from ..cells import sru as reference
    from . import _kernels
    from . import sru as fast

    s = sizes_for(scale, _FULL, _TINY)
    T, B, D, H = s["T"], s["B"], s["D"], s["H"]
    rng, x = _data(D, H, T, B)
    p = reference.init(D, H, rng=rng, dtype=np.float32)
    x2, W_T = x.reshape(T * B, D), np.ascontiguousarray(p.W).T
    cands = {
        SUBJECT: lambda: fast.forward_inference(p, x),
        "njit, training": lambda: fast.forward(p, x),
        "reference (float32)": lambda: reference.forward(p, x),
    }
    torch = _torch(bench_threads())
    if torch is not None:
        cands[TORCH] = _torch_lstm(torch, D, H, x)
    cands[SGEMM] = lambda: _kernels.input_products(x2, W_T)
    bars = (Bar(SUBJECT, TORCH, BAR, f">= {BAR}x faster than torch.nn.LSTM (FLOP-ratio bound 2.67x)"),) if torch else ()
    flops = 2.0 * T * B * D * p.k * H
    lstm_flops = 2.0 * T * B * 4 * H * (D + H)
    notes = (
        f"GFLOP of products: SRU {flops / 1e9:.3g} (U = x W^T), LSTM {lstm_flops / 1e9:.3g}; ratio {lstm_flops / flops:.2f}",
        "GEMM bound = the sgemm candidate: the SRU's one product alone; subject / bound - 1 is the recurrence's share",
    ) + _torch_note("vs torch.nn.LSTM")
    return Case(s, cands, SUBJECT, bars, SGEMM, flops, flops, notes)


if NAME not in WORKLOADS:  # run as __main__ after refrnn.bench imported this module: registered already
    workload(NAME, "SRU forward, T=100, B=32, D=H=1024 (float32), against torch.nn.LSTM of the same size")(build)


if __name__ == "__main__":
    import sys

    from refrnn import bench

    sys.exit(bench.main(["--only", NAME, *sys.argv[1:]]))
