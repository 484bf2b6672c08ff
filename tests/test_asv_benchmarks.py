"""The asv suite cannot rot: every benchmark's setup and body run once, at its smallest parameters.

asv imports ``asv_benchmarks`` only when someone runs it; without this test a renamed function or
a changed signature would break benchmarks silently. Each benchmark (``time_*``, ``peakmem_*``,
``track_*``, ...) runs at the first value of each size-like parameter (the suite orders them
smallest first; :data:`common.SMOKE_FIRST_ONLY` names them) and at every value of the others (cell,
strategy, order, ...), so every branch of every setup runs; a class may list its combinations in
``smoke_params`` instead.

A benchmark whose setup raises ``common.Unavailable`` is skipped when what it needs is truly absent
(a module not written yet, torch not installed, no GPU); it FAILS when the module exists but lacks
the function the benchmark calls: that is an interface that moved away from its benchmark.
No timing is asserted; a track_* result must only be a finite positive number.
"""

from __future__ import annotations

import importlib
import inspect
import itertools
import math
import pkgutil
from pathlib import Path

import pytest

import asv_benchmarks
from asv_benchmarks import common

PREFIXES = ("time_", "timeraw_", "peakmem_", "mem_", "track_")
ROOT = Path(asv_benchmarks.__file__).parent


def _modules():
    return sorted(m.name for m in pkgutil.iter_modules([str(ROOT)]) if m.name.startswith("bench_"))


def _benchmarks():
    """(id, module name, class name or None, attribute name) for every benchmark, asv's discovery rules."""
    found = []
    for name in _modules():
        module = importlib.import_module(f"asv_benchmarks.{name}")
        for attr, obj in vars(module).items():
            if attr.startswith(PREFIXES) and inspect.isfunction(obj):
                found.append((f"{name}.{attr}", name, None, attr))
            elif inspect.isclass(obj) and not attr.startswith("_") and obj.__module__ == module.__name__:
                for meth in sorted(dir(obj)):
                    if meth.startswith(PREFIXES) and callable(getattr(obj, meth)):
                        found.append((f"{name}.{attr}.{meth}", name, attr, meth))
    return found


BENCHMARKS = _benchmarks()


def _grid(owner) -> list:
    params = getattr(owner, "params", [])
    if params and not isinstance(params[0], (list, tuple)):  # asv allows one flat list for one parameter
        params = [params]
    return list(params)


def _smoke_combinations(owner) -> list[tuple]:
    if hasattr(owner, "smoke_params"):
        return [tuple(c) for c in owner.smoke_params]
    grid = _grid(owner)
    names = getattr(owner, "param_names", [f"param{k}" for k in range(len(grid))])
    axes = [values[:1] if name in common.SMOKE_FIRST_ONLY else values for name, values in zip(names, grid)]
    return list(itertools.product(*axes))


def _cases():
    for bench_id, module, cls, attr in BENCHMARKS:
        mod = importlib.import_module(f"asv_benchmarks.{module}")
        owner = getattr(mod, cls) if cls else getattr(mod, attr)
        for combo in _smoke_combinations(owner):
            label = "-".join(map(str, combo))
            yield pytest.param(module, cls, attr, combo, id=f"{bench_id}[{label}]" if combo else bench_id)


def test_every_area_has_a_module():
    assert _modules(), "no bench_*.py modules found"
    assert len(BENCHMARKS) >= len(_modules())


@pytest.mark.parametrize("module, cls, attr, args", list(_cases()))
def test_benchmark_runs_once(module, cls, attr, args):
    mod = importlib.import_module(f"asv_benchmarks.{module}")
    owner = getattr(mod, cls) if cls else getattr(mod, attr)
    grid = _grid(owner)
    if grid:
        names = getattr(owner, "param_names", None)
        assert names is not None and len(names) == len(grid), "param_names must name every params list"
    if attr.startswith("track_"):
        unit = getattr(owner, "unit", None)
        assert unit, "track_* benchmarks must declare their unit"
        if "_over_" in attr:  # a time ratio measured in one process
            assert unit == "ratio", f"{attr} reports a ratio; its unit is {unit!r}"
    instance = owner() if cls else None
    if hasattr(instance, "ratio_repeats"):  # one quick interleaved round is enough to prove it runs
        instance.ratio_repeats, instance.ratio_sample, instance.ratio_settle = 1, 0.0, 0.0
    setup = getattr(instance if cls else mod, "setup", None)
    teardown = getattr(instance if cls else mod, "teardown", None)
    try:
        if setup is not None:
            setup(*args)
    except common.Unavailable as err:
        if err.kind == "attribute":
            pytest.fail(f"{err}: the module exists but the benchmark's function does not (interface drift?)")
        pytest.skip(str(err))
    try:
        body = getattr(instance, attr) if cls else owner
        result = body(*args)
        if attr.startswith("track_"):
            assert isinstance(result, (int, float)) and math.isfinite(result) and result > 0, result
    finally:
        if teardown is not None:
            teardown(*args)


def test_unavailable_is_what_asv_skips():
    # asv skips a benchmark whose setup raises NotImplementedError; anything else is a failure.
    assert issubclass(common.Unavailable, NotImplementedError)
    with pytest.raises(common.Unavailable) as err:
        common.require("refrnn._no_such_module_")
    assert err.value.kind == "module"
    with pytest.raises(common.Unavailable) as err:
        common.require("refrnn.cells", "no_such_function")
    assert err.value.kind == "attribute"


def test_a_missing_refrnn_is_an_error_not_a_skip(monkeypatch):
    # In a Python without the project every benchmark would otherwise be "skipped" and asv exit 0.
    real = common.module_exists
    monkeypatch.setattr(common, "module_exists", lambda name: name != "refrnn" and real(name))
    with pytest.raises(RuntimeError, match="refrnn is not importable"):
        common.require("refrnn.cells")
    monkeypatch.undo()
    assert common.require("refrnn.cells").__name__ == "refrnn.cells"


def test_seeded_data_is_reproducible():
    a = common.inputs(common.SIZES["small"], "float32", key="x")
    b = common.inputs(common.SIZES["small"], "float32", key="x")
    c = common.inputs(common.SIZES["small"], "float32", key="other")
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()
    assert a.shape == (20, 8, 27) and a.dtype == "float32"


def test_measure_ratio_orders_candidates():
    import time

    def fast():
        pass

    def slow():
        time.sleep(0.002)

    assert common.measure_ratio(fast, slow, repeats=3, sample=0.001, settle=0) < 1.0 < common.measure_ratio(slow, fast, repeats=3, sample=0.001, settle=0.001)


def test_sizes_agree_with_refrnn_bench():
    # The suite keeps its own append-only copies of the sizes (it times old commits, which have no
    # refrnn.bench registry); this pins every copy equal to the registry's, area by area.
    registry = pytest.importorskip("refrnn.bench.registry")
    pairs = [
        ("SIZES", registry.SIZES, common.STRATEGY_SIZES),
        ("SRU_SIZES", registry.SRU_SIZES, common.SRU_SIZES),
        ("SPARSE_SIZES", registry.SPARSE_SIZES, common.SPARSE_SIZES),
        ("DEEP_SIZES", registry.DEEP_SIZES, common.DEEP_SIZES),
    ]
    for area, theirs, ours in pairs:
        assert set(theirs) <= set(ours), (area, sorted(set(theirs) - set(ours)))
        for name, size in theirs.items():
            assert size == ours[name], (area, name)
    assert registry.DEEP_LAYERS == common.DEEP_LAYERS
    assert set(registry.SIZES) == {"paper", "stream", "paper_wide", "stream_wide"}


@pytest.mark.parametrize("layout", common.SPARSE_LAYOUTS)
def test_sparse_density_calibration_hits_its_target(layout):
    # The sparse benchmarks are only meaningful at the density they claim.
    pytest.importorskip("refrnn.cells.ccgru")
    from asv_benchmarks import bench_sparse

    pytest.importorskip("refrnn.jit.ccgru")
    ccgru = bench_sparse.reference_ccgru()
    for density in common.SPARSE_DENSITIES:
        p, x = bench_sparse.ccgru_at_density("small", layout, 16, density)
        _, _, cache = ccgru.forward(p, x)  # the reference's z, not the fast path's that calibrated it
        assert abs(float((cache.z != 0).mean()) - density) < 0.01, (layout, density)
