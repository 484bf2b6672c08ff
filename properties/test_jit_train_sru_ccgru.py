"""Compiled training of the SRU and the conditional GRU equals the reference's, gradient for gradient.

Equivalences (float64, within 1e-10 absolute):

* :func:`refrnn.jit.ccgru.forward_train` fills the reference's :class:`refrnn.cells.ccgru.CCGRUCache`
  with the same arrays (batch statistics and updated running statistics included), and
  :func:`refrnn.jit.ccgru.backward` returns the reference's gradients (every field, ``dx``,
  ``dh0``), for every variant (full, low-rank, block z) and normalisation (batch statistics in
  training mode, running statistics, folded), on either forward's cache;
* :func:`refrnn.jit.sru.backward` equals :func:`refrnn.cells.sru.backward` for every option (skip
  identity / projection / none with its offset and alpha, v terms or none, identity or tanh g,
  padding mask);
* sizes: T = 1, B = 1 (where batch statistics allow it), H not a multiple of 8 or 16; the final-state
  gradient None, zero, or random;
* a few Adam updates of ``refrnn reproduce``'s language model, trained through the compiled paths,
  land on the parameters the reference training reaches.
"""

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from refrnn.cells import ccgru, sru

jit_ccgru = pytest.importorskip("refrnn.jit.ccgru")
jit_sru = pytest.importorskip("refrnn.jit.sru")

TOL = 1e-10
NORMS = (("train", "batch"), ("inference", "batch"), ("train", "folded"))


def _max_err(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b)), initial=0.0))


def _assert_grads_equal(ref, got):
    g_r, dx_r, ds_r = ref
    g_j, dx_j, ds_j = got
    assert type(g_r) is type(g_j)
    assert g_r.array_names() == g_j.array_names()
    for name, a in g_r.arrays().items():
        assert _max_err(a, getattr(g_j, name)) <= TOL, name
    assert _max_err(dx_r, dx_j) <= TOL, "dx"
    assert _max_err(ds_r, ds_j) <= TOL, "dstate0"


def _final_gradient(draw, rng, B, H):
    kind = draw(st.sampled_from(["none", "zero", "random"]), label="dstate_T")
    if kind == "none":
        return None
    return np.zeros((B, H)) if kind == "zero" else rng.standard_normal((B, H))


@st.composite
def ccgru_cases(draw):
    variant = draw(st.sampled_from(ccgru.VARIANTS), label="variant")
    mode, norm = draw(st.sampled_from(NORMS), label="mode, norm")
    H = draw(st.integers(1, 19), label="H")
    g = None
    if variant == "lowrank":
        g = draw(st.integers(1, 5), label="rank")
    elif variant == "block":
        g = draw(st.sampled_from([d for d in range(1, H + 1) if H % d == 0]), label="blocks")
    D = draw(st.integers(1, 6), label="D")
    T = draw(st.integers(1, 5), label="T")
    B = draw(st.integers(2 if (mode, norm) == ("train", "batch") else 1, 4), label="B")
    seed = draw(st.integers(0, 2**16), label="seed")
    rng = np.random.default_rng(seed)
    p = ccgru.init(D, H, variant=variant, g=g, rng=rng, mode=mode, s=draw(st.sampled_from([0.0, -0.4, 0.3])))
    K = p.gate_width
    # Non-zero biases and statistics: a dropped bias or a statistic used the wrong way shows.
    updates = dict(b_rh=rng.uniform(-1, 1, 2 * H), running_mean=rng.uniform(-0.3, 0.3, K),
                   running_var=rng.uniform(0.5, 2.0, K))
    if variant != "block":
        updates["b_z"] = rng.uniform(-0.5, 0.5, H)
    if variant != "full":
        updates["b_z_lr"] = rng.uniform(-0.5, 0.5, g)
    p = p.replace(**updates)
    if norm == "folded":
        p = ccgru.fold_normalization(p).replace(mode=mode)
    x = 2 * rng.standard_normal((T, B, D))
    h0 = rng.standard_normal((B, H))
    dy = rng.standard_normal((T, B, H))
    return p, x, h0, dy, _final_gradient(draw, rng, B, H)


@given(ccgru_cases())
def test_ccgru_compiled_training_equals_the_reference(case):
    p, x, h0, dy, dstate_T = case
    y_r, hT_r, c_r = ccgru.forward(p, x, h0)
    y_j, hT_j, c_j = jit_ccgru.forward_train(p, x, h0)
    assert type(c_j) is ccgru.CCGRUCache
    for name in ccgru.CCGRUCache._fields:
        a, b = getattr(c_r, name), getattr(c_j, name)
        assert (a is None) == (b is None), name
        if a is not None:
            assert a.shape == b.shape and _max_err(a, b) <= TOL, name
    assert _max_err(y_r, y_j) <= TOL and _max_err(hT_r, hT_j) <= TOL
    ref = ccgru.backward(p, c_r, dy, dstate_T)
    _assert_grads_equal(ref, jit_ccgru.backward(p, c_j, dy, dstate_T))
    _assert_grads_equal(ref, jit_ccgru.backward(p, c_r, dy, dstate_T))  # the reference's cache too


@st.composite
def sru_cases(draw):
    skip = draw(st.sampled_from(sru.SKIPS), label="skip")
    v_terms = draw(st.booleans(), label="v terms")
    activation = draw(st.sampled_from(sru.ACTIVATIONS), label="activation")
    masked = draw(st.booleans(), label="mask_pad")
    H = draw(st.integers(1, 19), label="H")
    offset = draw(st.integers(0, 3), label="skip_offset") if skip == "identity" else 0
    D = H + offset + draw(st.integers(0, 2)) if skip == "identity" else draw(st.integers(1, 6), label="D")
    T = draw(st.integers(1, 5), label="T")
    B = draw(st.integers(1, 4), label="B")
    rng = np.random.default_rng(draw(st.integers(0, 2**16), label="seed"))
    p = sru.init(D, H, skip=skip, v_terms=v_terms, activation=activation, rng=rng)
    p = p.replace(b=rng.uniform(-1, 1, 2 * H), skip_offset=offset)
    if v_terms:
        p = p.replace(v=rng.uniform(-1, 1, 2 * H))
    if skip != "none":
        p = p.replace(alpha=1.3)
    x = 2 * rng.standard_normal((T, B, D))
    c0 = rng.standard_normal((B, H))
    mask = rng.random((T, B)) < 0.3 if masked else None
    dy = rng.standard_normal((T, B, H))
    return p, x, c0, mask, dy, _final_gradient(draw, rng, B, H)


@given(sru_cases())
def test_sru_compiled_backward_equals_the_reference(case):
    p, x, c0, mask, dy, dstate_T = case
    y_r, cT_r, c_r = sru.forward(p, x, c0, mask)
    y_j, cT_j, c_j = jit_sru.forward(p, x, c0, mask)
    assert _max_err(y_r, y_j) <= TOL and _max_err(cT_r, cT_j) <= TOL
    ref = sru.backward(p, c_r, dy, dstate_T)
    _assert_grads_equal(ref, jit_sru.backward(p, c_j, dy, dstate_T))
    _assert_grads_equal(ref, jit_sru.backward(p, c_r, dy, dstate_T))


# ---------------------------------------------------------------------------------------------
# A few Adam updates of reproduce's language model: compiled training lands where the reference's does
# ---------------------------------------------------------------------------------------------

ADAM_TOL = 1e-9  # a few updates of lr 3e-3; Adam's m / sqrt(v) is scale-free, so gradient rounding stays ~1e-13


@pytest.mark.parametrize("kind, g", [("gru", None), ("block", 2), ("lowrank", 3), ("full", None)])
def test_adam_training_through_the_compiled_paths_equals_the_reference(kind, g):
    from refrnn.reproduce import data, model as lm, train

    corpus = data.Corpus("tiny", data.encode("the quick brown fox jumps over the lazy dog " * 12),
                         data.encode("a lazy dog sleeps "), "")
    config = train.TrainConfig(name=kind, kind=kind, hidden=6, g=g, batch=3, bptt=5, steps=4, lr=3e-3,
                               reset_every=3, dtype="float64", s=-0.2)
    runs = {b: train.train(config, corpus, progress=False, backend=b) for b in ("reference", "jit")}
    ref, got = (lm.trainable(runs[b].model) for b in ("reference", "jit"))
    moved = max(_max_err(a, b) for a, b in zip(ref.values(), lm.trainable(train.fresh_state(config).model).values()))
    assert moved > 1e-4  # the updates did something
    for name in ref:
        assert _max_err(ref[name], got[name]) <= ADAM_TOL, name
    if kind != "gru":
        for name in ("running_mean", "running_var"):
            assert _max_err(getattr(runs["reference"].model.cell, name), getattr(runs["jit"].model.cell, name)) <= ADAM_TOL
    assert np.allclose(runs["reference"].train_bpc, runs["jit"].train_bpc, rtol=0, atol=1e-12)
    assert _max_err(runs["reference"].h, runs["jit"].h) <= ADAM_TOL
