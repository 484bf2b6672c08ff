"""refrnn against PyTorch on the CPU: torch's own time, and refrnn/torch ratios measured in one process.

torch is optional: without it (or in an environment built without the torch extra) every benchmark
here is skipped. PyTorch runs inference under ``no_grad`` in float32, with as many threads as the
machine has cores, like NumPy's BLAS and Numba. A ratio below 1 means refrnn is faster.
"""

from __future__ import annotations

import os

from .bench_jit import jit_module
from .common import SEED, SIZES, RatioBenchmark, TimeBenchmark, cell_params, inputs, require_torch

TORCH_CELLS = ("gru", "lstm")
CANDIDATES = ("reference", "jit")


def torch_forward(cell: str, size: dict, x):
    """A callable running ``torch.nn.GRU``/``LSTM`` of the size's shape over ``x`` (a NumPy array)."""
    torch = require_torch()
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(SEED)
    module = (torch.nn.GRU if cell == "gru" else torch.nn.LSTM)(size["D"], size["H"]).float().eval()
    xt = torch.from_numpy(x)

    def run():
        with torch.no_grad():
            return module(xt)

    run()
    return run


class TorchForward(TimeBenchmark):
    """torch.nn.GRU / LSTM inference forward, float32: the yardstick the ratios divide by."""

    params = [list(SIZES), list(TORCH_CELLS)]
    param_names = ["size", "cell"]

    def setup(self, size, cell):
        self.fn = torch_forward(cell, SIZES[size], inputs(SIZES[size], "float32"))

    def time_forward(self, size, cell):
        self.fn()


class RefrnnOverTorch(RatioBenchmark):
    """refrnn's forward time / torch's, float32; ``candidate`` is the NumPy reference or the njit path."""

    params = [list(SIZES), list(TORCH_CELLS), list(CANDIDATES)]
    param_names = ["size", "cell", "candidate"]

    def setup(self, size, cell, candidate):
        s = SIZES[size]
        x = inputs(s, "float32")
        self.torch = torch_forward(cell, s, x)
        ref, p = cell_params(cell, s["D"], s["H"], "float32")
        if candidate == "reference":
            self.refrnn = lambda: ref.forward(p, x)
        else:
            fast = jit_module(cell)
            prepared = fast.prepare(p, "batched")
            self.refrnn = lambda: fast.forward_inference(p, x, strategy="batched", prepared=prepared)
            self.refrnn()  # compile here

    def track_refrnn_over_torch(self, size, cell, candidate):
        return self.ratio(self.refrnn, self.torch)
