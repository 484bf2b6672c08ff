"""``refrnn verify torch`` (and ``refrnn verify sru``): verify installed RNN modules against the reference.

For each of ``nn.GRU``, ``nn.GRUCell``, ``nn.LSTM``, ``nn.LSTMCell`` in float64 and float32,
:func:`refrnn.verify.verify` draws problems with Hypothesis -- sizes from tiny up to H, D = 130,
B = 17, T = 70 with the tile and vector boundaries in between, 1-3 layers for the sequence modules,
bidirectional layers, packed variable lengths, batch-first and unbatched input, with and without an
initial state, a quarter with saturated gates -- compares outputs, final states and every gradient
with the float64 reference, and prints one row per module and dtype (examples run, the worst output
and gradient errors against their tolerance, PASS/FAIL) and what was drawn. A second table checks the
reference's own hand-derived backward against central finite differences. Exit status 1 when
anything fails, 2 when PyTorch or Hypothesis is missing. ``refrnn verify sru`` does the same for the
``sru`` package's ``SRUCell`` (float64 and float32; its first import compiles a C++ extension).
``refrnn verify onnxruntime`` and ``refrnn verify onnx-reference`` print the conformance matrix
(:mod:`refrnn.verify.matrix`) of ONNX ``GRU``/``LSTM``/``RNN`` nodes on that runtime, ``refrnn verify
keras`` that of Keras 3's ``GRU``/``LSTM``/``SimpleRNN`` (torch backend), ``refrnn verify flax`` that
of Flax's ``GRUCell``/``LSTMCell``/``OptimizedLSTMCell``/``SimpleCell`` in ``nn.RNN`` (JAX on CPU);
``refrnn verify all`` the matrix of every installed target, the sru package's ``SRUCell`` among them
(a missing one is listed as not installed; asked for by name, it is exit status 2 and nothing runs).
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from .strategies import VERIFY_SIZES

# Per module and dtype. At the default sizes a row takes 2-7 s on a 2-core machine (a torch module,
# the reference with gradients, and Hypothesis' own work), so the eight rows stay under a minute.
EXAMPLES = 60


def _table(header, rows) -> None:
    widths = [max(len(str(r[i])) for r in (header, *rows)) for i in range(len(header))]
    for r in (header, tuple("-" * w for w in widths), *rows):
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())


def _err(e) -> str:
    if e is None:
        return "-"
    return f"{e.abs:.1e} / {e.allowed:.0e} ({e.name})"


HEADER = (
    "module", "dtype", "examples", "tolerance (x max(1, max|ref|))", "worst output err / allowed",
    "worst gradient err / allowed", "of tol", "result",
)


def _row(candidate, report) -> tuple:
    closest = report.closest
    return (
        candidate.name.replace("torch.", ""),
        candidate.dtype.name,
        str(report.examples),
        str(report.tolerance),
        _err(report.worst_of(forward=True)),
        _err(report.worst_of(forward=False)),
        f"{closest.ratio:.2g}" if closest is not None else "-",
        "PASS" if report.passed else "FAIL",
    )


def _coverage(rows) -> None:
    """What each row drew, so that a PASS can be read for what it covered."""
    print("\nwhat was drawn (sizes: largest, and examples past a 32-unit / 16-feature / 8-row / 32-step seam):")
    for label, report in rows:
        if report.coverage is None:
            continue
        c = report.coverage
        sizes = ", ".join(f"{n} {top} ({past})" for n, (top, past) in c.sizes.items())
        drawn = ", ".join(f"{k} {v}" for k, v in {**c.conventions, **c.features, "saturated": c.saturated}.items())
        print(f"  {label}: {sizes}; {drawn}")
        if c.not_drawn:
            print(f"  {' ' * len(label)}  not drawn: " + "; ".join(f"{k} ({why})" for k, why in c.not_drawn.items()))


def verify_torch(examples: int, seed: int, max_T: int, dtypes) -> bool:
    import torch

    from .adapters import builtin_candidates

    # The drawn problems are small (H, D <= 130, B <= 17): extra intra-op threads only add
    # synchronisation, and on a busy 2-core machine oneDNN's float32 LSTM took ~0.3 s a call with 2
    # threads, 0.3 ms with one (measured when the problems were at most 4 wide).
    torch.set_num_threads(1)

    print(
        f"refrnn vs torch {torch.__version__}: {examples} Hypothesis examples per row (seed {seed}), T <= {max_T}; "
        f"error / allowed (worst output); float32 is compared with float64 on the same float32-rounded values"
    )
    # B = 0 is meaningful for PyTorch (it returns empty outputs), so empty batches are drawn too.
    return _rows(builtin_candidates(dtypes), examples=examples, seed=seed, max_T=max_T, min_B=0)


def _rows(candidates, *, examples: int, seed: int, max_T: int, min_B: int) -> bool:
    """Verify each candidate, print the table, what was drawn and every failure; True when all pass."""
    from . import verify

    rows, failures, reports = [], [], []
    for candidate in candidates:
        report = verify(candidate, max_examples=examples, seed=seed, max_T=max_T, min_B=min_B)
        rows.append(_row(candidate, report))
        reports.append((f"{candidate.name.replace('torch.', '')} {candidate.dtype.name}", report))
        if not report.passed:
            failures.append(report)
    _table(HEADER, rows)
    _coverage(reports)
    for report in failures:
        print()
        print(report)
    return not failures


def verify_sru(examples: int, seed: int, max_T: int, dtypes) -> bool:
    import warnings

    from .adapters import SRUCellModule

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # without CUDA the package warns that it uses a dummy extension
        import sru
    print(f"refrnn vs sru {getattr(sru, '__version__', '?')}: {examples} Hypothesis examples per row (seed {seed}), T <= {max_T}")
    # B >= 1: sru 2.6.0 raises on an empty batch (a reshape with -1 over 0 elements), which
    # verify(..., min_B=0) reports as its minimal failure.
    return _rows([SRUCellModule(dtype=dt) for dt in dtypes], examples=examples, seed=seed, max_T=max_T, min_B=1)


def gradcheck_reference() -> bool:
    from ..cells import gru, lstm
    from ..finite_differences import gradcheck

    tol = 1e-6
    print(f"\nreference backward vs central finite differences (float64); tolerance {tol:g} relative")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 2, 3))
    models = {
        "GRU reset=after": gru.init(3, 4, reset="after", rng=1),
        "GRU reset=before": gru.init(3, 4, reset="before", rng=2),
        "LSTM": lstm.init(3, 4, rng=3),
        "stack GRU/LSTM/GRU": (gru.init(3, 4, rng=4), lstm.init(4, 4, rng=5), gru.init(4, 3, reset="before", rng=6)),
    }
    rows, ok = [], True
    for name, params in models.items():
        report = gradcheck(params, x, tol=tol, seed=7)
        ok &= report.passed
        worst, err = report.worst
        rows.append((name, f"{err:.1e} ({worst})", "PASS" if report.passed else "FAIL"))
    _table(("cell", "worst relative error", ""), rows)
    return ok


MATRIX_TARGETS = ("onnxruntime", "onnx-reference", "keras", "flax")


def _matrix_main(args) -> int:
    """``refrnn verify onnxruntime|onnx-reference|keras|flax|all``: the conformance matrix of :mod:`refrnn.verify.matrix`."""
    import json

    from . import matrix

    targets = tuple(matrix.TARGETS) if args.target == "all" else (args.target,)
    if args.target != "all":  # asked for by name: a missing framework is a usage error, and nothing runs
        absent = matrix.missing(args.target)
        if absent:
            hint = {"onnxruntime": "pip install onnxruntime==1.31.1", "onnx": "pip install onnx", "hypothesis": "pip install hypothesis",
                    "keras": "pip install keras==3.15.1", "torch": "pip install torch==2.13.0",
                    "jax": "pip install 'refrnn[flax]'", "flax": "pip install 'refrnn[flax]'"}
            print(
                f"refrnn verify {args.target}: {', '.join(absent)} not installed ({'; '.join(dict.fromkeys(hint.get(m, 'pip install ' + m) for m in absent))})",
                file=sys.stderr,
            )
            return 2
    result = matrix.build(targets, examples=min(args.examples, EXAMPLES), seed=args.seed)
    if args.png:
        print(f"wrote {matrix.to_png(matrix.to_json(result), args.png)}", file=sys.stderr)
    if args.json:
        print(json.dumps(matrix.to_json(result), indent=1))
    else:
        print(f"refrnn conformance matrix: {', '.join(targets)}; each cell one verify run (seed {args.seed})")
        print(matrix.render(result))
    return 1 if matrix.failed(result) else 0


def main(argv=None) -> int:
    """``refrnn verify torch|sru|onnxruntime|onnx-reference|keras|flax|all [--examples N] [--seed S] [--max-steps T]
    [--dtype float64|float32|both] [--json]``."""
    parser = argparse.ArgumentParser(prog="refrnn verify", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "target", choices=["torch", "sru", *MATRIX_TARGETS, "all"],
        help="the implementation to verify (sru: the sru package's SRUCell; onnxruntime / onnx-reference: ONNX GRU, "
        "LSTM and RNN nodes; keras: Keras 3 GRU, LSTM, SimpleRNN on torch; flax: flax.linen GRUCell, LSTMCell, OptimizedLSTMCell, "
        "SimpleCell in nn.RNN; all: every installed target, as one conformance matrix)",
    )
    parser.add_argument("--json", action="store_true", help="onnxruntime, onnx-reference, keras, flax, all: print the matrix as JSON")
    parser.add_argument("--png", metavar="FILE", help="onnxruntime, onnx-reference, keras, flax, all: also draw the matrix into this PNG")
    parser.add_argument("--examples", type=int, default=EXAMPLES, help=f"Hypothesis examples per module and dtype (default {EXAMPLES})")
    parser.add_argument("--seed", type=int, default=0, help="Hypothesis seed (default 0; runs are deterministic)")
    steps = VERIFY_SIZES["max_T"]
    parser.add_argument("--max-steps", type=int, default=steps, help=f"longest sequence drawn (default {steps})")
    parser.add_argument(
        "--dtype", choices=["float64", "float32", "both"], default="both",
        help="the modules' dtype: float64 (tolerance 1e-10), float32 (rounding-aware, grows with T) or both (default)",
    )
    args = parser.parse_args(argv)
    if args.target in MATRIX_TARGETS or args.target == "all":
        return _matrix_main(args)
    try:
        import hypothesis  # noqa: F401
        import torch  # noqa: F401

        if args.target == "sru":
            import importlib.util

            if importlib.util.find_spec("sru") is None:
                raise ImportError("No module named 'sru'", name="sru")
    except ImportError as err:
        hint = "pip install sru==2.6.0" if err.name == "sru" else "pip install 'refrnn[torch]'"
        print(f"refrnn verify {args.target}: {err.name} is not installed ({hint})", file=sys.stderr)
        return 2
    start = time.perf_counter()
    dtypes = ("float64", "float32") if args.dtype == "both" else (args.dtype,)
    if args.target == "torch":
        ok = verify_torch(args.examples, args.seed, args.max_steps, dtypes)
        ok &= gradcheck_reference()
    else:
        ok = verify_sru(args.examples, args.seed, args.max_steps, dtypes)
    print(f"\n{'all checks passed' if ok else 'SOME CHECKS FAILED'} in {time.perf_counter() - start:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
