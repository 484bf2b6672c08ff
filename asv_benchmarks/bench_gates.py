"""Fused vs unfused gate products in plain NumPy: where does a GRU's per-step product time go?

The fused-matmul note (seeds/fused-gate-matmul-qa.txt) asks whether ``W_x x_t + W_h h_{t-1}`` is
cheaper as one product ``[W_x | W_h] [x_t; h_{t-1}]``. Three ways of forming the (B, 3H) gate
pre-activations of every step (the recurrence ``h = tanh(n-block)`` keeps the steps dependent and
costs the same in all three)::

    separate     per step: x_t W_x^T + h W_h^T                      2 products a step
    concatenated per step: [x_t, h] [W_x | W_h]^T                   1 product a step (the note's fusion)
    prebatched   once: X W_x^T over all T*B rows; per step: + h W_h^T   1 big + 1 product a step

The njit fast paths offer the last two as strategies ("fused", "batched"); bench_jit measures those.
The wide sizes (D = H = 1024, a stacked layer's input) are where the input side is no longer small.
Shapes: x (T, B, D); W_x (3H, D); W_h (3H, H).
"""

from __future__ import annotations

import numpy as np

from .common import STRATEGY_SIZES, RatioBenchmark, TimeBenchmark, inputs, rng

STRATEGIES = ("prebatched", "separate", "concatenated")


def gate_weights(D: int, H: int, dtype):
    g = rng("gate-weights", D, H)
    k = 1.0 / np.sqrt(H)
    W_x = g.uniform(-k, k, size=(3 * H, D)).astype(dtype)
    W_h = g.uniform(-k, k, size=(3 * H, H)).astype(dtype)
    return W_x, W_h


def run_separate(x, W_x, W_h):
    T, B, _ = x.shape
    H = W_h.shape[1]
    h = np.zeros((B, H), x.dtype)
    for t in range(T):
        a = x[t] @ W_x.T + h @ W_h.T
        h = np.tanh(a[:, 2 * H :])
    return h


def run_concatenated(x, W_xh, H):
    T, B, D = x.shape
    xh = np.zeros((B, D + H), x.dtype)  # [x_t, h] in one buffer: no concatenate per step
    for t in range(T):
        xh[:, :D] = x[t]
        a = xh @ W_xh.T
        xh[:, D:] = np.tanh(a[:, 2 * H :])
    return xh[:, D:]


def run_prebatched(x, W_x, W_h):
    T, B, D = x.shape
    H = W_h.shape[1]
    ax = (x.reshape(T * B, D) @ W_x.T).reshape(T, B, 3 * H)
    h = np.zeros((B, H), x.dtype)
    for t in range(T):
        a = ax[t] + h @ W_h.T
        h = np.tanh(a[:, 2 * H :])
    return h


class _Data:
    def _data(self, size, dtype="float32"):
        s = STRATEGY_SIZES[size]
        self.x = inputs(s, dtype)
        self.W_x, self.W_h = gate_weights(s["D"], s["H"], dtype)
        self.W_xh = np.ascontiguousarray(np.concatenate([self.W_x, self.W_h], axis=1))
        self.H = s["H"]
        self.run = {
            "separate": lambda: run_separate(self.x, self.W_x, self.W_h),
            "concatenated": lambda: run_concatenated(self.x, self.W_xh, self.H),
            "prebatched": lambda: run_prebatched(self.x, self.W_x, self.W_h),
        }


class GateProduct(_Data, TimeBenchmark):
    """Time of a sequence's gate products, float32, by strategy."""

    params = [list(STRATEGY_SIZES), list(STRATEGIES)]
    param_names = ["size", "strategy"]

    def setup(self, size, strategy):
        self._data(size)
        self.fn = self.run[strategy]

    def time_gate_products(self, size, strategy):
        self.fn()


class GateProductRatio(_Data, RatioBenchmark):
    """Each strategy's time over the pre-batched strategy's, measured interleaved in one process."""

    params = [list(STRATEGY_SIZES), ["separate", "concatenated"]]
    param_names = ["size", "strategy"]

    def setup(self, size, strategy):
        self._data(size)

    def track_ratio_over_prebatched(self, size, strategy):
        return self.ratio(self.run[strategy], self.run["prebatched"])
