r"""Verify someone else's recurrent cell against the reference, with Hypothesis choosing the examples.

::

    from refrnn.verify import verify
    from refrnn.verify.adapters import torch_module

    report = verify(torch_module("GRU", dtype="float32"))       # or any callable, see below
    print(report)                                               # worst errors, PASS/FAIL, minimal example
    assert report.passed

What happens. Hypothesis draws problems (:mod:`refrnn.verify.strategies`: sizes, steps, layers, batch;
well-conditioned weights and inputs, a quarter of them with saturated gates), each is rounded to the
candidate's dtype, the candidate runs on the rounded values in its own layout
(:mod:`refrnn.verify.adapters`), and the float64 reference runs on the *same rounded values*. Every
output is compared under a dtype-aware tolerance (:func:`refrnn.verify.report.default_tolerance`); on
the first failure Hypothesis shrinks the problem to a minimal one, and the report shows its shapes, the
first diverging step and unit, and the arrays the candidate was called with.

The candidate. Any callable ``candidate(weights, x, state0[, dy, dstate_T])`` returning ``(y, state_T)``
or ``(y, state_T, grads)``; ``layout`` says what ``weights``, the states and ``grads`` look like (the
table in :mod:`refrnn.verify.adapters`). With ``grads=True`` the candidate gets upstream gradients
``dy`` and ``dstate_T`` and must return the gradients of ``sum(dy * y) + sum(dstate_T * state_T)``.

Equations compared: those of the reference cells (:mod:`refrnn.cells.gru` with ``reset`` "after" or
"before", :mod:`refrnn.cells.lstm` with its peephole and projection options, :mod:`refrnn.cells.sru`,
:mod:`refrnn.cells.ccgru`), stacked as in :mod:`refrnn.stack`.

Failures are shrunk by kind: a candidate whose outputs are wrong is reported with a minimal example
where the outputs differ (even if a smaller one exists where only a gradient does); crashes and
gradient-only failures are shrunk separately and listed after it.

Shapes: x (T, B, D); y (T, B, H); states per layout.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from . import strategies
from .adapters import Layout, get_layout, torch_module
from .report import Divergence, Failure, OutputError, Report, Tolerance, default_tolerance
from .strategies import Case

__all__ = ["Report", "Tolerance", "compare", "default_tolerance", "torch_module", "verify"]


class _Mismatch(AssertionError):
    """Raised inside the Hypothesis test so that it shrinks; carries the comparison."""

    def __init__(self, outcome):
        super().__init__(outcome.reason)
        self.outcome = outcome


# Three kinds of failure, as three exception types: Hypothesis shrinks each kind separately, so a bug
# that shows in the outputs is reported with a minimal example where the *outputs* differ, even when
# an all-zero example where only a gradient differs is smaller.
class _OutputMismatch(_Mismatch):
    pass


class _GradientMismatch(_Mismatch):
    pass


class _CandidateError(_Mismatch):
    pass


_ORDER = (_OutputMismatch, _CandidateError, _GradientMismatch)  # which failure a report leads with


class Outcome:
    """One example's comparison: per-output errors and, when it fails, why."""

    def __init__(self, errors: dict, reason: str | None, divergence: Divergence | None, failing: tuple, arguments: dict):
        self.errors = errors
        self.reason = reason
        self.divergence = divergence
        self.failing = failing
        self.arguments = arguments

    @property
    def passed(self) -> bool:
        return self.reason is None


def _cast(value, dtype):
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        return tuple(_cast(v, dtype) for v in value)
    if hasattr(value, "astype") and hasattr(value, "arrays"):
        return value.astype(dtype)
    return np.asarray(value).astype(dtype)


def _cast_case(case: Case, dtype) -> Case:
    return case._replace(
        layers=_cast(case.layers, dtype),
        x=_cast(case.x, dtype),
        state0=_cast(case.state0, dtype),
        dy=_cast(case.dy, dtype),
        dstate_T=_cast(case.dstate_T, dtype),
    )


def _arguments_dict(layout: Layout, case: Case) -> dict:
    names = ("weights", "x", "state0", "dy", "dstate_T")
    return dict(zip(names, layout.arguments(case)))


def compare(candidate: Callable, case: Case, *, layout="torch", dtype=np.float64, tol: Tolerance | float | None = None, grads=True) -> Outcome:
    """Run ``candidate`` and the reference on one drawn ``case`` and compare every output.

    The case is rounded to ``dtype``; the candidate gets the rounded arrays in ``dtype``, the reference
    the same values in float64.
    """
    layout = get_layout(layout)
    dtype = np.dtype(dtype)
    tol = _tolerance(tol, dtype)
    if not grads:
        case = case._replace(dy=None, dstate_T=None)
    rounded = _cast_case(_cast_case(case, dtype), np.float64)
    given = _cast_case(case, dtype)
    arguments = _arguments_dict(layout, given)
    ref = layout.reference_outputs(rounded, *strategies.reference(rounded))
    try:
        result = candidate(*layout.arguments(given))
        got = layout.candidate_outputs(given, result, grads)
    except Exception as err:  # a crash is a finding like any other, and shrinks like one
        return Outcome({}, f"candidate raised {type(err).__name__}: {err}", None, (), arguments)

    allowed_at = tol.at(case.config.T)
    errors, failing, problems, first = {}, [], [], None
    for name, r in ref.items():
        r = np.asarray(r, dtype=np.float64)
        if name not in got:
            problems.append(f"candidate returned no {name!r}")
            failing.append(name)
            continue
        c = np.asarray(got[name])
        if c.shape != r.shape:
            problems.append(f"{name} has shape {c.shape}, expected {r.shape}")
            failing.append(name)
            continue
        c = c.astype(np.float64)
        scale = max(1.0, float(np.max(np.abs(r), initial=0.0)))
        allowed = allowed_at * scale
        diff = np.abs(c - r)
        diff[~np.isfinite(c)] = np.inf
        err = float(np.max(diff, initial=0.0))
        errors[name] = OutputError(name, err, err / scale if np.isfinite(err) else err, allowed)
        if not err <= allowed:
            failing.append(name)
            if first is None:
                index = tuple(int(i) for i in np.argwhere(~(diff <= allowed))[0])
                first = Divergence(name, index, layout.describe(given, name, index), float(c[index]), float(r[index]), allowed)
    reason = None
    if problems:
        reason = "; ".join(problems)
    elif first is not None:
        reason = str(first)
    return Outcome(errors, reason, first, tuple(failing), arguments)


def _tolerance(tol, dtype) -> Tolerance:
    if tol is None:
        return default_tolerance(dtype)
    if isinstance(tol, Tolerance):
        return tol
    if isinstance(tol, (int, float)) and tol > 0:
        return Tolerance(float(tol))
    raise ValueError(f"tol: expected a positive number, a Tolerance or None, got {tol!r}")


def verify(
    candidate: Callable,
    cell: str | None = None,
    layout: str | Layout | None = None,
    *,
    grads: bool = True,
    max_examples: int = 100,
    tol: Tolerance | float | None = None,
    dtype=None,
    seed: int = 0,
    layers: tuple[int, int] | int | None = None,
    D: int | None = None,
    H: int | None = None,
    max_D: int = 4,
    max_H: int = 4,
    min_B: int = 1,
    max_B: int = 3,
    max_T: int = 12,
    options: dict | None = None,
    adversarial: bool | None = None,
    name: str | None = None,
) -> Report:
    """Check ``candidate`` against the reference on Hypothesis-drawn problems; return a :class:`Report`.

    ``cell`` ("gru", "lstm", "sru", "ccgru"), ``layout`` ("torch", "torch-cell", "sru-cell", "refrnn"),
    ``dtype`` and ``layers`` default to the candidate's attributes of those names (the built-in
    adapters set them), else "gru", "torch", float64, and 1 to 3 layers. ``options`` narrows a cell's
    options (``{"reset": ("before",)}``); ``D``/``H`` pin sizes for a candidate built for one shape.
    ``tol`` is a :class:`Tolerance`, a flat normwise tolerance, or None for :func:`default_tolerance`.
    ``adversarial`` False: well-conditioned only; True: every example saturates gates; None: a quarter.
    The run is deterministic for a given ``seed``.
    """
    from hypothesis import HealthCheck, Phase, Verbosity, given, settings
    from hypothesis import seed as hseed

    cell = cell or getattr(candidate, "cell", "gru")
    lay = get_layout(layout or getattr(candidate, "layout", "torch"))
    dtype = np.dtype(dtype or getattr(candidate, "dtype", np.float64))
    if cell not in strategies.CELLS:
        raise ValueError(f"cell: unknown cell {cell!r}; expected one of {', '.join(map(repr, strategies.CELLS))}")
    tolerance = _tolerance(tol, dtype)
    if layers is None:
        top = getattr(candidate, "max_layers", None) or (1 if lay.name.endswith("-cell") else 3)
        layers = (1, top)
    elif isinstance(layers, int):
        layers = (layers, layers)
    opts = lay.options(cell)
    opts.update(getattr(candidate, "options", {}) or {})
    opts.update(options or {})
    config = strategies.configs(
        (cell,), D=D, H=H, max_D=max_D, max_H=max_H, min_B=min_B, max_B=max_B, max_T=max_T,
        min_layers=layers[0], max_layers=layers[1], options=opts,
    )
    calls = {"n": 0, "first_failure": None}
    worst: dict[str, OutputError] = {}

    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=False,
        report_multiple_bugs=True,
        print_blob=False,
        verbosity=Verbosity.quiet,
        phases=(Phase.explicit, Phase.generate, Phase.shrink),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )
    @hseed(seed)
    @given(strategies.cases(config, adversarial=adversarial, grads=grads))
    def check(case):
        reason = lay.unsupported(case.config)
        if reason is not None:  # a pinned option the layout cannot hold: a usage error, not a finding
            raise ValueError(f"layout {lay.name!r} cannot express {case.config}: {reason}")
        calls["n"] += 1
        outcome = compare(candidate, case, layout=lay, dtype=dtype, tol=tolerance, grads=grads)
        for n, e in outcome.errors.items():
            if n not in worst or e.ratio > worst[n].ratio:
                worst[n] = e
        if not outcome.passed:
            if calls["first_failure"] is None:
                calls["first_failure"] = calls["n"]
            attached = _Attach(outcome, case)
            if not outcome.errors and outcome.failing == ():
                raise _CandidateError(attached)
            if any(not name.startswith("d") for name in outcome.failing):
                raise _OutputMismatch(attached)
            raise _GradientMismatch(attached)

    start = time.perf_counter()
    found: list[_Mismatch] = []
    try:
        check()
    except _Mismatch as err:
        found = [err]
    except BaseExceptionGroup as group:  # several kinds of failure, each shrunk on its own
        mismatches, rest = group.split(_Mismatch)
        if rest is not None:
            raise rest
        found = list(_flat(mismatches))
    found.sort(key=lambda e: _ORDER.index(type(e)))
    failures = tuple(
        Failure(o.reason, e.outcome.case.config, o.failing, o.divergence, o.arguments) for e in found for o in [e.outcome.outcome]
    )
    return Report(
        candidate=name or getattr(candidate, "name", None) or getattr(candidate, "__name__", repr(candidate)),
        cell=cell + "".join(f", {k}={'/'.join(map(str, v))}" for k, v in sorted(opts.items()) if k in strategies.CELLS[cell].choices),
        layout=lay.name,
        dtype=dtype.name,
        grads=grads,
        tolerance=tolerance,
        examples=calls["n"],
        examples_before_failure=calls["first_failure"],
        worst=worst,
        seed=seed,
        failure=failures[0] if failures else None,
        others=failures[1:],
        seconds=time.perf_counter() - start,
    )


def _flat(group):
    for e in group.exceptions:
        if isinstance(e, BaseExceptionGroup):
            yield from _flat(e)
        else:
            yield e


class _Attach:
    """An outcome together with the case it came from (what the final, shrunk, failure reports)."""

    def __init__(self, outcome: Outcome, case: Case):
        self.outcome = outcome
        self.case = case
        self.reason = outcome.reason
