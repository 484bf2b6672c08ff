r"""Reference conditional-computation GRU (Davis & Arel, "Faster Gated Recurrent Units via Conditional
Computation"): forward over a whole sequence and hand-derived backprop through time.

Equations (paper numbering; ``*`` is the element-wise product, ``h = h_{t-1}``, ``x = x_t``)::

    r_t = sigmoid(W_r x + U_r h + b_r)                         (2)  reset gate
    ĥ_t = tanh(W_h x + r_t * (U_h h) + b_h)                    (5)  reset OUTSIDE the recurrent product
    z_t = cliptanh(BN(a_t, s))                                 (6, 7)  update gate, exactly 0 when BN(a_t, s) <= 0
    h_t = (1 - z_t) * h + z_t * ĥ_t                            (4)  paper orientation: z = 0 copies h

    cliptanh(v) = tanh(v) if v > 0 else 0                      (6)  derivative 1 - tanh(v)^2, resp. 0
    BN(a, s)    = (a - mu) / sqrt(var + eps) + s               (7)  corrected, see "The sign of s"

The gate pre-activation ``a_t`` has one of three forms (the *variant*, one parameter class each)::

    "full"     a = W_z x + U_z h + b_z                                        (1)       K = H
    "lowrank"  z_lr = relu(W_z^lr x + U_z^lr h + b_z^lr),  a = W_z z_lr + b_z  (8, 9)    K = H
    "block"    z_lr = relu(W_z^lr x + U_z^lr h + b_z^lr),  a = z_lr,           (8-11)   K = g
               z_t  = repeat(cliptanh(BN(a, s)), H/g)  (each of the g values fills a contiguous block of H/g units)

``K`` is the width of ``a``: the number of normalised gate units and the length of the running statistics.

Block variant: where BN and cliptanh sit. Eqs. 10-11 are Eqs. 8-9 with ``W_z`` fixed to the block-copy
matrix (H, g) and ``b_z = 0``, so literally ``a = copy(z_lr)`` (H units), then BN, then cliptanh. The H/g
copies of one block value have identical batch statistics (and, started equal, identical running
statistics), and cliptanh is element-wise, so ``cliptanh(BN(copy(v))) = copy(cliptanh(BN(v)))`` exactly.
We normalise the g-dimensional ``z_lr`` and copy last: the same function with g statistics instead of H,
no (H, g) product, and one cliptanh per block, which is what a block-sparse fast path computes.
``tests/test_ccgru.py`` checks it against Eqs. 9-10 written literally (copy matrix, BN over H units).

Orientation. refrnn's GRU (:mod:`refrnn.cells.gru`) writes PyTorch's ``h' = (1 - z) * n + z * h`` and
converts the paper's ``h' = (1 - z) * h + z * ĥ`` by negating the z pre-activation, because
``1 - sigmoid(a) = sigmoid(-a)``. The clipped tanh has no such identity: ``1 - cliptanh(a)`` is 1 for
``a <= 0`` and positive for every finite ``a``, so it is not ``cliptanh`` of anything. The cell's point
is that an *exactly zero* ``z`` lets a unit skip ĥ and copy ``h`` forward; that needs the paper's
orientation, which this cell keeps.
The copy is bit-exact even in this dense reference: ``(1 - 0) * h + 0 * ĥ == h`` in IEEE arithmetic.

The sign of s. Eq. 7 is printed as ``(z - mu) / sigma^2 - s``. That contradicts the paper's own results
(Tables II and IV, Sec. VII: more negative ``s`` gives sparser ``z`` and more speed-up). With ``+ s``
and a standard-normal pre-activation ``n = (a - mu) / sigma``, ``z = 0`` exactly when ``n + s <= 0``, so
the zero fraction is ``P(n <= -s) = Phi(-s)``: 0.50, 0.60, 0.69, 0.77 for s = 0, -0.25, -0.5, -0.75,
rising as s falls, as reported. With ``- s`` it would be ``Phi(s)``, falling as s falls. Dividing by
``sigma^2`` instead of ``sigma`` would make the normalised value's spread ``1/sigma`` depend on the data's
scale, so no fixed ``s`` could control the sparsity; batch normalisation, which the paper cites [10],
divides by ``sqrt(var + eps)``. So this module implements ``(a - mu) / sqrt(var + eps) + s``.

Normalisation statistics (options ``norm`` and ``mode``; switch with ``params.replace(mode="inference")``):

* ``norm="batch"``, ``mode="train"``: ``mu`` and ``var`` (biased) are the batch statistics of each unit of
  ``a_t`` over the B sequences, separately at every step t; backward differentiates through them. Needs
  ``B >= 2``. ``b_z`` cancels in ``a - mu`` exactly, so it is left out of the arithmetic (its gradient is
  exactly zero, as it is mathematically, instead of finite-difference rounding noise); it still enters
  the running mean.
* ``norm="batch"``, ``mode="inference"``: ``mu, var = running_mean, running_var``; BN is an affine map.
* ``norm="folded"``: the affine map has been folded into the weights (:func:`fold_normalization`);
  ``BN(a, s) = a - running_mean + s`` in either mode, ``running_var`` is unused. ``running_mean`` is zero
  after folding the full and low-rank variants; in the block variant, whose ``b_z`` is fixed at 0, it
  carries what is left of the normalisation, a fixed per-block offset.

Running statistics are parameters (buffers) of the pure functions, never mutated. In training mode with
``norm="batch"``, :func:`forward` returns the updated statistics in ``cache.running_mean`` and
``cache.running_var`` (PyTorch's rule, applied once per step in time order:
``running <- (1 - momentum) * running + momentum * batch``, unbiased variance ``var * B / (B - 1)``);
:func:`update_running_stats` puts them into a new parameter object. The update is not differentiated.
Their gradient is exactly zero in training mode (the output does not depend on them); in inference mode
backward returns the true derivative of the affine map, so the finite-difference check covers it. An
optimiser should not step them.

Layout (r and ĥ stacked in ``GATES`` order as in :mod:`refrnn.cells.gru`; the z weights separate)::

    W_rh: (2H, D) = [W_r; W_h]     U_rh: (2H, H) = [U_r; U_h]     b_rh: (2H,) = [b_r; b_h]
    full:     W_z (H, D), U_z (H, H), b_z (H,)
    lowrank:  W_z_lr (g, D), U_z_lr (g, H), b_z_lr (g,), W_z (H, g), b_z (H,)
    block:    W_z_lr (g, D), U_z_lr (g, H), b_z_lr (g,)             (W_z, b_z fixed: copy matrix, 0)
    running_mean, running_var: (K,)

Shapes: x (T, B, D); h0 (B, H); y (T, B, H) = h_1..h_T; h_T (B, H). Time-major. Every unit is computed
densely here; ``cache.z`` shows which units a conditional fast path may skip (:func:`z_sparsity`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, NamedTuple

import numpy as np

from .._moved import renamed
from .._checks import finite_result, float_array, one_of, positive_int
from ._common import (
    Params, cache_fields, check_cache, check_h0, check_weight, frozen, gradients, sigmoid, size_of, split_gates, zero_h,
)

GATES = ("r", "h")  # the stacked rows of W_rh, U_rh, b_rh: reset gate, then proposal ĥ
VARIANTS = ("full", "lowrank", "block")
MODES = ("train", "inference")
NORMS = ("batch", "folded")


def _is_real(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _check_params(params) -> None:
    if not isinstance(params, PARAM_CLASSES):
        expected = ", ".join(cls.__name__ for cls in PARAM_CLASSES)
        raise TypeError(f"params: expected one of {expected}, got {type(params).__name__}")


def _option(default):
    # Keyword-only, so the array fields each variant adds after them may stay positional.
    return dataclasses.field(default=default, kw_only=True, metadata={"array": False})


@dataclasses.dataclass(frozen=True)
class _CCGRUBase(Params):
    """Fields and checks every variant shares; ``s`` is the sparsity shift of Eq. 7."""

    W_rh: np.ndarray
    U_rh: np.ndarray
    b_rh: np.ndarray
    s: float = _option(0.0)
    eps: float = _option(1e-5)
    momentum: float = _option(0.1)
    mode: str = _option("train")
    norm: str = _option("batch")

    variant: ClassVar[str]

    def _check_shapes(self) -> None:
        name = type(self).__name__
        if not (_is_real(self.s) and math.isfinite(self.s)):
            raise ValueError(f"{name}.s: expected a finite real number (the shift of Eq. 7), got {self.s!r}")
        if not (_is_real(self.eps) and 0 < self.eps < math.inf):
            raise ValueError(f"{name}.eps: expected a finite positive number, got {self.eps!r}")
        if not (_is_real(self.momentum) and 0 <= self.momentum <= 1):
            raise ValueError(f"{name}.momentum: expected a number in [0, 1], got {self.momentum!r}")
        one_of("mode", self.mode, MODES)
        one_of("norm", self.norm, NORMS)
        U_rh = np.asarray(self.U_rh)
        if U_rh.ndim != 2 or U_rh.shape[0] != 2 * U_rh.shape[1]:
            raise ValueError(f"{name}.U_rh: expected shape (2H, H), got {U_rh.shape}")
        H = U_rh.shape[1]
        check_weight(name, "W_rh", self.W_rh, ("2H", "D"), {"2H": 2 * H})
        check_weight(name, "b_rh", self.b_rh, ("2H",), {"2H": 2 * H})
        D = np.asarray(self.W_rh).shape[1]
        K = self._check_gate_shapes(name, D, H)
        check_weight(name, "running_mean", self.running_mean, ("K",), {"K": K})
        check_weight(name, "running_var", self.running_var, ("K",), {"K": K})
        # running_var >= 0 is checked where it is used (check_inputs): a gradient container, of the
        # same class, holds d/d running_var, which may be negative.

    def _check_gate_shapes(self, name: str, D: int, H: int) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    input_size = size_of("W_rh", 1)
    hidden_size = size_of("U_rh", 1)

    @property
    def gate_width(self) -> int:
        """K: the width of the normalised pre-activation ``a`` (H, or g for the block variant)."""
        return self.running_mean.shape[0]


class _Bottleneck:
    """The g-wide bottleneck ``W_z^lr x + U_z^lr h + b_z^lr`` the low-rank and block variants share."""

    def _check_bottleneck(self, name: str, D: int, H: int) -> int:
        W_z_lr = np.asarray(self.W_z_lr)
        if W_z_lr.ndim != 2:
            raise ValueError(f"{name}.W_z_lr: expected a 2-d array of shape (g, D), got shape {W_z_lr.shape}")
        g = W_z_lr.shape[0]
        check_weight(name, "W_z_lr", W_z_lr, ("g", "D"), {"D": D})
        check_weight(name, "U_z_lr", self.U_z_lr, ("g", "H"), {"g": g, "H": H})
        check_weight(name, "b_z_lr", self.b_z_lr, ("g",), {"g": g})
        return g

    @property
    def g(self) -> int:
        return self.W_z_lr.shape[0]


@dataclasses.dataclass(frozen=True)
class CCGRUParams(_CCGRUBase):
    """Full-rank update gate, Eq. 1: ``a = W_z x + U_z h + b_z``."""

    W_z: np.ndarray
    U_z: np.ndarray
    b_z: np.ndarray
    running_mean: np.ndarray
    running_var: np.ndarray

    variant: ClassVar[str] = "full"

    def _check_gate_shapes(self, name, D, H):
        check_weight(name, "W_z", self.W_z, ("H", "D"), {"H": H, "D": D})
        check_weight(name, "U_z", self.U_z, ("H", "H"), {"H": H})
        check_weight(name, "b_z", self.b_z, ("H",), {"H": H})
        return H


@dataclasses.dataclass(frozen=True)
class CCGRULowRankParams(_Bottleneck, _CCGRUBase):
    """Low-rank update gate, Eqs. 8-9: ``a = W_z relu(W_z^lr x + U_z^lr h + b_z^lr) + b_z``, bottleneck g."""

    W_z_lr: np.ndarray
    U_z_lr: np.ndarray
    b_z_lr: np.ndarray
    W_z: np.ndarray
    b_z: np.ndarray
    running_mean: np.ndarray
    running_var: np.ndarray

    variant: ClassVar[str] = "lowrank"

    def _check_gate_shapes(self, name, D, H):
        g = self._check_bottleneck(name, D, H)
        check_weight(name, "W_z", self.W_z, ("H", "g"), {"H": H, "g": g})
        check_weight(name, "b_z", self.b_z, ("H",), {"H": H})
        return H


@dataclasses.dataclass(frozen=True)
class CCGRUBlockParams(_Bottleneck, _CCGRUBase):
    """Block-sparse update gate, Eqs. 10-11: g gate values, each copied to a contiguous block of H/g units."""

    W_z_lr: np.ndarray
    U_z_lr: np.ndarray
    b_z_lr: np.ndarray
    running_mean: np.ndarray
    running_var: np.ndarray

    variant: ClassVar[str] = "block"

    def _check_gate_shapes(self, name, D, H):
        g = self._check_bottleneck(name, D, H)
        _check_blocks(g, H, f"{name}.W_z_lr (g, D)")
        return g

    @property
    def block_size(self) -> int:
        return self.hidden_size // self.g


PARAM_CLASSES = (CCGRUParams, CCGRULowRankParams, CCGRUBlockParams)
_CLASS_OF = {cls.variant: cls for cls in PARAM_CLASSES}


def _check_blocks(g: int, H: int, name: str = "g") -> None:
    if g < 1 or H % g != 0:
        raise ValueError(f"{name}: the block variant needs g dividing H into equal blocks; g={g} does not divide H={H}")


_TBH = ("T", "B", "H")


@cache_fields(x=("T", "B", "D"), h=("T+1", "B", "H"), r=_TBH, h_hat=_TBH, Uh=_TBH, z=_TBH, z_lr=("T", "B", "g"),
              n_hat=("T", "B", "K"), inv_std=("T", "K"), running_mean=("K",), running_var=("K",))
class CCGRUCache(NamedTuple):
    """What backward needs, named after the equations. ``h`` holds h_0..h_T (T+1 steps).

    ``running_mean``/``running_var`` are the statistics *after* this forward pass (updated in training
    mode with ``norm="batch"``, else the parameters' own): pass the cache to :func:`update_running_stats`.
    """

    x: np.ndarray  # (T, B, D)
    h: np.ndarray  # (T+1, B, H)
    r: np.ndarray  # (T, B, H)
    h_hat: np.ndarray  # (T, B, H): ĥ
    Uh: np.ndarray  # (T, B, H): U_h h_{t-1}, the product r gates
    z: np.ndarray  # (T, B, H): the update gate, exactly 0 where a unit copies its state
    z_lr: np.ndarray | None  # (T, B, g): relu bottleneck (lowrank, block); None for full
    n_hat: np.ndarray  # (T, B, K): normalised pre-activation, BN(a, s) - s
    inv_std: np.ndarray  # (T, K): 1/sqrt(var + eps) used at each step (ones when folded)
    running_mean: np.ndarray  # (K,)
    running_var: np.ndarray  # (K,)


def _glorot(rng, rows: int, cols: int) -> np.ndarray:
    limit = np.sqrt(6.0 / (rows + cols))
    return rng.uniform(-limit, limit, size=(rows, cols))


def _orthogonal(rng, rows: int, cols: int) -> np.ndarray:
    """Orthonormal rows (rows <= cols) or columns; the sign fix makes the draw uniform (Haar)."""
    q, r = np.linalg.qr(rng.standard_normal((max(rows, cols), min(rows, cols))))
    q = q * np.sign(np.diag(r))
    return q if rows >= cols else q.T


def init(
    input_size: int,
    hidden_size: int,
    *,
    variant: str = "full",
    g: int | None = None,
    s: float = 0.0,
    eps: float = 1e-5,
    momentum: float = 0.1,
    mode: str = "train",
    rng=None,
    dtype=np.float64,
):
    """The paper's initialisation (Tables I, III): Glorot-uniform ``W``, orthogonal ``U``, zero biases,
    running mean 0 and variance 1. ``g`` is the bottleneck width ("lowrank") or number of blocks ("block")."""
    one_of("variant", variant, VARIANTS)
    D = positive_int("input_size", input_size)
    H = positive_int("hidden_size", hidden_size)
    if variant == "full":
        if g is not None:
            raise ValueError(f"g: only the 'lowrank' and 'block' variants take g, got g={g!r} with variant='full'")
    else:
        g = positive_int("g", g)
        if variant == "block":
            _check_blocks(g, H)
    rng = np.random.default_rng(rng)
    W_rh = np.concatenate([_glorot(rng, H, D), _glorot(rng, H, D)])
    U_rh = np.concatenate([_orthogonal(rng, H, H), _orthogonal(rng, H, H)])
    common = dict(W_rh=W_rh, U_rh=U_rh, b_rh=np.zeros(2 * H))
    if variant == "full":
        z = dict(W_z=_glorot(rng, H, D), U_z=_orthogonal(rng, H, H), b_z=np.zeros(H))
    else:
        z = dict(W_z_lr=_glorot(rng, g, D), U_z_lr=_orthogonal(rng, g, H), b_z_lr=np.zeros(g))
        if variant == "lowrank":
            z.update(W_z=_glorot(rng, H, g), b_z=np.zeros(H))
    K = g if variant == "block" else H
    arrays = {k: np.asarray(v, dtype=dtype) for k, v in {**common, **z}.items()}
    return _CLASS_OF[variant](
        **arrays,
        running_mean=np.zeros(K, dtype=dtype),
        running_var=np.ones(K, dtype=dtype),
        s=s,
        eps=eps,
        momentum=momentum,
        mode=mode,
    )


def zero_state(params, batch: int) -> np.ndarray:
    _check_params(params)
    return zero_h(params, batch)


def check_inputs(params, x, h0) -> tuple[np.ndarray, np.ndarray]:
    _check_params(params)
    dims = {"D": params.input_size, "H": params.hidden_size}
    x = float_array("x", x, ("T", "B", "D"), dims, dtype=params.dtype)
    if _batch_statistics(params) and x.shape[1] < 2:
        raise ValueError(
            f"x: mode='train' normalises with batch statistics, which need B >= 2 sequences per step; "
            f"got shape {x.shape} (B={x.shape[1]}). Use mode='inference' for a single sequence."
        )
    if params.norm == "batch" and params.mode == "inference" and np.any(params.running_var < 0):
        raise ValueError(
            f"params.running_var: variances must be non-negative, got min {np.min(params.running_var)}"
        )
    return x, check_h0(params, h0, x.shape[1])


def _batch_statistics(params) -> bool:
    return params.norm == "batch" and params.mode == "train"


def couples_samples(params) -> bool:
    """True when a batch's samples depend on each other (batch statistics in training mode); refrnn.layers.lengths
    refuses variable lengths then, since a sample's statistics would depend on how the batch is grouped."""
    return _batch_statistics(params)


def _z_input_side(params):
    """Weight and bias of the z path that multiply x: ``W_z, b_z`` (full) or ``W_z^lr, b_z^lr``."""
    if params.variant == "full":
        # b_z cancels against the batch mean in training mode: leave it out (module docstring).
        return params.W_z, (0.0 if _batch_statistics(params) else params.b_z)
    return params.W_z_lr, params.b_z_lr


def cliptanh(v: np.ndarray) -> np.ndarray:
    """Eq. 6: ``tanh(v)`` for ``v > 0``, else exactly ``+0.0``."""
    return np.where(v > 0, np.tanh(v), 0.0).astype(v.dtype, copy=False)


@renamed(h0="state0")
def forward(params, x, state0=None):
    """Run the cell over ``x``; returns ``(y, h_T, cache)``. ``state0`` (B, H) is h_0; None means zeros.

    Input-side products of all T steps are one product each; only the ``U`` products are per step.
    ``y`` is a read-only view of the cache; ``cache.running_*`` hold the updated running statistics.
    """
    x, h0 = check_inputs(params, x, state0)
    T, B, _ = x.shape
    H, K, dt = params.hidden_size, params.gate_width, params.dtype
    variant, batch_stats = params.variant, _batch_statistics(params)
    W_zx, b_zx = _z_input_side(params)
    U_zh = params.U_z if variant == "full" else params.U_z_lr
    p = finite_result("x", x @ params.W_rh.T + params.b_rh, "the input projection W_rh x + b_rh")  # (T, B, 2H), all steps
    px_z = finite_result("x", x @ W_zx.T + b_zx, "the update gate's input projection")  # (T, B, H or g)

    h = np.empty((T + 1, B, H), dtype=dt)
    h[0] = h0
    r, h_hat, Uh, z = (np.empty((T, B, H), dtype=dt) for _ in range(4))
    z_lr = None if variant == "full" else np.empty((T, B, params.g), dtype=dt)
    n_hat = np.empty((T, B, K), dtype=dt)
    inv_std = np.empty((T, K), dtype=dt)
    running_mean, running_var = params.running_mean.copy(), params.running_var.copy()
    if params.norm == "folded":
        inv_std[:] = 1.0
    elif not batch_stats:
        inv_std[:] = 1.0 / np.sqrt(params.running_var + params.eps)
    m = params.momentum

    for t in range(T):
        p_r, p_h = split_gates(p[t], GATES)
        q_r, Uh[t] = split_gates(h[t] @ params.U_rh.T, GATES)
        r[t] = sigmoid(p_r + q_r)
        h_hat[t] = np.tanh(p_h + r[t] * Uh[t])

        u = px_z[t] + h[t] @ U_zh.T  # full: a itself; lowrank/block: the bottleneck pre-activation
        if variant == "full":
            a = u
        else:
            z_lr[t] = np.maximum(u, 0.0)
            a = z_lr[t] if variant == "block" else z_lr[t] @ params.W_z.T
            if variant == "lowrank" and not batch_stats:
                a = a + params.b_z
        if batch_stats:
            mu = a.mean(axis=0)
            centred = a - mu
            var = (centred * centred).mean(axis=0)
            if not np.all(np.isfinite(var)):  # finite but huge inputs: BN would zero the gate silently
                raise ValueError(f"x: the batch variance of the update gate's pre-activation overflowed at step {t}; "
                                 f"the input (or state0) is too large for {dt}")
            inv_std[t] = 1.0 / np.sqrt(var + params.eps)
            n_hat[t] = centred * inv_std[t]
            b_z = params.b_z if variant != "block" else 0.0  # left out of a above, but part of the true mean
            running_mean = (1.0 - m) * running_mean + m * (mu + b_z)
            running_var = (1.0 - m) * running_var + m * (var * (B / (B - 1)))
        else:
            n_hat[t] = (a - params.running_mean) * inv_std[t]
        z_k = cliptanh(n_hat[t] + params.s)
        z[t] = z_k if variant != "block" else np.repeat(z_k, params.block_size, axis=-1)
        h[t + 1] = (1.0 - z[t]) * h[t] + z[t] * h_hat[t]

    finite_result("state0", h[T], "the recurrence (x, h_0 -> h_T)")
    arrays = [h, r, h_hat, Uh, z, n_hat, inv_std, running_mean, running_var] + ([] if z_lr is None else [z_lr])
    frozen(*arrays)
    cache = CCGRUCache(x, h, r, h_hat, Uh, z, z_lr, n_hat, inv_std, running_mean, running_var)
    return h[1:], h[T].copy(), cache


@renamed(dh_T="dstate_T")
def backward(params, cache: CCGRUCache, dy, dstate_T=None):
    """Backprop through time. ``dy`` (T, B, H) is dL/dy, ``dstate_T`` (B, H) is dL/dh_T (None: zero).

    Returns ``(grads, dx, dh0)`` with ``grads`` in the class of ``params``. In training mode with
    ``norm="batch"`` the gradient flows through each step's batch mean and variance.
    """
    _check_params(params)
    sizes = {"D": params.input_size, "H": params.hidden_size, "K": params.gate_width,
             "g": getattr(params, "g", 0)}
    check_cache(cache, CCGRUCache, params, sizes, present={"z_lr": params.variant != "full"})
    x, h, r, h_hat, Uh, z, z_lr, n_hat, inv_std = cache[:9]
    T, B, H = r.shape
    K, dt, variant = params.gate_width, params.dtype, params.variant
    dims = {"T": T, "B": B, "H": H}
    dy = float_array("dy", dy, ("T", "B", "H"), dims, dtype=dt)
    dh = np.zeros((B, H), dt) if dstate_T is None else float_array("dstate_T", dstate_T, ("B", "H"), dims, dtype=dt).copy()
    batch_stats = _batch_statistics(params)
    W_zx, _ = _z_input_side(params)
    U_zh = params.U_z if variant == "full" else params.U_z_lr
    bs = params.block_size if variant == "block" else 1

    dp = np.empty((T, B, 2 * H), dt)  # at [W_r x + U_r h + b_r, W_h x + r*(U_h h) + b_h]
    dq = np.empty((T, B, 2 * H), dt)  # at the recurrent products [U_r h, U_h h]
    du = np.empty((T, B, W_zx.shape[0]), dt)  # at the x-fed z pre-activation (a, or the bottleneck's)
    da = np.empty((T, B, K), dt)  # at a
    da_hat = np.empty((T, B, K), dt)  # at BN(a, s)
    for t in reversed(range(T)):
        dh = dh + dy[t]
        h_prev = h[t]
        dh_hat = dh * z[t]
        dz = dh * (h_hat[t] - h_prev)
        dc = dh_hat * (1.0 - h_hat[t] * h_hat[t])  # at ĥ's pre-activation
        dp_r = dc * Uh[t] * r[t] * (1.0 - r[t])
        dp[t] = np.concatenate([dp_r, dc], axis=-1)
        dq[t] = np.concatenate([dp_r, dc * r[t]], axis=-1)

        if variant == "block":  # each block value fed H/g units: sum their gradients
            z_k = z[t][:, ::bs]
            dz_k = dz.reshape(B, K, bs).sum(axis=-1)
        else:
            z_k, dz_k = z[t], dz
        # z_k > 0 exactly where BN(a, s) > 0: tanh of a positive double is positive.
        da_hat[t] = np.where(z_k > 0, dz_k * (1.0 - z_k * z_k), 0.0)
        if batch_stats:
            g_, n_ = da_hat[t], n_hat[t]
            da[t] = inv_std[t] * (g_ - g_.mean(axis=0) - n_ * (g_ * n_).mean(axis=0))
        else:
            da[t] = inv_std[t] * da_hat[t]

        if variant == "full":
            du[t] = da[t]
        else:
            dz_lr = da[t] @ params.W_z if variant == "lowrank" else da[t]
            du[t] = dz_lr * (z_lr[t] > 0)  # relu': z_lr > 0 exactly where its input is
        dh = dh * (1.0 - z[t]) + dq[t] @ params.U_rh + du[t] @ U_zh

    D = x.shape[2]
    flat_x = x.reshape(T * B, D)
    h_prev_all = h[:-1].reshape(T * B, H)
    flat_dp = dp.reshape(T * B, 2 * H)
    flat_du = du.reshape(T * B, du.shape[-1])
    flat_da = da.reshape(T * B, K)
    grads = dict(
        W_rh=flat_dp.T @ flat_x,
        U_rh=dq.reshape(T * B, 2 * H).T @ h_prev_all,
        b_rh=flat_dp.sum(axis=0),
    )
    if batch_stats:  # the output does not depend on the running statistics, nor on b_z (see forward)
        d_rm = np.zeros(K, dt)
        d_rv = np.zeros(K, dt)
        d_bz = np.zeros(H, dt)
    else:
        d_bz = flat_da.sum(axis=0)
        d_rm = -d_bz
        if params.norm == "folded":
            d_rv = np.zeros(K, dt)
        else:  # d n_hat / d var = -(a - mean) / 2 (var + eps)^(3/2) = -n_hat * inv_std^2 / 2
            # inv_std is the same at every step here; recompute it rather than read step 0, which T = 0 lacks
            d_rv = -0.5 / (params.running_var + params.eps) * (da_hat * n_hat).reshape(T * B, K).sum(axis=0)
    if variant == "full":
        grads.update(W_z=flat_du.T @ flat_x, U_z=flat_du.T @ h_prev_all, b_z=d_bz)
    else:
        grads.update(W_z_lr=flat_du.T @ flat_x, U_z_lr=flat_du.T @ h_prev_all, b_z_lr=flat_du.sum(axis=0))
        if variant == "lowrank":
            grads.update(W_z=flat_da.T @ z_lr.reshape(T * B, z_lr.shape[-1]), b_z=d_bz)
    grads.update(running_mean=d_rm, running_var=d_rv)
    return gradients(params, grads, dp @ params.W_rh + du @ W_zx, dh)


def z_sparsity(cache: CCGRUCache, axis=None):
    """Fraction of update-gate entries that are exactly zero (units a conditional fast path may skip).

    ``axis=None`` gives one number over all (T, B, H) entries; ``axis=(1, 2)`` one per step, etc.
    """
    return np.mean(cache.z == 0, axis=axis)


def update_running_stats(params, cache: CCGRUCache):
    """``params`` with the running statistics ``forward`` computed (a no-op outside training mode)."""
    _check_params(params)
    check_cache(cache, CCGRUCache, params, {"D": params.input_size, "H": params.hidden_size, "K": params.gate_width,
                                            "g": getattr(params, "g", 0)}, present={"z_lr": params.variant != "full"})
    mean, var = cache.running_mean.copy(), cache.running_var.copy()  # the new params' own: frozen, then kept
    frozen(mean, var)
    return params.replace(running_mean=mean, running_var=var)


def fold_normalization(params):
    """Fold the inference-mode normalisation into the weights; returns params with ``norm="folded"``.

    With ``inv = 1/sqrt(running_var + eps)`` (positive), inference computes
    ``BN(a, s) = inv * (a - running_mean) + s``. Full and low-rank: scale every row of the z weights that
    produce ``a`` by ``inv`` and set ``b_z <- inv * (b_z - running_mean)``, ``running_mean <- 0``. Block:
    ``a = relu(u)`` and ``inv * relu(u) = relu(inv * u)`` because ``inv > 0``, so the bottleneck rows are
    scaled instead; ``b_z`` is fixed at 0 there, so the offset stays as ``running_mean <- inv * running_mean``.
    ``running_var`` is set to ones (unused when folded); ``s`` is kept as the scalar shift. The result
    computes the *inference-mode* function of ``params`` (training-mode batch statistics are not an affine
    map), in either mode. Folding folded params returns them unchanged.
    """
    _check_params(params)
    if params.norm == "folded":
        return params
    inv = 1.0 / np.sqrt(params.running_var + params.eps)
    col = inv[:, None]
    if params.variant == "full":
        new = dict(W_z=col * params.W_z, U_z=col * params.U_z, b_z=inv * (params.b_z - params.running_mean))
    elif params.variant == "lowrank":
        new = dict(W_z=col * params.W_z, b_z=inv * (params.b_z - params.running_mean))
    else:
        new = dict(W_z_lr=col * params.W_z_lr, U_z_lr=col * params.U_z_lr, b_z_lr=inv * params.b_z_lr)
    running_mean = inv * params.running_mean if params.variant == "block" else np.zeros_like(params.running_mean)
    return params.replace(
        **new, running_mean=running_mean, running_var=np.ones_like(params.running_var), norm="folded"
    )
