"""Bad input raises ValueError/TypeError naming the argument, the shape received and the shape expected."""

import numpy as np
import pytest

from refrnn import GRUParams, LSTMParams, gradcheck, gru, lstm

P = gru.init(3, 4, rng=0)
L = lstm.init(3, 4, rng=0)
X = np.zeros((5, 2, 3))


@pytest.mark.parametrize(
    "x, h0, error, pattern",
    [
        (np.zeros((5, 3)), None, ValueError, r"x: expected a 3-d array of shape \(T, B, D\) with D=3, got shape \(5, 3\)"),
        (np.zeros((5, 2, 4)), None, ValueError, r"x: expected shape \(T, B, D\) with D=3.*got shape \(5, 2, 4\)"),
        (X, np.zeros((2, 5)), ValueError, r"h0: expected shape \(B, H\) with .*H=4.*got shape \(2, 5\)"),
        (X, np.zeros((3, 4)), ValueError, r"h0: .*got shape \(3, 4\) \(B=3, expected 2\)"),
        (X, np.zeros((1, 2, 4)), ValueError, r"h0: expected a 2-d array"),
        (X.astype(np.float32), None, TypeError, r"x: dtype float32 does not match the parameters' dtype float64"),
        (X, np.zeros((2, 4), np.float32), TypeError, r"h0: dtype float32 does not match"),
        (X.astype(np.int64), None, TypeError, r"x: expected a float32 or float64 array, got dtype int64"),
        (np.full((5, 2, 3), np.nan), None, ValueError, r"x: contains NaN or infinity"),
        (X, np.full((2, 4), np.inf), ValueError, r"h0: contains NaN or infinity"),
    ],
)
def test_gru_forward_inputs(x, h0, error, pattern):
    with pytest.raises(error, match=pattern):
        gru.forward(P, x, h0)


def test_lstm_state_shapes_are_checked_per_component():
    with pytest.raises(ValueError, match=r"state0\[1\] \(c\): expected shape \(B, H\)"):
        lstm.forward(L, X, (np.zeros((2, 4)), np.zeros((2, 3))))


def test_backward_checks_upstream_gradients():
    y, h_T, cache = gru.forward(P, X)
    with pytest.raises(ValueError, match=r"dy: expected shape \(T, B, H\) with T=5, B=2, H=4, got shape \(5, 2, 3\)"):
        gru.backward(P, cache, np.zeros((5, 2, 3)))
    with pytest.raises(ValueError, match=r"dh_T: expected a 2-d array of shape \(B, H\) with B=2, H=4, got shape \(2,\)"):
        gru.backward(P, cache, np.zeros_like(y), np.zeros((2,)))
    with pytest.raises(TypeError, match="dy: dtype float32"):
        gru.backward(P, cache, np.zeros(y.shape, np.float32))
    _, _, lcache = lstm.forward(L, X)
    with pytest.raises(ValueError, match=r"dy: contains NaN"):
        lstm.backward(L, lcache, np.full((5, 2, 4), np.nan))


def test_unknown_convention_name():
    with pytest.raises(ValueError, match=r"reset: unknown value 'middle'; expected one of 'after', 'before'"):
        P.replace(reset="middle")
    with pytest.raises(ValueError, match="reset: unknown value"):
        gru.init(3, 4, reset="Before")


@pytest.mark.parametrize(
    "field, value, error, pattern",
    [
        ("W_h", np.zeros((12, 5)), ValueError, r"GRUParams.W_h: expected shape \(3H, H\), got \(12, 5\)"),
        ("W_x", np.zeros((11, 3)), ValueError, r"GRUParams.W_x: expected shape \(3H, D\) with 3H=12.*got shape \(11, 3\)"),
        ("b_h", np.zeros((12, 1)), ValueError, r"GRUParams.b_h: expected a 1-d array of shape \(3H,\) with 3H=12"),
        ("b_x", np.zeros(12, np.float32), TypeError, r"GRUParams: all arrays must share one dtype"),
        ("W_x", np.zeros((12, 3), np.int32), TypeError, r"GRUParams.W_x: expected float32 or float64"),
        ("W_h", np.full((12, 4), np.nan), ValueError, r"GRUParams.W_h: contains NaN"),
    ],
)
def test_gru_params(field, value, error, pattern):
    with pytest.raises(error, match=pattern):
        P.replace(**{field: value})


def test_lstm_params_shape():
    with pytest.raises(ValueError, match=r"LSTMParams.W_h: expected shape \(4H, H\), got \(12, 4\)"):
        LSTMParams(np.zeros((16, 3)), np.zeros((12, 4)), np.zeros(16), np.zeros(16))


def test_gradcheck_refuses_float32():
    with pytest.raises(TypeError, match="gradcheck needs float64"):
        gradcheck(P.astype(np.float32), X.astype(np.float32))


def test_params_container_type_is_checked():
    from refrnn import stack

    with pytest.raises(TypeError, match=r"params: expected one of GRUParams, LSTMParams.*got dict"):
        stack.forward([{"W_x": 1}], X)
    assert isinstance(P, GRUParams)
