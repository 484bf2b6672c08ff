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
``lstm-swapped-gates``        reads the stacked blocks as f, i, g, o instead of i, f, g, o  ``y``
``lstm-off-by-one``           returns h_0..h_{T-1} as y                                     ``y``
============================  ===========================================================  ======================

Mutants for the clipped-tanh z of the conditional GRU (sigmoid instead) and for SRU's highway term
are added here once :mod:`refrnn.cells.ccgru` and :mod:`refrnn.cells.sru` exist (see :data:`PENDING`).
"""

from __future__ import annotations

import numpy as np

from .. import stack
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
            b_h[gate_rows(("r", "z", "n"), "n", p.hidden_size)] = 0.0
            out.append(p.replace(b_h=b_h))
        return tuple(out)

    def back(self, grads):
        out = []
        for g in grads:
            b_h = g.b_h.copy()
            b_h[gate_rows(("r", "z", "n"), "n", g.hidden_size)] = 0.0  # the code never reads b_hn
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


MUTANTS = {m.name: m for m in (SwappedGates, ResetBefore, MissingBhn, TransposedWh, OffByOne, WrongBiasHHGrad, LSTMSwappedGates, LSTMOffByOne)}
# Forward-only mutants (verify them with grads=False): the bug is in the outputs.
FORWARD_MUTANTS = {m.name: m for m in (CCGRUSigmoidZ, SRUNoHighway)}
