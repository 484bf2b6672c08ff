"""The compiled backward passes equal the reference's: every gradient, every option, and whole training runs.

Equations: those of :mod:`refrnn.cells.gru` and :mod:`refrnn.cells.lstm`; :func:`refrnn.jit.gru.backward`
and :func:`refrnn.jit.lstm.backward` only reorder the work (fused element-wise passes, sums in float64,
the products through numba's BLAS). float64 must agree within 1e-10 absolute (the project's spec),
whichever forward (reference or jit) filled the cache. Drawn: both GRU resets, LSTM with and without
projection and peepholes, B and T from 1, H up to 19 (not a multiple of the 8 or 16 SIMD lanes), and
the final-state gradient given, zero or None.

Training: a few Adam updates driven by jit forward + jit backward stay within 1e-10 of the same
updates driven by the reference (the error of one update is not amplified by the next ones).

Shapes: x (T, B, D); dy (T, B, H or P); states per cell.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refrnn.cells import gru, lstm
from refrnn.verify.strategies import cases, configs

jit_gru = pytest.importorskip("refrnn.jit.gru")  # numba is a dependency; this guards a broken install
from refrnn.jit import lstm as jit_lstm  # noqa: E402

TOL64 = 1e-10
FINAL_GRADIENT = st.sampled_from(("given", "zero", "none"))
WHICH_FORWARD = st.sampled_from(("reference", "jit"))


def _close(a, b, what, tol=TOL64):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, (what, a.shape, b.shape)
    err = float(np.max(np.abs(a - b), initial=0.0))
    assert err <= tol, f"{what}: {err:.3g} > {tol:.3g}"


def _final(kind, dstate):
    """The final-state gradient the call gets: the drawn one, zeros of its shape, or None."""
    if kind == "none":
        return None
    if kind == "zero":
        return tuple(np.zeros_like(a) for a in dstate) if isinstance(dstate, tuple) else np.zeros_like(dstate)
    return dstate


def _assert_same_backward(ref, fast, params):
    (grads, dx, ds), (grads_j, dx_j, ds_j) = ref, fast
    for name in params.array_names():
        _close(getattr(grads_j, name), getattr(grads, name), f"grads.{name}")
    _close(dx_j, dx, "dx")
    for k, (a, b) in enumerate(zip(ds_j if isinstance(ds_j, tuple) else (ds_j,), ds if isinstance(ds, tuple) else (ds,))):
        _close(a, b, f"dstate0[{k}]")


def _state0(case):
    return None if case.state0 is None else case.state0[0]


@given(cases(configs(("gru",), max_T=5, max_B=3, max_D=4, max_H=19), adversarial=None), FINAL_GRADIENT, WHICH_FORWARD)
def test_jit_gru_backward_equals_the_reference(case, final, which):
    """jit GRU backward (both resets) == reference backward: every gradient, dx and dh0 within 1e-10."""
    p = case.params
    forward = gru.forward if which == "reference" else jit_gru.forward
    _, _, cache = forward(p, case.x, _state0(case))
    dT = _final(final, case.dstate_T[0])
    _assert_same_backward(gru.backward(p, cache, case.dy, dT), jit_gru.backward(p, cache, case.dy, dT), p)


@given(cases(configs(("lstm",), max_T=5, max_B=3, max_D=4, max_H=19), adversarial=None), FINAL_GRADIENT, WHICH_FORWARD)
def test_jit_lstm_backward_equals_the_reference(case, final, which):
    """jit LSTM backward (projection, peepholes) == reference backward within 1e-10, incl. W_hr and the peepholes."""
    p = case.params
    forward = lstm.forward if which == "reference" else jit_lstm.forward
    _, _, cache = forward(p, case.x, _state0(case))
    dT = _final(final, case.dstate_T[0])
    _assert_same_backward(lstm.backward(p, cache, case.dy, dT), jit_lstm.backward(p, cache, case.dy, dT), p)


EDGES = [(1, 1, 3, 17), (1, 4, 2, 9), (6, 1, 5, 33), (3, 2, 1, 1)]  # (T, B, D, H): B = 1, T = 1, odd H


def _edge_case(mod, T, B, D, H, **options):
    rng = np.random.default_rng(T * 1000 + B * 100 + H)
    p = mod.init(D, H, rng=rng, **options)
    p = p.map(lambda w: w + rng.uniform(-0.5, 0.5, w.shape))  # biases and peepholes non-zero
    P = getattr(p, "output_size", H)
    x, dy = rng.uniform(-1, 1, (T, B, D)), rng.uniform(-1, 1, (T, B, P))
    dT = rng.uniform(-1, 1, (B, P)) if mod is gru else (rng.uniform(-1, 1, (B, P)), rng.uniform(-1, 1, (B, H)))
    return p, x, dy, dT


@pytest.mark.parametrize("shape", EDGES)
@pytest.mark.parametrize("reset", gru.RESETS)
def test_jit_gru_backward_edge_shapes(shape, reset):
    """The fixed edge shapes (B = 1: the per-step products become GEMVs; T = 1; H = 17, 33, 1), both resets."""
    p, x, dy, dT = _edge_case(gru, *shape, reset=reset)
    _, _, cache = jit_gru.forward(p, x)
    _assert_same_backward(gru.backward(p, cache, dy, dT), jit_gru.backward(p, cache, dy, dT), p)


@pytest.mark.parametrize("shape", EDGES)
@pytest.mark.parametrize("options", [{}, {"peepholes": True}, {"proj_size": 2}, {"proj_size": 5, "peepholes": True}])
def test_jit_lstm_backward_edge_shapes(shape, options):
    """The fixed edge shapes for the LSTM, plain, with peepholes, with a projection, with both."""
    if options.get("proj_size", 0) >= shape[3]:
        pytest.skip("a projection needs P < H")
    p, x, dy, dT = _edge_case(lstm, *shape, **options)
    _, _, cache = jit_lstm.forward(p, x)
    _assert_same_backward(lstm.backward(p, cache, dy, dT), jit_lstm.backward(p, cache, dy, dT), p)


def _adam_run(params, x, target, forward, backward, steps=3, lr=0.05):
    """``steps`` Adam updates of the loss 0.5 * |y - target|^2 (bias-corrected, as refrnn.reproduce does)."""
    b1, b2, eps = 0.9, 0.999, 1e-8
    m = params.map(np.zeros_like)
    v = params.map(np.zeros_like)
    for k in range(1, steps + 1):
        y, _, cache = forward(params, x)
        grads, _, _ = backward(params, cache, y - target, None)
        m = m.map(lambda a, g: b1 * a + (1 - b1) * g, grads)
        v = v.map(lambda a, g: b2 * a + (1 - b2) * g * g, grads)
        c1, c2 = 1 - b1**k, 1 - b2**k
        params = params.map(lambda w, a, s: w - lr * (a / c1) / (np.sqrt(s / c2) + eps), m, v)
    return params


@given(cases(configs(("gru", "lstm"), max_T=4, max_B=3, max_D=3, max_H=9), adversarial=False, grads=False))
def test_jit_training_equals_reference_training(case):
    """Three Adam updates from jit forward + jit backward == from reference forward + backward, within 1e-10."""
    p = case.params
    ref, fast = (gru, jit_gru) if isinstance(p, gru.GRUParams) else (lstm, jit_lstm)
    target = np.random.default_rng(0).uniform(-1, 1, ref.forward(p, case.x)[0].shape)
    trained = _adam_run(p, case.x, target, ref.forward, ref.backward)
    trained_j = _adam_run(p, case.x, target, fast.forward, fast.backward)
    for name in p.array_names():
        _close(getattr(trained_j, name), getattr(trained, name), f"trained {name}")
