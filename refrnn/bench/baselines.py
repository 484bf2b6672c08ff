"""What ``refrnn bench`` compares the fast paths against: plain NumPy loops, ``torch.nn``, the products alone.

* other implementations: a straightforward NumPy loop (what one writes without a fast path) and
  ``torch.nn`` with ``torch.set_num_threads`` equal to the threads BLAS and Numba use;
* the GEMM bound's measurement: the T per-step products ``h @ W_h.T`` of a workload, through the BLAS
  call the fast path makes, and nothing else (:func:`recurrent_products`).
"""

from __future__ import annotations

import os

import numpy as np

from ..cells import gru, lstm
from ..cells._common import sigmoid
from .registry import SEED

# torch.nn.GRU / LSTM parameter names and the refrnn fields they hold (both use PyTorch's gate order).
TORCH_FIELDS = (("weight_ih_l0", "W_x"), ("weight_hh_l0", "W_h"), ("bias_ih_l0", "b_x"), ("bias_hh_l0", "b_h"))


def numpy_gru(p: gru.GRUParams, x: np.ndarray, h0: np.ndarray):
    """A straightforward NumPy GRU (reset="after") for inference: what one writes without a fast path."""
    H = p.hidden_size
    ax = x @ p.W_x.T + p.b_x
    y = np.empty((x.shape[0], x.shape[1], H), x.dtype)
    h = h0
    for t in range(x.shape[0]):
        ah = h @ p.W_h.T + p.b_h
        r = sigmoid(ax[t, :, :H] + ah[:, :H])
        z = sigmoid(ax[t, :, H : 2 * H] + ah[:, H : 2 * H])
        n = np.tanh(ax[t, :, 2 * H :] + r * ah[:, 2 * H :])
        h = (1 - z) * n + z * h
        y[t] = h
    return y, h


def numpy_lstm(p: lstm.LSTMParams, x: np.ndarray, h0: np.ndarray, c0: np.ndarray):
    """A straightforward NumPy LSTM for inference."""
    H = p.hidden_size
    ax = x @ p.W_x.T + (p.b_x + p.b_h)
    y = np.empty((x.shape[0], x.shape[1], H), x.dtype)
    h, c = h0, c0
    for t in range(x.shape[0]):
        a = ax[t] + h @ p.W_h.T
        i, f, o = sigmoid(a[:, :H]), sigmoid(a[:, H : 2 * H]), sigmoid(a[:, 3 * H :])
        c = f * c + i * np.tanh(a[:, 2 * H : 3 * H])
        h = o * np.tanh(c)
        y[t] = h
    return y, (h, c)


def bench_threads() -> int:
    """The thread count every candidate gets: what OpenBLAS and Numba use by default (the CPUs
    this process may run on, unless OPENBLAS_NUM_THREADS / OMP_NUM_THREADS say otherwise)."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def torch_or_none(threads: int):
    """torch with ``threads`` intra-op threads, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(threads)
    return torch


def torch_note(torch_bar: str) -> tuple[str, ...]:
    """The note a workload carries when torch is missing and its bar ``torch_bar`` went unmeasured."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return (f"torch is not installed: the bar {torch_bar} was not measured (pip install 'refrnn[torch]')",)
    return ()


def torch_module(torch, kind: str, p):
    """``torch.nn.<kind>`` ("GRU" or "LSTM") of the sizes of the refrnn params ``p``, its weights
    copied from them (through writable copies: torch warns on wrapping a read-only array)."""
    module = getattr(torch.nn, kind)(p.input_size, p.hidden_size)
    with torch.no_grad():
        for name, field in TORCH_FIELDS:
            getattr(module, name).copy_(torch.from_numpy(np.array(getattr(p, field))))
    return module


def torch_rnn(torch, kind: str, p, x: np.ndarray, state0):
    """A zero-argument call of ``torch.nn.<kind>`` ("GRU" or "LSTM") over ``x`` from ``state0`` (an
    array, or the LSTM's pair), in inference mode, its weights copied from the refrnn params ``p``."""
    module = torch_module(torch, kind, p)
    tx = torch.from_numpy(x)
    ts = tuple(torch.from_numpy(s)[None] for s in state0) if isinstance(state0, tuple) else torch.from_numpy(state0)[None]

    def run():
        with torch.inference_mode():
            return module(tx, ts)

    return run


def recurrent_products(T, B, *W_Ts, rowcast=False):
    """T steps of the products ``h @ W_T`` (one per matrix in ``W_Ts``, h random with B rows), through
    the BLAS call the fast path makes (with ``rowcast``, the compiled kernel of
    :mod:`refrnn.jit._rowcast`), and nothing else."""
    from ._products import products_only

    rng = np.random.default_rng(SEED)
    work = [(rng.uniform(-1, 1, (B, W_T.shape[0])).astype(W_T.dtype), W_T, np.empty((B, W_T.shape[1]), W_T.dtype)) for W_T in W_Ts]

    def run():
        for h, W_T, out in work:
            products_only(h, W_T, out, T, rowcast)

    return run


def rowcast_products(T, B, W, *W_Ts):
    """The candidate ``ROWCAST`` of a forward workload whose subject takes the compiled step product
    (:func:`refrnn.jit._rowcast.applies`, asked about the float32 weight ``W`` at batch ``B``): a dict
    with it, or an empty one."""
    from ..jit import _rowcast

    if not _rowcast.applies(np.float32, B, W.size):
        return {}
    return {ROWCAST: recurrent_products(T, B, *W_Ts, rowcast=True)}


ROWCAST = "rowcast: recurrent products alone"


def gemm_flops(T, B, D, H, gates):
    """FLOPs of a forward's products: the input projection (T*B x D x gates*H) and T recurrent
    products (B x H x gates*H)."""
    return 2.0 * T * B * gates * H * (D + H)


def torch_train(torch, kind: str, p, x: np.ndarray, state0, dy: np.ndarray):
    """A zero-argument training step of ``torch.nn.<kind>`` with autograd: forward over ``x`` from
    ``state0``, then backward of the upstream gradient ``dy`` on ``y``. The input and the initial
    state require gradients, so torch computes what refrnn's backward returns (weights, dx, dstate0).
    Like the refrnn candidates of the training workloads, a step keeps its output ``y`` alive until
    the next step's forward has returned."""
    module = torch_module(torch, kind, p)
    tx = torch.from_numpy(np.array(x)).requires_grad_(True)
    states = state0 if isinstance(state0, tuple) else (state0,)
    ts = tuple(torch.from_numpy(np.array(s))[None].requires_grad_(True) for s in states)
    tdy = torch.from_numpy(dy)
    held = [None]

    def run():
        for w in (*module.parameters(), tx, *ts):
            w.grad = None
        y, _ = module(tx, ts if isinstance(state0, tuple) else ts[0])
        y.backward(tdy)
        held[0] = y
        return module

    return run


def products(*gemms):
    """The products of a step alone, through the BLAS call the fast paths make: ``gemms`` are
    ``(M, K, N, count, a_transposed)`` (``count`` products (M x K) @ (K x N); ``a_transposed``: the
    left operand is the transpose of a C-ordered (K, M) array, as in a weight gradient ``da.T @ x``).
    Operands are seeded random float32 arrays. ``run()`` returns ``(the last product,)``; its ``.twin``
    computes that product with NumPy (what ``refrnn bench``'s tests compare it with)."""
    from ._products import products_only

    rng = np.random.default_rng(SEED)
    work = []
    for M, K, N, count, a_transposed in gemms:
        a = rng.uniform(-1, 1, (K, M)).astype(np.float32).T if a_transposed else rng.uniform(-1, 1, (M, K)).astype(np.float32)
        work.append((a, rng.uniform(-1, 1, (K, N)).astype(np.float32), np.empty((M, N), np.float32), count))

    def run():
        for a, b, out, count in work:
            products_only(a, b, out, count, False)
        return (work[-1][2],)

    run.twin = lambda: (work[-1][0] @ work[-1][1],)
    return run


def training_gemms(cell: str, T: int, B: int, D: int, H: int, *, reset: str = "after", P: int = 0):
    """``(forward, backward)`` lists of the GEMMs of one training step, for :func:`products`: the
    forward's in the "batched" order (one input GEMM over T*B rows, T recurrent products), the
    backward's as :mod:`refrnn.jit._backward` makes them (T per-step products of the recurrence, one
    GEMM over T*B rows per weight gradient and one for dx)."""
    TB = T * B
    if cell == "gru":
        if reset == "after":
            forward = [(TB, D, 3 * H, 1, False), (B, H, 3 * H, T, False)]
            backward = [(B, 3 * H, H, T, False), (3 * H, TB, D, 1, True), (3 * H, TB, H, 1, True), (TB, 3 * H, D, 1, False)]
        else:
            forward = [(TB, D, 3 * H, 1, False), (B, H, 2 * H, T, False), (B, H, H, T, False)]
            backward = [
                (B, H, H, T, False), (B, 2 * H, H, T, False),
                (2 * H, TB, D, 1, True), (H, TB, D, 1, True), (2 * H, TB, H, 1, True), (H, TB, H, 1, True),
                (TB, 2 * H, D, 1, False), (TB, H, D, 1, False),
            ]
        return forward, backward
    Pr = P or H
    forward = [(TB, D, 4 * H, 1, False), (B, Pr, 4 * H, T, False)]
    backward = [(B, 4 * H, Pr, T, False), (4 * H, TB, D, 1, True), (4 * H, TB, Pr, 1, True), (TB, 4 * H, D, 1, False)]
    if P:
        forward.append((B, H, P, T, False))
        backward += [(B, P, H, T, False), (P, TB, H, 1, True)]
    return forward, backward


def gemm_list_flops(gemms) -> float:
    return sum(2.0 * M * K * N * count for M, K, N, count, _ in gemms)
