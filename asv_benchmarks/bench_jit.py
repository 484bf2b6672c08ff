"""Numba fast paths of the dense cells (refrnn.jit.gru, refrnn.jit.lstm): times and in-process ratios.

Strategies (see refrnn/jit/gru.py): "batched" forms the input projection of all T steps as one GEMM,
then one recurrent product a step; "fused" multiplies ``[x_t, h_{t-1}]`` by ``[W_x | W_h]`` every
step (the fused gate product [x_t, h_{t-1}] @ [W_x | W_h].T). Each kernel is compiled in ``setup`` by one
call on the benchmark's own data (same shapes, same dtype), so no timed body ever compiles.
"""

from __future__ import annotations

from .common import DTYPES, SIZES, STRATEGY_SIZES, RatioBenchmark, TimeBenchmark, cell_params, inputs, require

JIT_CELLS = ("gru", "gru_before", "lstm")
STRATEGIES = ("batched", "fused")


def jit_module(cell: str):
    """The fast twin of a reference cell name of ``common.CELLS``."""
    name = "lstm" if cell == "lstm" else "gru"
    return require(f"refrnn.jit.{name}", "forward", "forward_inference", "prepare")


class _Dense:
    def _data(self, size, cell, dtype):
        s = STRATEGY_SIZES[size]  # SIZES and the wide sizes
        self.fast = jit_module(cell)
        self.ref, self.p = cell_params(cell, s["D"], s["H"], dtype)
        self.x = inputs(s, dtype)
        self.prepared = {k: self.fast.prepare(self.p, k) for k in STRATEGIES}

    def _inference(self, strategy):
        fast, p, x, prep = self.fast, self.p, self.x, self.prepared[strategy]
        fn = lambda: fast.forward_inference(p, x, strategy=strategy, prepared=prep)  # noqa: E731
        fn()  # compile here, for these shapes and this dtype
        return fn

    def _train(self, strategy):
        fast, p, x, prep = self.fast, self.p, self.x, self.prepared[strategy]
        fn = lambda: fast.forward(p, x, strategy=strategy, prepared=prep)  # noqa: E731
        fn()
        return fn

    def _reference(self):
        ref, p, x = self.ref, self.p, self.x
        return lambda: ref.forward(p, x)


class JitForward(_Dense, TimeBenchmark):
    """Inference forward (outputs only) and training forward (fills the cache the reference backward
    consumes), float32 (the dtype of the speed bars of `refrnn bench`), by cell and strategy."""

    params = [list(SIZES), list(JIT_CELLS), list(STRATEGIES)]
    param_names = ["size", "cell", "strategy"]

    def setup(self, size, cell, strategy):
        self._data(size, cell, "float32")
        self.inference = self._inference(strategy)
        self.train = self._train(strategy)

    def time_inference(self, size, cell, strategy):
        self.inference()

    def time_train_forward(self, size, cell, strategy):
        self.train()

    def peakmem_train_forward(self, size, cell, strategy):
        self.train()


class JitOverReference(_Dense, RatioBenchmark):
    """Fast inference time / reference forward time, interleaved in one process. Below 1: the fast path wins."""

    params = [list(SIZES), list(JIT_CELLS), list(DTYPES)]
    param_names = ["size", "cell", "dtype"]

    def setup(self, size, cell, dtype):
        self._data(size, cell, dtype)
        self.batched = self._inference("batched")
        self.reference = self._reference()

    def track_inference_over_reference(self, size, cell, dtype):
        return self.ratio(self.batched, self.reference)


class JitTrainOverReference(_Dense, RatioBenchmark):
    """Fast training forward (same cache as the reference's) / reference forward, float32."""

    params = [list(SIZES), list(JIT_CELLS)]
    param_names = ["size", "cell"]

    def setup(self, size, cell):
        self._data(size, cell, "float32")
        self.train = self._train("batched")
        self.reference = self._reference()

    def track_train_forward_over_reference(self, size, cell):
        return self.ratio(self.train, self.reference)


class FusedOverBatched(_Dense, RatioBenchmark):
    """The fused gate product's time / the pre-batched input projection's, float32: when does fusing win?"""

    params = [list(STRATEGY_SIZES), list(JIT_CELLS)]
    param_names = ["size", "cell"]

    def setup(self, size, cell):
        self._data(size, cell, "float32")
        self.fused = self._inference("fused")
        self.batched = self._inference("batched")

    def track_fused_over_batched(self, size, cell):
        return self.ratio(self.fused, self.batched)
