"""refrnn.fast: one place chooses the backend and the algorithm; every backend keeps one contract, and
the keywords the algorithm choice had before (strategy=, path=, return_z=) still work, with a warning."""

import numpy as np
import pytest

from refrnn import fast, gru, lstm, sru
from refrnn.cells import ccgru

pytest.importorskip("numba")

TOL64 = 1e-10


def _x(T=4, B=2, D=3, seed=0):
    return np.random.default_rng(seed).standard_normal((T, B, D))


def _leaves(state):
    """The arrays of a state: h, or the LSTM's pair (h, c)."""
    return state if isinstance(state, tuple) else (state,)


def _cells():
    return {
        "gru": gru.init(3, 5, rng=1),
        "lstm": lstm.init(3, 5, rng=2),
        "sru": sru.init(3, 3, rng=3),
        "ccgru": ccgru.init(3, 6, variant="block", g=2, rng=4, mode="inference"),
    }


def test_module_maps_cell_and_backend_and_refuses_unknown_names():
    assert fast.module("gru", backend="reference") is gru
    assert fast.module("lstm").__name__ == "refrnn.jit.lstm"
    assert fast.module("sru", "jit").__name__ == "refrnn.jit.sru"
    with pytest.raises(ValueError, match="cell"):
        fast.module("rnn")
    with pytest.raises(ValueError, match="backend"):
        fast.module("gru", backend="tpu")


@pytest.mark.parametrize("cell", ["gru", "lstm", "sru", "ccgru"])
def test_every_jit_forward_keeps_the_contract_and_equals_the_reference(cell):
    p = _cells()[cell]
    x = _x()
    y_r, s_r, _ = fast.forward(p, x, backend="reference")
    y, s, cache = fast.forward(p, x, backend="jit")
    y_i, s_i = fast.forward_inference(p, x, backend="jit")
    for a in (y, y_i):
        np.testing.assert_allclose(a, y_r, rtol=0, atol=TOL64)
    for a, b in zip(_leaves(s), _leaves(s_r), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=TOL64)
    assert cache is not None
    np.testing.assert_array_equal(np.asarray(fast.forward_inference(p, x, backend="reference")[0]), y_r)


@pytest.mark.parametrize("cell", ["gru", "lstm", "sru"])
def test_backward_goes_through_the_backend_or_the_reference(cell):
    p = _cells()[cell]
    x = _x()
    y, _, cache = fast.forward(p, x, backend="jit")
    dy = np.random.default_rng(5).standard_normal(y.shape)
    grads, dx, _ = fast.backward(p, cache, dy, backend="jit")
    _, _, cache_r = fast.forward(p, x, backend="reference")
    grads_r, dx_r, _ = fast.backward(p, cache_r, dy, backend="reference")
    np.testing.assert_allclose(dx, dx_r, rtol=0, atol=TOL64)
    for name, g in grads.arrays().items():
        np.testing.assert_allclose(g, grads_r.arrays()[name], rtol=0, atol=TOL64, err_msg=name)


def test_algorithm_is_passed_through_and_checked():
    p = _cells()["gru"]
    x = _x()
    y_f = fast.forward_inference(p, x, algorithm="fused")[0]
    y_b = fast.forward_inference(p, x, algorithm="batched")[0]
    np.testing.assert_allclose(y_f, y_b, rtol=0, atol=TOL64)
    with pytest.raises(ValueError, match="algorithm"):
        fast.forward(p, x, algorithm="fast")
    with pytest.raises(ValueError, match="algorithm"):
        fast.forward(p, x, backend="reference", algorithm="fused")
    with pytest.raises(ValueError, match="backend"):
        fast.backward(p, None, None, backend="gpu")


def test_jit_ccgru_forward_has_a_fixed_arity():
    p = _cells()["ccgru"]
    x = _x(D=3)
    out = fast.module("ccgru").forward(p, x)
    assert len(out) == 3 and out[2].z.shape == (4, 2, 6)
    assert len(fast.module("ccgru").forward_inference(p, x)) == 2


@pytest.mark.parametrize(
    "cell, old, new",
    [("gru", {"strategy": "fused"}, {"algorithm": "fused"}), ("lstm", {"strategy": "batched"}, {"algorithm": "batched"}),
     ("ccgru", {"path": "dense"}, {"algorithm": "dense"})],
)
def test_former_keywords_still_work_with_a_deprecation_warning(cell, old, new):
    p, x = _cells()[cell], _x()
    mod = fast.module(cell)
    with pytest.warns(DeprecationWarning, match=f"{next(iter(old))}= is deprecated"):
        y_old = mod.forward_inference(p, x, **old)[0]
    np.testing.assert_array_equal(y_old, mod.forward_inference(p, x, **new)[0])
    with pytest.warns(DeprecationWarning):
        prepared = mod.prepare(p, **old)
    assert prepared.algorithm == next(iter(new.values()))
    assert getattr(prepared, next(iter(old))) == prepared.algorithm  # the former field name


def test_return_z_still_works_with_a_deprecation_warning():
    p, x = _cells()["ccgru"], _x()
    mod = fast.module("ccgru")
    with pytest.warns(DeprecationWarning, match="return_z"):
        y, h_T, z = mod.forward_inference(p, x, return_z=True)
    y2, h2, cache = mod.forward(p, x)
    np.testing.assert_array_equal(z, cache.z)
    np.testing.assert_array_equal(y, y2)


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_jit_backward_of_gru_and_lstm_is_the_compiled_one(cell, monkeypatch):
    """backend="jit" runs refrnn.jit.<cell>.backward, not the reference's (which would alternate
    NumPy's and numba's BLAS thread pools in a training loop)."""
    jit_mod = fast.module(cell, "jit")
    calls = []
    compiled = jit_mod.backward
    monkeypatch.setattr(jit_mod, "backward", lambda *a: calls.append(a) or compiled(*a))
    p = _cells()[cell]
    y, _, cache = fast.forward(p, _x(), backend="jit")
    fast.backward(p, cache, np.ones_like(y), None, backend="jit")
    assert len(calls) == 1
