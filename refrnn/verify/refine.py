r"""After Hypothesis has shrunk a failure: cut the problem itself down to the smallest sizes that still fail.

Hypothesis shrinks the *choices* that drew a problem. A size drawn from the boundary band is an index
into a list of seam values (:mod:`refrnn.verify.strategies`), and the shrinker lowers it to the
smallest failing seam value, but moving it to another band changes what the following choices mean,
so the shrinker can stop at a local minimum: a bug from H = 5 on reported at H = 7, one from H = 64 on
at H = 65. This pass works on the problem instead. It cuts one size at a time by *slicing* -- the
first t steps, the first b samples, the bottom n layers, the first h units of every gate block, the
first d input features -- keeping every value the shrinker left, and keeps a cut when the candidate
still fails the same way. A bisection per size finds the smallest failing value in a handful of
candidate calls (a failing value is always kept, so the result fails even where failing is not
monotone in the size), and the tile multiples below it (4, 6, 8, 12, 16, 24, 32, ...) are tried
for a bug that shows only on a seam.

Slicing keeps a valid problem of the same cell: the GRU or LSTM of the first h units is the first h
rows of each gate block of every weight, the recurrent columns of those units, and those units of the
state; a layer above reads the cut layer's kept outputs (both halves of a bidirectional one). Units are
cut only for GRU and LSTM layers (the cells whose gates are stacked blocks of H rows); steps, samples
and layers for every cell.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..layers.bidirectional import BiLayer
from ..cells import GRUParams, LSTMParams
from .strategies import Case

ORDER = ("layers", "T", "B", "H", "D")  # cheap and most telling first: fewer layers make every later cut cheaper


def _tree(fn, state):
    if state is None:
        return None
    if isinstance(state, (tuple, list)):
        return tuple(_tree(fn, s) for s in state)
    return fn(np.asarray(state))


def _rebuild(case: Case, layers, x, state0, dy, dstate_T, lengths) -> Case:
    specs, width = [], x.shape[2]
    for spec, p in zip(case.config.layers, layers):  # the drawn specs, with the sizes after the cut
        specs.append(spec._replace(H=(p.fwd if isinstance(p, BiLayer) else p).hidden_size, D=width))
        width = p.output_size
    T, B, D = x.shape
    cfg = case.config._replace(D=D, B=B, T=T, layers=tuple(specs))
    return case._replace(config=cfg, layers=tuple(layers), x=x, state0=state0, dy=dy, dstate_T=dstate_T, lengths=lengths)


def cut_steps(case: Case, t: int) -> Case:
    lengths = None if case.lengths is None else np.minimum(case.lengths, t)
    dy = None if case.dy is None else case.dy[:t]
    return _rebuild(case, case.layers, case.x[:t], case.state0, dy, case.dstate_T, lengths)


def cut_samples(case: Case, b: int) -> Case:
    first = lambda a: a[:b]  # noqa: E731
    dy = None if case.dy is None else case.dy[:, :b]
    lengths = None if case.lengths is None else case.lengths[:b]
    return _rebuild(case, case.layers, case.x[:, :b], _tree(first, case.state0), dy, _tree(first, case.dstate_T), lengths)


def cut_layers(case: Case, n: int) -> Case | None:
    if case.dy is not None and case.layers[n - 1].output_size != case.layers[-1].output_size:
        return None
    keep = lambda s: None if s is None else tuple(s[:n])  # noqa: E731
    return _rebuild(case, case.layers[:n], case.x, keep(case.state0), case.dy, keep(case.dstate_T), case.lengths)


def _rows(G: int, H: int, h: int) -> np.ndarray:
    return np.concatenate([np.arange(g * H, g * H + h) for g in range(G)])


def _cut_cell(p, h: int, columns: np.ndarray):
    """The cell of the first ``h`` units of ``p`` reading input ``columns``; None when it cannot be cut."""
    H = p.hidden_size
    if isinstance(p, GRUParams):
        rows = _rows(3, H, h)
        return p.replace(W_x=p.W_x[rows][:, columns], W_h=p.W_h[rows][:, :h], b_x=p.b_x[rows], b_h=p.b_h[rows])
    if isinstance(p, LSTMParams):
        rows = _rows(4, H, h)
        P = p.proj_size
        if P and P >= h:  # a projection narrower than the cell is what makes it a projection
            return None
        changes = {"W_x": p.W_x[rows][:, columns], "b_x": p.b_x[rows], "b_h": p.b_h[rows]}
        changes["W_h"] = p.W_h[rows] if P else p.W_h[rows][:, :h]
        if P:
            changes["W_hr"] = p.W_hr[:, :h]
        for name in ("w_ic", "w_fc", "w_oc"):
            if getattr(p, name) is not None:
                changes[name] = getattr(p, name)[:h]
        return p.replace(**changes)
    return None


def _kept_outputs(p, h: int) -> np.ndarray:
    """The output columns of layer ``p`` that survive cutting it to ``h`` units."""
    cell = p.fwd if isinstance(p, BiLayer) else p
    width = cell.output_size
    keep = np.arange(width if cell.output_size != cell.hidden_size else h)  # a projection keeps its width
    return np.concatenate([keep, width + keep]) if isinstance(p, BiLayer) else keep


def _cut_state(p, s, h: int):
    """A layer's state (h or (h, c); a pair of them for a BiLayer) cut to ``h`` units."""
    if isinstance(p, BiLayer):
        return (_cut_state(p.fwd, s[0], h), _cut_state(p.rev, s[1], h))
    if isinstance(p, LSTMParams):
        hs, cs = s
        return (np.asarray(hs) if p.proj_size else np.asarray(hs)[..., :h], np.asarray(cs)[..., :h])
    return np.asarray(s)[..., :h]


def cut_units(case: Case, h: int) -> Case | None:
    layers, columns = [], np.arange(case.x.shape[2])
    for p in case.layers:
        if isinstance(p, BiLayer):
            fwd, rev = _cut_cell(p.fwd, h, columns), _cut_cell(p.rev, h, columns)
            cut = None if fwd is None or rev is None else BiLayer(fwd, rev)
        else:
            cut = _cut_cell(p, h, columns)
        if cut is None:
            return None
        layers.append(cut)
        columns = _kept_outputs(p, h)
    top = columns
    state0 = None if case.state0 is None else tuple(_cut_state(p, s, h) for p, s in zip(case.layers, case.state0))
    dstate_T = None if case.dstate_T is None else tuple(_cut_state(p, s, h) for p, s in zip(case.layers, case.dstate_T))
    dy = None if case.dy is None else case.dy[..., top]
    return _rebuild(case, layers, case.x, state0, dy, dstate_T, case.lengths)


def cut_features(case: Case, d: int) -> Case | None:
    first = case.layers[0]
    cells = (first.fwd, first.rev) if isinstance(first, BiLayer) else (first,)
    if not all(isinstance(c, (GRUParams, LSTMParams)) for c in cells):
        return None
    cut = [c.replace(W_x=c.W_x[:, :d]) for c in cells]
    bottom = BiLayer(*cut) if isinstance(first, BiLayer) else cut[0]
    return _rebuild(case, (bottom,) + case.layers[1:], case.x[..., :d], case.state0, case.dy, case.dstate_T, case.lengths)


def _size(case: Case, what: str) -> int:
    cfg = case.config
    return {"layers": len(cfg.layers), "T": cfg.T, "B": cfg.B, "H": cfg.layers[0].H, "D": cfg.D}[what]


_CUTS = {"layers": cut_layers, "T": cut_steps, "B": cut_samples, "H": cut_units, "D": cut_features}


def _couples_samples(case: Case) -> bool:
    from ..cells import module_for
    from ..cells.interface import optional

    for p in case.layers:
        for cell in (p.fwd, p.rev) if isinstance(p, BiLayer) else (p,):
            couples = optional(module_for(cell), "couples_samples")
            if couples is not None and couples(cell):
                return True
    return False


def _multiples(below: int) -> list[int]:
    """The tile widths and their odd multiples of a half-tile under ``below``: 4, 6, 8, 12, 16, 24, ..."""
    return sorted({v for k in range(2, 12) for v in (2**k, 3 * 2 ** (k - 1)) if v < below})


def refine(case: Case, fails: Callable[[Case], bool], *, budget: int = 120) -> tuple[Case, int]:
    """The smallest problem reachable from ``case`` by cuts that still ``fails``; and the calls spent.

    ``fails(case)`` runs the candidate and says whether it fails the same way as before. Sizes are cut
    in :data:`ORDER` by bisection over ``1..current`` (0 for an empty batch is never tried: it hides
    everything), repeated until a round changes nothing or ``budget`` candidate calls are spent.
    """
    calls = 0
    for _ in range(3):
        changed = False
        for what in ORDER:
            if what == "H" and len({s.H for s in case.config.layers}) != 1:
                continue  # a stack of mixed widths: no single cut
            if what == "B" and _couples_samples(case):
                continue  # batch statistics: fewer samples is another model, not a smaller problem
            good, lo = _size(case, what), 0  # good fails; every value <= lo is assumed to pass
            while good - lo > 1 and calls < budget:
                mid = (lo + good) // 2
                cut = _CUTS[what](case, mid)
                if cut is None:
                    lo = mid
                    continue
                calls += 1
                if fails(cut):
                    case, good, changed = cut, mid, True
                else:
                    lo = mid
            # A bug only *on* a seam (every multiple of 32, say) is not monotone in the size, so the
            # bisection can stop at a larger multiple: try the tile multiples below, smallest first.
            for size in _multiples(good) if what != "layers" else ():
                cut = _CUTS[what](case, size) if calls < budget else None
                if cut is None:
                    continue
                calls += 1
                if fails(cut):
                    case, good, changed = cut, size, True
                    break
        if not changed or calls >= budget:
            break
    return case, calls
