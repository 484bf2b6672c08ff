"""The jit fast paths with no step (T = 0) or no sequence (B = 0) return what the reference returns:
empty outputs and the initial state, never an error from inside a reshape."""

import numpy as np
import pytest

from refrnn import gru, lstm
from refrnn.layers import wavefront as reference_wavefront
from refrnn.cells import ccgru

pytest.importorskip("numba")
from refrnn.jit import ccgru as jit_ccgru  # noqa: E402
from refrnn.jit import gru as jit_gru  # noqa: E402
from refrnn.jit import lstm as jit_lstm  # noqa: E402
from refrnn.jit import wavefront as jit_wavefront  # noqa: E402

EMPTY = [(0, 2), (3, 0), (0, 0)]  # (T, B)


def _leaves(state):
    return state if isinstance(state, tuple) else (state,)


def _same(out, ref):
    y, state = out[0], out[1]
    assert y.shape == ref[0].shape and y.dtype == ref[0].dtype
    for a, b in zip(_leaves(state), _leaves(ref[1]), strict=True):
        np.testing.assert_array_equal(a, b)


def _state0(p, B, rng):
    h0 = rng.standard_normal((B, p.hidden_size))
    return (h0, rng.standard_normal((B, p.hidden_size))) if isinstance(p, lstm.LSTMParams) else h0


CELLS = [
    ("gru", lambda: gru.init(3, 4, rng=0), jit_gru, gru, ["batched", "fused"]),
    ("lstm", lambda: lstm.init(3, 4, rng=0), jit_lstm, lstm, ["batched", "fused"]),
    ("ccgru-block", lambda: ccgru.init(3, 4, variant="block", g=2, rng=0, mode="inference"), jit_ccgru, ccgru,
     ["dense", "block"]),
    ("ccgru-lowrank", lambda: ccgru.init(3, 4, variant="lowrank", g=2, rng=0, mode="inference"), jit_ccgru, ccgru,
     ["dense", "unstructured"]),
]


@pytest.mark.parametrize("T, B", EMPTY)
@pytest.mark.parametrize("name, make, fast, reference, algorithms", CELLS, ids=[c[0] for c in CELLS])
def test_empty_sequences_and_batches_give_the_reference_result(name, make, fast, reference, algorithms, T, B):
    p = make()
    rng = np.random.default_rng(1)
    x, s0 = np.zeros((T, B, 3)), _state0(p, B, rng)
    ref = reference.forward(p, x, s0)
    for algorithm in algorithms:
        _same(fast.forward(p, x, s0, algorithm=algorithm), ref)
        _same(fast.forward_inference(p, x, s0, algorithm=algorithm), ref)


@pytest.mark.parametrize("cell", [gru, lstm])
def test_wavefront_with_an_empty_batch_gives_the_reference_result(cell):
    layers = (cell.init(3, 4, rng=0), cell.init(4, 4, rng=1))
    x = np.zeros((2, 0, 3))
    y, states = jit_wavefront.forward(layers, x)
    y_ref, states_ref = reference_wavefront.forward(layers, x)
    assert y.shape == y_ref.shape == (2, 0, 4)
    for a, b in zip(states, states_ref, strict=True):
        for u, v in zip(_leaves(a), _leaves(b), strict=True):
            assert u.shape == v.shape


def test_wavefront_without_steps_is_refused_naming_x_like_the_reference():
    layers = (gru.init(3, 4, rng=0),)
    with pytest.raises(ValueError, match="x: the wavefront needs at least one step"):
        reference_wavefront.forward(layers, np.zeros((0, 2, 3)))
    with pytest.raises(ValueError, match="x: the wavefront needs at least one step"):
        jit_wavefront.forward(layers, np.zeros((0, 2, 3)))
