"""`refrnn bench`: the workload registry, the baselines it compares against, and a smoke run at test sizes.

No timing is asserted here (speed is what the command measures, not what a test can check); these
tests check that every candidate of a workload computes the same thing, that the GEMM bound counts
the right FLOPs, and that the command runs and reports.
"""

import json

import numpy as np
import pytest

from refrnn import bench, gru, lstm
from refrnn.bench import registry

pytest.importorskip("numba")


def test_numpy_baselines_equal_the_reference():
    """The plain loops are baselines for speed only if they compute the same thing."""
    rng = np.random.default_rng(0)
    p = gru.init(4, 6, rng=rng)
    p = p.replace(b_x=rng.uniform(-1, 1, 18), b_h=rng.uniform(-1, 1, 18))
    x, h0 = rng.standard_normal((5, 3, 4)), rng.standard_normal((3, 6))
    y_ref, h_ref, _ = gru.forward(p, x, h0)
    y, h = bench.numpy_gru(p, x, h0)
    np.testing.assert_allclose(y, y_ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(h, h_ref, rtol=0, atol=1e-12)

    q = lstm.init(4, 6, rng=rng)
    q = q.replace(b_x=rng.uniform(-1, 1, 24), b_h=rng.uniform(-1, 1, 24))
    c0 = rng.standard_normal((3, 6))
    y_ref, (h_ref, c_ref), _ = lstm.forward(q, x, (h0, c0))
    y, (h, c) = bench.numpy_lstm(q, x, h0, c0)
    for a, b in ((y, y_ref), (h, h_ref), (c, c_ref)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", list(bench.WORKLOADS))
def test_every_candidate_computes_the_subjects_output(name):
    """At test sizes, every candidate but the sgemm and memory-floor timings returns y first, and they all agree
    (float32; the same tolerance as the fast paths' own tests, for T = 4 steps).

    A candidate that computes something else on purpose (a sparse path at another density, torch's
    LSTM next to an SRU, an MLP next to recurrent layers) carries ``.twin``: a callable computing the
    same thing another way, which it must agree with instead."""
    case = bench.WORKLOADS[name].build("tiny")
    assert case.subject in case.candidates and (case.sgemm is None or case.sgemm in case.candidates)
    assert case.floor is None or case.floor in case.candidates
    y_subject = np.asarray(_y(case.candidates[case.subject]))
    for cand, fn in case.candidates.items():
        if cand in (case.sgemm, case.floor):  # timings of a part, tested below
            continue
        y = _y(fn)
        expected = _y(fn.twin) if hasattr(fn, "twin") else y_subject
        assert y.shape == expected.shape, cand
        assert np.max(np.abs(y - expected)) <= 5e-7 * 5 * 2, cand


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_memory_floor_reads_exactly_the_active_blocks_weights(workers):
    """The floor candidate's kernel sums every weight of each block active at a step, once per step,
    and no other: its sum equals NumPy's over those blocks (some blocks inactive at some steps, so
    reading every block, or one step's blocks at every step, would give another sum)."""
    from refrnn.bench._products import weights_streamed

    rng = np.random.default_rng(workers)
    T, g, bs, tu, H, D = 5, 6, 8, 4, 12, 3
    Ut = rng.uniform(0, 1, (g * bs // tu, H, 2 * tu)).astype(np.float32)
    Wt = rng.uniform(0, 1, (g * bs // tu, D, 2 * tu)).astype(np.float32)
    active = rng.uniform(size=(T, g)) < 0.5
    active[0], active[1] = False, True
    out = np.zeros(workers, np.float32)
    weights_streamed(Ut, Wt, active, bs, workers, out)
    per_block = (Ut.astype(np.float64).reshape(g, -1).sum(axis=1) + Wt.astype(np.float64).reshape(g, -1).sum(axis=1))
    expected = float((active * per_block).sum())
    terms = active.sum() * (Ut[0].size + Wt[0].size) * bs // tu
    assert abs(float(out.astype(np.float64).sum()) - expected) <= terms * np.finfo(np.float32).eps * expected


def test_active_blocks_is_any_sample_per_step_and_block():
    from refrnn.bench.workloads.ccgru import active_blocks

    z = np.zeros((2, 3, 8))  # T=2, B=3, H=8: blocks of 4 units, z constant on each
    z[0, 2, 4:] = 0.5  # step 0: block 1 in sample 2 only
    z[1, :, :4] = 0.1  # step 1: block 0 in every sample
    np.testing.assert_array_equal(active_blocks(z, 4), [[False, True], [True, False]])


def test_summarise_memory_floor_and_the_bars_budget():
    work = bench.Workload("w", "t", lambda scale: None)
    case = bench.Case({"T": 1}, {"sparse": None, "dense": None, "floor": None}, "sparse",
                      (bench.Bar("sparse", "dense", 8.0, ">= 8x"),), floor="floor")
    times = {"sparse": [0.2, 0.1, 0.3], "dense": [1.6, 1.0, 2.0], "floor": [0.05, 0.04, 0.06]}
    res = bench.summarise(work, case, times)
    assert res["subject_over_floor"] == pytest.approx(4.0) and res["subject_over_floor_by_min"] == pytest.approx(2.5)
    bar = res["bars"][0]
    assert bar["budget_s"] == pytest.approx(0.2) and bar["floor_share_of_budget"] == pytest.approx(0.25)  # 1.6 / 8; 0.05 / 0.2
    text = bench.format_result(res)
    assert "subject / floor = 4.00" in text and "allows the subject 200.00 ms" in text and "25% of that" in text


def _y(fn):
    out = fn()[0]
    return out.detach().numpy() if hasattr(out, "detach") else np.asarray(out)


def test_gemm_bound_flops():
    # GRU, B=64, T=50, D=27, H=1024: 50 products (64 x 1024) @ (1024 x 3072) plus (3200 x 27) @ (27 x 3072).
    assert bench.gemm_flops(50, 64, 27, 1024, 3) == 2 * 50 * 64 * 1024 * 3072 + 2 * 3200 * 27 * 3072
    for name, gates in (("lstm-paper", 4), ("gru-paper", 3), ("gru-before", 3)):
        case = bench.WORKLOADS[name].build("tiny")
        T, B, D, H = (case.sizes[k] for k in "TBDH")
        assert case.flops == 2 * T * B * gates * H * (D + H)
        assert case.sgemm_flops == 2 * T * B * gates * H * H  # the recurrent products alone


def test_sizes_for_scales():
    full, tiny = dict(B=64, T=50, D=27, H=1024), dict(B=2, T=3, D=4, H=5)
    assert bench.sizes_for("full", full, tiny) == full
    assert bench.sizes_for("quick", full, tiny) == dict(full, T=10)  # same per-step shapes, fewer steps
    assert bench.sizes_for("tiny", full, tiny) == tiny


def test_registry_adds_a_workload_and_refuses_a_duplicate(monkeypatch):
    monkeypatch.setattr(registry, "WORKLOADS", dict(registry.WORKLOADS))

    @bench.workload("noop", "two trivial candidates")
    def _noop(scale):
        return bench.Case({"n": 1}, {"a": lambda: (0,), "b": lambda: (0,)}, "a", (bench.Bar("a", "b", 0.0, "anything"),))

    assert "noop" in registry.WORKLOADS and "noop" not in bench.WORKLOADS
    with pytest.raises(ValueError, match="already registered"):
        bench.workload("noop", "again")(_noop)
    case = registry.WORKLOADS["noop"].build("tiny")
    times = bench.measure(case, warmup=0, repeats=3)
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}
    res = bench.summarise(registry.WORKLOADS["noop"], case, times)
    assert res["bars"][0]["met"] and res["candidates"]["a"]["speedup_of_subject"] == 1.0


def test_summarise_ratios_and_bars():
    work = bench.Workload("w", "t", lambda scale: None)
    case = bench.Case(
        {"T": 1},
        {"fast": None, "slow": None, "sgemm": None},
        "fast",
        (bench.Bar("fast", "slow", 1.5, "1.5x"), bench.Bar("fast", "GEMM bound", 1 / 1.2, "within 1.2x")),
        sgemm="sgemm",
        sgemm_flops=2e9,
        flops=3e9,
    )
    times = {"fast": [0.2, 0.1, 0.3], "slow": [0.25, 0.2, 0.9], "sgemm": [0.05, 0.04, 0.06]}
    res = bench.summarise(work, case, times, (0.5, 1.5))
    assert res["candidates"]["slow"]["speedup_of_subject"] == pytest.approx(1.25)  # medians 0.25 / 0.2
    assert res["candidates"]["slow"]["speedup_of_subject_by_min"] == pytest.approx(2.0)  # minima 0.2 / 0.1
    assert res["sgemm_rate_gflops"] == pytest.approx(40.0)  # 2 GFLOP in 0.05 s
    bound = res["candidates"]["GEMM bound"]  # 3 GFLOP at 40 GFLOP/s
    assert bound["computed"] and bound["median_s"] == pytest.approx(0.075) and bound["min_s"] == pytest.approx(0.06)
    assert res["subject_over_bound"] == pytest.approx(0.2 / 0.075)
    assert [b["met"] for b in res["bars"]] == [False, False]
    text = bench.format_result(res)
    assert "NOT MET (gap: 1.20x)" in text and "(subject)" in text and "40 GFLOP/s" in text
    assert "GEMM bound (computed)" in text and "0.5 before, 1.5 after" in text
    summary = bench.format_summary([res])
    assert summary.splitlines()[0] == "summary:" and summary.endswith("0/2 bars met") and summary.count("NOT MET") == 2
    quick = bench.summarise(work, case, times, scale="quick")
    assert "not judged" in bench.format_result(quick) and "NOT MET" not in bench.format_result(quick)
    assert "none judged" in bench.format_summary([quick]) and "[quick run at T=1]" in bench.format_result(quick)


def test_main_smoke_run(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench.main(["--tiny", "--only", "gru-paper", "--only", "lstm-paper", "--repeats", "2", "--json", str(out)]) == 0
    captured = capsys.readouterr()
    assert "gru-paper" in captured.out and "lstm-paper" in captured.out
    assert "summary:" in captured.out and "none judged" in captured.out  # a tiny run judges no bar
    assert "tiny run at B=" in captured.out and "NOT MET" not in captured.out
    assert "round 2/2" in captured.err  # progress goes to stderr
    data = json.loads(out.read_text())
    assert data["scale"] == "tiny" and [w["name"] for w in data["workloads"]] == ["gru-paper", "lstm-paper"]
    gru_res = data["workloads"][0]
    assert {"njit batched", "njit fused", "reference (float32)", "NumPy loop", bench.SGEMM, "GEMM bound"} <= set(gru_res["candidates"])
    assert all(len(c["times_s"]) == 2 for c in gru_res["candidates"].values())
    assert {b["other"] for b in gru_res["bars"]} >= {"NumPy loop", "GEMM bound"}
    assert any(b["other"] == "NumPy loop" for b in gru_res["bars"])


def test_main_list_and_bad_arguments(capsys):
    assert bench.main(["--list"]) == 0
    assert "gru-paper" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        bench.main(["--only", "no-such-workload"])
    with pytest.raises(SystemExit):
        bench.main(["--tiny", "--repeats", "0"])
