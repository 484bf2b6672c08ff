"""SRU: the reference (refrnn.cells.sru), the njit kernel (refrnn.jit.sru), and SRU against an LSTM.

The SRU's only product is ``U = x W^T`` for all T steps at once; the recurrence is element-wise. The
bar of `refrnn bench` compares the SRU forward with ``torch.nn.LSTM`` of the same size (T=100, B=32, D=H=1024:
the FLOP ratio bounds the speed-up at 2.67x), reported here as sru/lstm time ratios.
"""

from __future__ import annotations

import numpy as np

from .bench_torch import torch_forward
from .common import SRU_SIZES, RatioBenchmark, TimeBenchmark, inputs, normal, require, rng

SRU_PATHS = ("reference", "jit")


def sru_params(size: str, dtype):
    sru = require("refrnn.cells.sru", "init", "forward", "backward")
    s = SRU_SIZES[size]
    return sru, sru.init(s["D"], s["H"], rng=rng("sru-params", size), dtype=np.dtype(dtype))


def jit_sru():
    return require("refrnn.jit.sru", "forward", "backward")


class _SRU:
    def _data(self, size, path, dtype):
        self.ref, self.p = sru_params(size, dtype)
        self.x = inputs(SRU_SIZES[size], dtype)
        self.module = self.ref if path == "reference" else jit_sru()
        y, _, self.cache = self.module.forward(self.p, self.x)  # compiles the jit path here
        self.dy = normal(y.shape, dtype, key="sru-dy")
        if path != "reference":
            self.module.backward(self.p, self.cache, self.dy)


class SRUForwardBackward(_SRU, TimeBenchmark):
    """Forward and backward through time, reference vs njit, both dtypes."""

    params = [list(SRU_SIZES), list(SRU_PATHS), ["float32", "float64"]]
    param_names = ["size", "path", "dtype"]

    def setup(self, size, path, dtype):
        self._data(size, path, dtype)

    def time_forward(self, size, path, dtype):
        self.module.forward(self.p, self.x)

    def time_backward(self, size, path, dtype):
        self.module.backward(self.p, self.cache, self.dy)

    def peakmem_forward_backward(self, size, path, dtype):
        _, _, cache = self.module.forward(self.p, self.x)
        self.module.backward(self.p, cache, self.dy)


class SRUJitOverReference(_SRU, RatioBenchmark):
    """njit SRU time / reference SRU time (forward, backward), interleaved in one process."""

    params = [list(SRU_SIZES), ["float32", "float64"]]
    param_names = ["size", "dtype"]

    def setup(self, size, dtype):
        self._data(size, "jit", dtype)
        fast, ref, p, x, dy = self.module, self.ref, self.p, self.x, self.dy
        cache, ref_cache = self.cache, ref.forward(p, x)[2]
        self.forward = {"jit": lambda: fast.forward(p, x), "reference": lambda: ref.forward(p, x)}
        self.backward = {"jit": lambda: fast.backward(p, cache, dy), "reference": lambda: ref.backward(p, ref_cache, dy)}

    def track_forward_jit_over_reference(self, size, dtype):
        return self.ratio(self.forward["jit"], self.forward["reference"])

    def track_backward_jit_over_reference(self, size, dtype):
        return self.ratio(self.backward["jit"], self.backward["reference"])


class SRUOverTorchLSTM(_SRU, RatioBenchmark):
    """SRU forward time / torch.nn.LSTM forward time of the same size, float32 (the bar of `refrnn bench`: <= 1/2.3)."""

    params = [list(SRU_SIZES), list(SRU_PATHS)]
    param_names = ["size", "path"]

    def setup(self, size, path):
        self._data(size, path, "float32")
        self.lstm = torch_forward("lstm", SRU_SIZES[size], self.x)
        self.sru = lambda: self.module.forward(self.p, self.x)

    def track_sru_over_torch_lstm(self, size, path):
        return self.ratio(self.sru, self.lstm)
