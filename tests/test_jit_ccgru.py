"""Numba conditional GRU (refrnn.jit.ccgru): dense and z-sparse inference paths against the reference.

What is checked: every path (dense; unstructured, the per-unit sparse path; block, the per-block
sparse path) equals ``refrnn.cells.ccgru.forward`` in inference mode, float64 within 1e-10, for the
three variants, running or folded statistics, odd sizes, T = 1, B = 1; units whose update gate is
exactly 0 carry their state over bit for bit; the update gate the path used equals the reference's;
bad input is refused. Speed is not tested (``refrnn bench`` measures it).

float32 tolerance. The float32 paths are compared with the *float64* reference run on the same
float32-representable weights and inputs, i.e. with the exact answer, within ``TOL32 * (T + 1)``,
TOL32 = 2e-6:

* activations: sigmoid/tanh from the polynomial exp are within 1.5e-7 absolute (asserted on a
  dense grid in ``tests/test_jit_gru_lstm.py``; the same construction is used here);
* products: a pre-activation is a float32 sum of K <= D + H + 1 <= 33 terms; its rounding error is at
  most K 2^-24 sum|w v| (Higham, Thm 3.1), about 1e-6 for these weights (Glorot / orthogonal, plus
  biases in +-1) and values (|x| <= ~6, |h| <= ~2);
* the update gate adds one normalisation, ``(a - mean) * inv_std + s`` with inv_std <= 1.5 here,
  and cliptanh, whose slope is at most 1 and which is continuous at 0: a unit that is active in
  one precision and exactly off in the other differs by z (ĥ - h) with z below the error of v;
* recurrence: h_t = (1 - z) h + z ĥ is a convex combination; at these weight scales the step map
  does not expand errors, so the T steps' errors at most add up.

Observed: at most 6e-7 (T <= 6, 10 seeds, every path), a margin of ~20x, while a dropped bias, a
swapped gate or a skipped active unit is off by 1e-2 or more.
"""

import numpy as np
import pytest

from refrnn.cells import ccgru

fast = pytest.importorskip("refrnn.jit.ccgru")

TOL64 = 1e-10
TOL32 = 2e-6

# (variant, g, D, H): odd sizes; blocks of 3 units, and blocks of 32 units (two 16-unit tiles each).
CELLS = [("full", None, 5, 7), ("lowrank", 3, 4, 9), ("block", 3, 5, 9), ("block", 2, 3, 64)]
# (T, B): a few steps, one step, one sequence.
RUNS = [(6, 3), (1, 2), (5, 1)]


def _with_z(out):
    """(y, h_T, z) from the fast forward's (y, h_T, cache)."""
    y, h_T, cache = out
    return y, h_T, cache.z


def _paths(variant):
    return ("dense", "unstructured", "block") if variant == "block" else ("dense", "unstructured")


def _case(variant, g, D, H, T, B, *, dtype=np.float64, seed=0, norm="batch", s=-0.3):
    """Inference-mode params with non-zero biases and running statistics (so a dropped bias or a
    statistic used the wrong way shows), inputs, h0; every value float32-representable."""
    rng = np.random.default_rng(seed)
    p = ccgru.init(D, H, variant=variant, g=g, rng=rng, mode="inference", s=s)
    K = p.gate_width
    updates = dict(
        b_rh=rng.uniform(-1, 1, 2 * H),
        running_mean=rng.uniform(-0.3, 0.3, K),
        running_var=rng.uniform(0.5, 2.0, K),
    )
    if variant != "block":
        updates["b_z"] = rng.uniform(-0.5, 0.5, H)
    if variant != "full":
        updates["b_z_lr"] = rng.uniform(-0.5, 0.5, p.g)
    p = p.replace(**updates).astype(np.float32).astype(np.float64)
    if norm == "folded":
        p = ccgru.fold_normalization(p)
    x = (2 * rng.standard_normal((T, B, D))).astype(np.float32).astype(np.float64)
    h0 = rng.standard_normal((B, H)).astype(np.float32).astype(np.float64)
    if dtype == np.float32:
        p, x, h0 = p.astype(np.float32), x.astype(np.float32), h0.astype(np.float32)
    return p, x, h0


def _max_err(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)), initial=0.0))


def _assert_copies_inactive_units(y, h0, z):
    """Where z == 0 the new state is the old one, bit for bit; and there are such units."""
    prev = np.concatenate([h0[None], y[:-1]])
    off = z == 0
    assert off.any() and (~off).any(), "the case must have both active and inactive units"
    assert np.array_equal(y[off], prev[off])
    assert not np.any(np.signbit(z))  # cliptanh's zero is +0.0


# ---------------------------------------------------------------------------------------------
# Equal to the reference
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["batch", "folded"])
@pytest.mark.parametrize("run", RUNS)
@pytest.mark.parametrize("cell", CELLS)
def test_float64_every_path_equals_the_reference(cell, run, norm):
    variant, g, D, H = cell
    p, x, h0 = _case(variant, g, D, H, *run, norm=norm, seed=H + run[0])
    y_ref, hT_ref, cache = ccgru.forward(p, x, h0)
    for path in _paths(variant):
        y, hT, z = _with_z(fast.forward(p, x, h0, algorithm=path))
        assert y.shape == y_ref.shape and hT.shape == hT_ref.shape and y.dtype == np.float64
        assert _max_err(y, y_ref) <= TOL64, path
        assert _max_err(hT, hT_ref) <= TOL64, path
        assert _max_err(z, cache.z) <= TOL64, path
        # Which units are off is decided by the sign of the same float64 value in both: the same set.
        assert np.array_equal(z == 0, cache.z == 0), path
        y2, hT2 = fast.forward_inference(p, x, h0, algorithm=path)  # without keeping z: the same loop
        assert np.array_equal(y2, y) and np.array_equal(hT2, hT)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("cell", CELLS)
def test_float32_within_justified_tolerance(cell, seed):
    variant, g, D, H = cell
    T, B = 6, 3
    p64, x64, h64 = _case(variant, g, D, H, T, B, seed=seed)
    p32, x32, h32 = _case(variant, g, D, H, T, B, seed=seed, dtype=np.float32)
    y_exact, _, _ = ccgru.forward(p64, x64, h64)
    for path in _paths(variant):
        y, hT, z = _with_z(fast.forward(p32, x32, h32, algorithm=path))
        assert y.dtype == np.float32 and hT.dtype == np.float32
        for t in range(T):
            assert _max_err(y[t], y_exact[t]) <= TOL32 * (t + 2), (path, t)
        _assert_copies_inactive_units(y, h32, z)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cell", CELLS)
def test_sparse_paths_copy_inactive_units_bit_for_bit(cell, dtype):
    variant, g, D, H = cell
    p, x, h0 = _case(variant, g, D, H, 5, 3, dtype=dtype, seed=7)
    for path in _paths(variant)[1:]:
        y, hT, z = _with_z(fast.forward(p, x, h0, algorithm=path))
        _assert_copies_inactive_units(y, h0, z)
        assert np.array_equal(hT, y[-1])


def test_block_gate_is_constant_on_blocks_and_sparse_paths_agree():
    p, x, h0 = _case("block", 3, 5, 9, 5, 4, seed=3)
    ys = {}
    for path in _paths("block"):
        ys[path], _, z = _with_z(fast.forward(p, x, h0, algorithm=path))
        zb = z.reshape(5, 4, 3, 3)
        assert np.array_equal(zb, np.broadcast_to(zb[..., :1], zb.shape))
    assert _max_err(ys["block"], ys["unstructured"]) <= TOL64


@pytest.mark.parametrize("s", [-0.3, 50.0])
def test_float32_dense_path_equals_the_block_path_bit_for_bit(s):
    """float32 on the compiled kernel (tiles of 16 units), B > 1: the dense path takes its input side
    per tile, as the block path does, so the two make the same products in the same order, and where
    z = 0 the dense path's blend (1 - 0) h + 0 ĥ is h exactly: the same bits, some blocks off or all on."""
    p, x, h0 = _case("block", 2, 3, 64, 5, 6, dtype=np.float32, seed=11, s=s)
    y_dense, h_dense, z = _with_z(fast.forward(p, x, h0, algorithm="dense"))
    y_block, h_block, _ = _with_z(fast.forward(p, x, h0, algorithm="block"))
    assert (z == 0).any() if s < 0 else (z > 0).all()
    np.testing.assert_array_equal(y_dense, y_block)
    np.testing.assert_array_equal(h_dense, h_block)


@pytest.mark.parametrize("variant, g", [("full", None), ("lowrank", 16), ("block", 16)])
def test_float32_on_the_kernel_gives_the_same_bits_on_one_thread_and_on_two(variant, g):
    """The update gate's samples are split between the threads; every row of its products is one FMA
    chain on the kernel, and a batch of 2 or 3 (a share of one row on two threads) takes the same
    product as a share of several, so the bits do not depend on the thread count."""
    numba = pytest.importorskip("numba")
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs two numba threads")
    before = numba.get_num_threads()
    try:
        for B in (2, 3, 5):
            p, x, h0 = _case(variant, g, 16, 64, 4, B, dtype=np.float32, seed=B)
            for path in _paths(variant):
                ys = []
                for threads in (1, 2):
                    numba.set_num_threads(threads)
                    ys.append(fast.forward(p, x, h0, algorithm=path)[0])
                np.testing.assert_array_equal(ys[0], ys[1], err_msg=f"{variant} B={B} {path}")
    finally:
        numba.set_num_threads(before)


def test_a_batch_too_large_for_one_small_product_is_split():
    """B = 64, H = 512: a tile product takes at most SMALL_GEMM_MNK // (2 tu H) = 61 rows at a time,
    so the dense path, and the block path where every sample is active, split the batch in two."""
    H = 512
    tu = fast.TILE
    assert fast.SMALL_GEMM_MNK // (2 * tu * H) < 64
    for variant, g, s in (("block", 16, 50.0), ("block", 16, -0.2), ("lowrank", 4, -0.3)):
        p, x, h0 = _case(variant, g, 3, H, 2, 64, seed=5, s=s)
        y_ref, _, cache = ccgru.forward(p, x, h0)
        for path in _paths(variant):
            y, _ = fast.forward_inference(p, x, h0, algorithm=path)
            assert _max_err(y, y_ref) <= TOL64, (variant, s, path)


def test_all_units_off_and_all_on():
    for s, check in ((-50.0, "off"), (50.0, "on")):
        for variant, g, D, H in CELLS:
            p, x, h0 = _case(variant, g, D, H, 3, 2, s=s, seed=1)
            y_ref, _, cache = ccgru.forward(p, x, h0)
            assert np.all(cache.z == 0) if check == "off" else np.all(cache.z > 0)
            for path in _paths(variant):
                y, _ = fast.forward_inference(p, x, h0, algorithm=path)
                assert _max_err(y, y_ref) <= TOL64
                if check == "off":
                    assert np.array_equal(y, np.broadcast_to(h0, y.shape))


def test_default_state_and_prepared_reuse():
    p, x, h0 = _case("lowrank", 3, 4, 9, 4, 2)
    y_ref, _, _ = ccgru.forward(p, x)  # h0 = zeros
    for path in ("sparse", "dense", "unstructured"):
        prepared = fast.prepare(p, path)
        y, _ = fast.forward_inference(p, x, prepared=prepared, algorithm=path)
        assert _max_err(y, y_ref) <= TOL64
    assert fast.prepare(p).algorithm == "unstructured"
    q, _, _ = _case("block", 3, 5, 9, 2, 2)
    assert fast.prepare(q).algorithm == "block"


def test_train_mode_with_folded_statistics_is_accepted():
    """With norm="folded" the reference ignores mode: so does the fast path."""
    p, x, h0 = _case("full", None, 5, 7, 3, 2, norm="folded")
    p = p.replace(mode="train")
    y_ref, _, _ = ccgru.forward(p, x, h0)
    y, _ = fast.forward_inference(p, x, h0)
    assert _max_err(y, y_ref) <= TOL64


# ---------------------------------------------------------------------------------------------
# The benchmark workloads (refrnn.bench.workloads.ccgru): what they count and that their candidates agree
# ---------------------------------------------------------------------------------------------


def test_flop_counts():
    from refrnn.bench.workloads import ccgru as bench_ccgru

    p = ccgru.init(27, 1024, variant="lowrank", g=16, mode="inference")
    z = np.zeros((2, 1, 1024))
    z[0, 0, :100] = 0.5
    dense, sparse = bench_ccgru.flop_counts(p, z)
    gate = 2 * 16 * (27 + 1024) + 2 * 16 * 1024  # W_z_lr x, U_z_lr h, then W_z z_lr
    assert dense == 2 * (4 * 1024 * (27 + 1024) + gate)
    assert sparse == 100 * 4 * (27 + 1024) + 2 * gate
    q = ccgru.init(27, 1024, variant="block", g=64, mode="inference")
    assert bench_ccgru.z_flops(q) == 2 * 64 * (27 + 1024)
    f = ccgru.init(27, 1024, mode="inference")
    assert bench_ccgru.z_flops(f) == 2 * 1024 * (27 + 1024)


def test_calibrated_shift_reaches_the_density():
    from refrnn.bench.workloads import ccgru as bench_ccgru

    p, x, _ = _case("lowrank", 4, 5, 64, 20, 2)
    for target in (0.5, 0.25, 0.1):
        q = bench_ccgru.calibrate_shift(p, x, target)
        reached, z = bench_ccgru.density(q, x)
        assert abs(reached - target) <= 0.02, (target, reached)
    assert bench_ccgru.density(bench_ccgru.calibrate_shift(p, x, 1.0), x)[0] == 1.0


def test_bench_workloads_at_test_sizes():
    """Every sparse candidate returns what the dense path of the same cell returns (float32, T = 4:
    the tolerance of the float32 test above)."""
    from refrnn import bench
    from refrnn.bench.workloads import ccgru as bench_ccgru

    for name in bench_ccgru.NAMES:
        case = bench.WORKLOADS[name].build("tiny")
        assert case.subject in case.candidates and len(case.bars) == len(bench_ccgru.BAR_DENSITIES)
        for label, fn in case.candidates.items():
            y = fn()[0]
            assert np.all(np.isfinite(y)), label
            if hasattr(fn, "twin"):
                assert _max_err(y, fn.twin()[0]) <= 2 * TOL32 * 5, (name, label)


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


def test_bad_input():
    p, x, h0 = _case("lowrank", 3, 4, 9, 3, 2)
    with pytest.raises(ValueError, match="mode"):
        fast.forward_inference(p.replace(mode="train"), x, h0)
    with pytest.raises(ValueError, match="mode"):
        fast.prepare(p.replace(mode="train"))
    with pytest.raises(ValueError, match="algorithm"):
        fast.forward_inference(p, x, h0, algorithm="blocked")
    with pytest.raises(ValueError, match="block variant"):
        fast.forward_inference(p, x, h0, algorithm="block")
    with pytest.raises(ValueError, match=r"x: .*\(T, B, D\)"):
        fast.forward_inference(p, x[0], h0)
    with pytest.raises(ValueError, match=r"x: .*D=4"):
        fast.forward_inference(p, np.zeros((3, 2, 5)), h0)
    with pytest.raises(ValueError, match="state0"):
        fast.forward_inference(p, x, h0[:1])
    with pytest.raises(TypeError, match="dtype"):
        fast.forward_inference(p, x.astype(np.float32), h0)
    with pytest.raises(ValueError, match="NaN"):
        fast.forward_inference(p, np.full_like(x, np.nan), h0)
    with pytest.raises(TypeError, match="params"):
        fast.forward_inference(object(), x, h0)
    with pytest.raises(ValueError, match="prepared"):
        fast.forward_inference(p, x, h0, algorithm="dense", prepared=fast.prepare(p, "unstructured"))
    with pytest.raises(ValueError, match="prepared"):
        fast.forward_inference(p, x, h0, prepared=fast.prepare(p.replace(s=0.1)))
    with pytest.raises(ValueError, match="running_var"):
        fast.forward_inference(p.replace(running_var=-p.running_var), x, h0)
