"""Deep RNN + per-step MLP head: gradients of every part, the head as one batched product, bad input."""

import numpy as np
import pytest

from refrnn import GRUParams, gradcheck, gru, lstm
from refrnn.layers import deep, mlp, stack
from refrnn.layers.deep import DeepRNN
from refrnn.layers.mlp import DenseParams


def _layers(kinds, D, H, rng):
    out, d = [], D
    for kind in kinds:
        out.append(lstm.init(d, H, rng=rng) if kind == "lstm" else gru.init(d, H, reset=kind, rng=rng))
        d = H
    return tuple(out)


def _state(layers, B, rng):
    """Random (non-zero) initial states, one per layer, in each cell's form."""
    s = []
    for p in layers:
        h = rng.standard_normal((B, p.hidden_size))
        s.append((h, rng.standard_normal((B, p.hidden_size))) if isinstance(p, lstm.LSTMParams) else h)
    return tuple(s)


def _case(kinds, M, activation="tanh", out_activation="identity", *, T=4, B=2, D=3, H=4, O=2, seed=0):
    rng = np.random.default_rng(seed)
    layers = _layers(kinds, D, H, rng)
    head = mlp.init((H,) + (5,) * (M - 1) + (O,), activation=activation, out_activation=out_activation, rng=rng)
    return DeepRNN(layers, head), rng.standard_normal((T, B, D)), _state(layers, B, rng)


def _gradcheck(model, x, s0, backward=deep.backward):
    """gradcheck over the flat sequence model.parts(); the closures rebuild the DeepRNN around it."""

    def fwd(parts, xx, s):
        return deep.forward(model.with_parts(parts), xx, s)

    def bwd(parts, cache, dout, ds):
        grads, dx, ds0 = backward(model.with_parts(parts), cache, dout, ds)
        return grads.parts(), dx, ds0

    return gradcheck(model.parts(), x, s0, forward=fwd, backward=bwd, seed=3)


@pytest.mark.parametrize(
    "kinds, M, activation, out_activation",
    [
        (("after",), 1, "tanh", "identity"),
        (("before", "before"), 2, "tanh", "identity"),
        (("after", "after"), 3, "relu", "tanh"),
        (("lstm", "lstm"), 3, "tanh", "identity"),
        (("before", "lstm", "after"), 2, "identity", "relu"),
        (("lstm", "after"), 1, "tanh", "tanh"),
    ],
)
def test_gradients_match_finite_differences(kinds, M, activation, out_activation):
    model, x, s0 = _case(kinds, M, activation, out_activation)
    report = _gradcheck(model, x, s0)
    n_states = sum(2 if k == "lstm" else 1 for k in kinds)
    # every array is checked: 4 per cell, W and b per head layer, x, every initial-state array
    assert len(report.relative) == 4 * len(kinds) + 2 * M + 1 + n_states
    assert report.passed, str(report)


@pytest.mark.parametrize("part", [0, 1, 2])  # a recurrent layer, the first and the last head layer
def test_gradcheck_sees_an_error_in_any_part(part):
    """A 1% error in one part's first gradient must fail the check, and be blamed on that part."""
    model, x, s0 = _case(("after",), 2)

    def broken(m, cache, dout, ds=None):
        grads, dx, ds0 = deep.backward(m, cache, dout, ds)
        parts = list(grads.parts())
        name = parts[part].array_names()[0]
        parts[part] = parts[part].replace(**{name: getattr(parts[part], name) * 1.01})
        return grads.with_parts(parts), dx, ds0

    report = _gradcheck(model, x, s0, backward=broken)
    assert not report.passed
    assert report.worst[0].startswith(f"layers[{part}].")


def test_forward_is_the_stack_then_the_head_written_out_per_step():
    """The batched head equals its equations applied at each step separately."""
    model, x, s0 = _case(("before", "lstm"), 2)
    out, states, _ = deep.forward(model, x, s0)
    y, stack_states, _ = stack.forward(model.layers, x, s0)
    (W1, b1), (W2, b2) = [(p.W, p.b) for p in model.head]
    for t in range(x.shape[0]):
        np.testing.assert_allclose(out[t], np.tanh(y[t] @ W1.T + b1) @ W2.T + b2, rtol=0, atol=1e-14)
    np.testing.assert_array_equal(states[0], stack_states[0])
    np.testing.assert_array_equal(states[1][1], stack_states[1][1])


def test_relu_head_zeroes_negative_units_and_their_gradient():
    rng = np.random.default_rng(4)
    head = mlp.init((3, 6, 2), activation="relu", rng=rng)
    y = rng.standard_normal((5, 2, 3))
    out, cache = mlp.forward(head, y)
    hidden = cache.a[1]
    pre = y.reshape(10, 3) @ head[0].W.T + head[0].b
    assert (pre < 0).any() and (pre > 0).any()
    np.testing.assert_array_equal(hidden, np.where(pre > 0, pre, 0.0))
    grads, _ = mlp.backward(head, cache, np.ones_like(out))
    # the gradient of b1 only collects the rows where the unit was active
    dpre = (np.ones((10, 2)) @ head[1].W) * (pre > 0)
    np.testing.assert_allclose(grads[0].b, dpre.sum(axis=0), rtol=0, atol=1e-14)


def test_init_builds_the_requested_shapes_and_activations():
    model = deep.init(gru, 3, 6, 2, num_layers=3, head_layers=3, head_hidden=7, rng=0, reset="before")
    assert [p.reset for p in model.layers] == ["before"] * 3
    assert [p.W.shape for p in model.head] == [(7, 6), (7, 7), (2, 7)]
    assert [p.activation for p in model.head] == ["tanh", "tanh", "identity"]
    assert (model.input_size, model.hidden_size, model.output_size) == (3, 6, 2)
    out, states, _ = deep.forward(model, np.zeros((4, 5, 3)))
    assert out.shape == (4, 5, 2) and len(states) == 3
    assert not out.flags.writeable


def test_float32_model_runs_in_float32():
    model = deep.init(lstm, 3, 4, 2, num_layers=2, head_layers=2, rng=0, dtype=np.float32)
    x = np.random.default_rng(1).standard_normal((3, 2, 3)).astype(np.float32)
    out, states, cache = deep.forward(model, x)
    grads, dx, _ = deep.backward(model, cache, np.ones_like(out))
    assert out.dtype == dx.dtype == grads.head[0].W.dtype == np.float32
    # float64 forward of the same weights: float32 rounding (unit 6e-8) over a few steps and 4 layers
    out64, _, _ = deep.forward(model.astype(np.float64), x.astype(np.float64))
    np.testing.assert_allclose(out, out64, rtol=0, atol=1e-5)


def test_zero_state_matches_none():
    model, x, _ = _case(("lstm", "after"), 1)
    a, _, _ = deep.forward(model, x)
    b, _, _ = deep.forward(model, x, deep.zero_state(model, x.shape[1]))
    np.testing.assert_array_equal(a, b)


# --- bad input -----------------------------------------------------------------------------------------


def test_dense_params_reject_bad_shapes_and_names():
    with pytest.raises(ValueError, match="activation: unknown value 'softmax'"):
        DenseParams(np.zeros((2, 3)), np.zeros(2), activation="softmax")
    with pytest.raises(ValueError, match=r"DenseParams.W: expected a 2-d array of shape \(O, I\), got shape \(6,\)"):
        DenseParams(np.zeros(6), np.zeros(2))
    with pytest.raises(ValueError, match=r"DenseParams.b: expected shape \(O,\) with O=2, got shape \(3,\)"):
        DenseParams(np.zeros((2, 3)), np.zeros(3))
    with pytest.raises(TypeError, match="share one dtype"):
        DenseParams(np.zeros((2, 3)), np.zeros(2, np.float32))
    with pytest.raises(ValueError, match="NaN"):
        DenseParams(np.full((2, 3), np.nan), np.zeros(2))


def test_head_layers_must_chain():
    with pytest.raises(ValueError, match=r"layers\[1\]: input size 5 does not match layers\[0\]'s output size 4"):
        mlp.forward(mlp.init((3, 4), rng=0) + mlp.init((5, 2), rng=0), np.zeros((2, 1, 3)))
    with pytest.raises(TypeError, match=r"layers\[0\]: expected DenseParams, got GRUParams"):
        mlp.forward((gru.init(3, 4, rng=0),), np.zeros((2, 1, 3)))
    with pytest.raises(TypeError, match="non-empty sequence"):
        mlp.forward((), np.zeros((2, 1, 3)))
    with pytest.raises(ValueError, match="sizes: expected at least two positive integers"):
        mlp.init((4,))


def test_mlp_rejects_wrong_input_and_gradient_shapes():
    head = mlp.init((3, 4, 2), rng=0)
    with pytest.raises(ValueError, match=r"y: expected shape \(T, B, H\) with H=3, got shape \(2, 1, 4\)"):
        mlp.forward(head, np.zeros((2, 1, 4)))
    with pytest.raises(ValueError, match=r"y: expected a 3-d array"):
        mlp.forward(head, np.zeros((2, 3)))
    out, cache = mlp.forward(head, np.zeros((2, 1, 3)))
    with pytest.raises(ValueError, match=r"dout: expected shape \(T, B, O\) with T=2, B=1, O=2, got shape \(2, 1, 3\)"):
        mlp.backward(head, cache, np.zeros((2, 1, 3)))


def test_deep_model_parts_must_fit():
    layers = _layers(("after", "lstm"), 3, 4, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"head\[0\]: input size 5 does not match layers\[1\]'s output size 4"):
        DeepRNN(layers, mlp.init((5, 2), rng=0))
    with pytest.raises(ValueError, match=r"head\[1\]: input size 3"):
        DeepRNN(layers, mlp.init((4, 6), rng=0) + mlp.init((3, 2), rng=0))
    with pytest.raises(TypeError, match=r"head\[0\]: dtype float32 does not match layers\[0\]'s dtype float64"):
        DeepRNN(layers, mlp.init((4, 2), rng=0, dtype=np.float32))
    with pytest.raises(TypeError, match=r"layers\[1\]: .*got DenseParams"):
        DeepRNN((layers[0],) + mlp.init((4, 4), rng=0), mlp.init((4, 2), rng=0))
    with pytest.raises(ValueError, match=r"layers\[1\]: input size 5 does not match"):
        DeepRNN((layers[0], gru.init(5, 4, rng=0)), mlp.init((4, 2), rng=0))
    with pytest.raises(TypeError, match="head: expected a non-empty sequence"):
        DeepRNN(layers, ())
    model = DeepRNN(layers, mlp.init((4, 2), rng=0))
    with pytest.raises(ValueError, match="parts: expected a sequence of 3"):
        model.with_parts(model.parts()[:2])


def test_deep_forward_and_backward_reject_bad_arguments():
    model, x, s0 = _case(("after", "lstm"), 2)
    with pytest.raises(TypeError, match="model: expected DeepRNN, got tuple"):
        deep.forward(model.layers, x)
    with pytest.raises(ValueError, match=r"x: expected shape \(T, B, D\) with D=3"):
        deep.forward(model, x[..., :2])
    with pytest.raises(ValueError, match="x: contains NaN"):
        deep.forward(model, np.full_like(x, np.nan))
    with pytest.raises(TypeError, match="x: dtype float32 does not match"):
        deep.forward(model, x.astype(np.float32))
    with pytest.raises(ValueError, match="state0: expected a sequence of 2"):
        deep.forward(model, x, s0[:1])
    out, _, cache = deep.forward(model, x, s0)
    with pytest.raises(ValueError, match=r"dout: expected shape \(T, B, O\)"):
        deep.backward(model, cache, out[:-1])
    with pytest.raises(ValueError, match="dstate_T: expected a sequence of 2"):
        deep.backward(model, cache, out, dstate_T=(None,))
    with pytest.raises(ValueError, match="num_layers: expected a positive integer"):
        deep.init(gru, 3, 4, 2, num_layers=0)


def test_init_takes_the_cell_first_and_the_former_order_still_builds_the_same_model():
    new = deep.init(lstm, 3, 4, 2, num_layers=2, head_layers=2, rng=0)
    with pytest.warns(DeprecationWarning, match="pass the cell first"):
        old = deep.init(3, 4, 2, num_layers=2, cell=lstm, head_layers=2, rng=0)
    for a, b in zip(new.parts(), old.parts()):
        for name, arr in a.arrays().items():
            np.testing.assert_array_equal(arr, b.arrays()[name])
    # the layers are stack.init's, with its options
    ref = stack.init(lstm, 3, 4, 2, rng=0)
    np.testing.assert_array_equal(new.layers[1].W_h, ref[1].W_h)
    both = deep.init(gru, 3, 4, 2, bidirectional=True, rng=0)
    assert both.head[0].W.shape == (2, 8)  # the head reads both directions' outputs


def test_stack_init_refuses_a_cell_that_is_not_a_cell_module():
    with pytest.raises(TypeError, match="cell: expected a cell module"):
        stack.init(GRUParams, 3, 4)
    with pytest.raises(ValueError, match="hidden_size: expected a positive integer"):
        stack.init(gru, 3, 0)
