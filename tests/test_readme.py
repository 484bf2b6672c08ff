"""The README's walk-through runs as printed: the NumPy GRU passes, and with the batch-first bug the
README describes, verify fails at the shape the README quotes."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _walkthrough() -> str:
    text = README.read_text()
    section = text[text.index("## Verify your own kernel") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_walkthrough_passes_as_printed(capsys):
    namespace: dict = {}
    exec(compile(_walkthrough(), "README walk-through", "exec"), namespace)
    assert namespace["report"].passed
    assert "coverage of 100 examples" in capsys.readouterr().out


def test_the_planted_batch_first_bug_fails_where_the_readme_says():
    code = _walkthrough()
    planted = code.replace("x.swapaxes(0, 1) if batch_first", "x.reshape(x.shape[1], x.shape[0], -1) if batch_first")
    assert planted != code
    planted = planted.replace("assert report.passed", "")
    namespace: dict = {}
    exec(compile(planted, "README walk-through, bug planted", "exec"), namespace)
    report = namespace["report"]
    assert not report.passed
    cfg = report.failure.config
    assert (cfg.T, cfg.B, cfg.D, cfg.H, cfg.batch_first) == (2, 2, 1, 1, True)
    assert "y[0, 1, 0] (step 1, batch row 0, unit 0)" in report.failure.reason
