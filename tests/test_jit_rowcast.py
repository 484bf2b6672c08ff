"""The compiled step product of :mod:`refrnn.jit._rowcast` and the forwards that take it.

float32 tolerance of the product: every entry is one chain of K fused multiply-adds, so its error is
at most about K float32 roundings of the running sum, each at most eps/2 of a partial sum bounded by
(|W| @ |hT|); ``2 K eps (|W| @ |hT|)`` leaves a factor of 4 of room and still fails for any misplaced
or missing term (those are O(|W||hT|), not O(eps)). The forwards use the tolerance that
``tests/test_jit_gru_lstm.py`` argues for its float32 paths.
"""

import numba
import numpy as np
import pytest

from refrnn.cells import gru, lstm
from refrnn.jit import _rowcast
from refrnn.jit import gru as jit_gru
from refrnn.jit import lstm as jit_lstm

TOL32 = 5e-7
EPS32 = float(np.finfo(np.float32).eps)


def _operands(N, K, B, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((N, K)).astype(np.float32), rng.standard_normal((K, B)).astype(np.float32)


# N: below, at and past a six-row tile; K: every remainder of the four-step unrolled loop, none, and
# one (1024, 1025), two (1600, 2051) and three (3100) blocks of about KBLOCK = 1024, the later ones
# added onto the first;
# B: one to four 16-lane vectors and wider panels (80 = 64 + 16, 144 = 2 * 64 + 16).
@pytest.mark.parametrize("B", [16, 32, 48, 64, 80, 144])
@pytest.mark.parametrize("K", [0, 1, 3, 4, 5, 9, 33, 1024, 1025, 1600, 2051, 3100])
def test_product_equals_the_float64_product(K, B):
    _assert_within_the_bound(_rowcast.product, (1, 5, 6, 7, 13, 50), K, B)


def _assert_within_the_bound(kernel, rows, K, B):
    """``kernel(W, hT, out)`` for W of each of ``rows`` rows, within the bound of the module docstring."""
    for N in rows:
        W, hT = _operands(N, K, B, seed=N * 1000 + K * 10 + B)
        out = np.full((N, B), np.nan, np.float32)
        kernel(W, hT, out)
        exact = W.astype(np.float64) @ hT.astype(np.float64)
        bound = 2 * max(K, 1) * EPS32 * (np.abs(W).astype(np.float64) @ np.abs(hT).astype(np.float64))
        assert np.all(np.abs(out - exact) <= bound), (N, K, B)


@pytest.mark.parametrize("kernel, K, B", [("product", 70, 64), ("gemm", 700, 272)])
def test_the_products_do_not_depend_on_the_thread_count(kernel, K, B):
    W, hT = _operands(301, K, B, seed=3)
    outs = []
    threads = numba.get_num_threads()
    try:
        for n in sorted({1, threads}):
            numba.set_num_threads(n)
            out = np.empty((301, B), np.float32)
            getattr(_rowcast, kernel)(W, hT, out)
            outs.append(out)
    finally:
        numba.set_num_threads(threads)
    assert all(np.array_equal(outs[0], o) for o in outs)


def test_product_and_matmul_refuse_widths_the_kernel_does_not_cover():
    W, hT = _operands(4, 3, 24, seed=0)
    with pytest.raises(ValueError, match="multiple of 16"):
        _rowcast.product(W, hT, np.empty((4, 24), np.float32))
    with pytest.raises(ValueError, match="b: expected a multiple of 16 columns"):
        _rowcast.matmul(W, hT)
    assert np.allclose(_rowcast.matmul(W, hT[:, :16]), W @ hT[:, :16], atol=1e-5)


# gemm's blocks: K below, at and past GEMM_K = 512 (one, two and three blocks, the later ones added
# onto the first), N at and past GEMM_N = 128 and a 64-column panel inside a block, M past a chunk.
@pytest.mark.parametrize("N", [16, 80, 128, 144, 272])
@pytest.mark.parametrize("K", [0, 1, 7, 511, 512, 513, 1100])
def test_gemm_equals_the_float64_product(K, N):
    _assert_within_the_bound(_rowcast.gemm, (1, 7, 149), K, N)


def test_gemm_reads_a_transposed_b_and_equals_product_where_both_apply():
    """A Fortran-ordered ``b`` (the forwards pass ``W_x.T``) gives the same bits as its C-ordered
    copy; on a thin ``b`` with K inside one block, gemm and product make the same FMA chains."""
    a, b = _operands(61, 300, 48, seed=5)
    outs = [np.empty((61, 48), np.float32) for _ in range(3)]
    _rowcast.gemm(a, b, outs[0])
    _rowcast.gemm(a, np.asfortranarray(b), outs[1])
    _rowcast.product(a, b, outs[2])
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])
    with pytest.raises(ValueError, match="multiple of 16"):
        _rowcast.gemm(a, b[:, :40], np.empty((61, 40), np.float32))


def _packed(a, b, out):
    _rowcast.packed(a, _rowcast.panels(b), out)


# The packed product: M (rows of a, the batch) below, at and past a six-row tile; K around the K
# blocks of about KBLOCK (one, two, four); N one 16-column panel, a 64-column panel and a narrower
# last one (80, 144: a zero-padded last panel with the 16-lane tile).
@pytest.mark.parametrize("N", [16, 64, 80, 144])
@pytest.mark.parametrize("K", [0, 1, 5, 1024, 1600, 4096])
def test_packed_equals_the_float64_product(K, N):
    _assert_within_the_bound(_packed, (1, 4, 6, 7, 64), K, N)


# K: none, one, the unrolled loop's remainders, two blocks of about KBLOCK; N: one vector, the narrow
# 8-row tiles' two, a 64-column panel and a narrower second one; n gathered rows below, at and past
# a tile, in any order, repeated, the first and last rows included; every n from 1 to 16, which
# covers each one-pass tile of the narrow panels (up to one_pass_rows) and the first counts past it.
@pytest.mark.parametrize("N", [16, 32, 64, 80])
@pytest.mark.parametrize("K", [0, 1, 5, 1024, 2051])
def test_serial_gathered_equals_serial_over_the_copied_rows_bit_for_bit(K, N):
    rng = np.random.default_rng(K * 100 + N)
    a, hT = _operands(40, K, N, seed=K + N)
    for rows in ([0], [39], [3, 1, 4], list(range(9)), [5, 5, 2, 39, 0, 17, 8, 30, 11, 12, 2, 6, 7, 1, 3, 9, 21],
                 list(rng.permutation(40)), *(list(rng.choice(40, n)) for n in range(1, 17))):
        idx = np.array(rows, np.int64)
        out = np.full((len(rows), N), np.nan, np.float32)
        _rowcast.serial_gathered(a, idx * K, hT, out)
        ref = np.empty_like(out)
        _rowcast.serial(np.ascontiguousarray(a[idx]), hT, ref)
        np.testing.assert_array_equal(out, ref)
        exact = a[idx].astype(np.float64) @ hT.astype(np.float64)
        bound = 2 * K * EPS32 * (np.abs(a[idx]).astype(np.float64) @ np.abs(hT).astype(np.float64))
        assert np.all(np.abs(out - exact) <= bound)
    with pytest.raises(ValueError, match="serial_gathered"):
        _rowcast.serial_gathered(a, np.zeros(2, np.int64), hT, np.empty((3, N), np.float32))


def test_panels_hold_the_columns_of_b_in_any_layout_and_packed_matches_product():
    """``panels`` of a C- or Fortran-ordered ``b`` are the same; on one K block the packed product
    makes the same FMA chains as :func:`product` of the transposed problem, so the bits agree."""
    a, b = _operands(64, 700, 80, seed=7)
    bp = _rowcast.panels(b)
    assert bp.shape == (-(-80 // _rowcast.PANEL), 700, _rowcast.PANEL)
    assert np.array_equal(bp, _rowcast.panels(np.asfortranarray(b)))
    for p in range(bp.shape[0]):
        w = min(_rowcast.PANEL, 80 - p * _rowcast.PANEL)
        assert np.array_equal(bp[p, :, :w], b[:, p * _rowcast.PANEL : p * _rowcast.PANEL + w])
        assert not bp[p, :, w:].any()
    out, ref = np.empty((64, 80), np.float32), np.empty((80, 64), np.float32)
    _rowcast.packed(a, bp, out)
    _rowcast.product(np.ascontiguousarray(b.T), np.ascontiguousarray(a.T), ref)
    assert np.array_equal(out, ref.T)
    with pytest.raises(ValueError, match="b: expected a multiple of 16 columns"):
        _rowcast.panels(b[:, :40])
    with pytest.raises(ValueError, match="panels of b"):
        _rowcast.packed(a, bp, np.empty((64, 144), np.float32))  # three panels' worth of columns
    with pytest.raises(ValueError, match="panels of b"):
        _rowcast.packed(np.ascontiguousarray(a[:, 1:]), bp, out)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_the_backward_packs_its_step_weight_by_the_rule(monkeypatch, cell):
    """On the kernel, W_h (G*H, H) is packed for the backward's step product where its width P is a
    multiple of 16, and the step is the same without packing (the same FMA chains per K block: bit
    for bit here, one K block)."""
    assert _rowcast.packs_step_weight(64) and not _rowcast.packs_step_weight(72)
    T, B, D, H = 3, 16, 3, 64
    rng = np.random.default_rng(11)
    module, G = (jit_lstm, 4) if cell == "lstm" else (jit_gru, 3)
    p = lstm.init(D, H, rng=rng, dtype=np.float32, peepholes=True) if cell == "lstm" else gru.init(D, H, rng=rng, dtype=np.float32)
    x = rng.standard_normal((T, B, D)).astype(np.float32)
    dy = rng.standard_normal((T, B, H)).astype(np.float32)
    monkeypatch.setattr(_rowcast, "applies", lambda *args: True)
    y, s_T, cache = module.forward(p, x, None)
    calls = []
    panels = _rowcast.panels
    monkeypatch.setattr(_rowcast, "panels", lambda b, *out: calls.append(b.shape) or panels(b, *out))
    packed = module.backward(p, cache, dy, s_T)
    assert calls == [(G * H, H)]
    monkeypatch.setattr(_rowcast, "packs_step_weight", lambda width: False)
    direct = module.backward(p, cache, dy, s_T)
    assert calls == [(G * H, H)]
    for name in p.array_names():
        np.testing.assert_array_equal(getattr(packed[0], name), getattr(direct[0], name))
    np.testing.assert_array_equal(packed[1], direct[1])
    np.testing.assert_array_equal(np.asarray(packed[2]), np.asarray(direct[2]))


def test_applies_only_to_float32_batches_of_16_and_large_weights(monkeypatch):
    monkeypatch.setattr(_rowcast, "_has_avx512", lambda: True)
    big = _rowcast.MIN_WEIGHT_AVX512
    assert _rowcast.min_weight() == big < _rowcast.MIN_WEIGHT
    assert _rowcast.applies(np.float32, 64, big) and _rowcast.applies(np.float32, 16, big)
    assert not _rowcast.applies(np.float64, 64, big)
    assert not any(_rowcast.applies(np.float32, b, big) for b in (0, 1, 8, 24, 33))
    assert not _rowcast.applies(np.float32, 64, big - 1)
    assert _rowcast.applies(np.float32, 64, big, 129, 512)
    monkeypatch.setattr(_rowcast, "_has_avx512", lambda: False)  # the 8-lane tile: large weights, narrow inputs
    big = _rowcast.MIN_WEIGHT
    assert _rowcast.min_weight() == big
    assert _rowcast.applies(np.float32, 64, big) and not _rowcast.applies(np.float32, 64, big, 129, 512)
    assert not _rowcast.applies(np.float32, 64, big - 1)
    assert not _rowcast.applies(np.float32, 64, _rowcast.MIN_WEIGHT_AVX512)


def _max_err(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)), initial=0.0))


@pytest.mark.parametrize("B", [16, 48])
@pytest.mark.parametrize("algorithm", ["batched", "fused"])
@pytest.mark.parametrize("variant", ["gru-after", "gru-before", "lstm", "lstmp-peepholes"])
def test_forward_inference_through_the_kernel_equals_the_reference(monkeypatch, variant, algorithm, B):
    """Small sizes, with the rule made to take the kernel; the rule is asked about this forward."""
    asked = []
    monkeypatch.setattr(_rowcast, "applies", lambda dtype, rows, size, *widths: asked.append((np.dtype(dtype), rows)) or True)
    T, D, H = 4, 5, 20  # 4H = 80 and 3H = 60: input products through the kernel (LSTM) and not (GRU)
    rng = np.random.default_rng(B)
    x = rng.standard_normal((T, B, D)).astype(np.float32)
    h0 = (0.5 * rng.standard_normal((B, H))).astype(np.float32)
    if variant.startswith("gru"):
        p = gru.init(D, H, reset=variant[4:], rng=rng, dtype=np.float32)
        y, h_T = jit_gru.forward_inference(p, x, h0, algorithm=algorithm)
        y_t = jit_gru.forward(p, x, h0, algorithm=algorithm)[0]
        y_r, h_r, _ = gru.forward(p.astype(np.float64), x.astype(np.float64), h0.astype(np.float64))
        finals = [(h_T, h_r)]
    else:
        extra = {"proj_size": 12, "peepholes": True} if variant != "lstm" else {}
        p = lstm.init(D, H, rng=rng, **extra).astype(np.float32)
        s0 = ((0.5 * rng.standard_normal((B, p.output_size))).astype(np.float32), h0)
        y, s_T = jit_lstm.forward_inference(p, x, s0, algorithm=algorithm)
        y_t = jit_lstm.forward(p, x, s0, algorithm=algorithm)[0]
        y_r, s_r, _ = lstm.forward(p.astype(np.float64), x.astype(np.float64), tuple(a.astype(np.float64) for a in s0))
        finals = list(zip(s_T, s_r))
    assert asked and asked[0] == (np.dtype(np.float32), B)
    tol = TOL32 * (T + 1)
    assert _max_err(y, y_r) <= tol
    assert all(_max_err(a, b) <= tol for a, b in finals)
    assert _max_err(y, y_t) <= 2 * tol  # the training forward (BLAS) agrees to rounding


@pytest.mark.parametrize("module", [jit_gru, jit_lstm])
def test_forward_inference_at_the_rule_threshold_equals_the_training_forward(module):
    """The real rule, on the smallest LSTM weight it takes here: 4H * H >= min_weight() (H = 111 with
    AVX-512, 512 with AVX2); the GRU (3H * H) stays below it at that H and so keeps BLAS, bit for
    bit the training forward."""
    H = int(np.ceil(np.sqrt(_rowcast.min_weight() / 4)))
    T, B, D = 2, 16, 3
    rng = np.random.default_rng(0)
    ref = gru if module is jit_gru else lstm
    p = ref.init(D, H, rng=rng, dtype=np.float32)
    x = rng.standard_normal((T, B, D)).astype(np.float32)
    y_inf = module.forward_inference(p, x, None, algorithm="batched")[0]
    y_train = module.forward(p, x, None, algorithm="batched")[0]
    takes = _rowcast.applies(np.float32, B, p.W_h.size)
    assert takes == (module is jit_lstm)
    if takes:
        assert _max_err(y_inf, y_train) <= 2 * TOL32 * (T + 1)
    else:
        np.testing.assert_array_equal(y_inf, y_train)


def test_lstm_training_takes_the_kernel_by_the_rule(monkeypatch):
    """Training follows the inference rule, and also needs no projection and 4H a multiple of 16 (the
    weight gradients' width)."""
    monkeypatch.setattr(_rowcast, "_has_avx512", lambda: True)
    trains = jit_lstm._trains_on_rowcast
    p = lstm.init(3, 512, rng=0, dtype=np.float32)
    assert trains(p, 16) and trains(p, 64) and not trains(p, 8) and not trains(p, 24)
    assert not trains(lstm.init(3, 512, rng=0), 16)  # float64
    assert trains(lstm.init(3, 112, rng=0, dtype=np.float32), 16)  # 4H * H = 50176 >= MIN_WEIGHT_AVX512
    assert not trains(lstm.init(3, 108, rng=0, dtype=np.float32), 16)  # 46656, below it
    assert not trains(lstm.init(3, 513, rng=0, dtype=np.float32), 16)  # 4H = 2052, not a multiple of 16
    assert not trains(lstm.init(3, 512, proj_size=256, rng=0).astype(np.float32), 16)
    monkeypatch.setattr(_rowcast, "_has_avx512", lambda: False)  # the 8-lane tile: large weights, narrow inputs
    assert trains(p, 16) and not trains(lstm.init(129, 512, rng=0, dtype=np.float32), 16)  # 4D > P
    assert not trains(lstm.init(3, 508, rng=0, dtype=np.float32), 16)  # 4H * H below MIN_WEIGHT


@pytest.mark.parametrize("D", [3, 32])
def test_lstm_training_step_at_the_rule_threshold_equals_the_blas_step(monkeypatch, D):
    """The real rule at H = 512 (4H * H = MIN_WEIGHT, the 8-lane tile's smallest), D padded to the
    kernel's width or not, against the same step with BLAS (the rule's weight threshold raised):
    every output and gradient within 2 K eps of the larger of the two (normwise), K = 4H the longest
    sum in it (dx), both being that close to the exact products."""
    T, B, H = 2, 16, 512
    rng = np.random.default_rng(D)
    p = lstm.init(D, H, rng=rng, dtype=np.float32, peepholes=True)
    x = rng.standard_normal((T, B, D)).astype(np.float32)
    dy = rng.standard_normal((T, B, H)).astype(np.float32)

    def step():
        y, s_T, cache = jit_lstm.forward(p, x, None)
        grads, dx, ds0 = jit_lstm.backward(p, cache, dy, s_T)
        return [y, *s_T, dx, *ds0, *(getattr(grads, n) for n in p.array_names())]

    if not jit_lstm._trains_on_rowcast(p, B):
        pytest.skip("the rule keeps BLAS here")
    kernel = step()
    monkeypatch.setattr(_rowcast, "min_weight", lambda: 1 << 40)
    assert not jit_lstm._trains_on_rowcast(p, B)
    blas = step()
    for a, b in zip(kernel, blas):
        scale = max(1.0, float(np.max(np.abs(b))))
        assert _max_err(a, b) <= 2 * 4 * H * EPS32 * scale


def test_gru_takes_the_kernel_loop_by_the_rule(monkeypatch):
    """The forward (training and inference) and the backward follow the inference rule, for
    reset="after" with 3H a multiple of 16 (the weight gradients' width); reset="before" keeps the
    per-step products of gru_fused / gru_batched."""
    monkeypatch.setattr(_rowcast, "_has_avx512", lambda: True)
    on = jit_gru._on_kernel
    p = gru.init(3, 592, rng=0, dtype=np.float32)  # 3H * H = 1051392 >= MIN_WEIGHT
    assert on(p, 16) and on(p, 64) and not on(p, 8) and not on(p, 24)
    assert not on(gru.init(3, 592, rng=0), 16)  # float64
    assert on(gru.init(3, 128, rng=0, dtype=np.float32), 16)  # 3H * H = 49152 = MIN_WEIGHT_AVX512
    assert not on(gru.init(3, 112, rng=0, dtype=np.float32), 16)  # below it
    assert not on(gru.init(3, 594, rng=0, dtype=np.float32), 16)  # 3H = 1782, not a multiple of 16
    assert not on(gru.init(3, 592, reset="before", rng=0, dtype=np.float32), 16)
    monkeypatch.setattr(_rowcast, "_has_avx512", lambda: False)  # the 8-lane tile: large weights, narrow inputs
    assert on(p, 16) and not on(gru.init(149, 592, rng=0, dtype=np.float32), 16)  # 4D > H
    assert not on(gru.init(3, 576, rng=0, dtype=np.float32), 16)  # 3H * H below MIN_WEIGHT


@pytest.mark.parametrize("algorithm", ["fused", "batched"])
@pytest.mark.parametrize("D", [3, 32])
def test_gru_training_step_at_the_rule_threshold_equals_the_blas_step(monkeypatch, D, algorithm):
    """The real rule at H = 592 (the smallest H with 3H * H >= MIN_WEIGHT and 3H a multiple of 16),
    D padded to the kernel's width or not, against the same step with BLAS (the rule's weight
    threshold raised): every output and gradient within 2 K eps of the larger of the two
    (normwise), K = 3H the longest sum in it (dx), both being that close to the exact products."""
    T, B, H = 2, 16, 592
    rng = np.random.default_rng(D)
    p = gru.init(D, H, rng=rng, dtype=np.float32)
    x = rng.standard_normal((T, B, D)).astype(np.float32)
    dy = rng.standard_normal((T, B, H)).astype(np.float32)

    def step():
        y, h_T, cache = jit_gru.forward(p, x, None, algorithm=algorithm)
        y_inf, h_inf = jit_gru.forward_inference(p, x, None, algorithm=algorithm)
        np.testing.assert_array_equal(y_inf, y)  # one step loop for both
        grads, dx, dh0 = jit_gru.backward(p, cache, dy, h_T)
        return [y, h_T, dx, dh0, *(getattr(grads, n) for n in p.array_names())]

    if not jit_gru._on_kernel(p, B):
        pytest.skip("the rule keeps BLAS here")
    kernel = step()
    monkeypatch.setattr(_rowcast, "min_weight", lambda: 1 << 40)
    assert not jit_gru._on_kernel(p, B)
    blas = step()
    for a, b in zip(kernel, blas):
        scale = max(1.0, float(np.max(np.abs(b))))
        assert _max_err(a, b) <= 2 * 3 * H * EPS32 * scale


def test_a_kernel_compiled_against_a_cached_product_loads_in_a_new_process(tmp_path):
    """numba's cache, three processes: the first caches product() alone, the second compiles a
    kernel that calls it (product() now comes from the cache), the third loads that kernel. Without
    the thread pool started at import, the third crashed (the kernel's parallel launch had no pool)."""
    import os
    import subprocess
    import sys

    script = (
        "import sys, numpy as np\n"
        "from refrnn.jit import _kernels, _rowcast\n"
        "h, W = np.ones((16, 3), np.float32), np.ones((5, 3), np.float32)\n"
        "out, work = np.empty((16, 5), np.float32), np.empty((8, 16), np.float32)\n"
        "if sys.argv[1] == 'product':\n"
        "    _rowcast.product(W, h.T.copy(), work[:5])\n"
        "else:\n"
        "    _kernels._step_product(h, W, W.T, work, out, True)\n"
        "    assert (out == 3).all()\n"
        "print('ok')\n"
    )
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    for step in ("product", "kernel", "kernel"):
        run = subprocess.run([sys.executable, "-c", script, step], env=env, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0 and run.stdout.strip() == "ok", (step, run.returncode, run.stderr[-2000:])
