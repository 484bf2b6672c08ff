"""Numba GRU/LSTM forward (refrnn.jit) against the reference cells: values, caches, gradients, bad input.

float32 tolerance. The float32 fast path is compared with the *float64* reference run on the same
(float32-representable) weights and inputs, i.e. with the exact answer, and must agree within
``TOL32 * (T + 1)`` absolute, TOL32 = 5e-7. Why that is enough and not too much:

* activations: the polynomial exp gives sigmoid/tanh within 1.5e-7 absolute
  (``test_float32_activations_are_accurate`` asserts it on a dense grid; measured 9e-8, the same as
  NumPy's float32 ufuncs);
* products: a pre-activation is a float32 sum of K <= D + H + 2 <= 30 terms here; its rounding
  error is at most K * 2^-24 * sum|w v| (Higham, Thm 3.1), about 3e-7 for these weights (uniform
  in +-1/sqrt(H)) and inputs (|x| <= ~10, |h| <= 1); sigmoid' <= 1/4 and tanh' <= 1 pass it on
  without amplification;
* recurrence: h_t = n + z (h_{t-1} - n) is a convex combination and, with weights this small, the
  step map does not expand errors (its Jacobian in h has norm below 1), so the errors of the T
  steps at most add up: (T + 1) steps' worth of 5e-7 each.

Observed: at most 5.2e-7 over 20 seeds and T <= 10 (the float32 *reference* itself is off by up
to 1.8e-7), so the tolerance has a margin of ~10x at T = 10, while a wrong polynomial coefficient,
a dropped bias or an off-by-one step is off by 1e-3 or more.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from refrnn import gru, lstm

jit_gru = pytest.importorskip("refrnn.jit.gru")
from refrnn.jit import _kernels, _strategy  # noqa: E402
from refrnn.jit import lstm as jit_lstm  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOL64 = 1e-10
TOL32 = 5e-7
STRATEGIES = ("batched", "fused")
# (T, B, D, H): odd sizes, a single step, a single sequence, D = 1.
SHAPES = [(5, 3, 4, 7), (1, 2, 3, 5), (6, 1, 2, 9), (3, 4, 1, 13)]


def _gru_case(reset, T, B, D, H, dtype=np.float64, seed=0):
    rng = np.random.default_rng(seed)
    p = gru.init(D, H, reset=reset, rng=rng)
    # Biases well away from zero, different on the x and h sides: a misplaced bias cannot hide.
    p = p.replace(b_x=rng.uniform(-1, 1, 3 * H), b_h=rng.uniform(-1, 1, 3 * H)).astype(dtype)
    return p, (2 * rng.standard_normal((T, B, D))).astype(dtype), rng.standard_normal((B, H)).astype(dtype)


def _lstm_case(T, B, D, H, dtype=np.float64, seed=0, proj_size=0, peepholes=False):
    rng = np.random.default_rng(seed)
    p = lstm.init(D, H, proj_size=proj_size, peepholes=peepholes, rng=rng)
    p = p.replace(b_x=rng.uniform(-1, 1, 4 * H), b_h=rng.uniform(-1, 1, 4 * H)).astype(dtype)
    P = p.output_size
    state0 = (rng.standard_normal((B, P)).astype(dtype), rng.standard_normal((B, H)).astype(dtype))
    return p, (2 * rng.standard_normal((T, B, D))).astype(dtype), state0


def _max_err(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)), initial=0.0))


def _assert_cache_close(fast, ref, tol):
    assert type(fast) is type(ref)
    for name in ref._fields:
        f, r = getattr(fast, name), getattr(ref, name)
        assert (f is None) == (r is None), name
        if r is not None:
            assert f.shape == r.shape and f.dtype == r.dtype, name
            assert _max_err(f, r) <= tol, f"cache.{name}: {_max_err(f, r):.3g} > {tol:.3g}"


# ---------------------------------------------------------------------------------------------
# GRU
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reset", ["after", "before"])
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("shape", SHAPES)
def test_gru_float64_equals_reference(reset, strategy, shape):
    p, x, h0 = _gru_case(reset, *shape)
    y_ref, hT_ref, cache_ref = gru.forward(p, x, h0)
    y, hT, cache = jit_gru.forward(p, x, h0, algorithm=strategy)
    _assert_cache_close(cache, cache_ref, TOL64)
    assert _max_err(y, y_ref) <= TOL64 and _max_err(hT, hT_ref) <= TOL64
    assert y.shape == y_ref.shape and hT.shape == hT_ref.shape
    y_inf, hT_inf = jit_gru.forward_inference(p, x, h0, algorithm=strategy)
    # The same loop runs in both modes: inference differs only in not keeping the gates.
    np.testing.assert_array_equal(y_inf, y)
    np.testing.assert_array_equal(hT_inf, hT)


@pytest.mark.parametrize("reset", ["after", "before"])
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("T", [1, 8])
def test_gru_float32_within_justified_tolerance(reset, strategy, T):
    p, x, h0 = _gru_case(reset, T, 3, 5, 16, dtype=np.float32, seed=T)
    exact = gru.forward(p.astype(np.float64), x.astype(np.float64), h0.astype(np.float64))[2]
    y, hT, cache = jit_gru.forward(p, x, h0, algorithm=strategy)
    assert y.dtype == np.float32 and all(a.dtype == np.float32 for a in cache)
    _assert_cache_close(cache, exact._replace(**{k: getattr(exact, k).astype(np.float32) for k in exact._fields}), TOL32 * (T + 1))
    y_inf, _ = jit_gru.forward_inference(p, x, h0, algorithm=strategy)
    np.testing.assert_array_equal(y_inf, y)


@pytest.mark.parametrize("reset", ["after", "before"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_gru_cache_gives_the_reference_gradients(reset, strategy):
    p, x, h0 = _gru_case(reset, 6, 3, 4, 5, seed=1)
    rng = np.random.default_rng(2)
    dy, dhT = rng.standard_normal((6, 3, 5)), rng.standard_normal((3, 5))
    grads_ref, dx_ref, dh0_ref = gru.backward(p, gru.forward(p, x, h0)[2], dy, dhT)
    grads, dx, dh0 = gru.backward(p, jit_gru.forward(p, x, h0, algorithm=strategy)[2], dy, dhT)
    for name, g in grads_ref.arrays().items():
        assert _max_err(getattr(grads, name), g) <= TOL64, name
    assert _max_err(dx, dx_ref) <= TOL64 and _max_err(dh0, dh0_ref) <= TOL64


def test_gru_defaults_and_strategies_agree():
    p, x, h0 = _gru_case("after", 4, 2, 3, 6)
    zero = np.zeros_like(h0)
    np.testing.assert_array_equal(jit_gru.forward(p, x)[0], jit_gru.forward(p, x, zero)[0])
    y_b = jit_gru.forward_inference(p, x, h0, algorithm="batched")[0]
    y_f = jit_gru.forward_inference(p, x, h0, algorithm="fused", prepared=jit_gru.prepare(p, "fused"))[0]
    assert _max_err(y_b, y_f) <= TOL64


def test_gru_noncontiguous_inputs_and_weights():
    """Transposed views are accepted (copied to C order once), with the same results."""
    p, x, h0 = _gru_case("before", 4, 3, 5, 6)
    p_f = p.replace(W_h=np.asfortranarray(p.W_h), W_x=np.asfortranarray(p.W_x))
    x_t = np.ascontiguousarray(x.transpose(1, 0, 2)).transpose(1, 0, 2)  # same values, strided
    assert not x_t.flags.c_contiguous
    for strategy in STRATEGIES:
        y_ref = gru.forward(p, x, h0)[0]
        assert _max_err(jit_gru.forward(p_f, x_t, h0, algorithm=strategy)[0], y_ref) <= TOL64


# ---------------------------------------------------------------------------------------------
# LSTM
# ---------------------------------------------------------------------------------------------

LSTM_VARIANTS = [dict(), dict(peepholes=True), dict(proj_size=3), dict(proj_size=4, peepholes=True)]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("variant", LSTM_VARIANTS, ids=["plain", "peepholes", "projection", "both"])
def test_lstm_float64_equals_reference(strategy, shape, variant):
    p, x, s0 = _lstm_case(*shape, **variant)
    y_ref, (hT_ref, cT_ref), cache_ref = lstm.forward(p, x, s0)
    y, (hT, cT), cache = jit_lstm.forward(p, x, s0, algorithm=strategy)
    _assert_cache_close(cache, cache_ref, TOL64)
    for a, b in ((y, y_ref), (hT, hT_ref), (cT, cT_ref)):
        assert a.shape == b.shape and _max_err(a, b) <= TOL64
    y_inf, (hT_inf, cT_inf) = jit_lstm.forward_inference(p, x, s0, algorithm=strategy)
    np.testing.assert_array_equal(y_inf, y)
    np.testing.assert_array_equal(hT_inf, hT)
    np.testing.assert_array_equal(cT_inf, cT)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("T", [1, 8])
@pytest.mark.parametrize("variant", [dict(), dict(proj_size=5, peepholes=True)], ids=["plain", "both"])
def test_lstm_float32_within_justified_tolerance(strategy, T, variant):
    p, x, s0 = _lstm_case(T, 3, 5, 16, dtype=np.float32, seed=T, **variant)
    exact = lstm.forward(p.astype(np.float64), x.astype(np.float64), tuple(s.astype(np.float64) for s in s0))
    y, (hT, cT), cache = jit_lstm.forward(p, x, s0, algorithm=strategy)
    assert y.dtype == np.float32 and cT.dtype == np.float32
    exact32 = exact[2]._replace(**{k: getattr(exact[2], k).astype(np.float32) for k in exact[2]._fields if getattr(exact[2], k) is not None})
    _assert_cache_close(cache, exact32, TOL32 * (T + 1))
    assert _max_err(cT, exact[1][1]) <= TOL32 * (T + 1)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("variant", [dict(), dict(proj_size=3, peepholes=True)], ids=["plain", "both"])
def test_lstm_cache_gives_the_reference_gradients(strategy, variant):
    p, x, s0 = _lstm_case(5, 2, 4, 6, seed=3, **variant)
    P = p.output_size
    rng = np.random.default_rng(4)
    dy, dsT = rng.standard_normal((5, 2, P)), (rng.standard_normal((2, P)), rng.standard_normal((2, 6)))
    g_ref, dx_ref, (dh0_ref, dc0_ref) = lstm.backward(p, lstm.forward(p, x, s0)[2], dy, dsT)
    g, dx, (dh0, dc0) = lstm.backward(p, jit_lstm.forward(p, x, s0, algorithm=strategy)[2], dy, dsT)
    assert g.array_names() == g_ref.array_names()
    for name, a in g_ref.arrays().items():
        assert _max_err(getattr(g, name), a) <= TOL64, name
    for a, b in ((dx, dx_ref), (dh0, dh0_ref), (dc0, dc0_ref)):
        assert _max_err(a, b) <= TOL64


def test_lstm_inference_final_cell_state_for_odd_and_even_T():
    """Inference keeps c in a two-slot ring: c_T must come from the right slot for either parity."""
    for T in (1, 2, 3, 4):
        p, x, s0 = _lstm_case(T, 2, 3, 4)
        cT_ref = lstm.forward(p, x, s0)[1][1]
        assert _max_err(jit_lstm.forward_inference(p, x, s0)[1][1], cT_ref) <= TOL64, T


# ---------------------------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------------------------


def test_float32_activations_are_accurate():
    a = np.concatenate(
        [np.linspace(-100, 100, 400_001), [0.0, -0.0, 1e-30, -1e-30, 1e-8, -1e-8, 87.0, 88.0, 89.0, -87.0, -88.0, -89.0, 1e4, -1e4]]
    ).astype(np.float32)
    exact = a.astype(np.float64)
    out = np.empty_like(a)
    _kernels.activate(0, a, out)
    with np.errstate(over="ignore"):
        assert _max_err(out, 1.0 / (1.0 + np.exp(-exact))) <= 1.5e-7
    assert np.all((out >= 0) & (out <= 1))
    _kernels.activate(1, a, out)
    assert _max_err(out, np.tanh(exact)) <= 1.5e-7
    assert np.all(np.abs(out) <= 1) and np.all(out * a >= 0)  # odd: never the wrong sign


def test_float32_exp_relative_error():
    a = np.linspace(-87, 88, 200_001).astype(np.float32)
    out = np.array([_kernels.exp32(v) for v in a[::1000]], np.float64)
    exact = np.exp(a[::1000].astype(np.float64))
    assert np.max(np.abs(out - exact) / exact) <= 4e-7


def test_float64_activations_are_libm():
    a = np.linspace(-50, 50, 10_001)
    out = np.empty_like(a)
    _kernels.activate(0, a, out)
    assert _max_err(out, 1.0 / (1.0 + np.exp(-a))) <= 1e-15
    _kernels.activate(1, a, out)
    assert _max_err(out, np.tanh(a)) <= 1e-15


# ---------------------------------------------------------------------------------------------
# Bad input: the reference's checks, plus the fast path's own arguments
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", ["forward", "forward_inference"])
def test_gru_bad_input(fn):
    p, x, h0 = _gru_case("after", 3, 2, 4, 5)
    run = getattr(jit_gru, fn)
    with pytest.raises(TypeError, match="x: dtype float32"):
        run(p, x.astype(np.float32), h0)
    with pytest.raises(ValueError, match=r"x: expected shape \(T, B, D\).*got shape \(3, 2, 5\)"):
        run(p, np.zeros((3, 2, 5)), h0)
    with pytest.raises(ValueError, match="x: expected a 3-d array"):
        run(p, x[0], h0)
    with pytest.raises(ValueError, match=r"state0: expected shape \(B, H\)"):
        run(p, x, h0[:1])
    bad = x.copy()
    bad[1, 0, 2] = np.nan
    with pytest.raises(ValueError, match="x: contains NaN"):
        run(p, bad, h0)
    with pytest.raises(ValueError, match="algorithm: unknown value 'fast'"):
        run(p, x, h0, algorithm="fast")
    with pytest.raises(ValueError, match="prepared: expected prepare"):
        run(p, x, h0, algorithm="batched", prepared=jit_gru.prepare(p, "fused"))
    other = p.replace(W_h=p.W_h.copy())
    with pytest.raises(ValueError, match="prepared: expected prepare"):
        run(p, x, h0, algorithm="fused", prepared=jit_gru.prepare(other, "fused"))
    with pytest.raises(TypeError, match="params: expected GRUParams"):
        run(lstm.init(4, 5), x, h0)


@pytest.mark.parametrize("module", ["gru", "lstm"])
def test_auto_strategy_is_the_measured_rule_and_a_prepared_layout_decides(module):
    """algorithm="auto" (the default) is exactly one of the two orders: fused for B >= 2 and D <= H/8,
    batched otherwise (refrnn.jit._strategy); a prepared layout overrides the rule."""
    fast, ref = (jit_gru, gru) if module == "gru" else (jit_lstm, lstm)
    rng = np.random.default_rng(7)
    for B, D, H, expected in ((3, 2, 16, "fused"), (1, 2, 16, "batched"), (3, 4, 16, "batched")):
        p = ref.init(D, H, rng=rng, dtype=np.float32)
        x = rng.standard_normal((4, B, D)).astype(np.float32)
        assert _strategy.choose("auto", D, H, B) == expected
        y_auto = fast.forward_inference(p, x)[0]
        y_rule = fast.forward_inference(p, x, algorithm=expected)[0]
        y_other = fast.forward_inference(p, x, algorithm={"fused": "batched", "batched": "fused"}[expected])[0]
        assert np.array_equal(y_auto, y_rule)
        assert not np.array_equal(y_auto, y_other) or B * D * H == 0  # the orders round differently
        other = {"fused": "batched", "batched": "fused"}[expected]
        y_prepared = fast.forward(p, x, prepared=fast.prepare(p, other))[0]
        assert np.array_equal(y_prepared, y_other)


@pytest.mark.parametrize("fn", ["forward", "forward_inference"])
def test_lstm_bad_input(fn):
    p, x, s0 = _lstm_case(3, 2, 4, 5)
    run = getattr(jit_lstm, fn)
    with pytest.raises(TypeError, match=r"state0: expected the pair \(h, c\)"):
        run(p, x, s0[0])
    with pytest.raises(ValueError, match=r"state0\[1\] \(c\): expected shape"):
        run(p, x, (s0[0], s0[1][:, :3]))
    with pytest.raises(TypeError, match="x: dtype float32"):
        run(p, x.astype(np.float32), s0)
    with pytest.raises(ValueError, match="algorithm: unknown value"):
        run(p, x, s0, algorithm="Fused")
    with pytest.raises(TypeError, match="params: expected LSTMParams"):
        run(gru.init(4, 5), x, s0)


def test_kernel_helpers_refuse_python_calls():
    with pytest.raises(NotImplementedError):
        _kernels.sigmoid(0.0)


# ---------------------------------------------------------------------------------------------
# Import weight
# ---------------------------------------------------------------------------------------------


def test_import_refrnn_and_bench_do_not_import_numba():
    code = (
        "import sys, refrnn, refrnn.bench\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'numba', 'llvmlite', 'torch', 'scipy'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------------------------------------
# Compiled backward (the Hypothesis properties in properties/test_jit_backward.py cover every
# option in float64; here: float32, finite differences, bad input, the former keywords)
#
# float32 tolerance of the backward: the jit backward in float32 is compared with the float64
# reference backward run on the same float32-rounded cache, weights and dy (the exact gradients of
# what the float32 forward stored), and must agree within TOL32 * (T + 1) * max(1, max|g|) for
# every gradient g. The backward has no activations to approximate (it uses the stored gate
# values), so its error is rounding alone: each entry of a weight gradient is a float32 sum of
# T * B products, each step of the recurrence a sum of G * H; at these sizes every such sum is
# within a few units of 2^-24 of its magnitude (observed, 20-step runs, both resets and LSTMP with
# peepholes: at most 4.1e-7 of max(1, max|g|), the same as the float32 *reference* backward,
# up to 6.2e-7), and the T steps' errors at most add up. So 5e-7 (T + 1) has a margin of about 25x
# at T = 20, while a dropped term or a wrong index is off by 1e-3 of max|g| or more.
# ---------------------------------------------------------------------------------------------


def _rounded_backward_case(mod, p, x, dy):
    """(exact float64 backward on the float32-rounded cache, float32 cache, float32 params)."""
    p32 = p.astype(np.float32)
    p64 = p32.astype(np.float64)
    _, _, cache64 = mod.forward(p64, x.astype(np.float32).astype(np.float64))
    cache32 = type(cache64)(*(None if a is None else a.astype(np.float32) for a in cache64))
    rounded = type(cache64)(*(None if a is None else a.astype(np.float64) for a in cache32))
    exact = mod.backward(p64, rounded, dy.astype(np.float32).astype(np.float64))
    return exact, cache32, p32


@pytest.mark.parametrize("T", [1, 5, 20])
@pytest.mark.parametrize("variant", ["gru-after", "gru-before", "lstm", "lstmp-peepholes"])
def test_float32_backward_within_justified_tolerance(T, variant):
    if variant.startswith("gru"):
        mod, fast = gru, jit_gru
        p, x, _ = _gru_case(variant[4:], T, 4, 5, 17, seed=T)
    else:
        mod, fast = lstm, jit_lstm
        p, x, _ = _lstm_case(T, 4, 5, 17, seed=T, **({"proj_size": 3, "peepholes": True} if variant != "lstm" else {}))
    P = getattr(p, "output_size", p.hidden_size)
    dy = np.random.default_rng(T).standard_normal((T, 4, P))
    (grads, dx, _), cache32, p32 = _rounded_backward_case(mod, p, x, dy)
    grads_j, dx_j, _ = fast.backward(p32, cache32, dy.astype(np.float32))
    assert dx_j.dtype == np.float32
    for name in [n for n in p.array_names() if getattr(p, n) is not None]:
        g = getattr(grads, name)
        assert getattr(grads_j, name).dtype == np.float32, name
        tol = TOL32 * (T + 1) * max(1.0, float(np.abs(g).max()))
        assert _max_err(getattr(grads_j, name), g) <= tol, f"{name}: {_max_err(getattr(grads_j, name), g):.3g} > {tol:.3g}"
    assert _max_err(dx_j, dx) <= TOL32 * (T + 1) * max(1.0, float(np.abs(dx).max()))


@pytest.mark.parametrize("variant", ["gru-before", "lstmp-peepholes"])
def test_compiled_backward_matches_central_differences(variant):
    """Independent of the reference backward: the jit backward against finite differences of the
    reference forward (every parameter, x and state0; refrnn's gradcheck, float64)."""
    from refrnn import gradcheck

    if variant == "gru-before":
        p, x, s0 = _gru_case("before", 4, 2, 3, 5)
        backward = jit_gru.backward
    else:
        p, x, s0 = _lstm_case(4, 2, 3, 5, proj_size=2, peepholes=True)
        backward = jit_lstm.backward
    report = gradcheck(p, x, s0, backward=backward)
    assert report.passed and len(report.relative) == len(p.array_names()) + 1 + (2 if variant.startswith("lstm") else 1), report


def test_gru_backward_bad_input_and_former_keywords():
    p, x, h0 = _gru_case("after", 3, 2, 4, 5)
    y, h_T, cache = jit_gru.forward(p, x, h0)
    dy = np.ones_like(y)
    with pytest.raises(TypeError, match="dy: dtype float32"):
        jit_gru.backward(p, cache, dy.astype(np.float32))
    with pytest.raises(ValueError, match=r"dy: expected shape \(T, B, H\)"):
        jit_gru.backward(p, cache, dy[:, :1])
    with pytest.raises(ValueError, match=r"dstate_T: expected shape \(B, H\)"):
        jit_gru.backward(p, cache, dy, h_T[:1])
    with pytest.raises(TypeError, match="cache: expected the GRUCache"):
        jit_gru.backward(p, tuple(cache), dy)
    with pytest.raises(TypeError, match="params: expected GRUParams"):
        jit_gru.backward(lstm.init(4, 5), cache, dy)
    with pytest.raises(TypeError, match="cache"):
        jit_gru.backward(p, jit_gru.forward(p.astype(np.float32), x.astype(np.float32))[2], dy)
    with pytest.deprecated_call(match="dh_T= is deprecated"):
        old = jit_gru.backward(p, cache, dy, dh_T=h_T)
    new = jit_gru.backward(p, cache, dy, h_T)
    assert np.array_equal(old[1], new[1]) and np.array_equal(old[2], new[2])
    with pytest.deprecated_call(match="h0= is deprecated"):
        y_old = jit_gru.forward(p, x, h0=h0)[0]
    assert np.array_equal(y_old, y)


def test_lstm_backward_bad_input():
    p, x, s0 = _lstm_case(3, 2, 4, 5, proj_size=2)
    y, s_T, cache = jit_lstm.forward(p, x, s0)
    dy = np.ones_like(y)
    with pytest.raises(TypeError, match="dy: dtype float32"):
        jit_lstm.backward(p, cache, dy.astype(np.float32))
    with pytest.raises(ValueError, match="dy: expected shape"):
        jit_lstm.backward(p, cache, np.ones(y.shape[:2] + (5,)))
    with pytest.raises(TypeError, match=r"dstate_T: expected the pair \(h, c\)"):
        jit_lstm.backward(p, cache, dy, s_T[0])
    with pytest.raises(ValueError, match=r"dstate_T\[1\] \(c\): expected shape"):
        jit_lstm.backward(p, cache, dy, (s_T[0], s_T[1][:, :3]))
    with pytest.raises(ValueError, match="cache.m: this cache has no m"):
        jit_lstm.backward(p, cache._replace(m=None), dy)


def test_backward_of_empty_sequences_and_batches():
    """T = 0 or B = 0: zero gradients and dstate0 = dstate_T, exactly as the reference returns them."""
    for T, B in ((0, 2), (3, 0)):
        p, x, h0 = _gru_case("before", max(T, 1), max(B, 1), 3, 4)
        x = np.zeros((T, B, 3))
        _, _, cache = jit_gru.forward(p, x)
        dT = np.ones((B, 4))
        ref, fast = gru.backward(p, cache, np.zeros((T, B, 4)), dT), jit_gru.backward(p, cache, np.zeros((T, B, 4)), dT)
        for name in p.array_names():
            assert np.array_equal(getattr(ref[0], name), getattr(fast[0], name)), name
        assert ref[1].shape == fast[1].shape and np.array_equal(ref[2], fast[2])
        q, _, s0 = _lstm_case(1, 1, 3, 4, proj_size=2, peepholes=True)
        _, _, cache = jit_lstm.forward(q, x)
        dT = (np.ones((B, 2)), np.ones((B, 4)))
        ref, fast = lstm.backward(q, cache, np.zeros((T, B, 2)), dT), jit_lstm.backward(q, cache, np.zeros((T, B, 2)), dT)
        for name in [n for n in q.array_names() if getattr(q, n) is not None]:
            assert np.array_equal(getattr(ref[0], name), getattr(fast[0], name)), name
        assert all(np.array_equal(a, b) for a, b in zip(ref[2], fast[2]))


# ---------------------------------------------------------------------------------------------
# The step product (_kernels._step_product) takes the transposed order for 2..TRANSPOSED_MAX_ROWS
# rows and the direct one otherwise: both sides of the threshold, and widths below, at and past the
# transpose's 32-row blocks (H = 3: 3H = 9, 4H = 12, P = 2; H = 33: 3H = 99, 4H = 132, and the
# backward's products of width 33).
# ---------------------------------------------------------------------------------------------

EDGE_BATCHES = [1, 2, _kernels.TRANSPOSED_MAX_ROWS, _kernels.TRANSPOSED_MAX_ROWS + 1]


@pytest.mark.parametrize("B", EDGE_BATCHES)
@pytest.mark.parametrize("N", [1, 9, 31, 32, 33, 70])
def test_step_product_is_the_product_in_either_order(B, N):
    rng = np.random.default_rng(B * 100 + N)
    h, W = rng.standard_normal((B, 5)), rng.standard_normal((N, 5))
    out = np.full((B, N), np.nan)
    _kernels._step_product(h, W, W.T, np.full((N, B), np.nan), out, False)
    assert _max_err(out, h @ W.T) <= 1e-13


@pytest.mark.parametrize("B", EDGE_BATCHES)
@pytest.mark.parametrize("variant", ["gru-after", "gru-before", "lstm", "lstmp-peepholes"])
@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("H", [3, 33])
def test_step_product_threshold_forward_and_backward_equal_reference(B, variant, strategy, H):
    if variant.startswith("gru"):
        mod, fast = gru, jit_gru
        p, x, s0 = _gru_case(variant[4:], 3, B, 3, H, seed=B)
    else:
        mod, fast = lstm, jit_lstm
        p, x, s0 = _lstm_case(3, B, 3, H, seed=B, **({"proj_size": 2, "peepholes": True} if variant != "lstm" else {}))
    y, s_T, cache = fast.forward(p, x, s0, algorithm=strategy)
    y_r, s_r, cache_r = mod.forward(p, x, s0)
    assert _max_err(y, y_r) <= TOL64
    _assert_cache_close(cache, cache_r, TOL64)
    dy = np.random.default_rng(B).standard_normal(y.shape)
    ds = tuple(np.ones_like(a) for a in s_r) if isinstance(s_r, tuple) else np.ones_like(s_r)
    (g, dx, d0), (g_r, dx_r, d0_r) = fast.backward(p, cache, dy, ds), mod.backward(p, cache_r, dy, ds)
    assert _max_err(dx, dx_r) <= TOL64
    for name in [n for n in p.array_names() if getattr(p, n) is not None]:
        assert _max_err(getattr(g, name), getattr(g_r, name)) <= TOL64, name
    for a, b in zip(d0 if isinstance(d0, tuple) else (d0,), d0_r if isinstance(d0_r, tuple) else (d0_r,)):
        assert _max_err(a, b) <= TOL64


# ---------------------------------------------------------------------------------------------
# The training forward's cache is one allocation (refrnn.jit._buffers.carved), kept as it is.
# ---------------------------------------------------------------------------------------------


def test_carved_arrays_are_disjoint_aligned_views_of_one_block():
    from refrnn.jit._buffers import carved

    for dtype in (np.float32, np.float64):
        base, *arrays = carved("test", dtype, (3, 2, 5), (0, 2, 5), (1,), (4, 7))
        assert [a.shape for a in arrays] == [(3, 2, 5), (0, 2, 5), (1,), (4, 7)]
        for i, a in enumerate(arrays):
            assert a.base is base and a.dtype == dtype and a.flags.c_contiguous
            assert a.size == 0 or a.ctypes.data % 64 == 0  # (an empty view may point anywhere)
            a[...] = i  # no two arrays overlap: each keeps what was written into it
        assert [float(a.mean()) for a in arrays if a.size] == [0.0, 2.0, 3.0]


@pytest.mark.parametrize("module", ["gru", "lstm"])
def test_training_cache_is_one_read_only_block_not_copied(module):
    if module == "gru":
        p, x, s0 = _gru_case("after", 4, 3, 2, 5)
        y, _, cache = jit_gru.forward(p, x, s0)
    else:
        p, x, s0 = _lstm_case(4, 3, 2, 5, proj_size=3, peepholes=True)
        y, _, cache = jit_lstm.forward(p, x, s0)
    arrays = [getattr(cache, f) for f in cache._fields[1:] if getattr(cache, f) is not None]
    base = arrays[0].base
    # The cache construction copies any array whose memory is still writable somewhere: one block
    # frozen whole keeps every array in it (and y is a view of that block too).
    assert base is not None and all(a.base is base for a in arrays) and y.base is base
    assert not base.flags.writeable and not any(a.flags.writeable for a in arrays)
