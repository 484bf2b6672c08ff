"""Deliberately wrong cells: candidates that :func:`refrnn.verify.verify` must reject.

Each mutant is a plausible bug, written as a candidate in the ``torch`` layout (weights named like
``torch.nn.GRU``'s state dict), so the tests exercise the same path as a real PyTorch port. Each runs
the reference on a *wrongly read* model and converts the results back, so it is a self-consistent
implementation of the wrong equations (its gradients are the true gradients of its own forward),
except :class:`WrongBiasHHGrad`, whose forward is right and one gradient wrong.

============================  ===========================================================  ======================
mutant                        the bug                                                       must show up in
============================  ===========================================================  ======================
``gru-swapped-gates``         reads the stacked blocks as z, r, n instead of r, z, n        ``y``
``gru-reset-before``          applies r before W_hn (Cho) where PyTorch applies it after   ``y``
``gru-missing-b_hn``          drops the recurrent candidate bias b_hn                       ``y``
``gru-transposed-W_h``        uses each gate's recurrent block transposed (W_h^T h)         ``y``
``gru-off-by-one``            returns h_0..h_{T-1} as y instead of h_1..h_T                 ``y``
``gru-wrong-b_h-grad``        returns db_x as db_h (forgets r in db_hn = r * da_n)          ``dbias_hh_l*`` only
``lstm-swapped-gates``        reads the stacked blocks as f, i, g, o instead of i, f, g, o  ``y`` or a state
``lstm-off-by-one``           returns h_0..h_{T-1} as y                                     ``y``
============================  ===========================================================  ======================

:data:`FORWARD_MUTANTS` adds the clipped-tanh z of the conditional GRU replaced by a sigmoid and SRU
without its highway term. :data:`BOUNDARY_MUTANTS` are bugs at the seams real kernels have -- tiles,
time chunks, SIMD tails, batch tiles, float32 accumulation past a width -- and in direction, length and
state handling, each planted in :class:`TorchNumpy`, an independent NumPy implementation of
``torch.nn.GRU``/``nn.LSTM`` with every convention (:data:`CONTROLS`: it passes as it stands).
"""

from __future__ import annotations

import re

import numpy as np

from ..layers import stack
from ..cells import gru
from ..cells._common import gate_rows
from ..layouts.torch import from_torch, to_torch


class Mutant:
    """A candidate in the ``torch`` layout computing a wrong model; subclasses override the hooks."""

    name = "?"
    cell = "gru"
    kind = "GRU"
    layout = "torch"
    options: dict = {}
    max_layers = None
    expect: tuple[str, ...] = ("y",)  # outputs whose divergence identifies this bug
    only: bool = False  # True: *only* outputs starting with one of ``expect`` may fail
    bug = "?"

    def __init__(self, dtype="float64"):
        self.dtype = np.dtype(dtype)

    def __repr__(self) -> str:
        return f"<mutant {self.name}: {self.bug}>"

    # hooks -----------------------------------------------------------------------------------------
    def model(self, layers: tuple) -> tuple:
        """The parameters the buggy code effectively computes with."""
        return layers

    def back(self, grads: tuple) -> tuple:
        """Gradients of the buggy model, mapped back onto the given weights (inverse of ``model``)."""
        return grads

    def outputs(self, y, h_all):
        return y

    def fix_grads(self, grads: dict) -> dict:
        return grads

    # candidate ------------------------------------------------------------------------------------
    def __call__(self, weights, x, state0, dy=None, dstate_T=None):
        lstm = self.cell == "lstm"
        given = from_torch(weights, self.kind)
        layers = self.model(tuple(p.astype(np.float64) for p in given))
        x = np.asarray(x, dtype=np.float64)
        states = _from_torch_state(state0, lstm)
        y, states_T, cache = stack.forward(layers, x, states)
        out_y = self.outputs(y, cache)
        out_state = _to_torch_state(states_T, lstm)
        if dy is None:
            return out_y, out_state
        g, dx, dstates0 = stack.backward(layers, cache, np.asarray(dy, np.float64), _from_torch_state(dstate_T, lstm))
        grads = {k: v for k, v in to_torch(self.back(g), self.kind).items()}
        grads = self.fix_grads(grads)
        grads["x"] = dx
        grads["state0"] = _to_torch_state(dstates0, lstm)
        return out_y, out_state, grads


def _from_torch_state(state, lstm: bool) -> tuple:
    if lstm:
        h, c = state
        return tuple((np.asarray(h[k], np.float64), np.asarray(c[k], np.float64)) for k in range(len(h)))
    return tuple(np.asarray(s, np.float64) for s in state)


def _to_torch_state(states, lstm: bool):
    if lstm:
        return np.stack([s[0] for s in states]), np.stack([s[1] for s in states])
    return np.stack(states)


def _permute_gates(p, order: tuple[int, ...]):
    """``p`` with its gate blocks reordered: new block k is old block ``order[k]``."""
    H = p.hidden_size

    def perm(a):
        if a.shape[0] != len(order) * H:  # not gate-stacked (an LSTM projection W_hr)
            return a
        return np.concatenate([a[k * H : (k + 1) * H] for k in order], axis=0)

    return p.map(perm)


class SwappedGates(Mutant):
    name, bug = "gru-swapped-gates", "reads the gate blocks as z, r, n (swapped r and z)"
    order = (1, 0, 2)

    def model(self, layers):
        return tuple(_permute_gates(p, self.order) for p in layers)

    def back(self, grads):
        return tuple(_permute_gates(g, self.order) for g in grads)  # a swap is its own inverse


class ResetBefore(Mutant):
    name, bug = "gru-reset-before", "applies the reset gate before the recurrent product (reset='before')"

    def model(self, layers):
        return tuple(p.replace(reset="before") for p in layers)

    def back(self, grads):
        return tuple(g.replace(reset="after") for g in grads)


class MissingBhn(Mutant):
    name, bug = "gru-missing-b_hn", "drops the recurrent candidate bias b_hn"

    def model(self, layers):
        out = []
        for p in layers:
            b_h = p.b_h.copy()
            b_h[gate_rows(gru.GATES, "n", p.hidden_size)] = 0.0
            out.append(p.replace(b_h=b_h))
        return tuple(out)

    def back(self, grads):
        out = []
        for g in grads:
            b_h = g.b_h.copy()
            b_h[gate_rows(gru.GATES, "n", g.hidden_size)] = 0.0  # the code never reads b_hn
            out.append(g.replace(b_h=b_h))
        return tuple(out)


class TransposedWh(Mutant):
    name, bug = "gru-transposed-W_h", "multiplies by each gate's recurrent block transposed"

    @staticmethod
    def _t(p):
        H = p.hidden_size
        blocks = [p.W_h[k * H : (k + 1) * H].T for k in range(3)]
        return p.replace(W_h=np.concatenate(blocks, axis=0))

    def model(self, layers):
        return tuple(self._t(p) for p in layers)

    def back(self, grads):
        return tuple(self._t(g) for g in grads)


class OffByOne(Mutant):
    name, bug = "gru-off-by-one", "returns h_0..h_{T-1} as the output sequence (off by one step)"

    def outputs(self, y, cache):
        return np.asarray(cache.layers[-1].h[:-1])


class WrongBiasHHGrad(Mutant):
    name, bug = "gru-wrong-b_h-grad", "returns the gradient of bias_ih as that of bias_hh (forgets r in db_hn)"
    expect, only = ("dbias_hh",), True

    def fix_grads(self, grads):
        for key in list(grads):
            if key.startswith("bias_hh"):
                grads[key] = grads[key.replace("bias_hh", "bias_ih")].copy()
        return grads


class LSTMSwappedGates(SwappedGates):
    name, bug = "lstm-swapped-gates", "reads the gate blocks as f, i, g, o (swapped i and f)"
    cell, kind = "lstm", "LSTM"
    order = (1, 0, 2, 3)
    expect = ("y", "h_n", "c_n")  # i and f swapped show in the cell state first


class LSTMOffByOne(OffByOne):
    name = "lstm-off-by-one"
    cell, kind = "lstm", "LSTM"


class CCGRUForward:
    """The conditional GRU's forward pass written out for the running-statistics modes (layout
    ``refrnn``, forward only), with the update-gate activation ``z_fn`` as a parameter: with
    :func:`refrnn.cells.ccgru.cliptanh` it is a correct second implementation (the tests verify that
    it passes), with a sigmoid it is the mutant :class:`CCGRUSigmoidZ`.

    Equations (:mod:`refrnn.cells.ccgru`): ``r = sigmoid(W_r x + U_r h + b_r)``, ``ĥ = tanh(W_h x +
    b_h + r * U_h h)``, ``a`` = full / low-rank / block pre-activation, ``z = z_fn((a - mean) * inv_std
    + s)``, ``h' = (1 - z) h + z ĥ``.
    """

    name, bug = "ccgru-forward", "none: a correct forward pass (with z_fn = cliptanh)"
    cell, layout, max_layers = "ccgru", "refrnn", 1
    options = {"mode": ("inference",)}  # running statistics: no batch coupling to re-implement
    expect: tuple[str, ...] = ("y",)
    only = False

    def __init__(self, dtype="float64", z_fn=None):
        from ..cells import ccgru

        self.dtype = np.dtype(dtype)
        self.z_fn = ccgru.cliptanh if z_fn is None else z_fn

    def __call__(self, layers, x, state0, dy=None, dstate_T=None):
        from ..cells._common import sigmoid

        (p,) = layers
        (h,) = state0
        H = p.hidden_size
        inv_std = 1.0 if p.norm == "folded" else 1.0 / np.sqrt(p.running_var + p.eps)
        U_z = p.U_z if p.variant == "full" else p.U_z_lr
        ys = []
        for x_t in x:
            pre = x_t @ p.W_rh.T + p.b_rh
            q = h @ p.U_rh.T
            r = sigmoid(pre[:, :H] + q[:, :H])
            h_hat = np.tanh(pre[:, H:] + r * q[:, H:])
            if p.variant == "full":
                a = x_t @ p.W_z.T + p.b_z + h @ U_z.T
            else:
                z_lr = np.maximum(x_t @ p.W_z_lr.T + p.b_z_lr + h @ U_z.T, 0.0)
                a = z_lr @ p.W_z.T + p.b_z if p.variant == "lowrank" else z_lr
            z = self.z_fn((a - p.running_mean) * inv_std + p.s)
            if p.variant == "block":
                z = np.repeat(z, H // p.g, axis=-1)
            h = (1.0 - z) * h + z * h_hat
            ys.append(h)
        return np.stack(ys), (h,)


class CCGRUSigmoidZ(CCGRUForward):
    name, bug = "ccgru-sigmoid-z", "sigmoid where the update gate has the clipped tanh (z never exactly 0)"

    def __init__(self, dtype="float64"):
        from ..cells._common import sigmoid

        super().__init__(dtype, z_fn=sigmoid)


class SRUNoHighway:
    """``sru.SRUCell``'s equations with the highway term dropped: ``h = r * g(c)`` instead of
    ``h = r * g(c) + (1 - r) * alpha * x`` (layout ``sru-cell``, forward only)."""

    name, bug = "sru-no-highway", "drops the highway term (1 - r) * s_t of h"
    cell, layout, max_layers = "sru", "sru-cell", 1
    options: dict = {"skip": ("auto",)}  # models that have a highway term to drop
    expect: tuple[str, ...] = ("y",)
    only = False

    def __init__(self, dtype="float64"):
        self.dtype = np.dtype(dtype)

    def __call__(self, weights, x, state0, dy=None, dstate_T=None):
        from ..cells import sru
        from ..layouts.sru import from_sru

        o = weights["options"]
        p = from_sru(weights["state_dict"], "SRUCell", has_skip_term=o["has_skip_term"], rescale=o["rescale"],
                     use_tanh=o["use_tanh"], v_terms=not o["v1"]).astype(np.float64)
        p = p.replace(W=p.W[: 3 * p.hidden_size], skip="none", alpha=1.0, skip_offset=0)
        y, c_T, _ = sru.forward(p, np.asarray(x, np.float64), np.asarray(state0, np.float64))
        return y, c_T


# ------------------------------------------------------------------------------------ boundary mutants
def _sigmoid(a):
    return 0.5 * (1.0 + np.tanh(0.5 * a))  # no overflow warnings for saturated gates


class TorchNumpy:
    """A second, independent implementation of ``torch.nn.GRU`` / ``nn.LSTM`` in plain NumPy, in the
    ``torch`` layout, forward only, with every convention: layers, bidirectional (PyTorch's state order),
    ``lengths`` (packed-sequence semantics by masking), ``batch_first``, unbatched input, ``state0=None``,
    and the LSTM projection. It is written the way a kernel is: the input product of all steps at once,
    then a loop over time per layer and direction. Correct as it stands (the tests verify that it passes
    at :func:`refrnn.verify.verify`'s defaults); the boundary mutants below each change one hook to plant
    a bug of the kind real kernels have at tile, chunk, vector-tail and batch-tile seams, in precision
    that degrades with size, and in direction and length handling.

    Hooks: :meth:`initial` (the initial states), :meth:`product` (every matrix product),
    :meth:`gru_gates` / :meth:`lstm_gates` (one step's gates), :meth:`after_step` (the state between
    steps), :meth:`output_step` (where a step's output is written), :meth:`valid` (which samples a step
    updates), :meth:`final` (the final state of a direction), :meth:`order_states` (``h_n``'s order).
    """

    name, bug = "torch-numpy", "none: a correct second implementation of torch.nn.GRU/LSTM"
    cell, kind, layout, grads = "gru", "GRU", "torch", False
    conventions = ("bidirectional", "lengths", "batch_first", "unbatched", "no_initial_state")
    options: dict = {}
    max_layers = None
    expect: tuple[str, ...] = ("y", "h_n", "c_n")  # outputs whose divergence identifies the bug
    only = False

    def __init__(self, dtype="float64"):
        self.dtype = np.dtype(dtype)

    def __repr__(self) -> str:
        return f"<mutant {self.name}: {self.bug}>"

    # hooks -----------------------------------------------------------------------------------------
    def initial(self, h0, c0, given: bool):
        return h0, c0

    def product(self, a, W, what: str):
        """``a @ W.T``; ``what`` is "input", "recurrent" or "projection"."""
        return a @ W.T

    def gru_gates(self, r, z, gx_n, gh_n, memo):
        return r, z, np.tanh(gx_n + r * gh_n)

    def lstm_gates(self, i, f, g, o, memo):
        return i, f, g, o

    def after_step(self, k: int, h, c):
        """The state after the k-th step a direction has taken (k = 0, 1, ...)."""
        return h, c

    def valid(self, t: int, lengths, reverse: bool):
        """Which samples step t updates: those whose sequence reaches it."""
        return (t < lengths)[:, None]

    def output_step(self, t: int, k: int, T: int, reverse: bool) -> int:
        """The output row step t (the k-th step taken) is written to."""
        return t

    def output_value(self, h, valid):
        return np.where(valid, h, 0.0)

    def final(self, states: list, reverse: bool):
        """A direction's final (h, c) from the states after each step it took (states[-1] is the last)."""
        return states[-1]

    def order_states(self, per_layer: list, dirs: int) -> list:
        """PyTorch's h_n order: layer 0 forward, layer 0 reverse, layer 1 forward, ..."""
        return [s for layer in per_layer for s in layer]

    # the implementation ---------------------------------------------------------------------------
    def __call__(self, weights, x, state0, lengths=None, batch_first=False):
        lstm = self.cell == "lstm"
        x = np.asarray(x, dtype=self.dtype)
        unbatched = x.ndim == 2
        x = x[:, None] if unbatched else (np.swapaxes(x, 0, 1) if batch_first else x)
        T, B, _ = x.shape
        dirs = 2 if "weight_ih_l0_reverse" in weights else 1
        L = sum(1 for k in weights if re.fullmatch(r"weight_ih_l\d+", k))
        H = weights["weight_hh_l0"].shape[0] // (4 if lstm else 3)
        P = weights["weight_hr_l0"].shape[0] if "weight_hr_l0" in weights else 0
        lengths = np.full(B, T) if lengths is None else np.asarray(lengths)
        if state0 is None:
            h0, c0 = np.zeros((L * dirs, B, P or H), self.dtype), np.zeros((L * dirs, B, H), self.dtype)
        else:
            h0, c0 = state0 if lstm else (state0, None)
            h0 = np.array(h0, dtype=self.dtype)
            c0 = None if c0 is None else np.array(c0, dtype=self.dtype)
            if unbatched:
                h0, c0 = h0[:, None], (None if c0 is None else c0[:, None])
        h0, c0 = self.initial(h0, c0, state0 is not None)
        inp, per_layer = x, []
        for layer in range(L):
            outs, finals = [], []
            for d in range(dirs):
                suffix = f"_l{layer}" + ("_reverse" if d else "")
                W = {k: np.asarray(weights[k + suffix], self.dtype) for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
                W["weight_hr"] = np.asarray(weights["weight_hr" + suffix], self.dtype) if P else None
                j = layer * dirs + d
                y_d, fin = self._direction(W, inp, h0[j], None if c0 is None else c0[j], lengths, bool(d), lstm)
                outs.append(y_d)
                finals.append(fin)
            inp = np.concatenate(outs, axis=-1)
            per_layer.append(finals)
        ordered = self.order_states(per_layer, dirs)
        h_n = np.stack([s[0] for s in ordered])
        c_n = np.stack([s[1] for s in ordered]) if lstm else None
        y = inp
        if unbatched:
            y, h_n, c_n = y[:, 0], h_n[:, 0], (None if c_n is None else c_n[:, 0])
        elif batch_first:
            y = np.swapaxes(y, 0, 1)
        return y, ((h_n, c_n) if lstm else h_n)

    def _direction(self, W, x, h, c, lengths, reverse: bool, lstm: bool):
        T, B, _ = x.shape
        gx = self.product(x, W["weight_ih"], "input") + W["bias_ih"]  # every step's input product at once
        y = np.zeros((T, B, h.shape[-1]), self.dtype)
        H = W["weight_hh"].shape[0] // (4 if lstm else 3)
        memo: dict = {}
        states = [(h, c)]
        for k, t in enumerate(range(T - 1, -1, -1) if reverse else range(T)):
            gh = self.product(h, W["weight_hh"], "recurrent") + W["bias_hh"]
            a = gx[t] + gh
            if lstm:
                i, f, g, o = self.lstm_gates(
                    _sigmoid(a[:, :H]), _sigmoid(a[:, H : 2 * H]), np.tanh(a[:, 2 * H : 3 * H]), _sigmoid(a[:, 3 * H :]), memo
                )
                c_new = f * c + i * g
                h_new = o * np.tanh(c_new)
                if W["weight_hr"] is not None:
                    h_new = self.product(h_new, W["weight_hr"], "projection")
            else:
                r, z, n = self.gru_gates(_sigmoid(a[:, :H]), _sigmoid(a[:, H : 2 * H]), gx[t][:, 2 * H :], gh[:, 2 * H :], memo)
                h_new, c_new = (1.0 - z) * n + z * h, None
            valid = self.valid(t, lengths, reverse)
            h = np.where(valid, h_new, h)
            c = None if c is None else np.where(valid, c_new, c)
            y[self.output_step(t, k, T, reverse)] = self.output_value(h, (t < lengths)[:, None])
            h, c = self.after_step(k, h, c)
            states.append((h, c))
        return y, self.final(states, reverse)


class TorchNumpyLSTM(TorchNumpy):
    name, bug = "torch-numpy-lstm", "none: a correct second implementation of torch.nn.LSTM"
    cell, kind = "lstm", "LSTM"


class _GRUTileStaleReset(TorchNumpy):
    name, bug = "gru-tile32-stale-reset", "units from 32 on read the previous step's reset gate (a second tile racing the first)"

    def gru_gates(self, r, z, gx_n, gh_n, memo):
        stale = memo.get("r", r)
        memo["r"] = r
        r = np.concatenate([r[:, :32], stale[:, 32:]], axis=1)
        return super().gru_gates(r, z, gx_n, gh_n, memo)


class _GRUChunkStateReset(TorchNumpy):
    name, bug = "gru-chunk32-zero-state", "the state is zeroed every 32 steps (a chunked time loop that forgets its carry)"

    def after_step(self, k, h, c):
        return (np.zeros_like(h), c) if (k + 1) % 32 == 0 else (h, c)


class _GRUBatchTileH0(TorchNumpy):
    name, bug = "gru-batch-tile8-h0", "batch rows from 8 on start from zeros instead of h0 (a second batch tile)"

    def initial(self, h0, c0, given):
        h0 = h0.copy()
        h0[:, 8:] = 0.0
        return h0, c0


class _First16:
    """One product (``which``) reads only its first 16 columns: a kernel compiled for a width <= 16."""

    which = "input"

    def product(self, a, W, what):
        if what == self.which:
            return a[..., :16] @ W[:, :16].T
        return a @ W.T


class _GRUInputD16(_First16, TorchNumpy):
    name, bug = "gru-input-d16", "only the first 16 input features are read (a kernel compiled for D <= 16)"


class _Float32Past64:
    """Precision that degrades with size: the recurrent product in float32 once it is 64 wide."""

    def product(self, a, W, what):
        if what == "recurrent" and W.shape[1] >= 64:
            return (a.astype(np.float32) @ W.astype(np.float32).T).astype(a.dtype)
        return a @ W.T


class _GRUFloat32H64(_Float32Past64, TorchNumpy):
    name, bug = "gru-fp32-recurrent-h64", "the recurrent product is accumulated in float32 once H >= 64 (a float64 candidate)"


class _GRULateFinalState(TorchNumpy):
    name, bug = "gru-late-h_n-t20", "h_n is one step late (the state before the last step) when T > 20"

    def final(self, states, reverse):
        return states[-2] if len(states) > 21 else states[-1]


def _vector_tail(gate, wrong, width: int):
    """``gate`` with its scalar tail -- the last H % width units after at least one full vector --
    taken from ``wrong``: the tail loop of a SIMD kernel indexing the wrong gate."""
    H = gate.shape[1]
    if H <= width or H % width == 0:
        return gate
    out = gate.copy()
    out[:, H - H % width :] = wrong[:, H - H % width :]
    return out


class _GRUSimd8Tail(TorchNumpy):
    name, bug = "gru-simd8-tail-gate", "the scalar tail of an 8-wide loop (the last H % 8 units, H > 8) reads z for r"

    def gru_gates(self, r, z, gx_n, gh_n, memo):
        return super().gru_gates(_vector_tail(r, z, 8), z, gx_n, gh_n, memo)


class _GRUReverseNotFlipped(TorchNumpy):
    name, bug = "gru-reverse-not-flipped", "the reverse direction's outputs are left in processing order (not flipped back)"

    def output_step(self, t, k, T, reverse):
        return k if reverse else t


class _GRUReverseFinalState(TorchNumpy):
    name, bug = "gru-reverse-h_n-first-step", "the reverse direction's h_n is its state after its first step (t = T-1), not after t = 0"

    def final(self, states, reverse):
        return states[1] if reverse and len(states) > 1 else states[-1]


class _GRUStateOrder(TorchNumpy):
    name, bug = "gru-bidirectional-h_n-order", "h_n ordered direction-major (all forward layers, then all reverse) instead of PyTorch's layer-major"

    def order_states(self, per_layer, dirs):
        return [layer[d] for d in range(dirs) for layer in per_layer]


class _GRUReverseReadsPadding(TorchNumpy):
    name, bug = "gru-reverse-reads-padding", "the reverse direction starts at step T-1 for every sample, reading the padding past its length"

    def valid(self, t, lengths, reverse):
        return np.ones((len(lengths), 1), dtype=bool) if reverse else super().valid(t, lengths, reverse)


class _GRUFinalStateAtT(TorchNumpy):
    name, bug = "gru-h_n-at-T-not-length", "the state keeps updating past a sample's length, so h_n is the state at T, not at the length"

    def valid(self, t, lengths, reverse):
        return np.ones((len(lengths), 1), dtype=bool) if not reverse else super().valid(t, lengths, reverse)


class _GRUPaddingNotZeroed(TorchNumpy):
    name, bug = "gru-padding-not-zeroed", "outputs past a sample's length are left holding its last state instead of zeros"

    def output_value(self, h, valid):
        return h


class _GRUNoStateBatch3(TorchNumpy):
    name, bug = "gru-no-h0-batch3", "without an initial state, batch rows from 2 on start from a stale buffer (0.5) instead of zeros"

    def initial(self, h0, c0, given):
        if not given:
            h0 = h0.copy()
            h0[:, 2:] = 0.5
        return h0, c0


class _GRUBatchFirstState(TorchNumpy):
    name, bug = "gru-batch-first-h_n", "with batch_first, h_n is returned batch-first too (PyTorch keeps (L, B, H))"

    def __call__(self, weights, x, state0, lengths=None, batch_first=False):
        y, h_n = super().__call__(weights, x, state0, lengths, batch_first)
        return y, (np.swapaxes(h_n, 0, 1) if batch_first and h_n.ndim == 3 else h_n)


class _LSTM(TorchNumpy):
    cell, kind = "lstm", "LSTM"


class _LSTMChunkCellLost(_LSTM):
    name, bug = "lstm-chunk32-cell-lost", "the cell state is lost every 32 steps (a chunked time loop carries h but not c)"

    def after_step(self, k, h, c):
        return (h, np.zeros_like(c)) if (k + 1) % 32 == 0 else (h, c)


class _LSTMSimd4Tail(_LSTM):
    name, bug = "lstm-simd4-tail-i-for-f", "the tail of a 4-wide loop (the last H % 4 units, H > 4) reads i for f"

    def lstm_gates(self, i, f, g, o, memo):
        return i, _vector_tail(f, i, 4), g, o


class _LSTMFloat32H64(_Float32Past64, _LSTM):
    name, bug = "lstm-fp32-recurrent-h64", "the recurrent product is accumulated in float32 once its width is >= 64 (a float64 candidate)"


class _LSTMCellFromH0(_LSTM):
    name, bug = "lstm-c0-from-h0", "the initial cell state is read from h0's buffer (c0 ignored)"

    def initial(self, h0, c0, given):
        if h0.shape == c0.shape:
            c0 = h0.copy()
        return h0, c0


class _LSTMProjectionTail(_First16, _LSTM):
    name, bug = "lstm-projection-d16", "the projection reads only the first 16 cell units (W_hr assumed H <= 16)"
    which = "projection"


BOUNDARY_MUTANTS = {
    m.name: m
    for m in (
        _GRUTileStaleReset, _GRUChunkStateReset, _GRUBatchTileH0, _GRUInputD16, _GRUFloat32H64, _GRULateFinalState,
        _GRUSimd8Tail, _GRUReverseNotFlipped, _GRUReverseFinalState, _GRUStateOrder, _GRUReverseReadsPadding,
        _GRUFinalStateAtT, _GRUPaddingNotZeroed, _GRUNoStateBatch3, _GRUBatchFirstState, _LSTMChunkCellLost,
        _LSTMSimd4Tail, _LSTMFloat32H64, _LSTMCellFromH0, _LSTMProjectionTail,
    )
}
"""Bugs at seams (tiles, chunks, vector tails, batch tiles, precision at size) and in direction, length
and state handling, each planted in :class:`TorchNumpy`; forward only (``grads = False``)."""
CONTROLS = {m.name: m for m in (TorchNumpy, TorchNumpyLSTM)}
"""The correct implementations the boundary mutants are built on."""

MUTANTS = {m.name: m for m in (SwappedGates, ResetBefore, MissingBhn, TransposedWh, OffByOne, WrongBiasHHGrad, LSTMSwappedGates, LSTMOffByOne)}
# Forward-only mutants (verify them with grads=False): the bug is in the outputs.
FORWARD_MUTANTS = {m.name: m for m in (CCGRUSigmoidZ, SRUNoHighway)}
