"""Variable-length batches: padding is inert, states stop at each sample's last step, gradients skip padding."""

import sys
import types

import numpy as np
import pytest

from refrnn.layers import bidirectional as bi
from refrnn import gradcheck, gru, lstm, module_for
from refrnn.layers import lengths, stack
from refrnn.cells import _MODULES, register
from refrnn.layers.lengths import tree_map

LENGTHS = np.array([5, 3, 0, 5, 1])


def _layers(kind, H=3):
    if kind == "gru":
        return (gru.init(3, H, rng=0),)
    if kind == "lstmp":
        return (lstm.init(3, H, proj_size=2, peepholes=True, rng=1),)
    return (bi.init(gru, 3, H, rng=2), bi.init(lstm, 2 * H, 2, rng=3))


def _leaves(tree):
    return [leaf for item in tree for leaf in _leaves(item)] if isinstance(tree, tuple) else [tree]


def _state(layers, B, rng):
    return tree_map(lambda a: rng.standard_normal(a.shape), tuple(module_for(p).zero_state(p, B) for p in layers))


@pytest.mark.parametrize("kind", ["gru", "lstmp", "bi-stack"])
def test_each_sample_equals_its_own_unpadded_run(kind):
    layers = _layers(kind)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 5, 3))
    s0 = _state(layers, 5, rng)
    y, s_T, _ = stack.forward(layers, x, s0, lengths=LENGTHS)
    for b, L in enumerate(LENGTHS):
        s0_b = tree_map(lambda a: a[b : b + 1], s0)
        y_b, s_b, _ = stack.forward(layers, x[:L, b : b + 1], s0_b)
        np.testing.assert_allclose(y[:L, b], y_b[:, 0], rtol=0, atol=1e-14)
        assert not np.any(y[L:, b])  # padding outputs are exactly zero
        for mine, alone in zip(_leaves(s_T), _leaves(s_b)):
            np.testing.assert_allclose(mine[b], alone[0], rtol=0, atol=1e-14)


def test_padding_values_do_not_matter_and_get_no_gradient():
    layers = _layers("bi-stack")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((5, 5, 3))
    x2 = x.copy()
    for b, L in enumerate(LENGTHS):
        x2[L:, b] = 1e3  # garbage in the padding
    y1, s1, cache = stack.forward(layers, x, lengths=LENGTHS)
    y2, s2, _ = stack.forward(layers, x2, lengths=LENGTHS)
    np.testing.assert_array_equal(y1, y2)
    _, dx, _ = stack.backward(layers, cache, rng.standard_normal(y1.shape))
    for b, L in enumerate(LENGTHS):
        assert not np.any(dx[L:, b]) and (L == 0 or np.any(dx[:L, b]))


@pytest.mark.parametrize("kind", ["gru", "lstmp", "bi-stack"])
def test_gradients_match_finite_differences(kind):
    layers = _layers(kind, H=2)
    rng = np.random.default_rng(6)
    lens = np.array([3, 1, 0])
    x = rng.standard_normal((3, 3, 3))
    report = gradcheck(
        layers,
        x,
        _state(layers, 3, rng),
        seed=7,
        forward=lambda p, xx, s: stack.forward(p, xx, s, lengths=lens),
        backward=stack.backward,
    )
    assert report.passed, str(report)


def test_length_zero_passes_state_and_its_gradient_through():
    p = lstm.init(3, 4, rng=0)
    rng = np.random.default_rng(1)
    s0 = (rng.standard_normal((2, 4)), rng.standard_normal((2, 4)))
    y, (h, c), cache = lengths.forward(p, rng.standard_normal((3, 2, 3)), s0, [0, 0])
    assert not np.any(y) and y.shape == (3, 2, 4)
    np.testing.assert_array_equal(h, s0[0])
    ds = (rng.standard_normal((2, 4)), rng.standard_normal((2, 4)))
    grads, dx, (dh0, dc0) = lengths.backward(p, cache, np.ones_like(y), ds)
    np.testing.assert_array_equal(dc0, ds[1])
    assert not np.any(dx) and not np.any(grads.W_h)


def test_reverse_direction_reads_each_valid_prefix_backwards():
    x = np.arange(12.0).reshape(4, 3, 1)
    out = bi.reverse_valid(x, np.array([4, 2, 0]))
    np.testing.assert_array_equal(out[:, 0, 0], [9, 6, 3, 0])
    np.testing.assert_array_equal(out[:, 1, 0], [4, 1, 7, 10])  # prefix reversed, padding in place
    np.testing.assert_array_equal(out[:, 2, 0], x[:, 2, 0])
    np.testing.assert_array_equal(bi.reverse_valid(out, np.array([4, 2, 0])), x)


def test_coupled_cells_are_refused():
    """A cell whose samples depend on each other (batch statistics) declares it and gets a clear error."""
    fake = types.ModuleType("coupled_cell")
    fake.__dict__.update({k: getattr(gru, k) for k in ("forward", "backward", "zero_state")})
    fake.couples_samples = lambda params: True

    class CoupledParams(gru.GRUParams):
        pass

    register(CoupledParams, fake)
    try:
        p = CoupledParams(*gru.init(3, 4, rng=0).arrays().values())
        with pytest.raises(ValueError, match="lengths: CoupledParams .* couples the samples"):
            stack.forward([p], np.zeros((2, 2, 3)), lengths=[2, 1])
        stack.forward([p], np.zeros((2, 2, 3)))  # without lengths it runs
    finally:
        del _MODULES[CoupledParams]
    assert "coupled_cell" not in sys.modules


@pytest.mark.parametrize(
    "value, error, pattern",
    [
        ([2, 1], ValueError, r"lengths: expected shape \(B,\) with B=3, got shape \(2,\)"),
        ([2, 1, 4], ValueError, r"lengths: every length must be in 0..T \(T=3\)"),
        ([2, -1, 1], ValueError, r"lengths: every length must be in 0..T"),
        ([2.0, 1.0, 1.0], TypeError, r"lengths: expected integers, got dtype float64"),
    ],
)
def test_bad_lengths(value, error, pattern):
    with pytest.raises(error, match=pattern):
        stack.forward([gru.init(2, 3, rng=0)], np.zeros((3, 3, 2)), lengths=value)


def test_unbatched_input_takes_no_lengths():
    with pytest.raises(ValueError, match=r"lengths: unbatched input"):
        stack.forward([gru.init(2, 3, rng=0)], np.zeros((3, 2)), lengths=[3])
