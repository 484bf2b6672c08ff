"""Seeded data, workload sizes and the guards shared by every ``bench_<area>.py``.

APPEND-ONLY. asv compares a benchmark's results across commits, and the benchmark suite used for
every commit is the one checked out now; so a size, a seed or a data recipe that changes rewrites the
meaning of the whole history. Add new sizes and helpers below; never edit or delete existing ones.

Conventions of the suite (NumPy's asv style):

* ``params`` / ``param_names`` grids. The FIRST value of every ``params`` list is the smallest and
  cheapest. ``tests/test_asv_benchmarks.py`` runs each benchmark once at the first value of the
  parameters named in :data:`SMOKE_FIRST_ONLY` (sizes, dtypes) and at every value of the others
  (cell, strategy, ...); a class may instead list its smoke-test combinations in ``smoke_params``.
* ``setup`` builds seeded data and, for Numba paths, calls the function once so that compilation
  happens there, never in a timed body. Each ``time_*`` body is a single call.
* ``setup`` raises :class:`Unavailable` (a ``NotImplementedError``, which asv reports as "skipped")
  when what the benchmark measures does not exist in the commit being measured (an older commit, a
  machine without torch or a GPU). Nothing else is caught: an import that fails for any other reason
  fails the benchmark.
* ``track_*`` benchmarks return RATIOS measured inside one process (:func:`measure_ratio`): candidate and
  baseline are timed interleaved, so both see the same machine load, and the history stays
  meaningful on a noisy shared machine where absolute times are not.

Shapes are time-major like the cells: x (T, B, D).
"""

from __future__ import annotations

import importlib
import importlib.util
import statistics
import sys
import time
import zlib

import numpy as np

# ----------------------------------------------------------------------------------------------------
# Workload sizes: the workloads of `refrnn bench` (refrnn/bench/registry.py), plus a "small" size that runs in
# milliseconds. T steps, B sequences, D inputs, H hidden units.

SIZES = {
    "small": dict(T=20, B=8, D=27, H=128),
    "paper": dict(T=50, B=64, D=27, H=1024),  # the seed paper's character LM: one-hot chars, H=1024
    "stream": dict(T=200, B=1, D=27, H=1024),  # a single stream, latency-bound
}

# Where the fused gate product [W_x | W_h] [x; h] may win: a wide input (a stacked layer, D = H).
STRATEGY_SIZES = {
    **SIZES,
    "paper_wide": dict(T=50, B=64, D=1024, H=1024),
    "stream_wide": dict(T=200, B=1, D=1024, H=1024),
}

# SRU is measured where its one big product dominates: D = H.
SRU_SIZES = {
    "small": dict(T=20, B=8, D=128, H=128),
    "paper": dict(T=100, B=32, D=1024, H=1024),
}

# Conditional GRU, sparse inference (the workloads of refrnn/bench/workloads/ccgru.py):
# "unstructured" is the paper's single stream (B=1, low-rank z of rank 16/32/64), "block" its
# batched case (B=64, block-sparse z with blocks of 16/32/64 units). Densities are the fraction of
# non-zero z that the shift s is calibrated to (bench_sparse.ccgru_at_density).
SPARSE_SIZES = {
    "small": {"unstructured": dict(T=10, B=1, D=27, H=128), "block": dict(T=10, B=8, D=27, H=128)},
    "paper": {"unstructured": dict(T=200, B=1, D=27, H=1024), "block": dict(T=50, B=64, D=27, H=1024)},
}
SPARSE_LAYOUTS = ("unstructured", "block")
SPARSE_DENSITIES = (0.5, 0.25, 0.10)
SPARSE_RANKS = (16, 32, 64)  # unstructured: the width g of the low-rank bottleneck
SPARSE_BLOCK_SIZES = (16, 32, 64)  # block: units per block (g = H / block size blocks)

# Deep RNN: N recurrent layers vs M = N per-step MLP layers of the same width.
DEEP_SIZES = {
    "small": dict(T=10, B=1, D=32, H=32),
    "T50_B1": dict(T=50, B=1, D=256, H=256),
    "T50_B64": dict(T=50, B=64, D=256, H=256),
    "T200_B1": dict(T=200, B=1, D=256, H=256),
    "T200_B64": dict(T=200, B=64, D=256, H=256),
}
DEEP_LAYERS = (1, 2, 4, 8)

DTYPES = ("float32", "float64")

# Parameters the unit test of the suite runs at their first (smallest) value only.
SMOKE_FIRST_ONLY = ("size", "layers", "dtype", "density", "rank", "block_size")

# ----------------------------------------------------------------------------------------------------
# Seeded data. Every array comes from a generator seeded by SEED and a key naming its role, so the
# same benchmark sees the same numbers on every commit and in every process.

SEED = 20260123


def rng(*key) -> np.random.Generator:
    """A generator for the role ``key`` (any reprs), independent of every other role's."""
    return np.random.default_rng([SEED, zlib.crc32(repr(key).encode())])


def one_hot_chars(T: int, B: int, D: int, dtype, key="x") -> np.ndarray:
    """(T, B, D) one-hot characters: the paper's input for D = 27 symbols."""
    symbols = rng(key, T, B, D).integers(D, size=(T, B))
    return np.eye(D, dtype=dtype)[symbols]


def normal(shape, dtype, key) -> np.ndarray:
    """Standard-normal entries, e.g. dense inputs (SRU, deep layers) and upstream gradients."""
    return rng(key, tuple(shape)).standard_normal(shape).astype(dtype)


def inputs(size: dict, dtype, key="x") -> np.ndarray:
    """x (T, B, D) for a size: one-hot characters when D is the paper's 27 symbols, normal otherwise."""
    T, B, D = size["T"], size["B"], size["D"]
    if D == 27:
        return one_hot_chars(T, B, D, dtype, key)
    return normal((T, B, D), dtype, key)


CELLS = ("gru", "gru_before", "lstm")


def cell_params(cell: str, D: int, H: int, dtype):
    """``(module, params)`` for a reference cell name of :data:`CELLS`, seeded."""
    from refrnn.cells import gru, lstm

    dtype = np.dtype(dtype)
    if cell == "gru":
        return gru, gru.init(D, H, reset="after", rng=rng("params", cell, D, H), dtype=dtype)
    if cell == "gru_before":
        return gru, gru.init(D, H, reset="before", rng=rng("params", cell, D, H), dtype=dtype)
    if cell == "lstm":
        return lstm, lstm.init(D, H, rng=rng("params", cell, D, H), dtype=dtype)
    raise ValueError(f"cell: expected one of {CELLS}, got {cell!r}")


# ----------------------------------------------------------------------------------------------------
# Guards: a benchmark of something the measured commit (or machine) lacks is skipped, not broken.


class Unavailable(NotImplementedError):
    """What a benchmark measures is not available; asv reports the benchmark as skipped.

    ``kind`` says why: ``"module"`` (not in this commit, or a dependency not installed),
    ``"attribute"`` (the module exists but lacks the function), ``"gpu"`` (no CUDA device),
    ``"combination"`` (a parameter combination the benchmark does not cover).
    The unit test of the suite skips the first, fourth and third kinds and fails on ``"attribute"``
    when the module is present: that is an interface that drifted away from its benchmark.
    """

    def __init__(self, kind: str, what: str):
        super().__init__(f"{kind} unavailable: {what}")
        self.kind = kind
        self.what = what


def module_exists(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def require(module: str, *names: str):
    """Import ``module`` and check it has ``names``; raise :class:`Unavailable` otherwise.

    Only a missing module counts as unavailable; a module that exists but fails to import is an
    error and propagates. So is a missing ``refrnn`` itself: every commit has it, so its absence
    means the benchmarks run in a Python without the project installed, and skipping every
    benchmark (with exit status 0) would hide that.
    """
    if module.split(".")[0] == "refrnn" and not module_exists("refrnn"):
        raise RuntimeError(f"{module}: refrnn is not importable in this Python ({sys.executable}); install it first")
    if not module_exists(module):
        raise Unavailable("module", module)
    mod = importlib.import_module(module)
    missing = [n for n in names if not hasattr(mod, n)]
    if missing:
        raise Unavailable("attribute", f"{module}.{', '.join(missing)}")
    return mod


def require_torch():
    """torch (its default thread count: the machine's cores, as NumPy's BLAS and Numba use)."""
    return require("torch")


def _no_nvidia_driver() -> bool:
    # Cheap test first: asv runs every parameter combination in a process of its own, and importing
    # numba.cuda just to learn that there is no driver costs about a second each time.
    import ctypes.util
    import os

    return not (
        os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia") or ctypes.util.find_library("cuda")
    )


def require_gpu():
    """numba.cuda with a real device; the simulator does not count (its timings mean nothing)."""
    import os

    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        raise Unavailable("gpu", "NUMBA_ENABLE_CUDASIM=1: simulator timings are meaningless")
    if _no_nvidia_driver():
        raise Unavailable("gpu", "no NVIDIA driver on this machine")
    if not module_exists("numba.cuda"):
        raise Unavailable("module", "numba.cuda")
    from numba import cuda

    try:
        available = cuda.is_available()
    except Exception as err:  # no driver: numba raises its own CudaSupportError subclasses
        raise Unavailable("gpu", f"numba.cuda.is_available() failed: {err}") from None
    if not available:
        raise Unavailable("gpu", "no CUDA device")
    return cuda


def skip_combination(why: str):
    raise Unavailable("combination", why)


# ----------------------------------------------------------------------------------------------------
# Ratios measured inside one process.


def _calibrate(fn, target: float) -> int:
    """How many calls of ``fn`` make one sample of at least ``target`` seconds (1 for slow calls):
    as many as ran in ``target`` seconds of calling it, like ``timeit``'s autorange. Counting calls
    over a stretch of time, rather than timing one call, keeps a single call that the machine's load
    slowed down from making every sample one call long."""
    n = 0
    t0 = time.perf_counter()
    while True:
        fn()
        n += 1
        if time.perf_counter() - t0 >= target:
            return n


def measure_ratio(candidate, baseline, *, repeats: int = 7, sample: float = 0.01, settle: float = 0.15) -> float:
    """median(time of a ``candidate`` call) / median(time of a ``baseline`` call), timed interleaved.

    Both callables are warmed up (and any compilation done) first; then each of ``repeats`` rounds
    times a sample of each, in alternating order (ABBA), so slow drifts of the machine's load hit both
    alike. A sample is as many calls as fill ``sample`` seconds (one for slow calls), each timed on
    its own: the median over every call of every round ignores the calls that another process's
    burst stalled (on a shared 2-core machine one sub-millisecond call in ten is slowed down by
    milliseconds, which would inflate any sample's mean). Below 1: the candidate is faster.

    Before each sample the process sleeps ``settle`` seconds and makes one untimed call: BLAS and
    OpenMP worker pools (OpenBLAS's, torch's) keep spinning for a while after their last call, and
    the previous candidate's spinning threads would otherwise steal the cores from the next one.
    """
    n_c = _calibrate(candidate, sample)
    n_b = _calibrate(baseline, sample)
    t_c, t_b = [], []

    def one(fn, n, out):
        if settle:
            time.sleep(settle)
            fn()
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)

    for k in range(repeats):
        if k % 2 == 0:
            one(candidate, n_c, t_c)
            one(baseline, n_b, t_b)
        else:
            one(baseline, n_b, t_b)
            one(candidate, n_c, t_c)
    # Four significant digits: the noise is larger than that, and the published tables stay readable.
    return float(f"{statistics.median(t_c) / statistics.median(t_b):.4g}")


class TimeBenchmark:
    """Defaults for classes of ``time_*`` / ``peakmem_*`` benchmarks.

    The suite has about 500 parameter combinations; asv's defaults (two processes, up to 10 samples
    or 20 s each, 1 s warm-up) would take hours a commit. Here: one process, at most 5 samples or
    5 s, and a short warm-up (compilation already happened in ``setup``). Noise is handled by the
    ``track_*`` ratios, not by more samples of absolute times.
    """

    timeout = 300
    processes = 1
    repeat = (1, 5, 5.0)
    warmup_time = 0.1


class RatioBenchmark:
    """Base for classes of ``track_*`` ratio benchmarks: the unit and a single process per result.

    A ratio is already a median of interleaved repeats, so one process and one sample per commit
    suffice; the repeat count keeps a paper-size run to a few seconds. The unit test of the suite
    lowers ``ratio_repeats``, ``ratio_sample`` and ``ratio_settle`` to run each ratio once, quickly.
    """

    unit = "ratio"
    repeat = 1
    number = 1
    processes = 1
    timeout = 300
    ratio_repeats = 5
    ratio_sample = 0.05
    ratio_settle = 0.15

    def ratio(self, candidate, baseline) -> float:
        """:func:`measure_ratio` with this class's repeat count, sample and settling times."""
        return measure_ratio(
            candidate, baseline, repeats=self.ratio_repeats, sample=self.ratio_sample, settle=self.ratio_settle
        )


def require_moved(new: str, old: str, *names: str):
    """:func:`require` of a module that moved: its path ``new`` on commits that have it, else its
    former path ``old`` (a commit from before the move, where ``new`` does not exist yet)."""
    return require(new if module_exists(new) else old, *names)


# ----------------------------------------------------------------------------------------------------
# Training steps (forward + backward, back to back): the sizes of refrnn bench's *-train workloads
# (refrnn/bench/registry.py TRAIN_SIZES), plus a "small" size that runs in milliseconds.

TRAIN_SIZES = {
    "small": dict(T=20, B=8, D=27, H=128),
    "paper": dict(T=50, B=64, D=27, H=1024),
    "mid": dict(T=100, B=32, D=256, H=256),
}
