"""``refrnn bench``: the command line. Which workloads run at which scale, how often, and where the results go.

Usage::

    refrnn bench [--quick] [--json FILE] [--only NAME ...] [--repeats N] [--warmup N] [--pause S] [--clock wall|cpu] [--list]
"""

from __future__ import annotations

import json
import os
import time

from . import workloads  # noqa: F401  (registers every workload, in run order)
from .registry import WORKLOADS
from .report import environment, format_blas, format_result, format_summary, summarise
from .baselines import bench_threads
from .timer import interleaved, to_stderr


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
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="wall time (default) or this process's CPU time, which does not count the time other processes hold the core (use with one thread)")
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
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    threads = bench_threads()
    env = environment(threads)
    header = (
        f"refrnn bench ({scale}): {repeats} interleaved rounds after {warmup} warm-up call(s), medians; "
        f"{threads} threads (BLAS, numba{', torch' if env['torch'] else ''}); numpy {env['numpy']}, numba {env['numba']}"
        + (f", torch {env['torch']}" if env["torch"] else ", torch not installed")
    )
    print("\n".join([header, *format_blas(env)]), flush=True)
    results = []
    start = time.perf_counter()
    selected = [WORKLOADS[n] for n in args.only] if args.only else list(WORKLOADS.values())
    for k, work in enumerate(selected, 1):
        to_stderr(f"[{k}/{len(selected)}] {work.name}: building")
        case = work.build(scale)
        load_before = os.getloadavg()[0]
        label = f"  [{k}/{len(selected)}] "
        times = interleaved(case.candidates, repeats=repeats, warmup=warmup, pause=args.pause if scale != "tiny" else 0.0,
                            clock=clock, progress=lambda msg, label=label: to_stderr(label + msg))
        res = summarise(work, case, times, (load_before, os.getloadavg()[0]), scale)
        if args.clock != "wall":
            res["clock"] = args.clock
        results.append(res)
        print("\n" + format_result(res) + ("" if args.clock == "wall" else f"\n  clock: {args.clock}"), flush=True)
    elapsed = time.perf_counter() - start
    print("\n" + format_summary(results) + f"; {elapsed:.1f} s in all")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"scale": scale, "repeats": repeats, "warmup": warmup, "pause_s": args.pause, "environment": env, "elapsed_s": elapsed, "workloads": results}, fh, indent=1)
        print(f"wrote {args.json}")
    return 0


