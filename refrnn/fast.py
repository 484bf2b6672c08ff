"""The one place a backend and an algorithm are chosen for a cell.

Every backend of a cell has the same contract::

    y, state_T, cache = forward(params, x, state0, algorithm=...)    cache for backward, or None
    y, state_T = forward_inference(params, x, state0, algorithm=...)
    grads, dx, dstate0 = backward(params, cache, dy, dstate_T)       where the backend has one

Backends: ``"reference"`` (:mod:`refrnn.cells`, NumPy, every cell; the ground truth), ``"jit"``
(:mod:`refrnn.jit`, numba on the CPU) and ``"cuda"`` (:mod:`refrnn.cuda`, numba-cuda on a GPU).
``algorithm`` is the backend's own choice of order or product (``"auto"``, ``"batched"``, ``"fused"``
for the jit GRU/LSTM; ``"sparse"``, ``"dense"``, ... for the jit conditional GRU; ``"tiled"``,
``"cublas"``, ``"auto"`` on the GPU); None takes the backend's default. Where a backend has no
``forward_inference`` (the reference) or no ``backward``, this module says so or falls back as
documented below; it never imports a backend before it is asked for.

    >>> from refrnn import fast, gru
    >>> p = gru.init(4, 8, rng=0)
    >>> fast.module("gru", backend="reference") is gru
    True
"""

from __future__ import annotations

import importlib

from ._checks import one_of

BACKENDS = ("reference", "jit", "cuda")
CELLS = ("gru", "lstm", "sru", "ccgru")

# (cell, backend) -> module; the pairs that exist (the GPU conditional GRU is the block variant only).
_MODULES = {
    **{(cell, "reference"): f"refrnn.cells.{cell}" for cell in CELLS},
    **{(cell, "jit"): f"refrnn.jit.{cell}" for cell in CELLS},
    **{(cell, "cuda"): f"refrnn.cuda.{cell}" for cell in CELLS},
}


def module(cell: str, backend: str = "jit"):
    """The module that runs ``cell`` ("gru", "lstm", "sru", "ccgru") on ``backend``."""
    one_of("cell", cell, CELLS)
    one_of("backend", backend, BACKENDS)
    return importlib.import_module(_MODULES[cell, backend])


def cell_of(params) -> str:
    """The cell name of a parameter container (through :func:`refrnn.cells.module_for`)."""
    from .cells import module_for

    return module_for(params).__name__.rsplit(".", 1)[-1]


def _kw(algorithm):
    return {} if algorithm is None else {"algorithm": algorithm}


def forward(params, x, state0=None, *, backend: str = "jit", algorithm: str | None = None):
    """``(y, state_T, cache)`` of the cell of ``params`` on ``backend``."""
    mod = module(cell_of(_host(params)), backend)
    if backend == "reference":
        _no_algorithm(algorithm)
        return mod.forward(params, x, state0)
    return mod.forward(params, x, state0, **_kw(algorithm))


def forward_inference(params, x, state0=None, *, backend: str = "jit", algorithm: str | None = None):
    """``(y, state_T)`` of the cell of ``params`` on ``backend``; the reference keeps its cache and drops it."""
    mod = module(cell_of(_host(params)), backend)
    if backend == "reference":
        _no_algorithm(algorithm)
        return mod.forward(params, x, state0)[:2]
    return mod.forward_inference(params, x, state0, **_kw(algorithm))


def backward(params, cache, dy, dstate_T=None, *, backend: str = "jit"):
    """``(grads, dx, dstate0)`` from ``backend``'s backward: compiled for every jit cell (GRU, LSTM,
    SRU, the conditional GRU in training mode), whose caches are the reference's, so either forward's
    cache goes to either backward. On the GPU only the SRU has a backward; the other GPU cells are
    inference only and say so. A jit cell without a backward of its own would hand the cache to the
    reference's."""
    cell = cell_of(_host(params))
    mod = module(cell, backend)
    if not hasattr(mod, "backward"):
        if backend == "cuda":
            raise ValueError(f"backend: refrnn.cuda.{cell} has no backward (inference only); use backend='jit' or 'reference'")
        mod = module(cell, "reference")
    return mod.backward(params, cache, dy, dstate_T)


def _host(params):
    """The host container behind GPU-uploaded params (they carry it as ``.host``)."""
    host = getattr(params, "host", None)
    return params if host is None or type(params).__name__ != "DeviceParams" else host


def _no_algorithm(algorithm):
    if algorithm is not None:
        raise ValueError(f"algorithm: the reference has one algorithm, got {algorithm!r}")
