"""Zero-z copy-forward: a unit whose update gate closes exactly keeps its state bit for bit.

Equations. In the seed paper's orientation (Eq. 4) ``h_t = (1 - z) * h_{t-1} + z * n``; ``z = 0`` gives
``h_t = 1 * h_{t-1} + 0 * n = h_{t-1}`` exactly in floating point (n is finite), which is what lets the
conditional-computation GRU skip the unit. refrnn's GRU uses PyTorch's orientation ``h_t = (1 - z) * n
+ z * h_{t-1}``, the same model with z negated (:mod:`refrnn.layouts.paper`): paper ``z = 0`` is refrnn
``z = 1``, pinned by ``b_xz = +1000`` (``sigmoid`` gives exactly 1.0). The LSTM analogue is ``f = 1, i = 0``:
``c_t = 1 * c_{t-1} + 0 * g``. The conditional GRU keeps the paper's orientation and its clipped tanh
gives exact zeros by itself (every non-positive normalised pre-activation).

Shapes: pinned units are a drawn boolean mask over H; all T steps and B rows are checked.
"""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from refrnn.cells import ccgru, gru, lstm
from refrnn.layouts.paper import flip_update_orientation
from refrnn.verify.strategies import SATURATE, cases, configs


def _mask(data, H):
    return data.draw(hnp.arrays(bool, H, elements=st.booleans()), label="pinned units")


def _pin(b_x, block: int, H: int, mask, value: float):
    b_x = b_x.copy()
    rows = b_x[block * H : (block + 1) * H]
    rows[mask] = value
    return b_x


@given(cases(configs(("gru",), max_T=8, max_H=5), adversarial=None, grads=False), st.data())
def test_gru_units_with_paper_z_zero_copy_their_state_bit_for_bit(case, data):
    """GRU (both resets): units whose paper-orientation z is exactly 0 hold h_0 bit for bit through the whole sequence."""
    p = case.params
    H = p.hidden_size
    mask = _mask(data, H)
    paper = flip_update_orientation(p)
    paper = paper.replace(b_x=_pin(paper.b_x, 1, H, mask, -SATURATE))  # paper z = sigmoid(-1000 + ...) = 0
    refrnn_p = flip_update_orientation(paper)
    y, h_T, cache = gru.forward(refrnn_p, case.x, case.state0[0])
    assert np.all(cache.z[:, :, mask] == 1.0)  # the premise: refrnn z = 1 - paper z = 1 exactly
    for t in range(case.config.T):
        np.testing.assert_array_equal(y[t][:, mask], case.state0[0][:, mask])
    np.testing.assert_array_equal(h_T[:, mask], case.state0[0][:, mask])


@given(cases(configs(("lstm",), max_T=8, max_H=5), adversarial=None, grads=False), st.data())
def test_lstm_units_with_forget_one_and_input_zero_copy_their_cell_bit_for_bit(case, data):
    """LSTM: units with f exactly 1 and i exactly 0 hold c_0 bit for bit through the whole sequence."""
    p = case.params
    H = p.hidden_size
    mask = _mask(data, H)
    b_x = _pin(_pin(p.b_x, 0, H, mask, -SATURATE), 1, H, mask, SATURATE)  # i = 0, f = 1
    p = p.replace(b_x=b_x)
    _, (h_T, c_T), cache = lstm.forward(p, case.x, case.state0[0])
    c0 = case.state0[0][1]
    for t in range(1, case.config.T + 1):
        np.testing.assert_array_equal(cache.c[t][:, mask], c0[:, mask])
    np.testing.assert_array_equal(c_T[:, mask], c0[:, mask])


@given(cases(configs(("ccgru",), max_T=8, max_H=6, max_B=4), adversarial=None, grads=False))
def test_ccgru_units_with_z_zero_copy_their_state_bit_for_bit(case):
    """Conditional GRU, every variant and mode: wherever z is exactly 0, h_t equals h_{t-1} bit for bit."""
    p = case.params
    _, _, cache = ccgru.forward(p, case.x, case.state0[0])
    closed = cache.z == 0.0  # cliptanh gives exact zeros for every non-positive input: no pinning needed
    for t in range(case.config.T):
        np.testing.assert_array_equal(cache.h[t + 1][closed[t]], cache.h[t][closed[t]])
