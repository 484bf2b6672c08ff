r"""Fast LSTM forward (numba), the twin of :mod:`refrnn.cells.lstm`: same parameters, same results.

Equations: those of :mod:`refrnn.cells.lstm` (gates i, f, g, o; peepholes and projection when the
parameters have them, both inside the same fused pass), computed in one of two orders::

    "batched"  A_x = x @ W_x.T for all T*B rows at once (one GEMM), then per step one product
               A_h = h_{t-1} @ W_h.T over all four gates, then one fused pass over the B*H units.
    "fused"    per step the single product [x_t, h_{t-1}] @ [W_x | W_h].T (the weights side by
               side: every LSTM gate adds its input and recurrent parts, so nothing stays outside it).

``algorithm="auto"`` (the default) picks one by the rule measured with ``refrnn bench``
(:mod:`refrnn.jit._strategy`), or takes the algorithm of the ``prepared`` layout passed in.
``strategy=`` is the keyword's former name.

:func:`forward` fills a :class:`refrnn.cells.lstm.LSTMCache`; :func:`backward` consumes one (from
this forward or the reference's, and the reference's backward takes this forward's);
:func:`forward_inference` keeps only the outputs (and two steps of c).

:func:`backward` is :func:`refrnn.cells.lstm.backward` compiled (:mod:`refrnn.jit._backward`),
projection and peepholes included: per step the projection's product if any, one fused element-wise
pass and the product ``da[t] @ W_h``; then one GEMM over all T*B rows per weight gradient and one
for ``dx``, all on the one BLAS numba calls (see there why that matters for a training loop).

A training step (:func:`forward` and :func:`backward`) in float32 where the rule of
:mod:`refrnn.jit._rowcast` holds, for a cell without a projection, makes every product with that
module's compiled kernel instead, the weight gradients and ``dx`` by its blocked :func:`gemm` (one
product ``[x | h_prev].T @ da`` for both weights; ``dx`` over ``W_x`` padded to 16 columns): the
step never calls BLAS, so its products never wait on the other thread pool. Measured at the paper's
size (T=50 B=64 D=27 H=1024, 2 cores, two steps back to back, medians; a slow, noisy day): 0.99-1.15
s against 1.46-1.58 s through BLAS in alternating processes; in ``refrnn bench --only
lstm-train-paper`` 1.48 s against 1.76 s (0.64x torch autograd instead of 0.53x); with a NumPy
output layer between steps (NumPy's own BLAS) 1.31-1.33 s against 1.95-2.25 s. Not always: with
NumPy's reference backward 0.2 s before each training forward, the forward on the kernel took 302 ms
against 198 through BLAS in one run, 213 against 238 in another (144 without that backward). Equal
to the BLAS step within float32 rounding, not bit for bit. With AVX-512 the rule takes weights down
to 48K elements: at T=100 B=32 D=H=256 two steps took 84 ms against 108 through BLAS (torch autograd
93), once the element-wise passes ran in tasks of whole rows (below). On the kernel the backward's
step product reads ``W_h`` packed once into contiguous column panels
(:func:`refrnn.jit._rowcast.packed`) rather than transposing it and every ``da[t]``: the paper-size
backward 290 -> 261 ms on an AVX-512 Xeon, its loop 326 -> 203 ms on Zen 3 (2 cores, medians), the
same bits. On the kernel too, and in either order, the forward's step loop keeps the product's
operand ``[x_t | h_{t-1}].T`` transposed from one step to the next, and each step's element-wise
pass runs over numba's threads in tasks of rows and units (:func:`refrnn.jit._kernels.pass_tasks`)
that also transpose their share of the product and of h_t
(:func:`refrnn.jit._kernels._lstm_epilogue`); the backward's pass is split the same way, each group
of rows summing its own bias and peephole gradients (added up in order at the end, so the bits
depend on the batch, not on the thread count). Tasks of 64 units made every loop of the pass 64
floats long, most of its cost the loops' entries: 5.2 ms of the forward's 100 steps at B=32 H=256
against 2.4 in two groups of whole rows, the backward's 3.2 against 1.5; at the paper's size 22.0
against 11.5 ms and 17.8 against 6.0 over 50 steps. :func:`forward_inference`, which keeps no gates,
runs its pass in the product's own (4H, B) layout with c kept transposed as well, so its steps
transpose nothing but h_t into the output (:func:`refrnn.jit._kernels.lstm_kernel_inference`, the
same bits as the training forward). There the "fused" product reads ``W_x`` and ``W_h`` where they
are (:func:`refrnn.jit._rowcast.product_pair`, the same bits as over ``[W_x | W_h]``), so a call
without ``prepared=`` builds no concatenated weight (17 MB at the paper's size, whose fresh pages
had cost the call about 10 ms in ``refrnn bench``). The training step keeps its cache and the
backward's work arrays for the next call (:mod:`refrnn.jit._buffers`). Measured together in ``refrnn
bench`` (paper size, AVX-512 Xeon, 2 cores, medians of 9, native kernel): training 877 -> 630-677 ms
for two steps (torch autograd 664-715), then 536-565 with the row tasks (torch 640-652); the
inference forward 107 -> 85-87 ms (torch.nn.LSTM 96-100, the recurrent products alone 81-84).

:func:`forward_inference` in float32 with a batch that is a multiple of 16 and a weight of at least
48K elements with AVX-512, 4 MB with AVX2 (:func:`refrnn.jit._rowcast.min_weight`), makes every
product with the compiled kernel of :mod:`refrnn.jit._rowcast` instead of BLAS (the projection's
too), as :mod:`refrnn.jit.gru` explains: at the paper's size 78-84 ms instead of 107-121, ahead of
torch.nn.LSTM's oneDNN primitive; equal to :func:`forward` within float32 rounding, not bit for bit.
With AVX2 (the kernel's 8-lane tile) the rule also asks for a narrow input, 4 D <= P: at the paper's
size on 2 Zen 3 cores the forward took 352 ms instead of 471 (torch 310), a training step 1.10-1.19
s instead of 1.18-1.41 (torch 0.94).

State is the pair ``(h, c)``. Shapes: x (T, B, D); state0 = (h0 (B, P), c0 (B, H)); y (T, B, P); dy (T, B, P);
dstate_T like state0; P = H without a projection.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._checks import float_array, instance
from .._moved import algorithm_keyword
from ..cells import lstm as reference
from ..cells._common import check_cache, frozen, gradients
from ..cells.lstm import LSTMCache, LSTMParams
from . import _backward, _buffers, _kernels, _onepool, _rowcast, _strategy

ALGORITHMS = ("batched", "fused")  # what prepare() builds; forward also takes "auto" (refrnn.jit._strategy)
STRATEGIES = ALGORITHMS  # the former name


@_strategy.former_field_names
class Prepared(NamedTuple):
    """Weights re-arranged once per parameter set for one algorithm (build with :func:`prepare`)."""

    algorithm: str
    bias: np.ndarray  # (4H,) folded bias b_x + b_h
    W_xT: np.ndarray  # (D, 4H) = W_x.T (a view)
    W_hT: np.ndarray  # batched: (P, 4H) = W_h.T (a view); fused: (D+P, 4H) = [W_x | W_h].T
    peepholes: tuple  # (w_ic, w_fc, w_oc), each (H,); zeros for a cell without peepholes
    W_hr: np.ndarray  # (P, H), or (0, H) without a projection
    params: LSTMParams


def prepare(params: LSTMParams, algorithm: str = "batched", *, strategy: str | None = None) -> Prepared:
    """Transpose (views) and, for "fused", concatenate the weights once; pass as ``prepared=``."""
    algorithm = _strategy.prepare_algorithm(params, LSTMParams, algorithm, strategy)
    H, dt = params.hidden_size, params.dtype
    # C order everywhere (no copy when already so): the kernels then always see the same array
    # types, and transposed views are Fortran-ordered, which BLAS reads in place.
    W_x, W_h = np.ascontiguousarray(params.W_x), np.ascontiguousarray(params.W_h)
    bias = params.b_x + params.b_h
    peepholes = tuple(np.zeros(H, dt) if w is None else np.ascontiguousarray(w) for w in (params.w_ic, params.w_fc, params.w_oc))
    W_hr = np.zeros((0, H), dt) if params.W_hr is None else np.ascontiguousarray(params.W_hr)
    if algorithm == "batched":
        W_hT = W_h.T
    else:
        F = np.concatenate([W_x, W_h], axis=1)
        frozen(F)
        W_hT = F.T
    return Prepared(algorithm, bias, W_x.T, W_hT, peepholes, W_hr, params)


def _trains_on_rowcast(params: LSTMParams, B: int) -> bool:
    """Whether a training step (:func:`forward` and :func:`backward`) makes every product with the
    compiled kernel: where :func:`refrnn.jit._rowcast.applies`, for a cell without a projection whose
    4H is a multiple of the kernel's 16 lanes (the weight gradients' width). See the module docstring."""
    return (params.W_hr is None and (4 * params.hidden_size) % _rowcast.LANES == 0
            and _rowcast.applies(params.dtype, B, params.W_h.size, params.input_size, params.output_size))


def _run(params, x, state0, algorithm, prepared, train):
    x, (h0, c0) = reference.check_inputs(params, x, state0)
    T, B, _ = x.shape
    H, P = params.hidden_size, params.output_size
    dt = params.dtype
    rowcast = _trains_on_rowcast(params, B) if train else _rowcast.applies(dt, B, params.W_h.size, params.input_size, P)  # see the module docstring
    kernel = rowcast and params.W_hr is None
    algorithm, prepared = _strategy.algorithm_and_layout(params, algorithm, prepared, prepare, Prepared, B, kernel)
    steps = T if train else 1
    # Training: the whole cache in one block, kept for the next call (see _buffers). Inference: c is
    # a two-slot ring and the gates one step of scratch (see _kernels), in a block of their own.
    shapes = ((T + 1, B, P), (T + 1 if train else 2, B, H), *[(steps, B, H)] * 5,  # i, f, g, o, tanh(c)
              (steps if params.W_hr is not None else 0, B, H))  # o * tanh(c), projection only
    _, hs, cs, *gates, m = _buffers.carved("lstm cache" if train else "lstm inference", dt, *shapes)
    gates = tuple(gates)
    hs[0], cs[0] = h0, c0
    if T * B == 0:  # no step to take: y and the cache are empty, the state stays state0, as in the reference
        return x, hs, cs, gates, (m if params.W_hr is not None else None)
    p = prepared
    xc = np.ascontiguousarray(x)
    if kernel:  # either order, W_x and W_h read where they are (see _kernels.lstm_kernel)
        W_h = np.ascontiguousarray(params.W_h)
        if algorithm == "batched":
            ax = _kernels.forward_inputs(xc.reshape(T * B, -1), p.W_xT, True).reshape(T, B, 4 * H)
            _kernels.lstm_kernel(np.empty((T, B, 0), dt), ax, np.empty((4 * H, 0), dt), W_h, p.bias, p.peepholes, hs, cs, gates)
        elif train:
            _kernels.lstm_kernel(xc, np.empty((T, 0, 4 * H), dt), p.W_xT.T, W_h, p.bias, p.peepholes, hs, cs, gates)
        else:
            _kernels.lstm_kernel_inference(xc, p.W_xT.T, W_h, p.bias, p.peepholes, hs, cs)
    elif prepared.algorithm == "batched":
        x2 = xc.reshape(T * B, -1)
        ax = _kernels.forward_inputs(x2, p.W_xT, rowcast)
        _kernels.lstm_batched(ax.reshape(T, B, 4 * H), p.W_hT, p.bias, p.peepholes, p.W_hr, hs, cs, gates, m, rowcast)
    else:
        _kernels.lstm_fused(xc, p.W_hT, p.bias, p.peepholes, p.W_hr, hs, cs, gates, m, rowcast)
    return x, hs, cs, gates, (m if params.W_hr is not None else None)


def forward(params: LSTMParams, x, state0=None, *, algorithm: str = "auto", prepared: Prepared | None = None,
            strategy: str | None = None):
    """Training forward: ``(y, (h_T, c_T), cache)`` exactly as :func:`refrnn.cells.lstm.forward`."""
    algorithm = algorithm_keyword(algorithm, strategy=strategy)
    x, hs, cs, gates, m = _run(params, x, state0, algorithm, prepared, train=True)
    frozen(hs.base, hs, cs, *gates, *(() if m is None else (m,)))
    return hs[1:], (hs[-1].copy(), cs[-1].copy()), LSTMCache(x, hs, cs, *gates, m)


def forward_inference(params: LSTMParams, x, state0=None, *, algorithm: str = "auto", prepared: Prepared | None = None,
                      strategy: str | None = None):
    """Inference forward: ``(y, (h_T, c_T))``, no cache kept."""
    algorithm = algorithm_keyword(algorithm, strategy=strategy)
    x, hs, cs, _, _ = _run(params, x, state0, algorithm, prepared, train=False)
    return hs[1:], (hs[-1].copy(), cs[x.shape[0] % 2].copy())


def backward(params: LSTMParams, cache: LSTMCache, dy, dstate_T=None):
    """Backprop through time, compiled: ``(grads, dx, (dh0, dc0))`` as :func:`refrnn.cells.lstm.backward`.

    ``dy`` (T, B, P); ``dstate_T`` the pair (dL/dh_T, dL/dc_T) or None (zero); ``grads`` an
    :class:`refrnn.cells.lstm.LSTMParams` with the same optional arrays as ``params``.
    """
    instance("params", params, LSTMParams)
    sizes = {"D": params.input_size, "H": params.hidden_size, "P": params.output_size}
    check_cache(cache, LSTMCache, params, sizes, present={"m": params.W_hr is not None})
    x = cache.x
    T, B, H = cache.i.shape
    D, P, dt = x.shape[2], params.output_size, params.dtype
    dims = {"T": T, "B": B, "H": H, "P": P}
    dy = float_array("dy", dy, ("T", "B", "P" if P != H else "H"), dims, dtype=dt)
    if dstate_T is None:
        dh, dc = reference.zero_state(params, B)
    else:
        dh, dc = (a.copy() for a in reference._state("dstate_T", dstate_T, dims, dt))
    peeps = params.has_peepholes
    project = params.W_hr is not None
    grads = dict(W_x=np.zeros((4 * H, D), dt), W_h=np.zeros((4 * H, P), dt), b_x=np.zeros(4 * H, dt))
    if T * B == 0:  # nothing to propagate: zero gradients, the state's gradient passes through
        optional = ("w_ic", "w_fc", "w_oc", "W_hr")
        grads.update({name: np.zeros_like(getattr(params, name)) for name in optional if getattr(params, name) is not None})
        grads["b_h"] = grads["b_x"].copy()
        return gradients(params, grads, np.zeros((T, B, D), dt), (dh, dc))
    m = cache.m if project else np.empty((0, B, H), dt)
    cached = tuple(_onepool.readonly(a) for a in (*cache[:8], m))
    peepholes = tuple(_onepool.readonly(np.zeros(H, dt) if w is None else w) for w in (params.w_ic, params.w_fc, params.w_oc))
    W_hr = _onepool.readonly(params.W_hr if project else np.zeros((0, H), dt))
    da = _buffers.empty("lstm da", (T, B, 4 * H), dt)
    dh_all = np.empty((T if project else 0, B, P), dt)
    W_h = _onepool.readonly(params.W_h)
    rowcast = _trains_on_rowcast(params, B)
    acc = _backward.unit_sums(B, H, rowcast, 4 * H, H, H, H)
    packs = rowcast and _rowcast.packs_step_weight(P)
    packed = (_rowcast.panels(W_h, _buffers.empty("lstm panels", _rowcast.panels_shape(4 * H, P), dt))
              if packs else np.zeros((0, 0, _rowcast.PANEL), np.float32))
    W_hT = np.empty((0, 0), dt) if packs else _kernels.transposed_weight(W_h, B, rowcast)
    weights = ((W_h, _onepool.readonly(W_hT), _onepool.readonly(packed)),
               (W_hr, _onepool.readonly(_kernels.transposed_weight(W_hr, B, rowcast)))) + (peepholes,)
    _backward.lstm_backward(cached, _onepool.readonly(dy), weights, (dh, dc), da, dh_all, acc, peeps, rowcast)
    if rowcast:  # dx and W_x padded to the kernel's width with zero columns: (T*B, D16), (4H, D16)
        D16 = -(-D // _rowcast.LANES) * _rowcast.LANES
        W_x16 = np.zeros((4 * H, D16), dt)
        W_x16[:, :D] = params.W_x
        dx16 = np.empty((T * B, D16), dt)
        work = _buffers.carved("lstm gradient work", dt, (D + P, T * B), (D + P, 4 * H), (D, 0))[1:]
        _backward.rowcast_gradients((da, da), cached[0], cached[1][:-1], W_x16, work, grads["W_x"], grads["W_h"], dx16)
        dx = dx16 if D16 == D else np.ascontiguousarray(dx16[:, :D])
    else:
        dx = np.empty((T * B, D), dt)
        _backward.weight_gradient(da, cached[0], grads["W_x"])
        _backward.weight_gradient(da, cached[1][:-1], grads["W_h"])
        _backward.input_gradient(da, _onepool.readonly(params.W_x), dx)
    grads["b_x"] = _backward.total(acc[0]).astype(dt)
    grads["b_h"] = grads["b_x"].copy()
    for name, sums in zip(("w_ic", "w_fc", "w_oc"), acc[1:]):
        if getattr(params, name) is not None:
            grads[name] = _backward.total(sums).astype(dt)
    if project:
        grads["W_hr"] = np.empty((P, H), dt)
        _backward.weight_gradient(dh_all, cached[8], grads["W_hr"])
    return gradients(params, grads, dx.reshape(T, B, D), (dh, dc))
