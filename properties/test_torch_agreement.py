"""The reference equals PyTorch's recurrent modules on every drawn problem (torch layout, float64).

This is :func:`refrnn.verify.compare`, the inner step of ``refrnn verify torch``, as a property: the
weights go through :mod:`refrnn.layouts.torch`, the states through PyTorch's (L, B, H) stacking, and
outputs, final states, dx, dstate0 and every weight gradient must agree within 1e-10 (the spec for
two float64 implementations). Batches of size 0 are drawn: PyTorch accepts them.
"""

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

from refrnn.verify import compare
from refrnn.verify.adapters import torch_module
from refrnn.verify.strategies import cases, configs

torch.set_num_threads(1)  # tiny modules: threads only add synchronisation


TORCH_CONFIGS = configs(("gru", "lstm"), min_B=0, max_layers=3, max_T=8, options={"reset": ("after",), "peepholes": (False,)})


@given(cases(TORCH_CONFIGS, adversarial=None), st.data())
def test_reference_equals_torch_modules_in_float64(case, data):
    """nn.GRU/nn.LSTM (with proj_size too; the *Cell modules for one layer) match the reference within 1e-10 in every output and gradient."""
    lstm = case.config.layers[0].cell == "lstm"
    proj = case.config.layers[0].opts.get("proj_size")
    cell = len(case.layers) == 1 and not proj and data.draw(st.booleans(), label="use the Cell module")
    kind = ("LSTM" if lstm else "GRU") + ("Cell" if cell else "")
    outcome = compare(torch_module(kind), case, layout="torch-cell" if cell else "torch", dtype=np.float64)
    assert outcome.passed, outcome.reason
    assert {"y", "dx"} <= set(outcome.errors) and any(n.startswith("dweight_hh") for n in outcome.errors)
