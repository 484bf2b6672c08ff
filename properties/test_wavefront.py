"""Deep RNN evaluation order: the anti-diagonal wavefront (t + l) equals layer-by-layer order.

Equations (:mod:`refrnn.layers.wavefront`): cell (l, t) needs only (l, t-1) and (l-1, t), so every cell of
diagonal k = l + t depends on diagonal k - 1 alone, and any order that respects that computes the same
numbers; the wavefront runs each cell as a one-step call of its own cell, so it differs from
:func:`refrnn.layers.stack.forward` (whole-sequence input products) only in the rounding of how products
are grouped: 1e-13.

Shapes: x (T, B, D); states one per layer; schedule: T + N - 1 diagonals covering the T x N grid.
"""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from refrnn.layers import stack, wavefront
from refrnn.verify.strategies import CELLS, cases, configs

ROUNDING = 1e-13


def _leaves(tree):
    if isinstance(tree, (tuple, list)):
        return [leaf for item in tree for leaf in _leaves(item)]
    return [tree]


# Every cell, mixed; the conditional GRU with running statistics (the wavefront is for inference, and
# batch statistics per step are the same either way, but B >= 2 would then be forced on every draw).
DEEP = configs(tuple(CELLS), min_layers=1, max_layers=4, same_layers=False, max_T=7, max_H=4, options={"mode": ("inference",)})


@given(cases(DEEP, adversarial=None, grads=False))
def test_wavefront_order_equals_layer_by_layer_order(case):
    """wavefront.forward gives stack.forward's outputs and every layer's final state, for mixed stacks of every cell."""
    y, s_T, _ = stack.forward(case.layers, case.x, case.state0)
    y_w, s_w = wavefront.forward(case.layers, case.x, case.state0)
    np.testing.assert_allclose(y_w, y, rtol=0, atol=ROUNDING)
    for a, b in zip(_leaves(s_w), _leaves(s_T), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=ROUNDING)


@given(st.integers(1, 40), st.integers(1, 12))
def test_schedule_covers_the_grid_once_and_respects_dependencies(T, N):
    """Every (l, t) appears exactly once, on diagonal l + t, after both (l, t-1) and (l-1, t); T + N - 1 diagonals."""
    sched = wavefront.schedule(T, N)
    assert sched.critical_path == len(sched.diagonals) == T + N - 1
    seen = {}
    for k, diagonal in enumerate(sched.diagonals):
        for l, t in diagonal:
            assert l + t == k and (l, t) not in seen
            seen[(l, t)] = k
    assert set(seen) == {(l, t) for l in range(N) for t in range(T)}
    for (l, t), k in seen.items():
        assert t == 0 or seen[(l, t - 1)] < k
        assert l == 0 or seen[(l - 1, t)] < k
