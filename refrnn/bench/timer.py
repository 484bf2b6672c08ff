"""The one timer of refrnn's benchmarks: candidates called in turn, round after round, medians compared.

Every candidate is a zero-argument callable. After warm-up (which includes Numba compilation), each
of ``repeats`` rounds calls every candidate once, in an order rotated from round to round, so all of
them see the same machine load; what a benchmark reports are medians of the rounds, or their ratios
(a shared machine moves absolute times by tens of percent; ratios taken within one run far less).
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable


def interleaved(
    candidates: dict[str, Callable[[], object]],
    *,
    repeats: int,
    warmup: int = 1,
    pause: float = 0.0,
    clock: Callable[[], float] = time.perf_counter,
    min_round_s: float | None = None,
    timed_call: Callable[[Callable[[], object]], float] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, list[float]]:
    """Per-candidate lists of ``repeats`` times (seconds per call), interleaved in rotated order.

    ``pause`` seconds of sleep precede every timed call: OpenBLAS workers spin for ~0.1 s after a
    call before they sleep, so without a pause a candidate shares the cores with the previous
    candidate's spinning threads. ``clock`` is wall time by default; ``time.process_time`` does not
    count the time other processes hold the core. ``min_round_s``: a candidate is called as many
    times per round as fill that long (measured once after warm-up), for calls too short to time
    alone. ``timed_call(fn) -> seconds`` replaces the clock altogether (GPU events).
    ``progress(message)`` hears about each warm-up and each round.
    """
    names = list(candidates)
    for name in names:
        start = time.perf_counter()
        for _ in range(warmup):
            candidates[name]()
        if progress is not None:
            progress(f"warm-up {name}: {time.perf_counter() - start:.2f} s")
    number = dict.fromkeys(names, 1)
    if min_round_s:
        for name in names:
            start = clock()
            candidates[name]()
            number[name] = max(1, int(min_round_s / max(clock() - start, 1e-6)))
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(repeats):
        k = rep % len(names)
        for name in names[k:] + names[:k]:
            if pause:
                time.sleep(pause)
            fn, num = candidates[name], number[name]
            if timed_call is not None:
                times[name].append(timed_call(fn))
                continue
            start = clock()
            for _ in range(num):
                fn()
            times[name].append((clock() - start) / num)
        if progress is not None:
            progress(f"round {rep + 1}/{repeats}")
    return times


def medians(times: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(ts) for name, ts in times.items()}


def to_stderr(msg: str) -> None:
    """Progress goes to stderr, so that stdout carries the results alone."""
    print(msg, file=sys.stderr, flush=True)


def measure(case, *, warmup: int, repeats: int, pause: float = 0.0, label: str = "") -> dict[str, list[float]]:
    """:func:`interleaved` over a workload case's candidates; progress lines, prefixed with ``label``, on stderr."""
    return interleaved(case.candidates, repeats=repeats, warmup=warmup, pause=pause,
                       progress=lambda msg: to_stderr(f"  {label}{msg}"))
