"""The PyTorch layout: state-dict conversions are exact, and conventions PyTorch lacks are refused (run in CI,
never skipped)."""

import numpy as np
import pytest
import torch

from refrnn import gru, lstm
from refrnn.layouts.torch import from_torch, to_torch

def random_case(kind: str, *, T: int, B: int, D: int, H: int, layers: int = 1, seed: int = 0):
    rng = np.random.default_rng(seed)
    mod = lstm if kind.startswith("LSTM") else gru
    params = tuple(mod.init(D if k == 0 else H, H, rng=rng) for k in range(layers))
    x = rng.standard_normal((T, B, D))
    state0 = tuple(
        (rng.standard_normal((B, H)), rng.standard_normal((B, H))) if mod is lstm else rng.standard_normal((B, H))
        for _ in range(layers)
    )
    return params, x, state0


# The outputs and gradients of every module against the reference: tests/test_verify_reach.py (drawn
# and fixed cases through refrnn.verify).


def test_compare_sees_a_wrong_convention():
    """The cross-check is not vacuous: reset-before weights run by torch as reset-after are far off."""
    params, x, state0 = random_case("GRU", T=20, B=3, D=5, H=7, seed=0)
    before = tuple(p.replace(reset="before") for p in params)
    from refrnn.layers import stack

    y_before, _, _ = stack.forward(before, x, state0)
    y_after, _, _ = stack.forward(params, x, state0)
    assert np.max(np.abs(y_before - y_after)) > 1e-3  # so a torch match of 1e-10 singles out reset='after'


@pytest.mark.parametrize("kind", ["GRU", "LSTM", "GRUCell", "LSTMCell"])
def test_state_dict_round_trip_is_bit_exact(kind):
    module = getattr(torch.nn, kind)(5, 7, **({} if "Cell" in kind else {"num_layers": 2}))
    sd = module.state_dict()
    params = from_torch(sd, kind)
    back = to_torch(params, kind)
    assert set(back) == set(sd)
    for key, value in sd.items():
        assert back[key].dtype == np.float32
        np.testing.assert_array_equal(back[key], value.numpy())
    module.load_state_dict({k: torch.from_numpy(v) for k, v in back.items()})


def test_module_without_bias_reads_as_zero_biases_and_exports_back():
    module = torch.nn.GRU(3, 4, bias=False)
    (p,) = from_torch(module.state_dict(), "GRU")
    assert not np.any(p.b_x) and not np.any(p.b_h)
    assert set(to_torch([p], "GRU", bias=False)) == {"weight_ih_l0", "weight_hh_l0"}
    with pytest.raises(ValueError, match="bias=False needs zero biases"):
        to_torch([gru.init(3, 4, rng=0)], "GRU", bias=False)


def test_reset_before_cannot_be_exported_to_torch():
    with pytest.raises(ValueError, match="reset='before'.*no exact conversion"):
        to_torch([gru.init(3, 4, reset="before", rng=0)], "GRU")


def test_unsupported_keys_are_refused_not_dropped():
    sd = torch.nn.GRU(3, 4, bidirectional=True).state_dict()
    with pytest.raises(ValueError, match="unexpected key 'weight_ih_l0_reverse'"):
        from_torch(sd, "GRU")
    with pytest.raises(ValueError, match="unexpected key 'weight_ih_l0'.*GRUCell"):
        from_torch(torch.nn.GRU(3, 4).state_dict(), "GRUCell")


def test_wrong_kinds_are_refused():
    with pytest.raises(ValueError, match="kind: unknown PyTorch module 'QRNN'"):
        from_torch({}, "QRNN")  # RNN is a kind since refrnn.cells.rnn
    with pytest.raises(TypeError, match="needs GRUParams, got LSTMParams"):
        to_torch([lstm.init(3, 4, rng=0)], "GRU")
    with pytest.raises(ValueError, match="layers 0..L-1"):
        from_torch({"weight_ih_l1": np.zeros((12, 3)), "weight_hh_l1": np.zeros((12, 4))}, "GRU")
