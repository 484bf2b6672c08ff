"""Numba conditional GRU, block path (refrnn.jit.ccgru.block_forward): the split of a step over workers.

Each worker computes the update gate of its own contiguous range of blocks from its own columns of
U_z.T (``_z_columns``) and then steps those blocks. What is checked: the layout of those columns;
the kernel run with 1 to 4 workers, where workers own different numbers of blocks (g = 5, 7) and
more workers than threads, equals the reference (float64 within 1e-10, the same units off, inactive
units copied bit for bit); inputs with exact zeros (one-hot characters, whose zero terms the input
side skips, and negative zeros) give the reference's result.
"""

import numpy as np
import pytest

from refrnn.cells import ccgru

fast = pytest.importorskip("refrnn.jit.ccgru")

TOL64 = 1e-10
TOL32 = 2e-6  # per step, as justified in tests/test_jit_ccgru.py


def _case(g, bs, D, T, B, *, seed=0, s=-0.2, dtype=np.float64, x=None):
    rng = np.random.default_rng(seed)
    H = g * bs
    p = ccgru.init(D, H, variant="block", g=g, rng=rng, mode="inference", s=s)
    p = p.replace(
        b_rh=rng.uniform(-1, 1, 2 * H), b_z_lr=rng.uniform(-0.5, 0.5, g),
        running_mean=rng.uniform(-0.3, 0.3, g), running_var=rng.uniform(0.5, 2.0, g),
    ).astype(np.float32).astype(np.float64)
    if x is None:
        x = (2 * rng.standard_normal((T, B, D))).astype(np.float32).astype(np.float64)
    h0 = rng.standard_normal((B, H)).astype(np.float32).astype(np.float64)
    if dtype == np.float32:
        p, x, h0 = p.astype(np.float32), x.astype(np.float32), h0.astype(np.float32)
    return p, x, h0


def _run_with_workers(p, x, h0, workers):
    """block_forward as refrnn.jit.ccgru._run calls it, with the gate's columns laid out for ``workers``."""
    prepared = fast.prepare(p, "block")
    w = prepared.weights
    T, B, D = x.shape
    H = p.hidden_size
    hs = np.empty((T + 1, B, H), p.dtype)
    hs[0] = h0
    zs = np.empty((T, B, H), p.dtype)
    pxz = (x.reshape(T * B, D) @ prepared.W_zxT + prepared.b_zx).reshape(T, B, -1)
    U_zw = fast._z_columns(prepared.U_zT, workers)
    assert U_zw.shape[0] == min(workers, p.g)
    fast.block_forward(fast._z_gate(prepared), np.ascontiguousarray(x), pxz, (w["Ut"], w["Wt"], w["b_t"], U_zw), hs, zs)
    return hs[1:], zs


@pytest.mark.parametrize("g", [5, 7])
def test_z_columns_give_each_worker_its_blocks_columns(g):
    H = 6
    U_zT = np.arange(H * g, dtype=np.float64).reshape(H, g)
    for threads in range(1, 5):
        cols = fast._z_columns(U_zT, threads)
        workers = min(threads, g)
        assert cols.shape[0] == workers
        ends = [fast._worker_blocks(w, workers, g) for w in range(workers)]
        assert ends[0][0] == 0 and ends[-1][1] == g
        assert all(a[1] == b[0] for a, b in zip(ends, ends[1:]))  # contiguous, no block twice or missed
        for w, (a, b) in enumerate(ends):
            np.testing.assert_array_equal(cols[w, : H * (b - a)].reshape(H, b - a), U_zT[:, a:b])


@pytest.mark.parametrize("bs", [3, 32])  # one tile of 3 units per block; two 16-unit tiles per block
@pytest.mark.parametrize("g", [5, 7])
def test_every_worker_count_equals_the_reference(g, bs):
    """Workers own different numbers of blocks (5 = 2 + 3, 7 = 2 + 2 + 3, ...), and with 3 or 4
    workers there are more than threads: each still takes exactly its own blocks."""
    p, x, h0 = _case(g, bs, 4, 5, 6, seed=g + bs)
    y_ref, _, cache = ccgru.forward(p, x, h0)
    for workers in (1, 2, 3, 4):
        y, z = _run_with_workers(p, x, h0, workers)
        assert float(np.max(np.abs(y - y_ref))) <= TOL64, workers
        assert float(np.max(np.abs(z - cache.z))) <= TOL64, workers
        assert np.array_equal(z == 0, cache.z == 0), workers
        off = z == 0
        assert off.any() and (~off).any()
        assert np.array_equal(y[off], np.concatenate([h0[None], y[:-1]])[off])  # bit for bit


def test_a_prepared_layout_for_another_thread_count_is_rebuilt_and_exact():
    from numba import get_num_threads

    p, x, h0 = _case(5, 3, 4, 4, 3, seed=11)
    y_ref, _, _ = ccgru.forward(p, x, h0)
    prepared = fast.prepare(p, "block")
    other = get_num_threads() + 1
    prepared.weights["U_zw"] = fast._z_columns(prepared.U_zT, other)
    y, _ = fast.forward_inference(p, x, h0, prepared=prepared)
    assert float(np.max(np.abs(y - y_ref))) <= TOL64


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_inputs_with_exact_zeros(dtype):
    """One-hot characters (every input but one exactly 0) and inputs with +0 and -0 entries: the
    input side skips their terms, which adds exactly nothing."""
    T, B, D = 6, 5, 9
    rng = np.random.default_rng(3)
    one_hot = np.eye(D)[rng.integers(D, size=(T, B))] * rng.uniform(0.5, 2.0, (T, B, 1))
    mixed = (2 * rng.standard_normal((T, B, D))).astype(np.float32).astype(np.float64)
    mixed[rng.random((T, B, D)) < 0.5] = 0.0
    mixed[rng.random((T, B, D)) < 0.2] = -0.0
    for x in (one_hot.astype(np.float32).astype(np.float64), mixed):
        p64, x64, h64 = _case(4, 16, D, T, B, seed=5, x=x)
        y_exact, _, _ = ccgru.forward(p64, x64, h64)
        p, xx, h0 = _case(4, 16, D, T, B, seed=5, x=x, dtype=dtype)
        y, _, cache = fast.forward(p, xx, h0, algorithm="block")
        assert (cache.z == 0).any() and (cache.z != 0).any()
        tol = TOL64 if dtype == np.float64 else TOL32 * (T + 1)
        assert float(np.max(np.abs(y.astype(np.float64) - y_exact))) <= tol
