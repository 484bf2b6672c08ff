"""Bad input raises ValueError/TypeError naming the argument, the shape received and the shape expected."""

import numpy as np
import pytest

from refrnn import GRUParams, LSTMParams, gradcheck, gru, lstm

P = gru.init(3, 4, rng=0)
L = lstm.init(3, 4, rng=0)
X = np.zeros((5, 2, 3))


@pytest.mark.parametrize(
    "x, h0, error, pattern",
    [
        (np.zeros((5, 3)), None, ValueError, r"x: expected a 3-d array of shape \(T, B, D\) with D=3, got shape \(5, 3\)"),
        (np.zeros((5, 2, 4)), None, ValueError, r"x: expected shape \(T, B, D\) with D=3.*got shape \(5, 2, 4\)"),
        (X, np.zeros((2, 5)), ValueError, r"state0: expected shape \(B, H\) with .*H=4.*got shape \(2, 5\)"),
        (X, np.zeros((3, 4)), ValueError, r"state0: .*got shape \(3, 4\) \(B=3, expected 2\)"),
        (X, np.zeros((1, 2, 4)), ValueError, r"state0: expected a 2-d array"),
        (X.astype(np.float32), None, TypeError, r"x: dtype float32 does not match the parameters' dtype float64"),
        (X, np.zeros((2, 4), np.float32), TypeError, r"state0: dtype float32 does not match"),
        (X.astype(np.int64), None, TypeError, r"x: expected a float32 or float64 array, got dtype int64"),
        (np.full((5, 2, 3), np.nan), None, ValueError, r"x: contains NaN or infinity"),
        (X, np.full((2, 4), np.inf), ValueError, r"state0: contains NaN or infinity"),
    ],
)
def test_gru_forward_inputs(x, h0, error, pattern):
    with pytest.raises(error, match=pattern):
        gru.forward(P, x, h0)


def test_lstm_state_shapes_are_checked_per_component():
    with pytest.raises(ValueError, match=r"state0\[1\] \(c\): expected shape \(B, H\)"):
        lstm.forward(L, X, (np.zeros((2, 4)), np.zeros((2, 3))))


def test_backward_checks_upstream_gradients():
    y, h_T, cache = gru.forward(P, X)
    with pytest.raises(ValueError, match=r"dy: expected shape \(T, B, H\) with T=5, B=2, H=4, got shape \(5, 2, 3\)"):
        gru.backward(P, cache, np.zeros((5, 2, 3)))
    with pytest.raises(ValueError, match=r"dstate_T: expected a 2-d array of shape \(B, H\) with B=2, H=4, got shape \(2,\)"):
        gru.backward(P, cache, np.zeros_like(y), np.zeros((2,)))
    with pytest.raises(TypeError, match="dy: dtype float32"):
        gru.backward(P, cache, np.zeros(y.shape, np.float32))
    _, _, lcache = lstm.forward(L, X)
    with pytest.raises(ValueError, match=r"dy: contains NaN"):
        lstm.backward(L, lcache, np.full((5, 2, 4), np.nan))


def test_unknown_convention_name():
    with pytest.raises(ValueError, match=r"reset: unknown value 'middle'; expected one of 'after', 'before'"):
        P.replace(reset="middle")
    with pytest.raises(ValueError, match="reset: unknown value"):
        gru.init(3, 4, reset="Before")


@pytest.mark.parametrize(
    "field, value, error, pattern",
    [
        ("W_h", np.zeros((12, 5)), ValueError, r"GRUParams.W_h: expected shape \(3H, H\), got \(12, 5\)"),
        ("W_x", np.zeros((11, 3)), ValueError, r"GRUParams.W_x: expected shape \(3H, D\) with 3H=12.*got shape \(11, 3\)"),
        ("b_h", np.zeros((12, 1)), ValueError, r"GRUParams.b_h: expected a 1-d array of shape \(3H,\) with 3H=12"),
        ("b_x", np.zeros(12, np.float32), TypeError, r"GRUParams: all arrays must share one dtype"),
        ("W_x", np.zeros((12, 3), np.int32), TypeError, r"GRUParams.W_x: expected float32 or float64"),
        ("W_h", np.full((12, 4), np.nan), ValueError, r"GRUParams.W_h: contains NaN"),
    ],
)
def test_gru_params(field, value, error, pattern):
    with pytest.raises(error, match=pattern):
        P.replace(**{field: value})


def test_lstm_params_shape():
    with pytest.raises(ValueError, match=r"LSTMParams.W_h: expected shape \(4H, H\), got \(12, 4\)"):
        LSTMParams(np.zeros((16, 3)), np.zeros((12, 4)), np.zeros(16), np.zeros(16))


def test_gradcheck_refuses_float32():
    with pytest.raises(TypeError, match="gradcheck needs float64"):
        gradcheck(P.astype(np.float32), X.astype(np.float32))


def test_params_container_type_is_checked():
    from refrnn.layers import stack

    with pytest.raises(TypeError, match=r"params: expected one of GRUParams, LSTMParams.*got dict"):
        stack.forward([{"W_x": 1}], X)
    assert isinstance(P, GRUParams)


# ----------------------------------------------------------------------------------------------------
# Issue 16 ("Nothing silent"): one test per defect class; properties/test_bad_input.py draws the rest.

from refrnn.layers import bidirectional as bi  # noqa: E402
from refrnn import ccgru, sru  # noqa: E402
from refrnn.layers import lengths, mlp, stack
from refrnn.layouts import keras as keras_layout  # noqa: E402
from refrnn.layouts import torch as torch_layout  # noqa: E402


def test_parameters_own_read_only_copies():
    W_x, W_h, b_x, b_h = (np.array(a) for a in (P.W_x, P.W_h, P.b_x, P.b_h))
    p = GRUParams(W_x, W_h, b_x, b_h)
    W_x[0, 0] = np.nan  # the caller's later edit of their own array
    assert np.isfinite(p.W_x[0, 0])
    with pytest.raises(ValueError, match="read-only"):
        p.W_x[0, 0] = np.nan
    with pytest.raises(ValueError):  # and the flag cannot simply be turned back on
        p.W_x.setflags(write=True)
    for q in (p.replace(b_x=np.zeros(12)), p.map(lambda a: a + 0.0), p.astype(np.float32)):
        assert not any(a.flags.writeable for a in q.arrays().values())


def test_constructing_from_read_only_arrays_does_not_copy():
    q = P.replace(reset="before")  # unchanged arrays are shared: nobody can write them
    assert all(np.shares_memory(a, b) for a, b in zip(P.arrays().values(), q.arrays().values()))


@pytest.mark.parametrize("cell", [gru, lstm, sru])
def test_cache_does_not_alias_x(cell):
    p = cell.init(3, 4, rng=0)
    x = np.random.default_rng(1).standard_normal((5, 2, 3))
    y, _, cache = cell.forward(p, x)
    dy = np.ones_like(y)
    g1 = cell.backward(p, cache, dy)[0]
    x[...] = 0.0  # a training loop refills its input buffer before backward
    g2 = cell.backward(p, cache, dy)[0]
    for name in g1.array_names():
        np.testing.assert_array_equal(getattr(g1, name), getattr(g2, name))
    assert not cache.x.flags.writeable


@pytest.mark.parametrize(
    "make, error, pattern",
    [
        (lambda: None, TypeError, r"cache: expected the GRUCache that forward returned for these GRUParams, got NoneType"),
        (lambda: tuple(gru.forward(P, X)[2])[:5], TypeError, r"cache: expected the GRUCache.*got tuple"),
        (lambda: lstm.forward(L, X)[2], TypeError, r"cache: expected the GRUCache.*got LSTMCache"),
        (lambda: gru.forward(gru.init(4, 4), np.zeros((5, 2, 4)))[2], ValueError, r"cache.x: expected shape \(T, B, D\).*D=3"),
        (lambda: gru.forward(gru.init(3, 5), X)[2], ValueError, r"cache.h: expected shape \(T\+1, B, H\).*H=4"),
        (lambda: gru.forward(P.astype(np.float32), X.astype(np.float32))[2], TypeError, r"cache.x: dtype float32"),
    ],
)
def test_backward_checks_the_cache(make, error, pattern):
    with pytest.raises(error, match=pattern):
        gru.backward(P, make(), np.zeros((5, 2, 4)))


def test_stack_backward_refuses_another_stacks_cache():
    layers = (gru.init(3, 4, rng=0), gru.init(4, 4, rng=1))
    _, _, other = stack.forward(layers[:1], X)
    with pytest.raises(ValueError, match=r"cache: expected the StackCache that forward returned for these 2 layers"):
        stack.backward(layers, other, np.zeros((5, 2, 4)))


def test_stack_checks_x_in_the_callers_layout():
    with pytest.raises(ValueError, match=r"x: expected shape \(B, T, D\).*got shape \(2, 5, 4\)"):
        stack.forward((P,), np.zeros((2, 5, 4)), batch_first=True)
    with pytest.raises(TypeError, match="batch_first: expected True or False, got 'yes'"):
        stack.forward((P,), X, batch_first="yes")


def test_bidirectional_dy_is_checked_as_the_whole_layer():
    layer = bi.init(gru, 3, 4, rng=0)
    _, _, cache = bi.forward(layer, X)
    with pytest.raises(ValueError, match=r"dy: expected shape \(T, B, O\) with T=5, B=2, O=8, got shape \(5, 2, 4\)"):
        bi.backward(layer, cache, np.zeros((5, 2, 4)))


def test_lengths_check_the_states_of_length_zero_samples():
    s0 = np.zeros((2, 4))
    s0[1, 0] = np.nan
    with pytest.raises(ValueError, match="state0: contains NaN"):
        lengths.forward(P, X, s0, np.array([5, 0]))
    y, _, cache = lengths.forward(P, X, None, np.array([5, 0]))
    with pytest.raises(ValueError, match="dstate_T: contains NaN"):
        lengths.backward(P, cache, np.zeros_like(y), s0)


@pytest.mark.parametrize("call, pattern", [
    (lambda: gru.init(3, 0), "hidden_size: expected a positive integer, got 0"),
    (lambda: lstm.init(-1, 4), "input_size: expected a positive integer, got -1"),
    (lambda: sru.init(3, 2.5), "hidden_size: expected a positive integer, got 2.5"),
    (lambda: gru.zero_state(P, -1), "batch: expected a non-negative integer, got -1"),
    (lambda: mlp.init(None), "sizes: expected a sequence"),
])
def test_sizes(call, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        call()


@pytest.mark.parametrize("params", [None, {"W_x": 1}, L])
def test_forward_names_params(params):
    with pytest.raises(TypeError, match=r"params: expected GRUParams, got"):
        gru.forward(params, X)


def test_ragged_x_is_named():
    with pytest.raises(ValueError, match="x: cannot be read as an array"):
        gru.forward(P, [[[0.0, 0.0, 0.0]], [[0.0]]])


@pytest.mark.parametrize("kw, pattern", [
    ({"eps": 0.0}, "eps: expected a finite positive number"),
    ({"eps": float("nan")}, "eps: expected a finite positive number"),
    ({"tol": -1e-6}, "tol: expected a non-negative number"),
    ({"atol": float("nan")}, "atol: expected a non-negative number"),
])
def test_gradcheck_settings(kw, pattern):
    with pytest.raises(ValueError, match=pattern):
        gradcheck(P, X, **kw)


def test_huge_finite_x_is_refused_not_zeroed():
    p = ccgru.init(3, 4, rng=0)  # training mode: batch statistics
    x = np.full((2, 2, 3), 1e154)
    x[:, 1] = -1e154  # finite products, but their batch variance overflows
    with pytest.raises(ValueError, match="x: the batch variance of the update gate's pre-activation overflowed"):
        ccgru.forward(p, x)
    with pytest.raises(ValueError, match="x: the input projection .* overflowed"):
        ccgru.forward(p.replace(W_rh=p.W_rh * 0 + 1.0), np.full((2, 2, 3), 1e308))


def test_gradient_overflow_names_dy():
    y, _, cache = gru.forward(P, np.random.default_rng(0).standard_normal((5, 2, 3)))
    with pytest.raises(ValueError, match="dy: the gradient W_x overflowed"), np.errstate(all="ignore"):
        gru.backward(P, cache, np.full(y.shape, 1e308))


def _torch_gru_dict(bidirectional=False):
    sd = torch_layout.to_torch((P,), "GRU")
    if bidirectional:
        sd.update({k + "_reverse": v for k, v in sd.items()})
    return sd


@pytest.mark.parametrize("edit, pattern", [
    (lambda sd: sd.pop("bias_hh_l0"), r"bias_ih_l0 is present but bias_hh_l0 is missing"),
    (lambda sd: sd.pop("bias_ih_l0_reverse"), r"bias_hh_l0_reverse is present but bias_ih_l0_reverse is missing"),
    (lambda sd: sd.__setitem__("weight_ih_l01", sd.pop("weight_ih_l0")), r"unexpected key 'weight_ih_l01'"),
    (lambda sd: sd.__setitem__("bias_hh_l0", None), r"state_dict\['bias_hh_l0'\]: expected a floating-point array"),
])
def test_from_torch_is_strict(edit, pattern):
    sd = _torch_gru_dict(bidirectional=True)
    edit(sd)
    with pytest.raises((ValueError, TypeError), match=pattern):
        torch_layout.from_torch(sd, "GRU", bidirectional=True)


def test_from_torch_keeps_bias_free_modules_and_refuses_non_mappings():
    sd = {k: v for k, v in _torch_gru_dict().items() if k.startswith("weight")}
    (q,) = torch_layout.from_torch(sd, "GRU")
    assert not q.b_x.any() and not q.b_h.any()
    with pytest.raises(TypeError, match="state_dict: expected a mapping"):
        torch_layout.from_torch(list(sd.items()), "GRU")
    with pytest.raises(ValueError, match="state_dict: empty"):
        torch_layout.from_torch({}, "GRU")


def test_state_to_torch_refuses_single_states_for_bidirectional_layers():
    layers = torch_layout.from_torch(_torch_gru_dict(bidirectional=True), "GRU", bidirectional=True)
    with pytest.raises(TypeError, match=r"states\[0\]: a bidirectional layer's state is the pair"):
        torch_layout.state_to_torch(layers, (np.zeros((2, 4)),))
    with pytest.raises(TypeError, match="states: expected a sequence"):
        torch_layout.state_to_torch(layers, None)


def test_from_keras_needs_the_recurrent_kernel():
    w = keras_layout.to_keras(P)
    with pytest.raises(ValueError, match="weights: missing recurrent_kernel"):
        keras_layout.from_keras({"kernel": w[0], "bias": w[2]}, "GRU")


def test_reproduce_resume_names_an_unreadable_or_foreign_checkpoint(tmp_path, capsys):
    from refrnn.reproduce import cli, train

    args = ["--smoke", "--resume", "--kinds", "gru", "--out", str(tmp_path), "--quiet"]
    path = tmp_path / "checkpoints" / "gru.npz"
    path.parent.mkdir()
    path.write_bytes(b"PK\x03\x04 truncated")
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "truncated or corrupt" in err
    (config,) = cli.grid(cli._settings(cli._parser().parse_args(args)))
    other = type(config)(**{**config.__dict__, "seed": config.seed + 1})
    train.save_checkpoint(str(path), other, train.fresh_state(other))
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "another configuration" in err


def test_stack_init_needs_a_layer():
    with pytest.raises(ValueError, match="num_layers: expected a positive integer, got 0"):
        stack.init(gru, 3, 4, num_layers=0)


def test_pickled_and_copied_parameters_stay_read_only():
    import copy
    import pickle

    for q in (pickle.loads(pickle.dumps(P)), copy.deepcopy(P)):
        assert not any(a.flags.writeable for a in q.arrays().values())
        np.testing.assert_array_equal(q.W_x, P.W_x)


def test_a_recurrence_that_overflows_names_the_state():
    W_h = np.concatenate([-np.ones((4, 4)), np.zeros((4, 4)), np.ones((4, 4))])  # rows r, z, n
    p = P.replace(W_h=W_h)
    h0 = np.full((2, 4), 1.7e308)  # finite, but W_hr h0 = -inf and W_hn h0 = +inf: r * (W_hn h0) = 0 * inf
    with pytest.raises(ValueError, match=r"state0: the recurrence \(x, h_0 -> h_T\) overflowed"), np.errstate(all="ignore"):
        gru.forward(p, X, h0)
