r"""Hypothesis strategies for recurrent cells: configurations, well-conditioned values, adversarial values.

Everything here draws *float64* arrays (:func:`bounded`, built on :mod:`hypothesis.extra.numpy`), so a
failing example shrinks towards small shapes and all-zero arrays with a few informative entries left. Casting to a
candidate's dtype is the caller's business (:func:`refrnn.verify.verify` rounds to float32 and runs
the float64 reference on the rounded values).

Well-conditioned values (the default) are bounded so that a tolerance failure means a bug, not
overflow or cancellation::

    every entry is k * bound / 64 for an integer |k| <= 64      (0, or magnitude in [bound/64, bound])
    W_x: bound 1/sqrt(D)    W_h: bound 1/sqrt(H)    biases: bound 1/2    x, h0, c0, dy, dstate: bound 1

so a gate pre-activation obeys ``|a| <= sqrt(D) + sqrt(H) + 1`` and every gate derivative stays far
from the float64 noise floor (finite differences at eps=1e-6 resolve it to ~1e-9 relative).

Adversarial values start from the same draws and then, unit by unit, pin gates to saturation: the
chosen gate's input bias becomes ``+-SATURATE`` (``sigmoid(+1000) == 1.0`` and ``sigmoid(-1000) ==
0.0`` exactly in float64 and float32), so ``z`` exactly 0 and exactly 1 occur, and ``+-MODERATE``
(``sigmoid(+-40)`` is 1 - 4e-18 resp. 4e-18: saturated, not exact). Batches of size 0 are drawn where
asked for (``min_B=0``).

Sizes: where kernel bugs live, and how a run spends its examples
----------------------------------------------------------------
Real RNN kernels are tiled: units in blocks of 4, 8, 16 or 32 (SIMD lanes, thread blocks), batch rows
in tiles, time in chunks, input features up to a compiled width. Their bugs sit at the seams: the
second tile, the scalar tail of a vector loop (``H % 8`` units), the first step of the second chunk,
a width one past what the kernel assumed. A problem of H <= 4 and T <= 12 never reaches a seam, so
every size (H, D, B, T) is drawn from one of three *bands*, chosen per size and per example:

* ``tiny`` (an eighth of the draws): ``1..4`` for H and D, ``1..3`` for B, ``1..8`` for T. Cheap,
  readable, and where shrinking ends when the bug needs no size at all.
* ``wide`` (three eighths): uniform over the whole range (``1..max``). Uniform integers are what
  Hypothesis shrinks best: a bug from H = 41 on is shrunk to exactly H = 41.
* ``boundary`` (half): one of :func:`boundary_sizes` -- ``2^k - 1, 2^k, 2^k + 1`` and ``3 * 2^(k-1)``
  up to the maximum, and the maximum itself. These are the values that leave remainders modulo 4, 8
  and 16 (7, 15, 17, 33, 65, 129 ...) or sit exactly on a tile (16, 32, 64, 128) or half way
  between (12, 24, 48, 96): a bug that shows only at a seam is hit with probability about 1/20 by a
  uniform draw but 1/2 * 1/|boundaries| per seam value here.

The bands are draws like any other, and ``tiny`` is the first, so Hypothesis shrinks a failing size
band first: a bug that needs only a large H keeps a large H and shrinks B, T and D to the tiny band.
The order tiny < wide < boundary means a failure that also appears in the wide band is reported at
the smallest failing size (the wide band's exact edge), not at the nearest boundary above it.

:func:`refrnn.verify.verify` draws H and D up to 130, B up to 17 and T up to 70 by default
(:data:`VERIFY_SIZES`): past the 128-unit tile, past a 16-row batch tile, past two 32-step chunks.
At those sizes the reference costs a few milliseconds per example, so 100 examples of a NumPy-speed
candidate fit in a few seconds and the time goes to shrinking, which only failures pay for.

Conventions
-----------
Beyond sizes, :func:`configs` draws the input conventions a candidate declares (``conventions``):
``bidirectional`` layers (:class:`refrnn.layers.bidirectional.BiLayer`), variable ``lengths`` (one per
sample in 1..T, unsorted, with 1 and T drawn often), ``batch_first`` input, ``unbatched`` input
(x of shape (T, D): one sample, so B = 1; a quarter of the examples, since it hides every batch bug)
and ``no_initial_state`` (the candidate gets ``None`` and the reference starts from zeros; a quarter of
the examples, since a missing state hides every bug in how the state is read). Each is drawn before
the layers and shrinks to "not used" unless the failure needs it. An eighth of the problems also
make the first layer square (H = D), where kernels take special paths.

Shapes: x (T, B, D); per-layer states (B, H_l); dy (T, B, H_top).
"""

from __future__ import annotations

import contextlib
import functools
import threading
from typing import NamedTuple

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ..layers import stack
from ..layers.bidirectional import BiLayer
from ..cells import gru, lstm, module_for

SATURATE = 1000.0  # sigmoid(+-1000) is exactly 1.0 / 0.0 in float32 and float64 (exp overflows to inf)
MODERATE = 40.0  # sigmoid(40) rounds to 1.0 in float64 but sigmoid(-40) = 4.2e-18 is not 0


# ---------------------------------------------------------------------------------------------- cells
class CellKind(NamedTuple):
    """What the strategies need to know about one cell.

    ``choices`` maps each drawable choice to its values (the first is where shrinking goes);
    ``resolve(D, H, chosen)`` turns drawn choices into the cell's options for an input width D and
    hidden size H (dropping what does not apply, e.g. an identity skip when D < H); ``init(D, H,
    options)`` builds a container of the right structure (every array is then redrawn); ``bias`` and
    ``gates`` name the stacked per-gate input bias that adversarial draws pin to saturation;
    ``finish`` repairs drawn values a cell constrains (a variance >= 0); ``fit(options, B)`` adjusts
    options a batch of B rows cannot run (batch statistics need B >= 2).
    """

    module: object
    choices: dict
    resolve: object
    init: object
    bias: str | None = None
    gates: tuple = ()
    finish: object = None
    fit: object = None


def _lstm_resolve(D, H, c):
    # A projection needs P < H (PyTorch refuses P >= H); its width comes from a further choice.
    P = 0 if not c["proj"] or H < 2 else 1 + c["proj_size"] % (H - 1)
    return {"peepholes": c["peepholes"], "proj_size": P}


def _one_option(module, option: str, values, finish=None) -> CellKind:
    """A cell with one drawn option handed to its ``init`` as is (GRU ``reset``, RNN ``activation``),
    gates stacked in ``b_x`` in ``module.GATES`` order."""
    return CellKind(
        module,
        {option: values},
        lambda D, H, c: {option: c[option]},
        lambda D, H, o: module.init(D, H, **{option: o[option]}, rng=0),
        "b_x",
        module.GATES,
        finish,
    )


CELLS: dict[str, CellKind] = {
    "gru": _one_option(gru, "reset", gru.RESETS),
    "lstm": CellKind(
        lstm,
        {"proj": (False, True), "peepholes": (False, True), "proj_size": tuple(range(8))},
        _lstm_resolve,
        lambda D, H, o: lstm.init(D, H, proj_size=o["proj_size"], peepholes=o["peepholes"], rng=0),
        "b_x",
        lstm.GATES,
    ),
}


def _register_optional_cells() -> None:
    """SRU and the conditional GRU, when their reference modules exist."""
    try:
        from ..cells import sru
    except ImportError:  # pragma: no cover - present in this repository
        sru = None
    if sru is not None:

        def sru_resolve(D, H, c):
            skip = c["skip"]
            if skip == "auto":  # the sru package's rule: the identity when widths match, else a projection
                skip = "identity" if D == H else "projection"
            if skip == "identity" and D < H:
                skip = "projection"  # the identity skip adds x[..., o:o+H]: it needs D >= H
            return {
                "skip": skip,
                "v_terms": c["v_terms"],
                "activation": c["activation"],
                # sqrt(3), rounded to float32: the sru package keeps alpha in a float32 buffer, and an
                # option (unlike an array) is not rounded when a case is cast to float32
                "alpha": float(np.float32(sru.highway_alpha(0.0))) if (c["rescale"] and skip == "identity") else 1.0,
                "skip_offset": c["skip_offset"] % (D - H + 1) if skip == "identity" else 0,
            }

        def sru_init(D, H, o):
            p = sru.init(D, H, skip=o["skip"], v_terms=o["v_terms"], activation=o["activation"], rng=0)
            return p.replace(alpha=o["alpha"], skip_offset=o["skip_offset"])

        CELLS["sru"] = CellKind(
            sru,
            {
                "skip": ("auto",) + sru.SKIPS,
                "v_terms": (True, False),
                "activation": sru.ACTIVATIONS,
                "rescale": (False, True),
                "skip_offset": tuple(range(4)),
            },
            sru_resolve,
            sru_init,
            "b",
            ("f", "r"),
        )
    try:
        from ..cells import ccgru
    except ImportError:  # pragma: no cover - present in this repository
        ccgru = None
    if ccgru is not None:

        def ccgru_resolve(D, H, c):
            g = None
            if c["variant"] == "block":
                divisors = [k for k in range(1, H + 1) if H % k == 0]
                g = divisors[c["g"] % len(divisors)]
            elif c["variant"] == "lowrank":
                g = 1 + c["g"] % H
            return {"variant": c["variant"], "g": g, "mode": c["mode"], "norm": c["norm"], "s": c["s"]}

        def ccgru_init(D, H, o):
            p = ccgru.init(D, H, variant=o["variant"], g=o["g"], s=o["s"], mode=o["mode"], rng=0)
            return p.replace(norm=o["norm"])

        CELLS["ccgru"] = CellKind(
            ccgru,
            {
                "variant": ccgru.VARIANTS,
                "mode": ("inference", "train"),
                "norm": ("batch", "folded"),
                "s": (0.0, -0.5, 0.5),
                "g": tuple(range(4)),
            },
            ccgru_resolve,
            ccgru_init,
            "b_rh",
            ccgru.GATES,
            lambda p: p.replace(running_var=np.abs(p.running_var) + 0.25),  # a variance: >= 0, away from eps
            # batch statistics need two rows per step: a narrower batch runs the inference mode
            lambda o, B: {**o, "mode": "inference"} if (B < 2 and o["mode"] == "train" and o["norm"] == "batch") else o,
        )


_register_optional_cells()


def _rnn_contractive(p):
    """A relu RNN kept well-conditioned: relu is unbounded, so a W_h of norm 2 grows h (and its gradients)
    by 2^T (float32 overflows at T = 70) and a bias pinned at +SATURATE makes h ~ 1000 T. W_h is halved
    (a power of two keeps the entries on a grid) until its rows' absolute sums are at most 1/2, so
    ``|h| <= 2 max|W_x x + b|`` whatever T, and a positive pin becomes +1 (the unit always active) while a
    negative one stays (a dead unit: exact zeros). tanh is bounded by 1 and is left as drawn."""
    if p.activation != "relu":
        return p
    W_h = np.array(p.W_h)
    norm = float(np.max(np.abs(W_h).sum(axis=1), initial=0.0))
    while norm > 0.5:
        W_h, norm = W_h * 0.5, norm * 0.5
    return p.replace(W_h=W_h, b_x=np.minimum(p.b_x, 1.0))


def _register_rnn() -> None:
    from ..cells import rnn

    CELLS["rnn"] = _one_option(rnn, "activation", rnn.ACTIVATIONS, _rnn_contractive)


_register_rnn()


def register_cell(name: str, kind: CellKind) -> None:
    """Make cell ``name`` drawable by :func:`configs` and :func:`cases`."""
    CELLS[name] = kind


class LayerSpec(NamedTuple):
    """One recurrent layer: cell name, hidden size, and the cell's options as built (sorted pairs)."""

    cell: str
    H: int
    options: tuple = ()  # sorted (name, value) pairs, hashable
    D: int = 0  # the layer's input width
    bidirectional: bool = False  # a BiLayer of two cells of this spec

    @property
    def opts(self) -> dict:
        return dict(self.options)

    @property
    def out(self) -> int:
        """The width of the layer's output (an LSTM with a projection outputs proj_size; both
        directions of a bidirectional layer are concatenated)."""
        return (self.opts.get("proj_size") or self.H) * (2 if self.bidirectional else 1)

    def __str__(self) -> str:
        opts = "".join(f", {k}={v!r}" for k, v in self.options)
        return f"{self.cell}(H={self.H}{opts}{', bidirectional' if self.bidirectional else ''})"


CONVENTIONS = ("bidirectional", "lengths", "batch_first", "unbatched", "no_initial_state")
"""Input conventions :func:`configs` can draw (see the module docstring)."""


class CellConfig(NamedTuple):
    """A whole problem's shape: input size, batch, steps, the layers (bottom first) and the input
    conventions drawn for it."""

    D: int
    B: int
    T: int
    layers: tuple[LayerSpec, ...]
    batch_first: bool = False  # x (B, T, D), y (B, T, H)
    unbatched: bool = False  # x (T, D), y (T, H), states without the batch axis (B == 1)
    packed: bool = False  # per-sample lengths (Case.lengths)
    initial_state: bool = True  # False: the candidate gets state0=None, the reference zeros

    @property
    def H(self) -> int:
        """The width of the top layer's output (y is (T, B, H))."""
        return self.layers[-1].out

    @property
    def bidirectional(self) -> bool:
        return any(s.bidirectional for s in self.layers)

    @property
    def conventions(self) -> tuple[str, ...]:
        """The conventions this problem uses, by their :data:`CONVENTIONS` names."""
        used = {
            "bidirectional": self.bidirectional,
            "lengths": self.packed,
            "batch_first": self.batch_first,
            "unbatched": self.unbatched,
            "no_initial_state": not self.initial_state,
        }
        return tuple(name for name in CONVENTIONS if used[name])

    def __str__(self) -> str:
        flags = "".join(f", {c}" for c in self.conventions if c != "bidirectional")
        return f"T={self.T}, B={self.B}, D={self.D}, layers=[{', '.join(map(str, self.layers))}]{flags}"


def _draw_layer(draw, space, D_in, B, label, bidirectional=False):
    cell = draw(st.sampled_from(tuple(space.cells)), label=f"{label}: cell")
    size = space.H if space.H is not None else draw_size(draw, "H", space.min_H, space.max_H, label=f"{label}: H")
    kind = CELLS[cell]
    chosen = {}
    for name, values in kind.choices.items():
        allowed = tuple((space.options or {}).get(name, values))
        chosen[name] = allowed[0] if len(allowed) == 1 else draw(st.sampled_from(allowed), label=f"{label}: {name}")
    return _spec(cell, size, chosen, D_in, B, bidirectional), chosen


def _spec(cell, H, chosen, D_in, B, bidirectional=False) -> LayerSpec:
    kind = CELLS[cell]
    opts = kind.resolve(D_in, H, chosen)
    if kind.fit is not None:
        opts = kind.fit(opts, B)
    return LayerSpec(cell, H, tuple(sorted(opts.items())), D_in, bidirectional)


# ---------------------------------------------------------------------------------------------- sizes
TINY = {"H": 4, "D": 4, "B": 3, "T": 8}
"""The tiny band's upper ends (see the module docstring)."""

VERIFY_SIZES = {"max_H": 130, "max_D": 130, "max_B": 17, "max_T": 70}
""":func:`refrnn.verify.verify`'s default maxima: past the 128-unit tile, a 16-row batch tile and two
32-step chunks (see the module docstring)."""

BANDS = ("tiny", "wide", "boundary", "wide", "boundary", "wide", "boundary", "boundary")  # 1/8, 3/8, 1/2
_BAND = st.sampled_from(BANDS)


@functools.lru_cache(maxsize=None)
def boundary_sizes(lo: int, hi: int) -> tuple[int, ...]:
    """The sizes in ``lo..hi`` where tiled and vectorised kernels have their seams.

    ``2^k - 1, 2^k, 2^k + 1`` (one short of a tile, exactly a tile, one unit into the next: the
    remainders 7, 15, 31 and 1 of the vector and tile widths 4, 8, 16, 32), ``3 * 2^(k-1)`` (a multiple
    of a small tile but not of the next: 12, 24, 48, 96), and ``hi`` itself.
    """
    values = {hi}
    k = 1
    while 2**k - 1 <= hi:
        values.update((2**k - 1, 2**k, 2**k + 1, 3 * 2 ** (k - 1)))
        k += 1
    return tuple(sorted(v for v in values if lo <= v <= hi))


def draw_size(draw, name: str, lo: int, hi: int, *, label: str | None = None) -> int:
    """A size in ``lo..hi`` from one of the bands ``tiny``, ``wide``, ``boundary`` (module docstring);
    ``name`` ("H", "D", "B" or "T") picks the tiny band's end."""
    label = label or name
    if lo >= hi:
        return lo
    band = draw(_BAND, label=f"{label}: band")
    if band == "tiny":
        return draw(st.integers(lo, max(lo, min(hi, TINY[name]))), label=label)
    if band == "wide":
        return draw(st.integers(lo, hi), label=label)
    return draw(st.sampled_from(boundary_sizes(lo, hi)), label=label)


_SEED_ONLY = threading.Lock()
_seed_only = {"depth": 0, "hook": None}  # how many blocks are open, and Hypothesis's own hook


@contextlib.contextmanager
def seed_only():
    """Within this block Hypothesis's draws are a function of the seed alone.

    Hypothesis (since about 6.131) replaces roughly one integer draw in twenty with a literal taken
    from the source of every module imported so far from outside site-packages: the caller's own code,
    and refrnn itself when it is installed in development mode. The same ``seed`` then draws other
    problems in a process that has imported other modules (a test run after other tests, a script
    that imports one more helper), so a counterexample's ``verify(..., seed=S)`` would not reproduce it
    elsewhere and the seam coverage of a default run would change with the caller's imports. The
    strategies here already place sizes at the seams on purpose, so the literals add nothing.

    The hook is private to Hypothesis: where it is absent (versions before the feature, or a later
    rename) nothing is patched. The tests pin the behaviour on the installed version."""
    try:
        from hypothesis.internal.conjecture import providers

        cache = providers.CONSTANTS_CACHE.cache
        empty = providers.Constants()
    except (ImportError, AttributeError):
        yield
        return
    with _SEED_ONLY:
        if _seed_only["depth"] == 0:
            _seed_only["hook"] = providers._get_local_constants
            providers._get_local_constants = lambda: empty
            cache.clear()  # it holds the in-range constants computed with the local ones
        _seed_only["depth"] += 1
    try:
        yield
    finally:
        with _SEED_ONLY:
            _seed_only["depth"] -= 1
            if _seed_only["depth"] == 0:
                providers._get_local_constants = _seed_only["hook"]
                cache.clear()


class _Space(NamedTuple):
    """What :func:`configs` was asked for, validated: the one frozen object its draws read (the keyword
    arguments stay the public form, since a caller names only the few it changes)."""

    cells: tuple
    D: int | None
    H: int | None
    min_D: int
    max_D: int
    min_H: int
    max_H: int
    min_B: int
    max_B: int
    min_T: int
    max_T: int
    min_layers: int
    max_layers: int
    same_layers: bool
    options: dict | None
    conventions: frozenset = frozenset()


_MORE = st.booleans()
_FLAG = st.booleans()


def _draw_config(draw, space: _Space, on_start=None, on_layer=None) -> CellConfig:
    """Draw a config; ``on_start(config)`` (the config without its layers) and ``on_layer(k, spec)``
    let :func:`cases` draw each layer's arrays right after its shape, so that deleting a layer deletes
    one contiguous run of choices and Hypothesis can shrink a 3-layer failure to the 1-layer one it
    usually is."""
    conv = space.conventions

    def flag(name, when=True):
        return bool(when and name in conv and draw(_FLAG, label=name))

    def seldom(name, one_in, when=True):  # drawn as the last value, so it shrinks to "not used"
        return bool(when and name in conv and draw(st.integers(0, one_in - 1), label=name) == one_in - 1)

    # Rarer than the others, since each hides bugs: unbatched input is a batch of one (no batch-tile
    # bug can show), and without an initial state every bug in how h0 and c0 are read is invisible.
    unbatched = seldom("unbatched", 4, space.min_B <= 1 <= space.max_B)
    B = 1 if unbatched else draw_size(draw, "B", space.min_B, space.max_B)
    T = draw_size(draw, "T", space.min_T, space.max_T)
    D = space.D if space.D is not None else draw_size(draw, "D", space.min_D, space.max_D)
    # Square layers (D == H) are where kernels take special paths (one stacked weight, a shared
    # buffer); independent draws would make them rare, so an eighth of the problems ask for one.
    square = (
        space.H is None and space.min_H <= D <= space.max_H and draw(st.integers(0, 7), label="D == H") == 7
    )
    bidirectional = flag("bidirectional")
    batch_first = flag("batch_first", not unbatched)
    packed = flag("lengths", B >= 1 and not unbatched)
    initial_state = not seldom("no_initial_state", 4)
    cfg = CellConfig(D, B, T, (), batch_first, unbatched, packed, initial_state)
    if on_start is not None:
        on_start(cfg)
    layers, chosen, width = [], None, D
    for k in range(space.max_layers):
        if k >= space.min_layers and not draw(_MORE, label=f"layer {k}?"):
            break
        if k == 0 or not space.same_layers:
            pinned = space._replace(H=D) if (k == 0 and square) else space
            spec, chosen = _draw_layer(draw, pinned, width, B, f"layer {k}", bidirectional)
        else:
            spec = _spec(layers[0].cell, layers[0].H, chosen, width, B, bidirectional)
        layers.append(spec)
        if on_layer is not None:
            on_layer(k, spec)
        width = spec.out
    return cfg._replace(layers=tuple(layers))


def configs(
    cells=("gru", "lstm"),
    *,
    D=None,
    H=None,
    min_D=1,
    max_D=4,
    min_H=1,
    max_H=4,
    min_B=1,
    max_B=3,
    min_T=1,
    max_T=6,
    min_layers=1,
    max_layers=1,
    same_layers=True,
    options: dict | None = None,
    conventions=(),
):
    """A strategy for :class:`CellConfig`.

    ``cells`` are names in :data:`CELLS`; ``options`` narrows a cell's choices (``{"reset":
    ("after",)}``, ``{"peepholes": (False,)}``). ``same_layers=True`` gives every layer the first
    one's cell, size and options (what ``torch.nn.GRU(num_layers=L)`` computes); ``False`` draws
    mixed stacks of varying widths. ``D``/``H`` pin sizes (for a candidate built for one shape);
    ``min_B=0`` allows empty batches. Sizes come from the bands of the module docstring.
    ``conventions`` are names in :data:`CONVENTIONS` to draw. Passed to :func:`cases`, each layer's
    arrays are drawn right after its shape (better shrinking).
    """
    if isinstance(cells, str) or not isinstance(cells, (tuple, list)) or not cells:
        raise TypeError(f"cells: expected a non-empty sequence of cell names, got {cells!r}")
    unknown = [c for c in cells if c not in CELLS]
    if unknown:
        raise ValueError(f"cells: unknown cell {unknown[0]!r}; expected some of {', '.join(map(repr, CELLS))}")
    for lo_name, lo, hi_name, hi, least in (
        ("min_D", min_D, "max_D", max_D, 1), ("min_H", min_H, "max_H", max_H, 1), ("min_B", min_B, "max_B", max_B, 0),
        ("min_T", min_T, "max_T", max_T, 1), ("min_layers", min_layers, "max_layers", max_layers, 1),
    ):
        for n, v in ((lo_name, lo), (hi_name, hi)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < least:
                raise ValueError(f"{n}: expected an integer >= {least}, got {v!r}")
        if lo > hi:
            raise ValueError(f"{lo_name}: expected at most {hi_name}={hi}, got {lo}")
    if isinstance(conventions, str):
        raise TypeError(f"conventions: expected a sequence of names, got the string {conventions!r}")
    bad = [c for c in conventions if c not in CONVENTIONS]
    if bad:
        raise ValueError(f"conventions: unknown convention {bad[0]!r}; expected some of {', '.join(map(repr, CONVENTIONS))}")
    space = _Space(
        cells=tuple(cells), D=D, H=H, min_D=min_D, max_D=max_D, min_H=min_H, max_H=max_H, min_B=min_B, max_B=max_B,
        min_T=min_T, max_T=max_T, min_layers=min_layers, max_layers=max_layers, same_layers=same_layers,
        options=options, conventions=frozenset(conventions),
    )
    strategy = st.composite(lambda draw: _draw_config(draw, space))()
    strategy.space = space  # read by cases()
    return strategy


# --------------------------------------------------------------------------------------------- values
GRID = 64  # entries are multiples of bound/GRID: 0, or at least bound/64 in magnitude
ELEMENTWISE_MAX = 24  # arrays up to this size may be drawn entry by entry (readable shrunk examples)


# Strategy objects are built once: constructing (and validating) one per draw costs more than the draw,
# so the composites below are thin wrappers around plain functions of ``draw``.
_HOW = st.integers(0, 7)
_SEED = st.integers(0, 2**32 - 1)
_ENTRY = st.integers(-GRID, GRID)
_PIN = st.sampled_from([-1, 0, 1])
_LEVEL = st.sampled_from([SATURATE, MODERATE])
_QUARTER = st.integers(0, 3)


@functools.lru_cache(maxsize=None)
def _entries(shape: tuple):
    return hnp.arrays(np.int8, shape, elements=_ENTRY, fill=st.nothing())


@functools.lru_cache(maxsize=None)
def _pins(H: int):
    return hnp.arrays(np.int8, H, elements=_PIN, fill=st.nothing())


def draw_bounded(draw, shape, bound: float = 1.0, label: str = "array") -> np.ndarray:
    """The body of :func:`bounded`, callable from other composites without building a strategy."""
    shape = tuple(int(n) for n in shape)
    size = int(np.prod(shape))
    mode = draw(_HOW, label=f"{label}: how")
    if mode == 0 or size == 0:
        return np.zeros(shape)
    if mode == 1 and size <= ELEMENTWISE_MAX:
        k = draw(_entries(shape), label=f"{label}: entries")
    else:
        seed = draw(_SEED, label=f"{label}: seed")
        k = np.random.default_rng(seed).integers(-GRID, GRID, size=shape, endpoint=True)
    return k.astype(np.float64) * (bound / GRID)


@st.composite
def bounded(draw, shape, bound: float = 1.0, *, label: str = "array"):
    """Float64 arrays of ``shape`` with entries ``k * bound / 64`` for integers ``|k| <= 64``.

    The grid keeps every entry 0 or at least bound/64 in magnitude: a weight of 1e-300 would make
    finite differences and normwise relative errors measure rounding noise instead of the gradient.
    How the entries are chosen is itself drawn (and shrinks in this order):

    * all zero (so a shrunk example keeps non-zero only what the failure needs);
    * entry by entry with :func:`hypothesis.extra.numpy.arrays`, for arrays of at most 24 entries
      (shrinks entry by entry to a readable example);
    * dense from ``numpy.random.default_rng(seed)`` with ``seed`` drawn by Hypothesis: every entry
      non-trivial, at a cost independent of the size (drawing 300 entries one by one costs ~30 ms).
    """
    return draw_bounded(draw, shape, bound, label)


def draw_layer_params(draw, spec: LayerSpec, D: int, adversarial: bool = False, label: str = "layer"):
    if spec.bidirectional:  # two independent cells of the same spec, forward then reverse
        one = spec._replace(bidirectional=False)
        return BiLayer(
            draw_layer_params(draw, one, D, adversarial, f"{label}.fwd"),
            draw_layer_params(draw, one, D, adversarial, f"{label}.rev"),
        )
    kind = CELLS[spec.cell]
    skeleton = _skeleton(spec._replace(D=D))
    arrays = {}
    for name, a in skeleton.arrays().items():
        # Weight matrices get 1/sqrt(fan_in) (PyTorch's initial range), so |pre-activation| stays
        # below sqrt(D) + sqrt(H) + 1 whatever the sizes; vectors (biases, peepholes) get 1/2.
        bound = 1.0 / np.sqrt(a.shape[1]) if a.ndim == 2 else 0.5
        arrays[name] = draw_bounded(draw, a.shape, bound, f"{label}.{name}")
    params = skeleton.replace(**arrays)
    if adversarial:
        params = draw_saturate(draw, params, kind.gates, bias=kind.bias, label=label)
    if kind.finish is not None:  # after the pins, so a cell can also bound what saturation drew
        params = kind.finish(params)
    return params


@functools.lru_cache(maxsize=4096)
def _skeleton(spec: LayerSpec):
    return CELLS[spec.cell].init(spec.D, spec.H, spec.opts)


@st.composite
def layer_params(draw, spec: LayerSpec, D: int | None = None, *, adversarial: bool = False):
    """Parameters of one layer: the cell's own container, with every array drawn by :func:`bounded`.

    The cell's ``init`` fixes the container's structure; the strategy then redraws each array with
    the bound of its role (weight matrices 1/sqrt(fan_in), vectors 1/2). ``adversarial`` adds
    :func:`saturate`.
    """
    return draw_layer_params(draw, spec, spec.D if D is None else D, adversarial)


def draw_saturate(draw, params, gates, gate=None, level=None, bias: str | None = "b_x", label: str = "layer"):
    H = params.hidden_size
    if bias is None or bias not in params.array_names() or getattr(params, bias).shape[0] != len(gates) * H:
        return params  # a cell without stacked per-gate input biases: nothing to pin this way
    b_x = np.array(getattr(params, bias), copy=True)
    for k, name in enumerate(gates):
        if gate is not None and name != gate:
            continue
        pins = draw(_pins(H), label=f"{label}: pins {name}")
        size = level if level is not None else draw(_LEVEL, label=f"{label}: level {name}")
        block = b_x[k * H : (k + 1) * H]
        block[pins != 0] = pins[pins != 0] * size
    return params.replace(**{bias: b_x})


@st.composite
def saturate(draw, params, gates: tuple[str, ...], *, gate=None, level=None, bias: str = "b_x"):
    """``params`` with some units' gates pinned to saturation through their stacked input bias ``bias``.

    For each of ``gates`` (or just ``gate``), each unit draws -1 (pinned low), 0 (left alone) or +1
    (pinned high); the pin is ``+-SATURATE`` (exact 0/1) or ``+-MODERATE`` (``level`` fixes it).
    Gates whose activation is tanh (a candidate) saturate to exactly +-1 the same way.
    """
    return draw_saturate(draw, params, gates, gate, level, bias)


def draw_state(draw, params, B: int, bound: float = 1.0, label: str = "state"):
    def fill(template, where):  # arrays, or (nested) tuples of them: (h, c), (state_f, state_r)
        if isinstance(template, tuple):
            return tuple(fill(a, f"{where}[{i}]") for i, a in enumerate(template))
        return draw_bounded(draw, template.shape, bound, where)

    return fill(module_for(params).zero_state(params, B), label)


@st.composite
def state_for(draw, params, B: int, *, bound: float = 1.0, label: str = "state"):
    """A state of ``params``' cell for batch ``B``, of the same form as ``zero_state`` (array or tuple)."""
    return draw_state(draw, params, B, bound, label)


class Case(NamedTuple):
    """One drawn problem: layers (float64 parameter containers, bottom first), input, initial states
    (None when ``config.initial_state`` is False), upstream gradients ``dy`` (T, B, H_top) and
    ``dstate_T`` (one per layer) for backward, per-sample ``lengths`` (B,) when ``config.packed``, and
    whether gates were pinned to saturation. Arrays are time-major and batched whatever the config's
    conventions: a layout moves axes for its candidate."""

    config: CellConfig
    layers: tuple
    x: np.ndarray
    state0: tuple | None
    dy: np.ndarray | None
    dstate_T: tuple | None
    lengths: np.ndarray | None = None
    adversarial: bool = False

    @property
    def params(self):
        """The single layer's parameters (for one-layer cases)."""
        (p,) = self.layers
        return p


def draw_lengths(draw, B: int, T: int) -> np.ndarray:
    """Per-sample lengths in 1..T, in no particular order (PyTorch's ``enforce_sorted=False``).

    Drawn entry by entry, then, unless the draw says otherwise, one sample of length 1 and one of
    length T are placed at drawn rows: the two ends are where masking bugs show (a reverse direction
    that starts at the padding, a final state read at step T - 1), and they shrink away when not needed.
    """
    lengths = np.array([draw(st.integers(1, T), label=f"lengths[{b}]") for b in range(B)], dtype=np.int64)
    if B >= 2 and T >= 2 and draw(_FLAG, label="lengths: ends"):
        short, full = draw(st.integers(0, B - 1), label="lengths: row of 1"), draw(st.integers(0, B - 1), label="lengths: row of T")
        lengths[full] = T
        lengths[short] = 1
    return lengths


@st.composite
def cases(draw, config=None, *, adversarial=False, grads: bool = True) -> Case:
    """A :class:`Case`: ``config`` is a :func:`configs` strategy (default ``configs()``), another strategy
    for :class:`CellConfig`, or a config. ``adversarial`` is False, True, or None (draw it: a quarter
    of the cases saturate gates)."""
    if config is None:
        config = configs()
    if adversarial is None:
        adversarial = draw(_QUARTER, label="adversarial") == 0
    got = {}

    def start(cfg):
        got["x"] = draw_bounded(draw, (cfg.T, cfg.B, cfg.D), 1.0, "x")
        got["lengths"] = draw_lengths(draw, cfg.B, cfg.T) if cfg.packed else None
        got["cfg"] = cfg
        got["layers"], got["state0"], got["dstate_T"] = [], [], []

    def layer(k, spec):
        p = draw_layer_params(draw, spec, spec.D, adversarial, label=f"layers[{k}]")
        got["layers"].append(p)
        B = got["cfg"].B
        if got["cfg"].initial_state:
            got["state0"].append(draw_state(draw, p, B, label=f"state0[{k}]"))
        if grads:
            got["dstate_T"].append(draw_state(draw, p, B, label=f"dstate_T[{k}]"))

    space = getattr(config, "space", None)
    if space is not None:
        cfg = _draw_config(draw, space, start, layer)
    else:
        cfg = config if isinstance(config, CellConfig) else draw(config, label="config")
        start(cfg._replace(layers=()))
        for k, spec in enumerate(cfg.layers):
            layer(k, spec)
    dy = draw_bounded(draw, (cfg.T, cfg.B, cfg.H), 1.0, "dy") if grads else None
    state0 = tuple(got["state0"]) if cfg.initial_state else None
    return Case(cfg, tuple(got["layers"]), got["x"], state0, dy, tuple(got["dstate_T"]) if grads else None, got["lengths"], bool(adversarial))


def reference(case: Case):
    """The float64 reference on ``case``: ``(y, states_T, grads, dx, dstates0)`` (the last three None
    without upstream gradients). Time-major and batched, with the case's lengths; a missing initial
    state is zeros."""
    y, states_T, cache = stack.forward(case.layers, case.x, case.state0, lengths=case.lengths)
    if case.dy is None:
        return y, states_T, None, None, None
    grads, dx, dstates0 = stack.backward(case.layers, cache, case.dy, case.dstate_T)
    return y, states_T, grads, dx, dstates0


def _spec_of(params, D: int) -> LayerSpec:
    """The :class:`LayerSpec` of a built layer (a cell's container or a BiLayer)."""
    bidirectional = isinstance(params, BiLayer)
    p = params.fwd if bidirectional else params
    mod = module_for(p)
    name = next((n for n, kind in CELLS.items() if kind.module is mod), None)
    if name is None:
        raise TypeError(f"layers: {type(p).__name__} is not a cell verify can draw (known: {', '.join(CELLS)})")
    if name == "gru":
        opts = {"reset": p.reset}
    elif name == "lstm":
        opts = {"peepholes": p.has_peepholes, "proj_size": p.proj_size}
    elif name == "rnn":
        opts = {"activation": p.activation}
    else:
        opts = {}
    return LayerSpec(name, p.hidden_size, tuple(sorted(opts.items())), D, bidirectional)


def case_from(layers, x, state0=None, *, lengths=None, batch_first: bool = False, unbatched: bool = False, grads: bool = True, seed: int = 0) -> Case:
    """A :class:`Case` built from given float64 layers and arrays instead of drawn, for
    :func:`refrnn.verify.compare` on a problem of one's choosing (a regression, a size Hypothesis is
    unlikely to pick). ``x`` is time-major (T, B, D) and ``state0`` refrnn's per-layer states (None:
    no initial state, the candidate gets None); ``batch_first`` and ``unbatched`` (B must be 1) only
    say how the candidate is handed the arrays. With ``grads`` the upstream gradients are drawn from
    ``numpy.random.default_rng(seed)``.
    """
    layers = tuple(layers)
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"x: expected a time-major array of shape (T, B, D), got shape {x.shape}")
    T, B, D = x.shape
    if unbatched and B != 1:
        raise ValueError(f"unbatched: needs a batch of one sample, got B={B}")
    specs, width = [], D
    for p in layers:
        specs.append(_spec_of(p, width))
        width = p.output_size
    if lengths is not None:
        lengths = np.asarray(lengths, dtype=np.int64)
    cfg = CellConfig(D, B, T, tuple(specs), bool(batch_first), bool(unbatched), lengths is not None, state0 is not None)
    dy = dstate_T = None
    if grads:
        rng = np.random.default_rng(seed)
        y, states_T, _ = stack.forward(layers, x, state0, lengths=lengths)
        dy = rng.standard_normal(y.shape)
        dstate_T = tuple(_map_arrays(lambda a: rng.standard_normal(a.shape), s) for s in states_T)
    state0 = None if state0 is None else tuple(state0)
    return Case(cfg, layers, x, state0, dy, dstate_T, lengths, False)


def _map_arrays(fn, state):
    if isinstance(state, (tuple, list)):
        return tuple(_map_arrays(fn, s) for s in state)
    return fn(np.asarray(state))
