"""Layers run their cells on a chosen backend: ``stack.forward(..., backend="jit")`` equals the
reference (float64, 1e-10) through lengths, both directions and batch_first, and really runs the
compiled twins (a twin that fails makes the layer fail)."""

import numpy as np
import pytest

from refrnn import gru, lstm, rnn, sru
from refrnn.layers import bidirectional as bi
from refrnn.layers import deep, lengths, stack

TOL = 1e-10


def _layers():
    return (
        bi.init(gru, 5, 6, rng=0, reset="before"),
        lstm.init(12, 7, rng=1, proj_size=3),
        gru.init(3, 4, rng=2),
        sru.init(4, 4, rng=3),
    )


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
def test_a_stack_on_the_jit_backend_equals_the_reference(batch_first, with_lengths):
    rng = np.random.default_rng(0)
    layers = _layers()
    x = rng.standard_normal((3, 9, 5) if batch_first else (9, 3, 5))
    kw = dict(batch_first=batch_first, lengths=np.array([9, 2, 5]) if with_lengths else None)
    y0, s0, c0 = stack.forward(layers, x, **kw)
    y1, s1, c1 = stack.forward(layers, x, **kw, backend="jit")
    assert c1.backend == "jit"
    np.testing.assert_allclose(y1, y0, rtol=0, atol=TOL)
    for a, b in zip(lengths.tree_map(lambda a: a, s1), s0):
        lengths.tree_map(lambda u, v: np.testing.assert_allclose(u, v, rtol=0, atol=TOL), a, b)
    dy = rng.standard_normal(y0.shape)
    g0, dx0, _ = stack.backward(layers, c0, dy)
    g1, dx1, _ = stack.backward(layers, c1, dy)  # the cache says which backend
    np.testing.assert_allclose(dx1, dx0, rtol=0, atol=TOL)
    for p1, p0 in zip(g1, g0):
        flat1 = [a for part in (p1.parts() if hasattr(p1, "parts") else (p1,)) for a in part.arrays().values()]
        flat0 = [a for part in (p0.parts() if hasattr(p0, "parts") else (p0,)) for a in part.arrays().values()]
        for a, b in zip(flat1, flat0):
            np.testing.assert_allclose(a, b, rtol=0, atol=TOL)


def test_the_jit_backend_really_runs_the_compiled_twin(monkeypatch):
    from refrnn.jit import gru as fast_gru

    def broken(*args, **kwargs):
        raise RuntimeError("the compiled GRU ran")

    monkeypatch.setattr(fast_gru, "forward", broken)
    x = np.zeros((2, 1, 5))
    stack.forward((gru.init(5, 3, rng=0),), x)  # the reference does not touch it
    with pytest.raises(RuntimeError, match="the compiled GRU ran"):
        stack.forward((bi.init(gru, 5, 3, rng=0),), x, backend="jit")


def test_a_backend_without_the_cell_or_unknown_is_refused():
    x = np.zeros((2, 1, 5))
    with pytest.raises(ValueError, match="backend: 'jit' has no rnn cell"):
        stack.forward((rnn.init(5, 3, rng=0),), x, backend="jit")
    with pytest.raises(ValueError, match="backend: unknown value 'cuda'"):
        stack.forward((gru.init(5, 3, rng=0),), x, backend="cuda")
    with pytest.raises(ValueError, match="backend"):
        deep.forward(deep.init(gru, 5, 3, 2, rng=0), x, backend="gpu")
