"""Block-sparse conditional GRU inference on the device against the reference :mod:`refrnn.cells.ccgru`."""

import numpy as np
import pytest

from refrnn.cells import ccgru as reference
from refrnn.cuda import ccgru

SMALL_TILE = 4  # see conftest.py


def _case(T, B, D, H, g, s, *, folded=False, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    p = reference.init(D, H, variant="block", g=g, s=s, mode="inference", rng=rng)
    # Non-trivial statistics and biases, so a missing normalisation term or bias shows.
    p = p.replace(
        running_mean=rng.uniform(0, 0.5, g),
        running_var=rng.uniform(0.5, 2, g),
        b_rh=rng.uniform(-1, 1, 2 * H),
        b_z_lr=rng.uniform(-1, 1, g),
    )
    if folded:
        p = reference.fold_normalization(p)
    p = p.astype(dtype)
    return p, rng.standard_normal((T, B, D)).astype(dtype), rng.standard_normal((B, H)).astype(dtype)


# (T, B, D, H, g): block size 3 (one partial 4-wide unit tile); block size 5 (a full and a partial tile)
# with B=5 (two sample tiles); T=1, B=1.
SHAPES = [(3, 3, 3, 6, 2), (2, 5, 3, 10, 2), (1, 1, 2, 4, 2)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T%dB%dD%dH%dg%d" % s)
@pytest.mark.parametrize("folded", [False, True], ids=["running-stats", "folded"])
def test_forward_matches_reference_float64(shape, folded):
    p, x, h0 = _case(*shape, s=-0.3, folded=folded)
    y_ref, h_ref, cache = reference.forward(p, x, h0)
    assert 0 < reference.z_sparsity(cache) < 1  # some blocks skipped and some computed: both paths run
    y, h_T = ccgru.forward_inference(p, x, h0, tile=SMALL_TILE)
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-10)
    np.testing.assert_allclose(h_T, h_ref, rtol=0, atol=1e-10)
    # Skipped units are copied bit for bit from the kernel's own previous state.
    h_prev = np.concatenate([h0[None], y[:-1]])
    skipped = cache.z == 0
    np.testing.assert_array_equal(y[skipped], h_prev[skipped])


@pytest.mark.parametrize("s, expected_sparsity", [(-50.0, 1.0), (50.0, 0.0)], ids=["all-skipped", "all-active"])
def test_extreme_sparsity(s, expected_sparsity):
    p, x, h0 = _case(2, 6, 3, 6, 3, s=s)  # all active: 6 sequences per block, two 4-row sample tiles
    y_ref, _, cache = reference.forward(p, x, h0)
    assert reference.z_sparsity(cache) == expected_sparsity
    y, _ = ccgru.forward_inference(p, x, h0, tile=SMALL_TILE)
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-10)
    if expected_sparsity == 1.0:
        np.testing.assert_array_equal(y, np.broadcast_to(h0, y.shape))


def test_default_tile_and_zero_state():
    p, x, _ = _case(2, 2, 3, 18, 1, s=0.0)  # one block of 18 units: a full and a partial 16-wide tile
    y_ref, _, _ = reference.forward(p, x)
    y, _ = ccgru.forward_inference(p, x)
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-10)


def test_float32():
    p, x, h0 = _case(3, 3, 3, 6, 2, s=-0.3, dtype=np.float32)
    y_ref, _, cache = reference.forward(p.astype(np.float64), x.astype(np.float64), h0.astype(np.float64))
    y, _ = ccgru.forward_inference(p, x, h0, tile=SMALL_TILE)
    assert y.dtype == np.float32
    # Sums of <= D + H + 1 = 10 float32 terms of size ~1 per pre-activation (~1e-6), slope <= 1 gates,
    # convex state update, 3 steps. A gate within rounding of 0 could flip between skipped and computed,
    # but then z itself is ~1e-6, so the state moves by at most that much: 5e-5 covers both.
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=5e-5)


def test_device_arrays_in_and_out():
    from numba import cuda

    p, x, h0 = _case(2, 3, 3, 6, 2, s=-0.3)
    y_ref, h_ref, _ = reference.forward(p, x, h0)
    y, h_T = ccgru.forward_inference(ccgru.upload(p), cuda.to_device(x), cuda.to_device(h0), tile=SMALL_TILE)
    assert not isinstance(y, np.ndarray)
    np.testing.assert_allclose(y.copy_to_host(), y_ref, rtol=0, atol=1e-10)
    np.testing.assert_allclose(h_T.copy_to_host(), h_ref, rtol=0, atol=1e-10)


def test_refuses_what_it_cannot_skip():
    x = np.zeros((1, 2, 3))
    full = reference.init(3, 4, variant="full", mode="inference", rng=0)
    with pytest.raises(ValueError, match="needs the block variant"):
        ccgru.forward_inference(full, x)
    train = reference.init(3, 4, variant="block", g=2, rng=0)
    with pytest.raises(ValueError, match="mode='train' normalises with batch statistics"):
        ccgru.forward_inference(train, x)
    with pytest.raises(TypeError, match="expected CCGRUBlockParams"):
        ccgru.forward_inference("params", x)
