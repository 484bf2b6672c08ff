r"""The paper-shaped tables, the PNG plots and the JSON of a ``refrnn reproduce`` run.

Tables. Table II (block-sparse: columns "block size / gating dim", i.e. ``bs / g`` with
``g = H / bs``) and Table IV (unstructured: columns the rank of the low-rank z) of the seed paper,
rows ``s = 0.00, -0.25, -0.50, -0.75``, entries the acceleration factor over the dense computation,
with the paper's own number in parentheses (its H = 1024 models). The same grid is printed for the
validation BPC and the z-sparsity; the dense GRU's BPC heads them. A note under the dense GRU's
line says which normalisation statistics the conditional models were evaluated with: the
re-estimated ones (exact mean and variance over a pass of training data after training,
:func:`refrnn.reproduce.train.reestimate_statistics`) or the training EMA; with re-estimation,
the EMA statistics' BPC and z-sparsity follow as two more grids.

Plots (matplotlib, imported here only): ``bpc_vs_speedup.png`` (each model a point; the paper's
trade-off is up and to the right), ``sparsity_vs_s.png`` (with ``Phi(-s)``, the zero fraction of a
standard-normal pre-activation, see :mod:`refrnn.cells.ccgru`), ``training_curves.png`` (train BPC
smoothed, validation BPC as markers, one panel per family).
"""

from __future__ import annotations

import json
import math
import os

import numpy as np

SHIFTS = (0.0, -0.25, -0.5, -0.75)
# The paper's Tables II and IV (H = 1024): speed-up by s, then block size (Table II) / rank (Table IV).
PAPER_TABLE_II = {  # block size -> speed-ups for s = 0, -0.25, -0.5, -0.75
    16: (0.73, 1.88, 1.72, 1.57),
    32: (1.06, 1.72, 1.62, 1.62),
    64: (1.20, 1.68, 1.68, 1.95),
}
PAPER_TABLE_IV = {  # rank -> speed-ups
    16: (1.55, 1.87, 1.86, 2.55),
    32: (1.38, 1.67, 1.66, 2.18),
    64: (1.43, 1.63, 1.99, 2.29),
}


def _grid(results: list[dict], kind: str):
    """{(column, s): result} for one family; column = block size (block) or rank (lowrank)."""
    out = {}
    for r in results:
        if r["kind"] != kind:
            continue
        col = r["hidden"] // r["g"] if kind == "block" else r["g"]
        out[(col, round(r["s"], 4))] = r
    return out


def _table(title: str, grid: dict, cols: list, shifts: list, fmt, header) -> str:
    width = 22
    lines = [title, f"{'':<12}" + "".join(f"{header(c):>{width}}" for c in cols)]
    for s in shifts:
        cells = []
        for c in cols:
            r = grid.get((c, round(s, 4)))
            cells.append(f"{fmt(r, c, s) if r is not None else '-':>{width}}")
        lines.append(f"s = {s:+.2f}   " + "".join(cells))
    return "\n".join(lines)


def tables(results: list[dict], hidden: int) -> str:
    """Both tables (speed-up, BPC, z-sparsity) as text."""
    out = []
    dense = [r for r in results if r["kind"] == "gru"]
    if dense:
        out.append(f"Dense GRU (H={hidden}): validation BPC {dense[0]['val_bpc']:.3f}\n")
    cond = [r for r in results if r["kind"] != "gru"]
    recal = [r for r in cond if r.get("norm_stats") == "reestimated"]
    if recal:
        out.append(f"Conditional models: inference batch-norm statistics RE-ESTIMATED after training (exact mean "
                   f"and unbiased variance of the pre-activations over {recal[0]['recal_segments']} training "
                   f"segments, weights frozen); BPC, z-sparsity and speed-ups below use them. The training "
                   f"EMA statistics' BPC and z-sparsity follow in grids of their own.\n")
    elif cond:
        out.append("Conditional models: inference uses the running (EMA) batch-norm statistics kept during "
                   "training (no re-estimation).\n")
    for kind, name, paper, header in (
        ("block", "TABLE II: block-sparse model", PAPER_TABLE_II, lambda c: f"{c}/{hidden // c}"),
        ("lowrank", "TABLE IV: unstructured (low-rank z) model", PAPER_TABLE_IV, lambda c: f"rank {c}"),
    ):
        grid = _grid(results, kind)
        if not grid:
            continue
        cols = sorted({c for c, _ in grid})
        shifts = sorted({s for _, s in grid}, reverse=True)
        some = next(iter(grid.values()))
        where = f"B={some['speed']['B']}, T={some['speed']['T']}, path '{some['speed']['path']}'"
        head = "Block size / gating dim" if kind == "block" else "Rank"

        def speed(r, c, s, paper=paper):
            p = paper.get(c)
            k = SHIFTS.index(s) if s in SHIFTS else None
            ref = f" ({p[k]:.2f}x)" if p is not None and k is not None else ""
            return f"{r['speed']['speedup']:.2f}x{ref}"

        out.append(_table(f"{name}: acceleration over the dense computation ({where}); (paper, H=1024)\n{head}",
                          grid, cols, shifts, speed, header))
        out.append(_table(f"{name}: validation BPC", grid, cols, shifts, lambda r, c, s: f"{r['val_bpc']:.3f}", header))
        out.append(_table(f"{name}: z-sparsity on validation data (fraction of z exactly 0)", grid, cols, shifts,
                          lambda r, c, s: f"{r['z_sparsity']:.3f}", header))
        if any(r.get("norm_stats") == "reestimated" for r in grid.values()):
            out.append(_table(f"{name}: validation BPC with the training EMA statistics (not re-estimated)", grid,
                              cols, shifts, lambda r, c, s: f"{r.get('val_bpc_ema', math.nan):.3f}", header))
            out.append(_table(f"{name}: z-sparsity with the training EMA statistics", grid, cols, shifts,
                              lambda r, c, s: f"{r.get('z_sparsity_ema', math.nan):.3f}", header))
        if any("val_bpc_batchstats" in r for r in grid.values()):
            out.append(_table(f"{name}: validation BPC / z-sparsity with per-step BATCH statistics over 32 validation "
                              f"streams (diagnostic, as in training; not inference)", grid, cols, shifts,
                              lambda r, c, s: f"{r['val_bpc_batchstats']:.3f} / {r['z_sparsity_batchstats']:.3f}",
                              header))
        if any("speedup_vs_gru" in r["speed"] for r in grid.values()):
            out.append(_table(f"{name}: acceleration over the trained dense GRU (refrnn.jit.gru, same B, T)",
                              grid, cols, shifts, lambda r, c, s: f"{r['speed'].get('speedup_vs_gru', math.nan):.2f}x",
                              header))
        out.append("")
    return "\n\n".join(out)


def write_json(path: str, payload: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(payload, fh, indent=1, sort_keys=True)
    os.replace(tmp, path)


def _smooth(v: np.ndarray, k: int) -> np.ndarray:
    if len(v) < k or k <= 1:
        return v
    c = np.cumsum(np.insert(v, 0, 0.0))
    return (c[k:] - c[:-k]) / k


def window(updates: int) -> int:
    """The moving-mean window of the training curves: a tenth of the run (single updates jump by
    0.1-0.3 BPC from batch to batch, so shorter windows still look like noise)."""
    return max(1, updates // 10)


def describe_run(settings: dict, corpus: str | None = None) -> str:
    """One line naming the run a figure comes from: its preset (a smoke run says it is one), size and data."""
    preset = settings.get("preset", "")
    head = {"smoke": "SMOKE RUN (a pipeline check, not a result)", "paper": "paper-size run"}.get(preset, "run")
    data = f", corpus {corpus}" if corpus else ""
    return (f"{head}: H={settings['hidden']}, batch {settings['batch']}, {settings['steps']} updates of "
            f"{settings['bptt']} steps{data}")


def plots(results: list[dict], curves: dict, out_dir: str, hidden: int, run: str = "") -> list[str]:
    """Write the three PNGs into ``out_dir``; returns their paths. ``run`` (:func:`describe_run`) is
    printed under every title, so a figure says what it is without the README."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    colors = {16: "tab:blue", 32: "tab:orange", 64: "tab:green"}
    markers = {0.0: "o", -0.25: "s", -0.5: "^", -0.75: "D"}

    def col_of(r):
        return r["hidden"] // r["g"] if r["kind"] == "block" else r["g"]

    def color(c):
        return colors.get(c, plt.cm.tab10(hash(c) % 10))

    # 1. BPC vs speed-up
    fig, ax = plt.subplots(figsize=(7, 5))
    for r in results:
        if r["kind"] == "gru":
            ax.axhline(r["val_bpc"], color="k", ls=":", lw=1, label=f"dense GRU ({r['val_bpc']:.3f})")
            continue
        c = col_of(r)
        filled = r["kind"] == "lowrank"
        ax.scatter(r["speed"]["speedup"], r["val_bpc"], marker=markers.get(round(r["s"], 4), "x"),
                   s=60, edgecolors=color(c), facecolors=color(c) if filled else "none", linewidths=1.5)
    ax.axvline(1.0, color="grey", lw=0.8)
    from matplotlib.lines import Line2D

    # The key names only what was run: one entry per (kind, block size or rank), one per shift s.
    handles = []
    for kind, c in sorted({(r["kind"], col_of(r)) for r in results if r["kind"] != "gru"}):
        filled = kind == "lowrank"
        label = f"unstructured z, rank {c} (filled)" if filled else f"block-sparse z, block size {c} (open)"
        handles.append(Line2D([], [], color=color(c), marker="o", ls="", mfc=color(c) if filled else "none", label=label))
    shifts_run = sorted({round(r["s"], 4) for r in results if r["kind"] != "gru"}, reverse=True)
    handles += [Line2D([], [], color="k", marker=markers.get(s, "x"), ls="", mfc="none", label=f"shift s = {s:+.2f}")
                for s in shifts_run]
    handles += [h for h in ax.get_legend_handles_labels()[0]]
    ax.legend(handles=handles, fontsize=7, ncol=2)
    ax.set_xlabel("measured inference speed-up over the dense computation (x)")
    ax.set_ylabel("validation BPC")
    recal = any(r.get("norm_stats") == "reestimated" for r in results)
    stats_note = "re-estimated BN statistics" if recal else "EMA BN statistics"
    ax.set_title(f"Conditional GRU: validation BPC against inference speed-up, H={hidden} ({stats_note})\n{run}", fontsize=8)
    ax.grid(alpha=0.3)
    paths.append(os.path.join(out_dir, "bpc_vs_speedup.png"))
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    # 2. sparsity vs s
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ss = np.linspace(-0.8, 0.05, 50)
    phi = 0.5 * (1 + np.vectorize(math.erf)(-ss / math.sqrt(2)))
    ax.plot(ss, phi, color="grey", ls="--", label="Phi(-s): standard-normal pre-activation")
    for kind, ls in (("block", "-"), ("lowrank", ":")):
        by_col = {}
        for r in results:
            if r["kind"] == kind:
                by_col.setdefault(col_of(r), []).append((r["s"], r["z_sparsity"]))
        for c, pts in sorted(by_col.items()):
            pts.sort()
            name = f"block bs={c}" if kind == "block" else f"unstructured rank {c}"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], ls=ls, marker="o", color=color(c), label=name)
            ema = sorted((r["s"], r["z_sparsity_ema"]) for r in results if r["kind"] == kind and col_of(r) == c
                         and r.get("norm_stats") == "reestimated")
            if ema:
                ax.plot([p[0] for p in ema], [p[1] for p in ema], ls="", marker="x", ms=5, alpha=0.6,
                        color=color(c))
    if recal:
        ax.plot([], [], ls="", marker="x", color="k", alpha=0.6, label="x: same model, training EMA statistics")
    ax.set_xlabel("shift s (Eq. 7)")
    ax.set_ylabel("z-sparsity on validation data")
    ax.set_title(f"Fraction of update-gate entries exactly 0 ({stats_note})\n{run}", fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    paths.append(os.path.join(out_dir, "sparsity_vs_s.png"))
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    # 3. training curves
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, kind, title in ((axes[0], "block", "block-sparse"), (axes[1], "lowrank", "unstructured (low-rank z)")):
        for r in results:
            if r["kind"] not in (kind, "gru"):
                continue
            cv = curves.get(r["name"])
            if cv is None:
                continue
            tb = np.asarray(cv["train_bpc"])
            k = window(len(tb))
            sm = _smooth(tb, k)
            if r["kind"] == "gru":
                colr, lw, lab = "k", 1.6, "dense GRU"
            else:
                colr = color(col_of(r))
                lw = 0.8 + 0.5 * SHIFTS.index(round(r["s"], 4)) if round(r["s"], 4) in SHIFTS else 1.0
                lab = f"{'bs' if kind == 'block' else 'rank'} {col_of(r)}, s={r['s']:+.2f}"
            alpha = 1.0 if r["kind"] == "gru" else 0.45 + 0.15 * (SHIFTS.index(round(r["s"], 4)) if round(r["s"], 4) in SHIFTS else 0)
            ax.plot(np.arange(k, k + len(sm)), sm, color=colr, lw=lw, alpha=alpha, label=lab)
            if len(cv["val_steps"]):
                ax.plot(cv["val_steps"], cv["val_bpc"], color=colr, ls="", marker=".", alpha=alpha)
        ax.set_title(title)
        ax.set_xlabel("update")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    axes[0].set_ylabel("bits per character")
    n = max((len(c["train_bpc"]) for c in curves.values()), default=0)
    lines = f"mean of the last {window(n)} updates" if window(n) > 1 else "each update, unsmoothed: a short run"
    fig.suptitle(f"Training curves, H={hidden}: training BPC (lines: {lines}) and "
                 f"validation BPC (dots; conditional models with the EMA statistics of that moment)\n{run}", fontsize=9)
    paths.append(os.path.join(out_dir, "training_curves.png"))
    fig.tight_layout()
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths
