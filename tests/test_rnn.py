"""Reference vanilla RNN: gradients vs finite differences, agreement with torch.nn.RNN, the layers it runs in,
verify at its defaults, bad input."""

import numpy as np
import pytest
import torch

from refrnn import gradcheck, rnn
from refrnn.layers import bidirectional, lengths, stack
from refrnn.layouts.torch import from_torch, state_from_torch, state_to_torch, to_torch
from refrnn.verify import verify
from refrnn.verify.adapters import torch_module

torch.set_num_threads(1)
ACTS = ("tanh", "relu")


def _case(activation, *, T=6, B=3, D=4, H=5, seed=0):
    rng = np.random.default_rng(seed)
    # biases well away from zero so a dropped or misrouted bias gradient cannot hide
    p = rnn.init(D, H, activation=activation, rng=rng)
    p = p.replace(b_x=rng.uniform(-1, 1, H), b_h=rng.uniform(-1, 1, H))
    return p, rng.standard_normal((T, B, D)), rng.standard_normal((B, H))


@pytest.mark.parametrize("activation", ACTS)
def test_gradients_match_finite_differences(activation):
    report = gradcheck(*_case(activation))
    assert set(report.relative) == {"W_x", "W_h", "b_x", "b_h", "x", "state0"}
    assert report.passed and report.worst[1] < 1e-6, str(report)


@pytest.mark.parametrize("activation", ACTS)
def test_gradients_in_a_bidirectional_stack_with_lengths(activation):
    rng = np.random.default_rng(3)
    layers = stack.init(rnn, 3, 4, 2, bidirectional=True, rng=rng, activation=activation)
    x = rng.standard_normal((5, 3, 3))
    L = np.array([5, 2, 4])
    fwd = lambda p, xx, s0: stack.forward(p, xx, s0, lengths=L)  # noqa: E731
    report = gradcheck(layers, x, forward=fwd, backward=stack.backward)
    assert report.passed and report.worst[1] < 1e-6, str(report)


@pytest.mark.parametrize("field", ["W_x", "W_h", "b_h"])
def test_gradcheck_rejects_a_gradient_scaled_by_1_01(field):
    def broken(params, cache, dy, dh_T=None):
        grads, dx, dh0 = rnn.backward(params, cache, dy, dh_T)
        return grads.replace(**{field: getattr(grads, field) * 1.01}), dx, dh0

    report = gradcheck(*_case("relu"), backward=broken)
    assert not report.passed and report.worst[0] == field


def test_relu_derivative_is_read_from_the_output_and_is_zero_at_zero():
    p = rnn.RNNParams(np.zeros((2, 1)), np.zeros((2, 2)), np.array([0.0, 1.0]), np.zeros(2), activation="relu")
    y, h_T, cache = rnn.forward(p, np.zeros((1, 1, 1)))
    assert y.tolist() == [[[0.0, 1.0]]]
    grads, _, _ = rnn.backward(p, cache, np.ones((1, 1, 2)))
    assert grads.b_x.tolist() == [0.0, 1.0]  # a = 0 exactly: derivative 0, as torch's threshold_backward


def _torch_rnn(layers, activation, *, bidirectional=False, batch_first=False):
    p0 = layers[0].fwd if bidirectional else layers[0]
    m = torch.nn.RNN(p0.input_size, p0.hidden_size, num_layers=len(layers), nonlinearity=activation,
                     bidirectional=bidirectional, batch_first=batch_first, dtype=torch.float64)
    m.load_state_dict({k: torch.from_numpy(v) for k, v in to_torch(layers, "RNN").items()})
    return m


@pytest.mark.parametrize("activation", ACTS)
@pytest.mark.parametrize("bi", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("packed", [False, True], ids=["full", "packed"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["tm", "bf"])
def test_agrees_with_torch_nn_rnn_to_1e_10(activation, bi, packed, batch_first):
    rng = np.random.default_rng(7)
    T, B, D, H, L = 7, 5, 3, 4, 2
    layers = stack.init(rnn, D, H, L, bidirectional=bi, rng=rng, activation=activation)
    x = rng.standard_normal((B, T, D) if batch_first else (T, B, D))
    h0 = rng.standard_normal((L * (2 if bi else 1), B, H))
    lens = np.array([7, 1, 4, 7, 2]) if packed else None
    m = _torch_rnn(layers, activation, bidirectional=bi, batch_first=batch_first)
    tx = torch.from_numpy(x).requires_grad_(True)
    th0 = torch.from_numpy(h0).requires_grad_(True)
    inp = tx
    if packed:
        inp = torch.nn.utils.rnn.pack_padded_sequence(tx, torch.as_tensor(lens), batch_first=batch_first, enforce_sorted=False)
    ty, th = m(inp, th0)
    if packed:
        ty, _ = torch.nn.utils.rnn.pad_packed_sequence(ty, batch_first=batch_first, total_length=T)
    s0 = state_from_torch(layers, h0)
    y, sT, cache = stack.forward(layers, x, s0, lengths=lens, batch_first=batch_first)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(state_to_torch(layers, sT), th.detach().numpy(), rtol=0, atol=1e-10)
    dy, dh = rng.standard_normal(y.shape), rng.standard_normal(h0.shape)
    ((ty * torch.from_numpy(dy)).sum() + (th * torch.from_numpy(dh)).sum()).backward()
    grads, dx, ds0 = stack.backward(layers, cache, dy, state_from_torch(layers, dh))
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(state_to_torch(layers, ds0), th0.grad.numpy(), rtol=0, atol=1e-10)
    mine = to_torch(grads, "RNN")
    for name, prm in m.named_parameters():
        np.testing.assert_allclose(mine[name], prm.grad.numpy(), rtol=0, atol=1e-10, err_msg=name)


def test_torch_layout_round_trip_keeps_the_nonlinearity_it_is_told():
    layers = stack.init(rnn, 3, 4, 2, bidirectional=True, rng=0, activation="relu")
    back = from_torch(to_torch(layers, "RNN"), "RNN", bidirectional=True, nonlinearity="relu")
    assert back[1].rev.activation == "relu"
    for a, b in zip(layers, back):
        for (n, u), (m, v) in zip(a.arrays().items(), b.arrays().items()):
            assert n == m and np.array_equal(u, v)
    cell = from_torch(to_torch(layers[0].fwd, "RNNCell"), "RNNCell")
    assert cell.activation == "tanh" and np.array_equal(cell.W_h, layers[0].fwd.W_h)
    with pytest.raises(ValueError, match="nonlinearity"):
        from_torch(to_torch(layers, "RNN"), "RNN", bidirectional=True, nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="nonlinearity: only torch.nn.RNN"):
        from_torch(to_torch((stack.init(rnn, 3, 4, 1, rng=0)[0],), "RNN"), "GRU", nonlinearity="relu")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("activation", ACTS)
def test_verify_torch_nn_rnn_passes_at_the_defaults(activation, dtype):
    report = verify(torch_module("RNN", dtype=dtype, nonlinearity=activation), min_B=0)
    assert report.passed, str(report)
    c = report.coverage
    assert min(c.conventions.values()) >= 2 and c.features["2+ layers"] >= 10, str(c)
    assert report.cell == f"rnn, activation={activation}"
    assert {"y", "h_n", "dx", "dh_0", "dweight_hh_l0_reverse"} <= set(report.worst)


@pytest.mark.parametrize("activation", ACTS)
def test_verify_torch_nn_rnncell_passes(activation):
    report = verify(torch_module("RNNCell", nonlinearity=activation), max_examples=40)
    assert report.passed, str(report)


def test_verify_catches_the_wrong_nonlinearity_and_a_reversed_direction():
    wrong = torch_module("RNN", nonlinearity="relu")
    wrong.options = {"activation": ("tanh",)}  # declares tanh, runs relu
    assert not verify(wrong, grads=False, max_examples=50).passed

    def reversed_direction(weights, x, state0, *, lengths=None, batch_first=False):
        # the reverse direction's weights swapped with the forward one's: a classic conversion slip
        w = dict(weights)
        for k in [k for k in weights if k.endswith("_reverse")]:
            w[k], w[k[: -len("_reverse")]] = weights[k[: -len("_reverse")]], weights[k]
        return torch_module("RNN")(w, x, state0, lengths=lengths, batch_first=batch_first)

    reversed_direction.cell, reversed_direction.conventions = "rnn", ("bidirectional", "lengths", "batch_first")
    reversed_direction.options = {"activation": ("tanh",)}
    report = verify(reversed_direction, grads=False, max_examples=60)
    assert not report.passed and report.failure.config.bidirectional, str(report)


def test_bad_input_names_the_argument():
    p = rnn.init(3, 4, rng=0)
    with pytest.raises(ValueError, match="activation"):
        rnn.init(3, 4, activation="sigmoid")
    with pytest.raises(ValueError, match="activation"):
        p.replace(activation="gelu")
    with pytest.raises(ValueError, match=r"RNNParams.W_h: expected shape \(H, H\)"):
        rnn.RNNParams(np.zeros((4, 3)), np.zeros((4, 5)), np.zeros(4), np.zeros(4))
    with pytest.raises(ValueError, match="RNNParams.b_h"):
        rnn.RNNParams(np.zeros((4, 3)), np.zeros((4, 4)), np.zeros(4), np.zeros(3))
    with pytest.raises(ValueError, match="x: "):
        rnn.forward(p, np.zeros((2, 1, 5)))
    with pytest.raises(ValueError, match="state0"):
        rnn.forward(p, np.zeros((2, 1, 3)), np.zeros((2, 4)))
    with pytest.raises(TypeError, match="x: dtype float32"):
        rnn.forward(p, np.zeros((2, 1, 3), np.float32))
    _, _, cache = rnn.forward(p, np.zeros((2, 1, 3)))
    with pytest.raises(ValueError, match="dy"):
        rnn.backward(p, cache, np.zeros((3, 1, 4)))
    with pytest.raises(TypeError, match="cache"):
        rnn.backward(p, (cache.x, cache.h), np.zeros((2, 1, 4)))
    relu = p.replace(activation="relu", W_h=np.eye(4) * 1e200)
    with pytest.raises(ValueError, match="state0"):
        rnn.forward(relu, np.zeros((3, 1, 3)), np.full((1, 4), 1e200))
    with pytest.raises(ValueError, match="nonlinearity"):
        torch_module("RNN", nonlinearity="sigmoid")
    with pytest.raises(ValueError, match="nonlinearity: only RNN"):
        torch_module("GRU", nonlinearity="relu")


def test_params_are_read_only_and_the_bilayer_and_lengths_take_the_cell():
    p = rnn.init(2, 3, rng=0, activation="relu")
    with pytest.raises(ValueError):
        p.W_h[0, 0] = 1.0
    bi = bidirectional.init(rnn, 2, 3, rng=1, activation="relu")
    x = np.random.default_rng(2).standard_normal((4, 2, 2))
    y, _, _ = bidirectional.forward(bi, x, lengths=np.array([4, 2]))
    assert y.shape == (4, 2, 6) and np.all(y[2:, 1] == 0)
    y1, s1, _ = lengths.forward(p, x, None, np.array([4, 0]))
    assert np.all(y1[:, 1] == 0) and np.all(s1[1] == 0)
