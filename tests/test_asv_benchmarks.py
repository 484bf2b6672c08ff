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
No timing is asserted; a track_* result must only be a finite positive number (or 0, for the
flags and codes of bench_blas that say so). Ratios run one quick round (``ratio_repeats`` and the
like lowered), and the rows built from ``refrnn bench``'s workloads (``bench_scale``) at its test
sizes. The tests at the end pin bench_blas's record of the BLAS, and bench_bars's rows to the bench's
bars: every bar has a row, and each row times the two candidates its bar compares and reports what
the bench's ``summarise`` reports for the same times.
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
        # asv reads a benchmark's attributes from its function first, then from its class.
        unit = getattr(getattr(owner, attr), "unit", None) or getattr(owner, "unit", None)
        assert unit, "track_* benchmarks must declare their unit"
        if "_over_" in attr:  # a time ratio measured in one process
            assert unit == "ratio", f"{attr} reports a ratio; its unit is {unit!r}"
    instance = owner() if cls else None
    if hasattr(instance, "ratio_repeats"):  # one quick interleaved round is enough to prove it runs
        instance.ratio_repeats, instance.ratio_sample, instance.ratio_settle = 1, 0.0, 0.0
    if hasattr(instance, "bench_scale"):  # rows built from refrnn bench's workloads: its test sizes
        instance.bench_scale = "tiny"
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
            assert isinstance(result, (int, float)) and math.isfinite(result), result
            # A flag or a code (bench_blas) may be 0; a ratio never is.
            assert result > 0 or (result == 0 and getattr(body, "can_be_zero", False)), result
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


# ----------------------------------------------------------------------------------------------------
# bench_blas: the record of the BLAS each run ran on.

_FAKE_BLAS = [
    {"path": "/x/numpy.libs/libscipy_openblas64_.so", "owner": "numpy", "threads": 3, "core": "Haswell",
     "config": "OpenBLAS 0.3.31.188.0  USE64BITINT DYNAMIC_ARCH NO_AFFINITY Haswell MAX_THREADS=64"},
    {"path": "/x/scipy.libs/libscipy_openblas.so", "owner": "scipy", "threads": 1, "core": "SkylakeX",
     "config": "OpenBLAS 0.3.30 DYNAMIC_ARCH NO_AFFINITY SkylakeX MAX_THREADS=64"},
]


@pytest.fixture
def fake_blas(monkeypatch):
    """``set(forced)``: refrnn's BLAS report returns :data:`_FAKE_BLAS`, with ``forced`` as the core
    type the environment forces (the process's real OPENBLAS_CORETYPE is left alone)."""
    from asv_benchmarks import bench_blas

    blas = bench_blas.blas_module()
    monkeypatch.setattr(blas, "describe", lambda: [dict(r) for r in _FAKE_BLAS])

    def set_forced(forced):
        monkeypatch.setattr(blas, "forced_core", lambda: forced)

    return set_forced


def test_blas_record_names_the_core_type_and_flags_a_forced_one(fake_blas):
    from asv_benchmarks import bench_blas

    fake_blas("Haswell")
    numpy_line, scipy_line = map(bench_blas.description, bench_blas.records())
    assert numpy_line.startswith("numpy: OpenBLAS 0.3.31.188.0 USE64BITINT"), numpy_line
    assert "core Haswell (forced by OPENBLAS_CORETYPE=Haswell)" in numpy_line and numpy_line.endswith("3 threads")
    assert "core SkylakeX (forced by OPENBLAS_CORETYPE=Haswell)" in scipy_line and scipy_line.endswith("1 threads")
    row = bench_blas.BLASRecord()
    row.setup("numpy")
    assert (row.track_threads("numpy"), row.track_core_forced("numpy"), row.track_version("numpy")) == (3, 1, 331)
    assert row.track_core("numpy") == bench_blas.CORE_CODES["haswell"] == 5
    row.setup("scipy")
    assert (row.track_threads("scipy"), row.track_core("scipy"), row.track_version("scipy")) == (1, 6, 330)

    fake_blas(None)  # detected, not forced
    assert "core SkylakeX (detected)" in bench_blas.description(bench_blas.records()[1])
    row.setup("scipy")
    assert row.track_core_forced("scipy") == 0


def test_blas_description_row_records_only_the_blas_it_was_discovered_with(fake_blas):
    from asv_benchmarks import bench_blas

    fake_blas("Haswell")
    seen = [bench_blas.description(r) for r in bench_blas.records()]
    row = bench_blas.BLASDescription()
    row.setup(seen[1])
    assert row.track_threads(seen[1]) == 1
    fake_blas(None)  # the benchmark's process is not forced, the discovering one was: not this row's BLAS
    with pytest.raises(common.Unavailable) as err:
        row.setup(seen[1])
    assert err.value.kind == "combination"


def test_blas_description_row_is_discovered_with_this_process_blas():
    # Its one parameter list is computed when the suite is imported: a placeholder there (the BLAS
    # report not found) would leave every combination skipped, and the run would record nothing.
    from asv_benchmarks import bench_blas

    (discovered,) = bench_blas.BLASDescription.params
    assert discovered == [bench_blas.description(r) for r in bench_blas.records()]
    assert {line.split(":")[0] for line in discovered} >= set(bench_blas.LIBRARIES), discovered


def test_blas_record_of_a_library_without_a_version_or_a_known_core(monkeypatch):
    from asv_benchmarks import bench_blas

    assert bench_blas.version_code("OpenBLAS 0.3.9 NO_AFFINITY") == 309
    assert bench_blas.version_code("some BLAS") is None
    assert bench_blas.core_code("SKYLAKEX") == 6 and bench_blas.core_code("Zen5") == 0 and bench_blas.core_code(None) == 0
    blas = bench_blas.blas_module()
    monkeypatch.setattr(blas, "describe", lambda: [{"path": "/x", "owner": "numpy", "threads": 2}])
    row = bench_blas.BLASRecord()
    row.setup("numpy")
    for track in (row.track_core, row.track_version):
        with pytest.raises(common.Unavailable):
            track("numpy")
    with pytest.raises(common.Unavailable):
        row.setup("scipy")  # not loaded


# ----------------------------------------------------------------------------------------------------
# bench_bars: the bench's bars, each with a history row that measures it on the bench's own workload.


@pytest.fixture(scope="module")
def tiny_cases():
    """Every workload of refrnn bench built at its test sizes (no candidate is called)."""
    pytest.importorskip("refrnn.bench.workloads")
    from refrnn.bench.registry import WORKLOADS

    return {name: work.build("tiny") for name, work in WORKLOADS.items()}


def test_every_bar_of_refrnn_bench_has_a_history_row(tiny_cases):
    from asv_benchmarks import bench_bars

    ids = {bench_id for bench_id, *_ in BENCHMARKS}
    bars = [(name, b.other) for name, case in tiny_cases.items() for b in case.bars]
    missing = [bar for bar in bars if bar not in bench_bars.BAR_ROWS]
    assert not missing, f"bars without a history row in bench_bars.BAR_ROWS: {missing}"
    assert set(bench_bars.BAR_ROWS.values()) <= ids
    for (name, _), row in bench_bars.BAR_ROWS.items():
        assert name in tiny_cases, (name, row)
        module, cls, _ = row.split(".")
        if module == "bench_bars":  # rows parameterised by the workload's name
            assert name in getattr(bench_bars, cls).params[0], (name, row)
    # Every workload whose table has a GEMM bound row has its history row, and no other.
    assert set(bench_bars.GEMM_BOUND_WORKLOADS) == {n for n, c in tiny_cases.items() if c.sgemm is not None}
    from refrnn.bench.workloads import ccgru

    assert bench_bars.SPARSE_BAR_DENSITIES == ccgru.BAR_DENSITIES
    assert set(bench_bars.SPARSE_WORKLOADS) == set(ccgru.NAMES)
    assert set(bench_bars.FLOOR_WORKLOADS) == {n for n, c in tiny_cases.items() if c.floor is not None}


def test_bound_rows_compute_what_refrnn_bench_reports(tiny_cases):
    # The rows turn a measured ratio into a fraction of a bound; refrnn bench's summarise does the same
    # from its medians. Fed the same (made-up) times, the two must agree.
    from refrnn.bench.registry import WORKLOADS
    from refrnn.bench.report import summarise

    from asv_benchmarks import bench_bars

    for name in ("gru-paper", "lstm-train-mid", "sru-forward"):
        case = tiny_cases[name]
        times = {n: [1.0] for n in case.candidates}
        times[case.subject], times[case.sgemm] = [3.0], [0.25]
        reported = summarise(WORKLOADS[name], case, times, scale="tiny")["subject_over_bound"]
        assert math.isclose((3.0 / 0.25) / bench_bars.gemm_bound_factor(case), reported, rel_tol=1e-12), name
    for name in ("ccgru-unstructured-r16", "ccgru-block-bs64"):
        case = tiny_cases[name]
        for density in bench_bars.SPARSE_BAR_DENSITIES:
            times = {n: [1.0] for n in case.candidates}
            times["njit dense"] = [4.0]  # the sparse candidates take 1: a speed-up of 4
            bound = bench_bars.flop_bound(case, density)
            # The bound the bench prints in its notes, to two decimals.
            note = next(n for n in case.notes if n.startswith(f"z-density {density:.2f}:"))
            assert f"FLOP-ratio bound {bound:.2f}x" in note, (note, bound)
            bar = next(b for b in summarise(WORKLOADS[name], case, times)["bars"] if b["fast"].endswith(f"{density:.2f}"))
            fraction = {"unstructured": 0.90, "block": 0.85}[name.split("-")[1]]  # the bars as stated
            met = (1.0 / 4.0) * bound <= 1 / fraction  # the row's value against the bar's fraction of the bound
            assert bar["speedup"] == 4.0 and bar["met"] == met, (name, density, bar)


def _bars_rows():
    from asv_benchmarks import bench_bars

    for cls in ("TrainStepOverTorch", "ForwardOverNumpyLoop", "SubjectOverGemmBound", "SparseOverFlopBound"):
        owner = getattr(bench_bars, cls)
        for combo in itertools.product(*_grid(owner)):
            yield pytest.param(cls, combo, id=f"{cls}[{'-'.join(map(str, combo))}]")


@pytest.mark.parametrize("cls, args", list(_bars_rows()))
def test_bars_rows_time_the_bench_candidates_and_report_its_quantity(cls, args, tiny_cases):
    # Each row must time the two candidates of the bench's workload its bar compares, and turn their
    # ratio into what refrnn bench's summarise reports for the same times.
    from refrnn.bench.registry import WORKLOADS
    from refrnn.bench.report import summarise
    from refrnn.bench.workloads import ccgru, train_gru_lstm

    from asv_benchmarks import bench_bars

    row = getattr(bench_bars, cls)()
    row.bench_scale = "tiny"
    try:
        row.setup(*args)
    except common.Unavailable as err:
        if err.kind == "attribute":
            pytest.fail(str(err))
        pytest.skip(str(err))
    case, name = row.case, args[0]
    if cls == "SparseOverFlopBound":
        fast, other = ccgru.label(args[1]), "njit dense"
    else:
        others = {"TrainStepOverTorch": train_gru_lstm.TORCH, "ForwardOverNumpyLoop": "NumPy loop"}
        fast, other = case.subject, others.get(cls, case.sgemm)
    timed = []
    row.ratio = lambda candidate, baseline: timed.append((candidate, baseline)) or 2.0  # time(fast) = 2 time(other)
    value = getattr(row, next(a for a in dir(row) if a.startswith("track_")))(*args)
    assert timed == [(case.candidates[fast], case.candidates[other])], (fast, other)
    times = {n: [1.0] for n in case.candidates}
    times[fast] = [2.0]
    res = summarise(WORKLOADS[name], case, times, scale="tiny")
    if cls == "SubjectOverGemmBound":
        expected = res["subject_over_bound"]
    elif cls == "SparseOverFlopBound":
        bar = next(b for b in res["bars"] if b["fast"] == fast)
        fraction = ccgru.BAR_FRACTION["block" if "block" in name else "lowrank"]
        expected = (bar["at_least"] / fraction) / bar["speedup"]  # the bound over the speed-up
    else:
        expected = 1 / res["candidates"][other]["speedup_of_subject"]
    assert math.isclose(value, expected, rel_tol=1e-3), (value, expected)  # the rows keep 4 digits


def test_rowcast_row_measures_the_kernel_at_the_bench_size():
    """The generic run above skips RowcastOverSgemm (the tiny sizes keep BLAS); here it runs once at
    the bench's own size of the LSTM forward, where the forward takes the kernel."""
    pytest.importorskip("refrnn.jit._rowcast")
    from refrnn.jit import _rowcast

    if not _rowcast.applies("float32", 64, 4 * 1024 * 1024):
        pytest.skip("the forwards keep BLAS on this CPU")
    bars = importlib.import_module("asv_benchmarks.bench_bars")
    row = bars.RowcastOverSgemm()
    row.ratio_repeats, row.ratio_sample, row.ratio_settle = 1, 0.0, 0.0
    row.setup("lstm-paper")
    value = row.track_rowcast_over_sgemm("lstm-paper")
    assert math.isfinite(value) and value > 0
