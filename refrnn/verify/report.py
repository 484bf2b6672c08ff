"""What :func:`refrnn.verify.verify` returns: tolerances, per-output errors, the shrunk failing example.

Error measure. For each output ``o`` (``y``, the final states, and with gradients ``dx``, the initial
states' gradients and one entry per weight) the error of one example is the largest absolute
difference ``max|o_candidate - o_reference|``; it is allowed up to ``tolerance(dtype, T) * max(1,
max|o_reference|)``. The scale makes gradients, which grow with T and B, comparable with outputs,
which tanh keeps within 1; the floor of 1 keeps an all-but-zero reference from turning rounding
noise into a failure. ``ratio`` is error / allowed: below 1 passes, and the report shows the worst.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

FLOAT32_UNIT_ROUNDOFF = float(np.finfo(np.float32).eps) / 2  # 2**-24 = 5.96e-8


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """Allowed normwise error ``base + per_step * T`` (times ``max(1, max|reference|)``) for a T-step run.

    Why linear in T: each step adds rounding of order the unit roundoff ``u`` to the state, and a
    well-conditioned cell (gates in (0, 1), tanh contractive, weights bounded by 1/sqrt(fan_in)) passes
    earlier errors on without amplifying them, so the error after T steps is at most ~T times one
    step's; gradients sum T such terms. See :func:`default_tolerance` for the constants.
    """

    base: float
    per_step: float = 0.0

    def at(self, T: int) -> float:
        return self.base + self.per_step * max(int(T), 1)

    def __str__(self) -> str:
        if self.per_step == 0:
            return f"{self.base:.0e}"
        return f"{self.base:.0e} + {self.per_step:.0e}*T"


def default_tolerance(dtype) -> Tolerance:
    """The documented dtype-aware default.

    * float64: ``1e-10`` flat, the project's spec for a float64 implementation against the
      reference (rounding differences between correct float64 implementations are ~1e-15 per step,
      so even T = 10^4 steps stay below it).
    * float32: ``(32 + 8 T) u`` with ``u = 2**-24``: 32 u for one step covers a dot product over
      D + H terms plus the gates' own rounding; 8 u per step covers the propagation through T steps
      and the T-term sums of the weight gradients. Measured (this machine, torch 2.13 CPU, oneDNN on
      and off; 200-300 Hypothesis examples per module with T <= 100, D, H <= 16): PyTorch's float32
      GRU, LSTM, GRUCell and LSTMCell against the float64 reference on the same float32-rounded
      values err by at most 18 u on outputs and 20 u on gradients, never more than 1.1 (1 + T) u, so
      the bound has a margin of 7x or more. Every bug in :mod:`refrnn.verify.mutants` errs by 0.46 or
      more at its worst example, and by 1.8e-4 (3,000 u) or more even in its shrunk minimal example
      (chosen for small values, not for large errors).
    """
    dtype = np.dtype(dtype)
    if dtype == np.float64:
        return Tolerance(1e-10)
    if dtype == np.float32:
        return Tolerance(32 * FLOAT32_UNIT_ROUNDOFF, 8 * FLOAT32_UNIT_ROUNDOFF)
    raise TypeError(f"dtype: expected float32 or float64, got {dtype}")


@dataclasses.dataclass(frozen=True)
class OutputError:
    """One output's worst error: absolute, relative to ``max|reference|``, and the allowed absolute error."""

    name: str
    abs: float
    rel: float
    allowed: float

    @property
    def ratio(self) -> float:
        return self.abs / self.allowed if self.allowed > 0 else float("inf")

    @property
    def passed(self) -> bool:
        return bool(self.abs <= self.allowed)


@dataclasses.dataclass(frozen=True)
class Divergence:
    """The first entry (in step, batch, unit order) where one output leaves its tolerance."""

    output: str
    index: tuple
    where: str  # human description: step, batch row, layer, gate, unit
    candidate: float
    reference: float
    allowed: float

    def __str__(self) -> str:
        err = abs(self.candidate - self.reference) if np.isfinite(self.candidate) else float("nan")
        return (
            f"{self.where}: candidate {self.candidate:.6g}, reference {self.reference:.6g} "
            f"(|error| {err:.2e} > allowed {self.allowed:.2e})"
        )


def _show_array(a, where=None) -> str:
    """``a`` in one line; ``where(index)`` says where an entry sits in the model (gate, unit, ...)
    and is added to each entry of a short list, so a weight pinned in the shrunk example reads as
    ``[0]=1.5 (layer 0, gate r, unit 0)`` rather than a bare row number."""
    if not isinstance(a, np.ndarray):
        return repr(a)
    if a.size == 0:
        return f"empty {a.shape}"
    nz = np.argwhere(a != 0)
    if len(nz) == 0:
        return f"zeros {a.shape}"
    if len(nz) <= 6:
        def entry(ix):
            place = where(tuple(int(i) for i in ix)) if where is not None else ""
            return f"[{', '.join(map(str, ix))}]={a[tuple(ix)]:.6g}" + (f" ({place})" if place else "")

        return f"{a.shape} zero except " + ", ".join(entry(ix) for ix in nz)
    if a.size <= 24:
        return f"{a.shape} " + np.array2string(a.ravel(), precision=4, separator=", ", max_line_width=10_000)
    return f"{a.shape} {len(nz)} non-zero entries, range [{a.min():.4g}, {a.max():.4g}]"


def _flatten(prefix: str, value, out: dict) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}[{k!r}]" if prefix else str(k), v, out)
    elif isinstance(value, (tuple, list)):
        for i, v in enumerate(value):
            _flatten(f"{prefix}[{i}]", v, out)
    elif hasattr(value, "arrays"):
        for k, v in value.arrays().items():
            _flatten(f"{prefix}.{k}", v, out)
    elif value is not None and np.asarray(value).dtype.kind == "f":
        out[prefix] = np.asarray(value)
    elif value is not None:
        out[prefix] = value  # an option (a name, a flag): shown as it is


@dataclasses.dataclass(frozen=True)
class Failure:
    """The shrunk minimal failing example and why it fails."""

    reason: str  # one line: the first diverging entry, or the exception the candidate raised
    config: object  # the CellConfig (shapes, layers)
    failing_outputs: tuple[str, ...]
    divergence: Divergence | None
    arguments: dict  # what the candidate was called with: {"weights": ..., "x": ..., ...}, to rerun it by hand
    # (name, index) -> where that entry of an argument sits in the model ("layer 0, gate r, unit 0"),
    # or "" where the layout has nothing to say (the layout's own describe, bound to the case)
    locate: object = None

    def describe_arguments(self) -> str:
        flat: dict = {}
        _flatten("", self.arguments, flat)
        width = max((len(k) for k in flat), default=0)
        return "\n".join(f"    {k:<{width}}  {_show_array(v, self._where(k))}" for k, v in flat.items())

    def _where(self, key: str):
        if self.locate is None:
            return None
        # the argument's own name: the last key or field of its flattened path (weights['bias_hh_l0'] -> bias_hh_l0)
        m = re.search(r"(?:\['([^']+)'\]|\.(\w+)|^(\w+))$", key)
        name = next((g for g in m.groups() if g), key) if m else key

        def where(index):
            try:
                text = self.locate(name, index)
            except Exception:  # a name the layout does not know: no annotation rather than a broken report
                return ""
            inner = re.search(r"\((.*)\)$", text)
            return inner.group(1) if inner else ""

        return where


# A size past these was beyond what a tile, a batch tile or a time chunk of that width covers: the
# coverage counts the examples that went past them, so a PASS says how often seams were crossed.
SEAMS = {"H": 32, "D": 16, "B": 8, "T": 32}


@dataclasses.dataclass(frozen=True)
class Coverage:
    """What a :func:`refrnn.verify.verify` run actually drew (every candidate call, shrinking included).

    ``sizes`` maps H, D, B, T to ``(largest drawn, examples past SEAMS[name])``, H the largest hidden
    size of any layer; ``conventions`` counts the examples that used each convention of
    :data:`refrnn.verify.strategies.CONVENTIONS`; ``features`` counts cell options and stack depths
    (``projection``, ``peepholes``, ``reset=before``, ``2+ layers``, ...); ``saturated`` the examples
    with gates pinned to saturation; ``not_drawn`` each convention that was not drawn and why.
    """

    examples: int
    sizes: dict
    conventions: dict
    features: dict
    saturated: int
    not_drawn: dict

    @staticmethod
    def tally(varied=None) -> "_Tally":
        """A running count; ``varied`` names the cell choices that were drawn (more than one value),
        the only string-valued options worth counting."""
        return _Tally(varied)

    def lines(self) -> list[str]:
        """The coverage as the report prints it: sizes, conventions and features, what was not drawn."""
        if self.examples == 0:
            return ["coverage: no examples ran"]
        sizes = ", ".join(f"{n} up to {top} (> {SEAMS[n]} in {past})" for n, (top, past) in self.sizes.items())
        drawn = {**self.conventions, **self.features, "saturated gates": self.saturated}
        out = [f"coverage of {self.examples} examples: {sizes}", "  drawn: " + ", ".join(f"{k} {v}" for k, v in drawn.items())]
        if self.not_drawn:
            out.append("  not drawn: " + "; ".join(f"{k} ({why})" for k, why in self.not_drawn.items()))
        if self.saturated:
            # a candidate's own sigmoid may warn about overflow on these: they are drawn on purpose
            out.append(f"  {self.saturated} examples pin gates to saturation (biases of +-40 and +-1000); verify(..., adversarial=False) draws none")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


class _Tally:
    """The running counts behind a :class:`Coverage`."""

    def __init__(self, varied=None):
        self.varied = varied
        self.n = 0
        self.top = dict.fromkeys(SEAMS, 0)
        self.past = dict.fromkeys(SEAMS, 0)
        self.conventions: dict[str, int] = {}
        self.features: dict[str, int] = {}
        self.saturated = 0

    def add(self, case) -> None:
        from .strategies import CONVENTIONS

        cfg = case.config
        self.n += 1
        for name, value in (("H", max(s.H for s in cfg.layers)), ("D", cfg.D), ("B", cfg.B), ("T", cfg.T)):
            self.top[name] = max(self.top[name], value)
            self.past[name] += value > SEAMS[name]
        used = set(cfg.conventions)
        for c in CONVENTIONS:
            self.conventions[c] = self.conventions.get(c, 0) + (c in used)
        for feature in _features(cfg, self.varied):
            self.features[feature] = self.features.get(feature, 0) + 1
        self.saturated += bool(case.adversarial)

    def result(self, not_drawn: dict) -> Coverage:
        sizes = {n: (self.top[n], self.past[n]) for n in SEAMS}
        conventions = {c: k for c, k in self.conventions.items() if c not in not_drawn}
        return Coverage(self.n, sizes, conventions, dict(sorted(self.features.items())), self.saturated, dict(not_drawn))


def _features(cfg, varied=None) -> set[str]:
    """Cell options and depth of one config, as coverage names (string options only when ``varied``
    names them, or always when ``varied`` is None)."""
    out = set()
    if len(cfg.layers) > 1:
        out.add("2+ layers")
    for spec in cfg.layers:
        for key, value in spec.options:
            if key == "proj_size":
                if value:
                    out.add("projection")
            elif isinstance(value, (bool, np.bool_)):
                if value:
                    out.add(key)
            elif isinstance(value, str) and (varied is None or key in varied):
                out.add(f"{key}={value}")
    return out


@dataclasses.dataclass(frozen=True)
class Report:
    """The outcome of :func:`refrnn.verify.verify`."""

    candidate: str
    cell: str
    layout: str
    dtype: str
    grads: bool
    tolerance: Tolerance
    examples: int  # candidate calls, shrinking included
    examples_before_failure: int | None  # calls until the first failure (None when none failed)
    worst: dict  # output name -> OutputError, the largest ratio seen over every example
    seed: int
    failure: Failure | None = None  # the leading failure: outputs first, then crashes, then gradients
    others: tuple = ()  # further kinds of failure, each shrunk on its own
    seconds: float = 0.0
    coverage: Coverage | None = None  # what was drawn

    @property
    def passed(self) -> bool:
        return self.failure is None

    @property
    def closest(self) -> OutputError | None:
        """The output whose worst error came closest to (or furthest past) its tolerance."""
        if not self.worst:
            return None
        return max(self.worst.values(), key=lambda e: e.ratio)

    def worst_of(self, forward: bool) -> OutputError | None:
        """The closest-to-tolerance output among forward results (``y``, states) or gradients (``d*``)."""
        errs = [e for n, e in self.worst.items() if n.startswith("d") != forward]
        return max(errs, key=lambda e: e.ratio) if errs else None

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        head = (
            f"verify {self.candidate} ({self.cell}, layout {self.layout!r}, {self.dtype}, "
            f"{'outputs and gradients' if self.grads else 'outputs only'}): "
            f"{'PASS' if self.passed else 'FAIL'} after {self.examples} examples{'' if self.passed else ' (shrinking included)'}, "
            f"seed {self.seed}, tolerance {self.tolerance} (x max(1, max|reference|))"
        )
        lines = [head]
        if self.coverage is not None:
            lines.extend("  " + line for line in self.coverage.lines())
        if self.worst:
            width = max(len(n) for n in self.worst)
            lines.append(f"  {'output':<{width}}  {'worst abs':>10}  {'worst rel':>10}  {'allowed':>10}  {'of tol':>8}")
            for name, e in self.worst.items():
                lines.append(f"  {name:<{width}}  {e.abs:10.2e}  {e.rel:10.2e}  {e.allowed:10.2e}  {e.ratio:8.2g}")
        if self.failure is not None:
            f = self.failure
            lines.append(f"  first failure at example {self.examples_before_failure}; shrunk minimal example:")
            lines.append(f"    shapes: {f.config}")
            lines.append(f"    reason: {f.reason}")
            if f.failing_outputs:
                lines.append(f"    failing outputs: {', '.join(f.failing_outputs)}")
            lines.append(f"    reproduce: verify(..., seed={self.seed}); the candidate was called with")
            lines.append(f.describe_arguments())
            for other in self.others:
                lines.append(f"  also, shrunk separately ({other.config}): {other.reason}")
        return "\n".join(lines)
