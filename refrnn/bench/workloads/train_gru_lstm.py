r"""Workloads: training steps of the GRU and LSTM, run back to back as a training loop runs them.

``gru-train-paper``, ``gru-train-mid``, ``lstm-train-paper``, ``lstm-train-mid``: float32, a training
step is the forward over T steps and the backward of a unit upstream gradient on ``y`` (zero
final-state gradient), sizes ``TRAIN_SIZES`` (T, B, D, H) = (50, 64, 27, 1024) and (100, 32, 256, 256).
Each timed call is ``STEPS`` such steps in a row, with nothing between the forward and the backward
nor between the steps (``refrnn bench``'s pause, if any, precedes the call only): that is where the
compiled forward followed by NumPy's backward used to lose its time (two OpenBLAS thread pools
taking the two cores from each other after every hand-over; see :mod:`refrnn.jit._backward`). And
as in a loop that assigns each step's ``y, state, cache`` to the same names, every candidate keeps
its previous step's forward outputs alive until its next forward has returned: what the allocator
can reuse then differs from a loop that drops them first (see :mod:`refrnn.jit._buffers`).

Candidates, over the same seeded data and weights:

* ``njit forward + njit backward`` (the subject): :func:`refrnn.jit.gru.forward` / ``backward``
  (``lstm`` likewise), the default algorithm;
* ``njit forward + reference backward``: what ``refrnn`` trained with before the compiled backward
  (kept to show the two-pool slowdown, measured in the same run);
* ``reference (float32)``: :mod:`refrnn.cells` forward and backward;
* ``torch autograd``: ``torch.nn.GRU`` / ``LSTM`` forward and ``y.backward(dy)``, gradients for the
  weights, the input and the initial state, ``torch.set_num_threads`` equal to the threads BLAS and
  numba use;
* ``njit backward alone`` and ``sgemm: backward's products alone``: the backward on a fixed cache,
  and its products with nothing else, so the report can say which half of a step is off its bound;
* ``sgemm: training step's products alone``: every product of a step (the forward's in the batched
  order, the backward's as the compiled backward makes them) through the BLAS call the fast paths
  make. The table's "GEMM bound" row is this candidate's time.

The bars: GRU >= 1.5x faster than torch autograd, LSTM >= 1.0x; each within 1.2x of the GEMM bound.
"""

from __future__ import annotations

import numpy as np

from ...cells import gru, lstm
from ..baselines import bench_threads, gemm_list_flops, products, torch_note, torch_or_none, torch_train, training_gemms
from ..registry import SUBJECT, TRAIN_SIZES, Bar, Case, data, sizes_for, workload

STEPS = 2  # training steps per timed call, back to back
BOUND = "sgemm: training step's products alone"
TORCH = "torch autograd"
_TINY = dict(T=3, B=2, D=5, H=8)


def _steps(step):
    """``STEPS`` calls of ``step`` in a row; returns the last one's result. Every training candidate
    returns ``(dW_h,)``, torch's the same array (``weight_hh_l0.grad``), so the candidates can be
    checked to compute the same gradient."""

    def run():
        for _ in range(STEPS):
            out = step()
        return out

    if hasattr(step, "twin"):
        run.twin = step.twin
    return run


def _case(cell: str, scale: str, size: str, torch_bar: float):
    from ...jit import gru as jit_gru
    from ...jit import lstm as jit_lstm

    s = sizes_for(scale, TRAIN_SIZES[size], _TINY)
    T, B, D, H = s["T"], s["B"], s["D"], s["H"]
    rng, x = data(D, H, T, B)
    ref, fast = (gru, jit_gru) if cell == "gru" else (lstm, jit_lstm)
    p = ref.init(D, H, rng=rng, dtype=np.float32)
    dy = np.ones((T, B, H), np.float32)
    state0 = np.zeros((B, H), np.float32) if cell == "gru" else (np.zeros((B, H), np.float32), np.zeros((B, H), np.float32))

    held = {}  # each candidate's last forward outputs, alive until its next forward has returned

    def compiled():
        held["compiled"] = out = fast.forward(p, x, state0)
        return (fast.backward(p, out[2], dy)[0].W_h,)

    def mixed():
        held["mixed"] = out = fast.forward(p, x, state0)
        return (ref.backward(p, out[2], dy)[0].W_h,)

    def reference():
        held["reference"] = out = ref.forward(p, x, state0)
        return (ref.backward(p, out[2], dy)[0].W_h,)

    fixed = fast.forward(p, x, state0)[2]
    forward_gemms, backward_gemms = training_gemms(cell, T, B, D, H)
    subject = "njit forward + njit backward"
    cands = {
        subject: _steps(compiled),
        "njit forward + reference backward": _steps(mixed),
        "reference (float32)": _steps(reference),
    }
    torch = torch_or_none(bench_threads())
    if torch is not None:
        step = torch_train(torch, cell.upper(), p, x, state0, dy)
        cands[TORCH] = _steps(lambda: (step().weight_hh_l0.grad,))
    cands["njit backward alone"] = _steps(lambda: (fast.backward(p, fixed, dy)[0].W_h,))
    cands["sgemm: backward's products alone"] = _steps(products(*backward_gemms))
    cands[BOUND] = _steps(products(*forward_gemms, *backward_gemms))
    bars = (
        Bar(SUBJECT, TORCH, torch_bar, f">= {torch_bar}x faster than torch autograd"),
        Bar(SUBJECT, "GEMM bound", 1 / 1.2, "within 1.2x of the GEMM bound"),
    )
    bars = tuple(b for b in bars if b.other in cands or b.other == "GEMM bound")
    flops = STEPS * gemm_list_flops(forward_gemms + backward_gemms)
    notes = (
        f"each call: {STEPS} training steps back to back; GFLOP of a step's products: forward "
        f"{gemm_list_flops(forward_gemms) / 1e9:.3g}, backward {gemm_list_flops(backward_gemms) / 1e9:.3g}",
    ) + torch_note("vs torch autograd")
    return Case(s, cands, subject, bars, BOUND, flops, flops, notes)


# Bars: the GRU trains at least 1.5x faster than torch autograd, the LSTM at least as fast.
_BARS = {"gru": (1.5, "reset=after"), "lstm": (1.0, None)}
_TITLES = {"paper": "paper config", "mid": "T=100 B=32 D=H=256"}

for _cell, (_bar, _option) in _BARS.items():
    for _size, _title in _TITLES.items():
        _extra = f", {_option}" if _option else ""
        workload(f"{_cell}-train-{_size}", f"{_cell.upper()} training step, back to back, {_title} (float32{_extra})")(
            lambda scale, cell=_cell, size=_size, bar=_bar: _case(cell, scale, size, bar)
        )
del _cell, _bar, _option, _size, _title, _extra
