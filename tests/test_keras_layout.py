"""Keras layout: round trips, refusal of cross-convention conversions, a deliberately wrong port, and refrnn vs
Keras's published equations (always) and vs Keras itself with the torch backend (when keras is installed)."""

import os
import sys

import numpy as np
import pytest

from refrnn.layers import bidirectional as bi
from refrnn import gru, lstm
from refrnn.layers import stack
from refrnn.layouts.keras import from_keras, to_keras


def _gru(reset, seed=0, D=3, U=4):
    rng = np.random.default_rng(seed)
    p = gru.init(D, U, reset=reset, rng=rng)
    return p.replace(b_x=rng.uniform(-1, 1, 3 * U), b_h=rng.uniform(-1, 1, 3 * U))


def _x(seed=1, B=3, T=6, D=3):
    return np.random.default_rng(seed).standard_normal((B, T, D))  # Keras is batch-first


def keras_gru_equations(weights, x, reset_after):
    """keras.layers.GRU's documented cell (GRUCell.call), transcribed: gate columns z, r, h,
    ``h = z * h_prev + (1 - z) * hh``; reset applied to the recurrent product (after) or to h (before)."""
    kernel, rec, bias = weights
    U = rec.shape[0]
    b_in, b_rec = (bias[0], bias[1]) if reset_after else (bias, np.zeros(3 * U))
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    h, ys = np.zeros((x.shape[0], U)), []
    for t in range(x.shape[1]):
        xz, xr, xh = np.split(x[:, t] @ kernel + b_in, 3, axis=-1)
        rz, rr, rh = np.split(h @ rec + b_rec, 3, axis=-1)
        z, r = sig(xz + rz), sig(xr + rr)
        hh = np.tanh(xh + (r * rh if reset_after else (r * h) @ rec[:, 2 * U :]))
        h = z * h + (1 - z) * hh
        ys.append(h)
    return np.stack(ys, axis=1)


def keras_lstm_equations(weights, x):
    """keras.layers.LSTM's cell, transcribed: gate columns i, f, c, o, one bias."""
    kernel, rec, bias = weights
    U = rec.shape[0]
    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    h, c, ys = np.zeros((x.shape[0], U)), np.zeros((x.shape[0], U)), []
    for t in range(x.shape[1]):
        i, f, g, o = np.split(x[:, t] @ kernel + h @ rec + bias, 4, axis=-1)
        c = sig(f) * c + sig(i) * np.tanh(g)
        h = sig(o) * np.tanh(c)
        ys.append(h)
    return np.stack(ys, axis=1)


@pytest.mark.parametrize("reset", ["after", "before"])
def test_gru_matches_the_keras_equations(reset):
    p, x = _gru(reset), _x()
    y, _, _ = stack.forward([p], x, batch_first=True)
    expected = keras_gru_equations(to_keras(p), x, reset_after=(reset == "after"))
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-13)


def test_lstm_matches_the_keras_equations():
    rng = np.random.default_rng(2)
    p = lstm.init(3, 4, rng=rng).replace(b_x=rng.uniform(-1, 1, 16), b_h=rng.uniform(-1, 1, 16))
    y, _, _ = stack.forward([p], _x(), batch_first=True)
    np.testing.assert_allclose(y, keras_lstm_equations(to_keras(p), _x()), rtol=0, atol=1e-13)


@pytest.mark.parametrize("reset", ["after", "before"])
def test_gru_round_trip(reset):
    p = _gru(reset)
    w = to_keras(p)
    assert [a.shape for a in w] == [(3, 12), (4, 12), (2, 12) if reset == "after" else (12,)]
    back = from_keras(w, "GRU", reset_after=(reset == "after"))
    assert back.reset == reset
    if reset == "after":  # a pure re-ordering: bit-exact
        for name in p.array_names():
            np.testing.assert_array_equal(getattr(back, name), getattr(p, name))
    else:  # one bias per gate: b_x + b_h is kept, exactly the sum each gate sees
        np.testing.assert_array_equal(back.b_x, p.b_x + p.b_h)
        assert not np.any(back.b_h)
    y, _, _ = stack.forward([p], _x(), batch_first=True)
    y2, _, _ = stack.forward([back], _x(), batch_first=True)
    np.testing.assert_allclose(y2, y, rtol=0, atol=1e-14)
    np.testing.assert_array_equal(to_keras(back)[0], w[0])


def test_lstm_and_bidirectional_round_trip():
    p = bi.init(lstm, 3, 4, rng=0)
    w = to_keras(p)
    assert len(w) == 6 and w[2].shape == (16,)
    back = from_keras(w, "LSTM", bidirectional=True)
    np.testing.assert_array_equal(back.rev.W_h, p.rev.W_h)
    np.testing.assert_array_equal(back.fwd.b_x, p.fwd.b_x + p.fwd.b_h)
    named = from_keras({"kernel": w[0], "recurrent_kernel": w[1], "bias": w[2]}, "LSTM")
    np.testing.assert_array_equal(named.W_x, p.fwd.W_x)


def test_use_bias_false():
    p = gru.init(3, 4, rng=0).map(np.copy)
    p = p.replace(b_x=np.zeros(12), b_h=np.zeros(12))
    w = to_keras(p, use_bias=False)
    assert len(w) == 2
    back = from_keras(w, "GRU")
    assert not np.any(back.b_x) and back.reset == "after"
    with pytest.raises(ValueError, match="use_bias=False needs zero biases"):
        to_keras(_gru("after"), use_bias=False)


@pytest.mark.parametrize("reset", ["after", "before"])
def test_cross_convention_conversion_is_refused(reset):
    other = reset == "before"  # the reset_after value of the other convention
    with pytest.raises(ValueError, match=rf"reset_after={other}: these weights are reset='{reset}'.*no exact conversion"):
        to_keras(_gru(reset), reset_after=other)


def test_bias_shape_names_the_reset_after_setting():
    w = to_keras(_gru("before"))
    with pytest.raises(ValueError, match=r"bias: a reset_after=True GRU's bias has shape \(2, 3U\).*pass reset_after=False"):
        from_keras(w, "GRU")
    with pytest.raises(ValueError, match=r"pass reset_after=True"):
        from_keras(to_keras(_gru("after")), "GRU", reset_after=False)
    with pytest.raises(ValueError, match="no peepholes and no projection"):
        to_keras(lstm.init(3, 4, proj_size=2, rng=0))


def test_a_port_without_the_z_r_swap_is_far_off():
    """PyTorch/refrnn weights copied into Keras by transposing only (gate blocks left r, z, n): the oracle sees it."""
    p, x = _gru("after"), _x()
    wrong = [p.W_x.T.copy(), p.W_h.T.copy(), np.stack([p.b_x, p.b_h])]
    y, _, _ = stack.forward([p], x, batch_first=True)
    y_wrong, _, _ = stack.forward([from_keras(wrong, "GRU")], x, batch_first=True)
    assert np.max(np.abs(y - y_wrong)) > 1e-2


# --- against Keras itself -------------------------------------------------------------------------------------
# Keras 3 with its torch backend (the installed torch, CPU). Its reset_after=True GRU and its LSTM go through the
# backend's own recurrences (keras/src/backend/torch/rnn.py), computed with torch in the weights' dtype: float64,
# agreement ~1e-16. Its reset_after=False GRU falls back to Keras's generic GRUCell, whose ops.matmul follows
# Keras's type promotion, which maps float64 to float32 (keras.backend.result_type, "aligned with JAX's
# default"): those products are rounded to float32 (measured difference ~4e-8), so the check there is 1e-6,
# and the float64 check of that convention is the equations test above.
if "keras" not in sys.modules:
    os.environ["KERAS_BACKEND"] = "torch"


@pytest.fixture(scope="module")
def keras():
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip(f"keras uses the {keras.backend.backend()} backend; these tests need KERAS_BACKEND=torch")
    return keras


# Keras's own conversion of its variables for get_weights() trips a NumPy 2 deprecation; not ours to fix.
keras_warnings = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")


def _np(t):
    return t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)


@keras_warnings
@pytest.mark.parametrize("reset,tol", [("after", 1e-12), ("before", 1e-6)])
def test_gru_matches_keras(keras, reset, tol):
    p, x = _gru(reset), _x()
    layer = keras.layers.GRU(4, reset_after=(reset == "after"), return_sequences=True, return_state=True, dtype="float64")
    layer.build((None, None, 3))
    layer.set_weights(to_keras(p))
    ky, kh = layer(x)
    y, h_T, _ = stack.forward([p], x, batch_first=True)
    assert np.max(np.abs(_np(ky) - y)) <= tol and np.max(np.abs(_np(kh) - h_T[0])) <= tol
    # the weights read back from Keras give the same refrnn model
    back = from_keras(layer.get_weights(), "GRU", reset_after=(reset == "after"))
    np.testing.assert_allclose(stack.forward([back], x, batch_first=True)[0], y, rtol=0, atol=1e-14)


@keras_warnings
def test_lstm_and_bidirectional_gru_match_keras(keras):
    x = _x()
    p = lstm.init(3, 4, rng=3)
    layer = keras.layers.LSTM(4, return_sequences=True, return_state=True, dtype="float64")
    layer.build((None, None, 3))
    layer.set_weights(to_keras(p))
    ky, kh, kc = layer(x)
    y, ((h_T, c_T),), _ = stack.forward([p], x, batch_first=True)
    assert max(np.max(np.abs(_np(ky) - y)), np.max(np.abs(_np(kc) - c_T))) <= 1e-12

    b = bi.init(gru, 3, 4, rng=4)
    inner = keras.layers.GRU(4, return_sequences=True, return_state=True, dtype="float64")
    wrapper = keras.layers.Bidirectional(inner, dtype="float64")
    wrapper.build((None, None, 3))
    wrapper.set_weights(to_keras(b))
    ky, kh_f, kh_r = wrapper(x)
    y, ((h_f, h_r),), _ = stack.forward([b], x, batch_first=True)
    assert max(np.max(np.abs(_np(ky) - y)), np.max(np.abs(_np(kh_r) - h_r))) <= 1e-12
