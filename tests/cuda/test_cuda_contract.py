"""Every GPU path keeps the fast-path contract of refrnn.fast: ``forward -> (y, state_T, cache)``,
``forward_inference -> (y, state_T)``, one ``algorithm=`` keyword (``product=`` still accepted, with a
DeprecationWarning), and the same numbers through refrnn.fast as through the module."""

import numpy as np
import pytest

from refrnn import fast
from refrnn.cells import ccgru, gru, lstm, sru

TOL64 = 1e-10


def _leaves(state):
    return state if isinstance(state, tuple) else (state,)


CELLS = {
    "gru": lambda: gru.init(3, 5, rng=1),
    "lstm": lambda: lstm.init(3, 5, rng=2),
    "sru": lambda: sru.init(3, 3, rng=3),
    "ccgru": lambda: ccgru.init(3, 4, variant="block", g=2, rng=4, mode="inference"),
}


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_forward_and_forward_inference_agree_with_the_reference(cell):
    p = CELLS[cell]()
    x = np.random.default_rng(0).standard_normal((2, 2, 3))
    y_r, s_r, _ = fast.forward(p, x, backend="reference")
    out = fast.forward(p, x, backend="cuda")
    assert len(out) == 3
    y_i, s_i = fast.forward_inference(p, x, backend="cuda")
    for y, s in ((out[0], out[1]), (y_i, s_i)):
        np.testing.assert_allclose(y, y_r, rtol=0, atol=TOL64)
        for a, b in zip(_leaves(s), _leaves(s_r), strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=TOL64)


@pytest.mark.parametrize("cell", ["gru", "lstm", "sru"])
def test_former_product_keyword_warns_and_still_works(cell):
    p = CELLS[cell]()
    x = np.random.default_rng(0).standard_normal((2, 2, 3))
    mod = fast.module(cell, backend="cuda")
    with pytest.warns(DeprecationWarning, match="product= is deprecated"):
        y_old = mod.forward_inference(p, x, product="tiled")[0]
    np.testing.assert_array_equal(y_old, mod.forward_inference(p, x, algorithm="tiled")[0])


@pytest.mark.parametrize("cell, old", [("gru", "h0"), ("ccgru", "h0"), ("sru", "c0")])
def test_former_state_keyword_warns_and_still_works(cell, old):
    """The initial state is ``state0`` on every backend; the former per-cell name still works."""
    p = CELLS[cell]()
    x = np.random.default_rng(0).standard_normal((2, 2, 3))
    s0 = np.random.default_rng(1).standard_normal((2, p.hidden_size))
    mod = fast.module(cell, backend="cuda")
    y_new, s_new = mod.forward_inference(p, x, state0=s0)
    with pytest.warns(DeprecationWarning, match="deprecated: pass state0="):
        y_old, s_old = mod.forward_inference(p, x, **{old: s0})
    np.testing.assert_array_equal(y_old, y_new)
