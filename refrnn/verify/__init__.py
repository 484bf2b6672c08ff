r"""Verify someone else's recurrent cell against the reference, with Hypothesis choosing the examples.

::

    from refrnn.verify import verify
    from refrnn.verify.adapters import torch_module

    report = verify(torch_module("GRU", dtype="float32"))       # or any callable, see below
    print(report)                                               # worst errors, coverage, PASS/FAIL, minimal example
    assert report.passed

What happens. Hypothesis draws problems (:mod:`refrnn.verify.strategies`): sizes from tiny up to H
and D = 130, B = 17, T = 70, with the seams of tiled and vectorised kernels
(``2^k - 1, 2^k, 2^k + 1``) drawn deliberately, and the last three examples of a run with every size
at its maximum at once (each dimension's last tile is reached whatever the draws before did); 1 to 3
layers; the input conventions the candidate declares (bidirectional, variable lengths, batch-first,
unbatched, no initial state); well-conditioned weights and inputs, a quarter of them with saturated
gates. Each problem is rounded to the candidate's dtype, the candidate runs on the rounded values in
its own layout (:mod:`refrnn.verify.adapters`), and the float64 reference runs on the *same rounded
values*. Every output is compared under a dtype-aware tolerance
(:func:`refrnn.verify.report.default_tolerance`). On the first failure Hypothesis shrinks the
problem, :mod:`refrnn.verify.refine` cuts its sizes further by slicing to the smallest that still
fail, and the report shows its shapes, the first diverging step and unit, and the arrays the
candidate was called with. The report also says what was drawn
(:class:`refrnn.verify.report.Coverage`), so a PASS can be read for what it covered.

The candidate. Any callable ``candidate(weights, x, state0[, dy, dstate_T])`` returning ``(y, state_T)``
or ``(y, state_T, grads)``; ``layout`` says what ``weights``, the states and ``grads`` look like (the
table in :mod:`refrnn.verify.adapters`). With ``grads=True`` the candidate gets upstream gradients
``dy`` and ``dstate_T`` and must return the gradients of ``sum(dy * y) + sum(dstate_T * state_T)``.
A candidate that declares ``lengths`` or ``batch_first`` among its ``conventions`` also gets the
keyword arguments ``lengths=`` (an int array, or None) and ``batch_first=`` on every call.

Equations compared: those of the reference cells (:mod:`refrnn.cells.gru` with ``reset`` "after" or
"before", :mod:`refrnn.cells.lstm` with its peephole and projection options, :mod:`refrnn.cells.sru`,
:mod:`refrnn.cells.ccgru`), stacked as in :mod:`refrnn.layers.stack`, bidirectional as in
:mod:`refrnn.layers.bidirectional` and with lengths as in :mod:`refrnn.layers.lengths`.

Failures are shrunk by kind: a candidate whose outputs are wrong is reported with a minimal example
where the outputs differ (even if a smaller one exists where only a gradient does); crashes and
gradient-only failures are shrunk separately and listed after it.

Shapes: x (T, B, D); y (T, B, H); states per layout.
"""

from __future__ import annotations

import math
import sys
import time
import traceback
from collections.abc import Callable

import numpy as np

from . import strategies
from .adapters import Layout, get_layout, torch_module
from .report import Coverage, Divergence, Failure, OutputError, Report, Tolerance, default_tolerance
from .strategies import CONVENTIONS, Case

if sys.version_info >= (3, 11):
    _ExceptionGroup = BaseExceptionGroup  # noqa: F821 - a builtin from 3.11 on
else:  # Hypothesis raises the backport's groups on 3.10 (it depends on it there)
    from exceptiongroup import BaseExceptionGroup as _ExceptionGroup

__all__ = ["CONVENTIONS", "Coverage", "Report", "Tolerance", "compare", "default_tolerance", "torch_module", "verify"]


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
CORNERS = 3
"""Examples of every run (of 30 or more) drawn with every size at its maximum at once. Hypothesis's
first example of any run is the simplest one (here: all-zero arrays), so three give two with values."""


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


def compare(
    candidate: Callable,
    case: Case,
    *,
    layout=None,
    dtype=None,
    tol: Tolerance | float | None = None,
    grads=True,
    conventions=None,
) -> Outcome:
    """Run ``candidate`` and the reference on one ``case`` (drawn, or built by
    :func:`refrnn.verify.strategies.case_from`) and compare every output.

    The case is rounded to ``dtype``; the candidate gets the rounded arrays in ``dtype``, the reference
    the same values in float64. ``layout``, ``dtype`` and ``conventions`` (the conventions the candidate
    takes keyword arguments for: ``lengths=``, ``batch_first=``) default to the candidate's attributes
    of those names, else "torch", float64 and none.
    """
    if not callable(candidate):
        raise TypeError(f"candidate: expected a callable, got {type(candidate).__name__}")
    if not isinstance(case, Case):
        raise TypeError(f"case: expected a refrnn.verify.strategies.Case (drawn by cases() or built by case_from()), got {type(case).__name__}")
    layout = get_layout(layout or getattr(candidate, "layout", "torch"))
    dtype = _dtype(dtype or getattr(candidate, "dtype", np.float64))
    tol = _tolerance(tol, dtype)
    declared = tuple(getattr(candidate, "conventions", ()) if conventions is None else conventions)
    if not grads:
        case = case._replace(dy=None, dstate_T=None)
    rounded = _cast_case(_cast_case(case, dtype), np.float64)
    given = _cast_case(case, dtype)
    arguments = _arguments_dict(layout, given)
    keywords = layout.keywords(given, declared)
    arguments.update(keywords)
    ref = layout.reference_outputs(rounded, *strategies.reference(rounded))
    try:
        result = candidate(*layout.arguments(given), **keywords)
        got = layout.candidate_outputs(given, result, grads)
    except Exception as err:  # a crash is a finding like any other, and shrinks like one
        return Outcome({}, f"candidate raised {type(err).__name__}: {err}{_where(err)}{_hint(err, given, keywords)}", None, (), arguments)

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
            problems.append(f"{name} has shape {c.shape}, expected {r.shape}{_shape_hint(case, name, c.shape, r.shape)}")
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


def _hint(err: BaseException, case: Case, keywords: dict) -> str:
    """What a user most likely has to change when a candidate cannot even be called."""
    text = str(err)
    if isinstance(err, TypeError) and "positional argument" in text and case.dy is not None:
        return " -- verify passes dy and dstate_T for gradients: verify(..., grads=False) for a forward-only candidate"
    if isinstance(err, TypeError) and "unexpected keyword argument" in text and keywords:
        return f" -- the candidate declares the conventions {sorted(keywords)} and so gets them as keyword arguments"
    return ""


def _shape_hint(case: Case, name: str, got: tuple, expected: tuple) -> str:
    layers = len(case.config.layers)
    if layers > 1 and got[:1] != expected[:1] and not name.startswith(("y", "dy", "x", "dx")):
        return f" -- {layers} layers were drawn; verify(..., layers=1) (or candidate.max_layers = 1) for a one-layer candidate"
    return ""


def _where(err: BaseException) -> str:
    """Where an exception was raised: the innermost frame, so a candidate's own crash points at its line."""
    frames = traceback.extract_tb(err.__traceback__)
    if not frames:
        return ""
    f = frames[-1]
    return f" (raised at {f.filename}:{f.lineno}, in {f.name})"


def _dtype(value) -> np.dtype:
    try:
        dtype = np.dtype(value)
    except TypeError as err:
        raise TypeError(f"dtype: expected float32 or float64, got {value!r} ({err})") from None
    if dtype not in (np.float32, np.float64):
        raise TypeError(f"dtype: expected float32 or float64, got {dtype}")
    return dtype


def _tolerance(tol, dtype) -> Tolerance:
    if tol is None:
        return default_tolerance(dtype)
    if isinstance(tol, Tolerance):
        if not (math.isfinite(tol.base) and math.isfinite(tol.per_step) and tol.base > 0 and tol.per_step >= 0):
            raise ValueError(f"tol: a Tolerance needs a finite base > 0 and a finite per_step >= 0, got {tol!r}")
        return tol
    if isinstance(tol, (int, float)) and not isinstance(tol, bool) and math.isfinite(tol) and tol > 0:
        return Tolerance(float(tol))
    raise ValueError(f"tol: expected a finite positive number, a Tolerance or None, got {tol!r}")


def _count(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an integer >= {minimum}, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value}")
    return int(value)


def _check_options(cell: str, options: dict, where: str) -> None:
    if not isinstance(options, dict):
        raise TypeError(f"{where}: expected a dict of option name -> allowed values, got {type(options).__name__}")
    valid = strategies.CELLS[cell].choices
    for key, values in options.items():
        if key not in valid:
            raise ValueError(
                f"{where}: {key!r} is not an option of cell {cell!r}; its options are "
                + ", ".join(f"{k} (values {', '.join(map(repr, v[:4]))}{', ...' if len(v) > 4 else ''})" for k, v in valid.items())
            )
        if not isinstance(values, (tuple, list)) or not values:
            raise TypeError(f"{where}[{key!r}]: expected a non-empty tuple of allowed values, got {values!r}")


def verify(
    candidate: Callable,
    cell: str | None = None,
    layout: str | Layout | None = None,
    *,
    grads: bool | None = None,
    max_examples: int = 100,
    tol: Tolerance | float | None = None,
    dtype=None,
    seed: int = 0,
    layers: tuple[int, int] | int | None = None,
    D: int | None = None,
    H: int | None = None,
    max_D: int = strategies.VERIFY_SIZES["max_D"],
    max_H: int = strategies.VERIFY_SIZES["max_H"],
    min_B: int = 1,
    max_B: int = strategies.VERIFY_SIZES["max_B"],
    max_T: int = strategies.VERIFY_SIZES["max_T"],
    options: dict | None = None,
    conventions=None,
    adversarial: bool | None = None,
    name: str | None = None,
) -> Report:
    """Check ``candidate`` against the reference on Hypothesis-drawn problems; return a :class:`Report`.

    ``cell`` ("gru", "lstm", "sru", "ccgru"), ``layout`` ("torch", "torch-cell", "sru-cell", "refrnn"),
    ``dtype``, ``layers``, ``grads`` and ``conventions`` default to the candidate's attributes of those
    names (the built-in adapters set them), else "gru", "torch", float64, 1 to 3 layers, True, none.

    Sizes: H and D up to 130, B up to 17, T up to 70, each drawn from a tiny, a uniform and a boundary
    band (``2^k - 1, 2^k, 2^k + 1``, ...: :mod:`refrnn.verify.strategies` explains the schedule); of
    ``max_examples`` >= 30, the last :data:`CORNERS` have every size at its maximum at once;
    ``max_*``/``min_B`` change the ranges, ``D``/``H`` pin sizes for a candidate built for one shape.

    ``conventions``: which of ``"bidirectional"``, ``"lengths"``, ``"batch_first"``, ``"unbatched"``,
    ``"no_initial_state"`` the candidate handles, so that they are drawn (the layout's table in
    :mod:`refrnn.verify.adapters` says how each is passed; ``lengths`` and ``batch_first`` arrive as
    keyword arguments on every call). Conventions not declared, or that the layout cannot express, are
    not drawn, and the report's coverage says so with the reason.

    ``options`` narrows a cell's options (``{"reset": ("before",)}``; unknown keys are refused with the
    cell's list). ``tol`` is a :class:`Tolerance`, a flat normwise tolerance, or None for
    :func:`default_tolerance`. ``adversarial`` False: well-conditioned only; True: every example
    saturates gates; None: a quarter. The run is deterministic for a given ``seed``.
    """
    from hypothesis import HealthCheck, Phase, Verbosity, given, settings
    from hypothesis import seed as hseed

    if not callable(candidate):
        raise TypeError(f"candidate: expected a callable (a function or an object with __call__), got {type(candidate).__name__}")
    cell = cell or getattr(candidate, "cell", "gru")
    lay = get_layout(layout or getattr(candidate, "layout", "torch"))
    dtype = _dtype(dtype or getattr(candidate, "dtype", np.float64))
    if adversarial not in (None, True, False):
        raise TypeError(f"adversarial: expected None, True or False, got {adversarial!r}")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name: expected a string, got {type(name).__name__}")
    grads = getattr(candidate, "grads", True) if grads is None else grads
    if not isinstance(grads, (bool, np.bool_)):
        raise TypeError(f"grads: expected True or False, got {grads!r}")
    if cell not in strategies.CELLS:
        raise ValueError(f"cell: unknown cell {cell!r}; expected one of {', '.join(map(repr, strategies.CELLS))}")
    tolerance = _tolerance(tol, dtype)
    max_examples = _count("max_examples", max_examples, 1)
    _count("seed", seed, 0)
    sizes = {n: _count(n, v, 1) for n, v in (("max_D", max_D), ("max_H", max_H), ("max_B", max_B), ("max_T", max_T))}
    min_B = _count("min_B", min_B, 0)
    if min_B > max_B:
        raise ValueError(f"min_B: expected at most max_B={max_B}, got {min_B}")
    for n, v in (("D", D), ("H", H)):
        if v is not None:
            _count(n, v, 1)
    if layers is None:
        top = getattr(candidate, "max_layers", None) or (1 if lay.name.endswith("-cell") else 3)
        layers = (1, top)
    elif isinstance(layers, (int, np.integer)) and not isinstance(layers, bool):
        layers = (layers, layers)
    if not (isinstance(layers, tuple) and len(layers) == 2):
        raise TypeError(f"layers: expected an integer or a (min, max) pair, got {layers!r}")
    lo, hi = (_count(f"layers[{i}]", v, 1) for i, v in enumerate(layers))
    if lo > hi:
        raise ValueError(f"layers: expected min <= max, got {layers!r}")
    opts = lay.options(cell)
    for where, extra in (("candidate.options", getattr(candidate, "options", None)), ("options", options)):
        if extra:
            _check_options(cell, extra, where)
            opts.update(extra)
    declared = getattr(candidate, "conventions", ()) if conventions is None else conventions
    if isinstance(declared, str) or not all(isinstance(c, str) for c in declared):
        raise TypeError(f"conventions: expected a sequence of names from {CONVENTIONS}, got {declared!r}")
    unknown = [c for c in declared if c not in CONVENTIONS]
    if unknown:
        raise ValueError(f"conventions: unknown convention {unknown[0]!r}; expected some of {', '.join(map(repr, CONVENTIONS))}")
    drawn = tuple(c for c in CONVENTIONS if c in declared and c in lay.CONVENTIONS)
    not_drawn = {}
    for c in CONVENTIONS:
        if c not in lay.CONVENTIONS:
            not_drawn[c] = lay.not_expressible(c)
        elif c not in declared:
            not_drawn[c] = "the candidate does not declare it (conventions=...)"
    common = dict(max_D=sizes["max_D"], max_H=sizes["max_H"], max_B=sizes["max_B"], max_T=sizes["max_T"],
                  min_layers=lo, max_layers=hi, options=opts, conventions=drawn)
    config = strategies.configs((cell,), D=D, H=H, min_B=min_B, **common)
    # Every size at its maximum at once: the last tile of each dimension, whatever the draws above did.
    corner = strategies.configs((cell,), D=D or sizes["max_D"], H=H or sizes["max_H"], min_B=sizes["max_B"],
                                min_T=sizes["max_T"], **common)
    corners = CORNERS if max_examples >= 10 * CORNERS else 0
    calls = {"n": 0, "first_failure": None}
    worst: dict[str, OutputError] = {}
    kind = strategies.CELLS[cell]
    tally = Coverage.tally(varied={k for k, v in kind.choices.items() if len(opts.get(k, v)) > 1})

    def check(case):
        reason = lay.unsupported(case.config)
        if reason is not None:  # a pinned option the layout cannot hold: a usage error, not a finding
            raise ValueError(f"layout {lay.name!r} cannot express {case.config}: {reason}")
        calls["n"] += 1
        tally.add(case)
        outcome = compare(candidate, case, layout=lay, dtype=dtype, tol=tolerance, grads=grads, conventions=declared)
        for n, e in outcome.errors.items():
            if n not in worst or e.ratio > worst[n].ratio:
                worst[n] = e
        if not outcome.passed:
            if calls["first_failure"] is None:
                calls["first_failure"] = calls["n"]
            raise _kind(outcome)(_Attach(outcome, case))

    def run(configs, examples) -> list:
        """The mismatches Hypothesis found and shrank in ``examples`` cases drawn from ``configs``."""
        test = settings(
            # the library's own settings, whatever profile the caller's test suite has loaded
            settings.get_profile("default"),
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=False,
            report_multiple_bugs=True,
            print_blob=False,
            verbosity=Verbosity.quiet,
            phases=(Phase.explicit, Phase.generate, Phase.shrink),
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
        )(hseed(seed)(given(strategies.cases(configs, adversarial=adversarial, grads=grads))(check)))
        try:
            with strategies.seed_only():
                test()
        except _Mismatch as err:
            return [err]
        except _ExceptionGroup as group:  # several kinds of failure, each shrunk on its own
            mismatches, rest = group.split(_Mismatch)
            if rest is not None:
                raise rest
            return list(_flat(mismatches))
        return []

    start = time.perf_counter()
    found = run(config, max_examples - corners)
    if not found and corners:
        found = run(corner, corners)
    found.sort(key=lambda e: _ORDER.index(type(e)))
    failures = [Failure(o.reason, e.outcome.case.config, o.failing, o.divergence, o.arguments, _locator(lay, e.outcome.case))
                for e in found for o in [e.outcome.outcome]]
    cut_calls = 0
    if found:  # cut the leading failure's sizes down by slicing where Hypothesis stopped short
        failures[0], cut_calls = _refined(found[0], lambda c: compare(candidate, c, layout=lay, dtype=dtype, tol=tolerance, grads=grads, conventions=declared), failures[0],
                                          lay)
    calls["n"] += cut_calls
    failures = tuple(failures)
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
        coverage=tally.result(not_drawn),
    )


def _kind(outcome: Outcome) -> type:
    """Which of the three failure kinds a failing outcome is."""
    if not outcome.errors and outcome.failing == ():
        return _CandidateError
    if any(not name.startswith("d") for name in outcome.failing):
        return _OutputMismatch
    return _GradientMismatch


def _refined(err: "_Mismatch", run, failure: Failure, layout) -> tuple[Failure, int]:
    """``failure`` cut down by :func:`refrnn.verify.refine.refine`, keeping its kind of failure;
    ``run(case)`` compares the candidate on a case. Returns the failure and the candidate calls spent."""
    from .refine import refine

    kind = type(err)
    same = failure.reason.split(":")[0] if kind is _CandidateError else None  # the same exception type

    def fails(case):
        try:
            o = run(case)
        except Exception:  # the reference refuses the cut problem: it is no smaller failing one
            return False
        return not o.passed and _kind(o) is kind and (same is None or o.reason.split(":")[0] == same)

    case, spent = refine(err.outcome.case, fails)
    if case is err.outcome.case:
        return failure, spent
    o = run(case)
    return Failure(o.reason, case.config, o.failing, o.divergence, o.arguments, _locator(layout, case)), spent + 1


def _locator(layout, case):
    """``(name, index) -> where`` for a failure's argument listing: the layout's own description of
    an entry (the one gradient failures use), for this case's sizes."""
    return lambda name, index: layout.describe(case, name, index)


def _flat(group):
    for e in group.exceptions:
        if isinstance(e, _ExceptionGroup):
            yield from _flat(e)
        else:
            yield e


class _Attach:
    """An outcome together with the case it came from (what the final, shrunk, failure reports)."""

    def __init__(self, outcome: Outcome, case: Case):
        self.outcome = outcome
        self.case = case
        self.reason = outcome.reason
