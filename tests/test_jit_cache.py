"""Compiled kernels cannot go stale against the helpers they compile with.

Numba's own ``cache=True`` checks only the defining file: a kernel in ``jit/sru.py`` would keep the
machine code of an edited helper of ``jit/_kernels.py``. ``refrnn.jit._cache`` folds every reached
``refrnn.jit`` file into the stamp; this shows it on a copy of the package, in fresh processes.
"""

import importlib
import inspect
import os
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("numba")

ROOT = Path(__file__).resolve().parents[1]

# sru._gate (in jit/sru.py) computes sigmoid(u + bias + v * c) with the sigmoid of jit/_kernels.py.
_RUN = r"""
import numpy as np
from refrnn.jit import sru
assert sru.__file__.startswith({root!r}), sru.__file__
out = np.zeros(3)
sru._gate(out, np.array([0.0, 1.0, -2.0]), np.zeros(3), np.zeros(3), np.zeros(3))
stats = sru._gate.stats
print(repr(out.tolist()), sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))
"""


def _run(root: Path, cache_dir: Path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    env.update(PYTHONPATH=str(root), NUMBA_CACHE_DIR=str(cache_dir))
    done = subprocess.run([sys.executable, "-c", _RUN.format(root=str(root))], cwd=root, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    values, hits, misses = done.stdout.rsplit(maxsplit=2)
    return eval(values), int(hits), int(misses)  # noqa: S307 - our own repr of a list of floats


def test_editing_a_shared_helper_recompiles_the_kernels_of_other_files(tmp_path):
    root = tmp_path / "src"
    shutil.copytree(ROOT / "refrnn", root / "refrnn", ignore=shutil.ignore_patterns("__pycache__"))
    cache = tmp_path / "numba-cache"

    first, _, misses = _run(root, cache)
    assert misses == 1  # compiled, and written to the cache
    again, hits, misses = _run(root, cache)
    assert (again, hits, misses) == (first, 1, 0)  # an unchanged package loads from the cache

    kernels = root / "refrnn" / "jit" / "_kernels.py"
    text = kernels.read_text()
    old = "        return lambda a: 1.0 / (1.0 + math.exp(-a))"
    assert old in text
    kernels.write_text(text.replace(old, "        return lambda a: 0.25"))
    edited, hits, misses = _run(root, cache)
    assert edited == [0.25, 0.25, 0.25] != first
    assert (hits, misses) == (0, 1)


def _jit_modules():
    import refrnn.jit

    names = [f"refrnn.jit.{m.name}" for m in pkgutil.iter_modules(refrnn.jit.__path__) if not m.name.startswith("bench_")]
    return names + ["refrnn.bench._products"]


def test_every_cached_kernel_uses_the_package_stamp():
    """A kernel decorated with numba's own njit(cache=True) would escape the mechanism: none does."""
    from numba.core.dispatcher import Dispatcher

    from refrnn.jit._cache import PackageCache

    checked = 0
    for name in _jit_modules():
        module = importlib.import_module(name)
        for value in vars(module).values():
            if isinstance(value, Dispatcher) and inspect.getmodule(value.py_func) is module:
                assert isinstance(value._cache, PackageCache), f"{name}.{value.py_func.__name__}"
                checked += 1
    assert checked > 40


def test_the_stamp_follows_the_modules_a_kernel_reaches():
    from refrnn.jit._cache import sources_stamp

    reached = dict(sources_stamp("refrnn.jit.sru"))
    assert {"refrnn.jit.sru", "refrnn.jit._kernels"} <= set(reached)
    # The helpers' own file reaches the compiled step product and the cache mechanism (through njit).
    assert set(dict(sources_stamp("refrnn.jit._kernels"))) == {"refrnn.jit._kernels", "refrnn.jit._rowcast", "refrnn.jit._cache"}


def test_no_cached_overload_reaches_another_file():
    """numba caches an ``@overload`` implementation with its own stamp, its file alone (not through
    refrnn.jit._cache): one that calls into another refrnn.jit file must not be cached, or it would
    keep that file's old code."""
    from numba.core.typing.templates import builtin_registry

    from refrnn.jit._cache import sources_stamp

    for name in _jit_modules():
        importlib.import_module(name)
    checked = 0
    for func, typ in builtin_registry.globals:
        module = getattr(func, "__module__", None) or ""
        if not module.startswith("refrnn."):
            continue
        for template in getattr(typ, "templates", ()):
            options = getattr(template, "_jit_options", None)
            if options is None:  # an intrinsic: code generated in place, nothing cached
                continue
            checked += 1
            if options.get("cache"):
                others = set(dict(sources_stamp(module))) - {module, "refrnn.jit._cache"}
                assert not others, f"{module}.{func.__name__}: cached by numba's own stamp, but reaches {sorted(others)}"
    assert checked >= 2  # sigmoid and tanh of refrnn.jit._kernels
