"""Check a hand-derived backward pass against central finite differences.

The scalar loss is ``L = sum(G_y * y) + sum(G_s * s_T)`` over the outputs ``y`` and every array of the
final state ``s_T``, with ``G`` drawn at random: a random upstream gradient exercises every output
and every state component, where ``sum(y)`` would let sign and transposition errors cancel.

For each array ``a`` (every parameter, ``x`` and every initial-state array) the reported error is
the normwise relative error ``max|g_hand - g_fd| / max(max|g_fd|, max|g_hand|)``: element-wise
relative errors blow up on entries whose true gradient is near zero and would flag noise, not bugs.
An array also passes when its absolute error is within ``atol``: a gradient that is exactly zero
(a parameter the loss does not reach, a step after the sequence has ended) is compared with
finite-difference noise of about ``|L| * 1e-16 / eps``, and that ratio is 1.0, not an error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from .layers import stack
from .cells import module_for
from .cells._common import Params


def _leaves(tree) -> list[np.ndarray]:
    if isinstance(tree, (tuple, list)):
        return [leaf for item in tree for leaf in _leaves(item)]
    return [tree]


def _rebuild(tree, leaves: list[np.ndarray]):
    """``tree`` with its arrays replaced, in order, by ``leaves`` (consumed from the front)."""
    if isinstance(tree, (tuple, list)):
        return tuple(_rebuild(item, leaves) for item in tree)
    return leaves.pop(0)


def _named_params(params) -> list[tuple[str, np.ndarray]]:
    if isinstance(params, Params):
        return list(params.arrays().items())
    return [(f"layers[{k}].{name}", a) for k, p in enumerate(params) for name, a in p.arrays().items()]


def _with_params(params, flat: list[np.ndarray]):
    flat = list(flat)
    if isinstance(params, Params):
        return params.replace(**{name: flat.pop(0) for name in params.array_names()})
    return tuple(p.replace(**{name: flat.pop(0) for name in p.array_names()}) for p in params)


def _zero_state(params, batch: int):
    if isinstance(params, Params):
        return module_for(params).zero_state(params, batch)
    return tuple(module_for(p).zero_state(p, batch) for p in params)


def _check_setting(name: str, value, positive: bool = False, finite: bool = False) -> None:
    """A real number >= 0 (> 0 and finite for the step ``eps``; an infinite tolerance is allowed, if useless)."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) and not np.isnan(value)
    if ok:
        ok = (value > 0 if positive else value >= 0) and (np.isfinite(value) or not finite)
    if not ok:
        want = "a finite positive number (the finite-difference step)" if positive else "a non-negative number"
        raise ValueError(f"{name}: expected {want}, got {value!r}")


@dataclasses.dataclass(frozen=True)
class GradcheckReport:
    """Worst errors per array; an array passes when its relative error is within ``tol`` or its
    absolute error within ``atol``; ``passed`` when every array does."""

    relative: dict[str, float]
    absolute: dict[str, float]
    tol: float
    atol: float = 0.0

    def array_passed(self, name: str) -> bool:
        return self.relative[name] <= self.tol or self.absolute[name] <= self.atol

    @property
    def worst(self) -> tuple[str, float]:
        name = max(self.relative, key=self.relative.get)
        return name, self.relative[name]

    @property
    def passed(self) -> bool:
        return all(self.array_passed(name) for name in self.relative)

    def __str__(self) -> str:
        width = max(len(n) for n in self.relative)
        lines = [f"{'array':<{width}}  {'rel. error':>10}  {'abs. error':>10}"]
        for name, rel in self.relative.items():
            flag = "" if self.array_passed(name) else "  FAIL"
            lines.append(f"{name:<{width}}  {rel:10.2e}  {self.absolute[name]:10.2e}{flag}")
        return "\n".join(lines)


def gradcheck(
    params,
    x,
    state0=None,
    *,
    eps: float = 1e-6,
    tol: float = 1e-6,
    atol: float = 1e-8,
    seed: int = 0,
    forward: Callable | None = None,
    backward: Callable | None = None,
) -> GradcheckReport:
    """Compare ``backward`` with central differences of ``forward`` for every parameter, ``x`` and ``state0``.

    ``params`` is one cell's parameter container, or a sequence of them (a stack). ``forward`` and
    ``backward`` default to that cell's (or :mod:`refrnn.layers.stack`'s); pass your own to check them.
    Everything must be float64: finite differences in float32 measure rounding, not gradients.
    ``atol`` (default 1e-8, a hundred times the noise of ``eps = 1e-6`` on an O(1) loss) lets an
    exactly-zero gradient pass against that noise; ``atol=0`` judges on relative error alone.
    """
    _check_setting("eps", eps, positive=True, finite=True)
    _check_setting("tol", tol)
    _check_setting("atol", atol)
    single = isinstance(params, Params)
    if forward is None or backward is None:
        mod = module_for(params) if single else stack
        forward = forward or mod.forward
        backward = backward or mod.backward
    named = _named_params(params)
    if any(a.dtype != np.float64 for _, a in named):
        raise TypeError("params: gradcheck needs float64 parameters (use params.astype(np.float64))")
    x = np.asarray(x)
    if x.dtype != np.float64:
        raise TypeError(f"x: gradcheck needs float64 inputs, got {x.dtype}")
    if state0 is None:
        state0 = _zero_state(params, x.shape[1])

    rng = np.random.default_rng(seed)
    y, state_T, cache = forward(params, x, state0)
    G_y = rng.standard_normal(y.shape)
    G_s = _rebuild(state_T, [rng.standard_normal(a.shape) for a in _leaves(state_T)])

    def loss(p, xx, s0) -> float:
        yy, sT, _ = forward(p, xx, s0)
        return float(np.sum(G_y * yy) + sum(np.sum(g * s) for g, s in zip(_leaves(G_s), _leaves(sT))))

    grads, dx, dstate0 = backward(params, cache, G_y, G_s)

    # (name, value, hand-derived gradient, loss as a function of a replacement value)
    checks = []
    for k, ((name, value), g) in enumerate(zip(named, [a for _, a in _named_params(grads)])):
        def f(v, k=k):
            flat = [a for _, a in named]
            flat[k] = v
            return loss(_with_params(params, flat), x, state0)
        checks.append((name, value, g, f))
    checks.append(("x", x, dx, lambda v: loss(params, v, state0)))
    s_leaves = _leaves(state0)
    for k, (value, g) in enumerate(zip(s_leaves, _leaves(dstate0))):
        def f(v, k=k):
            leaves = list(s_leaves)
            leaves[k] = v
            return loss(params, x, _rebuild(state0, leaves))
        checks.append((f"state0[{k}]" if len(s_leaves) > 1 else "state0", value, g, f))

    relative, absolute = {}, {}
    for name, value, hand, f in checks:
        fd = np.zeros(value.shape)
        work = np.array(value, dtype=np.float64, copy=True)
        for idx in np.ndindex(value.shape):
            orig = work[idx]
            work[idx] = orig + eps
            plus = f(work.copy())
            work[idx] = orig - eps
            minus = f(work.copy())
            work[idx] = orig
            fd[idx] = (plus - minus) / (2 * eps)
        diff = float(np.max(np.abs(hand - fd), initial=0.0))
        scale = max(float(np.max(np.abs(fd), initial=0.0)), float(np.max(np.abs(hand), initial=0.0)))
        absolute[name] = diff
        relative[name] = diff / scale if scale > 0 else diff
    return GradcheckReport(relative, absolute, tol, atol)
