"""A batch equals its slices: every batch row is an independent sequence.

Equations: each row b of ``x`` (T, B, D) runs ``s^b_t = cell(s^b_{t-1}, x^b_t)`` with no term coupling rows,
so running any partition of the rows separately gives the rows of the whole run; in backward the
weight gradients are sums over rows, so the parts' gradients add. Empty parts (B = 0) are included:
they must run and contribute exactly zero.

Shapes: x[:, rows] (T, |rows|, D); states[rows]; weight gradients summed.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refrnn.layers import stack
from refrnn.verify.strategies import CELLS, cases, configs

ROUNDING = 1e-13
# Each cell on its own (so each gets the profile's full count of examples), then mixed stacks. The
# conditional GRU's training mode normalises over the batch: its rows are coupled on purpose, so
# only its inference mode (running statistics) is row-independent.
CELL_SETS = [(c,) for c in sorted(CELLS)] + [tuple(sorted(CELLS))]
CONFIGS = {
    cells: configs(cells, min_B=0, max_B=5, max_T=5, max_layers=2, same_layers=False, options={"mode": ("inference",)})
    for cells in CELL_SETS
}


def _rows(states, rows):
    return tuple(tuple(a[rows] for a in s) if isinstance(s, tuple) else s[rows] for s in states)


def _leaves(tree):
    if isinstance(tree, (tuple, list)):
        return [leaf for item in tree for leaf in _leaves(item)]
    return [tree]


@pytest.mark.parametrize("cells", CELL_SETS, ids="+".join)
@given(data=st.data())
def test_a_batch_equals_its_slices(cells, data):
    """Running the rows in two disjoint groups gives the whole batch's y, final states, dx and dstate0; weight gradients add."""
    case = data.draw(cases(CONFIGS[cells], adversarial=None), label="case")
    B = case.config.B
    in_first = data.draw(st.lists(st.booleans(), min_size=B, max_size=B), label="row in first group")
    groups = [np.flatnonzero(in_first), np.flatnonzero(~np.array(in_first, dtype=bool))] if B else [np.arange(0), np.arange(0)]
    y, s_T, cache = stack.forward(case.layers, case.x, case.state0)
    grads, dx, ds0 = stack.backward(case.layers, cache, case.dy, case.dstate_T)
    total = [np.zeros_like(a) for g in grads for a in g.arrays().values()]
    for rows in groups:
        y_p, s_p, cache_p = stack.forward(case.layers, case.x[:, rows], _rows(case.state0, rows))
        g_p, dx_p, ds0_p = stack.backward(case.layers, cache_p, case.dy[:, rows], _rows(case.dstate_T, rows))
        np.testing.assert_allclose(y_p, y[:, rows], rtol=0, atol=ROUNDING)
        np.testing.assert_allclose(dx_p, dx[:, rows], rtol=0, atol=ROUNDING)
        for got, want in zip(_leaves(s_p) + _leaves(ds0_p), _leaves(_rows(s_T, rows)) + _leaves(_rows(ds0, rows)), strict=True):
            np.testing.assert_allclose(got, want, rtol=0, atol=ROUNDING)
        if len(rows) == 0:
            assert all(not np.any(a) for g in g_p for a in g.arrays().values())  # an empty batch adds nothing
        total = [t + a for t, a in zip(total, [a for g in g_p for a in g.arrays().values()])]
    for t, a in zip(total, [a for g in grads for a in g.arrays().values()]):
        np.testing.assert_allclose(t, a, rtol=0, atol=ROUNDING)
