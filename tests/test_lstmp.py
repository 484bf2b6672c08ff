"""LSTM with peepholes and a projection (LSTMP): gradients, reductions to the plain LSTM, shapes."""

import numpy as np
import pytest

from refrnn import LSTMParams, gradcheck, lstm
from refrnn.layers import stack
from refrnn.cells.lstm import LSTMCache


def _case(*, proj_size=2, peepholes=True, T=5, B=2, D=3, H=4, seed=0):
    rng = np.random.default_rng(seed)
    p = lstm.init(D, H, proj_size=proj_size, peepholes=peepholes, rng=rng)
    p = p.replace(b_x=rng.uniform(-1, 1, 4 * H), b_h=rng.uniform(-1, 1, 4 * H))
    if peepholes:  # larger than init's 1/sqrt(H) range, so the peephole terms matter
        p = p.replace(w_ic=rng.uniform(-1, 1, H), w_fc=rng.uniform(-1, 1, H), w_oc=rng.uniform(-1, 1, H))
    state0 = (rng.standard_normal((B, p.output_size)), rng.standard_normal((B, H)))
    return p, rng.standard_normal((T, B, D)), state0


@pytest.mark.parametrize("proj_size,peepholes", [(2, True), (2, False), (0, True), (5, True)])
def test_gradients_match_finite_differences(proj_size, peepholes):
    p, x, s0 = _case(proj_size=proj_size, peepholes=peepholes)
    report = gradcheck(p, x, s0, seed=1)
    expected = {"W_x", "W_h", "b_x", "b_h", "x", "state0[0]", "state0[1]"}
    expected |= {"w_ic", "w_fc", "w_oc"} if peepholes else set()
    expected |= {"W_hr"} if proj_size else set()
    assert set(report.relative) == expected
    assert report.passed, str(report)


@pytest.mark.parametrize("field", ["w_ic", "w_fc", "w_oc", "W_hr"])
def test_gradcheck_sees_a_wrong_optional_gradient(field):
    def broken(params, cache, dy, ds=None):
        grads, dx, ds0 = lstm.backward(params, cache, dy, ds)
        return grads.replace(**{field: getattr(grads, field) * 1.01}), dx, ds0

    report = gradcheck(*_case(), backward=broken)
    assert not report.passed and report.worst[0] == field


def test_zero_peepholes_and_identity_projection_are_the_plain_lstm():
    p, x, (h0, c0) = _case(proj_size=0, peepholes=False, H=4)
    H = p.hidden_size
    zero = np.zeros(H)
    y, (h_T, c_T), _ = lstm.forward(p, x, (h0, c0))
    same = p.replace(w_ic=zero, w_fc=zero, w_oc=zero, W_hr=np.eye(H))
    y2, (h2, c2), _ = lstm.forward(same, x, (h0, c0))
    np.testing.assert_allclose(y2, y, rtol=0, atol=1e-15)
    np.testing.assert_allclose(c2, c_T, rtol=0, atol=1e-15)


def test_projection_sizes_and_state():
    p, x, (h0, c0) = _case(proj_size=2, H=4)
    assert (p.hidden_size, p.proj_size, p.output_size) == (4, 2, 2)
    assert [a.shape for a in lstm.zero_state(p, 3)] == [(3, 2), (3, 4)]
    y, (h_T, c_T), cache = lstm.forward(p, x, (h0, c0))
    assert y.shape == (5, 2, 2) and h_T.shape == (2, 2) and c_T.shape == (2, 4)
    np.testing.assert_allclose(h_T, (cache.o[-1] * np.tanh(c_T)) @ p.W_hr.T, rtol=0, atol=1e-15)


def test_output_gate_peeps_at_the_new_cell_state():
    """o_t uses c_t, i_t and f_t use c_{t-1} (Gers & Schmidhuber; ONNX): checked on one step by hand."""
    p, x, (h0, c0) = _case(proj_size=0, T=1)
    _, (h1, c1), cache = lstm.forward(p, x, (h0, c0))
    a = x[0] @ p.W_x.T + p.b_x + h0 @ p.W_h.T + p.b_h
    a_i, a_f, a_g, a_o = np.split(a, 4, axis=-1)
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    i, f = sig(a_i + p.w_ic * c0), sig(a_f + p.w_fc * c0)
    c = f * c0 + i * np.tanh(a_g)
    o = sig(a_o + p.w_oc * c)
    np.testing.assert_allclose(c1, c, rtol=0, atol=1e-15)
    np.testing.assert_allclose(h1, o * np.tanh(c), rtol=0, atol=1e-15)


def test_plain_construction_and_cache_stay_positional():
    """Code that builds LSTMParams(W_x, W_h, b_x, b_h) and LSTMCache(x, h, c, i, f, g, o, tc) keeps working."""
    p = lstm.init(3, 4, rng=0)
    q = LSTMParams(p.W_x, p.W_h, p.b_x, p.b_h)
    assert q.array_names() == ("W_x", "W_h", "b_x", "b_h") and not q.has_peepholes and q.proj_size == 0
    assert LSTMParams.array_names() == ("W_x", "W_h", "b_x", "b_h", "w_ic", "w_fc", "w_oc", "W_hr")
    x = np.random.default_rng(1).standard_normal((4, 2, 3))
    y, _, cache = lstm.forward(q, x)
    rebuilt = LSTMCache(*cache[:8])
    g1 = lstm.backward(q, cache, np.ones_like(y))[0]
    g2 = lstm.backward(q, rebuilt, np.ones_like(y))[0]
    for name in q.array_names():
        np.testing.assert_array_equal(getattr(g1, name), getattr(g2, name))
    assert g1.w_ic is None and g1.W_hr is None


def test_astype_and_map_keep_optional_arrays():
    p, _, _ = _case()
    p32 = p.astype(np.float32)
    assert p32.W_hr.dtype == p32.w_oc.dtype == np.float32
    assert lstm.init(3, 4, rng=0).astype(np.float32).w_ic is None


def test_projected_layers_chain_in_a_stack():
    layers = stack.init(lstm, 3, 4, 2, proj_size=2, rng=0)
    assert layers[1].input_size == 2
    x = np.random.default_rng(2).standard_normal((4, 2, 3))
    report = gradcheck(layers, x, seed=3)
    assert report.passed, str(report)


@pytest.mark.parametrize(
    "changes, pattern",
    [
        ({"W_hr": np.zeros((2, 5))}, r"LSTMParams.W_hr: expected shape \(P, H\) with P=4, H=4"),
        ({"w_ic": np.zeros(3)}, r"LSTMParams.w_ic: expected shape \(H,\) with H=4"),
        ({"W_h": np.zeros((16, 2))}, r"LSTMParams.W_h: expected shape \(4H, H\), got \(16, 2\) \(or \(4H, P\) with a projection"),
    ],
)
def test_bad_optional_shapes(changes, pattern):
    with pytest.raises(ValueError, match=pattern):
        lstm.init(3, 4, rng=0).replace(**changes)


def test_projected_state_shapes_are_checked():
    p, x, (h0, c0) = _case(proj_size=2, H=4)
    with pytest.raises(ValueError, match=r"state0\[0\] \(h\): expected shape \(B, P\) with .*P=2"):
        lstm.forward(p, x, (c0, c0))
    y, _, cache = lstm.forward(p, x, (h0, c0))
    with pytest.raises(ValueError, match=r"dy: expected shape \(T, B, P\)"):
        lstm.backward(p, cache, np.zeros((5, 2, 4)))
