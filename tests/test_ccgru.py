"""Tests of the conditional-computation GRU (refrnn.cells.ccgru) against the seed paper's equations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from refrnn import gradcheck
from refrnn.layers import stack
from refrnn.cells import ccgru, gru, module_for

VARIANTS = [("full", None), ("lowrank", 2), ("block", 2)]
# (mode, norm): batch statistics (training), running statistics (inference), folded weights.
SETTINGS = [("train", "batch"), ("inference", "batch"), ("inference", "folded")]
D, H = 3, 4


def Phi(v: float) -> float:
    return 0.5 * (1.0 + math.erf(v / math.sqrt(2.0)))


def random_params(variant, g, *, seed, s=-0.3, mode="train", D=D, H=H):
    """Non-trivial weights, biases and running statistics (init's are zero / one)."""
    rng = np.random.default_rng(seed)
    p = ccgru.init(D, H, variant=variant, g=g, s=s, mode=mode, rng=rng)
    p = p.map(lambda a: a + 0.4 * rng.standard_normal(a.shape))
    changes = {"running_var": rng.uniform(0.3, 2.0, p.gate_width)}
    if variant != "full":  # keep most of the ReLU bottleneck alive so the z path carries gradient
        changes["b_z_lr"] = p.b_z_lr + 0.5
    return p.replace(**changes)


def bottleneck_preactivation(p, cache):
    """u = W_z^lr x + U_z^lr h + b_z^lr at every step, recomputed from the cache (lowrank/block)."""
    return cache.x @ p.W_z_lr.T + cache.h[:-1] @ p.U_z_lr.T + p.b_z_lr


def kink_margin(p, cache) -> float:
    """Distance of the nearest clipped-tanh / ReLU input from its kink at 0."""
    margin = float(np.min(np.abs(cache.n_hat + p.s)))
    if p.variant != "full":
        margin = min(margin, float(np.min(np.abs(bottleneck_preactivation(p, cache)))))
    return margin


def gradcheck_case(variant, g, mode, norm):
    """Seeded data with every kink at least 1e-4 away: the finite differences (step 1e-6, which
    moves a pre-activation by well under 1e-4) never cross one, so they differentiate a smooth map."""
    for seed in range(100):
        p = random_params(variant, g, seed=seed, mode=mode)
        if norm == "folded":
            p = ccgru.fold_normalization(p)
        rng = np.random.default_rng(1000 + seed)
        x = rng.standard_normal((3, 5, D))
        h0 = 0.5 * rng.standard_normal((5, H))
        cache = ccgru.forward(p, x, h0)[2]
        z = cache.z
        if kink_margin(p, cache) > 1e-4 and np.any(z == 0) and np.any(z > 0):
            return p, x, h0
    raise AssertionError("no seed gave pre-activations clear of the kinks")  # pragma: no cover


@pytest.mark.parametrize("mode,norm", SETTINGS)
@pytest.mark.parametrize("variant,g", VARIANTS)
def test_gradcheck(variant, g, mode, norm):
    p, x, h0 = gradcheck_case(variant, g, mode, norm)
    report = gradcheck(p, x, h0, tol=1e-6)
    assert report.passed, f"\n{report}"
    assert set(report.relative) == set(p.array_names()) | {"x", "state0"}


@pytest.mark.parametrize("variant,g", [("full", None), ("lowrank", 2)])
def test_training_mode_bias_before_batch_norm_has_zero_gradient(variant, g):
    # b_z is cancelled by the batch mean; backward says so exactly, and the output ignores b_z.
    p, x, h0 = gradcheck_case(variant, g, "train", "batch")
    y, _, cache = ccgru.forward(p, x, h0)
    grads = ccgru.backward(p, cache, np.ones_like(y))[0]
    assert np.array_equal(grads.b_z, np.zeros(H))
    assert np.array_equal(grads.running_mean, np.zeros(p.gate_width))
    y2 = ccgru.forward(p.replace(b_z=p.b_z + 3.0), x, h0)[0]
    assert np.array_equal(y, y2)


# ---------------------------------------------------------------- forward against the paper, literally


def naive_forward(p, x, h0):
    """Eqs. 2, 4-11 written out step by step; the block variant with the explicit (H, g) copy matrix
    of Eq. 10 and batch norm over all H copies, as printed. Returns (y, running_mean, running_var)."""
    Hn = p.hidden_size
    W_r, W_h = p.W_rh[:Hn], p.W_rh[Hn:]
    U_r, U_h = p.U_rh[:Hn], p.U_rh[Hn:]
    b_r, b_h = p.b_rh[:Hn], p.b_rh[Hn:]
    rm, rv = p.running_mean, p.running_var
    if p.variant == "block":
        block = Hn // p.g
        W_z, b_z = np.kron(np.eye(p.g), np.ones((block, 1))), np.zeros(Hn)  # Eq. 10
        rm, rv = np.repeat(rm, block), np.repeat(rv, block)
    elif p.variant == "lowrank":
        W_z, b_z = p.W_z, p.b_z
    h, ys = h0, []
    for x_t in x:
        r = 1.0 / (1.0 + np.exp(-(x_t @ W_r.T + h @ U_r.T + b_r)))  # Eq. 2
        h_hat = np.tanh(x_t @ W_h.T + r * (h @ U_h.T) + b_h)  # Eq. 5
        if p.variant == "full":
            a = x_t @ p.W_z.T + h @ p.U_z.T + p.b_z  # Eq. 1
        else:
            z_lr = np.maximum(0.0, x_t @ p.W_z_lr.T + h @ p.U_z_lr.T + p.b_z_lr)  # Eq. 8
            a = z_lr @ W_z.T + b_z  # Eq. 9 (Eq. 10 for the block variant)
        if p.mode == "train":
            mu, var = a.mean(axis=0), a.var(axis=0)
            rm = (1 - p.momentum) * rm + p.momentum * mu
            rv = (1 - p.momentum) * rv + p.momentum * a.var(axis=0, ddof=1)
        else:
            mu, var = p.running_mean, p.running_var
            if p.variant == "block":
                mu, var = np.repeat(mu, block), np.repeat(var, block)
        bn = (a - mu) / np.sqrt(var + p.eps) + p.s  # Eq. 7, with the sign of s corrected
        z = np.where(bn > 0, np.tanh(bn), 0.0)  # Eq. 6
        h = (1 - z) * h + z * h_hat  # Eq. 4
        ys.append(h)
    return np.stack(ys), rm, rv


@pytest.mark.parametrize("mode", ["train", "inference"])
@pytest.mark.parametrize("variant,g", VARIANTS + [("lowrank", 6), ("block", 1), ("block", 4)])
def test_forward_matches_the_equations(variant, g, mode):
    p = random_params(variant, g, seed=7, mode=mode, D=5, H=8)
    rng = np.random.default_rng(8)
    x = rng.standard_normal((6, 7, 5))
    h0 = 0.5 * rng.standard_normal((7, 8))
    y, h_T, cache = ccgru.forward(p, x, h0)
    y_ref, rm_ref, rv_ref = naive_forward(p, x, h0)
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-12)
    assert np.array_equal(h_T, y[-1])
    rm, rv = cache.running_mean, cache.running_var
    if variant == "block":
        rm, rv = np.repeat(rm, 8 // g), np.repeat(rv, 8 // g)
    np.testing.assert_allclose(rm, rm_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(rv, rv_ref, rtol=0, atol=1e-12)
    if mode == "inference":  # running statistics are only read
        assert np.array_equal(cache.running_mean, p.running_mean)
        assert np.array_equal(cache.running_var, p.running_var)
    else:
        assert not np.allclose(cache.running_mean, p.running_mean)


def test_block_gate_is_constant_on_each_block():
    p = random_params("block", 3, seed=3, D=4, H=12)
    x = np.random.default_rng(4).standard_normal((4, 6, 4))
    z = ccgru.forward(p, x)[2].z.reshape(4, 6, 3, 4)
    assert np.array_equal(z, np.broadcast_to(z[..., :1], z.shape))
    assert np.all((z >= 0) & (z < 1))


def test_inference_with_the_batch_statistics_equals_training():
    # One step from h0 = 0: a = W_z x + b_z, so its batch statistics can be computed here and given
    # to the inference path as running statistics; both normalisation paths must then agree.
    p = random_params("full", None, seed=5)
    x = np.random.default_rng(6).standard_normal((1, 9, D))
    a = x[0] @ p.W_z.T + p.b_z
    y_train = ccgru.forward(p, x)[0]
    q = p.replace(mode="inference", running_mean=a.mean(axis=0), running_var=a.var(axis=0))
    np.testing.assert_allclose(ccgru.forward(q, x)[0], y_train, rtol=0, atol=1e-12)


def test_update_running_stats_returns_new_params():
    p = random_params("lowrank", 2, seed=9)
    x = np.random.default_rng(10).standard_normal((3, 5, D))
    cache = ccgru.forward(p, x)[2]
    q = ccgru.update_running_stats(p, cache)
    assert type(q) is type(p) and q.s == p.s and q.mode == "train"
    assert np.array_equal(q.running_mean, cache.running_mean) and np.array_equal(q.running_var, cache.running_var)
    assert not np.array_equal(q.running_mean, p.running_mean)
    assert np.array_equal(q.W_z, p.W_z)
    assert not np.shares_memory(q.running_mean, cache.running_mean)


def test_cliptanh():
    v = np.array([-2.0, -1e-300, -0.0, 0.0, 1e-300, 0.5, 30.0])
    out = ccgru.cliptanh(v)
    assert np.array_equal(out, [0, 0, 0, 0, 1e-300, np.tanh(0.5), 1.0])
    assert not np.any(np.signbit(out))


# ---------------------------------------------------------------- conditional computation: z = 0 copies h


@pytest.mark.parametrize("variant,g", VARIANTS)
def test_zero_gate_copies_the_state_bit_for_bit(variant, g):
    p = random_params(variant, g, seed=11, mode="inference", s=0.0)
    K = p.gate_width
    off = np.arange(K) % 2 == 0  # gate units forced to z = 0: a running mean far above any a
    running_mean = np.where(off, 1e3, -30.0)  # the others forced well into z > 0 (z near 0.99)
    p = p.replace(running_mean=running_mean, running_var=np.full(K, 100.0))
    off_units = np.repeat(off, H // K)
    rng = np.random.default_rng(12)
    x = rng.standard_normal((5, 3, D))
    h0 = rng.standard_normal((3, H))
    y, _, cache = ccgru.forward(p, x, h0)
    assert np.all(cache.z[..., off_units] == 0) and np.all(cache.z[..., ~off_units] > 0)
    h = cache.h
    for t in range(5):
        assert np.array_equal(h[t + 1][:, off_units], h[t][:, off_units])
        assert np.all(h[t + 1][:, ~off_units] != h[t][:, ~off_units])
    assert np.array_equal(y[-1][:, off_units], h0[:, off_units])
    assert ccgru.z_sparsity(cache) == pytest.approx(off_units.mean())


@pytest.mark.parametrize("variant,g", VARIANTS)
def test_very_negative_shift_freezes_the_state_in_training(variant, g):
    # |BN(a) - s| <= sqrt(B - 1) with batch statistics, so s = -50 zeroes every gate.
    p = random_params(variant, g, seed=13, s=-50.0)
    rng = np.random.default_rng(14)
    h0 = rng.standard_normal((6, H))
    y, h_T, cache = ccgru.forward(p, rng.standard_normal((4, 6, D)), h0)
    assert ccgru.z_sparsity(cache) == 1.0
    assert np.array_equal(h_T, h0) and np.array_equal(y, np.broadcast_to(h0, y.shape))


def test_sparsity_rises_as_s_falls_like_phi_of_minus_s():
    """Full-rank, training mode. With batch statistics each unit's normalised pre-activation is close to
    standard normal (a = W_z x + U_z h + b_z, x ~ N(0, I), sums of 64 terms), so P(z = 0) = Phi(-s).

    Tolerance: N = T*B*H = 131072 gate entries; the binomial standard error is
    sqrt(p(1-p)/N) <= 0.0014, and standardising with B = 512 sample statistics biases the fraction by
    O(1/B) ~ 0.001. 0.01 is 7 standard errors (measured deviations: <= 0.0016 over three seeds), yet
    fails for the printed sign of s (Phi(s): off by 0.2 at s = -0.25) or a sigma^2 divisor.
    """
    T, B, Din, Hn = 4, 512, 64, 64
    p = ccgru.init(Din, Hn, rng=0)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((T, B, Din))
    h0 = rng.uniform(-1, 1, (B, Hn))
    fractions = []
    for s in (0.0, -0.25, -0.5, -0.75):
        cache = ccgru.forward(p.replace(s=s), x, h0)[2]
        frac = float(ccgru.z_sparsity(cache))
        assert frac == pytest.approx(Phi(-s), abs=0.01), (s, frac, Phi(-s))
        fractions.append(frac)
    assert fractions == sorted(fractions) and len(set(fractions)) == 4
    per_step = ccgru.z_sparsity(cache, axis=(1, 2))
    assert per_step.shape == (T,)


# ---------------------------------------------------------------- folding the inference normalisation


@pytest.mark.parametrize("variant,g", VARIANTS + [("block", 4)])
def test_folded_equals_unfolded(variant, g):
    p = random_params(variant, g, seed=15, mode="inference", D=5, H=8)
    p = p.replace(running_mean=np.random.default_rng(16).normal(0.0, 1.5, p.gate_width))
    rng = np.random.default_rng(17)
    x = rng.standard_normal((6, 4, 5))
    h0 = rng.standard_normal((4, 8))
    y, h_T, cache = ccgru.forward(p, x, h0)
    f = ccgru.fold_normalization(p)
    assert f.norm == "folded" and type(f) is type(p) and f.s == p.s
    assert ccgru.z_sparsity(cache) > 0
    for folded in (f, f.replace(mode="train")):  # folded weights compute the inference map in both modes
        y_f, h_T_f, cache_f = ccgru.forward(folded, x, h0)
        np.testing.assert_allclose(y_f, y, rtol=0, atol=1e-12)
        np.testing.assert_allclose(h_T_f, h_T, rtol=0, atol=1e-12)
        np.testing.assert_allclose(cache_f.z, cache.z, rtol=0, atol=1e-12)
        assert np.array_equal(cache_f.running_mean, f.running_mean)  # never updated when folded
    if variant != "block":
        assert np.array_equal(f.running_mean, np.zeros(8))
    assert ccgru.fold_normalization(f) is f


# ---------------------------------------------------------------- registry, stacking, dtypes


def test_registered_and_stackable():
    layers = (random_params("full", None, seed=18), random_params("block", 2, seed=19, mode="inference", D=H))
    assert all(module_for(p) is ccgru for p in layers)
    top = gru.init(H, 3, rng=20)
    rng = np.random.default_rng(21)
    x = rng.standard_normal((3, 4, D))
    y, states, _ = stack.forward(layers + (top,), x)
    assert y.shape == (3, 4, 3) and states[0].shape == (4, H)
    # gradients flow through a stack: a conditional GRU (kinks cleared as above) under a GRU
    p, x, h0 = gradcheck_case("lowrank", 2, "train", "batch")
    report = gradcheck((p, top), x, (h0, np.zeros((5, 3))))
    assert report.passed, f"\n{report}"


def test_float32_follows_float64():
    p = random_params("lowrank", 2, seed=22)
    x = np.random.default_rng(23).standard_normal((5, 6, D))
    y64 = ccgru.forward(p, x)[0]
    y32, _, cache = ccgru.forward(p.astype(np.float32), x.astype(np.float32))
    assert y32.dtype == np.float32 and cache.running_var.dtype == np.float32
    # float32 rounding (6e-8) through ~20 operations a step, 5 steps, amplified by up to
    # 1/sqrt(var + eps) < 2 in batch norm: errors of a few 1e-6; 1e-4 leaves room for a gate entry
    # near the clipped-tanh kink whose z flips between 0 and a tiny value (continuous, so still small).
    np.testing.assert_allclose(y32, y64, rtol=0, atol=1e-4)


# ---------------------------------------------------------------- bad input


def test_bad_construction_arguments():
    with pytest.raises(ValueError, match="variant"):
        ccgru.init(D, H, variant="sparse")
    with pytest.raises(ValueError, match=r"g=3.*H=4"):
        ccgru.init(D, H, variant="block", g=3)
    with pytest.raises(ValueError, match="g"):
        ccgru.init(D, H, variant="lowrank")
    with pytest.raises(ValueError, match="g"):
        ccgru.init(D, H, variant="full", g=2)
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match=r"\.s: expected a finite"):
            ccgru.init(D, H, s=bad)
    with pytest.raises(ValueError, match=r"\.s: "):
        ccgru.init(D, H).replace(s=float("nan"))
    with pytest.raises(ValueError, match="mode"):
        ccgru.init(D, H, mode="eval")
    with pytest.raises(ValueError, match="norm"):
        ccgru.init(D, H).replace(norm="layer")
    with pytest.raises(ValueError, match="eps"):
        ccgru.init(D, H, eps=0.0)
    with pytest.raises(ValueError, match="momentum"):
        ccgru.init(D, H, momentum=1.5)


def test_bad_parameter_shapes():
    p = ccgru.init(D, H, variant="block", g=2, rng=0)
    with pytest.raises(ValueError, match=r"g=3.*H=4"):
        p.replace(
            W_z_lr=np.zeros((3, D)),
            U_z_lr=np.zeros((3, H)),
            b_z_lr=np.zeros(3),
            running_mean=np.zeros(3),
            running_var=np.ones(3),
        )
    with pytest.raises(ValueError, match="running_mean"):
        p.replace(running_mean=np.zeros(H))
    q = ccgru.init(D, H, rng=0)
    with pytest.raises(ValueError, match=r"U_z.*\(4, 3\)"):
        q.replace(U_z=np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"W_rh.*\(2H, D\)"):
        q.replace(W_rh=np.zeros((2 * H + 1, D)))
    with pytest.raises(ValueError, match=r"W_z.*D=3, expected 4"):  # D is read from W_rh
        q.replace(W_rh=np.zeros((2 * H, D + 1)))
    with pytest.raises(ValueError, match="b_z"):
        q.replace(b_z=np.full(H, np.nan))
    with pytest.raises(TypeError, match="dtype"):
        q.replace(W_z=q.W_z.astype(np.float32))


def test_bad_forward_and_backward_inputs():
    p = ccgru.init(D, H, rng=0)
    x = np.zeros((2, 3, D))
    with pytest.raises(ValueError, match=r"x: .*\(2, 3, 5\)"):
        ccgru.forward(p, np.zeros((2, 3, 5)))
    with pytest.raises(TypeError, match="x: dtype float32"):
        ccgru.forward(p, x.astype(np.float32))
    with pytest.raises(ValueError, match="state0"):
        ccgru.forward(p, x, np.zeros((2, H)))
    with pytest.raises(ValueError, match=r"x: .*B >= 2"):
        ccgru.forward(p, np.zeros((2, 1, D)))
    ccgru.forward(p.replace(mode="inference"), np.zeros((2, 1, D)))  # one sequence is fine at inference
    with pytest.raises(ValueError, match="running_var"):
        ccgru.forward(p.replace(mode="inference", running_var=-np.ones(H)), x)
    with pytest.raises(TypeError, match="params"):
        ccgru.forward(gru.init(D, H), x)
    y, _, cache = ccgru.forward(p, x)
    with pytest.raises(ValueError, match="dy"):
        ccgru.backward(p, cache, np.zeros((2, 3, H + 1)))
    with pytest.raises(ValueError, match="dstate_T"):
        ccgru.backward(p, cache, np.zeros_like(y), np.zeros((3, H + 1)))
