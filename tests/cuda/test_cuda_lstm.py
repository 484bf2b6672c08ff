"""Fused LSTM forward on the device against the reference :mod:`refrnn.cells.lstm`."""

import numpy as np
import pytest

from refrnn.cells import lstm as reference
from refrnn.cuda import lstm

SMALL_TILE = 4  # see conftest.py: H of 5 or 6 spans a full and a partial tile

SHAPES = [(3, 2, 3, 5), (1, 1, 2, 1), (2, 5, 3, 6)]  # as in test_cuda_gru.py


def _case(T, B, D, H, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    p = reference.init(D, H, rng=rng)
    p = p.replace(b_x=rng.uniform(-1, 1, 4 * H), b_h=rng.uniform(-1, 1, 4 * H)).astype(dtype)
    state0 = tuple(rng.standard_normal((B, H)).astype(dtype) for _ in range(2))
    return p, rng.standard_normal((T, B, D)).astype(dtype), state0


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T%dB%dD%dH%d" % s)
@pytest.mark.parametrize("strategy", ["tiled", "pointwise"])
def test_forward_matches_reference_float64(shape, strategy, host_gemm):
    p, x, s0 = _case(*shape)
    y_ref, (h_ref, c_ref), _ = reference.forward(p, x, s0)
    y, (h_T, c_T) = lstm.forward_inference(p, x, s0, algorithm="tiled" if strategy == "tiled" else host_gemm, tile=SMALL_TILE)
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-10)
    np.testing.assert_allclose(h_T, h_ref, rtol=0, atol=1e-10)
    np.testing.assert_allclose(c_T, c_ref, rtol=0, atol=1e-10)


def test_default_tile_and_zero_initial_state():
    p, x, _ = _case(2, 3, 4, 18)
    y_ref, (h_ref, c_ref), _ = reference.forward(p, x)
    y, (h_T, c_T) = lstm.forward_inference(p, x)
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-10)
    np.testing.assert_allclose(c_T, c_ref, rtol=0, atol=1e-10)


def test_forward_float32():
    p32, x32, s32 = _case(3, 2, 3, 5, dtype=np.float32)
    s64 = tuple(s.astype(np.float64) for s in s32)
    y_ref, (_, c_ref), _ = reference.forward(p32.astype(np.float64), x32.astype(np.float64), s64)
    y, (_, c_T) = lstm.forward_inference(p32, x32, s32, tile=SMALL_TILE)
    assert y.dtype == np.float32 and c_T.dtype == np.float32
    # As for the GRU (test_cuda_gru.py): ~10-term float32 sums per gate, slope <= 1 non-linearities,
    # c_t = f c + i g with f, i < 1, over 3 steps: a few 1e-6 at most.
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=2e-5)
    np.testing.assert_allclose(c_T, c_ref, rtol=0, atol=2e-5)


def test_device_arrays_in_and_out():
    from numba import cuda

    p, x, (h0, c0) = _case(2, 2, 3, 5)
    y_ref, (_, c_ref), _ = reference.forward(p, x, (h0, c0))
    y, (h_T, c_T) = lstm.forward_inference(lstm.upload(p), cuda.to_device(x), (cuda.to_device(h0), c0), tile=SMALL_TILE)
    assert not isinstance(y, np.ndarray) and not isinstance(c_T, np.ndarray)
    np.testing.assert_allclose(y.copy_to_host(), y_ref, rtol=0, atol=1e-10)
    np.testing.assert_allclose(c_T.copy_to_host(), c_ref, rtol=0, atol=1e-10)


def test_cublas_strategy(cublas_or_skip):
    p, x, s0 = _case(3, 2, 3, 5)
    y_ref, _, _ = reference.forward(p, x, s0)
    y, _ = lstm.forward_inference(p, x, s0, algorithm="cublas")
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-10)


def test_state_must_be_a_pair():
    p, x, (h0, _) = _case(1, 1, 2, 3)
    with pytest.raises(TypeError, match=r"state0: expected the pair \(h, c\)"):
        lstm.forward_inference(p, x, h0)


def test_peepholes_and_projection_are_refused_not_ignored():
    p, x, s0 = _case(1, 1, 2, 3)
    with_peepholes = p.replace(w_ic=np.ones(3), w_fc=np.ones(3), w_oc=np.ones(3))
    with pytest.raises(ValueError, match="w_ic, w_fc, w_oc .* not implemented on the GPU"):
        lstm.forward_inference(with_peepholes, x, s0)
