"""The buffers a training step keeps for its next call: taken again only when nothing holds them."""

import numpy as np
import pytest

import refrnn.jit
from refrnn.cells import lstm
from refrnn.jit import _buffers
from refrnn.jit import gru as jit_gru
from refrnn.jit import lstm as jit_lstm


@pytest.fixture(autouse=True)
def _empty_pool():
    _buffers.release()
    yield
    _buffers.release()


def test_a_block_is_taken_again_only_once_nothing_holds_a_view_of_it():
    _, a, b = _buffers.carved("t", np.float32, (3, 5), (7,))
    assert a.base is b.base and a.ctypes.data % 64 == 0 and b.ctypes.data % 64 == 0
    first = id(a.base)  # an id: holding the block itself would keep it in use
    _, c, _ = _buffers.carved("t", np.float32, (3, 5), (7,))
    assert id(c.base) != first  # a and b still hold the first block
    del _, b
    kept = a[1:]  # any view keeps the block
    del a
    assert id(_buffers.carved("t", np.float32, (3, 5), (7,))[1].base) != first
    del kept
    again = _buffers.carved("t", np.float32, (3, 5), (7,))[1]
    assert id(again.base) == first and again.flags.writeable


def test_each_name_keeps_at_most_slots_blocks_and_release_lets_go():
    held = [_buffers.empty("t", (4,), np.float64) for _ in range(_buffers.SLOTS + 2)]
    assert len(_buffers._KEPT["t"]) == _buffers.SLOTS
    assert _buffers.held() == _buffers.SLOTS * _buffers._KEPT["t"][0].nbytes
    other = _buffers.empty("t", (9,), np.float32)  # every kept block is in use: not kept
    assert all(b.size != other.base.size for b in _buffers._KEPT["t"])
    del held
    _buffers.empty("t", (9,), np.float32)  # now it takes the place of a free one
    assert any(b.dtype == np.float32 for b in _buffers._KEPT["t"])
    assert refrnn.jit.release_buffers() > 0 and _buffers.held() == 0


@pytest.mark.parametrize("module", [jit_lstm, jit_gru])
def test_training_caches_kept_alive_never_share_memory_and_freed_ones_are_reused(module):
    """A loop that keeps step k's outputs while it runs step k + 1 gets two blocks, not one; each
    step's results are those of a fresh allocation; a frozen cache's block is writable again."""
    from refrnn.cells import gru

    cell = lstm if module is jit_lstm else gru
    rng = np.random.default_rng(3)
    p = cell.init(5, 16, rng=rng, dtype=np.float32)
    xs = [rng.standard_normal((4, 16, 5)).astype(np.float32) for _ in range(3)]
    # Compiled first: a call that compiles leaves references to its arguments' arrays behind in
    # numba (seen: 9 to the cache's block, none after a warm call), so that block is never free.
    module.forward(p, xs[0])
    _buffers.release()
    y0, _, cache0 = module.forward(p, xs[0])
    y1, _, cache1 = module.forward(p, xs[1])
    assert not np.shares_memory(y0, y1) and not np.shares_memory(cache0.h, cache1.h)
    expect0 = cell.forward(p, xs[0])[0]
    np.testing.assert_allclose(y0, expect0, rtol=0, atol=1e-5)
    block = id(y0.base)
    del y0, cache0
    y2, _, cache2 = module.forward(p, xs[2])
    assert id(y2.base) == block  # the first block came back
    np.testing.assert_allclose(y2, cell.forward(p, xs[2])[0], rtol=0, atol=1e-5)
    np.testing.assert_allclose(y1, cell.forward(p, xs[1])[0], rtol=0, atol=1e-5)  # untouched by step 3
    assert not y2.flags.writeable  # frozen again with its cache


@pytest.mark.parametrize("on_kernel", [False, True])
def test_backward_gives_the_same_gradients_on_kept_blocks_as_on_fresh_ones(monkeypatch, on_kernel):
    """Through BLAS and on the kernel (there the panels of W_h and the gradient work arrays are
    kept blocks too)."""
    from refrnn.jit import _rowcast

    if on_kernel:
        monkeypatch.setattr(_rowcast, "applies", lambda *args: True)
    rng = np.random.default_rng(4)
    p = lstm.init(6, 16, rng=rng, dtype=np.float32, peepholes=True)
    x = rng.standard_normal((5, 16, 6)).astype(np.float32)
    dy = rng.standard_normal((5, 16, 16)).astype(np.float32)
    results = []
    for _ in range(3):  # the second and third calls take the blocks the first one left
        y, s, cache = jit_lstm.forward(p, x)
        grads, dx, ds0 = jit_lstm.backward(p, cache, dy, s)
        results.append((grads, dx))
        del y, s, cache
    for grads, dx in results[1:]:
        np.testing.assert_array_equal(dx, results[0][1])
        for name in p.array_names():
            np.testing.assert_array_equal(getattr(grads, name), getattr(results[0][0], name))
