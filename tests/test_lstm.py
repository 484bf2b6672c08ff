"""Reference LSTM: gradients vs finite differences, state handling, dtypes."""

import numpy as np
import pytest

from refrnn import gradcheck, lstm


def _case(*, T=6, B=2, D=3, H=4, seed=0):
    rng = np.random.default_rng(seed)
    p = lstm.init(D, H, rng=rng)
    p = p.replace(b_x=rng.uniform(-1, 1, 4 * H), b_h=rng.uniform(-1, 1, 4 * H))
    state0 = (rng.standard_normal((B, H)), rng.standard_normal((B, H)))
    return p, rng.standard_normal((T, B, D)), state0


def test_gradients_match_finite_differences():
    report = gradcheck(*_case())
    assert set(report.relative) == {"W_x", "W_h", "b_x", "b_h", "x", "state0[0]", "state0[1]"}
    assert report.passed, str(report)


@pytest.mark.parametrize("field", ["W_x", "W_h", "b_x", "b_h"])
def test_gradcheck_rejects_a_gradient_scaled_by_1_01(field):
    def broken(params, cache, dy, ds=None):
        grads, dx, dstate0 = lstm.backward(params, cache, dy, ds)
        return grads.replace(**{field: getattr(grads, field) * 1.01}), dx, dstate0

    report = gradcheck(*_case(), backward=broken)
    assert not report.passed and report.worst[0] == field


def test_gradcheck_rejects_a_wrong_cell_state_gradient():
    def broken(params, cache, dy, ds=None):
        grads, dx, (dh0, dc0) = lstm.backward(params, cache, dy, ds)
        return grads, dx, (dh0, dc0 * 0.99)

    report = gradcheck(*_case(), backward=broken)
    assert not report.passed and report.worst[0] == "state0[1]"


def test_forget_gate_open_and_input_closed_keeps_the_cell_state():
    """With f = 1, i = 0 exactly (saturated biases, zero weights) c is carried unchanged: c_T == c_0."""
    p, x, (h0, c0) = _case(T=12)
    H = p.hidden_size
    W_x, W_h, b_x = p.W_x.copy(), p.W_h.copy(), p.b_x.copy()
    W_x[: 2 * H] = W_h[: 2 * H] = 0.0
    b_x[:H], b_x[H : 2 * H] = -800.0, 800.0  # i = sigmoid(-800 + b_hi) = 0, f = 1 in float64
    p = p.replace(W_x=W_x, W_h=W_h, b_x=b_x)
    _, (h_T, c_T), cache = lstm.forward(p, x, (h0, c0))
    np.testing.assert_array_equal(c_T, c0)
    np.testing.assert_allclose(h_T, cache.o[-1] * np.tanh(c0), rtol=0, atol=1e-15)


def test_float32_accepted():
    p, x, (h0, c0) = _case(T=20)
    f32 = np.float32
    y32, (h32, c32), cache = lstm.forward(p.astype(f32), x.astype(f32), (h0.astype(f32), c0.astype(f32)))
    y64, _, _ = lstm.forward(p, x, (h0, c0))
    assert y32.dtype == c32.dtype == np.float32
    np.testing.assert_allclose(y32, y64, rtol=0, atol=1e-5)  # contractive cell: float32 rounding does not grow
    grads, dx, (dh0, dc0) = lstm.backward(p.astype(f32), cache, np.ones_like(y32))
    assert grads.W_x.dtype == dc0.dtype == np.float32


def test_state_must_be_a_pair():
    p, x, (h0, _) = _case()
    with pytest.raises(TypeError, match=r"state0.*\(h, c\)"):
        lstm.forward(p, x, h0)
