"""Bad input is refused by name, and nothing goes quietly wrong.

Hypothesis draws malformed arguments for every public entry point of the reference (cells' ``init``,
``forward``, ``backward``, ``zero_state``; ``stack``, ``bidirectional``, ``lengths``, ``mlp``, ``deep``,
``wavefront``, ``gradcheck``; the layout converters): wrong ranks, shapes, dtypes and containers,
NaN/inf, mismatched caches, malformed keys, zero and negative sizes. The outcome must be either

* a ``ValueError``/``TypeError`` whose message names the argument (``x``, ``cache``, ``state_dict``...),
* or, where the input is unusual but valid (T = 0, B = 0, an input edited after ``forward``), the
  correct result, checked against an independent computation.

Never another exception type (AttributeError, IndexError, ZeroDivisionError, a raw NumPy broadcast
error), never a silent wrong answer. Each test is one family of misuse, so a run reports every
family that fails, not only the first. The ``ci`` profile (properties/conftest.py) keeps the whole
file to a few seconds; ``HYPOTHESIS_PROFILE=thorough`` draws 2,000 cases per test.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refrnn.layers import bidirectional as bi
from refrnn import ccgru, gradcheck, gru, lstm, sru
from refrnn.layers import deep, lengths, mlp, stack, wavefront
from refrnn.cells import GRUParams, LSTMParams, SRUParams, module_for
from refrnn.layouts import keras as keras_layout
from refrnn.layouts import onnx as onnx_layout
from refrnn.layouts import torch as torch_layout

# A modest number of cases per family: fast in CI (these calls are microseconds) but enough to
# reach every branch of the strategies below.
FAST = settings(max_examples=60) if settings().max_examples < 60 else settings()

CELLS = {
    "gru": lambda D, H, rng: gru.init(D, H, rng=rng),
    "gru-before": lambda D, H, rng: gru.init(D, H, reset="before", rng=rng),
    "lstm": lambda D, H, rng: lstm.init(D, H, rng=rng),
    "lstm-peep": lambda D, H, rng: lstm.init(D, H, peepholes=True, rng=rng),
    "lstmp": lambda D, H, rng: lstm.init(D, H, proj_size=max(1, H - 1), rng=rng),
    "sru": lambda D, H, rng: sru.init(D, H, rng=rng),
    "ccgru": lambda D, H, rng: ccgru.init(D, H, mode="inference", rng=rng),
    "ccgru-block": lambda D, H, rng: ccgru.init(D, H, variant="block", g=1, mode="inference", rng=rng),
}
CELL_MODULES = (gru, lstm, sru, ccgru)


def _names(message: str, name: str) -> bool:
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", message) is not None


def refused(fn, *names):
    """Call ``fn``; a ValueError/TypeError must name one of ``names``. Returns the result, or None if refused.
    Any other exception propagates (and fails the property)."""
    try:
        return fn()
    except (ValueError, TypeError) as err:
        assert any(_names(str(err), n) for n in names), f"{type(err).__name__} does not name {names}: {err}"
        return None


def must_refuse(fn, *names):
    result = refused(fn, *names)
    assert result is None, f"silently accepted {_LAST[0]} (expected an error naming {names}); got {type(result).__name__}"


_LAST = [""]  # the last malformation drawn, for messages


def _state_like(params, B, rng, scale=1.0):
    zero = module_for(params).zero_state(params, B)
    return lengths.tree_map(lambda a: scale * rng.standard_normal(a.shape).astype(a.dtype), zero)


def _leaves(tree):
    if isinstance(tree, (tuple, list)):
        return [leaf for item in tree for leaf in _leaves(item)]
    return [tree]


def _grads_equal(a, b):
    ga, gb = a.arrays(), b.arrays()
    assert ga.keys() == gb.keys()
    for k in ga:
        np.testing.assert_array_equal(ga[k], gb[k], err_msg=k)


def _cell(kind, D, H, seed=0):
    """Parameters of ``kind``, their cell module, and a seeded generator."""
    p = CELLS[kind](D, H, 0)
    return p, module_for(p), np.random.default_rng(seed)


def assert_backward_ignores_edits(backward, x, dy):
    """``backward(dy)`` gives the same gradients before and after the caller overwrites ``x`` in place
    (a training loop refilling its input buffer): the cache must not alias it."""
    first = backward(dy)
    x[...] = np.random.default_rng(99).standard_normal(x.shape)
    second = backward(dy)
    grads = [first[0]] if hasattr(first[0], "arrays") else list(first[0])
    for a, b in zip(grads, [second[0]] if hasattr(second[0], "arrays") else list(second[0])):
        _grads_equal(a, b)
    np.testing.assert_array_equal(first[1], second[1])


@st.composite
def sizes(draw):
    return draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(2, 3))


@st.composite
def malformed(draw, shape, dtype=np.float64, free=()):
    """A malformed version of an argument of ``shape``: (value, description). ``free`` lists the axes whose
    size the callee reads from the argument itself (T and B of ``x``): changing those is not malformed."""
    kind = draw(
        st.sampled_from(
            ["rank+", "rank-", "size", "int", "float32", "nan", "inf", "ragged", "string", "none", "object", "complex"]
        )
    )
    good = np.zeros(shape, dtype)
    _LAST[0] = f"{kind} for shape {shape}"
    if kind == "rank+":
        return good[..., None], kind
    if kind == "rank-":
        return good.reshape(-1) if good.ndim > 1 else good[0] if good.size else np.float64(0.0), kind
    if kind == "size":
        bound = [a for a in range(len(shape)) if a not in free]
        if not bound:
            return good.astype(np.int64), "int"
        axis = draw(st.sampled_from(bound))
        bad = list(shape)
        bad[axis] += draw(st.sampled_from([1, 2]))
        return np.zeros(bad, dtype), kind
    if kind == "int":
        return good.astype(np.int64), kind
    if kind == "float32":
        return good.astype(np.float32 if dtype == np.float64 else np.float64), kind
    if kind == "complex":
        return good.astype(np.complex128), kind
    if kind in ("nan", "inf"):
        bad = good.copy()
        if bad.size == 0:
            return bad[..., None], "rank+"
        bad.flat[draw(st.integers(0, bad.size - 1))] = np.nan if kind == "nan" else -np.inf
        return bad, kind
    if kind == "ragged":
        rows = good.tolist()
        if not isinstance(rows, list) or len(rows) == 0:
            return [[0.0], [0.0, 0.0]], kind
        return rows + [[0.0]], kind
    if kind == "string":
        return "x", kind
    if kind == "object":
        return {"values": good}, kind
    return None, kind


# ----------------------------------------------------------------------------------------------------
# Parameters


@FAST
@given(
    cell=st.sampled_from(CELL_MODULES),
    D=st.sampled_from([1, 3, 0, -1, 2.5, True, "3", None]),
    H=st.sampled_from([2, 0, -2, 1.5, False, "2", np.int64(2)]),
)
def test_init_sizes(cell, D, H):
    ok = lambda n: isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1  # noqa: E731
    kw = {"mode": "inference"} if cell is ccgru else {}
    result = refused(lambda: cell.init(D, H, rng=0, **kw), "input_size", "hidden_size")
    if ok(D) and ok(H):
        assert result is not None and result.input_size == D and result.hidden_size == H
    else:
        assert result is None, f"{cell.__name__}.init({D!r}, {H!r}) accepted"


@FAST
@given(kind=st.sampled_from(sorted(CELLS)), data=st.data())
def test_parameters_own_read_only_copies(kind, data):
    p0 = CELLS[kind](2, 3, 0)
    arrays = {k: np.array(v) for k, v in p0.arrays().items()}
    p = p0.replace(**arrays)  # built from the caller's own, writable arrays
    name = data.draw(st.sampled_from(sorted(arrays)))
    x = np.random.default_rng(1).standard_normal((2, 2, 2))
    y_before = module_for(p).forward(p, x)[0].copy()
    arrays[name][...] = np.nan  # the caller edits their array afterwards
    assert np.all(np.isfinite(getattr(p, name))), f"{kind}.{name} follows the caller's array"
    with pytest.raises(ValueError):  # and nobody can edit the container's in place
        getattr(p, name).flat[0] = np.nan
    np.testing.assert_array_equal(module_for(p).forward(p, x)[0], y_before)
    # map/astype/replace keep the rule
    q = data.draw(st.sampled_from(["map", "astype", "replace"]))
    derived = {"map": lambda: p.map(lambda a: a * 1.0), "astype": lambda: p.astype(np.float32),
               "replace": lambda: p.replace(**{name: np.zeros_like(arrays[name])})}[q]()
    assert not getattr(derived, name).flags.writeable


@FAST
@given(kind=st.sampled_from(sorted(CELLS)), data=st.data())
def test_parameter_arrays_are_checked(kind, data):
    p = CELLS[kind](2, 3, 0)
    name = data.draw(st.sampled_from(sorted(p.arrays())))
    # an input weight's second axis is D itself (free), and an optional array may be None (absent)
    free = (1,) if name in ("W_x", "W") else ()
    bad, what = data.draw(malformed(getattr(p, name).shape, free=free))
    if what == "none" and name in ("w_ic", "w_fc", "w_oc", "W_hr", "v"):
        return
    must_refuse(lambda: p.replace(**{name: bad}), name, type(p).__name__)


# ----------------------------------------------------------------------------------------------------
# Cells: forward, backward, zero_state


@FAST
@given(kind=st.sampled_from(sorted(CELLS)), sz=sizes(), data=st.data())
def test_cell_forward_bad_x_and_state(kind, sz, data):
    T, B, D, H = sz
    p, mod, rng = _cell(kind, D, H)
    x = rng.standard_normal((T, B, D))
    which = data.draw(st.sampled_from(["x", "state", "params"]))
    if which == "x":
        bad, _ = data.draw(malformed(x.shape, free=(0, 1)))
        must_refuse(lambda: mod.forward(p, bad), "x")
    elif which == "state":
        s0 = _state_like(p, B, rng)
        leaves = _leaves(s0)
        k = data.draw(st.integers(0, len(leaves) - 1))
        bad, _ = data.draw(malformed(leaves[k].shape))
        if bad is None and len(leaves) == 1:
            return  # None is "zeros", a valid state
        s_bad = bad if len(leaves) == 1 else tuple(bad if j == k else a for j, a in enumerate(leaves))
        must_refuse(lambda: mod.forward(p, x, s_bad), "state0", "h0", "c0")
    else:
        other = data.draw(st.sampled_from([None, {}, p.arrays(), "gru", 3] + [f(D, H, 0) for f in CELLS.values()]))
        if type(other) in (GRUParams, LSTMParams, SRUParams) + ccgru.PARAM_CLASSES and module_for(other) is mod:
            return  # the same cell (a ccgru module takes every ccgru variant)
        must_refuse(lambda: mod.forward(other, x), "params")


@FAST
@given(kind=st.sampled_from(sorted(CELLS)), other=st.sampled_from(sorted(CELLS)), sz=sizes(), data=st.data())
def test_cell_backward_refuses_foreign_caches(kind, other, sz, data):
    T, B, D, H = sz
    p, mod, rng = _cell(kind, D, H)
    x = rng.standard_normal((T, B, D))
    y, _, cache = mod.forward(p, x)
    dy = rng.standard_normal(y.shape)
    how = data.draw(st.sampled_from(["none", "tuple", "truncated", "other-cell", "other-D", "other-H", "float32"]))
    if how == "none":
        bad = None
    elif how == "tuple":
        bad = tuple(cache)
    elif how == "truncated":
        bad = cache[:-1]
    elif how == "float32":
        p32 = p.astype(np.float32)
        bad = mod.forward(p32, x.astype(np.float32))[2]
    else:
        dD, dH = (1, 0) if how == "other-D" else (0, 1)
        q = CELLS[other if how == "other-cell" else kind](D + dD, H + dH, 1)
        if type(q) is type(p) and how == "other-cell":
            q = CELLS[kind](D + 1, H, 1)
        bad = module_for(q).forward(q, rng.standard_normal((T, B, q.input_size)))[2]
    must_refuse(lambda: mod.backward(p, bad, dy), "cache")


@FAST
@given(kind=st.sampled_from(sorted(CELLS)), sz=sizes(), data=st.data())
def test_cell_backward_bad_upstream(kind, sz, data):
    T, B, D, H = sz
    p, mod, rng = _cell(kind, D, H)
    y, s_T, cache = mod.forward(p, rng.standard_normal((T, B, D)))
    if data.draw(st.booleans()):
        bad, _ = data.draw(malformed(y.shape))
        if bad is None:
            return  # dy=None is not a default: some cells reject it by name, checked below
        must_refuse(lambda: mod.backward(p, cache, bad), "dy")
    else:
        leaves = _leaves(s_T)
        k = data.draw(st.integers(0, len(leaves) - 1))
        bad, _ = data.draw(malformed(leaves[k].shape))
        if bad is None and len(leaves) == 1:
            return
        ds = bad if len(leaves) == 1 else tuple(bad if j == k else a for j, a in enumerate(leaves))
        must_refuse(lambda: mod.backward(p, cache, np.zeros_like(y), ds), "dstate_T", "dh_T", "dc_T")


@FAST
@given(kind=st.sampled_from(sorted(CELLS)), sz=sizes(), seed=st.integers(0, 3))
def test_caches_do_not_alias_the_callers_input(kind, sz, seed):
    T, B, D, H = sz
    p = CELLS[kind](D, H, 0)
    mod = module_for(p)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, B, D))
    y, _, cache = mod.forward(p, x)
    assert_backward_ignores_edits(lambda dy: mod.backward(p, cache, dy), x, rng.standard_normal(y.shape))


@FAST
@given(kind=st.sampled_from(sorted(CELLS)), T=st.integers(0, 2), B=st.integers(0, 2))
def test_zero_sizes_give_empty_results(kind, T, B):
    p = CELLS[kind](2, 3, 0)
    mod = module_for(p)
    x = np.zeros((T, B, 2))
    if kind.startswith("ccgru") and B < 2 and p.mode == "train":
        return
    y, s_T, cache = mod.forward(p, x)
    assert y.shape == (T, B, p.output_size)
    g, dx, ds0 = mod.backward(p, cache, np.zeros_like(y))
    assert dx.shape == x.shape
    assert all(np.all(a == 0) for a in g.arrays().values())
    must_refuse(lambda: mod.zero_state(p, -1), "batch")


@FAST
@given(kind=st.sampled_from(["ccgru", "ccgru-block", "ccgru-train", "gru", "lstm", "sru"]), scale=st.sampled_from([1e300, 1e308]))
def test_huge_finite_inputs_are_refused_or_finite(kind, scale):
    p = ccgru.init(2, 3, rng=0) if kind == "ccgru-train" else CELLS[kind](2, 3, 0)
    mod = module_for(p)
    x = np.full((2, 2, 2), scale)
    x[:, 1] = -scale
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = refused(lambda: mod.forward(p, x), "x")
    if out is not None:
        y, s_T, cache = out
        assert all(np.all(np.isfinite(a)) for a in cache if isinstance(a, np.ndarray)), "non-finite intermediates"


@FAST
@given(kind=st.sampled_from(sorted(CELLS)), scale=st.sampled_from([1e300, 1e308]))
def test_gradient_overflow_names_the_upstream_gradient(kind, scale):
    p = CELLS[kind](2, 3, 0)
    mod = module_for(p)
    y, _, cache = mod.forward(p, np.random.default_rng(0).standard_normal((3, 2, 2)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        out = refused(lambda: mod.backward(p, cache, np.full(y.shape, scale)), "dy")
    if out is not None:
        assert all(np.all(np.isfinite(a)) for a in out[0].arrays().values())


# ----------------------------------------------------------------------------------------------------
# Stacks, bidirectional layers, lengths


def _stack(kinds, D, H):
    out, d = [], D
    for k, kind in enumerate(kinds):
        out.append(CELLS[kind](d, H, k))
        d = out[-1].output_size
    return tuple(out)


@FAST
@given(
    kinds=st.lists(st.sampled_from(["gru", "lstm", "sru", "lstmp"]), min_size=1, max_size=3),
    sz=sizes(),
    batch_first=st.booleans(),
    data=st.data(),
)
def test_stack_bad_arguments(kinds, sz, batch_first, data):
    T, B, D, H = sz
    layers = _stack(kinds, D, H)
    rng = np.random.default_rng(0)
    shape = (B, T, D) if batch_first else (T, B, D)
    x = rng.standard_normal(shape)
    how = data.draw(st.sampled_from(["x", "batch_first", "cache", "dy", "state0", "layers"]))
    if how == "x":
        bad, what = data.draw(malformed(shape, free=(0, 1)))
        err = refused(lambda: stack.forward(layers, bad, batch_first=batch_first), "x")
        assert err is None
        if what == "size" and batch_first:  # the error quotes the caller's shape, not a transposed one
            try:
                stack.forward(layers, bad, batch_first=True)
            except ValueError as e:
                assert str(bad.shape) in str(e), str(e)
    elif how == "batch_first":
        flag = data.draw(st.sampled_from(["yes", 1, None, "False", np.array([True])]))
        must_refuse(lambda: stack.forward(layers, x, batch_first=flag), "batch_first")
    elif how == "cache":
        other = _stack(data.draw(st.sampled_from([kinds[:-1] or ["gru", "gru"], kinds + ["gru"], ["lstm"] * len(kinds)])), D, H + 1)
        _, _, c_other = stack.forward(other, x, batch_first=batch_first)
        y, _, _ = stack.forward(layers, x, batch_first=batch_first)
        bad = data.draw(st.sampled_from([c_other, None, (), c_other.layers]))
        must_refuse(lambda: stack.backward(layers, bad, np.zeros_like(y)), "cache")
    elif how == "dy":
        y, _, cache = stack.forward(layers, x, batch_first=batch_first)
        bad, _ = data.draw(malformed(y.shape))
        must_refuse(lambda: stack.backward(layers, cache, bad), "dy")
    elif how == "state0":
        bad = data.draw(st.sampled_from([(), "h", 0, [None] * (len(layers) + 1)]))
        must_refuse(lambda: stack.forward(layers, x, bad, batch_first=batch_first), "state0")
    else:
        bad = data.draw(st.sampled_from([None, [], "gru", [None], [{}], layers[0].arrays()]))
        must_refuse(lambda: stack.forward(bad, x, batch_first=batch_first), "layers")


@FAST
@given(kind=st.sampled_from(["gru", "lstm", "sru"]), sz=sizes(), data=st.data())
def test_bidirectional_bad_arguments(kind, sz, data):
    T, B, D, H = sz
    layer = bi.BiLayer(CELLS[kind](D, H, 0), CELLS[kind](D, H, 1))
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, D))
    y, s_T, cache = bi.forward(layer, x)
    how = data.draw(st.sampled_from(["dy", "cache", "x", "alias"]))
    if how == "dy":
        bad, what = data.draw(malformed(y.shape))
        if what == "size":
            try:
                bi.backward(layer, cache, bad)
            except ValueError as e:
                assert str(bad.shape) in str(e), f"the error should quote dy's shape {bad.shape}: {e}"
                assert _names(str(e), "dy")
            else:
                raise AssertionError("dy of the wrong shape accepted")
        else:
            must_refuse(lambda: bi.backward(layer, cache, bad), "dy")
    elif how == "cache":
        other = bi.BiLayer(CELLS[kind](D, H + 1, 0), CELLS[kind](D, H + 1, 1))
        bad = data.draw(st.sampled_from([bi.forward(other, x)[2], None, cache.fwd, tuple(cache)[:2]]))
        must_refuse(lambda: bi.backward(layer, bad, np.zeros_like(y)), "cache")
    elif how == "x":
        bad, _ = data.draw(malformed(x.shape, free=(0, 1)))
        must_refuse(lambda: bi.forward(layer, bad), "x")
    else:
        assert_backward_ignores_edits(lambda dy: bi.backward(layer, cache, dy), x, rng.standard_normal(y.shape))


@FAST
@given(kind=st.sampled_from(["gru", "lstm", "sru", "lstmp"]), sz=sizes(), data=st.data())
def test_lengths_bad_arguments(kind, sz, data):
    T, B, D, H = sz
    p = CELLS[kind](D, H, 0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, D))
    L = np.array(data.draw(st.lists(st.integers(0, T), min_size=B, max_size=B)))
    how = data.draw(st.sampled_from(["lengths", "state0-nan", "dstate-nan", "alias", "cache"]))
    if how == "lengths":
        bad = data.draw(st.sampled_from([L.astype(float), L[:-1], np.append(L, 0), L + T + 1, L - T - 1, "3", None]))
        if bad is None:
            return
        must_refuse(lambda: lengths.forward(p, x, None, bad), "lengths")
    elif how == "state0-nan":
        s0 = _state_like(p, B, rng)
        b = data.draw(st.integers(0, B - 1))
        leaf = _leaves(s0)[data.draw(st.integers(0, len(_leaves(s0)) - 1))]
        leaf[b, 0] = np.nan
        must_refuse(lambda: lengths.forward(p, x, s0, L), "state0", "h0", "c0")
    elif how == "dstate-nan":
        y, s_T, cache = lengths.forward(p, x, None, L)
        ds = lengths.tree_map(lambda a: np.ones_like(a), s_T)
        b = data.draw(st.integers(0, B - 1))
        _leaves(ds)[0][b, 0] = np.nan
        must_refuse(lambda: lengths.backward(p, cache, np.zeros_like(y), ds), "dstate_T", "dh_T", "dc_T")
    elif how == "alias":
        y, _, cache = lengths.forward(p, x, None, L)
        assert_backward_ignores_edits(lambda dy: lengths.backward(p, cache, dy), x, rng.standard_normal(y.shape))
    else:
        q = CELLS[kind](D + 1, H, 0)
        y, _, _ = lengths.forward(p, x, None, L)
        _, _, bad = lengths.forward(q, rng.standard_normal((T, B, D + 1)), None, L)
        must_refuse(lambda: lengths.backward(p, bad, np.zeros_like(y)), "cache")


# ----------------------------------------------------------------------------------------------------
# MLP head, deep RNN, wavefront, gradcheck


@FAST
@given(sz=sizes(), data=st.data())
def test_mlp_bad_arguments(sz, data):
    T, B, D, H = sz
    head = mlp.init((D, H, 2), rng=0)
    rng = np.random.default_rng(0)
    y = rng.standard_normal((T, B, D))
    out, cache = mlp.forward(head, y)
    how = data.draw(st.sampled_from(["y", "dout", "cache", "alias", "sizes"]))
    if how == "y":
        bad, _ = data.draw(malformed(y.shape, free=(0, 1)))
        must_refuse(lambda: mlp.forward(head, bad), "y")
    elif how == "dout":
        bad, _ = data.draw(malformed(out.shape))
        must_refuse(lambda: mlp.backward(head, cache, bad), "dout")
    elif how == "cache":
        other = mlp.init((D + 1, H, 2), rng=0)
        bad = data.draw(st.sampled_from([mlp.forward(other, rng.standard_normal((T, B, D + 1)))[1], None, tuple(cache)[:1]]))
        must_refuse(lambda: mlp.backward(head, bad, np.zeros_like(out)), "cache")
    elif how == "alias":
        assert_backward_ignores_edits(lambda dout: mlp.backward(head, cache, dout), y, rng.standard_normal(out.shape))
    else:
        bad = data.draw(st.sampled_from([(D,), (D, 0), (D, -1), (D, 2.5), "3", None, (D, True)]))
        must_refuse(lambda: mlp.init(bad), "sizes")


@FAST
@given(sz=sizes(), data=st.data())
def test_deep_and_wavefront_bad_arguments(sz, data):
    T, B, D, H = sz
    model = deep.init(gru, D, H, 2, num_layers=2, rng=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, D))
    how = data.draw(st.sampled_from(["deep-x", "deep-cache", "deep-init", "wave-x", "wave-state"]))
    if how == "deep-x":
        bad, _ = data.draw(malformed(x.shape, free=(0, 1)))
        must_refuse(lambda: deep.forward(model, bad), "x")
    elif how == "deep-cache":
        out, _, cache = deep.forward(model, x)
        other = deep.init(gru, D, H + 1, 2, num_layers=2, rng=0)
        bad = data.draw(st.sampled_from([deep.forward(other, x)[2], None, cache.stack]))
        must_refuse(lambda: deep.backward(model, bad, np.zeros_like(out)), "cache")
    elif how == "deep-init":
        bad = data.draw(st.sampled_from([0, -1, 1.5, "2"]))
        must_refuse(lambda: deep.init(gru, D, bad, 2, rng=0), "hidden_size")
    elif how == "wave-x":
        bad, _ = data.draw(malformed(x.shape, free=(0, 1)))
        must_refuse(lambda: wavefront.forward(model.layers, bad), "x")
    else:
        s0 = tuple(_state_like(p, B, rng) for p in model.layers)
        bad = (s0[0], np.full_like(s0[1], np.nan))
        must_refuse(lambda: wavefront.forward(model.layers, x, bad), "state0", "h0")


@FAST
@given(
    arg=st.sampled_from(["eps", "tol", "atol"]),
    value=st.sampled_from([0.0, -1e-6, float("nan"), float("inf"), -1.0, "1e-6", None]),
)
def test_gradcheck_bad_settings(arg, value):
    p = gru.init(1, 1, rng=0)
    x = np.ones((1, 1, 1))
    if arg != "eps" and value == float("inf"):
        return  # an infinite tolerance is a (useless) valid request
    if arg == "atol" and value == 0.0:
        return  # documented: judge on relative error alone
    if arg == "tol" and value == 0.0:
        return
    must_refuse(lambda: gradcheck(p, x, **{arg: value}), arg)


# ----------------------------------------------------------------------------------------------------
# Layout converters


def _torch_dict(kind, layers, bidirectional, bias, rng):
    n = 3 if kind == "GRU" else 4
    D, H = 2, 3
    out = {}
    for k in range(layers):
        for suffix in ("", "_reverse") if bidirectional else ("",):
            d = D if k == 0 else H * (2 if bidirectional else 1)
            out[f"weight_ih_l{k}{suffix}"] = rng.standard_normal((n * H, d))
            out[f"weight_hh_l{k}{suffix}"] = rng.standard_normal((n * H, H))
            if bias:
                out[f"bias_ih_l{k}{suffix}"] = rng.standard_normal(n * H)
                out[f"bias_hh_l{k}{suffix}"] = rng.standard_normal(n * H)
    return out


@FAST
@given(
    kind=st.sampled_from(["GRU", "LSTM"]),
    layers=st.integers(1, 2),
    bidirectional=st.booleans(),
    bias=st.booleans(),
    data=st.data(),
)
def test_from_torch_is_strict(kind, layers, bidirectional, bias, data):
    rng = np.random.default_rng(0)
    sd = _torch_dict(kind, layers, bidirectional, bias, rng)
    result = torch_layout.from_torch(sd, kind, bidirectional=bidirectional)  # the well-formed dict converts
    assert len(result) == layers
    how = data.draw(st.sampled_from(["drop", "leading-zero", "list", "empty", "rename", "not-a-mapping", "bad-value"]))
    if how == "drop":
        key = data.draw(st.sampled_from(sorted(sd)))
        if key.startswith("bias") and not bias:
            return
        bad = {k: v for k, v in sd.items() if k != key}
        if key.startswith("bias"):  # all-or-none per layer and direction
            pass
        must_refuse(lambda: torch_layout.from_torch(bad, kind, bidirectional=bidirectional), "state_dict", key)
    elif how == "leading-zero":
        key = data.draw(st.sampled_from(sorted(sd)))
        bad = dict(sd)
        value = bad.pop(key)
        bad[re.sub(r"_l(\d+)", lambda m: f"_l0{m.group(1)}", key)] = value
        must_refuse(lambda: torch_layout.from_torch(bad, kind, bidirectional=bidirectional), "state_dict")
    elif how == "list":
        must_refuse(lambda: torch_layout.from_torch(list(sd.items()), kind, bidirectional=bidirectional), "state_dict")
    elif how == "not-a-mapping":
        bad = data.draw(st.sampled_from([None, "weights", 3, list(sd.values())]))
        must_refuse(lambda: torch_layout.from_torch(bad, kind, bidirectional=bidirectional), "state_dict")
    elif how == "empty":
        must_refuse(lambda: torch_layout.from_torch({}, kind, bidirectional=bidirectional), "state_dict")
    elif how == "rename":
        key = data.draw(st.sampled_from(sorted(sd)))
        new = data.draw(st.sampled_from([key + "_", key.upper(), key.replace("_l", "_L"), " " + key, key.replace("_l", "_l-")]))
        bad = dict(sd)
        bad[new] = bad.pop(key)
        must_refuse(lambda: torch_layout.from_torch(bad, kind, bidirectional=bidirectional), "state_dict")
    else:
        key = data.draw(st.sampled_from(sorted(sd)))
        value = data.draw(st.sampled_from([None, "w", 1.0, np.zeros((0,)), np.zeros((2, 2), np.int64)]))
        bad = dict(sd)
        bad[key] = value
        must_refuse(lambda: torch_layout.from_torch(bad, kind, bidirectional=bidirectional), key, "state_dict")


@FAST
@given(kind=st.sampled_from(["GRU", "LSTM"]), layers=st.integers(1, 2), bidirectional=st.booleans(), data=st.data())
def test_torch_states_are_strict(kind, layers, bidirectional, data):
    rng = np.random.default_rng(0)
    params = torch_layout.from_torch(_torch_dict(kind, layers, bidirectional, True, rng), kind, bidirectional=bidirectional)
    B = 2
    states = tuple(_state_like(p, B, rng) for p in params)
    h_n = torch_layout.state_to_torch(params, states)
    back = torch_layout.state_from_torch(params, *(h_n if kind == "LSTM" else (h_n,)))
    for a, b in zip(_leaves(states), _leaves(back)):
        np.testing.assert_array_equal(a, b)
    how = data.draw(st.sampled_from(["single", "count", "not-a-sequence", "empty-layers"]))
    if how == "single":
        if not bidirectional:
            return
        single = tuple(s[0] for s in states)  # one direction's state where the layer has two
        must_refuse(lambda: torch_layout.state_to_torch(params, single), "states")
    elif how == "count":
        must_refuse(lambda: torch_layout.state_to_torch(params, states + states[:1]), "states")
    elif how == "not-a-sequence":
        bad = data.draw(st.sampled_from([None, 3, "h"]))
        must_refuse(lambda: torch_layout.state_to_torch(params, bad), "states")
    else:
        must_refuse(lambda: torch_layout.state_to_torch((), ()), "layers")


@FAST
@given(kind=st.sampled_from(["GRU", "LSTM"]), bidirectional=st.booleans(), data=st.data())
def test_from_keras_is_strict(kind, bidirectional, data):
    rng = np.random.default_rng(0)
    n, D, U = (3 if kind == "GRU" else 4), 2, 3
    bias = rng.standard_normal((2, n * U) if kind == "GRU" else (n * U,))
    one = {"kernel": rng.standard_normal((D, n * U)), "recurrent_kernel": rng.standard_normal((U, n * U)), "bias": bias}
    how = data.draw(st.sampled_from(["no-recurrent", "empty", "one-array", "not-a-list", "bad-value", "extra-name"]))
    if how == "no-recurrent":
        bad = {k: v for k, v in one.items() if k != "recurrent_kernel"}
        if bidirectional:
            bad = list(bad.values()) * 2
        must_refuse(lambda: keras_layout.from_keras(bad, kind, bidirectional=bidirectional), "weights", "recurrent_kernel")
    elif how == "empty":
        bad = data.draw(st.sampled_from([[], {}, ()]))
        must_refuse(lambda: keras_layout.from_keras(bad, kind, bidirectional=bidirectional), "weights")
    elif how == "one-array":
        must_refuse(lambda: keras_layout.from_keras([one["kernel"]], kind, bidirectional=bidirectional), "weights")
    elif how == "not-a-list":
        bad = data.draw(st.sampled_from([None, 3, "kernel", one["kernel"]]))
        must_refuse(lambda: keras_layout.from_keras(bad, kind, bidirectional=bidirectional), "weights")
    elif how == "bad-value":
        name = data.draw(st.sampled_from(sorted(one)))
        value = data.draw(st.sampled_from([None, "w", np.zeros((2, 2), np.int64), np.zeros(3)]))
        arrays = [value if k == name else v for k, v in one.items()]
        bad = arrays * 2 if bidirectional else arrays
        must_refuse(lambda: keras_layout.from_keras(bad, kind, bidirectional=bidirectional), name, "weights")
    else:
        bad = dict(one, kernel_extra=one["kernel"])
        must_refuse(lambda: keras_layout.from_keras(bad, kind), "weights")


@FAST
@given(kind=st.sampled_from(["GRU", "LSTM"]), data=st.data())
def test_from_onnx_is_strict(kind, data):
    rng = np.random.default_rng(0)
    n, D, H = (3 if kind == "GRU" else 4), 2, 3
    W, R, B = rng.standard_normal((1, n * H, D)), rng.standard_normal((1, n * H, H)), rng.standard_normal((1, 2 * n * H))
    name = data.draw(st.sampled_from(["W", "R", "B"]))
    bad, _ = data.draw(malformed({"W": W, "R": R, "B": B}[name].shape, free=(2,) if name == "W" else ()))
    if name == "B" and bad is None:
        return  # B=None: no biases, valid
    args = {"W": W, "R": R, "B": B, name: bad}
    # num_directions is read from R: an R with two directions may be reported as W's mismatch
    must_refuse(lambda: onnx_layout.from_onnx(kind, args["W"], args["R"], args["B"]), *((name, "W") if name == "R" else (name,)))
