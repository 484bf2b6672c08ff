"""SRU recurrence kernels, forward and backward, against the reference :mod:`refrnn.cells.sru`."""

import numpy as np
import pytest

from refrnn.cells import sru as reference
from refrnn.cuda import sru

SMALL_TILE = 4  # see conftest.py

# Every option of the reference: identity skip with alpha and an offset, projection skip with tanh,
# no v terms, no skip term. (D, H) with D != H where the option allows it.
CONFIGS = {
    "identity-alpha-offset": dict(D=7, H=5, skip="identity", alpha=1.7, skip_offset=2),
    "projection-tanh": dict(D=4, H=5, skip="projection", activation="tanh"),
    "no-v": dict(D=5, H=5, skip="identity", v_terms=False),
    "no-skip": dict(D=3, H=5, skip="none"),
}


def _params(D, H, seed=0, alpha=1.0, skip_offset=0, dtype=np.float64, **kw):
    rng = np.random.default_rng(seed)
    p = reference.init(D, H, rng=rng, **kw)
    # Biases away from zero: a dropped or swapped b_f / b_r cannot hide.
    return p.replace(b=rng.uniform(-1, 1, 2 * H), alpha=alpha, skip_offset=skip_offset).astype(dtype)


def _data(p, T, B, seed=1, dtype=np.float64):
    rng = np.random.default_rng(seed)
    D, H = p.input_size, p.hidden_size
    x, c0 = rng.standard_normal((T, B, D)), rng.standard_normal((B, H))
    dy, dc_T = rng.standard_normal((T, B, H)), rng.standard_normal((B, H))
    return tuple(a.astype(dtype) for a in (x, c0, dy, dc_T))


def _compare(p, x, c0, dy, dc_T, mask=None, atol=1e-10, **kw):
    y_ref, c_ref, cache_ref = reference.forward(p.astype(np.float64), *(a.astype(np.float64) for a in (x, c0)), mask)
    g_ref, dx_ref, dc0_ref = reference.backward(p.astype(np.float64), cache_ref, dy.astype(np.float64), dc_T.astype(np.float64))
    y, c_T, cache = sru.forward(p, x, c0, mask, **kw)
    grads, dx, dc0 = sru.backward(p, cache, dy, dc_T, **kw)
    for name, got, want in [("y", y, y_ref), ("c_T", c_T, c_ref), ("dx", dx, dx_ref), ("dc0", dc0, dc0_ref)]:
        assert got.dtype == p.dtype, name
        np.testing.assert_allclose(got, want, rtol=0, atol=atol, err_msg=name)
    assert grads.array_names() == g_ref.array_names()
    for name in g_ref.array_names():
        np.testing.assert_allclose(getattr(grads, name), getattr(g_ref, name), rtol=0, atol=atol, err_msg=name)


@pytest.mark.parametrize("config", CONFIGS, ids=str)
@pytest.mark.parametrize("masked", [False, True], ids=["dense", "mask_pad"])
def test_forward_backward_match_reference_float64(config, masked):
    p = _params(**CONFIGS[config])
    x, c0, dy, dc_T = _data(p, T=3, B=2)
    mask = None
    if masked:  # sru's padding: sequence 1 ends after two steps
        mask = np.zeros((3, 2), bool)
        mask[2, 1] = True
    _compare(p, x, c0, dy, dc_T, mask, algorithm="tiled", tile=SMALL_TILE)


@pytest.mark.parametrize("config", CONFIGS, ids=str)
def test_vendor_product_path(config, host_gemm):
    p = _params(**CONFIGS[config])
    _compare(p, *_data(p, T=2, B=3), algorithm=host_gemm)


def test_single_step_single_sequence_default_tile():
    p = _params(D=5, H=5, skip="identity")
    _compare(p, *_data(p, T=1, B=1), algorithm="tiled")


def test_recurrence_kernel_over_several_blocks(host_gemm):
    # B*H = 300 threads: a full block of 256 and a partial one (the product is done on the host).
    p = _params(D=100, H=100, skip="identity")
    _compare(p, *_data(p, T=2, B=3), algorithm=host_gemm)


def test_float32():
    p = _params(dtype=np.float32, **CONFIGS["identity-alpha-offset"])
    x, c0, dy, dc_T = _data(p, T=3, B=2, dtype=np.float32)
    # The reference runs in float64 on the same float32 numbers, so only the kernels' rounding is left.
    # Each U entry sums D = 7 float32 products (~1e-6 relative); the recurrence is a convex combination
    # (f in (0, 1)) of bounded terms; backward's dW, dx sum T*B = 6 and kH = 15 terms of O(1). With
    # values O(1) everything stays below ~1e-5; 5e-5 keeps a margin and still fails on any wrong term
    # (those are > 1e-2).
    _compare(p, x, c0, dy, dc_T, atol=5e-5, algorithm="tiled", tile=SMALL_TILE)


# Each pair differs from the other in one option only (identity skip, D=5 > H=3 so the offset can move).
ONE_OPTION_APART = {
    "alpha": (dict(alpha=1.7), dict(alpha=0.6)),
    "skip_offset": (dict(skip_offset=0), dict(skip_offset=2)),
    "activation": (dict(activation="identity"), dict(activation="tanh")),
    "v": (dict(), dict(v_terms=False)),
}


@pytest.mark.parametrize("option", ONE_OPTION_APART, ids=str)
def test_each_model_gets_kernels_compiled_for_its_own_options(option):
    # The recurrence kernels take a model's options as compile-time constants, cached per option set:
    # two models one option apart, run one after the other, must each match the reference (a cache key
    # missing that option would hand the second model the first one's kernels).
    for i, opts in enumerate(ONE_OPTION_APART[option]):
        p = _params(D=5, H=3, seed=10 + i, skip="identity", **opts)
        _compare(p, *_data(p, T=2, B=2), algorithm="tiled", tile=SMALL_TILE)


def test_device_arrays_in_and_out():
    from numba import cuda

    p = _params(**CONFIGS["projection-tanh"])
    x, c0, dy, dc_T = _data(p, T=2, B=2)
    y_ref, c_ref, cache_ref = reference.forward(p, x, c0)
    _, dx_ref, _ = reference.backward(p, cache_ref, dy, dc_T)
    y, c_T, cache = sru.forward(sru.upload(p), cuda.to_device(x), cuda.to_device(c0), algorithm="tiled", tile=SMALL_TILE)
    assert not isinstance(y, np.ndarray) and not isinstance(c_T, np.ndarray)
    np.testing.assert_allclose(y.copy_to_host(), y_ref, rtol=0, atol=1e-10)
    grads, dx, _ = sru.backward(p, cache, cuda.to_device(dy), dc_T, algorithm="tiled", tile=SMALL_TILE)
    assert not isinstance(dx, np.ndarray) and isinstance(grads.W, np.ndarray)
    np.testing.assert_allclose(dx.copy_to_host(), dx_ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("config", ["identity-alpha-offset", "no-v"], ids=str)
def test_parameters_uploaded_once_or_by_another_module(config):
    # sru.upload stacks b and v for the kernels once; parameters uploaded by the generic upload (the one
    # every other cell module exports) are stacked per call instead, to the same numbers.
    from refrnn.cuda import _device

    p = _params(**CONFIGS[config])
    data = _data(p, T=2, B=2)
    P = sru.upload(p)
    np.testing.assert_array_equal(P.b.copy_to_host(), p.b)
    if p.v is not None:
        np.testing.assert_array_equal(P.v.copy_to_host(), p.v)
    for uploaded in (P, _device.upload(p)):
        _compare(uploaded, *data, algorithm="tiled", tile=SMALL_TILE)


def test_inference_without_cache():
    p = _params(**CONFIGS["no-skip"])
    x, c0, _, _ = _data(p, T=2, B=2)
    y_ref, c_ref, _ = reference.forward(p, x, c0)
    y, c_T, cache = sru.forward(p, x, c0, algorithm="tiled", tile=SMALL_TILE, store_cache=False)
    assert cache is None
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-10)
    np.testing.assert_allclose(c_T, c_ref, rtol=0, atol=1e-10)


def test_cublas_product(cublas_or_skip):
    p = _params(**CONFIGS["identity-alpha-offset"])
    _compare(p, *_data(p, T=3, B=2), algorithm="cublas")


def test_bad_input():
    p = _params(**CONFIGS["no-skip"])
    x, c0, dy, _ = _data(p, T=2, B=2)
    _, _, ref_cache = reference.forward(p, x, c0)
    with pytest.raises(TypeError, match="cache: expected the SRUDeviceCache"):
        sru.backward(p, ref_cache, dy)
    with pytest.raises(ValueError, match=r"mask_pad: expected shape \(T, B\) with T=2, B=2"):
        sru.forward(p, x, c0, np.zeros((2, 3), bool))
    with pytest.raises(ValueError, match=r"state0: expected shape \(B, H\)"):
        sru.forward(p, x, np.zeros((2, 4)))
