"""Deep RNN + per-step MLP head (refrnn.layers.deep), and why N recurrent layers cost more than N MLP layers.

For equal width H and layer count N = M: N recurrent GRU layers run layer by layer (``stack``), the
same N layers run along anti-diagonals (``wavefront``: the njit executor of refrnn.jit.wavefront, skipped where a
commit does not have it), and M dense layers applied to all T*B rows at once (``mlp``); ``njit_stack``
is the njit GRU fast path layer by layer, the wavefront's like-for-like baseline. The recurrent
layers walk T dependent steps each (the critical path is T*N steps layer by layer, T+N-1 as a
wavefront); the MLP layers are M products, whatever T is.
"""

from __future__ import annotations

import inspect

import numpy as np

from .common import (
    DEEP_LAYERS,
    DEEP_SIZES,
    RatioBenchmark,
    TimeBenchmark,
    inputs,
    normal,
    require,
    require_moved,
    rng,
)

ORDERS = ("stack", "wavefront", "mlp", "njit_stack")  # append only: asv keys results by these names


def wavefront_executor():
    """The njit wavefront executor (refrnn.jit.wavefront). The reference order (refrnn.layers.wavefront) runs one Python
    call per cell: it checks an order and is not a path to time."""
    return require("refrnn.jit.wavefront", "forward")


def gru_layers(N: int, D: int, H: int, dtype="float64"):
    from refrnn.cells import gru

    g = rng("deep-layers", N, D, H)
    return tuple(gru.init(D if k == 0 else H, H, rng=g, dtype=np.dtype(dtype)) for k in range(N))


def mlp_layers(M: int, H: int, dtype="float64"):
    mlp = require_moved("refrnn.layers.mlp", "refrnn.mlp", "init", "forward")
    return mlp.init((H,) * (M + 1), rng=rng("deep-head", M, H), dtype=np.dtype(dtype))


class _Order:
    def _data(self, size, layers, dtype="float64"):
        s = DEEP_SIZES[size]
        self.s = s
        self.x = inputs(s, dtype)
        self.layers = gru_layers(layers, s["D"], s["H"], dtype)
        self.stack = require_moved("refrnn.layers.stack", "refrnn.stack", "forward")
        self.head = mlp_layers(layers, s["H"], dtype)
        self.mlp = require_moved("refrnn.layers.mlp", "refrnn.mlp", "forward")
        self.y = normal((s["T"], s["B"], s["H"]), dtype, key="deep-y")
        self.run = {
            "stack": lambda: self.stack.forward(self.layers, self.x),
            "mlp": lambda: self.mlp.forward(self.head, self.y),
        }

    def _njit_stack(self):
        """The njit GRU fast path layer by layer (refrnn.jit.gru): the wavefront's like-for-like baseline."""
        fast = require("refrnn.jit.gru", "forward_inference", "prepare")
        prepared = [fast.prepare(p) for p in self.layers]

        def run():
            y = self.x
            for p, prep in zip(self.layers, prepared):
                y, _ = fast.forward_inference(p, y, prepared=prep)
            return y

        run()  # compile here
        return run

    def _wavefront(self):
        wavefront = wavefront_executor()
        run = lambda: wavefront.forward(self.layers, self.x)  # noqa: E731
        run()  # compile here
        return run


class LayerOrder(_Order, TimeBenchmark):
    """N GRU layers layer by layer (reference stack, or the njit fast path: "njit_stack") or as a
    wavefront (njit executor), and M = N MLP layers over all T*B rows, float64."""

    params = [list(DEEP_SIZES), list(DEEP_LAYERS), list(ORDERS)]
    param_names = ["size", "layers", "order"]

    def setup(self, size, layers, order):
        self._data(size, layers)
        if order == "wavefront":
            self.fn = self._wavefront()
        elif order == "njit_stack":
            self.fn = self._njit_stack()
        else:
            self.fn = self.run[order]

    def time_forward(self, size, layers, order):
        self.fn()


class LayerOrderRatio(_Order, RatioBenchmark):
    """M MLP layers' time over N recurrent layers' (layer by layer), interleaved in one process."""

    params = [list(DEEP_SIZES), list(DEEP_LAYERS)]
    param_names = ["size", "layers"]
    ratio_repeats = 3

    def setup(self, size, layers):
        self._data(size, layers)

    def track_mlp_over_stack(self, size, layers):
        return self.ratio(self.run["mlp"], self.run["stack"])


class WavefrontRatio(_Order, RatioBenchmark):
    """The same N layers as a wavefront (njit executor) over layer by layer (reference stack)."""

    params = [list(DEEP_SIZES), list(DEEP_LAYERS)]
    param_names = ["size", "layers"]
    ratio_repeats = 3

    def setup(self, size, layers):
        self._data(size, layers)
        self.wavefront = self._wavefront()

    def track_wavefront_over_stack(self, size, layers):
        return self.ratio(self.wavefront, self.run["stack"])


class DeepTrain(TimeBenchmark):
    """A training step of the deep RNN + head: forward, backward through head and time, peak memory."""

    params = [["small", "T50_B64"], [1, 4]]
    param_names = ["size", "layers"]

    def setup(self, size, layers):
        deep = require_moved("refrnn.layers.deep", "refrnn.deep", "init", "forward", "backward")
        s = DEEP_SIZES[size]
        self.deep = deep
        # deep.init takes the cell first on commits where its first parameter is named so.
        first = next(iter(inspect.signature(deep.init).parameters))
        cell = (require("refrnn.cells.gru"),) if first == "cell" else ()
        self.model = deep.init(
            *cell, s["D"], s["H"], s["D"], num_layers=layers, head_layers=layers, rng=rng("deep-model", size, layers)
        )
        self.x = inputs(s, "float64")
        out, _, self.cache = deep.forward(self.model, self.x)
        self.dout = normal(out.shape, "float64", key="deep-dout")

    def time_forward(self, size, layers):
        self.deep.forward(self.model, self.x)

    def time_backward(self, size, layers):
        self.deep.backward(self.model, self.cache, self.dout)

    def peakmem_forward_backward(self, size, layers):
        _, _, cache = self.deep.forward(self.model, self.x)
        self.deep.backward(self.model, cache, self.dout)
