"""Training steps of the dense cells: jit forward + compiled backward against the reference, float32.

A step is the forward over T steps and the backward of a unit upstream gradient on ``y``; the timed
body runs it once, the forward's cache going straight into the backward (as a training loop does,
with no pause between them). Compilation happens in ``setup``. The ratio ``track_*`` benchmarks
compare the compiled step with the reference's, and with the jit forward followed by the reference
backward (the step before there was a compiled backward, whose two BLAS thread pools fight).
"""

from __future__ import annotations

import numpy as np

from .common import TRAIN_SIZES, RatioBenchmark, TimeBenchmark, cell_params, inputs, require

TRAIN_CELLS = ("gru", "gru_before", "lstm")


class _Step:
    def _data(self, size, cell):
        s = TRAIN_SIZES[size]
        name = "lstm" if cell == "lstm" else "gru"
        self.fast = require(f"refrnn.jit.{name}", "forward", "backward")
        self.ref, self.p = cell_params(cell, s["D"], s["H"], "float32")
        self.x = inputs(s, "float32")
        self.dy = np.ones((s["T"], s["B"], s["H"]), np.float32)

    def _step(self, forward, backward):
        p, x, dy = self.p, self.x, self.dy

        def step():
            _, _, cache = forward(p, x)
            return backward(p, cache, dy)

        step()  # compile here, for these shapes
        return step


class TrainStep(_Step, TimeBenchmark):
    """One training step, compiled (jit forward + jit backward), by size and cell."""

    params = [list(TRAIN_SIZES), list(TRAIN_CELLS)]
    param_names = ["size", "cell"]

    def setup(self, size, cell):
        self._data(size, cell)
        self.compiled = self._step(self.fast.forward, self.fast.backward)

    def time_compiled_step(self, size, cell):
        self.compiled()


class TrainOverReference(_Step, RatioBenchmark):
    """Compiled step time / reference step time, and / jit forward + reference backward. Below 1: compiled wins."""

    params = [list(TRAIN_SIZES), list(TRAIN_CELLS)]
    param_names = ["size", "cell"]

    def setup(self, size, cell):
        self._data(size, cell)
        self.compiled = self._step(self.fast.forward, self.fast.backward)
        self.reference = self._step(self.ref.forward, self.ref.backward)
        self.mixed = self._step(self.fast.forward, self.ref.backward)

    def track_step_over_reference(self, size, cell):
        return self.ratio(self.compiled, self.reference)

    def track_step_over_jit_forward_reference_backward(self, size, cell):
        return self.ratio(self.compiled, self.mixed)
