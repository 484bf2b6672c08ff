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
    "refrnn.stack": ("refrnn.layers.stack", "StackCache"),
    "refrnn.bidirectional": ("refrnn.layers.bidirectional", "BiLayer"),
    "refrnn.lengths": ("refrnn.layers.lengths", "tree_map"),
    "refrnn.mlp": ("refrnn.layers.mlp", "DenseParams"),
    "refrnn.deep": ("refrnn.layers.deep", "DeepRNN"),
    "refrnn.wavefront": ("refrnn.layers.wavefront", "schedule"),
}
LAYERS = [old for old, (new, _) in MOVED.items() if new.startswith("refrnn.layers.")]


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


def _fresh(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)


@pytest.mark.parametrize("old", LAYERS)
def test_a_moved_layer_is_the_same_module_by_every_old_spelling(old):
    """``from refrnn import stack``, ``refrnn.stack`` and ``import refrnn.stack`` all give the one
    module object of refrnn.layers (so its classes and the cell registry are shared), and the
    warning points at the line of the user's code that used the old name."""
    name = old.rsplit(".", 1)[1]
    code = (
        "import warnings\n"
        "warnings.simplefilter('error', DeprecationWarning)\n"
        "import refrnn, refrnn.layers\n"  # the package itself imports without a deprecation
        "warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        f"    from refrnn import {name} as a\n"
        f"    import {old} as b\n"
        f"    c = refrnn.{name}\n"
        f"assert a is b is c is refrnn.layers.{name}, (a, b, c)\n"
        "dep = [w for w in caught if issubclass(w.category, DeprecationWarning)]\n"
        "assert dep and all(w.filename == '<string>' for w in dep), [(w.filename, str(w.message)) for w in dep]\n"
        "print('ok')\n"
    )
    done = _fresh(code)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ok"


def test_no_former_name_is_invented():
    import refrnn

    with pytest.raises(AttributeError, match="no attribute 'stacks'"):
        refrnn.stacks  # noqa: B018


def test_gradcheck_is_the_function_and_its_module_has_its_own_name():
    import refrnn
    from refrnn import finite_differences

    assert callable(refrnn.gradcheck) and refrnn.gradcheck is finite_differences.gradcheck


@pytest.mark.parametrize(
    "module, call",
    [
        ("refrnn.cells.gru", "m.forward(p, x, h0=s)"),
        ("refrnn.cells.rnn", "m.forward(p, x, h0=s)"),
        ("refrnn.cells.ccgru", "m.forward(p, x, h0=s)"),
        ("refrnn.cells.sru", "m.forward(p, x, c0=s)"),
    ],
)
def test_a_former_state_keyword_still_works_with_a_warning(module, call):
    import numpy as np

    m = importlib.import_module(module)
    p = m.init(3, 4, rng=0)
    x = np.random.default_rng(0).standard_normal((2, 2, 3))
    s = np.random.default_rng(1).standard_normal((2, 4))
    y_new, s_new, cache = m.forward(p, x, state0=s)
    with pytest.warns(DeprecationWarning, match="deprecated: pass state0="):
        y_old, s_old, _ = eval(call)
    np.testing.assert_array_equal(y_new, y_old)
    dT = np.ones_like(s_new)
    new = m.backward(p, cache, np.ones_like(y_new), dstate_T=dT)
    with pytest.warns(DeprecationWarning, match="deprecated: pass dstate_T="):
        old = m.backward(p, cache, np.ones_like(y_new), **{("dc_T" if "sru" in module else "dh_T"): dT})
    np.testing.assert_array_equal(new[1], old[1])
    with pytest.raises(TypeError, match="pass state0= only"):
        m.forward(p, x, state0=s, **{("c0" if "sru" in module else "h0"): s})
