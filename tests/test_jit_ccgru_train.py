"""Compiled training of the conditional GRU (refrnn.jit.ccgru.forward_train / backward): float32, finite
differences, the dispatch through ``forward`` and :mod:`refrnn.fast`, renamed keywords, bad input.

float64 equality with the reference, every variant and normalisation, is the property in
``properties/test_jit_train_sru_ccgru.py``.

float32 tolerance. The float32 compiled paths are compared with the float64 reference on the same
float32-representable weights and inputs (the exact answer):

* forward (y): within ``TOL32 * (t + 2)`` at step t, TOL32 = 2e-6, the argument of
  ``tests/test_jit_ccgru.py`` (activations within 1.5e-7, pre-activation sums of <= D + H + 1 terms,
  a normalisation with inv_std <= ~1.5, a convex state update that does not expand errors); the batch
  statistics add a mean and a variance over B <= 4 samples, a few 2^-24 relative;
* gradients: within ``TOLG * (T + 1) * M``, TOLG = 1e-5, M the largest magnitude of the exact
  gradients of that backward (every field, dx, dh0). The backward recurrence is the transpose of the
  forward's (the same (T + 1) growth); each weight gradient then sums N = T*B row products, adding
  <= N 2^-24 ~ 1.4e-6 relative to its terms. The batch-norm backward, ``inv (g - mean g - n mean(g n))``,
  can cancel to far less than its terms (a bias gradient of the block variant sums to ~0 over the
  batch), so its error is relative to the common scale M, not to the entry.

Observed (10 seeds, every variant, T = 6, B = 4): forward 1.6e-6, gradients 5.9e-6 M; the tolerances
are 10x and 12x above, while a dropped term (the variance path of the batch norm, a bias) is off by
1e-2 M or more.
"""

import warnings

import numpy as np
import pytest

from refrnn import fast as fast_paths
from refrnn.cells import ccgru

fast = pytest.importorskip("refrnn.jit.ccgru")

TOL32 = 2e-6
TOLG = 1e-5
CELLS = [("full", None, 5, 7), ("lowrank", 3, 4, 9), ("block", 3, 5, 9), ("block", 2, 3, 64)]


def _case(variant, g, D, H, T, B, *, seed=0, mode="train"):
    """Training-mode params with non-zero biases, inputs, h0, dy; every value float32-representable."""
    rng = np.random.default_rng(seed)
    p = ccgru.init(D, H, variant=variant, g=g, rng=rng, s=-0.3, mode=mode)
    up = dict(b_rh=rng.uniform(-1, 1, 2 * H), running_mean=rng.uniform(-0.3, 0.3, p.gate_width),
              running_var=rng.uniform(0.5, 2.0, p.gate_width))
    if variant != "block":
        up["b_z"] = rng.uniform(-0.5, 0.5, H)
    if variant != "full":
        up["b_z_lr"] = rng.uniform(-0.5, 0.5, p.g)
    p = p.replace(**up).astype(np.float32).astype(np.float64)
    f32 = lambda a: a.astype(np.float32).astype(np.float64)  # noqa: E731
    x, h0, dy = f32(2 * rng.standard_normal((T, B, D))), f32(rng.standard_normal((B, H))), f32(rng.standard_normal((T, B, H)))
    return p, x, h0, dy


@pytest.mark.parametrize("seed", range(2))
@pytest.mark.parametrize("cell", CELLS)
def test_float32_within_justified_tolerance(cell, seed):
    T, B = 6, 4
    p, x, h0, dy = _case(*cell, T, B, seed=seed)
    y, _, cache = ccgru.forward(p, x, h0)
    grads, dx, dh0 = ccgru.backward(p, cache, dy)
    p32 = p.astype(np.float32)
    y32, _, c32 = fast.forward(p32, x.astype(np.float32), h0.astype(np.float32))
    g32, dx32, dh32 = fast.backward(p32, c32, dy.astype(np.float32))
    assert y32.dtype == dx32.dtype == g32.W_rh.dtype == np.float32
    for t in range(T):
        assert np.max(np.abs(y32[t] - y[t])) <= TOL32 * (t + 2), t
    exact = {**grads.arrays(), "dx": dx, "dh0": dh0}
    got = {**g32.arrays(), "dx": dx32, "dh0": dh32}
    M = max(np.max(np.abs(a)) for a in exact.values())
    for name, a in exact.items():
        assert np.max(np.abs(got[name] - a)) <= TOLG * (T + 1) * M, name


def test_compiled_gradients_match_central_differences():
    """Central differences of L = sum(y * dy) + sum(h_T * dh_T), float64, on a few entries of every field."""
    p, x, h0, dy = _case("lowrank", 2, 3, 5, 4, 3, seed=3)
    dT = np.random.default_rng(1).standard_normal(h0.shape)

    def loss(q, xx, hh):
        y, hT, _ = fast.forward_train(q, xx, hh)
        return float(np.sum(y * dy) + np.sum(hT * dT))

    grads, dx, dh0 = fast.backward(p, fast.forward_train(p, x, h0)[2], dy, dT)
    eps = 1e-6
    rng = np.random.default_rng(2)
    for name in p.array_names():
        if name in ("running_mean", "running_var", "b_z"):  # batch statistics: the output ignores them
            assert not np.any(getattr(grads, name))
            continue
        w = getattr(p, name)
        for idx in [tuple(rng.integers(s) for s in w.shape) for _ in range(3)]:
            plus, minus = w.copy(), w.copy()
            plus[idx] += eps
            minus[idx] -= eps
            fd = (loss(p.replace(**{name: plus}), x, h0) - loss(p.replace(**{name: minus}), x, h0)) / (2 * eps)
            assert abs(fd - getattr(grads, name)[idx]) <= 1e-6, (name, idx)
    for arr, g, which in ((x, dx, "x"), (h0, dh0, "h0")):
        idx = tuple(rng.integers(s) for s in arr.shape)
        plus, minus = arr.copy(), arr.copy()
        plus[idx] += eps
        minus[idx] -= eps
        args = (lambda a: (a, h0)) if which == "x" else (lambda a: (x, a))
        fd = (loss(p, *args(plus)) - loss(p, *args(minus))) / (2 * eps)
        assert abs(fd - g[idx]) <= 1e-6, which


def test_forward_in_training_mode_and_the_fast_module_dispatch():
    p, x, h0, dy = _case("block", 3, 5, 9, 4, 3)
    y, hT, cache = fast.forward(p, x, h0)  # training mode: the compiled training forward
    assert isinstance(cache, ccgru.CCGRUCache) and not y.flags.writeable
    y2, hT2, cache2 = fast_paths.forward(p, x, h0, backend="jit")
    assert np.array_equal(y, y2) and isinstance(cache2, ccgru.CCGRUCache)
    via_fast = fast_paths.backward(p, cache2, dy, backend="jit")
    direct = fast.backward(p, cache, dy)
    for name in p.array_names():
        assert np.array_equal(getattr(via_fast[0], name), getattr(direct[0], name)), name
    new = ccgru.update_running_stats(p, cache)  # the cache's running statistics, updated
    ref_new = ccgru.update_running_stats(p, ccgru.forward(p, x, h0)[2])
    assert np.max(np.abs(new.running_mean - ref_new.running_mean)) <= 1e-12
    assert not np.allclose(new.running_var, p.running_var)


def test_former_keywords_still_work():
    p, x, h0, dy = _case("full", None, 5, 7, 3, 2)
    y, _, cache = fast.forward_train(p, x, h0)
    dT = np.ones_like(h0)
    want = fast.backward(p, cache, dy, dT)
    with pytest.warns(DeprecationWarning, match="h0= is deprecated"):
        y_old, _, cache_old = fast.forward_train(p, x, h0=h0)
    with pytest.warns(DeprecationWarning, match="dh_T= is deprecated"):
        got = fast.backward(p, cache_old, dy, dh_T=dT)
    assert np.array_equal(y, y_old) and np.array_equal(want[1], got[1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fast.forward(p, x, state0=h0)


def test_empty_sequence():
    p, x, h0, dy = _case("lowrank", 3, 4, 9, 3, 2)
    y, hT, cache = fast.forward_train(p, x[:0], h0)
    assert y.shape == (0, 2, 9) and np.array_equal(hT, h0)
    grads, dx, dh0 = fast.backward(p, cache, dy[:0])
    assert dx.shape == (0, 2, 4) and np.array_equal(dh0, np.zeros_like(h0))
    assert not np.any(grads.W_rh)


def test_bad_input():
    p, x, h0, dy = _case("lowrank", 3, 4, 9, 3, 2)
    _, _, cache = fast.forward_train(p, x, h0)
    with pytest.raises(ValueError, match="algorithm: training mode"):
        fast.forward(p, x, h0, algorithm="unstructured")
    with pytest.raises(ValueError, match="B >= 2"):
        fast.forward_train(p, x[:, :1], h0[:1])
    with pytest.raises(ValueError, match=r"dy: expected shape \(T, B, H\)"):
        fast.backward(p, cache, dy[:2])
    with pytest.raises(TypeError, match="dy: dtype float32"):
        fast.backward(p, cache, dy.astype(np.float32))
    with pytest.raises(ValueError, match=r"dstate_T: expected shape \(B, H\)"):
        fast.backward(p, cache, dy, np.zeros((2, 5)))
    inference = p.replace(mode="inference")
    _, _, z_only = fast.forward(inference, x, h0)
    with pytest.raises(TypeError, match="cache: expected the CCGRUCache of a training forward"):
        fast.backward(inference, z_only, dy)
    with pytest.raises(TypeError, match="cache: expected the CCGRUCache"):
        fast.backward(p, tuple(cache), dy)
    other = _case("lowrank", 3, 4, 8, 3, 2)[0]
    with pytest.raises(ValueError, match="cache.h"):
        fast.backward(other, cache, dy[..., :8])
    with pytest.raises(TypeError, match="params"):
        fast.backward(object(), cache, dy)
    with pytest.raises(ValueError, match="NaN"):
        fast.forward_train(p, np.full_like(x, np.nan), h0)
    with pytest.raises(ValueError, match="overflowed"):
        fast.forward_train(p, np.full_like(x, 1e200) * np.arange(2)[None, :, None], h0)


def test_small_per_step_products_run_on_one_blas_thread(monkeypatch):
    """The kernels' per-step products are small at test sizes: every OpenBLAS is on one thread while
    they run (see ONE_THREAD_STEP_MNK), and back on its own count afterwards."""
    from refrnn.jit import _blas, _ccgru_train

    if not _blas.get_threads():
        pytest.skip("no OpenBLAS found in this process")
    seen = []
    for name in ("forward_kernel", "backward_kernel"):
        kernel = getattr(_ccgru_train, name)

        def spy(*args, kernel=kernel):
            seen.append(_blas.get_threads())
            return kernel(*args)

        monkeypatch.setattr(_ccgru_train, name, spy)
    before = _blas.get_threads()
    p, x, h0, dy = _case("full", None, 5, 7, 3, 2)
    fast.backward(p, fast.forward_train(p, x, h0)[2], dy)
    assert len(seen) == 2 and all(set(s) == {1} for s in seen)
    assert _blas.get_threads() == before
    assert 2 * 7 * (3 * 7) < fast.ONE_THREAD_STEP_MNK
