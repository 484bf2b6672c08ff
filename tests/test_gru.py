"""Reference GRU: gradients vs finite differences, the two reset conventions, the update orientation."""

import dataclasses

import numpy as np
import pytest

from refrnn import gradcheck, gru
from refrnn.cells._common import sigmoid
from refrnn.layouts.paper import flip_update_orientation


def _case(reset, *, T=6, B=2, D=3, H=4, seed=0):
    rng = np.random.default_rng(seed)
    # Biases drawn well away from zero: a bias gradient that is dropped or misrouted cannot hide.
    p = gru.init(D, H, reset=reset, rng=rng)
    p = p.replace(b_x=rng.uniform(-1, 1, 3 * H), b_h=rng.uniform(-1, 1, 3 * H))
    return p, rng.standard_normal((T, B, D)), rng.standard_normal((B, H))


@pytest.mark.parametrize("reset", ["after", "before"])
def test_gradients_match_finite_differences(reset):
    report = gradcheck(*_case(reset))
    assert set(report.relative) == {"W_x", "W_h", "b_x", "b_h", "x", "state0"}
    assert report.passed, str(report)


@pytest.mark.parametrize("reset", ["after", "before"])
@pytest.mark.parametrize("field", ["W_x", "W_h", "b_x", "b_h"])
def test_gradcheck_rejects_a_gradient_scaled_by_1_01(reset, field):
    """The checker itself is tested: a 1% error in one parameter's gradient must fail it."""

    def broken(params, cache, dy, dh_T=None):
        grads, dx, dh0 = gru.backward(params, cache, dy, dh_T)
        return grads.replace(**{field: getattr(grads, field) * 1.01}), dx, dh0

    report = gradcheck(*_case(reset), backward=broken)
    assert not report.passed
    assert report.worst[0] == field and report.relative[field] > 1e-3


def test_gradcheck_rejects_a_wrong_dx_and_dh0():
    def broken(params, cache, dy, dh_T=None):
        grads, dx, dh0 = gru.backward(params, cache, dy, dh_T)
        return grads, dx[::-1].copy(), dh0  # gradient of x with time reversed (an off-by-T bug)

    report = gradcheck(*_case("after"), backward=broken)
    assert not report.passed and report.worst[0] == "x"


def test_gradcheck_absolute_floor_passes_noise_but_not_a_missing_gradient():
    """With z saturated (sigmoid(20) = 1 - 2e-9) every gradient but dh0 is ~1e-9, the size of the
    finite-difference noise: relative errors of 1e-2 are noise, and ``atol`` passes them. A
    gradient wrongly zeroed where the true one is O(1) still fails."""
    params, x, h0 = _case("after")
    H = params.hidden_size
    b_x = params.b_x.copy()
    b_x[H : 2 * H] = 20.0
    saturated = params.replace(b_x=b_x)
    assert not gradcheck(saturated, x, h0, atol=0.0).passed
    report = gradcheck(saturated, x, h0)
    assert report.passed and report.relative["W_x"] > 1e-3, str(report)

    def broken(params, cache, dy, dh_T=None):
        grads, dx, dh0 = gru.backward(params, cache, dy, dh_T)
        return grads.replace(b_h=np.zeros_like(grads.b_h)), dx, dh0

    report = gradcheck(*_case("after"), backward=broken)
    assert not report.passed and not report.array_passed("b_h") and report.array_passed("W_h")
    row = str(report).splitlines()[1 + list(report.relative).index("b_h")]
    assert row.startswith("b_h") and row.endswith("FAIL")


def _saturated_reset(p):
    """Weights whose reset gate is exactly 1.0 in float64: sigmoid(60) rounds to 1."""
    H = p.hidden_size
    W_x, W_h, b_x = p.W_x.copy(), p.W_h.copy(), p.b_x.copy()
    W_x[:H], W_h[:H], b_x[:H] = 0.0, 0.0, 60.0
    return p.replace(W_x=W_x, W_h=W_h, b_x=b_x)


def test_reset_before_equals_reset_after_when_r_is_one():
    after, x, h0 = _case("after", T=30)
    after = _saturated_reset(after)
    H = after.hidden_size
    # Reset-before with b_n = b_xn + b_hn carried entirely on the input side.
    b_x, b_h = after.b_x.copy(), after.b_h.copy()
    b_x[2 * H :] += b_h[2 * H :]
    b_h[2 * H :] = 0.0
    before = after.replace(b_x=b_x, b_h=b_h, reset="before")
    y_a, h_a, cache_a = gru.forward(after, x, h0)
    y_b, h_b, cache_b = gru.forward(before, x, h0)
    assert np.all(cache_a.r == 1.0)
    # Equal up to the order of two additions and the blocking of one product: a few ulps.
    np.testing.assert_allclose(y_b, y_a, rtol=0, atol=1e-14)
    np.testing.assert_allclose(h_b, h_a, rtol=0, atol=1e-14)


def test_reset_conventions_differ_when_r_is_not_one():
    """The equality above is not vacuous: with a live reset gate the conventions disagree."""
    after, x, h0 = _case("after", T=10)
    before = after.replace(reset="before")
    y_a, _, _ = gru.forward(after, x, h0)
    y_b, _, _ = gru.forward(before, x, h0)
    assert np.max(np.abs(y_a - y_b)) > 1e-3


def test_paper_orientation_is_refrnn_with_z_rows_negated():
    """Seed paper Eq. 4, h' = (1 - z) h + z h^, written out naively, equals refrnn on flipped weights."""
    p_paper, x, h0 = _case("before", T=20)
    H = p_paper.hidden_size
    h, ys = h0, []
    for t in range(x.shape[0]):
        ax = p_paper.W_x @ x[t].T
        r = sigmoid(ax[:H].T + h @ p_paper.W_h[:H].T + p_paper.b_x[:H] + p_paper.b_h[:H])
        z = sigmoid(ax[H : 2 * H].T + h @ p_paper.W_h[H : 2 * H].T + p_paper.b_x[H : 2 * H] + p_paper.b_h[H : 2 * H])
        hhat = np.tanh(ax[2 * H :].T + p_paper.b_x[2 * H :] + (r * h) @ p_paper.W_h[2 * H :].T + p_paper.b_h[2 * H :])
        h = (1 - z) * h + z * hhat
        ys.append(h)
    y, _, _ = gru.forward(flip_update_orientation(p_paper), x, h0)
    np.testing.assert_allclose(y, np.stack(ys), rtol=0, atol=1e-14)
    # Without the flip the two orientations are different models.
    y_wrong, _, _ = gru.forward(p_paper, x, h0)
    assert np.max(np.abs(y_wrong - np.stack(ys))) > 1e-2


def test_flip_is_an_involution_and_touches_only_z():
    p, _, _ = _case("after")
    q = flip_update_orientation(p)
    H = p.hidden_size
    for name in ("W_x", "W_h", "b_x", "b_h"):
        a, b = getattr(p, name), getattr(q, name)
        np.testing.assert_array_equal(b[H : 2 * H], -a[H : 2 * H])
        np.testing.assert_array_equal(b[:H], a[:H])
        np.testing.assert_array_equal(b[2 * H :], a[2 * H :])
    np.testing.assert_array_equal(flip_update_orientation(q).W_h, p.W_h)


@pytest.mark.parametrize("reset", ["after", "before"])
def test_float32_runs_in_float32_and_tracks_float64(reset):
    p, x, h0 = _case(reset, T=20)
    y64, h64, _ = gru.forward(p, x, h0)
    y32, h32, cache = gru.forward(p.astype(np.float32), x.astype(np.float32), h0.astype(np.float32))
    assert y32.dtype == h32.dtype == cache.z.dtype == np.float32
    # The GRU is contractive here (|W| ~ 1/sqrt(H)), so float32 rounding (6e-8) does not grow: 1e-5 leaves room.
    np.testing.assert_allclose(y32, y64, rtol=0, atol=1e-5)
    grads, dx, dh0 = gru.backward(p.astype(np.float32), cache, np.ones_like(y32))
    assert grads.W_h.dtype == dx.dtype == dh0.dtype == np.float32


def test_outputs_are_read_only_views_of_the_cache():
    p, x, h0 = _case("after")
    y, h_T, cache = gru.forward(p, x, h0)
    with pytest.raises(ValueError):
        y[0, 0, 0] = 1.0
    h_T[0, 0] = 123.0  # the final state is the caller's own copy
    assert cache.h[-1, 0, 0] != 123.0


def test_zero_length_sequence_returns_h0_and_zero_gradients():
    p, x, h0 = _case("after", T=0)
    y, h_T, cache = gru.forward(p, x, h0)
    assert y.shape == (0, 2, 4)
    np.testing.assert_array_equal(h_T, h0)
    grads, dx, dh0 = gru.backward(p, cache, np.zeros_like(y), np.ones_like(h_T))
    np.testing.assert_array_equal(dh0, np.ones_like(h0))
    assert not np.any(grads.W_h)


def test_params_are_frozen_and_gradients_share_the_class():
    p, x, h0 = _case("after")
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.W_x = p.W_x
    _, _, cache = gru.forward(p, x, h0)
    grads, _, _ = gru.backward(p, cache, np.ones((6, 2, 4)))
    assert type(grads) is type(p) and grads.reset == p.reset
