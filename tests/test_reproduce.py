"""Tests of refrnn.reproduce: corpus mapping, the LM gradient, training, bit-exact resume, the pipeline."""

from __future__ import annotations

import io
import json
import math
import os

import numpy as np
import pytest

from refrnn.cells import ccgru
from refrnn.reproduce import cli, data, model as lm, speed, train

# ---------------------------------------------------------------------------------------------
# Corpus
# ---------------------------------------------------------------------------------------------


def test_encode_maps_to_27_symbols_like_text8():
    assert data.V == 27 and len(set(data.SYMBOLS)) == 27
    ids = data.encode("  Hello, World!\n\tÉcole 42 -- x-ray  ")
    assert data.decode(ids) == "hello world cole x ray"
    assert ids.dtype == np.uint8 and ids.max() < 27


def test_default_corpus_is_sizeable_english_in_the_alphabet():
    c = data.default_corpus()
    ids = np.concatenate([c.train, c.valid])
    assert len(ids) > 100_000 and ids.max() < 27
    assert abs(len(c.valid) / len(ids) - 0.05) < 1e-3  # the paper's 95/5 split
    text = data.decode(ids[:5000])
    assert "  " not in text and " the " in text
    assert data.default_corpus().sha256 == c.sha256  # deterministic


def test_text8_loader_splits_95_5_and_rejects_other_bytes(tmp_path):
    path = tmp_path / "text8"
    path.write_bytes(b" anarchism originated as a term of abuse" * 50)
    c = data.load_text8(str(path))
    assert len(c.train) + len(c.valid) == 2000 and len(c.valid) == 100
    assert data.decode(c.train[:11]) == " anarchism "
    bad = tmp_path / "bad"
    bad.write_bytes(b"abc Def")
    with pytest.raises(ValueError, match="offset 4"):
        data.load_text8(str(bad))
    with pytest.raises(ValueError, match="no such file"):
        data.load_text8(str(tmp_path / "missing"))


# ---------------------------------------------------------------------------------------------
# The language model's gradient (embedding + cell + softmax) against central differences
# ---------------------------------------------------------------------------------------------

KIND_G = [("gru", None), ("block", 2), ("lowrank", 2), ("full", None)]


def _kink_margin(model, ids, h0) -> float:
    """Nearest clipped-tanh / ReLU input to its kink (ccgru), so finite differences stay smooth."""
    if model.kind == "gru":
        return math.inf
    p = model.cell
    cache = ccgru.forward(p, lm.inputs(model, ids), h0)[2]
    margin = float(np.min(np.abs(cache.n_hat + p.s)))
    if p.variant != "full":
        u = cache.x @ p.W_z_lr.T + cache.h[:-1] @ p.U_z_lr.T + p.b_z_lr
        margin = min(margin, float(np.min(np.abs(u))))
    return margin


def _tiny_case(kind, g, embed):
    T, B, H = 4, 3, 4
    for seed in range(200):
        rng = np.random.default_rng(seed)
        model = lm.init(kind, H, g=g, s=-0.25, embed=embed, rng=rng, dtype=np.float64)
        # non-zero biases and output layer everywhere, so every path carries gradient
        arrays = {k: a + 0.3 * rng.standard_normal(a.shape) for k, a in lm.trainable(model).items()}
        if kind in ("block", "lowrank"):
            arrays["cell.b_z_lr"] = arrays["cell.b_z_lr"] + 0.5
        model = lm.with_trainable(model, arrays)
        ids = rng.integers(0, 27, (T, B))
        targets = rng.integers(0, 27, (T, B))
        h0 = 0.5 * rng.standard_normal((B, H))
        if _kink_margin(model, ids, h0) > 1e-4:
            return model, ids, targets, h0
    raise AssertionError("no seed keeps the kinks away")


@pytest.mark.parametrize("embed", [0, 3])
@pytest.mark.parametrize("kind,g", KIND_G)
def test_lm_gradient_matches_central_differences(kind, g, embed):
    model, ids, targets, h0 = _tiny_case(kind, g, embed)
    _, grads, _, _ = lm.loss_and_grads(model, ids, targets, h0)
    params = lm.trainable(model)
    assert set(grads) == set(params)
    eps = 1e-6
    for name, value in params.items():
        fd = np.zeros_like(value)
        for idx in np.ndindex(value.shape):
            plus, minus = value.copy(), value.copy()
            plus[idx] += eps
            minus[idx] -= eps
            lp = lm.loss_and_grads(lm.with_trainable(model, {name: plus}), ids, targets, h0)[0]
            lmn = lm.loss_and_grads(lm.with_trainable(model, {name: minus}), ids, targets, h0)[0]
            fd[idx] = (lp - lmn) / (2 * eps)
        scale = max(np.max(np.abs(fd)), np.max(np.abs(grads[name])))
        err = np.max(np.abs(grads[name] - fd)) / scale if scale > 1e-8 else np.max(np.abs(grads[name] - fd))
        assert err <= 1e-6, f"{kind} {name}: relative error {err:.2e}"


def test_loss_is_bits_per_character():
    model = lm.init("gru", 4, rng=0, dtype=np.float64)
    model = model.replace(W_y=np.zeros_like(model.W_y))  # uniform prediction: log2(27) bits
    ids = np.zeros((5, 2), np.int64)
    bpc = lm.loss_and_grads(model, ids, ids)[0]
    assert bpc == pytest.approx(math.log2(27), abs=1e-12)


# ---------------------------------------------------------------------------------------------
# Training: the loss falls; a resumed run equals an uninterrupted one bit for bit
# ---------------------------------------------------------------------------------------------


def _pattern_corpus():
    ids = data.encode("the cat sat on the mat " * 400)
    return data.split("pattern", ids)


@pytest.mark.parametrize("kind,g", [("gru", None), ("block", 4)])
def test_loss_falls_on_a_tiny_corpus(kind, g):
    cfg = train.TrainConfig(name=kind, kind=kind, hidden=16, g=g, s=-0.25, batch=4, bptt=20, steps=120,
                            lr=1e-2, dtype="float64")
    st = train.train(cfg, _pattern_corpus(), progress=False)
    first, last = np.mean(st.train_bpc[:5]), np.mean(st.train_bpc[-10:])
    assert first > 4.0  # about log2(27) at the start
    # a unigram model of this text needs ~3 bits; the periodic pattern is learnt below 2.5
    assert last < 2.5, f"BPC went from {first:.2f} to {last:.2f}"
    # inference (running statistics of 4-sequence batches) lags training, but has learnt too
    bpc, _ = speed.evaluate(st.model, _pattern_corpus().valid)
    assert bpc < first - 1.0


def _state_arrays(st: train.State) -> dict:
    out = {f"model.{k}": a for k, a in lm.trainable(st.model).items()}
    if st.model.kind != "gru":
        out["running_mean"] = st.model.cell.running_mean
        out["running_var"] = st.model.cell.running_var
    out.update({f"m.{k}": a for k, a in st.m.items()})
    out.update({f"v.{k}": a for k, a in st.v.items()})
    out.update(h=st.h, train_bpc=np.array(st.train_bpc), val_bpc=np.array(st.val_bpc),
               step=np.array(st.step), pos=np.array(st.pos))
    return out


class Crash(Exception):
    pass


@pytest.mark.parametrize("kind,g,embed,how", [("block", 2, 0, "stop"), ("lowrank", 3, 0, "crash"),
                                              ("gru", None, 5, "stop"), ("gru", None, 0, "crash")])
def test_resumed_run_is_identical_to_uninterrupted(tmp_path, kind, g, embed, how):
    # reset_every 4 and streams of ~40 symbols: the run crosses resets and wraps the text around
    cfg = train.TrainConfig(name=kind, kind=kind, hidden=8, g=g, s=-0.25, embed=embed, batch=3, bptt=7,
                            steps=13, lr=5e-3, reset_every=4, checkpoint_every=3, eval_every=5,
                            eval_symbols=200, dtype="float32")
    corpus = data.split("small", data.encode("the quick brown fox jumps over the lazy dog " * 9))
    whole = train.train(cfg, corpus, str(tmp_path / "a.npz"), progress=False, evaluate=speed.evaluate)

    ck = str(tmp_path / "b.npz")
    if how == "stop":  # stopped cleanly at update 6 (checkpointed there)
        train.train(cfg, corpus, ck, progress=False, stop_after=6, evaluate=speed.evaluate)
        saved = 6
    else:  # killed during update 10: the last checkpoint is update 9's, update 10 is lost
        def crashing(model, ids):
            if len(model_steps) == 1:
                raise Crash
            model_steps.append(1)
            return speed.evaluate(model, ids)

        model_steps = []
        with pytest.raises(Crash):
            train.train(cfg, corpus, ck, progress=False, evaluate=crashing)
        saved = 9
    assert train.load_checkpoint(ck, cfg).step == saved
    resumed = train.train(cfg, corpus, ck, resume=True, progress=False, evaluate=speed.evaluate)
    assert resumed.step == cfg.steps
    a, b = _state_arrays(whole), _state_arrays(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k
    assert whole.val_steps == resumed.val_steps == [5, 10, 13]
    kw = dict(batch=3, bptt=7, segments=5, reset_every=4)
    ra = train.reestimate_statistics(whole.model, corpus.train, **kw)
    rb = train.reestimate_statistics(resumed.model, corpus.train, **kw)
    if kind != "gru":
        assert np.array_equal(ra.cell.running_mean, rb.cell.running_mean)
        assert np.array_equal(ra.cell.running_var, rb.cell.running_var)


def test_resume_refuses_another_configuration(tmp_path):
    cfg = train.TrainConfig(name="g", kind="gru", hidden=4, batch=2, bptt=5, steps=2, checkpoint_every=1)
    corpus = data.split("small", data.encode("abc def ghi " * 20))
    train.train(cfg, corpus, str(tmp_path / "c.npz"), progress=False)
    other = train.TrainConfig(name="g", kind="gru", hidden=4, batch=2, bptt=5, steps=2, checkpoint_every=1, lr=0.5)
    with pytest.raises(ValueError, match="another configuration"):
        train.train(other, corpus, str(tmp_path / "c.npz"), resume=True, progress=False)


# ---------------------------------------------------------------------------------------------
# Batch-norm re-estimation after training
# ---------------------------------------------------------------------------------------------


def _sig(v):
    return 1.0 / (1.0 + np.exp(-v))


def _direct_preactivations(model, ids, B, T, segments, reset_every):
    """Every pre-activation ``a`` of ``segments`` training segments, written out step by step here
    (the paper's equations with per-step batch statistics), not through ccgru.forward."""
    p, H = model.cell, model.hidden_size
    L = len(ids) // B
    S = ids[: L * B].reshape(B, L)
    E = np.eye(27)
    h, pos, out = np.zeros((B, H)), 0, []
    for k in range(segments):
        if pos + T + 1 > L:
            pos, h = 0, np.zeros((B, H))
        if k % reset_every == 0:
            h = np.zeros((B, H))
        for t in range(T):
            x = E[S[:, pos + t]]
            W_r, W_h = p.W_rh[:H], p.W_rh[H:]
            U_r, U_h = p.U_rh[:H], p.U_rh[H:]
            r = _sig(x @ W_r.T + h @ U_r.T + p.b_rh[:H])
            h_hat = np.tanh(x @ W_h.T + r * (h @ U_h.T) + p.b_rh[H:])
            if p.variant == "full":
                a = x @ p.W_z.T + h @ p.U_z.T + p.b_z
            else:
                z_lr = np.maximum(x @ p.W_z_lr.T + h @ p.U_z_lr.T + p.b_z_lr, 0.0)
                a = z_lr if p.variant == "block" else z_lr @ p.W_z.T + p.b_z
            out.append(a)
            n = (a - a.mean(axis=0)) / np.sqrt(a.var(axis=0) + p.eps)  # biased: the cell's batch norm
            z = np.where(n + p.s > 0, np.tanh(n + p.s), 0.0)
            if p.variant == "block":
                z = np.repeat(z, H // p.g, axis=1)
            h = (1 - z) * h + z * h_hat
        pos += T
    return np.concatenate(out)


@pytest.mark.parametrize("kind,g", [("block", 2), ("lowrank", 3), ("full", None)])
def test_reestimated_statistics_are_the_exact_mean_and_variance(kind, g):
    rng = np.random.default_rng(7)
    model = lm.init(kind, 6, g=g, s=-0.25, rng=rng, dtype=np.float64)
    arrays = {k: a + 0.3 * rng.standard_normal(a.shape) for k, a in lm.trainable(model).items()}
    model = lm.with_trainable(model, arrays)
    ids = data.encode("the quick brown fox jumps over the lazy dog " * 3)  # streams of 44: wraps around
    B, T, segments, reset_every = 3, 6, 11, 4
    new = train.reestimate_statistics(model, ids, batch=B, bptt=T, segments=segments, reset_every=reset_every)
    a = _direct_preactivations(model, ids, B, T, segments, reset_every)
    assert a.shape == (segments * T * B, model.cell.gate_width)
    np.testing.assert_allclose(new.cell.running_mean, a.mean(axis=0), rtol=1e-12, atol=1e-14)
    # unbiased, like the running variance the cell keeps during training (var * B / (B - 1))
    np.testing.assert_allclose(new.cell.running_var, a.var(axis=0, ddof=1), rtol=1e-12, atol=1e-14)
    assert not np.allclose(new.cell.running_var, model.cell.running_var)  # it did replace them
    # only the statistics change; mode and weights stay
    assert new.cell.mode == model.cell.mode
    for k, v in lm.trainable(model).items():
        assert lm.trainable(new)[k] is v
    again = train.reestimate_statistics(model, ids, batch=B, bptt=T, segments=segments, reset_every=reset_every)
    assert np.array_equal(again.cell.running_mean, new.cell.running_mean)  # deterministic
    assert np.array_equal(again.cell.running_var, new.cell.running_var)


def test_reestimation_leaves_the_dense_gru_unchanged():
    model = lm.init("gru", 6, rng=1, dtype=np.float64)
    ids = data.encode("abc def ghi " * 20)
    same = train.reestimate_statistics(model, ids, batch=2, bptt=5, segments=4, reset_every=2)
    assert same is model
    assert speed.evaluate(same, ids)[0] == speed.evaluate(model, ids)[0]


# ---------------------------------------------------------------------------------------------
# The pipeline and bad input
# ---------------------------------------------------------------------------------------------


def test_smoke_pipeline_end_to_end(tmp_path):
    settings = cli._settings(cli._parser().parse_args(["--smoke"]))
    out = io.StringIO()
    payload = cli.run(settings, str(tmp_path), progress=False, stream=out)
    text = out.getvalue()
    assert "TABLE II" in text and "TABLE IV" in text and "s = -0.50" in text
    assert "RE-ESTIMATED" in text and "training EMA statistics" in text
    assert len(payload["results"]) == 1 + 2 + 2
    for r in payload["results"]:
        assert math.isfinite(r["val_bpc"]) and 0 < r["val_bpc"] < 6
        if r["kind"] != "gru":
            assert 0 <= r["z_sparsity"] <= 1 and r["speed"]["speedup"] > 0
            assert r["norm_stats"] == "reestimated" and r["recal_segments"] == settings["recal_segments"] > 0
            assert 0 <= r["z_sparsity_ema"] <= 1 and math.isfinite(r["val_bpc_ema"])
            assert 0 <= r["z_sparsity_batchstats"] <= 1 and math.isfinite(r["val_bpc_batchstats"])
    for name in ("bpc_vs_speedup.png", "sparsity_vs_s.png", "training_curves.png"):
        path = tmp_path / name
        assert path.stat().st_size > 5000 and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["results"] == payload["results"]
    tables = (tmp_path / "tables.txt").read_text().strip()
    assert "TABLE IV" in tables and tables in text
    again = io.StringIO()
    cli.replot(str(tmp_path), again)  # from results.json alone
    assert again.getvalue().strip() == tables


def test_bad_input():
    with pytest.raises(ValueError, match="unknown cell 'lstm'"):
        train.TrainConfig(name="x", kind="lstm", hidden=8)
    with pytest.raises(ValueError, match="unknown cell"):
        lm.init("sru", 8)
    with pytest.raises(ValueError, match="divide hidden=8"):
        train.TrainConfig(name="x", kind="block", hidden=8, g=3)
    settings = cli._settings(cli._parser().parse_args(["--smoke", "--block-sizes", "5"]))
    with pytest.raises(ValueError, match="block size 5 does not divide the hidden size H=16"):
        cli.grid(settings)
    assert cli.main(["--smoke", "--block-sizes", "5", "--out", os.devnull]) == 2
    assert cli.main(["--smoke", "--recal-segments", "-1", "--out", os.devnull]) == 2
    model = lm.init("gru", 4, rng=0)
    with pytest.raises(ValueError, match=r"ids: symbol ids must lie in \[0, 27\)"):
        lm.loss_and_grads(model, np.full((3, 2), 27), np.zeros((3, 2), np.int64))
    with pytest.raises(ValueError, match=r"targets: expected shape \(3, 2\)"):
        lm.loss_and_grads(model, np.zeros((3, 2), np.int64), np.zeros((2, 3), np.int64))
    with pytest.raises(TypeError, match="integer symbol ids"):
        lm.loss_and_grads(model, np.zeros((3, 2)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="batch >= 2"):
        train.TrainConfig(name="x", kind="lowrank", hidden=8, g=2, batch=1)


def test_package_and_cli_import_light():
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, refrnn.reproduce, refrnn.reproduce.cli\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'numba', 'matplotlib', 'scipy', 'torch'}))")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
