r"""Workloads for ``refrnn bench``: why N stacked recurrent layers cost more than M MLP layers.

The question: why N stacked recurrent layers cost more than M per-step MLP layers of the same width,
and whether running the recurrent layers as a wavefront (every cell of an anti-diagonal l + t = k at
once) closes the gap. One workload per (T, B, N), ``deep-T{T}-B{B}-N{N}``, for N = M in {1, 2, 4, 8},
T in {50, 200}, B in {1, 64}; width H = 256 for every layer and the input (D = H, so layer 0 is like the
others), float32. Candidates, all over the same seeded data:

* ``wavefront`` (the subject): :func:`refrnn.jit.wavefront.forward` with its default policy: the
  cells of a diagonal one after the other, each product on every core BLAS uses;
* ``wavefront, cells side by side (threads=2)``: the cells of a diagonal in a ``prange``, each
  product from its own thread (what the wavefront is meant to buy; it loses on 2 cores, see
  :mod:`refrnn.jit.wavefront`);
* ``layer by layer``: :func:`refrnn.jit.gru.forward_inference` for each layer in turn (its input
  products one GEMM over all T*B rows, then T dependent steps);
* ``MLP, M layers over T*B rows``: :func:`refrnn.layers.mlp.forward`, M dense layers H -> H (tanh, the last
  linear), one product per layer over all T*B rows. It computes something else (no recurrence),
  so its ``.twin`` is the same head written as plain products: the output check compares with that.

Counting (GRU, reset="after"; multiply-adds as 2 FLOPs)::

    critical path       layer by layer T*N dependent steps;  wavefront T+N-1 diagonals;  MLP M products
    FLOPs per layer     GRU 2*T*B*3H*(D+H) = 12*T*B*H^2 (D = H)      dense 2*T*B*H^2

so one recurrent layer does 6x the products of one dense layer of the same width (three gates, each
with an input and a recurrent product), and does them as T dependent steps of B rows each, where
the dense layer does one product of T*B rows. The notes of each workload print both counts.

Run one alone with ``refrnn bench --only deep-T50-B1-N4``.
"""

from __future__ import annotations

import numpy as np

from ..registry import DEEP_GRID, DEEP_LAYERS, DEEP_SIZES, DEEP_WIDTH, Case, data, sizes_for, workload

H = DEEP_WIDTH  # every layer's width, and the input's
LAYERS = DEEP_LAYERS
GRID = DEEP_GRID  # (T, B)
SUBJECT = "wavefront"
SIDE_BY_SIDE = "wavefront, cells side by side (threads=2)"
LAYER_BY_LAYER = "layer by layer (njit GRU per layer)"
MLP = "MLP, M layers over T*B rows"


def plain_mlp(head, x):
    """The head of :func:`refrnn.layers.mlp.forward` as plain products: the MLP candidate's twin."""
    T, B, _ = x.shape
    a = x.reshape(T * B, -1)
    for p in head:
        a = a @ p.W.T + p.b
        if p.activation == "tanh":
            a = np.tanh(a)
    return (a.reshape(T, B, -1),)


def flop_counts(T: int, B: int, D: int, H: int, N: int) -> tuple[float, float]:
    """``(recurrent, mlp)``: FLOPs of N GRU layers and of M = N dense layers of width H over T*B rows."""
    gru = 2.0 * T * B * 3 * H * ((D + H) + (N - 1) * 2 * H)
    return gru, 2.0 * T * B * H * (D + (N - 1) * H)


def _case(scale: str, T: int, B: int, N: int) -> Case:
    from ...layers import mlp
    from ...cells import gru
    from ...jit import gru as fast
    from ...jit import wavefront

    s = sizes_for(scale, DEEP_SIZES[f"T{T}_B{B}"], dict(T=4, B=min(B, 3), D=6, H=8))
    T_, B_, D_, H_ = s["T"], s["B"], s["D"], s["H"]
    rng, x = data(D_, H_, T_, B_)
    layers = tuple(gru.init(D_ if l == 0 else H_, H_, rng=rng, dtype=np.float32) for l in range(N))
    head = mlp.init((D_,) + (H_,) * N, rng=rng, dtype=np.float32)
    prepared = wavefront.prepare(layers)
    per_layer = [fast.prepare(p) for p in layers]

    def layer_by_layer():
        y, states = x, []
        for p, prep in zip(layers, per_layer):
            y, h_T = fast.forward_inference(p, y, prepared=prep)
            states.append(h_T)
        return y, tuple(states)

    def run_mlp():
        return mlp.forward(head, x)

    run_mlp.twin = lambda: plain_mlp(head, x)
    cands = {SUBJECT: lambda: wavefront.forward(layers, x, prepared=prepared)}
    cands[SIDE_BY_SIDE] = lambda: wavefront.forward(layers, x, prepared=prepared, threads=2)
    cands[LAYER_BY_LAYER] = layer_by_layer
    cands[MLP] = run_mlp
    policy = "in turn, each product on every core BLAS uses"
    f_rnn, f_mlp = flop_counts(T_, B_, D_, H_, N)
    notes = (
        f"critical path: layer by layer {T_ * N} dependent steps (T*N), wavefront {T_ + N - 1} diagonals (T+N-1): "
        f"{T_ * N / (T_ + N - 1):.2f}x shorter; MLP: {N} products of {T_ * B_} rows",
        f"a diagonal holds at most min(N, T) = {min(N, T_)} cells (fewer on the first and last N-1); "
        f"the subject runs them {policy}",
        f"FLOPs: {N} GRU layers {f_rnn / 1e9:.3g} GFLOP, {N} dense layers {f_mlp / 1e9:.3g} GFLOP ({f_rnn / f_mlp:.1f}x)",
    )
    return Case({**s, "N": N}, cands, SUBJECT, notes=notes)


def _register(T: int, B: int, N: int) -> None:
    name = f"deep-T{T}-B{B}-N{N}"
    @workload(name, f"Deep RNN, N={N} GRU layers vs M={N} MLP layers, T={T}, B={B}, H={H} (float32)")
    def build(scale):
        return _case(scale, T, B, N)


for _T, _B in GRID:
    for _N in LAYERS:
        _register(_T, _B, _N)

NAMES = tuple(f"deep-T{T}-B{B}-N{N}" for T, B in GRID for N in LAYERS)
