"""The training loop's progress bar (tqdm on stderr): it counts the updates from where a run resumes,
shows the training BPC, and is not even imported when progress is off."""

import subprocess
import sys
from pathlib import Path

import pytest

from refrnn.reproduce import data, train

pytest.importorskip("tqdm")
ROOT = Path(__file__).resolve().parents[1]


def _run(progress, steps=20, **kw):
    corpus = data.split("pattern", data.encode("the cat sat on the mat " * 100))
    cfg = train.TrainConfig(name="gru-tiny", kind="gru", hidden=8, batch=2, bptt=10, steps=steps, dtype="float64")
    return train.train(cfg, corpus, progress=progress, **kw)


def test_the_bar_counts_updates_and_shows_bpc(capsys):
    st = _run(True)
    err = capsys.readouterr().err
    assert st.step == 20
    assert "gru-tiny" in err and "20/20" in err and "bpc " in err
    assert err.count("\n") <= 12  # not a tty: a line every 10 %, not one per update


def test_a_resumed_run_starts_the_bar_where_it_left_off(tmp_path, capsys):
    ck = str(tmp_path / "ck.npz")
    _run(False, checkpoint=ck, stop_after=12)
    _run(True, checkpoint=ck, resume=True)
    err = capsys.readouterr().err
    assert "12/20" in err and "20/20" in err and " 0/20" not in err


def test_no_progress_does_not_import_tqdm():
    code = (
        "import sys\nfrom refrnn.reproduce import data, train\n"
        "c = data.split('p', data.encode('the cat sat on the mat ' * 50))\n"
        "train.train(train.TrainConfig(name='g', kind='gru', hidden=4, batch=2, bptt=5, steps=2, dtype='float64'), c, progress=False)\n"
        "print('tqdm' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"
