"""Flax layout: round trips, the folded biases exact in both directions (parameters and gradients), refusals,
refrnn vs Flax's published equations (always, NumPy only) and vs flax.linen itself (when jax and flax are installed)."""

import numpy as np
import pytest

from refrnn.layers import bidirectional as bi
from refrnn import gru, lstm, rnn
from refrnn.layers import stack
from refrnn.layouts.flax import from_flax, state_from_flax, state_to_flax, to_flax


def _biased(mod, seed=0, D=3, H=4, **opts):
    rng = np.random.default_rng(seed)
    p = mod.init(D, H, rng=rng, **opts)
    return p.replace(b_x=rng.uniform(-1, 1, p.b_x.shape), b_h=rng.uniform(-1, 1, p.b_h.shape))


def _x(seed=1, T=6, B=3, D=3):
    return np.random.default_rng(seed).standard_normal((T, B, D))


def _sig(v):
    return 1 / (1 + np.exp(-v))


def flax_gru_equations(tree, x):
    """flax.linen.GRUCell.__call__, transcribed: r, z from ir/iz (biased) + hr/hz (unbiased); n = tanh(in(x) + r * hn(h));
    h' = (1 - z) * n + z * h."""
    def dense(name, v):
        d = tree[name]
        return v @ d["kernel"] + d.get("bias", 0.0)

    h, ys = np.zeros((x.shape[1], tree["hr"]["kernel"].shape[0])), []
    for t in range(x.shape[0]):
        r = _sig(dense("ir", x[t]) + dense("hr", h))
        z = _sig(dense("iz", x[t]) + dense("hz", h))
        n = np.tanh(dense("in", x[t]) + r * dense("hn", h))
        h = (1.0 - z) * n + z * h
        ys.append(h)
    return np.stack(ys)


def flax_lstm_equations(tree, x):
    """flax.linen.LSTMCell.__call__, transcribed: gates i, f, g, o from i* (unbiased) + h* (biased); carry (c, h)."""
    def gate(g, v, h):
        return v @ tree["i" + g]["kernel"] + h @ tree["h" + g]["kernel"] + tree["h" + g]["bias"]

    H = tree["hi"]["kernel"].shape[0]
    c, h, ys = np.zeros((x.shape[1], H)), np.zeros((x.shape[1], H)), []
    for t in range(x.shape[0]):
        i, f, o = (_sig(gate(g, x[t], h)) for g in "ifo")
        g = np.tanh(gate("g", x[t], h))
        c = f * c + i * g
        h = o * np.tanh(c)
        ys.append(h)
    return np.stack(ys), (c, h)


def test_gru_matches_the_flax_equations():
    p, x = _biased(gru), _x()
    y, _, _ = stack.forward([p], x)
    np.testing.assert_allclose(flax_gru_equations(to_flax(p), x), y, rtol=0, atol=1e-13)


def test_lstm_matches_the_flax_equations_and_carry_order():
    p, x = _biased(lstm), _x()
    y, ((h_T, c_T),), _ = stack.forward([p], x)
    fy, carry = flax_lstm_equations(to_flax(p), x)
    np.testing.assert_allclose(fy, y, rtol=0, atol=1e-13)
    c, h = state_to_flax(p, (h_T, c_T))  # Flax's carry is (c, h)
    np.testing.assert_allclose(carry[0], c, rtol=0, atol=1e-13)
    assert state_from_flax(p, (c, h))[0] is h


def test_tree_names_and_which_dense_layers_have_biases():
    assert {k: set(v) for k, v in to_flax(_biased(gru)).items()} == {
        "ir": {"kernel", "bias"}, "iz": {"kernel", "bias"}, "in": {"kernel", "bias"},
        "hr": {"kernel"}, "hz": {"kernel"}, "hn": {"kernel", "bias"},
    }
    t = to_flax(_biased(lstm))
    assert all(set(t["i" + g]) == {"kernel"} and set(t["h" + g]) == {"kernel", "bias"} for g in "ifgo")
    assert t["ii"]["kernel"].shape == (3, 4) and t["hi"]["kernel"].shape == (4, 4)
    assert {k: set(v) for k, v in to_flax(_biased(rnn)).items()} == {"i": {"kernel", "bias"}, "h": {"kernel"}}


@pytest.mark.parametrize("mod, opts", [(gru, {}), (lstm, {}), (rnn, {"activation": "relu"})], ids=["gru", "lstm", "rnn"])
def test_round_trip_keeps_the_function_and_folds_only_summed_biases(mod, opts):
    p, x = _biased(mod, **opts), _x()
    back = from_flax({"params": {"cell": to_flax(p)}}, **opts)
    np.testing.assert_array_equal(back.W_x, p.W_x)
    np.testing.assert_array_equal(back.W_h, p.W_h)
    np.testing.assert_allclose(stack.forward([back], x)[0], stack.forward([p], x)[0], rtol=0, atol=1e-14)
    if mod is gru:  # n keeps both biases (b_hn sits inside the reset product); r and z are folded into b_i*
        H = 4
        np.testing.assert_array_equal(back.b_h[2 * H :], p.b_h[2 * H :])
        np.testing.assert_array_equal(back.b_x[2 * H :], p.b_x[2 * H :])
        np.testing.assert_array_equal(back.b_x[: 2 * H], p.b_x[: 2 * H] + p.b_h[: 2 * H])
        assert not np.any(back.b_h[: 2 * H])
    np.testing.assert_array_equal(to_flax(back)[next(iter(to_flax(p)))]["kernel"], to_flax(p)[next(iter(to_flax(p)))]["kernel"])


def test_gradients_of_a_folded_bias_are_exact_both_ways():
    p, x = _biased(gru), _x()
    y, sT, cache = stack.forward([p], x)
    g, _, _ = stack.backward([p], cache, np.random.default_rng(2).standard_normal(y.shape))
    g = g[0]
    tree = to_flax(g, gradient=True)
    H = 4
    np.testing.assert_array_equal(tree["ir"]["bias"], g.b_x[:H])  # not b_x + b_h: the gradient of a sum is each's
    np.testing.assert_array_equal(tree["hn"]["bias"], g.b_h[2 * H :])
    split = from_flax(tree, gradient=True)
    for name in ("W_x", "W_h", "b_x", "b_h"):
        np.testing.assert_array_equal(getattr(split, name), getattr(g, name))
    with pytest.raises(ValueError, match="gate r.*db_x and db_h differ"):
        to_flax(g.replace(b_h=g.b_h + 1.0), gradient=True)


def test_bidirectional_tree():
    p = bi.init(lstm, 3, 4, rng=0)
    t = to_flax(p)
    assert set(t) == {"forward_rnn", "backward_rnn"} and set(t["backward_rnn"]) == {"cell"}
    back = from_flax({"params": t})
    np.testing.assert_array_equal(back.rev.W_h, p.rev.W_h)
    assert state_to_flax(p, ((1, 2), (3, 4))) == ((2, 1), (4, 3))


def test_what_flax_cannot_hold_is_refused():
    with pytest.raises(ValueError, match="reset='before'.*no exact conversion"):
        to_flax(gru.init(3, 4, reset="before", rng=0))
    with pytest.raises(ValueError, match="no peepholes and no projection"):
        to_flax(lstm.init(3, 4, proj_size=2, rng=0))
    with pytest.raises(TypeError, match="params: expected GRUParams"):
        to_flax({"W": np.zeros(3)})


def test_trees_are_read_strictly():
    t = to_flax(_biased(gru))
    with pytest.raises(ValueError, match=r"not a GRUCell.*closest is the GRUCell.*missing \['hn'\]"):
        from_flax({k: v for k, v in t.items() if k != "hn"})
    with pytest.raises(ValueError, match=r"\['hr'\]: expected the keys \['kernel'\] \(Flax's hr has no bias\)"):
        from_flax({**t, "hr": {**t["hr"], "bias": np.zeros(4)}})
    with pytest.raises(ValueError, match=r"\['ir'\]\['bias'\]: expected shape \(4,\)"):
        from_flax({**t, "ir": {**t["ir"], "bias": np.zeros(5)}})
    with pytest.raises(TypeError, match=r"\['iz'\]\['kernel'\]: dtype float32 does not match"):
        from_flax({**t, "iz": {**t["iz"], "kernel": t["iz"]["kernel"].astype(np.float32)}})
    with pytest.raises(ValueError, match="exactly forward_rnn and backward_rnn"):
        from_flax({"forward_rnn": {"cell": t}})
    with pytest.raises(ValueError, match="activation: only a SimpleCell"):
        from_flax(t, activation="relu")
    with pytest.raises(ValueError, match="activation: refrnn's RNN implements"):
        from_flax(to_flax(_biased(rnn)), activation="gelu")
    with pytest.raises(TypeError, match="tree: expected a mapping"):
        from_flax([t])


# --- against flax.linen itself ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def flax_linen():
    pytest.importorskip("jax")
    return pytest.importorskip("flax.linen")


@pytest.mark.parametrize("cell", ["GRUCell", "LSTMCell", "OptimizedLSTMCell", "SimpleCell"])
def test_matches_flax_float64_and_reads_its_own_init_back(flax_linen, cell):
    import jax

    nn = flax_linen
    mod = {"GRUCell": gru, "SimpleCell": rnn}.get(cell, lstm)
    p, x = _biased(mod), _x()
    with jax.enable_x64(True):  # scoped: the process's setting is untouched
        module = nn.RNN(getattr(nn, cell)(4, param_dtype=np.float64), time_major=True, return_carry=True)
        carry, fy = module.apply({"params": {"cell": to_flax(p)}}, x)
        variables = module.init(jax.random.key(0), x)
        _, fy2 = module.apply(variables, x)
    assert not jax.config.jax_enable_x64
    y, sT, _ = stack.forward([p], x)
    np.testing.assert_allclose(np.asarray(fy), y, rtol=0, atol=1e-13)
    back = from_flax(jax.device_get(variables))
    np.testing.assert_allclose(stack.forward([back], x)[0], np.asarray(fy2), rtol=0, atol=1e-13)
