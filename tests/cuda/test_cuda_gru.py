"""Fused GRU forward on the device against the reference :mod:`refrnn.cells.gru`, both conventions."""

import numpy as np
import pytest

from refrnn.cells import gru as reference
from refrnn.cuda import gru

SMALL_TILE = 4  # see conftest.py: H of 5 or 6 spans a full and a partial tile

# (T, B, D, H): H off the tile with two tiles; B=1, T=1, H=1; B above the tile (two batch tiles).
SHAPES = [(3, 2, 3, 5), (1, 1, 2, 1), (2, 5, 3, 6)]


def _case(reset, T, B, D, H, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    # Non-zero biases of both kinds: a bias dropped or applied to the wrong gate cannot hide.
    p = reference.init(D, H, reset=reset, rng=rng)
    p = p.replace(b_x=rng.uniform(-1, 1, 3 * H), b_h=rng.uniform(-1, 1, 3 * H)).astype(dtype)
    return p, rng.standard_normal((T, B, D)).astype(dtype), rng.standard_normal((B, H)).astype(dtype)


@pytest.mark.parametrize("reset", ["after", "before"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T%dB%dD%dH%d" % s)
@pytest.mark.parametrize("strategy", ["tiled", "pointwise"])
def test_forward_matches_reference_float64(reset, shape, strategy, host_gemm):
    p, x, h0 = _case(reset, *shape)
    y_ref, h_ref, _ = reference.forward(p, x, h0)
    product = "tiled" if strategy == "tiled" else host_gemm
    y, h_T = gru.forward_inference(p, x, h0, algorithm=product, tile=SMALL_TILE)
    assert y.shape == y_ref.shape and h_T.shape == h_ref.shape and y.dtype == np.float64
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-10)
    np.testing.assert_allclose(h_T, h_ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("reset", ["after", "before"])
def test_default_tile_and_zero_initial_state(reset):
    p, x, _ = _case(reset, 2, 3, 4, 18)  # H=18: a full and a partial 16-wide tile
    y_ref, h_ref, _ = reference.forward(p, x)
    y, h_T = gru.forward_inference(p, x)
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-10)
    np.testing.assert_allclose(h_T, h_ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("reset", ["after", "before"])
def test_forward_float32(reset):
    p32, x32, h32 = _case(reset, 3, 2, 3, 5, dtype=np.float32)
    # The reference in float64 on the very same (float32) numbers: what is left is the kernel's rounding.
    y_ref, _, _ = reference.forward(p32.astype(np.float64), x32.astype(np.float64), h32.astype(np.float64))
    y, h_T = gru.forward_inference(p32, x32, h32, tile=SMALL_TILE)
    assert y.dtype == np.float32 and h_T.dtype == np.float32
    # Tolerance: each pre-activation sums D + H + 2 = 10 terms of size <= ~1, so float32 rounding
    # (2^-24 ~ 6e-8 relative) leaves <= ~1e-6; sigmoid/tanh have slope <= 1 and the update is a convex
    # combination, so over T = 3 steps the error stays below ~3e-6. 2e-5 leaves room for the
    # float32 exp/tanh (a few ulp) without hiding a real bug (those are > 1e-3).
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=2e-5)


def test_device_arrays_in_and_out_without_copies():
    from numba import cuda

    p, x, h0 = _case("after", 2, 2, 3, 5)
    y_ref, h_ref, _ = reference.forward(p, x, h0)
    d_x = cuda.to_device(x)
    y, h_T = gru.forward_inference(gru.upload(p), d_x, cuda.to_device(h0), tile=SMALL_TILE)
    assert not isinstance(y, np.ndarray) and hasattr(y, "copy_to_host")  # stayed on the device
    np.testing.assert_allclose(y.copy_to_host(), y_ref, rtol=0, atol=1e-10)
    np.testing.assert_allclose(h_T.copy_to_host(), h_ref, rtol=0, atol=1e-10)
    np.testing.assert_array_equal(d_x.copy_to_host(), x)  # the input is not modified


@pytest.mark.parametrize("reset", ["after", "before"])
def test_cublas_strategy(reset, cublas_or_skip):
    p, x, h0 = _case(reset, 3, 2, 3, 5)
    y_ref, _, _ = reference.forward(p, x, h0)
    y, _ = gru.forward_inference(p, x, h0, algorithm="cublas")
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-10)


def test_bad_product_and_tile():
    p, x, h0 = _case("after", 1, 1, 2, 3)
    with pytest.raises(ValueError, match="algorithm: unknown value 'cudnn'"):
        gru.forward_inference(p, x, algorithm="cudnn")
    with pytest.raises(ValueError, match="tile: expected a power of two"):
        gru.forward_inference(p, x, tile=12)
