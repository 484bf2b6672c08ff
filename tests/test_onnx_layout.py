"""ONNX layout: round trips, linear_before_reset mapped to the reset convention (and refused across), a dropped
linear_before_reset seen by the oracle, and refrnn vs the ONNX reference evaluator (when onnx is installed)."""

import numpy as np
import pytest

from refrnn.layers import bidirectional as bi
from refrnn import gru, lstm
from refrnn.layers import stack
from refrnn.layouts.onnx import from_onnx, to_onnx

T, B, D, H = 6, 3, 4, 5


def _x(seed=0):
    return np.random.default_rng(seed).standard_normal((T, B, D))


def _gru(reset, bidirectional=False, seed=1):
    return bi.init(gru, D, H, reset=reset, rng=seed) if bidirectional else gru.init(D, H, reset=reset, rng=seed)


def _lstm(bidirectional=False, seed=2):
    return bi.init(lstm, D, H, peepholes=True, rng=seed) if bidirectional else lstm.init(D, H, peepholes=True, rng=seed)


def _onnx_y(y, ndir):
    """refrnn's (T, B, ndir*H) outputs in the operator's Y layout (T, ndir, B, H)."""
    return y.reshape(T, B, ndir, H).transpose(0, 2, 1, 3)


@pytest.mark.parametrize("reset", ["after", "before"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_gru_round_trip_is_bit_exact(reset, bidirectional):
    p = _gru(reset, bidirectional)
    tensors, attrs = to_onnx(p)
    ndir = 2 if bidirectional else 1
    assert {k: v.shape for k, v in tensors.items()} == {"W": (ndir, 3 * H, D), "R": (ndir, 3 * H, H), "B": (ndir, 6 * H)}
    assert attrs == {"hidden_size": H, "direction": "bidirectional" if bidirectional else "forward",
                     "linear_before_reset": 1 if reset == "after" else 0}
    back = from_onnx("GRU", **tensors, linear_before_reset=attrs["linear_before_reset"])
    assert type(back) is type(p)
    for name, a in p.arrays().items():
        np.testing.assert_array_equal(back.arrays()[name], a)


def test_gru_gate_order_is_z_r_h():
    p = _gru("after")
    W = to_onnx(p)[0]["W"][0]
    np.testing.assert_array_equal(W[:H], p.W_x[H : 2 * H])  # z first
    np.testing.assert_array_equal(W[H : 2 * H], p.W_x[:H])  # then r


@pytest.mark.parametrize("bidirectional", [False, True])
def test_lstm_round_trip_with_peepholes(bidirectional):
    p = _lstm(bidirectional)
    tensors, attrs = to_onnx(p)
    assert set(tensors) == {"W", "R", "B", "P"} and "linear_before_reset" not in attrs
    cell = p.fwd if bidirectional else p
    np.testing.assert_array_equal(tensors["P"][0], np.concatenate([cell.w_ic, cell.w_oc, cell.w_fc]))  # i, o, f
    np.testing.assert_array_equal(tensors["W"][0, H : 2 * H], cell.W_x[3 * H :])  # o second
    back = from_onnx("LSTM", **tensors)
    for name, a in p.arrays().items():
        np.testing.assert_array_equal(back.arrays()[name], a)
    plain = from_onnx("LSTM", tensors["W"], tensors["R"], tensors["B"])
    assert not (plain.fwd if bidirectional else plain).has_peepholes


@pytest.mark.parametrize("reset", ["after", "before"])
def test_cross_convention_conversion_is_refused(reset):
    other = 0 if reset == "after" else 1
    with pytest.raises(ValueError, match=rf"linear_before_reset={other} computes .* reset='{reset}'.*no exact conversion"):
        to_onnx(_gru(reset), linear_before_reset=other)


def test_dropping_linear_before_reset_is_far_off():
    """The reported exporter bug: a PyTorch GRU written without linear_before_reset=1 (ONNX's default is 0)."""
    p, x = _gru("after"), _x()
    tensors, _ = to_onnx(p)
    dropped = from_onnx("GRU", **tensors)  # linear_before_reset left at ONNX's default
    assert dropped.reset == "before"
    y, _, _ = gru.forward(p, x)
    y_dropped, _, _ = gru.forward(dropped, x)
    assert np.max(np.abs(y - y_dropped)) > 1e-2


def test_unrepresentable_and_malformed_inputs():
    with pytest.raises(ValueError, match="no projection"):
        to_onnx(lstm.init(D, H, proj_size=2, rng=0))
    with pytest.raises(ValueError, match=r"R: expected shape \(num_directions, 3H, H\)"):
        from_onnx("GRU", np.zeros((1, 15, 4)), np.zeros((1, 12, 5)))
    with pytest.raises(ValueError, match=r"B: expected shape \(num_directions, 6H\)"):
        from_onnx("GRU", np.zeros((1, 15, 4)), np.zeros((1, 15, 5)), np.zeros((1, 15)))
    with pytest.raises(ValueError, match="direction='forward' needs num_directions=1, got 2"):
        from_onnx("GRU", np.zeros((2, 15, 4)), np.zeros((2, 15, 5)), direction="forward")
    with pytest.raises(ValueError, match="one linear_before_reset for both directions"):
        to_onnx(bi.BiLayer(_gru("after"), _gru("before")))


# --- against the ONNX operators' reference implementation (onnx.reference.ReferenceEvaluator) -------------------


@pytest.fixture(scope="module")
def run_onnx():
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator

    def run(kind, tensors, attrs, x):
        inputs = ["X", "W", "R", "B"] + (["", "", "", "P"] if "P" in tensors else [])  # P is the LSTM's 8th input
        outputs = ["Y", "Y_h"] + (["Y_c"] if kind == "LSTM" else [])
        node = helper.make_node(kind, inputs, outputs, **attrs)
        ndir = tensors["W"].shape[0]

        def info(name, shape):
            return helper.make_tensor_value_info(name, TensorProto.DOUBLE, shape)

        graph = helper.make_graph(
            [node], "rnn", [info("X", list(x.shape))] + [info(k, list(v.shape)) for k, v in tensors.items()],
            [info(o, shape) for o, shape in zip(outputs, ([T, ndir, B, H], [ndir, B, H], [ndir, B, H]))],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])
        onnx.checker.check_model(model)
        return ReferenceEvaluator(model).run(None, {"X": x, **tensors})

    return run


@pytest.mark.parametrize("linear_before_reset", [0, 1])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_gru_equals_the_onnx_operator(run_onnx, linear_before_reset, bidirectional):
    reset = "after" if linear_before_reset else "before"
    p, x = _gru(reset, bidirectional), _x()
    tensors, attrs = to_onnx(p)
    assert attrs["linear_before_reset"] == linear_before_reset
    Y, Y_h = run_onnx("GRU", tensors, attrs, x)
    y, s_T, _ = stack.forward([p], x)
    ndir = 2 if bidirectional else 1
    assert np.max(np.abs(Y - _onnx_y(y, ndir))) <= 1e-12
    h_T = np.stack(s_T[0]) if bidirectional else s_T[0][None]
    assert np.max(np.abs(Y_h - h_T)) <= 1e-12
    # the same weights under the other linear_before_reset: the operator itself is far from refrnn
    Y_other, _ = run_onnx("GRU", tensors, {**attrs, "linear_before_reset": 1 - linear_before_reset}, x)
    assert np.max(np.abs(Y_other - _onnx_y(y, ndir))) > 1e-2


@pytest.mark.parametrize("bidirectional", [False, True])
def test_lstm_with_peepholes_equals_the_onnx_operator(run_onnx, bidirectional):
    p, x = _lstm(bidirectional), _x()
    tensors, attrs = to_onnx(p)
    Y, Y_h, Y_c = run_onnx("LSTM", tensors, attrs, x)
    y, s_T, _ = stack.forward([p], x)
    ndir = 2 if bidirectional else 1
    c_T = np.stack([s[1] for s in s_T[0]]) if bidirectional else s_T[0][1][None]
    assert np.max(np.abs(Y - _onnx_y(y, ndir))) <= 1e-12 and np.max(np.abs(Y_c - c_T)) <= 1e-12
