"""Numba SRU (refrnn.jit.sru) against the reference SRU: outputs, states, caches, every gradient, bad input.

float64: within 1e-10 absolute of :mod:`refrnn.cells.sru` (outputs, c_T, every cache array, every
gradient, dx, dc0), under every option combination, with and without a padding mask.

float32 tolerance. The float32 fast path is compared with the *float64* reference run on the same
(float32-representable) weights and inputs, i.e. with the exact answer.

* Forward: within ``TOL32 * (T + 1) * M`` absolute, TOL32 = 5e-7, M = max(1, max|c|, max|y|) of the
  exact run. Per step: U's entries are float32 dot products of K = D <= 16 terms here (rounding
  <= K 2^-24 sum|w x|, Higham Thm 3.1, a few 1e-7 times |U| for these weights); sigmoid/tanh come
  from the polynomial exp within 1.5e-7 absolute (asserted in tests/test_jit_gru_lstm.py), and
  enter c_t = f c_{t-1} + (1 - f) U_c multiplied by |c_{t-1} - U_c| <= 2M; c_t is a convex
  combination, so |c| <= M and the step map does not expand errors (f < 1; the v terms add
  |v| f(1-f)|c - U_c| <= M/4 per unit v, kept small here), hence at most (T + 1) steps' worth add
  up. M scales it because, unlike the GRU's h, c is not bounded by 1 (it follows U_c).
* Gradients (dW, dv, db, dx, dc0): within ``(N 2^-24 + TOL32 (T + 1)) * max|exact|``, N = the
  longest sum (T*B rows for dW, dv, db; k*H for dx): the backward recurrence is the transpose of
  the forward one (same (T + 1) argument), then each gradient is a sum of N float32 products.

Observed over 20 seeds and every option (T = 8, B = 3, H = 16): forward 2.0e-6 absolute with M ~ 5
(the float32 *reference* itself is off by 2.0e-6: the error is U's rounding, not the kernel),
gradients 1.3e-6 relative; the tolerances are 11x and 4x above that, while a dropped term (v_r in
backward, a bias, alpha) is off by 1e-2 or more.
"""

import itertools

import numpy as np
import pytest

from refrnn import gradcheck
from refrnn.cells import sru

fast = pytest.importorskip("refrnn.jit.sru")

TOL64 = 1e-10
TOL32 = 5e-7
SKIPS = ("identity", "projection", "none")
# skip x v terms x activation x mask; alpha != 1 wherever there is a skip term.
OPTIONS = list(itertools.product(SKIPS, [True, False], ["identity", "tanh"], [False, True]))


def _opt_id(opts):
    skip, v, act, masked = opts
    return f"{skip}-{'v' if v else 'nov'}-{act}-{'mask' if masked else 'nomask'}"


def _case(skip, v_terms, activation, masked, *, T=5, B=3, H=7, D=None, offset=0, dtype=np.float64, seed=0):
    D = D if D is not None else (H + offset if skip == "identity" else H + 2)
    rng = np.random.default_rng(seed)
    p = sru.init(D, H, skip=skip, v_terms=v_terms, activation=activation, rng=rng)
    # Biases and v well away from zero and alpha != 1: a dropped or misrouted term cannot hide.
    p = p.replace(b=rng.uniform(-1, 1, 2 * H), skip_offset=offset)
    if v_terms:
        p = p.replace(v=rng.uniform(-1, 1, 2 * H))
    if skip != "none":
        p = p.replace(alpha=1.3)
    p = p.astype(dtype)
    x = (2 * rng.standard_normal((T, B, D))).astype(dtype)
    c0 = rng.standard_normal((B, H)).astype(dtype)
    pad = None
    if masked:
        pad = np.zeros((T, B), bool)
        pad[T - 2 :, 0] = True  # trailing padding
        pad[min(1, T - 1), B - 1] = True  # a padded step inside a sequence
    return p, x, c0, pad


def _upstream(T, B, H, dtype=np.float64, seed=9):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((T, B, H)).astype(dtype), rng.standard_normal((B, H)).astype(dtype)


def _err(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)), initial=0.0))


def _assert_cache_close(got, want, tol):
    assert type(got) is type(want)
    for name in want._fields:
        g, w = getattr(got, name), getattr(want, name)
        assert (g is None) == (w is None), name
        if w is not None:
            assert g.shape == w.shape and g.dtype == w.dtype, name
            assert _err(g, w) <= tol, f"cache.{name}: {_err(g, w):.3g} > {tol:.3g}"


def _assert_grads_close(got, want, tol):
    (g, dx, dc0), (g_ref, dx_ref, dc0_ref) = got, want
    assert type(g) is type(g_ref) and g.array_names() == g_ref.array_names()
    assert (g.v is None) == (g_ref.v is None)
    for name, a in g_ref.arrays().items():
        assert getattr(g, name).shape == a.shape and _err(getattr(g, name), a) <= tol, f"grads.{name}: {_err(getattr(g, name), a):.3g}"
    assert dx.shape == dx_ref.shape and _err(dx, dx_ref) <= tol, f"dx: {_err(dx, dx_ref):.3g}"
    assert dc0.shape == dc0_ref.shape and _err(dc0, dc0_ref) <= tol, f"dc0: {_err(dc0, dc0_ref):.3g}"


# ---------------------------------------------------------------------------------------------
# float64: equal to the reference
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("opts", OPTIONS, ids=_opt_id)
def test_float64_forward_and_backward_equal_reference(opts):
    p, x, c0, pad = _case(*opts)
    y_ref, cT_ref, cache_ref = sru.forward(p, x, c0, pad)
    y, cT, cache = fast.forward(p, x, c0, pad)
    assert y.shape == y_ref.shape and cT.shape == cT_ref.shape
    assert _err(y, y_ref) <= TOL64 and _err(cT, cT_ref) <= TOL64
    _assert_cache_close(cache, cache_ref, TOL64)
    assert not y.flags.writeable  # read-only like the reference's: it is a view of nothing editable
    # Inference runs the same kernel, keeping nothing: bit for bit the same outputs.
    y_inf, cT_inf = fast.forward_inference(p, x, c0, pad)
    np.testing.assert_array_equal(y_inf, y)
    np.testing.assert_array_equal(cT_inf, cT)

    dy, dcT = _upstream(*y.shape)
    want = sru.backward(p, cache_ref, dy, dcT)
    _assert_grads_close(fast.backward(p, cache, dy, dcT), want, TOL64)
    # Either backward takes either forward's cache.
    _assert_grads_close(fast.backward(p, cache_ref, dy, dcT), want, TOL64)
    _assert_grads_close(sru.backward(p, cache, dy, dcT), want, TOL64)


@pytest.mark.parametrize(
    "T, B, H",
    [(1, 1, 5), (1, 4, 3), (6, 1, 40), (3, 2, 33), (4, 9, 17)],
    ids=["T1-B1", "T1", "B1-split-rows", "odd-H-split-rows", "whole-rows"],
)
def test_float64_edge_shapes(T, B, H):
    """T = 1, B = 1, and H not a multiple of 16 both with rows split into stretches (few samples:
    tasks are parts of rows) and with whole rows (many samples)."""
    p, x, c0, pad = _case("identity", True, "tanh", True, T=T, B=B, H=H)
    y_ref, cT_ref, cache_ref = sru.forward(p, x, c0, pad)
    y, cT, cache = fast.forward(p, x, c0, pad)
    assert _err(y, y_ref) <= TOL64 and _err(cT, cT_ref) <= TOL64
    dy, dcT = _upstream(T, B, H)
    _assert_grads_close(fast.backward(p, cache, dy, dcT), sru.backward(p, cache_ref, dy, dcT), TOL64)


def test_stretches_split_rows_only_when_samples_are_few():
    assert fast.stretch_for(32, 1024, threads=2) == 1024  # 32 samples: 4 tasks a thread already
    assert fast.stretch_for(1, 1024, threads=2) == 128  # 8 stretches of one row
    assert fast.stretch_for(3, 1024, threads=2) == 352  # ceil(8 / 3) = 3 stretches a row, rounded to 16
    assert fast.stretch_for(1, 40, threads=2) == 16  # never below one vector of lanes
    assert fast.stretch_for(1, 8, threads=2) == 8  # nor above H


def test_float64_skip_offset_and_defaults():
    """The identity skip reading x columns [o, o+H) of a wider input (a bidirectional layer's
    reverse direction); state0=None and dstate_T=None mean zeros."""
    p, x, _, _ = _case("identity", True, "identity", False, H=6, offset=3, D=11)
    y_ref, cT_ref, cache_ref = sru.forward(p, x)
    y, cT, cache = fast.forward(p, x)
    assert _err(y, y_ref) <= TOL64 and _err(cT, cT_ref) <= TOL64
    dy, _ = _upstream(*y.shape)
    _assert_grads_close(fast.backward(p, cache, dy), sru.backward(p, cache_ref, dy), TOL64)


def test_float64_bidirectional_equals_reference():
    pf, x, c0, pad = _case("identity", True, "identity", True, H=4, D=8, offset=0)
    pr = _case("identity", True, "tanh", False, H=4, D=8, offset=4, seed=1)[0]
    y_ref, (cf_ref, cr_ref), cache_ref = sru.bidirectional_forward((pf, pr), x, (c0, c0), pad)
    y, (cf, cr), cache = fast.bidirectional_forward((pf, pr), x, (c0, c0), pad)
    assert _err(y, y_ref) <= TOL64 and _err(cf, cf_ref) <= TOL64 and _err(cr, cr_ref) <= TOL64
    dy = _upstream(*y.shape)[0]
    (gf, gr), dx, (df, dr) = fast.bidirectional_backward((pf, pr), cache, dy)
    (gf_ref, gr_ref), dx_ref, (df_ref, dr_ref) = sru.bidirectional_backward((pf, pr), cache_ref, dy)
    _assert_grads_close((gf, dx, df), (gf_ref, dx_ref, df_ref), TOL64)
    _assert_grads_close((gr, dx, dr), (gr_ref, dx_ref, dr_ref), TOL64)


def test_read_only_and_strided_inputs():
    """A frozen ``y`` of a layer below (read-only) and strided views are accepted, same results."""
    p, x, c0, pad = _case("projection", True, "identity", False, H=5)
    y_ref = sru.forward(p, x, c0)[0]
    x_ro = x.copy()
    x_ro.setflags(write=False)
    x_t = np.ascontiguousarray(x.transpose(1, 0, 2)).transpose(1, 0, 2)
    assert not x_t.flags.c_contiguous
    p_f = p.replace(W=np.asfortranarray(p.W))
    for xi, pi in ((x_ro, p), (x_t, p_f)):
        assert _err(fast.forward(pi, xi, c0)[0], y_ref) <= TOL64


def test_empty_sequence_and_batch():
    for T, B in ((0, 2), (2, 0)):
        p, _, _, _ = _case("identity", True, "identity", False, H=4)
        x = np.zeros((T, B, 4))
        y, cT, cache = fast.forward(p, x)
        assert y.shape == (T, B, 4) and cT.shape == (B, 4)
        g, dx, dc0 = fast.backward(p, cache, np.zeros((T, B, 4)))
        assert g.W.shape == p.W.shape and not np.any(g.W) and dx.shape == x.shape


def test_fast_gradients_match_finite_differences():
    """The fast pair on its own, through the library's finite-difference checker (every parameter,
    x and c0 within 1e-6 relative), with a mask and v terms."""
    p, x, c0, pad = _case("projection", True, "tanh", True, T=4, B=2, H=3)

    def fwd(params, x, state0):
        return fast.forward(params, x, state0, pad)

    report = gradcheck(p, x, c0, forward=fwd, backward=fast.backward)
    assert set(report.relative) == {"W", "v", "b", "x", "state0"}
    assert report.passed, str(report)


# ---------------------------------------------------------------------------------------------
# float32: within the tolerance argued in the module docstring
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("opts", [o for o in OPTIONS if o[1]] + [("identity", False, "identity", False)], ids=_opt_id)
@pytest.mark.parametrize("T", [1, 8])
def test_float32_within_justified_tolerance(opts, T):
    p32, x, c0, pad = _case(*opts, T=T, B=3, H=16, D=16 if opts[0] == "identity" else 5, dtype=np.float32, seed=T)
    p64 = p32.astype(np.float64)
    y_ex, cT_ex, cache_ex = sru.forward(p64, x.astype(np.float64), c0.astype(np.float64), pad)
    y, cT, cache = fast.forward(p32, x, c0, pad)
    assert y.dtype == np.float32 and cT.dtype == np.float32
    assert all(a.dtype == np.float32 for a in cache[:-1] if a is not None)
    M = max(1.0, np.abs(cache_ex.c).max(), np.abs(y_ex).max())
    tol = TOL32 * (T + 1) * M
    assert _err(y, y_ex) <= tol and _err(cT, cT_ex) <= tol
    exact32 = cache_ex._replace(**{k: getattr(cache_ex, k).astype(np.float32) for k in cache_ex._fields[:-1] if getattr(cache_ex, k) is not None})
    _assert_cache_close(cache, exact32, tol)
    np.testing.assert_array_equal(fast.forward_inference(p32, x, c0, pad)[0], y)

    dy, dcT = _upstream(T, 3, 16)
    g_ex, dx_ex, dc0_ex = sru.backward(p64, cache_ex, dy, dcT)
    g, dx, dc0 = fast.backward(p32, cache, dy.astype(np.float32), dcT.astype(np.float32))
    assert g.W.dtype == np.float32 and dx.dtype == np.float32 and dc0.dtype == np.float32
    B, H, k = 3, 16, p32.k
    for name, got, want, n in [(n, getattr(g, n), a, T * B) for n, a in g_ex.arrays().items()] + [
        ("dx", dx, dx_ex, k * H),
        ("dc0", dc0, dc0_ex, k * H),
    ]:
        tol = (n * 2.0**-24 + TOL32 * (T + 1)) * np.abs(want).max()
        assert _err(got, want) <= tol, f"{name}: {_err(got, want):.3g} > {tol:.3g}"


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", ["forward", "forward_inference"])
def test_bad_forward_input(fn):
    p, x, c0, _ = _case("identity", True, "identity", False, T=3, B=2, H=4)
    run = getattr(fast, fn)
    with pytest.raises(TypeError, match="x: dtype float32"):
        run(p, x.astype(np.float32), c0)
    with pytest.raises(ValueError, match=r"x: expected shape \(T, B, D\).*got shape \(3, 2, 5\)"):
        run(p, np.zeros((3, 2, 5)), c0)
    with pytest.raises(ValueError, match="x: expected a 3-d array"):
        run(p, x[0], c0)
    with pytest.raises(ValueError, match=r"state0: expected shape \(B, H\)"):
        run(p, x, c0[:1])
    bad = x.copy()
    bad[1, 0, 2] = np.nan
    with pytest.raises(ValueError, match="x: contains NaN"):
        run(p, bad, c0)
    with pytest.raises(ValueError, match=r"mask_pad: expected shape \(T, B\)"):
        run(p, x, c0, np.zeros((3, 3), bool))
    with pytest.raises(ValueError, match="mask_pad: entries must be 0"):
        run(p, x, c0, np.full((3, 2), 2))
    with pytest.raises(TypeError, match="params: expected SRUParams"):
        run(sru.init(4, 4, rng=0).arrays(), x, c0)


def test_bad_backward_input():
    p, x, c0, _ = _case("identity", True, "identity", False, T=3, B=2, H=4)
    y, _, cache = fast.forward(p, x, c0)
    dy = np.ones_like(y)
    with pytest.raises(ValueError, match=r"dy: expected shape \(T, B, H\)"):
        fast.backward(p, cache, dy[:2])
    with pytest.raises(TypeError, match="dy: dtype float32"):
        fast.backward(p, cache, dy.astype(np.float32))
    with pytest.raises(ValueError, match=r"dstate_T: expected shape \(B, H\)"):
        fast.backward(p, cache, dy, np.zeros((2, 5)))
    with pytest.raises(TypeError, match="cache: expected the SRUCache"):
        fast.backward(p, tuple(cache), dy)
    other = _case("identity", True, "identity", False, T=3, B=2, H=5)[0]
    with pytest.raises(ValueError, match=r"cache.x: .*does not fit these params"):
        fast.backward(other, cache, dy)
    with pytest.raises(ValueError, match="cache.s: a cache with a skip term"):
        fast.backward(p.replace(skip="none", alpha=1.0), cache, dy)
    with pytest.raises(TypeError, match="params: expected SRUParams"):
        fast.backward(None, cache, dy)


def test_former_state_keywords_still_work():
    """``c0=`` and ``dc_T=`` (the names before state0 / dstate_T) work for one release, with a warning."""
    p, x, c0, _ = _case("identity", True, "identity", False, T=3, B=2, H=4)
    y, cT, cache = fast.forward(p, x, c0)
    dy, dT = np.ones_like(y), np.ones_like(cT)
    want = fast.backward(p, cache, dy, dT)
    with pytest.warns(DeprecationWarning, match="c0= is deprecated"):
        y_old = fast.forward(p, x, c0=c0)[0]
    with pytest.warns(DeprecationWarning, match="c0= is deprecated"):
        fast.forward_inference(p, x, c0=c0)
    with pytest.warns(DeprecationWarning, match="dc_T= is deprecated"):
        got = fast.backward(p, cache, dy, dc_T=dT)
    assert np.array_equal(y, y_old) and np.array_equal(want[1], got[1]) and np.array_equal(want[2], got[2])
    with pytest.raises(TypeError, match="both c0= and state0="):
        fast.forward(p, x, c0=c0, state0=c0)
