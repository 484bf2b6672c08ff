"""The PyTorch layout beyond the plain case: bidirectional state dicts and h_n order, proj_size, packed
sequences (run in CI, never skipped)."""

import numpy as np
import pytest
import torch

from refrnn.layers import bidirectional as bi
from refrnn import gru, lstm, module_for
from refrnn.layers import stack
from refrnn.layouts.torch import from_torch, state_from_torch, state_to_torch, to_torch
from refrnn.layers.lengths import tree_map

SORTED = [7, 5, 5, 2, 1, 1]
UNSORTED = [2, 7, 1, 5, 1, 5]


def _case(kind, *, bidirectional, proj_size=0, layers=2, T=7, B=6, D=3, H=4, seed=0):
    rng = np.random.default_rng(seed)
    cell, opts = (gru, {}) if kind == "GRU" else (lstm, {"proj_size": proj_size})
    params = stack.init(cell, D, H, layers, bidirectional=bidirectional, rng=rng, **opts)
    x = rng.standard_normal((T, B, D))
    s0 = tree_map(lambda a: rng.standard_normal(a.shape), tuple(module_for(p).zero_state(p, B) for p in params))
    return params, x, s0


# Outputs, states and gradients against torch with these conventions: tests/test_verify_reach.py.


def test_compare_sees_swapped_directions():
    """Not vacuous: a BiLayer with its directions swapped is far from torch's module."""
    params, x, s0 = _case("GRU", bidirectional=True, layers=1)
    swapped = (bi.BiLayer(params[0].rev, params[0].fwd),)
    y, _, _ = stack.forward(params, x, s0)
    y_swapped, _, _ = stack.forward(swapped, x, s0)
    assert np.max(np.abs(y - y_swapped)) > 1e-2


def test_lengths_use_the_valid_prefix_not_the_padding():
    """Not vacuous: running the padded batch as if full length changes outputs and states far beyond 1e-10."""
    params, x, s0 = _case("LSTM", bidirectional=True, seed=2)
    y_packed, s_packed, _ = stack.forward(params, x, s0, lengths=SORTED)
    y_full, s_full, _ = stack.forward(params, x, s0)
    assert np.max(np.abs(y_packed[:1] - y_full[:1])) > 1e-2  # reverse outputs at step 0 differ too
    assert np.max(np.abs(state_to_torch(params, s_packed)[0] - state_to_torch(params, s_full)[0])) > 1e-2


@pytest.mark.parametrize("kind,opts", [("GRU", {}), ("LSTM", {"proj_size": 2})])
def test_bidirectional_state_dict_round_trip_is_bit_exact(kind, opts):
    module = getattr(torch.nn, kind)(3, 4, num_layers=2, bidirectional=True, **opts)
    sd = module.state_dict()
    params = from_torch(sd, kind, bidirectional=True)
    assert all(isinstance(p, bi.BiLayer) for p in params)
    back = to_torch(params, kind)
    assert set(back) == set(sd)
    for key, value in sd.items():
        np.testing.assert_array_equal(back[key], value.numpy())


def test_state_layout_round_trip_and_order():
    params, _, s0 = _case("LSTM", bidirectional=True, proj_size=2)
    h_n, c_n = state_to_torch(params, s0)
    assert h_n.shape == (4, 6, 2) and c_n.shape == (4, 6, 4)
    np.testing.assert_array_equal(h_n[1], s0[0][1][0])  # l0 fwd, l0 rev, l1 fwd, l1 rev
    np.testing.assert_array_equal(c_n[2], s0[1][0][1])
    back = state_from_torch(params, h_n, c_n)
    pairs = []
    tree_map(lambda u, v: pairs.append((u, v)), back, s0)  # also checks that the structures agree
    assert len(pairs) == 8
    for u, v in pairs:
        np.testing.assert_array_equal(u, v)


def test_refusals():
    bid = torch.nn.GRU(3, 4, bidirectional=True).state_dict()
    with pytest.raises(ValueError, match=r"unexpected key 'weight_ih_l0_reverse'.*bidirectional=True"):
        from_torch(bid, "GRU")
    with pytest.raises(ValueError, match=r"layer 0 of torch.nn.GRU lacks its weight_ih_l0_reverse"):
        from_torch(torch.nn.GRU(3, 4).state_dict(), "GRU", bidirectional=True)
    with pytest.raises(ValueError, match=r"unexpected key 'weight_hr_l0' for torch.nn.GRU"):
        from_torch({"weight_hr_l0": np.zeros((2, 4))}, "GRU")
    with pytest.raises(ValueError, match="no peephole connections"):
        to_torch([lstm.init(3, 4, peepholes=True, rng=0)], "LSTM")
    with pytest.raises(ValueError, match="bidirectional in every layer or in none"):
        to_torch([bi.init(gru, 3, 4, rng=0), gru.init(8, 4, rng=0)], "GRU")
    with pytest.raises(ValueError, match="one hidden size"):
        to_torch([gru.init(3, 4, rng=0), gru.init(4, 5, rng=0)], "GRU")
    with pytest.raises(ValueError, match=r"params\[0\].rev: .*reset='before'"):
        to_torch([bi.BiLayer(gru.init(3, 4, rng=0), gru.init(3, 4, reset="before", rng=0))], "GRU")
