"""What an optimiser loop needs from the cells: mapping over parameters, gradients and moments at once,
and the documented import paths."""

import subprocess
import sys

import numpy as np
import pytest

from refrnn import gru, lstm, map_params
from refrnn.layers import bidirectional, stack


def _stack():
    layers = (gru.init(3, 5, rng=0), bidirectional.init(lstm, 5, 4, rng=1))
    x = np.random.default_rng(2).standard_normal((6, 2, 3))
    return layers, x


def test_map_takes_same_shaped_containers_alongside():
    p = gru.init(3, 4, rng=0)
    g = p.map(lambda a: np.full_like(a, 2.0))
    m = p.map(np.zeros_like)
    out = p.map(lambda w, g, m: w - 0.5 * g + m, g, m)
    for name, a in out.arrays().items():
        np.testing.assert_array_equal(a, p.arrays()[name] - 1.0)
    assert out.reset == p.reset


def test_map_refuses_containers_of_another_kind_or_shape():
    p = gru.init(3, 4, rng=0)
    with pytest.raises(TypeError, match=r"others\[0\]: expected a GRUParams.*got LSTMParams"):
        p.map(lambda a, b: a, lstm.init(3, 4, rng=0))
    with pytest.raises(ValueError, match=r"others\[1\].W_x: expected shape \(12, 3\).*got shape \(12, 2\)"):
        p.map(lambda a, b, c: a, p, gru.init(2, 4, rng=0))


def test_map_params_walks_a_stack_with_bidirectional_layers():
    layers, _ = _stack()
    zeros = map_params(np.zeros_like, layers)
    assert isinstance(zeros[1], bidirectional.BiLayer)
    doubled = map_params(lambda a, z: 2 * a + z, layers, zeros)
    np.testing.assert_array_equal(doubled[1].rev.W_h, 2 * layers[1].rev.W_h)
    with pytest.raises(ValueError, match=r"others\[0\]: expected a sequence of 2 like params, got tuple of length 1"):
        map_params(lambda a, b: a, layers, layers[:1])
    with pytest.raises(TypeError, match="params: expected a parameter container"):
        map_params(np.zeros_like, {"W": np.zeros(3)})


def test_an_adam_loop_written_with_map_params_lowers_the_loss():
    layers, x = _stack()
    target = np.random.default_rng(3).standard_normal((6, 2, 8)) * 0.5
    m = map_params(np.zeros_like, layers)
    v = map_params(np.zeros_like, layers)
    lr, b1, b2, eps = 0.02, 0.9, 0.999, 1e-8
    losses = []
    for step in range(1, 61):
        y, _, cache = stack.forward(layers, x)
        losses.append(0.5 * float(np.sum((y - target) ** 2)))
        grads, _, _ = stack.backward(layers, cache, y - target)
        m = map_params(lambda m, g: b1 * m + (1 - b1) * g, m, grads)
        v = map_params(lambda v, g: b2 * v + (1 - b2) * g * g, v, grads)
        c1, c2 = 1 - b1**step, 1 - b2**step
        layers = map_params(lambda w, m, v: w - lr * (m / c1) / (np.sqrt(v / c2) + eps), layers, m, v)
    assert losses[-1] < 0.5 * losses[0], losses[::10]


def test_the_cells_import_by_their_documented_paths():
    code = (
        "import refrnn.lstm, refrnn.gru, refrnn.sru, refrnn.ccgru, refrnn\n"
        "from refrnn.gru import GRUParams\n"
        "assert refrnn.lstm is refrnn.cells.lstm and GRUParams is refrnn.GRUParams\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_the_paper_orientation_has_one_name_and_the_old_ones_warn():
    import warnings

    from refrnn.layouts import paper

    for old in ("gru_from_paper", "gru_to_paper"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert getattr(paper, old) is paper.flip_update_orientation
        assert any(issubclass(w.category, DeprecationWarning) and "flip_update_orientation" in str(w.message) for w in caught)
    with pytest.raises(AttributeError):
        paper.gru_sideways
