"""pyproject says Python >= 3.10: run refrnn's NumPy-only core and the verifier on a 3.10 interpreter.

3.10 has no builtin ``BaseExceptionGroup``; Hypothesis raises the ``exceptiongroup`` backport's groups
there, and :mod:`refrnn.verify` must catch those. The test needs a Python 3.10 (on PATH, or installed
by pyenv) and builds a throwaway virtual environment with NumPy and Hypothesis from the package index or pip's
cache; without such an interpreter it is skipped, saying so.
"""

import glob
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]

SMOKE = r"""
import sys
assert sys.version_info[:2] == (3, 10), sys.version
import exceptiongroup
from refrnn import gru, gradcheck
from refrnn.layers import stack
from refrnn.verify import verify, _ExceptionGroup
assert _ExceptionGroup is exceptiongroup.BaseExceptionGroup
group = exceptiongroup.ExceptionGroup("two", [ValueError("a"), KeyError("b")])
try:
    raise group
except _ExceptionGroup as caught:
    assert len(caught.exceptions) == 2

def reference(layers, x, state0, dy=None, dstate_T=None, *, lengths=None, batch_first=False):
    y, s, cache = stack.forward(layers, x, state0, lengths=lengths, batch_first=batch_first)
    if dy is None:
        return y, s
    g, dx, ds = stack.backward(layers, cache, dy, dstate_T)
    return y, s, {"layers": g, "x": dx, "state0": ds}

reference.conventions = ("lengths", "batch_first", "bidirectional", "no_initial_state", "unbatched")
report = verify(reference, cell="lstm", layout="refrnn", max_examples=15)
assert report.passed, report

def wrong(layers, x, state0, dy=None, dstate_T=None):
    y, s = reference(layers, x, state0)
    return y * 1.5, s

assert not verify(wrong, cell="gru", layout="refrnn", grads=False, max_examples=20).passed
print(gradcheck(gru.init(2, 3, rng=0), __import__("numpy").ones((3, 1, 2))).passed)
"""


def _python310():
    """A working Python 3.10: on PATH, or one that pyenv installed (its shim needs a selected version)."""
    root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    for exe in [shutil.which("python3.10"), *sorted(glob.glob(os.path.join(root, "versions", "3.10*", "bin", "python3.10")))]:
        if exe and subprocess.run([exe, "--version"], capture_output=True).returncode == 0:
            return exe
    return None


def test_refrnn_runs_on_python_3_10(tmp_path):
    python310 = _python310()
    if python310 is None:
        pytest.skip("no Python 3.10 interpreter (python3.10 on PATH, or installed by pyenv)")
    venv = tmp_path / "py310"
    subprocess.run([python310, "-m", "venv", str(venv)], check=True, capture_output=True)
    py = venv / "bin" / "python"
    install = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", "numpy", "hypothesis"],
        capture_output=True, text=True, timeout=300,
    )
    if install.returncode != 0:  # no index and no cache: nothing to test with, which is not refrnn's failure
        pytest.skip(f"could not install numpy and hypothesis for Python 3.10: {install.stderr[-300:]}")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("PYENV_VERSION", None)
    out = subprocess.run([str(py), "-c", SMOKE], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip().endswith("True")
