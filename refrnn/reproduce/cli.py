r"""``refrnn reproduce``: train the seed paper's grid of character-level models, then tabulate and plot.

The grid: the dense GRU; the block-sparse conditional GRU with block sizes 16/32/64 (``g = H/bs``
blocks) and the unstructured one with low-rank z of ranks 16/32/64, each for
``s in {0, -0.25, -0.5, -0.75}`` (25 models). Then for every model: validation BPC, z-sparsity on
validation data, and the measured inference speed-up of its sparse njit path over the dense
computation of the same cell (block: batch 64; unstructured: one stream), see
:mod:`refrnn.reproduce.speed`.

Presets (every size can be overridden by its option)::

    --smoke     H=16, a reduced grid (block size 8, rank 4, s in {0, -0.5}), a few updates:
                the whole pipeline in seconds (CI)
    (default)   H=256, B=32, 1000 updates of 50 steps each, lr 2e-3: the 25 models on 2 cores
                (two training processes, one BLAS thread each); see the README for measured times
    --paper     H=1024, B=64, lr 1e-3, hidden state reset every 1000 updates (Tables I, III),
                50 000 updates a model: still days for the whole grid on a CPU; pick a subset
                (--kinds, --block-sizes, --ranks, --shifts, --steps); pass --text8 for the paper's data

Training runs through the compiled paths (``--backend jit``, the default): the numba forward and
backward of :mod:`refrnn.jit.ccgru` (:func:`~refrnn.jit.ccgru.forward_train`,
:func:`~refrnn.jit.ccgru.backward`) and of the GRU (:mod:`refrnn.jit.gru`, whose backward
:func:`refrnn.fast.backward` chooses), with the output layer's products in the same BLAS.
``--backend reference`` trains through the NumPy reference cells (the same functions to rounding).

Normalisation statistics. The conditional cells' running batch-norm statistics after training are
an exponential moving average taken while the weights moved; before evaluation they are replaced
by the exact mean and variance of the pre-activations over ``recal_segments`` training segments run
with the trained, frozen weights (:func:`refrnn.reproduce.train.reestimate_statistics`; smoke 3,
default 100, paper 1000; ``--recal-segments 0`` keeps the EMA). Validation BPC, z-sparsity and
speed-ups use the re-estimated statistics; ``results.json`` keeps the EMA statistics' validation
BPC and z-sparsity too (``val_bpc_ema``, ``z_sparsity_ema``), and, as a diagnostic, those of the
validation streams normalised step by step with their own batch statistics, as in training
(``val_bpc_batchstats``, ``z_sparsity_batchstats``; not an inference procedure). Re-estimation is a deterministic
function of the final checkpoint, so a resumed run's results still equal an uninterrupted one's.

Outputs in ``--out DIR``: ``tables.txt`` (also printed), ``results.json``, ``bpc_vs_speedup.png``,
``sparsity_vs_s.png``, ``training_curves.png``, and ``checkpoints/<model>.npz`` (with ``--resume``
a rerun continues every model from its checkpoint and skips finished training; the trained models
are identical to an uninterrupted run's; validation and timing are redone). ``--replot`` redraws
the tables and PNGs from ``results.json`` alone.

Threads: BLAS and Numba get ``--threads`` threads (default 1) in every process; training runs
``--jobs`` models at a time (default 2). Speed-ups are timed one model at a time, after all
training, with the process CPU clock when ``--threads 1`` (see :mod:`refrnn.reproduce.speed`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time

PRESETS = {
    "smoke": dict(hidden=16, batch=4, bptt=20, steps=12, lr=3e-3, reset_every=6, checkpoint_every=5,
                  eval_every=6, eval_symbols=2000, block_sizes=(8,), ranks=(4,), shifts=(0.0, -0.5),
                  corpus_limit=20_000, speed_T=10, speed_warmup=20, speed_repeats=3, jobs=1, recal_segments=3),
    "default": dict(hidden=256, batch=32, bptt=50, steps=1000, lr=2e-3, reset_every=250, checkpoint_every=100,
                    eval_every=200, eval_symbols=20_000, block_sizes=(16, 32, 64), ranks=(16, 32, 64),
                    shifts=(0.0, -0.25, -0.5, -0.75), corpus_limit=None, speed_T=50, speed_warmup=200, speed_repeats=11, jobs=2,
                    recal_segments=100),
    "paper": dict(hidden=1024, batch=64, bptt=50, steps=50_000, lr=1e-3, reset_every=1000, checkpoint_every=500,
                  eval_every=2500, eval_symbols=200_000, block_sizes=(16, 32, 64), ranks=(16, 32, 64),
                  shifts=(0.0, -0.25, -0.5, -0.75), corpus_limit=None, speed_T=50, speed_warmup=200, speed_repeats=11, jobs=2,
                  recal_segments=1000),
}
UNSTRUCTURED_T = 4  # the unstructured (B = 1) timing runs this many times speed_T steps


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="refrnn reproduce", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    size = p.add_mutually_exclusive_group()
    size.add_argument("--smoke", action="store_true", help="tiny model, reduced grid, seconds (CI)")
    size.add_argument("--paper", action="store_true", help="the paper's size (H=1024, B=64, 50k updates)")
    p.add_argument("--out", default="reproduce_out", help="output folder (default: reproduce_out)")
    p.add_argument("--text8", metavar="FILE", help="train on TEXT8 from this local file (default: Python's docs)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out")
    p.add_argument("--hidden", type=int, help="hidden size H")
    p.add_argument("--batch", type=int, help="training minibatch")
    p.add_argument("--bptt", type=int, help="truncated-BPTT length (paper: 50)")
    p.add_argument("--steps", type=int, help="updates per model")
    p.add_argument("--lr", type=float, help="Adam learning rate")
    p.add_argument("--clip", type=float, default=5.0, help="global gradient-norm clip (default 5)")
    p.add_argument("--reset-every", type=int, help="reset the carried hidden state every N updates")
    p.add_argument("--checkpoint-every", type=int, help="checkpoint every N updates")
    p.add_argument("--embed", type=int, default=0, help="embedding width (0: one-hot input, the paper's)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--block-sizes", type=int, nargs="+", help="block sizes (must divide H)")
    p.add_argument("--ranks", type=int, nargs="+", help="low-rank z ranks")
    p.add_argument("--shifts", type=float, nargs="+", help="values of s")
    p.add_argument("--kinds", nargs="+", choices=("gru", "block", "lowrank"), default=("gru", "block", "lowrank"))
    p.add_argument("--recal-segments", type=int,
                   help="batch-norm re-estimation: training segments run after training to recompute the "
                        "conditional cells' running statistics exactly (0: keep the training EMA)")
    p.add_argument("--jobs", type=int, help="models trained at a time (processes)")
    p.add_argument("--threads", type=int, default=1, help="BLAS and Numba threads per process (default 1)")
    p.add_argument("--backend", choices=("jit", "reference"), default="jit",
                   help="train through the compiled paths (jit, default) or the NumPy reference cells")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--replot", action="store_true", help="only redo tables and plots from --out/results.json")
    return p


def _settings(args) -> dict:
    name = "smoke" if args.smoke else "paper" if args.paper else "default"
    preset = dict(PRESETS[name], preset=name)
    for key in ("hidden", "batch", "bptt", "steps", "lr", "reset_every", "checkpoint_every", "jobs",
                "recal_segments"):
        if getattr(args, key) is not None:
            preset[key] = getattr(args, key)
    for key in ("block_sizes", "ranks", "shifts"):
        if getattr(args, key) is not None:
            preset[key] = tuple(getattr(args, key))
    preset.update(clip=args.clip, embed=args.embed, dtype=args.dtype, seed=args.seed, kinds=tuple(args.kinds),
                  threads=args.threads, backend=args.backend)
    return preset


def grid(settings: dict) -> list:
    """The TrainConfig of every model of the grid (dense GRU first)."""
    from .train import TrainConfig

    H = settings["hidden"]
    if settings.get("recal_segments", 0) < 0:
        raise ValueError(f"recal_segments: expected a non-negative number of segments, got {settings['recal_segments']}")
    common = dict(hidden=H, embed=settings["embed"], batch=settings["batch"], bptt=settings["bptt"],
                  steps=settings["steps"], lr=settings["lr"], clip=settings["clip"],
                  reset_every=settings["reset_every"], checkpoint_every=settings["checkpoint_every"],
                  eval_every=settings["eval_every"], eval_symbols=settings["eval_symbols"],
                  dtype=settings["dtype"], seed=settings["seed"])
    out = []
    if "gru" in settings["kinds"]:
        out.append(TrainConfig(name="gru", kind="gru", **common))
    for bs in settings["block_sizes"] if "block" in settings["kinds"] else ():
        if bs < 1 or H % bs:
            raise ValueError(f"block_sizes: block size {bs} does not divide the hidden size H={H}")
        for s in settings["shifts"]:
            out.append(TrainConfig(name=f"block-bs{bs}-s{s:+.2f}", kind="block", g=H // bs, s=float(s), **common))
    for rank in settings["ranks"] if "lowrank" in settings["kinds"] else ():
        if not 1 <= rank <= H:
            raise ValueError(f"ranks: rank {rank} must lie in [1, H={H}]")
        for s in settings["shifts"]:
            out.append(TrainConfig(name=f"lowrank-r{rank}-s{s:+.2f}", kind="lowrank", g=rank, s=float(s), **common))
    return out


def load_corpus(text8: str | None, limit: int | None):
    from . import data

    if text8:
        return data.load_text8(text8)
    return data.default_corpus(limit=limit)


def _checkpoint(out: str, name: str) -> str:
    return os.path.join(out, "checkpoints", f"{name}.npz")


def _train_one(config, text8, limit, out, resume, progress, threads, backend="jit"):
    """Train one model to its final checkpoint (runs in a worker process, or in this one)."""
    from . import speed, threads as th, train

    th.set_threads(threads)
    corpus = load_corpus(text8, limit)
    st = train.train(config, corpus, _checkpoint(out, config.name), resume=resume, progress=progress,
                     evaluate=speed.evaluate, backend=backend)
    return config.name, st.elapsed


def _reestimate_one(config, text8, limit, out, segments, threads, backend="jit"):
    """The re-estimated running statistics of one trained model (runs in a worker process, or here)."""
    from . import threads as th, train

    th.set_threads(threads)
    corpus = load_corpus(text8, limit)
    st = train.load_checkpoint(_checkpoint(out, config.name), config)
    m = train.reestimate_statistics(st.model, corpus.train, batch=config.batch, bptt=config.bptt,
                                    segments=segments, reset_every=config.reset_every, backend=backend)
    return config.name, m.cell.running_mean, m.cell.running_var


def run(settings: dict, out: str, *, text8: str | None = None, resume: bool = False, progress: bool = True,
        stream=None) -> dict:
    """The whole pipeline; returns the JSON payload it writes."""
    from . import report, speed, threads as th, train

    stream = stream or sys.stdout
    t_start = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    th.set_threads(settings["threads"])
    corpus = load_corpus(text8, settings["corpus_limit"])
    configs = grid(settings)
    backend = settings.get("backend", "jit")
    print(f"refrnn reproduce: corpus {corpus.name} ({len(corpus.train)} train / {len(corpus.valid)} validation "
          f"symbols), {len(configs)} models, H={settings['hidden']}, B={settings['batch']}, "
          f"{settings['steps']} updates of {settings['bptt']} steps, out {out}; training through "
          + ("the compiled paths (refrnn.jit forward and backward)" if backend == "jit" else "the NumPy reference cells"),
          file=stream, flush=True)

    # Phase 1: training (in parallel processes; each model is independent and deterministic).
    args = [(c, text8, settings["corpus_limit"], out, resume, progress, settings["threads"], backend) for c in configs]
    t_train = time.perf_counter()
    if settings["jobs"] > 1 and len(configs) > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(settings["jobs"]) as pool:
            elapsed = dict(pool.starmap(_train_one, args, chunksize=1))
    else:
        elapsed = dict(_train_one(*a) for a in args)
    train_wall = time.perf_counter() - t_train

    # Phase 2: batch-norm re-estimation of the conditional models (in parallel, like training).
    segments = settings["recal_segments"]
    t_recal = time.perf_counter()
    cond = [c for c in configs if c.kind != "gru"] if segments else []
    rargs = [(c, text8, settings["corpus_limit"], out, segments, settings["threads"], backend) for c in cond]
    if settings["jobs"] > 1 and len(cond) > 1:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(settings["jobs"]) as pool:
            stats = {n: (m, v) for n, m, v in pool.starmap(_reestimate_one, rargs, chunksize=1)}
    else:
        stats = {n: (m, v) for n, m, v in (_reestimate_one(*a) for a in rargs)}
    recal_wall = time.perf_counter() - t_recal

    # Phase 3: evaluation and timing, one model at a time (no training competes for the cores).
    states = {c.name: train.load_checkpoint(_checkpoint(out, c.name), c) for c in configs}
    gru_model = states["gru"].model if "gru" in states else None
    results, curves = [], {}
    clock = "cpu" if settings["threads"] == 1 else "wall"
    norm_stats = "reestimated" if segments else "ema"
    for c in configs:
        st = states[c.name]
        model = st.model
        if c.name in stats:
            model = model.replace(cell=model.cell.replace(running_mean=stats[c.name][0],
                                                          running_var=stats[c.name][1]))
        bpc, sparsity = speed.evaluate(model, corpus.valid)
        r = dict(name=c.name, kind=c.kind, hidden=c.hidden, g=c.g, s=c.s, val_bpc=bpc,
                 z_sparsity=None if c.kind == "gru" else sparsity, train_seconds=elapsed[c.name],
                 final_train_bpc=float(sum(st.train_bpc[-50:]) / len(st.train_bpc[-50:])))
        if c.kind != "gru":
            if c.name in stats:
                bpc_ema, sparsity_ema = speed.evaluate(st.model, corpus.valid)
            else:
                bpc_ema, sparsity_ema = bpc, sparsity
            # diagnostic: each validation step normalised by its own batch statistics (32 streams)
            bpc_batch, sparsity_batch = speed.evaluate_batch_statistics(st.model, corpus.valid, backend=backend)
            r.update(norm_stats=norm_stats, recal_segments=segments, val_bpc_ema=bpc_ema,
                     z_sparsity_ema=sparsity_ema, val_bpc_batchstats=bpc_batch, z_sparsity_batchstats=sparsity_batch)
            T = settings["speed_T"] * (1 if c.kind == "block" else UNSTRUCTURED_T)
            r["speed"] = speed.speedup(model, corpus.valid, T=T, repeats=settings["speed_repeats"],
                                       gru_model=gru_model, clock=clock, warmup=settings["speed_warmup"])
        results.append(r)
        curves[c.name] = dict(train_bpc=st.train_bpc, val_steps=st.val_steps, val_bpc=st.val_bpc)
        if progress:
            extra = "" if c.kind == "gru" else (
                f", z-sparsity {sparsity:.3f}, speed-up {r['speed']['speedup']:.2f}x ({norm_stats} statistics; "
                f"EMA statistics: BPC {r['val_bpc_ema']:.3f}, z-sparsity {r['z_sparsity_ema']:.3f}; "
                f"batch statistics: BPC {r['val_bpc_batchstats']:.3f}, z-sparsity {r['z_sparsity_batchstats']:.3f})")
            print(f"  {c.name:<22} validation BPC {bpc:.3f}{extra}", file=sys.stderr, flush=True)

    text = report.tables(results, settings["hidden"])
    print("\n" + text, file=stream, flush=True)
    with open(os.path.join(out, "tables.txt"), "w") as fh:
        fh.write(text + "\n")
    pngs = report.plots(results, curves, out, settings["hidden"], report.describe_run(settings, corpus.name))
    wall = time.perf_counter() - t_start
    payload = dict(
        settings={k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.items()},
        configs=[dataclasses.asdict(c) for c in configs],
        corpus=dict(name=corpus.name, train=len(corpus.train), valid=len(corpus.valid), sha256=corpus.sha256),
        machine=dict(python=platform.python_version(), platform=platform.platform(), cpus=os.cpu_count(),
                     load_average=os.getloadavg() if hasattr(os, "getloadavg") else None),
        wall_seconds=wall, train_wall_seconds=train_wall, recal_wall_seconds=recal_wall, norm_stats=norm_stats,
        results=results, curves=curves,
        pngs=[os.path.basename(p) for p in pngs],
    )
    report.write_json(os.path.join(out, "results.json"), payload)
    print(f"\nwall time {wall:.0f} s (training {train_wall:.0f} s, statistics re-estimation {recal_wall:.0f} s); wrote {out}/results.json, tables.txt, "
          + ", ".join(os.path.basename(p) for p in pngs), file=stream, flush=True)
    return payload


def replot(out: str, stream=None) -> list[str]:
    """Tables and PNGs again from ``out/results.json`` (no training, no timing)."""
    from . import report

    with open(os.path.join(out, "results.json")) as fh:
        payload = json.load(fh)
    hidden = payload["settings"]["hidden"]
    text = report.tables(payload["results"], hidden)
    print(text, file=stream or sys.stdout, flush=True)
    with open(os.path.join(out, "tables.txt"), "w") as fh:
        fh.write(text + "\n")
    run = report.describe_run(payload["settings"], payload.get("corpus", {}).get("name"))
    return report.plots(payload["results"], payload["curves"], out, hidden, run)


def check_resume(settings: dict, out: str) -> None:
    """Every checkpoint a ``--resume`` run would continue from, read once before anything runs: a
    truncated or corrupt file, or one written by another configuration, raises ``ValueError`` naming
    the file (instead of a raw traceback from inside a worker process)."""
    import zipfile

    from . import train

    for config in grid(settings):
        path = _checkpoint(out, config.name)
        if not os.path.exists(path):
            continue
        try:
            train.load_checkpoint(path, config)
        except ValueError as exc:
            if str(exc).startswith("resume:"):  # another configuration: the message names the file
                raise
            raise ValueError(f"resume: checkpoint {path!r} is unreadable ({exc}); delete it to train {config.name} afresh") from None
        except (zipfile.BadZipFile, OSError, EOFError, KeyError) as exc:
            raise ValueError(
                f"resume: checkpoint {path!r} is truncated or corrupt ({type(exc).__name__}: {exc}); delete it to "
                f"train {config.name} afresh"
            ) from None


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.replot:
        replot(args.out)
        return 0
    settings = _settings(args)
    try:
        grid(settings)  # bad sizes fail before anything runs
        if args.resume:
            check_resume(settings, args.out)  # so do unreadable or mismatched checkpoints
    except ValueError as exc:
        print(f"refrnn reproduce: {exc}", file=sys.stderr)
        return 2
    run(settings, args.out, text8=args.text8, resume=args.resume, progress=not args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
