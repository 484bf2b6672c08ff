r"""The character-level language model: input -> one GRU-family layer -> softmax over the 27 symbols.

Equations (``c_t`` the symbol id at step t, ``V = 27``)::

    x_t = onehot(c_t)            (D = V; the paper's input)        or   x_t = E[c_t]   (embedding, D = d)
    h_t = cell(x_t, h_{t-1})     refrnn.cells.gru (dense) or refrnn.cells.ccgru (block / lowrank / full z)
    o_t = W_y h_t + b_y          logits (V,)
    p_t = softmax(o_t)
    L   = -1/(T B) sum_{t,b} log2 p_t[c_{t+1}]          bits per character (BPC)

Training runs the cell's compiled forward and backward (:func:`cell_paths`, ``backend="jit"``,
the default; ``backend="reference"`` runs the NumPy reference cells instead). Backward (hand-derived, no autograd): ``dL/do_t = (p_t - onehot(c_{t+1})) / (T B ln 2)``;
``dW_y = sum do_t h_t^T``, ``db_y = sum do_t``, ``dL/dh_t = W_y^T do_t`` into the cell's own
:func:`backward`; with an embedding, ``dE[c] += dL/dx_t`` for every step that read row ``c``
(``np.add.at``). A one-hot input has no parameters of its own: ``W_x`` of the cell *is* the
embedding.

The conditional cells train with batch statistics (``mode="train"``) and carry running statistics,
which :func:`loss_and_grads` returns updated; they are not trained by the optimiser (:func:`trainable`).

Shapes: ids (T, B) int; targets (T, B); h0 (B, H); logits (T, B, V). Time-major like the cells.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from ..cells import ccgru, gru, module_for
from ..cells._common import Params
from .data import V

KINDS = ("gru", "block", "lowrank", "full")  # dense GRU, then the ccgru variants
_NOT_TRAINED = ("running_mean", "running_var")


@dataclasses.dataclass(frozen=True)
class LM:
    """Language-model parameters: the cell's, the output layer's, and an optional embedding ``E``."""

    cell: Params
    W_y: np.ndarray  # (V, H)
    b_y: np.ndarray  # (V,)
    E: np.ndarray | None = None  # (V, d) or None: one-hot input

    @property
    def kind(self) -> str:
        return "gru" if isinstance(self.cell, gru.GRUParams) else self.cell.variant

    @property
    def dtype(self):
        return self.W_y.dtype

    @property
    def hidden_size(self) -> int:
        return self.cell.hidden_size

    def replace(self, **changes) -> "LM":
        return dataclasses.replace(self, **changes)


def init(kind: str, hidden: int, *, g: int | None = None, s: float = 0.0, embed: int = 0, rng=None,
         dtype=np.float32) -> LM:
    """A fresh model. ``kind``: "gru" (dense), "block" (``g`` blocks), "lowrank" (rank ``g``), "full".

    ``embed = 0`` feeds one-hot vectors (the paper); ``embed = d > 0`` an embedding of width d.
    Output layer: Glorot-uniform ``W_y``, zero ``b_y``; the cells use their own initialisations.
    """
    if kind not in KINDS:
        raise ValueError(f"kind: unknown cell {kind!r}; expected one of {', '.join(map(repr, KINDS))}")
    if isinstance(embed, bool) or not isinstance(embed, (int, np.integer)) or embed < 0:
        raise ValueError(f"embed: expected a non-negative integer (0: one-hot input), got {embed!r}")
    rng = np.random.default_rng(rng)
    D = embed or V
    if kind == "gru":
        if g is not None:
            raise ValueError(f"g: the dense GRU takes no g, got g={g!r}")
        cell = gru.init(D, hidden, rng=rng, dtype=dtype)
    else:
        cell = ccgru.init(D, hidden, variant=kind, g=g, s=s, rng=rng, dtype=dtype)
    limit = math.sqrt(6.0 / (V + hidden))
    W_y = rng.uniform(-limit, limit, (V, hidden)).astype(dtype)
    E = rng.standard_normal((V, embed)).astype(dtype) if embed else None
    return LM(cell, W_y, np.zeros(V, dtype), E)


def trainable(model: LM) -> dict[str, np.ndarray]:
    """The arrays an optimiser steps, by name ("cell.W_rh", "W_y", "E", ...)."""
    out = {f"cell.{k}": v for k, v in model.cell.arrays().items() if k not in _NOT_TRAINED}
    out.update(W_y=model.W_y, b_y=model.b_y)
    if model.E is not None:
        out["E"] = model.E
    return out


def with_trainable(model: LM, arrays: dict[str, np.ndarray]) -> LM:
    """``model`` with the arrays named as in :func:`trainable` replaced."""
    cell = model.cell.replace(**{k[5:]: v for k, v in arrays.items() if k.startswith("cell.")})
    rest = {k: v for k, v in arrays.items() if not k.startswith("cell.")}
    return model.replace(cell=cell, **rest)


def check_ids(name: str, ids, shape=None) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer symbol ids, got dtype {ids.dtype}")
    if ids.ndim != 2 or (shape is not None and ids.shape != shape):
        want = "(T, B)" if shape is None else str(shape)
        raise ValueError(f"{name}: expected shape {want}, got shape {ids.shape}")
    if ids.size and (ids.min() < 0 or ids.max() >= V):
        raise ValueError(f"{name}: symbol ids must lie in [0, {V}), got range [{ids.min()}, {ids.max()}]")
    return ids


def inputs(model: LM, ids: np.ndarray) -> np.ndarray:
    """x (T, B, D): one-hot rows, or embedding rows."""
    if model.E is not None:
        return model.E[ids]
    return np.eye(V, dtype=model.dtype)[ids]


def log_softmax(o: np.ndarray) -> np.ndarray:
    m = o.max(axis=-1, keepdims=True)
    shifted = o - m
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def bits(logits: np.ndarray, targets: np.ndarray) -> float:
    """Mean bits per character of ``targets`` under ``softmax(logits)``, accumulated in float64."""
    lp = log_softmax(logits.astype(np.float64))
    picked = np.take_along_axis(lp, targets[..., None].astype(np.intp), axis=-1)
    return float(-picked.mean() / math.log(2.0))


BACKENDS = ("jit", "reference")


def cell_paths(cell, backend: str = "jit"):
    """``(forward, backward)`` of ``cell`` in training mode on ``backend``.

    ``"jit"`` (the default): the compiled paths, :func:`refrnn.jit.gru.forward` with its backward
    through :func:`refrnn.fast.backward` (the jit GRU's own when it has one, else the reference's on
    the same cache), and :func:`refrnn.jit.ccgru.forward_train` / :func:`refrnn.jit.ccgru.backward`,
    the compiled twins of the reference's (float64 equal within 1e-10). ``"reference"``: the NumPy
    reference cells.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    if backend == "reference":
        mod = module_for(cell)
        return mod.forward, mod.backward
    from .. import fast

    if isinstance(cell, gru.GRUParams):
        return (lambda p, x, h0: fast.forward(p, x, h0, backend="jit"),
                lambda p, cache, dy: fast.backward(p, cache, dy, backend="jit"))
    from ..jit import ccgru as jit_ccgru

    return jit_ccgru.forward_train, jit_ccgru.backward


def _matmul(backend: str):
    """The product of the output layer: on the jit backend through the kernels' own BLAS (one thread
    pool for the whole step, see :mod:`refrnn.jit._onepool`), else NumPy's ``@``."""
    if backend == "jit":
        from ..jit._onepool import product

        return product
    return lambda a, b: a @ b


def loss_and_grads(model: LM, ids, targets, h0=None, *, backend: str = "jit"):
    """BPC of predicting ``targets`` from ``ids``, and its gradient, through the cell's compiled
    training paths (``backend="jit"``, the default) or the NumPy reference (``"reference"``).

    Returns ``(bpc, grads, h_T, model_after)``: ``grads`` a dict named as :func:`trainable`;
    ``model_after`` is ``model`` with the conditional cell's running statistics updated by this
    forward pass (the same object for the dense GRU).
    """
    ids = check_ids("ids", ids)
    targets = check_ids("targets", targets, ids.shape)
    T, B = ids.shape
    forward, backward = cell_paths(model.cell, backend)
    mm = _matmul(backend)
    x = inputs(model, ids)
    y, h_T, cache = forward(model.cell, x, h0)
    H = y.shape[-1]
    y2 = y.reshape(T * B, H)
    logits = (mm(y2, model.W_y.T) + model.b_y).reshape(T, B, V)
    lp = log_softmax(logits)
    picked = np.take_along_axis(lp, targets[..., None].astype(np.intp), axis=-1)
    bpc = float(-picked.astype(np.float64).mean() / math.log(2.0))

    do = np.exp(lp)
    _sub_onehot(do, targets)
    do *= 1.0 / (T * B * math.log(2.0))
    do2 = do.reshape(T * B, V)
    grads = {
        "W_y": mm(do2.T, y2),
        "b_y": do2.sum(axis=0),
    }
    dy = mm(do2, model.W_y).reshape(T, B, H)
    cell_grads, dx, _ = backward(model.cell, cache, dy)
    grads.update({f"cell.{k}": v for k, v in cell_grads.arrays().items() if k not in _NOT_TRAINED})
    if model.E is not None:
        dE = np.zeros_like(model.E)
        np.add.at(dE, ids.ravel(), dx.reshape(T * B, -1))
        grads["E"] = dE
    after = model
    if model.kind != "gru":
        after = model.replace(cell=ccgru.update_running_stats(model.cell, cache))
    return bpc, grads, h_T, after


def _sub_onehot(p: np.ndarray, targets: np.ndarray) -> None:
    """p[t, b, targets[t, b]] -= 1, in place (each (t, b) is hit once, so fancy indexing is exact)."""
    T, B = targets.shape
    tt, bb = np.meshgrid(np.arange(T), np.arange(B), indexing="ij")
    p[tt, bb, targets] -= 1.0


def gate_preactivation(cell, cache) -> np.ndarray:
    """The normalised pre-activation ``a`` (T, B, K) of a conditional cell's forward, bias included.

    ``full``: ``W_z x + U_z h + b_z``; ``lowrank``: ``W_z z_lr + b_z``; ``block``: ``z_lr``. In training
    mode :func:`refrnn.cells.ccgru.forward` leaves ``b_z`` out of its arithmetic (it cancels against the
    batch mean), but the running mean it stands in for includes it, so it is added back here.
    """
    if cell.variant == "block":
        return np.asarray(cache.z_lr)
    if cell.variant == "lowrank":
        return cache.z_lr @ cell.W_z.T + cell.b_z
    return cache.x @ cell.W_z.T + cache.h[:-1] @ cell.U_z.T + cell.b_z


def inference_cell(model: LM):
    """The cell as inference runs it: running statistics for the conditional cells."""
    if model.kind == "gru":
        return model.cell
    return model.cell.replace(mode="inference")
