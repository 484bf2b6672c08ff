"""Old module paths keep working for one release: each imports, warns once with DeprecationWarning,
and resolves every name to the one definition in the module's new home."""

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

MOVED = {  # old path: (new path, a name the old module had)
    "refrnn.jit.bench_ccgru": ("refrnn.bench.workloads.ccgru", "calibrate_shift"),
    "refrnn.jit.bench_sru": ("refrnn.bench.workloads.sru", "build"),
    "refrnn.jit.bench_wavefront": ("refrnn.bench.workloads.deep", "plain_mlp"),
    "refrnn.bench_cuda": ("refrnn.bench.cuda", "main"),
    "refrnn.cuda.peak": ("refrnn.bench._peak", "copy_bandwidth"),
}


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_path_warns_and_re_exports(old):
    """A fresh interpreter, so the warning fires on the first import whatever this process imported."""
    new, name = MOVED[old]
    if "cuda" in old:
        pytest.importorskip("numba_cuda")
    code = (
        "import warnings, importlib\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        f"    old = importlib.import_module({old!r})\n"
        f"new = importlib.import_module({new!r})\n"
        f"assert getattr(old, {name!r}) is getattr(new, {name!r})\n"
        "msgs = [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]\n"
        f"assert any({old!r} in m and {new!r} in m for m in msgs), msgs\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"


def test_moved_warns_in_this_process():
    from refrnn._moved import moved

    with pytest.warns(DeprecationWarning, match="refrnn.old_name moved to refrnn.bench.registry"):
        assert moved("refrnn.old_name", "refrnn.bench.registry") is importlib.import_module("refrnn.bench.registry")
