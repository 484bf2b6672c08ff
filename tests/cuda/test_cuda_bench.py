"""The GPU benchmark script runs end to end (tiny sizes under the simulator: the numbers mean nothing,
the code paths and the report do)."""

import json

from refrnn.bench import cuda as bench_cuda


def test_smoke_run_writes_every_figure(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench_cuda.main(["--smoke", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["copy_bandwidth"] > 0 and res["fma_peak_measured"] > 0
    sru = res["sru_recurrence"]
    # U (3H) and x (H) read once, h (H) written once per (t, b); c0 read and c_T written once.
    assert sru["bytes"] == (5 * res["T"] * res["B"] * res["H"] + 2 * res["B"] * res["H"]) * 4
    assert sru["fraction_of_copy"] > 0
    assert res["sru_layer_forward_seconds"]["tiled"] > 0
    for cell, gates in [("gru", 3), ("lstm", 4)]:
        H = res["rnn_hidden"]
        assert res[cell]["flop_per_forward_recurrence"] == 2 * res["B"] * H * gates * H * res["T"]
        assert res[cell]["fused_tiled"]["flops"] > 0
    report = capsys.readouterr().out
    assert "SRU recurrence kernel" in report and "% of copy bandwidth" in report


def test_refuses_to_benchmark_the_simulator_without_smoke():
    import pytest

    from refrnn.cuda import _device

    if not _device.simulated():
        pytest.skip("on a real GPU the full benchmark would run here")
    with pytest.raises(SystemExit, match="the CUDA simulator is not a GPU"):
        bench_cuda.main([])
