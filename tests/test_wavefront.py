"""Wavefront order: equal to layer-by-layer evaluation, the schedule's properties, bad input."""

import importlib
import types

import numpy as np
import pytest

from refrnn import gru, lstm
from refrnn.layers import stack, wavefront
from refrnn.cells import module_for

# Cell kinds, each a maker (input size, hidden size, rng) -> params. Hidden sizes differ per layer below,
# so a layer reading the wrong layer's output or state fails on shape, not by luck.
MAKERS = {
    "gru-after": lambda d, h, rng: gru.init(d, h, reset="after", rng=rng),
    "gru-before": lambda d, h, rng: gru.init(d, h, reset="before", rng=rng),
    "lstm": lambda d, h, rng: lstm.init(d, h, rng=rng),
}
# Cells written alongside this module join every test here as soon as their module exists (same init API).
for _name in ("sru", "ccgru"):
    try:
        _cell = importlib.import_module(f"refrnn.cells.{_name}")
    except ModuleNotFoundError as err:
        if err.name != f"refrnn.cells.{_name}":
            raise
        continue
    # ccgru's default "train" mode normalises over the batch, which needs B >= 2; the wavefront is an
    # inference schedule, so run it with running statistics.
    _opts = {"mode": "inference"} if _name == "ccgru" else {}
    MAKERS[_name] = lambda d, h, rng, cell=_cell, opts=_opts: cell.init(d, h, rng=rng, **opts)
KINDS = sorted(MAKERS)
HIDDEN = (4, 5, 3, 6)


def _stack(kinds, D=3, seed=0):
    rng = np.random.default_rng(seed)
    layers, d = [], D
    for kind, h in zip(kinds, HIDDEN):
        layers.append(MAKERS[kind](d, h, rng))
        d = h
    return tuple(layers)


def _random_state(layers, B, rng):
    """Non-zero initial states: each cell's zero state with every array replaced by random values."""
    def fill(s):
        return tuple(fill(a) for a in s) if isinstance(s, tuple) else rng.standard_normal(s.shape)

    return tuple(fill(module_for(p).zero_state(p, B)) for p in layers)


def _leaves(s):
    return [a for item in s for a in _leaves(item)] if isinstance(s, tuple) else [s]


def _assert_same_as_stack(layers, x, s0):
    y, states = wavefront.forward(layers, x, s0)
    y_ref, states_ref, _ = stack.forward(layers, x, s0)
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-12)
    got, want = _leaves(states), _leaves(states_ref)
    assert len(got) == len(want)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("N", [1, 2, 3, 4])
@pytest.mark.parametrize("T", [1, 2, 7])
def test_equals_layer_by_layer_for_every_cell(kind, N, T):
    layers = _stack([kind] * N)
    rng = np.random.default_rng(N * 10 + T)
    x = rng.standard_normal((T, 3, 3))
    _assert_same_as_stack(layers, x, _random_state(layers, 3, rng))


@pytest.mark.parametrize("N", [2, 3, 4])
@pytest.mark.parametrize("T", [1, 3, 6])
@pytest.mark.parametrize("B", [1, 2])
def test_equals_layer_by_layer_for_mixed_stacks(N, T, B):
    rng = np.random.default_rng(100 + N * 10 + T)
    kinds = [KINDS[int(k)] for k in rng.integers(0, len(KINDS), size=N)]
    kinds[0], kinds[-1] = KINDS[N % len(KINDS)], KINDS[(N + 1) % len(KINDS)]  # at least two kinds per stack
    layers = _stack(kinds, seed=N)
    x = rng.standard_normal((T, B, 3))
    _assert_same_as_stack(layers, x, _random_state(layers, B, rng))


def test_zero_initial_state_by_default():
    layers = _stack(["lstm", "gru-before", "gru-after"])
    x = np.random.default_rng(5).standard_normal((4, 2, 3))
    _assert_same_as_stack(layers, x, None)


def test_float32_stays_float32():
    layers = tuple(p.astype(np.float32) for p in _stack(["gru-after", "lstm"]))
    x = np.random.default_rng(6).standard_normal((5, 2, 3)).astype(np.float32)
    y, (h0, (h1, c1)) = wavefront.forward(layers, x)
    y_ref, _, _ = stack.forward(layers, x)
    assert y.dtype == h0.dtype == c1.dtype == np.float32
    # the same float32 operations grouped into different BLAS calls: a few units of 6e-8 on values of size 1
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-6)


def test_cells_are_evaluated_diagonal_by_diagonal(monkeypatch):
    """Record which layer runs at each call: the sequence must be the schedule, not layer order."""
    layers = _stack(["gru-after", "lstm", "gru-before"])
    T = 4
    calls = []
    real = wavefront.module_for

    def recording(p):
        cell = real(p)
        l = next(k for k, q in enumerate(layers) if q is p)

        def forward(params, x, state0=None):
            assert x.shape[0] == 1  # one step at a time
            calls.append(l)
            return cell.forward(params, x, state0)

        return types.SimpleNamespace(forward=forward, zero_state=cell.zero_state)

    monkeypatch.setattr(wavefront, "module_for", recording)
    x = np.random.default_rng(7).standard_normal((T, 2, 3))
    _assert_same_as_stack(layers, x, None)
    # layer l's j-th call computes step j (the equality above proves the steps went in order)
    seen = {}
    order = []
    for l in calls:
        order.append((l, seen.get(l, 0)))
        seen[l] = seen.get(l, 0) + 1
    expected = [cell for diagonal in wavefront.schedule(T, len(layers)).diagonals for cell in diagonal]
    assert order == expected
    assert order != sorted(order)  # not layer by layer


# --- the schedule --------------------------------------------------------------------------------------

GRIDS = [(1, 1), (1, 4), (4, 1), (2, 5), (5, 2), (3, 3), (7, 4), (50, 8)]


@pytest.mark.parametrize("T, N", GRIDS)
def test_schedule_covers_every_cell_once_after_its_dependencies(T, N):
    sched = wavefront.schedule(T, N)
    position = {}
    for k, diagonal in enumerate(sched.diagonals):
        assert diagonal, f"diagonal {k} is empty"
        for l, t in diagonal:
            assert 0 <= l < N and 0 <= t < T
            assert l + t == k
            assert (l, t) not in position, f"{(l, t)} scheduled twice"
            position[(l, t)] = k
    assert len(position) == T * N
    for (l, t), k in position.items():
        for dep in [(l, t - 1), (l - 1, t)]:
            if dep[0] >= 0 and dep[1] >= 0:
                assert position[dep] < k
    assert sched.critical_path == len(sched.diagonals) == T + N - 1
    assert sched.layer_by_layer == T * N
    diagonals, path = sched  # unpacks as (diagonals, critical path)
    assert path == sched.critical_path


@pytest.mark.parametrize("T, N, name", [(0, 2, "T"), (2, 0, "N"), (-1, 2, "T"), (True, 2, "T"), (2, 2.0, "N")])
def test_schedule_rejects_non_positive_sizes(T, N, name):
    with pytest.raises(ValueError, match=f"{name}: expected a positive integer"):
        wavefront.schedule(T, N)


# --- bad input -----------------------------------------------------------------------------------------


def test_forward_rejects_bad_input():
    layers = _stack(["gru-after", "lstm"])
    x = np.zeros((3, 2, 3))
    with pytest.raises(ValueError, match=r"x: the wavefront needs at least one step, got shape \(0, 2, 3\)"):
        wavefront.forward(layers, x[:0])
    with pytest.raises(ValueError, match=r"x: expected shape \(T, B, D\) with D=3, got shape \(3, 2, 4\)"):
        wavefront.forward(layers, np.zeros((3, 2, 4)))
    with pytest.raises(ValueError, match=r"x: expected a 3-d array"):
        wavefront.forward(layers, np.zeros((3, 3)))
    with pytest.raises(TypeError, match="x: dtype float32 does not match"):
        wavefront.forward(layers, x.astype(np.float32))
    with pytest.raises(ValueError, match="x: contains NaN"):
        wavefront.forward(layers, np.full_like(x, np.nan))
    with pytest.raises(ValueError, match="state0: expected a sequence of 2"):
        wavefront.forward(layers, x, (np.zeros((2, 4)),))
    with pytest.raises(ValueError, match=r"state0: expected shape \(B, H\) with B=2, H=4, got shape \(2, 5\)"):
        wavefront.forward(layers, x, (np.zeros((2, 5)), None))
    with pytest.raises(TypeError, match=r"state0: expected the pair \(h, c\)"):
        wavefront.forward(layers, x, (None, np.zeros((2, 5))))
    with pytest.raises(TypeError, match="layers: expected a non-empty sequence"):
        wavefront.forward((), x)
    with pytest.raises(ValueError, match=r"layers\[1\]: input size 3 does not match layers\[0\]'s hidden size 4"):
        wavefront.forward((layers[0], gru.init(3, 4, rng=0)), x)


def test_bidirectional_layers_are_refused():
    from refrnn.layers.bidirectional import BiLayer

    layer = BiLayer(gru.init(3, 4, rng=0), gru.init(3, 4, rng=1))
    with pytest.raises(ValueError, match="bidirectional layer's reverse direction needs the whole input"):
        wavefront.forward([layer], np.zeros((2, 1, 3)))


def test_projected_lstm_layers_chain_by_their_output_size():
    layers = (lstm.init(3, 5, proj_size=2, rng=0), gru.init(2, 4, rng=1))
    x = np.random.default_rng(2).standard_normal((4, 2, 3))
    y_w, s_w = wavefront.forward(layers, x)
    y_s, s_s, _ = stack.forward(layers, x)
    assert y_w.shape == (4, 2, 4)
    np.testing.assert_allclose(y_w, y_s, rtol=0, atol=1e-12)
