"""Reference SRU: gradients vs finite differences under every option, padding, directions, bad input, layout."""

import itertools

import numpy as np
import pytest

from refrnn import gradcheck
from refrnn.layers import stack
from refrnn.cells import SRUParams, module_for, sru
from refrnn.cells._common import sigmoid
from refrnn.layouts.sru import from_sru, to_sru

# Every combination of the options: skip term, v terms, activation of c, highway scale.
SKIPS = ("identity", "projection", "none")
FLAGS = list(itertools.product(SKIPS, [True, False], ["identity", "tanh"], [False, True]))


def _flag_id(flags):
    skip, v_terms, act, rescale = flags
    return f"{skip}-{'v' if v_terms else 'nov'}-{act}-{'rescale' if rescale else 'alpha1'}"


def _params(skip, v_terms, activation, rescale, *, D=None, H=3, seed=0):
    D = D if D is not None else (H if skip == "identity" else H + 1)
    rng = np.random.default_rng(seed)
    p = sru.init(D, H, skip=skip, v_terms=v_terms, activation=activation, rescale=rescale, highway_bias=-0.7, rng=rng)
    # Biases and v well away from zero so a dropped or misrouted term cannot hide; a projection skip gets
    # alpha != 1 too (refrnn applies alpha to it; sru's import sets it to 1).
    p = p.replace(b=rng.uniform(-1, 1, 2 * H))
    if v_terms:
        p = p.replace(v=rng.uniform(-1, 1, 2 * H))
    if skip == "projection" and rescale:
        p = p.replace(alpha=1.3)
    return p


def _data(p, T=5, B=2, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((T, B, p.input_size)), rng.standard_normal((B, p.hidden_size))


def _mask(T=5, B=2):
    pad = np.zeros((T, B), bool)
    pad[3:, 0] = True  # trailing padding
    pad[1, 1] = True  # a padded step inside a sequence
    return pad


def _masked(fn, pad):
    return lambda params, x, state0: fn(params, x, state0, pad)


@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize("flags", FLAGS, ids=_flag_id)
def test_gradients_match_finite_differences(flags, masked):
    p = _params(*flags)
    x, c0 = _data(p)
    kw = dict(forward=_masked(sru.forward, _mask()), backward=sru.backward) if masked else {}
    report = gradcheck(p, x, c0, **kw)
    expected = {"W", "b", "x", "state0"} | ({"v"} if flags[1] else set())
    assert set(report.relative) == expected
    assert report.passed, str(report)


@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
def test_identity_skip_with_offset_gradients(masked):
    """An identity skip reading columns 2..4 of a 6-wide input (the reverse half of a bidirectional layer)."""
    p = _params("identity", True, "identity", True, D=6).replace(skip_offset=2)
    x, c0 = _data(p)
    kw = dict(forward=_masked(sru.forward, _mask()), backward=sru.backward) if masked else {}
    report = gradcheck(p, x, c0, **kw)
    assert report.passed, str(report)


@pytest.mark.parametrize("field", ["W", "v", "b"])
def test_gradcheck_rejects_a_wrong_gradient(field):
    """The check can fail: a 1% error in one parameter's gradient is caught."""

    def broken(params, cache, dy, dc_T=None):
        grads, dx, dc0 = sru.backward(params, cache, dy, dc_T)
        return grads.replace(**{field: getattr(grads, field) * 1.01}), dx, dc0

    p = _params("identity", True, "identity", True)
    report = gradcheck(p, *_data(p), backward=broken)
    assert not report.passed and report.worst[0] == field


@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
def test_bidirectional_gradients(masked):
    H = 3
    fwd = _params("identity", True, "tanh", True, D=2 * H)
    rev = _params("identity", True, "tanh", True, D=2 * H, seed=4).replace(skip_offset=H)
    x, _ = _data(fwd)
    c0 = (np.random.default_rng(7).standard_normal((2, H)), np.random.default_rng(8).standard_normal((2, H)))
    pad = _mask() if masked else None
    report = gradcheck(
        (fwd, rev), x, c0,
        forward=lambda ps, xx, s0: sru.bidirectional_forward(ps, xx, s0, pad),
        backward=sru.bidirectional_backward,
    )
    assert report.passed, str(report)
    assert {"layers[0].v", "layers[1].v", "state0[0]", "state0[1]"} <= set(report.relative)


def test_stack_of_sru_layers_gradients():
    """SRU is a registered cell: refrnn.layers.stack runs it (projection skip below, identity above)."""
    layers = (_params("projection", True, "identity", False, D=2, H=3), _params("identity", True, "identity", True, H=3, seed=2))
    assert module_for(layers[0]) is sru
    x = np.random.default_rng(0).standard_normal((4, 2, 2))
    report = gradcheck(layers, x, None)
    assert report.passed, str(report)
    y, states, _ = stack.forward(layers, x)
    assert y.shape == (4, 2, 3) and states[1].shape == (2, 3)


def test_one_step_equals_the_equations():
    """T = 1 written out from the module's equations, independently of the loop and the block split."""
    p = _params("projection", True, "tanh", True)
    x, c0 = _data(p, T=1)
    H = p.hidden_size
    W_c, W_f, W_r, W_s = p.W[:H], p.W[H : 2 * H], p.W[2 * H : 3 * H], p.W[3 * H :]
    v_f, v_r, b_f, b_r = p.v[:H], p.v[H:], p.b[:H], p.b[H:]
    f = sigmoid(x[0] @ W_f.T + v_f * c0 + b_f)
    r = sigmoid(x[0] @ W_r.T + v_r * c0 + b_r)
    c = f * c0 + (1 - f) * (x[0] @ W_c.T)
    h = r * np.tanh(c) + (1 - r) * p.alpha * (x[0] @ W_s.T)
    y, c_T, _ = sru.forward(p, x, c0)
    np.testing.assert_allclose(y[0], h, rtol=0, atol=1e-14)
    np.testing.assert_allclose(c_T, c, rtol=0, atol=1e-14)


# ----------------------------------------------------------------------------------------------------
# Padding


MASK_FLAGS = [("identity", True, "tanh", True), ("projection", True, "identity", False), ("none", False, "identity", False)]


@pytest.mark.parametrize("flags", MASK_FLAGS, ids=_flag_id)
def test_mask_pad_equals_dropping_the_padded_steps(flags):
    """Padded steps keep c bit for bit and output exact zeros; the real steps of each sequence give what
    the sequence gives with its padded steps removed, and so do the gradients."""
    p = _params(*flags)
    T, B = 7, 3
    x, c0 = _data(p, T=T, B=B)
    pad = np.zeros((T, B), bool)
    pad[5:, 0] = True
    pad[[0, 2, 3], 1] = True
    # sequence 2 has no padding
    y, c_T, cache = sru.forward(p, x, c0, pad)
    dy = np.random.default_rng(9).standard_normal(y.shape)
    dc_T = np.random.default_rng(10).standard_normal(c_T.shape)
    grads, dx, dc0 = sru.backward(p, cache, dy, dc_T)
    assert np.all(y[pad] == 0.0)
    t, b = np.nonzero(pad)
    assert np.array_equal(cache.c[t + 1, b], cache.c[t, b])
    assert np.all(dx[pad] == 0.0)
    total = p.map(np.zeros_like)
    for j in range(B):
        keep = ~pad[:, j]
        yj, cj, cache_j = sru.forward(p, x[keep, j : j + 1], c0[j : j + 1])
        np.testing.assert_allclose(y[keep, j], yj[:, 0], rtol=0, atol=1e-14)
        np.testing.assert_allclose(c_T[j], cj[0], rtol=0, atol=1e-14)
        gj, dxj, dc0j = sru.backward(p, cache_j, dy[keep, j : j + 1], dc_T[j : j + 1])
        np.testing.assert_allclose(dx[keep, j], dxj[:, 0], rtol=0, atol=1e-13)
        np.testing.assert_allclose(dc0[j], dc0j[0], rtol=0, atol=1e-13)
        total = total.replace(**{k: getattr(total, k) + a for k, a in gj.arrays().items()})
    for name, g in grads.arrays().items():
        np.testing.assert_allclose(g, getattr(total, name), rtol=0, atol=1e-12, err_msg=name)


def test_fully_padded_sequence_passes_the_state_through():
    p = _params("identity", True, "identity", True)
    x, c0 = _data(p)
    pad = np.ones((5, 2), bool)
    y, c_T, cache = sru.forward(p, x, c0, pad)
    assert np.all(y == 0.0) and np.array_equal(c_T, c0)
    dc_T = np.random.default_rng(0).standard_normal(c0.shape)
    grads, dx, dc0 = sru.backward(p, cache, np.ones_like(y), dc_T)
    assert np.array_equal(dc0, dc_T) and np.all(dx == 0.0)
    assert all(np.all(g == 0.0) for g in grads.arrays().values())


def test_mask_pad_accepts_bool_int_and_float_01():
    p = _params("identity", True, "identity", False)
    x, c0 = _data(p)
    pad = _mask()
    y_bool, _, _ = sru.forward(p, x, c0, pad)
    for m in (pad.astype(np.uint8), pad.astype(np.int64), pad.astype(np.float32)):
        y, _, _ = sru.forward(p, x, c0, m)
        assert np.array_equal(y, y_bool)
    y_none, _, _ = sru.forward(p, x, c0)
    y_zero, _, _ = sru.forward(p, x, c0, np.zeros((5, 2), bool))
    assert np.array_equal(y_none, y_zero) and not np.array_equal(y_none, y_bool)


# ----------------------------------------------------------------------------------------------------
# Directions


def test_reverse_direction_reads_the_sequence_backwards():
    p = _params("identity", True, "tanh", True)
    x, c0 = _data(p, T=6)
    pad = np.zeros((6, 2), bool)
    pad[4:, 0] = True  # padded tail: the reverse direction starts at the last real step, from c0
    y, c_T, _ = sru.reverse_forward(p, x, c0, pad)
    for j, n in ((0, 4), (1, 6)):
        yj, cj, _ = sru.forward(p, x[:n, j : j + 1][::-1], c0[j : j + 1])
        np.testing.assert_allclose(y[:n, j], yj[::-1, 0], rtol=0, atol=1e-14)
        np.testing.assert_allclose(c_T[j], cj[0], rtol=0, atol=1e-14)
    assert np.all(y[4:, 0] == 0.0)


def test_bidirectional_concatenates_forward_then_reverse():
    H = 3
    fwd = _params("identity", True, "identity", True, D=2 * H)
    rev = _params("identity", True, "identity", True, D=2 * H, seed=4).replace(skip_offset=H)
    x, _ = _data(fwd)
    y, (c_f, c_r), _ = sru.bidirectional_forward((fwd, rev), x)
    y_f, c_f2, _ = sru.forward(fwd, x)
    y_r, c_r2, _ = sru.reverse_forward(rev, x)
    assert np.array_equal(y, np.concatenate([y_f, y_r], -1))
    assert np.array_equal(c_f, c_f2) and np.array_equal(c_r, c_r2)


# ----------------------------------------------------------------------------------------------------
# Init, float32


def test_init_follows_the_sru_package():
    same = sru.init(4, 4, rng=0)
    assert same.skip == "identity" and same.alpha == 1.0 and same.k == 3
    wider = sru.init(5, 4, rng=0)
    assert wider.skip == "projection" and wider.k == 4 and wider.W.shape == (16, 5)
    scaled = sru.init(4, 4, rescale=True, highway_bias=-1.0, rng=0)
    assert scaled.alpha == np.sqrt(1 + 2 * np.exp(-1.0)) == sru.highway_alpha(-1.0)
    assert np.all(scaled.b[:4] == 0.0) and np.all(scaled.b[4:] == -1.0)
    # With a skip projection the scale goes into the initial W_s, alpha stays 1 (as in sru).
    baked = sru.init(5, 4, rescale=True, highway_bias=-1.0, rng=0)
    assert baked.alpha == 1.0
    np.testing.assert_allclose(baked.W[12:], wider.W[12:] * sru.highway_alpha(-1.0), rtol=1e-15)
    assert sru.init(4, 4, v_terms=False, rng=0).v is None
    assert sru.init(4, 4, skip="none", rescale=True, rng=0).alpha == 1.0


@pytest.mark.parametrize("flags", [("identity", True, "tanh", True), ("projection", False, "identity", True)], ids=_flag_id)
def test_float32_is_accepted_and_close_to_float64(flags):
    p64 = _params(*flags)
    x, c0 = _data(p64)
    p32 = p64.astype(np.float32)
    y32, c32, cache = sru.forward(p32, x.astype(np.float32), c0.astype(np.float32))
    dy = np.ones_like(y32)
    g32, dx32, dc32 = sru.backward(p32, cache, dy)
    assert y32.dtype == c32.dtype == dx32.dtype == dc32.dtype == g32.W.dtype == np.float32
    y64, c64, cache64 = sru.forward(p64, x, c0)
    g64, dx64, _ = sru.backward(p64, cache64, np.ones_like(y64))
    # float32 rounding (eps 6e-8) over 5 steps of values of order 1: 1e-5 leaves ~100x headroom.
    np.testing.assert_allclose(y32, y64, rtol=0, atol=1e-5)
    np.testing.assert_allclose(dx32, dx64, rtol=0, atol=1e-5)
    np.testing.assert_allclose(g32.W, g64.W, rtol=0, atol=1e-5)


def test_float32_stays_float32_with_a_numpy_alpha():
    """alpha given as a NumPy float64 scalar must not promote float32 outputs to float64 (NEP 50)."""
    p = _params("identity", True, "identity", True).astype(np.float32).replace(alpha=np.float64(1.25))
    x, c0 = _data(p)
    y, c_T, cache = sru.forward(p, x.astype(np.float32), c0.astype(np.float32))
    grads, dx, dc0 = sru.backward(p, cache, np.ones_like(y))
    assert {a.dtype for a in (y, c_T, dx, dc0, grads.W, grads.v, grads.b)} == {np.dtype(np.float32)}


# ----------------------------------------------------------------------------------------------------
# Bad input


def _good():
    p = _params("identity", True, "identity", False)
    x, c0 = _data(p)
    return p, x, c0


@pytest.mark.parametrize(
    "change, exc, match",
    [
        (lambda p, x, c0: (p, x[0], c0, None), ValueError, r"x: expected a 3-d array of shape \(T, B, D\)"),
        (lambda p, x, c0: (p, x[..., :2], c0, None), ValueError, r"x: .*D=2, expected 3"),
        (lambda p, x, c0: (p, x.astype(np.float32), c0, None), TypeError, r"x: dtype float32 does not match"),
        (lambda p, x, c0: (p, np.where(x > 1, np.nan, x), c0, None), ValueError, r"x: contains NaN"),
        (lambda p, x, c0: (p, x.astype(int), c0, None), TypeError, r"x: expected a float32 or float64"),
        (lambda p, x, c0: (p, x, c0[:1], None), ValueError, r"state0: .*B=1, expected 2"),
        (lambda p, x, c0: (p, x, c0[:, :2], None), ValueError, r"state0: .*H=2, expected 3"),
        (
            lambda p, x, c0: (p, x, c0, np.zeros((5, 3), bool)),
            ValueError,
            r"mask_pad: expected shape \(T, B\) with T=5, B=2, got shape \(5, 3\)",
        ),
        (lambda p, x, c0: (p, x, c0, np.full((5, 2), 0.5)), ValueError, r"mask_pad: entries must be 0"),
        (lambda p, x, c0: (p, x, c0, np.full((5, 2), "a")), TypeError, r"mask_pad: expected a bool"),
    ],
)
def test_bad_forward_input(change, exc, match):
    p, x, c0, pad = change(*_good())
    with pytest.raises(exc, match=match):
        sru.forward(p, x, c0, pad)


def test_bad_backward_input():
    p, x, c0 = _good()
    y, c_T, cache = sru.forward(p, x, c0)
    with pytest.raises(ValueError, match=r"dy: expected shape"):
        sru.backward(p, cache, y[:-1])
    with pytest.raises(ValueError, match=r"dstate_T: "):
        sru.backward(p, cache, y, c_T[:, :1])
    with pytest.raises(TypeError, match=r"dy: dtype float32"):
        sru.backward(p, cache, y.astype(np.float32))


@pytest.mark.parametrize(
    "changes, exc, match",
    [
        (dict(W=np.zeros((12, 3))), ValueError, r"SRUParams.W: expected shape \(3H, D\) with 3H=9"),
        (dict(v=np.zeros(4)), ValueError, r"SRUParams.v: expected shape \(2H,\) with 2H=6"),
        (dict(b=np.zeros(5)), ValueError, r"SRUParams.b: expected shape \(2H,\)"),
        (dict(skip="highway"), ValueError, r"SRUParams.skip: unknown value 'highway'"),
        (dict(activation="relu"), ValueError, r"SRUParams.activation: unknown value 'relu'"),
        (dict(skip="projection"), ValueError, r"SRUParams.W: expected shape \(4H, D\) with 4H=12"),
        (dict(skip="none", alpha=2.0), ValueError, r"SRUParams.alpha: skip='none'"),
        (dict(alpha=float("nan")), ValueError, r"SRUParams.alpha: expected a finite"),
        (dict(alpha=True), ValueError, r"SRUParams.alpha: expected a finite"),
        (dict(skip_offset=1), ValueError, r"SRUParams.skip_offset: the identity skip adds x\[..., 1:4\]"),
        (dict(skip_offset=-1), ValueError, r"SRUParams.skip_offset: expected a non-negative"),
        (dict(W=np.zeros((9, 3), np.float32)), TypeError, r"SRUParams: all arrays must share one dtype"),
        (dict(b=np.array([0, 1, 2, 3, 4, np.inf])), ValueError, r"SRUParams.b: contains NaN or infinity"),
    ],
)
def test_bad_params(changes, exc, match):
    p, _, _ = _good()
    with pytest.raises(exc, match=match):
        p.replace(**changes)


def test_identity_skip_needs_enough_input_columns():
    with pytest.raises(ValueError, match=r"use skip='projection' when D != H"):
        sru.init(2, 3, skip="identity")
    with pytest.raises(ValueError, match=r"skip: unknown value"):
        sru.init(3, 3, skip="residual")


def test_bidirectional_needs_a_pair():
    p, x, _ = _good()
    with pytest.raises(TypeError, match=r"directions: expected a \(forward, reverse\) pair"):
        sru.bidirectional_forward(p, x)
    with pytest.raises(TypeError, match=r"state0: expected a \(forward, reverse\) pair"):
        sru.bidirectional_forward((p, p), x, np.zeros((2, 3)))


# ----------------------------------------------------------------------------------------------------
# Layout (without the package; tests/test_sru_package.py checks it against the package itself)


def _layer(bidirectional, D, H, skip, seed=0, v_terms=True, activation="identity"):
    def one(offset, s):
        p = _params(skip, v_terms, activation, False, D=D, H=H, seed=s)
        return p.replace(skip_offset=offset) if skip == "identity" else p

    return (one(0, seed), one(H, seed + 1)) if bidirectional else one(0, seed)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("skip", SKIPS)
def test_weight_columns_interleave_the_blocks_innermost(bidirectional, skip):
    """weight[:, (dir*H + j)*k + m] is block m (c, f, r, s), unit j of direction dir; weight_c and bias
    are (2, ndir, H) = [v_f | v_r] and [b_f | b_r] flattened."""
    H, ndir = 3, 2 if bidirectional else 1
    D = ndir * H if skip != "projection" else ndir * H + 1
    layer = _layer(bidirectional, D, H, skip)
    dirs = layer if bidirectional else (layer,)
    sd = to_sru(layer, "SRUCell")
    k = dirs[0].k
    assert sd["weight"].shape == (D, ndir * H * k) and sd["weight_c"].shape == sd["bias"].shape == (2 * ndir * H,)
    for d, j, m in itertools.product(range(ndir), range(H), range(k)):
        assert np.array_equal(sd["weight"][:, (d * H + j) * k + m], dirs[d].W[m * H + j])
    for d, j, g in itertools.product(range(ndir), range(H), range(2)):
        assert sd["weight_c"][(g * ndir + d) * H + j] == dirs[d].v[g * H + j]
        assert sd["bias"][(g * ndir + d) * H + j] == dirs[d].b[g * H + j]


def _assert_same(a, b):
    if isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b)
        for u, v in zip(a, b):
            _assert_same(u, v)
        return
    assert type(a) is type(b)
    for name in ("skip", "alpha", "skip_offset", "activation"):
        assert getattr(a, name) == getattr(b, name), name
    assert a.array_names() == b.array_names()
    for name in a.array_names():
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


@pytest.mark.parametrize("v_terms", [True, False], ids=["v", "nov"])
@pytest.mark.parametrize("activation", ["identity", "tanh"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("skip", SKIPS)
def test_round_trip_is_the_identity(skip, bidirectional, activation, v_terms):
    H, ndir = 3, 2 if bidirectional else 1
    opts = dict(bidirectional=bidirectional, has_skip_term=skip != "none", use_tanh=activation == "tanh", v_terms=v_terms)
    D0 = ndir * H + 2 if skip == "projection" else ndir * H
    cell = _layer(bidirectional, D0, H, skip, v_terms=v_terms, activation=activation)
    _assert_same(from_sru(to_sru(cell, "SRUCell"), "SRUCell", **opts), cell)
    # A two-layer SRU: layer 1 reads layer 0's ndir*H outputs (identity skip there unless skip is off).
    upper_skip = "identity" if skip != "none" else "none"
    upper = _layer(bidirectional, ndir * H, H, upper_skip, seed=5, v_terms=v_terms, activation=activation)
    layers = (cell, upper)
    sd = to_sru(layers, "SRU")
    assert sorted(sd) == sorted(f"rnn_lst.{l}.{k}" for l in range(2) for k in ("weight", "weight_c", "bias", "scale_x"))
    _assert_same(from_sru(sd, "SRU", **opts), layers)


def test_rescale_reads_scale_x_only_where_sru_applies_it():
    p = _params("identity", True, "identity", True)
    sd = to_sru(p, "SRUCell")
    assert sd["scale_x"][0] == p.alpha
    assert from_sru(sd, "SRUCell").alpha == p.alpha  # SRUCell: rescale defaults to True
    assert from_sru({"rnn_lst.0." + k: v for k, v in sd.items()}, "SRU")[0].alpha == 1.0  # SRU: defaults to False
    with pytest.raises(ValueError, match=r"alpha: is .* pass rescale=True"):
        to_sru((p,), "SRU")
    proj = _params("projection", True, "identity", True)
    with pytest.raises(ValueError, match=r"fold it into W_s"):
        to_sru(proj, "SRUCell")


@pytest.mark.parametrize(
    "edit, kwargs, match",
    [
        (lambda sd: {**sd, "weight_proj": sd["weight"]}, {}, r"weight_proj.*projection_size"),
        (lambda sd: {**sd, "layer_norm.weight": sd["bias"]}, {}, r"layer_norm"),
        (lambda sd: {**sd, "extra": sd["bias"]}, {}, r"unexpected key 'extra'"),
        (lambda sd: {k: v for k, v in sd.items() if k != "weight_c"}, {}, r"lacks its 'weight_c'"),
        (lambda sd: {k: v for k, v in sd.items() if k != "scale_x"}, {}, r"lacks 'scale_x'"),
        (
            lambda sd: {**sd, "weight_c": sd["weight_c"][:6], "bias": sd["bias"][:6]},
            dict(bidirectional=True),
            r"weight_c: expected shape \(2\*2\*H,\) for ndir=2, got \(6,\)",
        ),
        (lambda sd: {**sd, "bias": sd["bias"][:6]}, {}, r"bias: expected shape \(8,\) like weight_c"),
        (lambda sd: sd, dict(v_terms=False), r"weight_c is non-zero, but v_terms=False"),
        (lambda sd: {**sd, "weight": sd["weight"][:, :-1]}, {}, r"weight: expected shape \(D, 4\*k\)"),
        (lambda sd: sd, dict(kind="GRU"), r"kind: unknown sru module 'GRU'"),
    ],
)
def test_from_sru_bad_input(edit, kwargs, match):
    p = _params("identity", True, "identity", True, H=4)
    sd = edit(to_sru(p, "SRUCell"))
    kind = kwargs.pop("kind", "SRUCell")
    with pytest.raises((ValueError, TypeError), match=match):
        from_sru(sd, kind, **kwargs)


def test_from_sru_checks_k_against_the_skip_flag():
    """A module with D != H and a skip term has k=4; read as has_skip_term=False (k=3) it is refused."""
    sd = to_sru(_params("projection", True, "identity", False, H=4), "SRUCell")
    with pytest.raises(ValueError, match=r"weight has k=4 blocks, but sru uses k=3 .* has_skip_term=False"):
        from_sru(sd, "SRUCell", has_skip_term=False)


def test_to_sru_refuses_what_sru_cannot_express():
    p = _params("identity", True, "identity", False)
    q = _params("projection", True, "identity", False)
    with pytest.raises(ValueError, match=r"skip: sru uses a identity skip for input size 3 and output size 3"):
        to_sru(_params("projection", True, "identity", False, D=3), "SRUCell")
    wide = _params("identity", True, "identity", False, D=6)  # input 2H: a bidirectional layer's
    with pytest.raises(ValueError, match=r"skip_offset: sru's direction 1 adds x\[..., 3:6\]"):
        to_sru((wide, wide), "SRUCell")
    with pytest.raises(ValueError, match=r"all bidirectional or all not"):
        to_sru((q, (p, p)), "SRU")
    with pytest.raises(ValueError, match=r"v terms in every layer or in none"):
        to_sru((q, p.replace(v=None)), "SRU")
    with pytest.raises(TypeError, match=r"params: sru.SRU needs a non-empty sequence"):
        to_sru(p, "SRU")
    with pytest.raises(TypeError, match=r"params\[0\]: expected SRUParams"):
        to_sru(("x",), "SRU")


def test_torch_tensors_are_accepted_by_from_sru():
    torch = pytest.importorskip("torch")
    p = _params("identity", True, "identity", True)
    sd = {k: torch.tensor(v) for k, v in to_sru(p, "SRUCell").items()}
    _assert_same(from_sru(sd, "SRUCell"), p)


def test_params_class_is_exported():
    assert SRUParams is sru.SRUParams
