"""The results of ``refrnn bench``: medians, ratios, the GEMM bound and the bars of one workload, as a
dict (the JSON) and as text (the table)."""

from __future__ import annotations

import os
import platform
import statistics

import numpy as np

from .registry import SUBJECT, Case, Workload


def summarise(
    work: Workload, case: Case, times: dict[str, list[float]], load: tuple[float, float] | None = None, scale: str = "full"
) -> dict:
    """Medians, ratios and bars of one workload. Ratios of minima are reported too: on a shared
    machine, contention only ever adds time, so the fastest round is the least disturbed one. A bar is
    judged only at ``scale="full"``: a quick or tiny run has other sizes and fewer rounds, so its ratios
    check that everything runs, not how fast."""
    times = dict(times)
    computed = set()
    if case.sgemm is not None:  # the GEMM bound: all products' FLOPs at the measured sgemm rate
        factor = case.flops / case.sgemm_flops
        times["GEMM bound"] = [t * factor for t in times[case.sgemm]]
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
        "scale": scale,
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
    if case.floor is not None:
        out["floor"] = case.floor
        out["subject_over_floor"] = subject / med[case.floor]
        out["subject_over_floor_by_min"] = low[case.subject] / low[case.floor]
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
                "judged": scale == "full",
            }
        )
        if case.floor is not None and fast == case.subject:
            # What the bar lets the subject take, against what reading its weights alone takes.
            budget = med[bar.other] / bar.at_least
            out["bars"][-1].update(budget_s=budget, floor_share_of_budget=med[case.floor] / budget)
    return out


def _verdict(bar: dict) -> str:
    if not bar.get("judged", True):
        return "not judged at this scale (other sizes, fewer rounds)"
    return "met" if bar["met"] else f"NOT MET (gap: {bar['at_least'] / bar['speedup']:.2f}x)"


def format_result(res: dict) -> str:
    sizes = " ".join(f"{k}={v}" for k, v in res["sizes"].items())
    scale = res.get("scale", "full")
    ran = "sizes of this run" if scale == "full" else f"{scale} run at"  # the title names the full sizes
    lines = [f"{res['name']}: {res['title']}  [{ran} {sizes}]"]
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
    if "floor" in res:
        lines.append(
            f"  memory floor (timed): subject / floor = {res['subject_over_floor']:.2f} (by min {res['subject_over_floor_by_min']:.2f})"
        )
    for bar in res["bars"]:
        lines.append(
            f"  bar: {bar['fast']} {bar['text']}: measured {bar['speedup']:.2f}x (by min {bar['speedup_by_min']:.2f}x) -> {_verdict(bar)}"
        )
        if "budget_s" in bar:
            lines.append(
                f"    it allows the subject {bar['budget_s'] * 1e3:.2f} ms; reading its weights alone (the memory floor) "
                f"takes {bar['floor_share_of_budget']:.0%} of that"
            )
    if res.get("load_1min"):
        before, after = res["load_1min"]
        lines.append(f"  machine load (1-min average, {os.cpu_count()} CPUs): {before:.1f} before, {after:.1f} after")
    lines.extend(f"  note: {n}" for n in res["notes"])
    return "\n".join(lines)


def format_summary(results: list[dict]) -> str:
    """The closing table: every bar of the run, one line each, and the count of bars met (or why none
    was judged)."""
    bars = [(r["name"], b) for r in results for b in r["bars"]]
    if not bars:
        return "no bars in these workloads"
    width = max(len(n) for n, _ in bars)
    text = max(len(f"{b['fast']} {b['text']}") for _, b in bars)
    lines = ["summary:", f"  {'workload':<{width}}  {'bar':<{text}}  {'measured':>8}  {'by min':>7}  verdict"]
    for name, b in bars:
        lines.append(
            f"  {name:<{width}}  {b['fast'] + ' ' + b['text']:<{text}}  {b['speedup']:>7.2f}x  {b['speedup_by_min']:>6.2f}x  {_verdict(b)}"
        )
    judged = [b for _, b in bars if b.get("judged", True)]
    if judged:
        lines.append(f"{sum(b['met'] for b in judged)}/{len(judged)} bars met")
    else:
        lines.append(f"{len(bars)} bars, none judged: a quick or tiny run checks that everything runs; run without --quick to judge")
    return "\n".join(lines)


def environment(threads: int) -> dict:
    import numba

    from ..jit import _blas

    env = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "threads": threads,
        "numpy": np.__version__,
        "numba": numba.__version__,
        "numba_threads": numba.get_num_threads(),
        "blas": _blas.describe(),
        "blas_forced_core": _blas.forced_core(),
    }
    try:
        import torch

        env["torch"] = torch.__version__
        env["torch_threads"] = torch.get_num_threads()
    except ImportError:
        env["torch"] = None
    return env




def format_blas(env: dict) -> list[str]:
    """The BLAS lines of the header: each loaded OpenBLAS with its version, core type and threads,
    and one warning line when the environment forces the core type (figures then are not native)."""
    lines = [
        f"BLAS ({b['owner']}'s): {b.get('config', '?').split('  ')[0].split(' DYNAMIC')[0]}, core {b.get('core', '?')}, "
        f"{b['threads']} threads"
        for b in env.get("blas", ())
    ]
    forced = env.get("blas_forced_core")
    if forced:
        lines.append(
            f"warning: OPENBLAS_CORETYPE={forced} forces OpenBLAS's {forced} kernels (torch's oneDNN ignores it); "
            "for native figures run: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE refrnn bench ..."
        )
    return lines
