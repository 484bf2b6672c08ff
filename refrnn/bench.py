r"""``refrnn bench``: the fast paths timed against the reference, a plain NumPy loop, PyTorch and the GEMM bound.

Every workload is a set of named *candidates* (zero-argument callables over the same seeded data).
They run in one process, interleaved: after warm-up (which includes Numba compilation), each of
``repeats`` rounds calls every candidate once, in an order rotated from round to round, so all of
them see the same machine load; the median of the rounds is reported. What the table shows are
*ratios* of those medians (a shared 2-core machine moves absolute times by tens of percent; ratios
taken within one run move far less).

Each workload names its *subject* (the fast path under test); the column ``speed-up`` is
``time(candidate) / time(subject)``: above 1, the subject is faster. Two kinds of baseline:

* other implementations: the reference cell (float32), a straightforward NumPy loop, ``torch.nn``
  with ``torch.set_num_threads`` equal to the threads BLAS and Numba use;
* the GEMM bound: all the FLOPs of the forward's matrix products (recurrent and input) divided by
  the sgemm rate measured in the same run. The rate comes from the timed candidate
  "sgemm: recurrent products alone": the T per-step products ``h @ W_h.T`` of the workload, through
  the BLAS call the fast path makes, and nothing else. ``time(subject) / bound`` is what the
  element-wise work, the loop, the input projection's lower GEMM efficiency (K = D is small) and
  memory traffic cost on top of ideal products. The bound is a computed row of the table.

*Bars* are the targets of issue 4; each row says met, or the measured gap (judged on medians).

Noise. Contention only ever adds time, so next to the medians the table gives the ratios of the
*fastest* rounds ("by min"), and each workload prints the machine's load average before and after
it: on a busy shared machine, a bar met by medians but not by minima (or the reverse) is noise.

Adding a workload: write a function ``(scale) -> Case`` and decorate it with
``@workload(name, title)``; ``scale`` is "full", "quick" (the same per-step shapes, fewer steps)
or "tiny" (test sizes). :func:`sizes_for` picks the sizes.

Usage::

    refrnn bench [--quick] [--json FILE] [--only NAME ...] [--repeats N] [--warmup N] [--pause S] [--list]
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

from .cells import gru, lstm
from .cells._common import sigmoid

SCALES = ("full", "quick", "tiny")
SEED = 4


@dataclasses.dataclass(frozen=True)
class Bar:
    """A target: ``time(other) / time(fast) >= at_least`` (a speed-up; below 1 allows a slowdown)."""

    fast: str
    other: str
    at_least: float
    text: str


@dataclasses.dataclass(frozen=True)
class Case:
    """One workload at one scale: its candidates (the subject first), bars and FLOP count."""

    sizes: dict
    candidates: dict[str, Callable[[], object]]
    subject: str
    bars: tuple[Bar, ...] = ()
    sgemm: str | None = None  # the candidate that times the recurrent products alone
    sgemm_flops: float = 0.0  # FLOPs of that candidate
    flops: float = 0.0  # FLOPs of all the forward's products (recurrent + input): the GEMM bound's
    notes: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    title: str
    build: Callable[[str], Case]


WORKLOADS: dict[str, Workload] = {}


def workload(name: str, title: str):
    """Register ``build(scale) -> Case`` under ``name`` (the order of registration is the run order)."""

    def register(build):
        if name in WORKLOADS:
            raise ValueError(f"workload {name!r} is already registered")
        WORKLOADS[name] = Workload(name, title, build)
        return build

    return register


def sizes_for(scale: str, full: dict, tiny: dict, quick_steps: int | None = None) -> dict:
    """The sizes of a workload at ``scale``: "quick" keeps every shape of ``full`` but runs
    ``quick_steps`` steps (default T/5), so per-step costs, and hence ratios, stay comparable."""
    if scale == "full":
        return dict(full)
    if scale == "quick":
        return {**full, "T": quick_steps or max(1, full["T"] // 5)}
    return dict(tiny)


# ---------------------------------------------------------------------------------------------
# Environment: threads, torch
# ---------------------------------------------------------------------------------------------


def bench_threads() -> int:
    """The thread count every candidate gets: what OpenBLAS and Numba use by default (the CPUs
    this process may run on, unless OPENBLAS_NUM_THREADS / OMP_NUM_THREADS say otherwise)."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _torch(threads: int):
    """torch with ``threads`` intra-op threads, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    return torch


# ---------------------------------------------------------------------------------------------
# Baselines: the straightforward NumPy loops, and the products alone
# ---------------------------------------------------------------------------------------------


def numpy_gru(p: gru.GRUParams, x: np.ndarray, h0: np.ndarray):
    """A straightforward NumPy GRU (reset="after") for inference: what one writes without a fast path."""
    H = p.hidden_size
    ax = x @ p.W_x.T + p.b_x
    y = np.empty((x.shape[0], x.shape[1], H), x.dtype)
    h = h0
    for t in range(x.shape[0]):
        ah = h @ p.W_h.T + p.b_h
        r = sigmoid(ax[t, :, :H] + ah[:, :H])
        z = sigmoid(ax[t, :, H : 2 * H] + ah[:, H : 2 * H])
        n = np.tanh(ax[t, :, 2 * H :] + r * ah[:, 2 * H :])
        h = (1 - z) * n + z * h
        y[t] = h
    return y, h


def numpy_lstm(p: lstm.LSTMParams, x: np.ndarray, h0: np.ndarray, c0: np.ndarray):
    """A straightforward NumPy LSTM for inference."""
    H = p.hidden_size
    ax = x @ p.W_x.T + (p.b_x + p.b_h)
    y = np.empty((x.shape[0], x.shape[1], H), x.dtype)
    h, c = h0, c0
    for t in range(x.shape[0]):
        a = ax[t] + h @ p.W_h.T
        i, f, o = sigmoid(a[:, :H]), sigmoid(a[:, H : 2 * H]), sigmoid(a[:, 3 * H :])
        c = f * c + i * np.tanh(a[:, 2 * H : 3 * H])
        h = o * np.tanh(c)
        y[t] = h
    return y, (h, c)


SGEMM = "sgemm: recurrent products alone"
SUBJECT = "(the subject)"  # a Bar's ``fast`` standing for the workload's subject (resolved in summarise)


def _default_label(D: int, H: int, B: int) -> str:
    """The candidate calling the fast path with its default strategy, named after what "auto" picks."""
    from .jit import _strategy

    return f"njit (auto: {_strategy.choose('auto', D, H, B)})"


def _recurrent_products(T, B, *W_Ts):
    """T steps of the products ``h @ W_T`` (one per matrix in ``W_Ts``, h random with B rows), through
    the BLAS call the fast path makes, and nothing else."""
    from .jit import _kernels

    rng = np.random.default_rng(SEED)
    work = [(rng.uniform(-1, 1, (B, W_T.shape[0])).astype(W_T.dtype), W_T, np.empty((B, W_T.shape[1]), W_T.dtype)) for W_T in W_Ts]

    def run():
        for h, W_T, out in work:
            _kernels.products_only(h, W_T, out, T)

    return run


def _gemm_flops(T, B, D, H, gates):
    """FLOPs of a forward's products: the input projection (T*B x D x gates*H) and T recurrent
    products (B x H x gates*H)."""
    return 2.0 * T * B * gates * H * (D + H)


def _data(D, H, T, B, dtype=np.float32):
    rng = np.random.default_rng(SEED)
    # One-hot characters, the paper's input; dense normal inputs when D is not a character set.
    if D == 27:
        x = np.eye(D, dtype=dtype)[rng.integers(D, size=(T, B))]
    else:
        x = rng.standard_normal((T, B, D)).astype(dtype)
    return rng, x


# ---------------------------------------------------------------------------------------------
# Workloads (issue 4)
# ---------------------------------------------------------------------------------------------

_PAPER = dict(B=64, T=50, D=27, H=1024)
_STREAM = dict(B=1, T=200, D=27, H=1024)
_TINY = dict(B=3, T=4, D=5, H=8)
_TINY_STREAM = dict(B=1, T=4, D=5, H=8)


def _gru_case(scale, full, tiny, *, reset="after", bars=(), torch_too=True, notes=()):
    from .jit import gru as fast

    s = sizes_for(scale, full, tiny)
    T, B, D, H = s["T"], s["B"], s["D"], s["H"]
    rng, x = _data(D, H, T, B)
    p = gru.init(D, H, reset=reset, rng=rng, dtype=np.float32)
    h0 = np.zeros((B, H), np.float32)
    fused = fast.prepare(p, "fused")
    subject = _default_label(D, H, B)
    cands = {
        subject: lambda: fast.forward_inference(p, x, h0),
        "njit batched": lambda: fast.forward_inference(p, x, h0, strategy="batched"),
        "njit fused": lambda: fast.forward_inference(p, x, h0, strategy="fused", prepared=fused),
        "njit, training": lambda: fast.forward(p, x, h0),
        "reference (float32)": lambda: gru.forward(p, x, h0),
    }
    if reset == "after":
        cands["NumPy loop"] = lambda: numpy_gru(p, x, h0)
    torch = _torch(bench_threads()) if torch_too and reset == "after" else None
    if torch is not None:
        module = torch.nn.GRU(D, H)
        with torch.no_grad():
            for name, field in (("weight_ih_l0", "W_x"), ("weight_hh_l0", "W_h"), ("bias_ih_l0", "b_x"), ("bias_hh_l0", "b_h")):
                getattr(module, name).copy_(torch.from_numpy(getattr(p, field)))
        tx, th = torch.from_numpy(x), torch.from_numpy(h0)[None]

        def run_torch():
            with torch.inference_mode():
                return module(tx, th)

        cands["torch.nn.GRU"] = run_torch
    if reset == "after":
        cands[SGEMM] = _recurrent_products(T, B, p.W_h.T)
    else:  # two products a step: [W_hr; W_hz] h, then W_hn (r*h)
        cands[SGEMM] = _recurrent_products(T, B, p.W_h[: 2 * H].T, p.W_h[2 * H :].T)
    bars = tuple(b for b in bars if b.other in cands or b.other == "GEMM bound")
    return Case(s, cands, subject, bars, SGEMM, 2.0 * T * B * H * 3 * H, _gemm_flops(T, B, D, H, 3), notes)


def _torch_note(torch_bar: str) -> tuple[str, ...]:
    try:
        import torch  # noqa: F401
    except ImportError:
        return (f"torch is not installed: the bar {torch_bar} was not measured (pip install 'refrnn[torch]')",)
    return ()


@workload("gru-paper", "GRU forward, paper config (float32, reset=after)")
def _gru_paper(scale):
    bars = (
        Bar(SUBJECT, "torch.nn.GRU", 1.5, ">= 1.5x faster than torch.nn.GRU"),
        Bar(SUBJECT, "NumPy loop", 1.1, ">= 1.1x faster than the NumPy loop"),
        Bar(SUBJECT, "GEMM bound", 1 / 1.2, "within 1.2x of the GEMM bound"),
    )
    return _gru_case(scale, _PAPER, _TINY, bars=bars, notes=_torch_note("vs torch.nn.GRU"))


@workload("gru-stream", "GRU forward, single stream (float32, reset=after)")
def _gru_stream(scale):
    bars = (
        Bar(SUBJECT, "torch.nn.GRU", 3.0, ">= 3x faster than torch.nn.GRU"),
        Bar(SUBJECT, "NumPy loop", 1.2, ">= 1.2x faster than the NumPy loop"),
    )
    return _gru_case(scale, _STREAM, _TINY_STREAM, bars=bars, notes=_torch_note("vs torch.nn.GRU"))


@workload("lstm-paper", "LSTM forward, paper config (float32)")
def _lstm_paper(scale):
    from .jit import lstm as fast

    s = sizes_for(scale, _PAPER, _TINY)
    T, B, D, H = s["T"], s["B"], s["D"], s["H"]
    rng, x = _data(D, H, T, B)
    p = lstm.init(D, H, rng=rng, dtype=np.float32)
    h0 = np.zeros((B, H), np.float32)
    c0 = np.zeros((B, H), np.float32)
    fused = fast.prepare(p, "fused")
    subject = _default_label(D, H, B)
    cands = {
        subject: lambda: fast.forward_inference(p, x, (h0, c0)),
        "njit batched": lambda: fast.forward_inference(p, x, (h0, c0), strategy="batched"),
        "njit fused": lambda: fast.forward_inference(p, x, (h0, c0), strategy="fused", prepared=fused),
        "njit, training": lambda: fast.forward(p, x, (h0, c0)),
        "reference (float32)": lambda: lstm.forward(p, x, (h0, c0)),
        "NumPy loop": lambda: numpy_lstm(p, x, h0, c0),
    }
    torch = _torch(bench_threads())
    if torch is not None:
        module = torch.nn.LSTM(D, H)
        with torch.no_grad():
            for name, field in (("weight_ih_l0", "W_x"), ("weight_hh_l0", "W_h"), ("bias_ih_l0", "b_x"), ("bias_hh_l0", "b_h")):
                getattr(module, name).copy_(torch.from_numpy(getattr(p, field)))
        tx, th, tc = torch.from_numpy(x), torch.from_numpy(h0)[None], torch.from_numpy(c0)[None]

        def run_torch():
            with torch.inference_mode():
                return module(tx, (th, tc))

        cands["torch.nn.LSTM"] = run_torch
    cands[SGEMM] = _recurrent_products(T, B, p.W_h.T)
    bars = (Bar(SUBJECT, "torch.nn.LSTM", 1 / 1.1, "within 1.1x of torch.nn.LSTM or better"),)
    bars = tuple(b for b in bars if b.other in cands)
    return Case(s, cands, subject, bars, SGEMM, 2.0 * T * B * H * 4 * H, _gemm_flops(T, B, D, H, 4), _torch_note("vs torch.nn.LSTM"))


@workload("gru-before", "GRU forward, reset=before (Cho; paper Eq. 3), paper config: two products a step")
def _gru_before(scale):
    return _gru_case(scale, _PAPER, _TINY, reset="before")


def _strategy_case(scale, full, tiny):
    from .jit import gru as fast

    s = sizes_for(scale, full, tiny)
    T, B, D, H = s["T"], s["B"], s["D"], s["H"]
    rng, x = _data(D, H, T, B)
    p = gru.init(D, H, rng=rng, dtype=np.float32)
    h0 = np.zeros((B, H), np.float32)
    fused = fast.prepare(p, "fused")
    cands = {
        "njit fused": lambda: fast.forward_inference(p, x, h0, strategy="fused", prepared=fused),
        "njit batched": lambda: fast.forward_inference(p, x, h0, strategy="batched"),
        "njit fused, prepare per call": lambda: fast.forward_inference(p, x, h0, strategy="fused"),
        SGEMM: _recurrent_products(T, B, p.W_h.T),
    }
    return Case(s, cands, "njit fused", (), SGEMM, 2.0 * T * B * H * 3 * H, _gemm_flops(T, B, D, H, 3))


@workload("strategy-wide-input", "GRU strategies, fused vs batched, B=64, D=H=1024 (a stacked layer)")
def _strategy_wide(scale):
    return _strategy_case(scale, dict(B=64, T=50, D=1024, H=1024), dict(_TINY, D=8))


@workload("strategy-stream-wide-input", "GRU strategies, fused vs batched, B=1, D=H=1024")
def _strategy_stream_wide(scale):
    return _strategy_case(scale, dict(B=1, T=200, D=1024, H=1024), dict(_TINY_STREAM, D=8))


# ---------------------------------------------------------------------------------------------
# Running, reporting
# ---------------------------------------------------------------------------------------------


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def measure(case: Case, *, warmup: int, repeats: int, pause: float = 0.0, label: str = "") -> dict[str, list[float]]:
    """Per-candidate lists of ``repeats`` wall times (s), interleaved in rotated order after warm-up.

    ``pause`` seconds of sleep precede every timed call. Three thread pools live in this process
    (NumPy's OpenBLAS, the OpenBLAS of SciPy that Numba calls, torch's OpenMP), and OpenBLAS workers
    spin for ~0.1 s after a call before they sleep: without a pause, a candidate shares the cores
    with the previous candidate's spinning threads.
    """
    names = list(case.candidates)
    for name in names:
        start = time.perf_counter()
        for _ in range(warmup):
            case.candidates[name]()
        _progress(f"  {label}warm-up {name}: {time.perf_counter() - start:.2f} s")
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(repeats):
        k = rep % len(names)
        for name in names[k:] + names[:k]:
            if pause:
                time.sleep(pause)
            start = time.perf_counter()
            case.candidates[name]()
            times[name].append(time.perf_counter() - start)
        _progress(f"  {label}round {rep + 1}/{repeats}")
    return times


def summarise(work: Workload, case: Case, times: dict[str, list[float]], load: tuple[float, float] | None = None) -> dict:
    """Medians, ratios and bars of one workload. Ratios of minima are reported too: on a shared
    machine, contention only ever adds time, so the fastest round is the least disturbed one."""
    times = dict(times)
    computed = set()
    if case.sgemm is not None:  # the GEMM bound: all products' FLOPs at the measured sgemm rate
        scale = case.flops / case.sgemm_flops
        times["GEMM bound"] = [t * scale for t in times[case.sgemm]]
        computed.add("GEMM bound")
    med = {name: statistics.median(ts) for name, ts in times.items()}
    low = {name: min(ts) for name, ts in times.items()}
    subject = med[case.subject]
    rows = {
        name: {
            "median_s": med[name],
            "min_s": low[name],
            "max_s": max(ts),
            "times_s": ts,
            "speedup_of_subject": med[name] / subject,
            "speedup_of_subject_by_min": low[name] / low[case.subject],
            "computed": name in computed,
        }
        for name, ts in times.items()
    }
    out = {
        "name": work.name,
        "title": work.title,
        "sizes": case.sizes,
        "subject": case.subject,
        "candidates": rows,
        "notes": list(case.notes),
        "load_1min": list(load) if load else None,
    }
    if case.sgemm is not None:
        out["gemm_flops"] = case.flops
        out["sgemm_rate_gflops"] = case.sgemm_flops / med[case.sgemm] / 1e9
        out["subject_over_bound"] = subject / med["GEMM bound"]
        out["subject_over_bound_by_min"] = low[case.subject] / low["GEMM bound"]
    out["bars"] = []
    for bar in case.bars:
        fast = case.subject if bar.fast == SUBJECT else bar.fast
        out["bars"].append(
            {
                "text": bar.text,
                "fast": fast,
                "other": bar.other,
                "at_least": bar.at_least,
                "speedup": med[bar.other] / med[fast],
                "speedup_by_min": low[bar.other] / low[fast],
                "met": med[bar.other] / med[fast] >= bar.at_least,
            }
        )
    return out


def format_result(res: dict) -> str:
    sizes = " ".join(f"{k}={v}" for k, v in res["sizes"].items())
    lines = [f"{res['name']}: {res['title']}  [{sizes}]"]
    label = {n: n + (" (computed)" if row.get("computed") else "") for n, row in res["candidates"].items()}
    width = max(map(len, label.values()))
    lines.append(
        f"  {'candidate':<{width}}  {'median ms':>10}  {'min ms':>9}  {'max ms':>9}  {'speed-up of subject':>20}  {'(by min)':>9}"
    )
    for name, row in res["candidates"].items():
        if name == res["subject"]:
            mark, mark_min = "(subject)", ""
        else:
            mark, mark_min = f"{row['speedup_of_subject']:.2f}x", f"{row['speedup_of_subject_by_min']:.2f}x"
        lines.append(
            f"  {label[name]:<{width}}  {row['median_s'] * 1e3:>10.2f}  {row['min_s'] * 1e3:>9.2f}  {row['max_s'] * 1e3:>9.2f}"
            f"  {mark:>20}  {mark_min:>9}"
        )
    if "sgemm_rate_gflops" in res:
        lines.append(
            f"  GEMM bound (computed): {res['gemm_flops'] / 1e9:.2f} GFLOP of products (recurrent + input) at the sgemm rate"
            f" of this run, {res['sgemm_rate_gflops']:.0f} GFLOP/s; subject / bound = {res['subject_over_bound']:.2f}"
            f" (by min {res['subject_over_bound_by_min']:.2f})"
        )
    for bar in res["bars"]:
        verdict = "met" if bar["met"] else f"NOT MET (gap: {bar['at_least'] / bar['speedup']:.2f}x)"
        lines.append(
            f"  bar: {bar['fast']} {bar['text']}: measured {bar['speedup']:.2f}x (by min {bar['speedup_by_min']:.2f}x) -> {verdict}"
        )
    if res.get("load_1min"):
        before, after = res["load_1min"]
        lines.append(f"  machine load (1-min average, {os.cpu_count()} CPUs): {before:.1f} before, {after:.1f} after")
    lines.extend(f"  note: {n}" for n in res["notes"])
    return "\n".join(lines)


def _environment(threads: int) -> dict:
    import numba

    env = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "threads": threads,
        "numpy": np.__version__,
        "numba": numba.__version__,
        "numba_threads": numba.get_num_threads(),
    }
    try:
        import torch

        env["torch"] = torch.__version__
        env["torch_threads"] = torch.get_num_threads()
    except ImportError:
        env["torch"] = None
    return env


def main(argv=None) -> int:
    """``refrnn bench``: time the fast paths against the reference, NumPy, PyTorch and the GEMM bound."""
    import argparse

    parser = argparse.ArgumentParser(prog="refrnn bench", description=main.__doc__)
    parser.add_argument("--quick", action="store_true", help="smoke run: every workload at T/5 steps, 3 rounds (under a minute)")
    parser.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)  # test sizes, for the unit test
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    parser.add_argument("--only", metavar="NAME", action="append", help="run only this workload (repeatable); see --list")
    parser.add_argument("--repeats", type=int, help="timed rounds per workload (default 9; --quick 3)")
    parser.add_argument("--warmup", type=int, help="untimed calls per candidate first (default 2; --quick 1)")
    parser.add_argument("--pause", type=float, default=None, help="seconds of sleep before each timed call, so the previous candidate's BLAS threads stop spinning (default 0.15; --quick 0)")
    parser.add_argument("--list", action="store_true", help="list the workloads and exit")
    args = parser.parse_args(argv)

    if args.list:
        for w in WORKLOADS.values():
            print(f"{w.name:<28} {w.title}")
        return 0
    unknown = [n for n in args.only or () if n not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload {', '.join(map(repr, unknown))}; expected one of {', '.join(WORKLOADS)}")
    scale = "tiny" if args.tiny else "quick" if args.quick else "full"
    quick = scale != "full"
    repeats = args.repeats if args.repeats is not None else (3 if quick else 9)
    warmup = args.warmup if args.warmup is not None else (1 if quick else 2)
    if args.pause is None:  # a smoke run is not a measurement: no settling time between calls
        args.pause = 0.0 if args.quick else 0.15
    if repeats < 1 or warmup < 0 or args.pause < 0:
        parser.error("--repeats must be at least 1, --warmup and --pause at least 0")
    threads = bench_threads()
    env = _environment(threads)
    header = (
        f"refrnn bench ({scale}): {repeats} interleaved rounds after {warmup} warm-up call(s), medians; "
        f"{threads} threads (BLAS, numba{', torch' if env['torch'] else ''}); numpy {env['numpy']}, numba {env['numba']}"
        + (f", torch {env['torch']}" if env["torch"] else ", torch not installed")
    )
    print(header, flush=True)
    results = []
    start = time.perf_counter()
    selected = [WORKLOADS[n] for n in args.only] if args.only else list(WORKLOADS.values())
    for k, work in enumerate(selected, 1):
        _progress(f"[{k}/{len(selected)}] {work.name}: building")
        case = work.build(scale)
        load_before = os.getloadavg()[0]
        times = measure(case, warmup=warmup, repeats=repeats, pause=args.pause if scale != "tiny" else 0.0, label=f"[{k}/{len(selected)}] ")
        res = summarise(work, case, times, (load_before, os.getloadavg()[0]))
        results.append(res)
        print("\n" + format_result(res), flush=True)
    elapsed = time.perf_counter() - start
    met = [b["met"] for r in results for b in r["bars"]]
    print(f"\n{sum(met)}/{len(met)} bars met; {elapsed:.1f} s in all")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"scale": scale, "repeats": repeats, "warmup": warmup, "pause_s": args.pause, "environment": env, "elapsed_s": elapsed, "workloads": results}, fh, indent=1)
        print(f"wrote {args.json}")
    return 0


# Workloads of other modules register themselves on import (they use @workload from here).
from .jit import bench_ccgru, bench_sru, bench_wavefront  # noqa: E402,F401

if __name__ == "__main__":
    # Under `python -m refrnn.bench` this file is __main__, and the workload modules above register into
    # refrnn.bench, a second copy of it: run that copy's main, which sees every workload.
    from refrnn import bench as _registered

    sys.exit(_registered.main())
