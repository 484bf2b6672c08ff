"""Reference NumPy cells (refrnn.cells): forward, backward through time, and peak memory of a training step.

The reference is float64 ground truth; its speed matters because every fast path's tests and every
``refrnn verify`` run go through it, and it is the baseline of the fast/reference ratios elsewhere.
"""

from __future__ import annotations

from .common import CELLS, SIZES, TimeBenchmark, cell_params, inputs, normal, require


class ReferenceCell(TimeBenchmark):
    """GRU (both reset conventions) and LSTM, float64, at the `refrnn bench` sizes."""

    params = [list(SIZES), list(CELLS)]
    param_names = ["size", "cell"]

    def setup(self, size, cell):
        require("refrnn.cells")
        s = SIZES[size]
        self.module, self.p = cell_params(cell, s["D"], s["H"], "float64")
        self.x = inputs(s, "float64")
        y, _, self.cache = self.module.forward(self.p, self.x)
        self.dy = normal(y.shape, "float64", key="dy")

    def time_forward(self, size, cell):
        self.module.forward(self.p, self.x)

    def time_backward(self, size, cell):
        self.module.backward(self.p, self.cache, self.dy)

    def peakmem_forward_backward(self, size, cell):
        # The cache holds every step's gates: memory grows with T*B*H, this row shows by how much.
        _, _, cache = self.module.forward(self.p, self.x)
        self.module.backward(self.p, cache, self.dy)


class ReferenceFloat32(TimeBenchmark):
    """The reference forward in float32, the dtype of the paper's workloads and of the fast paths' bars."""

    params = [list(SIZES), ["gru", "lstm"]]
    param_names = ["size", "cell"]

    def setup(self, size, cell):
        require("refrnn.cells")
        s = SIZES[size]
        self.module, self.p = cell_params(cell, s["D"], s["H"], "float32")
        self.x = inputs(s, "float32")

    def time_forward(self, size, cell):
        self.module.forward(self.p, self.x)
