"""The LSTM's and the GRU's element-wise passes split into tasks of rows and units over numba's
threads (the step loops on the compiled kernel take them): the same bits as the one-thread passes, at
every width and batch, including groups of unequal size and a cell narrower than one group. The
backward's bias and peephole sums come in one row per group of rows: each the one-thread sum over
that group's rows, bit for bit, whatever the thread count."""

import numba
import numpy as np
import pytest

from refrnn.jit import _backward, _kernels

# Widths: narrower than a lane, a lane, ragged, and wide enough for two or more groups of units.
WIDTHS = [1, 16, 69, 2 * _kernels.MIN_UNITS + 88]
BATCHES = [1, 16, 33, 64]  # one group of rows, one, two unequal, four


def _groups(B, H):
    """The (b0, b1) row ranges of the backward's groups of sums."""
    rows, units = _kernels.pass_tasks(B, H)
    return [_kernels.task_span(t, B, H, rows, units)[:2] for t in range(0, rows * units, units)]


def test_tasks_cover_every_row_and_unit_once():
    for B in BATCHES + [48, 128]:
        for H in WIDTHS + [4 * _kernels.MIN_UNITS]:
            rows, units = _kernels.pass_tasks(B, H)
            seen = np.zeros((B, H), int)
            for t in range(rows * units):
                b0, b1, lo, hi = _kernels.task_span(t, B, H, rows, units)
                assert lo % 16 == 0 and (hi % 16 == 0 or hi == H)
                seen[b0:b1, lo:hi] += 1
            assert (seen == 1).all(), (B, H)


def _thread_counts():
    return sorted({1, numba.config.NUMBA_NUM_THREADS})


def _with_threads(n, run):
    before = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        return run()
    finally:
        numba.set_num_threads(before)


def _arrays(rng, *shapes, scale=1.0):
    return tuple((scale * rng.standard_normal(s)).astype(np.float32) for s in shapes)


@pytest.mark.parametrize("H", WIDTHS)
@pytest.mark.parametrize("B", BATCHES)
def test_forward_epilogue_equals_the_transposes_and_the_pass_on_one_thread(B, H):
    rng = np.random.default_rng(B * 1000 + H)
    work, bias, c_prev, ax = _arrays(rng, (4 * H, B), (4 * H,), (B, H), (B, 4 * H))
    peepholes = _arrays(rng, (H,), (H,), (H,), scale=0.5)
    for add_input in (False, True):
        x_in = ax if add_input else np.empty((0, 4 * H), np.float32)
        outs = []
        for split in (False, True):
            a = np.full((B, 4 * H), np.nan, np.float32)
            c_next, h = np.full((B, H), np.nan, np.float32), np.full((B, H), np.nan, np.float32)
            gates = tuple(np.full((B, H), np.nan, np.float32) for _ in range(5))
            hT = np.full((H, B), np.nan, np.float32)
            if split:
                _kernels._lstm_epilogue(work, a, x_in, bias, peepholes, c_prev, c_next, gates, h, hT)
            else:
                _kernels._transpose_into(a, work)
                _kernels._lstm_rows(a, x_in, bias, peepholes, c_prev, c_next, gates, h)
                hT[:] = h.T
            outs.append((a, c_next, h, hT) + gates)
        for serial, tasks in zip(*outs):
            assert not np.isnan(tasks).any()
            np.testing.assert_array_equal(tasks, serial)
        a = work.T.copy()
        gates = tuple(np.empty((B, H), np.float32) for _ in range(5))
        c_next, h = np.empty((B, H), np.float32), np.empty((B, H), np.float32)
        _kernels._lstm_rows_parallel(a, x_in, bias, peepholes, c_prev, c_next, gates, h)
        np.testing.assert_array_equal(h, outs[0][2])
        np.testing.assert_array_equal(c_next, outs[0][1])


@pytest.mark.parametrize("H", WIDTHS)
@pytest.mark.parametrize("B", BATCHES)
def test_backward_pass_in_tasks_equals_the_pass_on_one_thread(B, H):
    rng = np.random.default_rng(B * 1000 + H + 1)
    dy, rec, c_prev, c_next = _arrays(rng, (B, H), (B, H), (B, H), (B, H))
    gates = tuple(np.float32(0.5) + 0.4 * np.tanh(g) for g in _arrays(rng, *[(B, H)] * 5))
    peepholes = _arrays(rng, (H,), (H,), (H,), scale=0.5)
    (dc0,) = _arrays(rng, (B, H))
    widths = (4 * H, H, H, H)

    def serial(rows):
        dm, dc, da = np.full((B, H), np.nan, np.float32), dc0.copy(), np.full((B, 4 * H), np.nan, np.float32)
        acc = tuple(np.zeros(w) for w in widths)
        b0, b1 = rows
        for _ in range(2):  # twice: the sums carry over from one step to the next
            dm[b0:b1] = dy[b0:b1] + rec[b0:b1]
            _backward._lstm_rows(dm[b0:b1], dc[b0:b1], c_prev[b0:b1], c_next[b0:b1], tuple(g[b0:b1] for g in gates),
                                 peepholes, da[b0:b1], acc, True)
        return (dm, dc, da), acc

    def tasks():
        dm, dc, da = np.full((B, H), np.nan, np.float32), dc0.copy(), np.full((B, 4 * H), np.nan, np.float32)
        acc = _backward.unit_sums(B, H, True, *widths)
        for _ in range(2):
            _backward._lstm_rows_parallel(dy, rec, dm, dc, c_prev, c_next, gates, peepholes, da, acc, True)
        return (dm, dc, da), acc

    whole, whole_sums = serial((0, B))
    runs = [_with_threads(n, tasks) for n in _thread_counts()]
    for arrays, sums in runs:
        for one, split in zip(whole, arrays):
            assert not np.isnan(split).any()
            np.testing.assert_array_equal(split, one)
        for k, (b0, b1) in enumerate(_groups(B, H)):
            group_sums = serial((b0, b1))[1]
            for one, split in zip(group_sums, sums):
                np.testing.assert_array_equal(split[k], one)
        for one, split in zip(whole_sums, sums):
            np.testing.assert_allclose(_backward.total(split), one, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("K2", [300, 2000])  # one K block, two (of different boundaries side by side)
@pytest.mark.parametrize("K1", [0, 1, 27])
def test_product_pair_is_the_product_of_the_side_by_side_weights_bit_for_bit(K1, K2):
    from refrnn.jit import _rowcast

    rng = np.random.default_rng(K1)
    N, B = 100, 48
    W1, W2, h1T, h2T = _arrays(rng, (N, K1), (N, K2), (K1, B), (K2, B))
    out, side_by_side = np.full((N, B), np.nan, np.float32), np.full((N, B), np.nan, np.float32)
    _rowcast.product_pair(W1, h1T, W2, h2T, out)
    _rowcast.product(np.ascontiguousarray(np.hstack([W1, W2])), np.ascontiguousarray(np.vstack([h1T, h2T])), side_by_side)
    np.testing.assert_array_equal(out, side_by_side)
    with pytest.raises(ValueError, match="product_pair"):
        _rowcast.product_pair(W1, h1T, W2, np.ascontiguousarray(h2T[1:]), out)


@pytest.mark.parametrize("T, B, D, H", [(1, 16, 1, 4), (4, 32, 3, _kernels.UNITS + 4), (3, 48, 27, 2 * _kernels.UNITS)])
def test_inference_on_the_kernel_in_the_products_layout_equals_the_training_forward_bit_for_bit(monkeypatch, T, B, D, H):
    """forward_inference on the kernel ("fused") runs its pass on the (4H, B) product with the state
    kept transposed; the training forward transposes the product into rows: the same bits. (4H a
    multiple of 16, so that training takes the kernel too: otherwise its products are BLAS's, whose
    sums run in another order except in OpenBLAS's AVX-512 small-matrix kernels.)"""
    from refrnn.cells import lstm
    from refrnn.jit import _rowcast
    from refrnn.jit import lstm as jit_lstm

    monkeypatch.setattr(_rowcast, "applies", lambda *args: True)
    rng = np.random.default_rng(T * B + H)
    p = lstm.init(D, H, rng=rng, dtype=np.float32, peepholes=True)
    x, h0, c0 = _arrays(rng, (T, B, D), (B, H), (B, H))
    y, (h_T, c_T), _ = jit_lstm.forward(p, x, (h0, c0), algorithm="fused")
    y_inf, (h_inf, c_inf) = jit_lstm.forward_inference(p, x, (h0, c0), algorithm="fused")
    np.testing.assert_array_equal(y_inf, y)
    np.testing.assert_array_equal(h_inf, h_T)
    np.testing.assert_array_equal(c_inf, c_T)


@pytest.mark.parametrize("H", WIDTHS)
@pytest.mark.parametrize("B", BATCHES)
def test_gru_forward_epilogue_equals_the_transposes_and_the_pass_on_one_thread(B, H):
    """Both orders: "fused" (W_xn x arrives transposed, (H, B)) and "batched" (the input products
    (B, 3H) added to r and z, their n part taken as W_xn x)."""
    rng = np.random.default_rng(B * 1000 + H + 2)
    work, xnT, bias, h, ax = _arrays(rng, (3 * H, B), (H, B), (4 * H,), (B, H), (B, 3 * H))
    for batched in (False, True):
        x_in = ax if batched else np.empty((0, 3 * H), np.float32)
        xn_in = np.empty((0, B), np.float32) if batched else xnT
        outs = []
        for split in (False, True):
            a, xn = np.full((B, 3 * H), np.nan, np.float32), np.full((B, H), np.nan, np.float32)
            h_next, hT = np.full((B, H), np.nan, np.float32), np.full((H, B), np.nan, np.float32)
            gates = tuple(np.full((B, H), np.nan, np.float32) for _ in range(4))
            if split:
                _kernels._gru_epilogue(work, xn_in, a, x_in, xn, bias, h, h_next, gates, hT)
            else:
                _kernels._transpose_into(a, work)
                if batched:
                    a[:, : 2 * H] += ax[:, : 2 * H]
                    _kernels._gru_after_rows(a, ax, 2 * H, bias, h, h_next, *gates)
                else:
                    _kernels._transpose_into(xn, xnT)
                    _kernels._gru_after_rows(a, xn, 0, bias, h, h_next, *gates)
                hT[:] = h_next.T
            outs.append((a, h_next, hT) + gates + (() if batched else (xn,)))
        for serial, tasks in zip(*outs):
            assert not np.isnan(tasks).any()
            np.testing.assert_array_equal(tasks, serial)


@pytest.mark.parametrize("H", WIDTHS)
@pytest.mark.parametrize("B", BATCHES)
def test_gru_backward_pass_in_tasks_equals_the_pass_on_one_thread(B, H):
    rng = np.random.default_rng(B * 1000 + H + 3)
    dy, rec, h_prev, g = _arrays(rng, (B, H), (B, H), (B, H), (B, H))
    r, z, n = (np.float32(0.5) + 0.4 * np.tanh(a) for a in _arrays(rng, *[(B, H)] * 3))
    (dh0,) = _arrays(rng, (B, H))
    step = (h_prev, r, z, n, g)

    def serial(rows):
        b0, b1 = rows
        dh = dh0.copy()
        da_x, da_h = np.full((B, 3 * H), np.nan, np.float32), np.full((B, 3 * H), np.nan, np.float32)
        acc = (np.zeros(3 * H), np.zeros(H))
        for _ in range(2):  # twice: the sums carry over from one step to the next
            _backward._gru_after_units(dh[b0:b1], dy[b0:b1], rec[b0:b1], tuple(a[b0:b1] for a in step),
                                       da_x[b0:b1], da_h[b0:b1], acc, 0, H)
        return (dh, da_x, da_h), acc

    def tasks():
        dh = dh0.copy()
        da_x, da_h = np.full((B, 3 * H), np.nan, np.float32), np.full((B, 3 * H), np.nan, np.float32)
        acc = _backward.unit_sums(B, H, True, 3 * H, H)
        for _ in range(2):
            _backward._gru_after_rows_parallel(dh, dy, rec, step, da_x, da_h, acc)
        return (dh, da_x, da_h), acc

    whole, whole_sums = serial((0, B))
    for arrays, sums in [_with_threads(k, tasks) for k in _thread_counts()]:
        for one, split in zip(whole, arrays):
            assert not np.isnan(split).any()
            np.testing.assert_array_equal(split, one)
        for k, rows in enumerate(_groups(B, H)):
            for one, split in zip(serial(rows)[1], sums):
                np.testing.assert_array_equal(split[k], one)
        for one, split in zip(whole_sums, sums):
            np.testing.assert_allclose(_backward.total(split), one, rtol=1e-12, atol=1e-12)
