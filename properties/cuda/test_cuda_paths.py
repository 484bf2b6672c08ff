"""Every GPU kernel equals its reference (numba.cuda; run under the simulator in CI), and the
conditional GRU's block-sparse kernel copies inactive blocks bit for bit.

Equations: those of the reference cells. float64 results must agree within 1e-10 absolute (the
project's spec). The simulator runs each thread as a Python thread, so the sizes are tiny and the tile
is 4 x 4 (H up to 6 spans a partial second tile, so every boundary test in the kernels runs).

Shapes: x (T, B, D); states per cell.
"""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from refrnn.cells import ccgru, gru, lstm, sru
from refrnn.cuda import ccgru as cuda_ccgru
from refrnn.cuda import gru as cuda_gru
from refrnn.cuda import lstm as cuda_lstm
from refrnn.cuda import sru as cuda_sru
from refrnn.verify.strategies import cases, configs

TOL64 = 1e-10
TILE = 4
TINY = dict(max_T=3, max_B=3, max_D=3, max_H=6)
# Under the simulator an example costs ~0.2 s of Python threads: 10 per property in the ci profile,
# the profile's own count (2,000) in thorough.
FEW = settings(max_examples=10) if settings.default.max_examples < 100 else settings()


def _close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=TOL64)


@FEW
@given(cases(configs(("gru",), min_B=0, **TINY), adversarial=None, grads=False))
def test_cuda_gru_equals_the_reference(case):
    """GPU GRU (tiled kernels, both resets): y and h_T within 1e-10 of the reference."""
    p, x, h0 = case.params, case.x, case.state0[0]
    y, h_T, _ = gru.forward(p, x, h0)
    y_c, h_T_c = cuda_gru.forward_inference(p, x, h0, tile=TILE)
    _close(y_c, y)
    _close(h_T_c, h_T)


@FEW
@given(cases(configs(("lstm",), options={"peepholes": (False,), "proj": (False,)}, **TINY), adversarial=None, grads=False))
def test_cuda_lstm_equals_the_reference(case):
    """GPU LSTM (tiled kernels): y, h_T and c_T within 1e-10 of the reference."""
    p, x, s0 = case.params, case.x, case.state0[0]
    y, (h_T, c_T), _ = lstm.forward(p, x, s0)
    y_c, (h_T_c, c_T_c) = cuda_lstm.forward_inference(p, x, s0, tile=TILE)
    _close(y_c, y)
    _close(h_T_c, h_T)
    _close(c_T_c, c_T)


@FEW
@given(cases(configs(("ccgru",), options={"variant": ("block",), "mode": ("inference",)}, **TINY), adversarial=None, grads=False))
def test_cuda_ccgru_equals_the_reference_and_copies_inactive_blocks(case):
    """GPU block-sparse conditional GRU: y within 1e-10 of the reference; wherever the reference's z is 0, h is copied bit for bit."""
    p, x, h0 = case.params, case.x, case.state0[0]
    y, h_T, cache = ccgru.forward(p, x, h0)
    y_c, h_T_c = cuda_ccgru.forward_inference(p, x, h0, tile=TILE)
    _close(y_c, y)
    _close(h_T_c, h_T)
    h_all = np.concatenate([h0[None], y_c])
    closed = cache.z == 0.0
    for t in range(case.config.T):
        np.testing.assert_array_equal(h_all[t + 1][closed[t]], h_all[t][closed[t]])


@FEW
@given(cases(configs(("sru",), **TINY), adversarial=None), st.sampled_from(["tiled"]))
def test_cuda_sru_forward_and_backward_equal_the_reference(case, product):
    """GPU SRU: y, c_T and every gradient within 1e-10 of the reference, for every skip, v and activation option."""
    p, x, c0 = case.params, case.x, case.state0[0]
    y, c_T, cache = sru.forward(p, x, c0)
    grads, dx, dc0 = sru.backward(p, cache, case.dy, case.dstate_T[0])
    y_c, c_T_c, cache_c = cuda_sru.forward(p, x, c0, algorithm=product, tile=TILE)
    _close(y_c, y)
    _close(c_T_c, c_T)
    grads_c, dx_c, dc0_c = cuda_sru.backward(p, cache_c, case.dy, case.dstate_T[0], algorithm=product, tile=TILE)
    _close(dx_c, dx)
    _close(dc0_c, dc0)
    for name in p.array_names():
        _close(getattr(grads_c, name), getattr(grads, name))
