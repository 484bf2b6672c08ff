"""The two GRU reset conventions are the same function exactly when the reset gate is identically 1.

Equations (:mod:`refrnn.cells.gru`)::

    after:  n = tanh(W_xn x + b_xn + r * (W_hn h + b_hn))
    before: n = tanh(W_xn x + b_xn + W_hn (r * h) + b_hn)

With ``r = 1`` both read ``tanh(W_xn x + W_hn h + b_n)`` with ``b_n = b_xn + b_hn``. The r gate is pinned
by ``b_xr = +1000``: ``sigmoid(1000 + bounded) == 1.0`` exactly in float64, and its derivative is 0.
The remaining difference is the order of the sums, so outputs agree to rounding, not bit for bit.
"""

import numpy as np
from hypothesis import given

from refrnn.layers import stack
from refrnn.verify.strategies import SATURATE, cases, configs

ROUNDING = 1e-13


def _pin_r_and_move_bias(p):
    """(reset-after with r = 1, reset-before with b_n = b_xn + b_hn) from one GRU container."""
    H = p.hidden_size
    r_rows, n_rows = slice(0, H), slice(2 * H, 3 * H)
    b_x = p.b_x.copy()
    b_x[r_rows] = SATURATE
    after = p.replace(reset="after", b_x=b_x)
    b_x_before, b_h_before = b_x.copy(), p.b_h.copy()
    b_x_before[n_rows] = b_x[n_rows] + p.b_h[n_rows]
    b_h_before[n_rows] = 0.0
    before = p.replace(reset="before", b_x=b_x_before, b_h=b_h_before)
    return after, before


@given(cases(configs(("gru",), max_layers=2, max_T=6), adversarial=None))
def test_reset_after_equals_reset_before_when_r_is_one(case):
    """With r = 1 and b_n = b_xn + b_hn, reset-after and reset-before give the same outputs, states, dx and dstate0."""
    pairs = [_pin_r_and_move_bias(p) for p in case.layers]
    after = tuple(a for a, _ in pairs)
    before = tuple(b for _, b in pairs)
    y_a, s_a, cache_a = stack.forward(after, case.x, case.state0)
    y_b, s_b, cache_b = stack.forward(before, case.x, case.state0)
    assert all(np.all(c.r == 1.0) for c in cache_a.layers + cache_b.layers)  # the premise, exactly
    np.testing.assert_allclose(y_a, y_b, rtol=0, atol=ROUNDING)
    np.testing.assert_allclose(np.stack(s_a), np.stack(s_b), rtol=0, atol=ROUNDING)
    _, dx_a, ds_a = stack.backward(after, cache_a, case.dy, case.dstate_T)
    _, dx_b, ds_b = stack.backward(before, cache_b, case.dy, case.dstate_T)
    np.testing.assert_allclose(dx_a, dx_b, rtol=0, atol=ROUNDING)
    np.testing.assert_allclose(np.stack(ds_a), np.stack(ds_b), rtol=0, atol=ROUNDING)
