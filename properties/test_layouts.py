"""Layout conversions are lossless: PyTorch <-> refrnn round trips are the identity, bit for bit.

Equations: ``W_x = weight_ih_l{k}``, ``W_h = weight_hh_l{k}``, ``b_x = bias_ih_l{k}``, ``b_h = bias_hh_l{k}``
(:mod:`refrnn.layouts.torch`); the seed paper's update orientation is refrnn's with the z rows negated
(:mod:`refrnn.layouts.paper`), and since ``1 - sigmoid(a) = sigmoid(-a)`` both compute the same h.

Shapes: per layer W_x (G*H, D_k), W_h (G*H, H), b_x, b_h (G*H,).
"""

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st

from refrnn.layers import stack
from refrnn.cells import gru
from refrnn.cells._common import sigmoid
from refrnn.layouts.paper import flip_update_orientation
from refrnn.layouts.torch import from_torch, to_torch
from refrnn.verify.strategies import bounded, cases, configs

torch.set_num_threads(1)  # tiny modules: threads only add synchronisation

DTYPES = st.sampled_from([np.float64, np.float32])  # no compilation involved: both are cheap


def _kind(case, cell: bool) -> str:
    return ("GRU" if case.config.layers[0].cell == "gru" else "LSTM") + ("Cell" if cell else "")


def _assert_same_layers(a, b):
    assert len(a) == len(b)
    for p, q in zip(a, b):
        assert type(p) is type(q)
        for name in p.array_names():
            assert getattr(p, name).dtype == getattr(q, name).dtype
            np.testing.assert_array_equal(getattr(p, name), getattr(q, name))


TORCH_CONFIGS = configs(("gru", "lstm"), max_layers=3, options={"reset": ("after",), "peepholes": (False,)})


@given(cases(TORCH_CONFIGS, adversarial=None, grads=False), st.booleans(), DTYPES)
def test_refrnn_to_torch_to_refrnn_is_the_identity(case, cell, dtype):
    """from_torch(to_torch(layers)) returns the same containers, bit for bit, in float32 and float64."""
    cell = cell and not case.config.layers[0].opts.get("proj_size")  # LSTMCell has no projection
    layers = tuple(p.astype(dtype) for p in (case.layers[:1] if cell else case.layers))
    kind = _kind(case, cell)
    back = from_torch(to_torch(layers[0] if cell else layers, kind), kind)
    _assert_same_layers(layers, (back,) if cell else back)


@given(cases(TORCH_CONFIGS, adversarial=None, grads=False), DTYPES)
def test_torch_state_dict_to_refrnn_to_torch_is_the_identity(case, dtype):
    """A state dict loaded into torch.nn.GRU/LSTM, converted to refrnn and back, is the module's own state dict."""
    kind = _kind(case, False)
    L, D, H = len(case.layers), case.config.D, case.config.layers[0].H
    P = case.config.layers[0].opts.get("proj_size", 0)
    tdtype = torch.float64 if dtype == np.float64 else torch.float32
    module = getattr(torch.nn, kind)(D, H, num_layers=L, dtype=tdtype, **({"proj_size": P} if P else {}))
    module.load_state_dict({k: torch.from_numpy(v.astype(dtype)) for k, v in to_torch(case.layers, kind).items()})
    sd = {k: v.numpy() for k, v in module.state_dict().items()}
    back = to_torch(from_torch(sd, kind), kind)
    assert list(back) == list(sd)  # same keys, in PyTorch's order
    for key, value in sd.items():
        assert back[key].dtype == value.dtype
        np.testing.assert_array_equal(back[key], value)


@given(cases(configs(("gru",)), adversarial=None, grads=False))
def test_paper_orientation_flip_is_an_involution_touching_only_z(case):
    """flip_update_orientation twice is the identity, and once negates exactly the z rows of W_x, W_h, b_x, b_h."""
    p = case.params
    H = p.hidden_size
    once = flip_update_orientation(p)
    _assert_same_layers((flip_update_orientation(once),), (p,))
    for name in p.array_names():
        a, b = getattr(p, name), getattr(once, name)
        np.testing.assert_array_equal(b[H : 2 * H], -a[H : 2 * H])
        np.testing.assert_array_equal(np.delete(b, np.s_[H : 2 * H], axis=0), np.delete(a, np.s_[H : 2 * H], axis=0))


@given(cases(configs(("gru",), max_T=5), adversarial=None, grads=False))
def test_paper_orientation_with_flipped_weights_computes_the_same_states(case):
    """The paper's h' = (1 - z) h + z n with flipped weights equals refrnn's h' = (1 - z) n + z h (to rounding)."""
    p = case.params
    q = flip_update_orientation(p)  # paper weights
    y, _, cache = gru.forward(p, case.x, case.state0[0])
    H = p.hidden_size
    h = case.state0[0]
    for t in range(case.config.T):
        a_z = case.x[t] @ q.W_x[H : 2 * H].T + q.b_x[H : 2 * H] + h @ q.W_h[H : 2 * H].T + q.b_h[H : 2 * H]
        z_paper = sigmoid(a_z)
        h = (1 - z_paper) * h + z_paper * cache.n[t]  # n does not involve z, so it is shared
        np.testing.assert_allclose(h, y[t], rtol=0, atol=1e-14)


@given(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), st.data())
def test_torch_layout_reads_every_drawn_state_dict_without_loss(L, D, H, data):
    """Any arrays named like nn.LSTM's state dict convert to refrnn and back unchanged (not only module-made ones)."""
    sd = {}
    for k in range(L):
        width = D if k == 0 else H
        for key, shape in [("weight_ih", (4 * H, width)), ("weight_hh", (4 * H, H)), ("bias_ih", (4 * H,)), ("bias_hh", (4 * H,))]:
            sd[f"{key}_l{k}"] = data.draw(bounded(shape, 1.0, label=f"{key}_l{k}"))
    back = to_torch(from_torch(sd, "LSTM"), "LSTM")
    assert set(back) == set(sd)
    for key in sd:
        np.testing.assert_array_equal(back[key], sd[key])
    y, _, _ = stack.forward(from_torch(sd, "LSTM"), np.zeros((1, 1, D)))
    assert y.shape == (1, 1, H)
