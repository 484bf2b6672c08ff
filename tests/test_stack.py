"""Stacked layers: gradients through every layer, mixed cells, per-layer states."""

import numpy as np
import pytest

from refrnn import gradcheck, gru, lstm
from refrnn.layers import stack


def _layers(kinds, D=3, H=4, seed=0):
    rng = np.random.default_rng(seed)
    out, d = [], D
    for kind in kinds:
        out.append(lstm.init(d, H, rng=rng) if kind == "lstm" else gru.init(d, H, reset=kind, rng=rng))
        d = H
    return tuple(out)


@pytest.mark.parametrize(
    "kinds", [("after",), ("after", "after"), ("before", "lstm", "after"), ("lstm", "lstm", "lstm")]
)
def test_gradients_match_finite_differences(kinds):
    layers = _layers(kinds)
    x = np.random.default_rng(1).standard_normal((5, 2, 3))
    report = gradcheck(layers, x, seed=2)
    assert len([k for k in report.relative if k.startswith("layers[")]) == 4 * len(kinds)
    assert report.passed, str(report)


def test_stack_equals_layers_run_by_hand():
    layers = _layers(("after", "lstm"))
    rng = np.random.default_rng(3)
    x = rng.standard_normal((7, 2, 3))
    s0 = (rng.standard_normal((2, 4)), (rng.standard_normal((2, 4)), rng.standard_normal((2, 4))))
    y, states, _ = stack.forward(layers, x, s0)
    y1, h1, _ = gru.forward(layers[0], x, s0[0])
    y2, (h2, c2), _ = lstm.forward(layers[1], y1, s0[1])
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(states[0], h1)
    np.testing.assert_array_equal(states[1][1], c2)


def test_layer_sizes_must_chain():
    layers = (gru.init(3, 4, rng=0), gru.init(5, 4, rng=1))
    with pytest.raises(ValueError, match=r"layers\[1\].*input size 5.*hidden size 4"):
        stack.forward(layers, np.zeros((2, 1, 3)))


def test_per_layer_state_count_must_match():
    layers = _layers(("after", "after"))
    with pytest.raises(ValueError, match="state0: expected a sequence of 2"):
        stack.forward(layers, np.zeros((2, 1, 3)), (np.zeros((1, 4)),))


def test_empty_stack_is_refused():
    with pytest.raises(TypeError, match="layers"):
        stack.forward((), np.zeros((2, 1, 3)))
