"""Sequence splitting: T steps at once equal T1 steps, then T - T1 more from the carried state.

Every cell (GRU, LSTM with its options, SRU, conditional GRU in every mode; in training mode the
batch statistics are per step, so they split too), in mixed stacks of up to three layers.

Equations: the recurrence ``s_t = cell(s_{t-1}, x_t)`` depends on the past only through ``s_{t-1}``, so
``forward(x[:T]) = forward(x[T1:], s_{T1})`` after ``forward(x[:T1], s_0)``; backward splits the same
way in reverse: BPTT over the second part yields ``dL/ds_{T1}``, the upstream state gradient of the
first part, and the weight gradients of the two parts add. The reference computes the input
projections of all steps in one product, so the split runs group the same sums into different BLAS
calls: equality is to rounding (1e-13), not bit for bit.

Shapes: x (T, B, D) = x[:T1] then x[T1:]; states per layer.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refrnn.layers import stack
from refrnn.cells import ccgru
from refrnn.verify.strategies import CELLS, cases, configs

ROUNDING = 1e-13
# Gradients get the project's float64 spec instead: the conditional GRU's training mode divides by
# sqrt(var + eps) of nearly constant batches, which amplifies the rounding of the split sums by up to
# 1/sqrt(eps) ~ 316 per normalisation (the thorough profile found 1.1e-11 on a noise-level gradient).
GRADIENTS = 1e-10
# Each cell on its own (so each gets the profile's full count of examples), then mixed stacks.
CELL_SETS = [(c,) for c in sorted(CELLS)] + [tuple(sorted(CELLS))]
CONFIGS = {cells: configs(cells, min_T=1, max_T=8, max_layers=3, same_layers=False) for cells in CELL_SETS}


def _leaves(tree):
    if isinstance(tree, (tuple, list)):
        return [leaf for item in tree for leaf in _leaves(item)]
    return [tree]


def _close(a, b, tol=ROUNDING):
    for u, v in zip(_leaves(a), _leaves(b), strict=True):
        np.testing.assert_allclose(u, v, rtol=0, atol=tol)


@pytest.mark.parametrize("cells", CELL_SETS, ids="+".join)
@given(data=st.data())
def test_running_T_steps_equals_T1_steps_then_the_rest(cells, data):
    """forward(x) == forward(x[:T1]) followed by forward(x[T1:]) from its final state, for every 0 <= T1 <= T."""
    case = data.draw(cases(CONFIGS[cells], adversarial=None, grads=False), label="case")
    T1 = data.draw(st.integers(0, case.config.T), label="T1")
    y, s_T, _ = stack.forward(case.layers, case.x, case.state0)
    y1, s1, _ = stack.forward(case.layers, case.x[:T1], case.state0)
    y2, s2, _ = stack.forward(case.layers, case.x[T1:], s1)
    _close(y, np.concatenate([y1, y2]))
    _close(s_T, s2)


@pytest.mark.parametrize("cells", CELL_SETS, ids="+".join)
@given(data=st.data())
def test_backprop_through_time_splits_at_any_step(cells, data):
    """BPTT over x equals BPTT over x[T1:] seeding BPTT over x[:T1] with its dstate0: dx concatenates, weight gradients add."""
    case = data.draw(cases(CONFIGS[cells], adversarial=None), label="case")
    T1 = data.draw(st.integers(0, case.config.T), label="T1")  # empty parts included
    _, _, cache = stack.forward(case.layers, case.x, case.state0)
    grads, dx, ds0 = stack.backward(case.layers, cache, case.dy, case.dstate_T)
    _, s1, cache1 = stack.forward(case.layers, case.x[:T1], case.state0)
    _, _, cache2 = stack.forward(case.layers, case.x[T1:], s1)
    grads2, dx2, ds_mid = stack.backward(case.layers, cache2, case.dy[T1:], case.dstate_T)
    grads1, dx1, ds0_split = stack.backward(case.layers, cache1, case.dy[:T1], ds_mid)
    _close(dx, np.concatenate([dx1, dx2]), GRADIENTS)
    _close(ds0, ds0_split, GRADIENTS)
    for g, g1, g2 in zip(grads, grads1, grads2):
        for name in g.array_names():
            np.testing.assert_allclose(getattr(g, name), getattr(g1, name) + getattr(g2, name), rtol=0, atol=GRADIENTS)


@pytest.mark.parametrize("T,B", [(0, 2), (3, 0)])
def test_ccgru_backward_over_an_empty_sequence(T, B):
    """Backward over zero steps (or zero rows) returns zero weight gradients and passes dh_T through, as every other cell does."""
    p = ccgru.init(2, 3, rng=0, mode="inference")
    _, _, cache = ccgru.forward(p, np.zeros((T, B, 2)), np.ones((B, 3)))
    grads, dx, dh0 = ccgru.backward(p, cache, np.zeros((T, B, 3)), np.full((B, 3), 0.5))
    assert dx.shape == (T, B, 2) and dh0.shape == (B, 3)
    assert all(not np.any(a) for a in grads.arrays().values())
