"""Bidirectional layers: PyTorch's ordering, gradients through both directions, the container's behaviour."""

import numpy as np
import pytest

from refrnn.layers import bidirectional as bi
from refrnn import gradcheck, gru, lstm, module_for
from refrnn.layers import stack
from refrnn.layers.bidirectional import BiLayer


def _rand_state(layers, B, rng):
    from refrnn.layers.lengths import tree_map

    return tree_map(lambda a: rng.standard_normal(a.shape), tuple(module_for(p).zero_state(p, B) for p in layers))


def test_outputs_are_forward_then_reverse_and_reverse_ends_at_step_0():
    rng = np.random.default_rng(0)
    layer = bi.init(gru, 3, 4, rng=1)
    x = rng.standard_normal((6, 2, 3))
    s0 = (rng.standard_normal((2, 4)), rng.standard_normal((2, 4)))
    y, (h_f, h_r), _ = bi.forward(layer, x, s0)
    y_f, hf, _ = gru.forward(layer.fwd, x, s0[0])
    y_r, hr, cache_r = gru.forward(layer.rev, x[::-1], s0[1])
    np.testing.assert_array_equal(y[..., :4], y_f)
    np.testing.assert_array_equal(y[..., 4:], y_r[::-1])
    np.testing.assert_array_equal(h_f, hf)
    np.testing.assert_array_equal(h_r, hr)
    np.testing.assert_array_equal(h_r, y[0, :, 4:])  # the reverse state after reading step 0


@pytest.mark.parametrize(
    "make",
    [
        lambda: (bi.init(gru, 3, 4, rng=0),),
        lambda: (bi.init(gru, 3, 3, reset="before", rng=1), bi.init(lstm, 6, 3, proj_size=2, peepholes=True, rng=2)),
        lambda: (BiLayer(gru.init(3, 4, rng=3), lstm.init(3, 2, rng=4)), gru.init(6, 3, rng=5)),
    ],
    ids=["bigru", "bigru-bilstmp", "mixed-directions-then-uni"],
)
def test_stack_gradients_match_finite_differences(make):
    layers = make()
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 2, 3))
    report = gradcheck(layers, x, _rand_state(layers, 2, rng), seed=7)
    assert report.passed, str(report)
    assert any(name.endswith("_reverse") for name in report.relative)


def test_single_bilayer_gradcheck_names_both_directions():
    layer = bi.init(lstm, 2, 3, rng=0)
    report = gradcheck(layer, np.random.default_rng(1).standard_normal((3, 2, 2)))
    assert report.passed, str(report)
    assert {"W_x", "W_x_reverse", "b_h_reverse", "state0[0]", "state0[3]"} <= set(report.relative)


def test_gradcheck_sees_a_wrong_reverse_gradient():
    layer = bi.init(gru, 2, 3, rng=0)

    def broken(params, cache, dy, ds=None):
        grads, dx, ds0 = bi.backward(params, cache, dy, ds)
        return grads.replace(W_h_reverse=grads.rev.W_h * 1.01), dx, ds0

    report = gradcheck(layer, np.random.default_rng(1).standard_normal((3, 2, 2)), backward=broken)
    assert not report.passed and report.worst[0] == "W_h_reverse"


def test_container_arrays_replace_and_astype():
    layer = bi.init(lstm, 3, 4, proj_size=2, rng=0)
    names = layer.array_names()
    assert names[:5] == ("W_x", "W_h", "b_x", "b_h", "W_hr") and names[5:] == tuple(n + "_reverse" for n in names[:5])
    assert layer.arrays()["W_hr_reverse"] is layer.rev.W_hr
    new = layer.replace(b_x_reverse=np.zeros(16))
    assert not np.any(new.rev.b_x) and new.fwd is layer.fwd
    assert layer.astype(np.float32).rev.W_hr.dtype == np.float32
    assert (layer.input_size, layer.hidden_size, layer.output_size) == (3, 4, 4)
    assert module_for(layer) is bi
    with pytest.raises(AttributeError):
        layer.fwd = layer.rev


def test_bad_containers_and_states():
    with pytest.raises(ValueError, match="rev: input size 4 does not match fwd's input size 3"):
        BiLayer(gru.init(3, 4, rng=0), gru.init(4, 4, rng=0))
    with pytest.raises(TypeError, match="rev: dtype float32"):
        BiLayer(gru.init(3, 4, rng=0), gru.init(3, 4, rng=0, dtype=np.float32))
    inner = bi.init(gru, 3, 4, rng=0)
    with pytest.raises(TypeError, match="fwd: a direction of a BiLayer must be a cell"):
        BiLayer(inner, inner)
    with pytest.raises(TypeError, match=r"fwd: params: expected one of .*got dict"):
        BiLayer({}, gru.init(3, 4, rng=0))
    with pytest.raises(TypeError, match=r"state0: a bidirectional layer's state is the pair"):
        bi.forward(inner, np.zeros((2, 1, 3)), np.zeros((1, 4)))
    with pytest.raises(ValueError, match=r"layers\[1\]: input size 4 does not match layers\[0\]'s output size 8"):
        stack.forward((inner, gru.init(4, 4, rng=0)), np.zeros((2, 1, 3)))


def test_stack_init_mirrors_torch_shapes():
    layers = stack.init(lstm, 5, 3, 3, bidirectional=True, proj_size=2, rng=0)
    assert [(p.input_size, p.fwd.hidden_size, p.output_size) for p in layers] == [(5, 3, 4), (4, 3, 4), (4, 3, 4)]
    y, states, _ = stack.forward(layers, np.zeros((2, 1, 5)))
    assert y.shape == (2, 1, 4) and len(states) == 3 and states[0][1][1].shape == (1, 3)
