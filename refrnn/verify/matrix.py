r"""The conformance matrix: every installed framework's recurrent ops against the reference, one convention per column.

Rows are one framework's op (``torch 2.13.0 nn.GRU``, ``onnxruntime 1.31.1 LSTM``, ...); each column is
one :func:`refrnn.verify.verify` run that isolates one convention, so a failure says which convention
the framework gets wrong:

===================  ==========================================================================
GRU reset after      GRU, reset="after" only (PyTorch's, ONNX ``linear_before_reset=1``)
GRU reset before     GRU, reset="before" only (ONNX's default ``linear_before_reset=0``)
LSTM                 the plain LSTM (no peepholes, no projection)
peepholes            LSTM with peepholes only
projection           LSTM with a projection only
RNN tanh / relu      the vanilla RNN with that activation
reverse              a reverse-only op, checked on the reverse half of a bidirectional problem
bidirectional        the ``bidirectional`` convention alone
lengths              per-sample lengths alone
batch-major          ``batch_first`` (ONNX ``layout=1``) alone
init absent          no initial state (zeros) alone
init present         an initial state given, no other convention
float32 / float64    together, in that dtype: every option and convention whose own column passed
gradients            the same, with every gradient compared (float64)
===================  ==========================================================================

The convention columns run in float32 (the dtype every runtime here implements) with the op's
default options; a cell reads PASS, FAIL (its shrunk counterexample is listed under the matrix by
number), ``n/e`` (not expressible: the framework has no such option, with the reason in ``--json``),
``n/c`` (not checked: the adapter does not compare it),
``-`` (not this op's) or ``not installed``. Forward-only frameworks show ``n/e`` for gradients.

Rows: ``torch`` (``nn.GRU``, ``nn.LSTM``, ``nn.RNN``), ``sru`` (the sru package's ``SRUCell``: none
of the GRU/LSTM/RNN columns are its own, and its adapter passes none of the conventions, so only
``init present`` and the dtype and gradient columns run), ``onnxruntime`` and ``onnx-reference``
(ONNX ``GRU``, ``LSTM``, ``RNN`` nodes), ``keras`` (``GRU``, ``LSTM``, ``SimpleRNN`` on torch; gradients
through torch autograd) and ``flax`` (``GRUCell``, ``LSTMCell``, ``OptimizedLSTMCell``, ``SimpleCell``
in ``nn.RNN``; gradients from ``jax.vjp``).

Below the matrix, *attribute probes* check ONNX attributes refrnn cannot express (``clip``,
``input_forget``, non-default ``activations``): each is set to a value that must change the result,
and a runtime whose output still equals the attribute-free reference ignores it (a finding).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

COLUMNS = (
    "GRU reset after", "GRU reset before", "LSTM", "peepholes", "projection", "RNN tanh", "RNN relu",
    "reverse", "bidirectional", "lengths", "batch-major", "init absent", "init present", "float32", "float64", "gradients",
)
EXAMPLES = 30  # per cell: a column isolates one convention, so a few dozen examples reach its seams

_CONVENTION_COLUMNS = {
    "bidirectional": ("bidirectional",),
    "lengths": ("lengths",),
    "batch-major": ("batch_first",),
    "init absent": ("no_initial_state",),
    "init present": (),
}
_OP_COLUMNS = {
    "GRU": {"GRU reset after": {"reset": ("after",)}, "GRU reset before": {"reset": ("before",)}},
    "LSTM": {
        "LSTM": {"peepholes": (False,), "proj": (False,)},
        "peepholes": {"peepholes": (True,), "proj": (False,)},
        "projection": {"peepholes": (False,), "proj": (True,)},
    },
    "RNN": {"RNN tanh": {"activation": ("tanh",)}, "RNN relu": {"activation": ("relu",)}},
    "SRU": {},  # none of the option columns is an SRU's
}
# a row's op name -> the cell family whose option columns it has
_FAMILY = {"SimpleRNN": "RNN", "GRUCell": "GRU", "LSTMCell": "LSTM", "OptimizedLSTMCell": "LSTM", "SimpleCell": "RNN", "SRUCell": "SRU"}


@dataclasses.dataclass
class Cell:
    """One matrix entry: ``status`` PASS / FAIL / n/e / - / not installed; ``detail`` the reason or the
    shrunk counterexample; ``report`` the verify report when one ran."""

    status: str
    detail: str = ""
    report: object = None
    note: int | None = None  # the footnote number of a FAIL

    def text(self) -> str:
        return f"FAIL [{self.note}]" if self.status == "FAIL" and self.note is not None else self.status


@dataclasses.dataclass
class Row:
    """One framework op: how to build its candidate, and what it cannot express (column -> reason)."""

    target: str  # the CLI target: torch, onnxruntime, onnx-reference
    framework: str  # with its version
    op: str  # GRU, LSTM, RNN
    make: Callable  # make(dtype, column) -> candidate
    not_expressible: dict
    grads: bool
    cells: dict = dataclasses.field(default_factory=dict)
    same_as: dict = dataclasses.field(default_factory=dict)  # column -> the column whose run covers it
    not_checked: dict = dataclasses.field(default_factory=dict)  # column -> why this adapter does not check it
    examples: int | None = None  # per cell, for a slow framework

    @property
    def label(self) -> str:
        return f"{self.framework} {self.op}"


def _torch_rows() -> list[Row]:
    import torch

    from .adapters import torch_module

    torch.set_num_threads(1)  # tiny problems: see refrnn.verify.cli
    v = f"torch {torch.__version__.split('+')[0]}"
    why_reverse = "PyTorch has no reverse-only RNN module (only the reverse half of bidirectional=True)"
    rows = []
    for op in ("GRU", "LSTM", "RNN"):
        ne = {"reverse": why_reverse}
        if op == "GRU":
            ne["GRU reset before"] = "PyTorch applies the reset gate after the recurrent product only"
        if op == "LSTM":
            ne["peepholes"] = "PyTorch's LSTM has no peephole connections"

        def make(dtype, column, op=op):
            nl = "relu" if column == "RNN relu" else "tanh"
            return torch_module(op, dtype=dtype, nonlinearity=nl) if op == "RNN" else torch_module(op, dtype=dtype)

        rows.append(Row("torch", v, f"nn.{op}", make, ne, True))
    return rows


def _onnx_rows(runtime: str) -> list[Row]:
    from .adapters_onnx import REFUSED, onnx_op, onnx_version

    target = "onnxruntime" if runtime == "onnxruntime" else "onnx-reference"
    framework = f"onnxruntime {onnx_version(runtime)}" if runtime == "onnxruntime" else f"onnx.reference {onnx_version(runtime)}"
    rows = []
    for op in ("GRU", "LSTM", "RNN"):
        ne = {"gradients": "ONNX defines no gradients for its operators"}
        if op == "LSTM":
            ne["projection"] = REFUSED["projection"]

        def make(dtype, column, op=op):
            return onnx_op(op, runtime=runtime, dtype=dtype, split_directions=(column == "reverse"))

        rows.append(Row(target, framework, op, make, ne, False))
    return rows


def _keras_rows() -> list[Row]:
    from .adapters_keras import import_keras, keras_layer

    keras = import_keras()
    v = f"keras {keras.__version__} (torch)"
    rows = []
    for op in ("GRU", "LSTM", "SimpleRNN"):
        ne = {}
        if op == "LSTM":
            ne = {"peepholes": "Keras's LSTM has no peepholes", "projection": "Keras's LSTM has no projection"}

        def make(dtype, column, op=op):
            return keras_layer(op, dtype=dtype, split_directions=(column == "reverse"))

        rows.append(Row("keras", v, op, make, ne, True, same_as={"batch-major": "init present"}, examples=12))
    return rows


def _sru_rows() -> list[Row]:
    import warnings

    import torch

    from .adapters import SRUCellModule

    torch.set_num_threads(1)  # tiny problems: see refrnn.verify.cli
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # without CUDA the package warns that it uses a dummy extension
        import sru
    adapter = "the sru-cell adapter does not pass it"
    ne = {
        "reverse": "sru.SRUCell has no reverse-only form (bidirectional=True runs both directions)",
        "batch-major": "sru.SRUCell takes time-major input (length, batch, features) only",
    }
    nc = {
        "bidirectional": f"sru.SRUCell(bidirectional=True); {adapter}",
        "lengths": f"sru.SRUCell's mask_pad; {adapter}",
        "init absent": f"sru.SRUCell's c0=None; {adapter}",
    }

    def make(dtype, column):
        return SRUCellModule(dtype=dtype)

    return [Row("sru", f"sru {getattr(sru, '__version__', '?')}", "SRUCell", make, ne, True, not_checked=nc)]


def _flax_rows() -> list[Row]:
    from .adapters_flax import CELLS, flax_rnn, flax_version

    v = flax_version()
    rows = []
    for cell in CELLS:
        ne = {}
        if cell == "GRUCell":
            ne["GRU reset before"] = "Flax's GRUCell applies the reset gate after the recurrent product only"
        if "LSTM" in cell:
            ne = {"peepholes": "Flax's LSTM cells have no peepholes", "projection": "Flax's LSTM cells have no projection"}

        def make(dtype, column, cell=cell):
            return flax_rnn(cell, dtype=dtype, split_directions=(column == "reverse"))

        # XLA compiles every new shape (about a second each on 2 busy cores): few examples per cell
        rows.append(Row("flax", v, cell, make, ne, True, examples=6))
    return rows


TARGETS = {
    "torch": (("torch", "hypothesis"), _torch_rows),
    "sru": (("sru", "torch", "hypothesis"), _sru_rows),
    "onnxruntime": (("onnx", "onnxruntime", "hypothesis"), lambda: _onnx_rows("onnxruntime")),
    "onnx-reference": (("onnx", "hypothesis"), lambda: _onnx_rows("reference")),
    "keras": (("keras", "torch", "hypothesis"), _keras_rows),
    "flax": (("jax", "flax", "hypothesis"), _flax_rows),
}
"""CLI target -> (the modules it needs, a function building its rows)."""


def missing(target: str) -> list[str]:
    """The modules ``target`` needs that are not installed."""
    import importlib.util

    return [m for m in TARGETS[target][0] if importlib.util.find_spec(m) is None]


def _op_of(row: Row) -> str:
    return _FAMILY.get(row.op, row.op.removeprefix("nn."))


def _passing(row: Row, op: str) -> tuple[dict | None, tuple]:
    """The options and conventions whose own columns passed: what the combined columns draw together."""
    conventions = tuple(c for col, cs in _CONVENTION_COLUMNS.items() if row.cells.get(col, Cell("")).status == "PASS" for c in cs)
    options: dict = {}
    for col, opts in _OP_COLUMNS[op].items():
        if row.cells.get(col, Cell("")).status == "PASS":
            for k, v in opts.items():
                options[k] = tuple(dict.fromkeys(options.get(k, ()) + v))
    return (options or None), conventions


def _probe(row: Row, column: str, examples: int, seed: int) -> Cell:
    from . import verify

    op = _op_of(row)
    if column in row.not_expressible:
        return Cell("n/e", row.not_expressible[column])
    if column in row.not_checked:
        return Cell("n/c", row.not_checked[column])
    if column in row.same_as:  # every run of this framework has it (Keras is batch-major only)
        c = row.cells[row.same_as[column]]
        return Cell(c.status, f"every run is {column}: as {row.same_as[column]!r}" + (f"; {c.detail}" if c.detail else ""), c.report)
    examples = row.examples or examples
    own = _OP_COLUMNS[op]
    other = any(column in cols for o, cols in _OP_COLUMNS.items() if o != op)
    if other:
        return Cell("-")
    dtype, grads, options, conventions = "float32", False, None, ()
    if column in own:
        options = own[column]
    elif column in _CONVENTION_COLUMNS:
        conventions = _CONVENTION_COLUMNS[column]
    elif column == "reverse":
        conventions = ("bidirectional",)
    elif column in ("float32", "float64", "gradients"):
        # together: every option and convention that passed on its own (interactions, not repeats)
        dtype, grads = ("float64", True) if column == "gradients" else (column, False)
        options, conventions = _passing(row, op)
    candidate = row.make(dtype, column)
    if options is None and column in _CONVENTION_COLUMNS or column == "reverse":
        # a convention column runs the plain op: its options are columns of their own
        options = {"LSTM": _OP_COLUMNS["LSTM"]["LSTM"], "RNN": _OP_COLUMNS["RNN"]["RNN tanh"]}.get(op)
    fixed = getattr(candidate, "options", None)  # a candidate built for one option (torch's nonlinearity)
    if fixed and options:
        options = {k: fixed.get(k, v) for k, v in options.items()}
    report = verify(candidate, options=options, conventions=conventions, grads=grads if row.grads else False,
                    max_examples=examples, seed=seed)
    if report.passed:
        return Cell("PASS", report=report)
    f = report.failure
    lines = [ln.strip() for ln in f.reason.split(" (raised at ")[0].splitlines() if ln.strip()]
    # a multi-line exception (a TorchScript traceback) says what went wrong on its last line
    reason = lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"
    return Cell("FAIL", f"{f.config} | {reason}", report)


def build(targets, *, examples: int = EXAMPLES, seed: int = 0, progress=None) -> dict:
    """Run every cell of the rows of ``targets``; returns ``{"rows": [...], "failures": [...], "probes": [...],
    "not_installed": {...}, "seconds": s}`` (see :func:`render`)."""
    start = time.perf_counter()
    rows, not_installed, failures = [], {}, []
    for target in targets:
        absent = missing(target)
        if absent:
            not_installed[target] = absent
            continue
        for row in TARGETS[target][1]():
            # a column another one covers is filled in after it
            for column in sorted(COLUMNS, key=lambda c: c in row.same_as):
                cell = _probe(row, column, examples, seed)
                if cell.status == "FAIL":
                    failures.append((row, column, cell))
                    cell.note = len(failures)
                row.cells[column] = cell
            rows.append(row)
            if progress is not None:
                progress(row)
    probes = attribute_probes(targets, examples=examples, seed=seed) if any(t.startswith("onnx") and t not in not_installed for t in targets) else []
    return {"rows": rows, "failures": failures, "probes": probes, "not_installed": not_installed, "seconds": time.perf_counter() - start}


PROBE_ATTRIBUTES = (
    ("GRU", {"clip": 0.01}), ("LSTM", {"clip": 0.01}), ("RNN", {"clip": 0.01}),
    ("GRU", {"activations": ["HardSigmoid", "Tanh"]}), ("LSTM", {"activations": ["HardSigmoid", "Tanh", "Tanh"]}),
    ("LSTM", {"input_forget": 1}),
)
"""ONNX attributes refrnn cannot express, each with a value that changes the operator's result."""


def attribute_probes(targets, *, examples: int = EXAMPLES, seed: int = 0) -> list[dict]:
    """For each ONNX runtime in ``targets``: whether setting each of :data:`PROBE_ATTRIBUTES` changes the
    output. ``ignored`` True means the output still equals the reference *without* the attribute."""
    from . import verify
    from .adapters_onnx import onnx_op, onnx_version

    out = []
    for target, runtime in (("onnxruntime", "onnxruntime"), ("onnx-reference", "reference")):
        if target not in targets or missing(target):
            continue
        for op, attrs in PROBE_ATTRIBUTES:
            cand = onnx_op(op, runtime=runtime, dtype="float32", attributes=attrs)
            opts = {"activation": ("tanh",)} if op == "RNN" else None
            report = verify(cand, conventions=(), options=opts, max_examples=examples, seed=seed)
            out.append({
                "framework": f"{'onnxruntime' if runtime == 'onnxruntime' else 'onnx.reference'} {onnx_version(runtime)}",
                "op": op, "attribute": attrs, "ignored": report.passed,
                "detail": "" if report.passed else report.failure.reason,
            })
    return out


def render(result: dict) -> str:
    """The matrix as text: one line per row, the numbered counterexamples and the attribute probes below."""
    rows = result["rows"]
    header = ("framework / op",) + COLUMNS
    table = [header] + [(r.label,) + tuple(r.cells[c].text() for c in COLUMNS) for r in rows]
    for target, absent in result["not_installed"].items():
        table.append((f"{target}: not installed ({', '.join(absent)})",) + ("not installed",) * len(COLUMNS))
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if result["failures"]:
        lines.append("")
        lines.append("counterexamples (shrunk; seed 0 reproduces them):")
        for row, column, cell in result["failures"]:
            lines.append(f"  [{cell.note}] {row.label}, {column}: {cell.detail}")
    if result["probes"]:
        lines.append("")
        lines.append("ONNX attributes refrnn cannot express: does setting them change the result?")
        for p in result["probes"]:
            attr = ", ".join(f"{k}={v}" for k, v in p["attribute"].items())
            verdict = "IGNORED (output equals the reference without it)" if p["ignored"] else "applied (output differs from the attribute-free reference)"
            lines.append(f"  {p['framework']} {p['op']} {attr}: {verdict}")
    lines.append("")
    lines.append("n/e = not expressible by that framework; n/c = not checked by its adapter; - = not this op's convention; "
                 + f"{result['seconds']:.0f} s")
    return "\n".join(lines)


def to_json(result: dict) -> dict:
    """The matrix as plain data (``refrnn verify all --json``)."""
    return {
        "columns": list(COLUMNS),
        "rows": [
            {"target": r.target, "framework": r.framework, "op": r.op,
             "cells": {c: {"status": r.cells[c].status, "detail": r.cells[c].detail, "note": r.cells[c].note} for c in COLUMNS}}
            for r in result["rows"]
        ],
        "not_installed": result["not_installed"],
        "attribute_probes": result["probes"],
        "seconds": round(result["seconds"], 1),
    }


_COLOURS = {"PASS": "#9bd49b", "FAIL": "#ef8a8a", "n/e": "#d9d9d9", "n/c": "#f3e3a6", "-": "#ffffff", "not installed": "#cfd8f0"}


def to_png(data: dict, path: str) -> str:
    """Draw the matrix (the :func:`to_json` form) as a coloured grid in a PNG at ``path``: one row per
    framework op, one column per convention, the footnote number in each FAIL, and a key of the
    colours. Needs matplotlib (the ``test`` and ``reproduce`` extras bring it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    columns = data["columns"]
    rows = [(f"{r['framework']} {r['op']}", [r["cells"][c] for c in columns]) for r in data["rows"]]
    rows += [(f"{t}: not installed", [{"status": "not installed", "note": None}] * len(columns)) for t in data["not_installed"]]
    if not rows:
        raise ValueError("data: the matrix has no rows to draw")
    fig, ax = plt.subplots(figsize=(1.0 + 0.78 * len(columns), 1.6 + 0.36 * len(rows)))
    for i, (_, cells) in enumerate(rows):
        for j, cell in enumerate(cells):
            status = cell["status"]
            ax.add_patch(plt.Rectangle((j, i), 1, 1, facecolor=_COLOURS.get(status, "#ffffff"), edgecolor="#888888", lw=0.5))
            text = f"FAIL [{cell['note']}]" if status == "FAIL" and cell.get("note") is not None else status
            if text not in ("-", "not installed"):
                ax.text(j + 0.5, i + 0.5, text, ha="center", va="center", fontsize=6)
    ax.set_xlim(0, len(columns))
    ax.set_ylim(len(rows), 0)
    ax.set_xticks([j + 0.5 for j in range(len(columns))])
    ax.set_xticklabels(columns, rotation=45, ha="left", fontsize=7)
    ax.xaxis.tick_top()
    ax.set_yticks([i + 0.5 for i in range(len(rows))])
    ax.set_yticklabels([label for label, _ in rows], fontsize=7)
    ax.tick_params(length=0)
    key = [Patch(facecolor=c, edgecolor="#888888", label=k) for k, c in _COLOURS.items() if k != "-"]
    key.append(Patch(facecolor="#ffffff", edgecolor="#888888", label="- (not this op's convention)"))
    ax.legend(handles=key, loc="upper center", bbox_to_anchor=(0.5, -0.02), ncol=len(key), fontsize=6, frameon=False)
    ax.set_title("refrnn conformance: each cell one verify run against the float64 reference; "
                 "FAIL [n]: counterexample n in `refrnn verify all`", fontsize=8, pad=70)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def failed(result: dict) -> bool:
    return bool(result["failures"]) or any(p["ignored"] for p in result["probes"])


__all__ = ["COLUMNS", "TARGETS", "attribute_probes", "build", "failed", "missing", "render", "to_json", "to_png"]
