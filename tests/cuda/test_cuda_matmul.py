"""refrnn's tiled shared-memory product against NumPy, in every operand orientation."""

import numpy as np
import pytest

from refrnn.cuda import matmul

SMALL_TILE = 4  # see conftest.py: H of 5 or 6 spans a full and a partial tile


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_tiled_product_matches_numpy(trans_a, trans_b):
    # M, K, N all off the tile (4): partial tiles along every axis; K spans three tiles.
    M, K, N = 6, 9, 5
    rng = np.random.default_rng(0)
    a = rng.standard_normal((K, M) if trans_a else (M, K))
    b = rng.standard_normal((N, K) if trans_b else (K, N))
    bias = rng.standard_normal(N)
    c = matmul.matmul(a, b, bias=bias, trans_a=trans_a, trans_b=trans_b, tile=SMALL_TILE)
    expected = (a.T if trans_a else a) @ (b.T if trans_b else b) + bias
    np.testing.assert_allclose(c, expected, rtol=0, atol=1e-12)


def test_default_tile_and_single_element():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((3, 20)), rng.standard_normal((20, 2))  # K=20: two 16-wide tiles
    np.testing.assert_allclose(matmul.matmul(a, b), a @ b, rtol=0, atol=1e-12)
    one = matmul.matmul(np.array([[2.0]]), np.array([[3.0]]), tile=SMALL_TILE)
    assert one.shape == (1, 1) and one[0, 0] == 6.0


def test_float32_product():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((5, 7)).astype(np.float32)
    b = rng.standard_normal((7, 3)).astype(np.float32)
    c = matmul.matmul(a, b, tile=SMALL_TILE)
    assert c.dtype == np.float32
    # 7 products of standard normals: float32 rounding of each partial sum is <= 2^-24 |sum| ~ 1e-7 * 7.
    np.testing.assert_allclose(c, a.astype(np.float64) @ b.astype(np.float64), rtol=0, atol=1e-5)


def test_shape_mismatch_names_the_argument():
    with pytest.raises(ValueError, match=r"b: expected shape \(K, N\)"):
        matmul.matmul(np.ones((2, 3)), np.ones((4, 2)))
