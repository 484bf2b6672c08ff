"""Numba wavefront executor (refrnn.jit.wavefront) against layer-by-layer evaluation (refrnn.layers.stack): every cell, bad input.

float64: y and every final state equal :func:`refrnn.layers.stack.forward` within 1e-12 absolute (the same
products, grouped into other BLAS calls).

float32 tolerance. The float32 executor is compared with the *float64* reference stack run on the same
(float32-representable) weights and inputs, i.e. with the exact answer. One cell's step is off by at
most TOL32 = 5e-7 (the argument of ``tests/test_jit_gru_lstm.py``: polynomial activations within
1.5e-7, products of K <= 2H + 2 terms here rounding to ~3e-7, gates passing errors on without
amplification). Cell (l, t) depends on the (l + 1)(t + 1) cells below and before it, and with weights
uniform in +-1/sqrt(H) the step map does not expand errors in h, so their errors at most add up:
TOL32 * N * (T + 1). Observed over 10 seeds of these cases: at most 1.2e-7 for the compiled GRU and
LSTM kernels, 3.2e-7 for the SRU (its float32 reference, one step at a time), against bounds of 1e-6
to 1.1e-5; a dropped bias, a wrong gate or a state read from the wrong diagonal is off by 1e-2 or more.
"""

import numpy as np
import pytest

from refrnn import gru, lstm
from refrnn.layers import stack
from refrnn.cells import ccgru, module_for, sru

wavefront = pytest.importorskip("refrnn.jit.wavefront")

TOL32 = 5e-7
D0 = 3  # layer 0's input width differs from H, as in a real stack


def _ccgru(variant, mode="inference"):
    g = {"full": None, "lowrank": 2, "block": 2}[variant]

    def make(d, h, rng, dtype=np.float64):
        p = ccgru.init(d, h, variant=variant, g=g, mode=mode, rng=rng, dtype=dtype)
        # Biases, running statistics and shift off their defaults, so each one enters the result.
        return p.replace(
            b_rh=rng.uniform(-0.5, 0.5, 2 * h).astype(dtype),
            running_mean=rng.uniform(-0.2, 0.2, p.running_mean.shape).astype(dtype),
            running_var=rng.uniform(0.5, 2.0, p.running_var.shape).astype(dtype),
            s=0.3,
        )

    return make


def _with_biases(p, rng):
    return p.replace(b_x=rng.uniform(-0.5, 0.5, p.b_x.shape).astype(p.dtype), b_h=rng.uniform(-0.5, 0.5, p.b_h.shape).astype(p.dtype))


# Cell kinds: maker(input size, hidden size, rng, dtype) -> params, non-zero biases everywhere.
MAKERS = {
    "gru-after": lambda d, h, rng, dtype=np.float64: _with_biases(gru.init(d, h, reset="after", rng=rng, dtype=dtype), rng),
    "gru-before": lambda d, h, rng, dtype=np.float64: _with_biases(gru.init(d, h, reset="before", rng=rng, dtype=dtype), rng),
    "lstm": lambda d, h, rng, dtype=np.float64: _with_biases(lstm.init(d, h, rng=rng, dtype=dtype), rng),
    "lstm-peepholes": lambda d, h, rng, dtype=np.float64: _with_biases(lstm.init(d, h, peepholes=True, rng=rng, dtype=dtype), rng),
    "sru": lambda d, h, rng, dtype=np.float64: sru.init(d, h, skip="projection" if d != h else "identity", rng=rng, dtype=dtype),
    "ccgru-full": _ccgru("full"),
    "ccgru-lowrank": _ccgru("lowrank"),
    "ccgru-block": _ccgru("block"),
}
KINDS = sorted(MAKERS)
# The executor each homogeneous stack must get: the compiled kernels for GRU and LSTM stacks.
PLAN = {"gru-after": "gru", "gru-before": "gru", "lstm": "lstm", "lstm-peepholes": "lstm"}


def _stack(kinds, H=4, seed=0, dtype=np.float64, hidden=None):
    rng = np.random.default_rng(seed)
    layers, d = [], D0
    for k, kind in enumerate(kinds):
        h = H if hidden is None else hidden[k]
        layers.append(MAKERS[kind](d, h, rng, dtype))
        d = h
    return tuple(layers)


def _random_state(layers, B, rng):
    """Non-zero initial states: each cell's zero state with every array replaced by random values."""

    def fill(s):
        return tuple(fill(a) for a in s) if isinstance(s, tuple) else rng.uniform(-1, 1, s.shape).astype(s.dtype)

    return tuple(fill(module_for(p).zero_state(p, B)) for p in layers)


def _leaves(s):
    return [a for item in s for a in _leaves(item)] if isinstance(s, tuple) else [s]


def _max_error(layers, x, s0, reference_layers=None, **kw):
    """max |wavefront - stack| over y and every leaf of every final state."""
    y, states = wavefront.forward(layers, x, s0, **kw)
    ref = reference_layers or layers
    cast = (lambda a: a.astype(np.float64)) if reference_layers is not None else (lambda a: a)
    s0_ref = None if s0 is None else tuple(_cast_tree(s, cast) for s in s0)
    y_ref, states_ref, _ = stack.forward(ref, cast(x), s0_ref)
    assert y.shape == y_ref.shape and y.dtype == x.dtype
    got, want = _leaves(states), _leaves(states_ref)
    assert len(got) == len(want) == len(_leaves(tuple(module_for(p).zero_state(p, 1) for p in layers)))
    errors = [np.max(np.abs(y - y_ref))] + [np.max(np.abs(a - b)) for a, b in zip(got, want)]
    for a, b in zip(got, want):
        assert a.shape == b.shape and a.dtype == x.dtype
    return max(errors)


def _cast_tree(s, cast):
    return tuple(_cast_tree(a, cast) for a in s) if isinstance(s, tuple) else cast(s)


# --- float64: equal to layer by layer ----------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("N", [1, 2, 3, 4])
@pytest.mark.parametrize("T, B", [(1, 1), (2, 3), (7, 1), (6, 2)])
def test_homogeneous_stack_equals_layer_by_layer(kind, N, T, B):
    layers = _stack([kind] * N, seed=N)
    assert wavefront.plan(layers) == PLAN.get(kind, "cells")
    rng = np.random.default_rng(N * 100 + T * 10 + B)
    x = rng.standard_normal((T, B, D0))
    assert _max_error(layers, x, _random_state(layers, B, rng)) <= 1e-12


@pytest.mark.parametrize("kind", ["gru-after", "gru-before", "lstm"])
def test_zero_initial_state_by_default(kind):
    layers = _stack([kind] * 3)
    x = np.random.default_rng(5).standard_normal((5, 2, D0))
    assert _max_error(layers, x, None) <= 1e-12
    # None for some layers only: zeros there, the given state elsewhere
    s0 = _random_state(layers, 2, np.random.default_rng(6))
    assert _max_error(layers, x, (s0[0], None, s0[2])) <= 1e-12


@pytest.mark.parametrize("N", [2, 3, 4])
@pytest.mark.parametrize("T, B", [(1, 1), (3, 2), (6, 1)])
def test_mixed_stacks_equal_layer_by_layer(N, T, B):
    rng = np.random.default_rng(100 + N * 10 + T)
    kinds = [KINDS[int(k)] for k in rng.integers(0, len(KINDS), size=N)]
    kinds[0], kinds[-1] = KINDS[N % len(KINDS)], KINDS[(N + 3) % len(KINDS)]  # at least two kinds per stack
    hidden = [4, 5, 3, 6][:N]  # widths differ too: a layer reading the wrong layer's output fails on shape
    layers = _stack(kinds, seed=N, hidden=hidden)
    assert wavefront.plan(layers) == "cells"
    x = rng.standard_normal((T, B, D0))
    assert _max_error(layers, x, _random_state(layers, B, rng)) <= 1e-12


def test_stacks_the_kernels_do_not_take_go_cell_by_cell():
    rng = np.random.default_rng(8)
    cases = {
        "resets differ": _stack(["gru-after", "gru-before", "gru-after"]),
        "widths differ": _stack(["gru-after"] * 3, hidden=[4, 5, 4]),
        "lstm projection": (lstm.init(D0, 5, proj_size=4, rng=0), lstm.init(4, 5, proj_size=4, rng=1)),
        "gru and lstm": _stack(["gru-after", "lstm"]),
        # training-mode batch statistics: the reference cell, one step at a time (statistics are per step)
        "ccgru train": (ccgru.init(D0, 4, mode="train", rng=1), ccgru.init(4, 4, mode="train", rng=2)),
    }
    for name, layers in cases.items():
        assert wavefront.plan(layers) == "cells", name
        x = rng.standard_normal((4, 3, D0))
        assert _max_error(layers, x, _random_state(layers, 3, rng)) <= 1e-12, name


@pytest.mark.parametrize("kind", ["gru-after", "gru-before", "lstm-peepholes"])
def test_threads_change_nothing(kind):
    """One thread or all: the same operations on the same data, so the same bits."""
    layers = _stack([kind] * 4, H=6)
    rng = np.random.default_rng(9)
    x = rng.standard_normal((5, 2, D0))
    s0 = _random_state(layers, 2, rng)
    y, states = wavefront.forward(layers, x, s0)
    y1, states1 = wavefront.forward(layers, x, s0, threads=1)
    prepared = wavefront.prepare(layers)
    y2, states2 = wavefront.forward(layers, x, s0, prepared=prepared, threads=3)
    for a, b, c in zip(_leaves((y, states)), _leaves((y1, states1)), _leaves((y2, states2))):
        assert np.array_equal(a, b) and np.array_equal(a, c)


def test_cell_by_cell_path_runs_diagonal_by_diagonal(monkeypatch):
    """Record which layer each one-step call belongs to: the sequence must be the schedule."""
    from refrnn.layers.wavefront import schedule

    layers = _stack(["sru", "lstm", "gru-before"], hidden=[4, 5, 3])
    T = 4
    calls = []
    real = wavefront._one_step

    def recording(p):
        step = real(p)
        l = next(k for k, q in enumerate(layers) if q is p)

        def run(x_t, s):
            assert x_t.shape[0] == 1
            calls.append(l)
            return step(x_t, s)

        return run

    monkeypatch.setattr(wavefront, "_one_step", recording)
    x = np.random.default_rng(7).standard_normal((T, 2, D0))
    assert _max_error(layers, x, None) <= 1e-12
    seen, order = {}, []
    for l in calls:
        order.append((l, seen.get(l, 0)))
        seen[l] = seen.get(l, 0) + 1
    assert order == [cell for diagonal in schedule(T, len(layers)).diagonals for cell in diagonal]
    assert order != sorted(order)


# --- float32 -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gru-after", "gru-before", "lstm-peepholes", "sru"])
@pytest.mark.parametrize("N, T, B", [(1, 1, 1), (3, 6, 2), (2, 4, 1)])
def test_float32_within_justified_tolerance(kind, N, T, B):
    layers32 = _stack([kind] * N, seed=T, dtype=np.float32)
    layers64 = tuple(p.astype(np.float64) for p in layers32)  # the same float32-representable weights
    rng = np.random.default_rng(T)
    x = rng.standard_normal((T, B, D0)).astype(np.float32)
    s0 = _random_state(layers32, B, rng)
    err = _max_error(layers32, x, s0, reference_layers=layers64)
    assert err <= TOL32 * N * (T + 1), err


# --- bad input ---------------------------------------------------------------------------------------


def test_forward_rejects_bad_input():
    layers = _stack(["gru-after", "gru-after"])
    x = np.zeros((3, 2, D0))
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
        wavefront.forward(layers, x, (None, np.zeros((2, 5))))
    with pytest.raises(TypeError, match="state0: dtype float32 does not match"):
        wavefront.forward(layers, x, (np.zeros((2, 4), np.float32), None))
    with pytest.raises(ValueError, match="state0: contains NaN"):
        wavefront.forward(layers, x, (np.full((2, 4), np.nan), None))
    with pytest.raises(TypeError, match=r"state0: expected the pair \(h, c\)"):
        wavefront.forward(_stack(["lstm", "lstm"]), x, (None, np.zeros((2, 4))))
    with pytest.raises(TypeError, match="layers: expected a non-empty sequence"):
        wavefront.forward((), x)
    with pytest.raises(ValueError, match=r"layers\[1\]: input size 3 does not match layers\[0\]'s hidden size 4"):
        wavefront.forward((layers[0], gru.init(3, 4, rng=0)), x)
    with pytest.raises(TypeError, match=r"layers\[1\]: dtype float32 does not match layers\[0\]'s dtype float64"):
        wavefront.forward((layers[0], layers[1].astype(np.float32)), x)
    with pytest.raises(ValueError, match="prepared: expected prepare\\(layers\\) for these very layers"):
        wavefront.forward(layers, x, prepared=wavefront.prepare(_stack(["gru-after", "gru-after"], seed=1)))
    with pytest.raises(ValueError, match="threads: expected a positive integer"):
        wavefront.forward(layers, x, threads=0)


def test_bidirectional_layers_are_refused():
    from refrnn.layers.bidirectional import BiLayer

    layer = BiLayer(gru.init(3, 4, rng=0), gru.init(3, 4, rng=1))
    with pytest.raises(ValueError, match="bidirectional layer's reverse direction needs the whole input"):
        wavefront.forward([layer], np.zeros((2, 1, 3)))
    with pytest.raises(ValueError, match="bidirectional"):
        wavefront.forward([gru.init(3, 8, rng=2), BiLayer(gru.init(8, 4, rng=0), gru.init(8, 4, rng=1))], np.zeros((2, 1, 3)))


def test_import_is_lazy_about_numba():
    """refrnn.layers.wavefront (the reference) must not pull in numba; only refrnn.jit does."""
    import subprocess
    import sys

    code = "import sys, refrnn, refrnn.layers.wavefront; assert 'numba' not in sys.modules, 'numba imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_y_is_a_fresh_writable_array():
    layers = _stack(["lstm", "lstm"])
    x = np.random.default_rng(3).standard_normal((3, 1, D0))
    y, (s_a, s_b) = wavefront.forward(layers, x)
    y2, _ = wavefront.forward(layers, x)
    y[:] = 0.0  # the caller owns it
    assert np.any(y2 != 0.0)
    assert isinstance(s_a, tuple) and s_a[0].flags.writeable
