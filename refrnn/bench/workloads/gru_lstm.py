"""Workloads: the GRU and LSTM fast paths at the seed paper's size and as a single stream, and the two
GRU strategies ("fused", "batched") where each should win.

The bars: GRU >= 1.5x faster than ``torch.nn.GRU``, >= 1.1x than the NumPy loop, within 1.2x of the
GEMM bound at the paper's size; >= 3x and >= 1.2x as a single stream; LSTM at least as fast as
``torch.nn.LSTM`` (oneDNN's packed-weight RNN primitive) at the paper's size.

The training workloads (forward + backward, back to back) live in :mod:`.train`, imported at the end
of this module so that they register right after these.
"""

from __future__ import annotations

import numpy as np

from ...cells import gru, lstm
from ..baselines import (bench_threads, gemm_flops, numpy_gru, numpy_lstm, recurrent_products, rowcast_products, torch_note,
                         torch_or_none, torch_rnn)
from ..registry import SGEMM, SIZES, SUBJECT, Bar, Case, data, sizes_for, workload

_TINY = dict(B=3, T=4, D=5, H=8)
_TINY_STREAM = dict(B=1, T=4, D=5, H=8)


def _default_label(D: int, H: int, B: int) -> str:
    """The candidate calling the fast path with its default strategy, named after what "auto" picks."""
    from ...jit import _strategy

    return f"njit (auto: {_strategy.choose('auto', D, H, B)})"


def _gru_case(scale, full, tiny, *, reset="after", bars=(), torch_too=True, notes=()):
    from ...jit import gru as fast

    s = sizes_for(scale, full, tiny)
    T, B, D, H = s["T"], s["B"], s["D"], s["H"]
    rng, x = data(D, H, T, B)
    p = gru.init(D, H, reset=reset, rng=rng, dtype=np.float32)
    h0 = np.zeros((B, H), np.float32)
    fused = fast.prepare(p, "fused")
    subject = _default_label(D, H, B)
    cands = {
        subject: lambda: fast.forward_inference(p, x, h0),
        "njit batched": lambda: fast.forward_inference(p, x, h0, algorithm="batched"),
        "njit fused": lambda: fast.forward_inference(p, x, h0, algorithm="fused", prepared=fused),
        "njit, training": lambda: fast.forward(p, x, h0),
        "reference (float32)": lambda: gru.forward(p, x, h0),
    }
    if reset == "after":
        cands["NumPy loop"] = lambda: numpy_gru(p, x, h0)
    torch = torch_or_none(bench_threads()) if torch_too and reset == "after" else None
    if torch is not None:
        cands["torch.nn.GRU"] = torch_rnn(torch, "GRU", p, x, h0)
    if reset == "after":
        cands[SGEMM] = recurrent_products(T, B, p.W_h.T)
        cands.update(rowcast_products(T, B, p.W_h, p.W_h.T))
    else:  # two products a step: [W_hr; W_hz] h, then W_hn (r*h)
        cands[SGEMM] = recurrent_products(T, B, p.W_h[: 2 * H].T, p.W_h[2 * H :].T)
        cands.update(rowcast_products(T, B, p.W_h, p.W_h[: 2 * H].T, p.W_h[2 * H :].T))
    bars = tuple(b for b in bars if b.other in cands or b.other == "GEMM bound")
    return Case(s, cands, subject, bars, SGEMM, 2.0 * T * B * H * 3 * H, gemm_flops(T, B, D, H, 3), notes)


@workload("gru-paper", "GRU forward, paper config (float32, reset=after)")
def _gru_paper(scale):
    bars = (
        Bar(SUBJECT, "torch.nn.GRU", 1.5, ">= 1.5x faster than torch.nn.GRU"),
        Bar(SUBJECT, "NumPy loop", 1.1, ">= 1.1x faster than the NumPy loop"),
        Bar(SUBJECT, "GEMM bound", 1 / 1.2, "within 1.2x of the GEMM bound"),
    )
    return _gru_case(scale, SIZES["paper"], _TINY, bars=bars, notes=torch_note("vs torch.nn.GRU"))


@workload("gru-stream", "GRU forward, single stream (float32, reset=after)")
def _gru_stream(scale):
    bars = (
        Bar(SUBJECT, "torch.nn.GRU", 3.0, ">= 3x faster than torch.nn.GRU"),
        Bar(SUBJECT, "NumPy loop", 1.2, ">= 1.2x faster than the NumPy loop"),
    )
    return _gru_case(scale, SIZES["stream"], _TINY_STREAM, bars=bars, notes=torch_note("vs torch.nn.GRU"))


@workload("lstm-paper", "LSTM forward, paper config (float32)")
def _lstm_paper(scale):
    from ...jit import lstm as fast

    s = sizes_for(scale, SIZES["paper"], _TINY)
    T, B, D, H = s["T"], s["B"], s["D"], s["H"]
    rng, x = data(D, H, T, B)
    p = lstm.init(D, H, rng=rng, dtype=np.float32)
    h0 = np.zeros((B, H), np.float32)
    c0 = np.zeros((B, H), np.float32)
    fused = fast.prepare(p, "fused")
    subject = _default_label(D, H, B)
    cands = {
        subject: lambda: fast.forward_inference(p, x, (h0, c0)),
        "njit batched": lambda: fast.forward_inference(p, x, (h0, c0), algorithm="batched"),
        "njit fused": lambda: fast.forward_inference(p, x, (h0, c0), algorithm="fused", prepared=fused),
        "njit, training": lambda: fast.forward(p, x, (h0, c0)),
        "reference (float32)": lambda: lstm.forward(p, x, (h0, c0)),
        "NumPy loop": lambda: numpy_lstm(p, x, h0, c0),
    }
    torch = torch_or_none(bench_threads())
    if torch is not None:
        cands["torch.nn.LSTM"] = torch_rnn(torch, "LSTM", p, x, (h0, c0))
    cands[SGEMM] = recurrent_products(T, B, p.W_h.T)
    cands.update(rowcast_products(T, B, p.W_h, p.W_h.T))
    bars = (Bar(SUBJECT, "torch.nn.LSTM", 1.0, ">= 1.0x faster than torch.nn.LSTM"),)
    bars = tuple(b for b in bars if b.other in cands)
    return Case(s, cands, subject, bars, SGEMM, 2.0 * T * B * H * 4 * H, gemm_flops(T, B, D, H, 4), torch_note("vs torch.nn.LSTM"))


@workload("gru-before", "GRU forward, reset=before (Cho; paper Eq. 3), paper config: two products a step")
def _gru_before(scale):
    return _gru_case(scale, SIZES["paper"], _TINY, reset="before")


def _strategy_case(scale, full, tiny):
    from ...jit import gru as fast

    s = sizes_for(scale, full, tiny)
    T, B, D, H = s["T"], s["B"], s["D"], s["H"]
    rng, x = data(D, H, T, B)
    p = gru.init(D, H, rng=rng, dtype=np.float32)
    h0 = np.zeros((B, H), np.float32)
    fused = fast.prepare(p, "fused")
    cands = {
        "njit fused": lambda: fast.forward_inference(p, x, h0, algorithm="fused", prepared=fused),
        "njit batched": lambda: fast.forward_inference(p, x, h0, algorithm="batched"),
        "njit fused, prepare per call": lambda: fast.forward_inference(p, x, h0, algorithm="fused"),
        SGEMM: recurrent_products(T, B, p.W_h.T),
    }
    return Case(s, cands, "njit fused", (), SGEMM, 2.0 * T * B * H * 3 * H, gemm_flops(T, B, D, H, 3))


@workload("strategy-wide-input", "GRU strategies, fused vs batched, B=64, D=H=1024 (a stacked layer)")
def _strategy_wide(scale):
    return _strategy_case(scale, SIZES["paper_wide"], dict(_TINY, D=8))


@workload("strategy-stream-wide-input", "GRU strategies, fused vs batched, B=1, D=H=1024")
def _strategy_stream_wide(scale):
    return _strategy_case(scale, SIZES["stream_wide"], dict(_TINY_STREAM, D=8))


# The training workloads (forward + backward, back to back) register right after the forward ones.
from . import train_gru_lstm  # noqa: E402,F401
