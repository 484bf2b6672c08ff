"""The reproduce figures say what they show: which run (a smoke run says so), and a key of only what ran."""

import matplotlib

matplotlib.use("Agg")

from refrnn.reproduce import report  # noqa: E402


def _settings(preset):
    return {"preset": preset, "hidden": 16, "batch": 4, "steps": 12, "bptt": 20}


def test_a_smoke_run_is_labelled_as_one():
    assert report.describe_run(_settings("smoke"), "python-docs").startswith("SMOKE RUN (a pipeline check, not a result): H=16")
    assert report.describe_run(_settings("default")).startswith("run: H=16, batch 4, 12 updates of 20 steps")


def test_the_smoothing_window_is_a_tenth_of_the_run():
    assert report.window(12) == 1 and report.window(1000) == 100


def test_the_speedup_key_lists_only_what_ran(tmp_path, monkeypatch):
    import matplotlib.axes

    seen = []
    original = matplotlib.axes.Axes.legend

    def spy(self, *args, **kwargs):
        seen.append([h.get_label() for h in kwargs.get("handles", [])])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "legend", spy)
    results = [
        {"name": "gru", "kind": "gru", "hidden": 16, "g": None, "s": 0.0, "val_bpc": 4.5, "z_sparsity": None},
        {"name": "b", "kind": "block", "hidden": 16, "g": 2, "s": -0.5, "val_bpc": 4.6, "z_sparsity": 0.3,
         "speed": {"speedup": 1.3}},
    ]
    curves = {r["name"]: {"train_bpc": [4.7, 4.6], "val_steps": [2], "val_bpc": [4.6]} for r in results}
    paths = report.plots(results, curves, str(tmp_path), 16, "run: test")
    assert len(paths) == 3 and all((tmp_path / p.split("/")[-1]).exists() for p in paths)
    key = seen[0]
    assert "block-sparse z, block size 8 (open)" in key and "shift s = -0.50" in key
    assert not any("rank" in k or "+0.00" in k for k in key), key
