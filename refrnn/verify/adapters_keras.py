r"""Keras 3 ``GRU``, ``LSTM`` and ``SimpleRNN`` layers as verify candidates, on the torch backend.

::

    from refrnn.verify import verify
    from refrnn.verify.adapters_keras import keras_layer

    report = verify(keras_layer("GRU", dtype="float32"))      # reset_after True and False are both drawn

The layout ``keras`` hands a candidate ``{"weights": layer.set_weights()'s list, "config": {...}}``
(:func:`refrnn.layouts.keras.to_keras`; ``config`` has ``kind``, ``units``, ``reset_after`` and a
SimpleRNN's ``activation``), x batch-major (B, T, D) -- Keras RNN layers have no time-major form, so
every problem is handed over batch-major and ``batch_first`` is not a separate convention -- and the
initial state as ``initial_state=`` takes it (``h``, or ``[h, c]``; a Bidirectional layer's forward
states then backward ones). The layer runs with ``return_sequences=True, return_state=True``.

=====================  ==================================================================================
reset_after            True: GRU ``reset="after"``, False: ``reset="before"`` (both drawn)
go_backwards           with ``split_directions=True`` a bidirectional problem runs as a forward layer and a
                       ``go_backwards=True`` layer whose outputs are flipped back in time (Keras returns them
                       in processing order), checked against the BiLayer's reverse half
Bidirectional          ``keras.layers.Bidirectional(merge_mode="concat")``: the ``bidirectional`` convention
masking (lengths)      a boolean ``mask`` (B, T), ``True`` on the first ``L_b`` steps: final states are those
                       at each length. Keras's outputs at masked steps are its own convention (a layer carries
                       its last output, ``Bidirectional`` writes zeros), so y is compared on valid steps only
return_state           the final states, compared as ``h_T`` (``c_T``) and ``*_reverse``
initial state absent   ``initial_state`` not passed (zeros)
=====================  ==================================================================================

Not expressible: peepholes and the projection (Keras has neither), unbatched input (rank 3 only),
several layers (a stack is a model, not a layer option).

Gradients. On the torch backend a layer's weights are ``torch.nn.Parameter``\ s and its call is
differentiable, so the candidate takes ``dy`` and ``dstate_T`` and returns, through torch autograd,
``{"weights": [...], "x": dx, "state0": [...]}`` in ``get_weights()`` order (forward layer, then
backward). Where Keras keeps one bias for refrnn's ``b_x + b_h`` (LSTM, SimpleRNN, a
``reset_after=False`` GRU), its gradient is the gradient of each of the two (they are equal in the
reference, which the layout checks), not their sum. With a mask the upstream gradient of y is zero
past each length, where Keras's y is its own convention and not compared.
"""

from __future__ import annotations

import os

import numpy as np

from ..layouts import keras as keras_layout
from .adapters import LAYOUTS, Layout, _np, _unpack, conventions_of, register_layout
from .strategies import Case, CellConfig

KINDS = {"GRU": "gru", "LSTM": "lstm", "SimpleRNN": "rnn"}


def import_keras():
    """Keras on the torch backend (chosen before Keras is first imported), or ImportError saying why not."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    if keras.backend.backend() != "torch":
        raise ImportError(f"keras was imported with the {keras.backend.backend()!r} backend; refrnn verifies it on torch (KERAS_BACKEND=torch)")
    return keras


def _valid(case: Case) -> np.ndarray | None:
    """(B, T) True on each sample's valid steps (None without lengths)."""
    if case.lengths is None:
        return None
    return np.arange(case.config.T)[None, :] < np.asarray(case.lengths)[:, None]


class KerasLayout(Layout):
    """One Keras recurrent layer (or a Bidirectional one): see the module docstring."""

    name = "keras"
    CONVENTIONS, NOT_EXPRESSIBLE = conventions_of(name)

    def unsupported(self, config: CellConfig) -> str | None:
        if why := self.one_layer(config, "a Keras recurrent layer is one layer (a stack is a model)", KINDS.values(),
                                 "a GRU, LSTM or SimpleRNN layer"):
            return why
        opts = config.layers[0].opts
        if opts.get("proj_size") or opts.get("peepholes"):
            return "Keras's LSTM has no peepholes and no projection"
        return super().unsupported(config)

    def options(self, cell: str) -> dict:
        return {"peepholes": (False,), "proj": (False,)} if cell == "lstm" else {}

    def _lstm(self, case: Case) -> bool:
        return case.config.layers[0].cell == "lstm"

    def _flat_state(self, case: Case, state) -> list:
        """refrnn's one-layer state -> Keras's initial_state / returned states list."""
        dirs = state if case.config.bidirectional else (state,)
        out = []
        for s in dirs:
            out.extend(s if self._lstm(case) else (s,))
        return [np.asarray(a) for a in out]

    def _names(self, case: Case) -> list[str]:
        one = ["h_T", "c_T"] if self._lstm(case) else ["h_T"]
        return one + ([n + "_reverse" for n in one] if case.config.bidirectional else [])

    def arguments(self, case: Case) -> tuple:
        p = case.layers[0]
        cell = p.fwd if case.config.bidirectional else p
        kind = {v: k for k, v in KINDS.items()}[case.config.layers[0].cell]
        config = {"kind": kind, "units": cell.hidden_size, "reset_after": getattr(cell, "reset", "after") == "after",
                  "activation": getattr(cell, "activation", "tanh"), "bidirectional": case.config.bidirectional}
        weights = {"weights": keras_layout.to_keras(p), "config": config}
        state = None if case.state0 is None else self._flat_state(case, case.state0[0])
        args = (weights, np.swapaxes(case.x, 0, 1), state)
        if case.dy is not None:
            args += (self._masked_y(case, np.swapaxes(case.dy, 0, 1)).astype(case.dy.dtype), self._flat_state(case, case.dstate_T[0]))
        return args

    @staticmethod
    def _weight_grads(g) -> list[np.ndarray]:
        """refrnn gradients -> Keras's get_weights() list: a bias Keras keeps for b_x + b_h gets their common
        gradient (d(b_x + b_h) is the gradient of each), so b_h is zeroed before the layout sums them."""
        from ..layers.bidirectional import BiLayer

        if isinstance(g, BiLayer):
            return KerasLayout._weight_grads(g.fwd) + KerasLayout._weight_grads(g.rev)
        if getattr(g, "reset", None) == "after":  # two biases in Keras too: a plain re-ordering
            return keras_layout.to_keras(g)
        if not np.array_equal(g.b_x, g.b_h):
            raise ValueError("grads: Keras keeps one bias where refrnn has b_x + b_h, so their gradients must be equal, but they differ")
        return keras_layout.to_keras(g.replace(b_h=np.zeros_like(g.b_h)))

    def _weight_names(self, case: Case) -> list[str]:
        one = ["dkernel", "drecurrent_kernel", "dbias"]
        return one + ([n + "_reverse" for n in one] if case.config.bidirectional else [])

    def _masked_y(self, case: Case, y: np.ndarray) -> np.ndarray:
        valid = _valid(case)
        return y if valid is None else np.where(valid[:, :, None], y, 0.0)

    def reference_outputs(self, case, y, states_T, grads, dx, dstates0):
        out = {"y": self._masked_y(case, np.swapaxes(y, 0, 1))}
        out.update(zip(self._names(case), self._flat_state(case, states_T[0])))
        if grads is not None:
            out["dx"] = np.swapaxes(dx, 0, 1)
            if case.state0 is not None:
                out.update(zip(self._state0_names(case), self._flat_state(case, dstates0[0])))
            out.update(zip(self._weight_names(case), self._weight_grads(grads[0])))
        return out

    def _state0_names(self, case: Case) -> list[str]:
        return ["d" + n.replace("_T", "_0") for n in self._names(case)]

    def candidate_outputs(self, case, result, grads: bool):
        y, states, g = _unpack(result, grads)
        out = {"y": self._masked_y(case, _np("y", y))}
        names = self._names(case)
        if not isinstance(states, (list, tuple)) or len(states) != len(names):
            raise TypeError(f"candidate: expected the {len(names)} returned states {names}, got {type(states).__name__}")
        out.update({n: _np(n, a) for n, a in zip(names, states)})
        if grads:
            if not isinstance(g, dict) or "weights" not in g:
                raise TypeError(f"candidate: grads must be a dict with 'weights', 'x' and 'state0', got {type(g).__name__}")
            out["dx"] = _np("grads['x']", g["x"])
            if case.state0 is not None and g.get("state0") is not None:
                out.update({n: _np(n, a) for n, a in zip(self._state0_names(case), g["state0"])})
            out.update({n: _np(n, a) for n, a in zip(self._weight_names(case), g["weights"])})
        return out

    def describe(self, case: Case, name: str, index: tuple) -> str:
        idx = tuple(int(i) for i in index)
        if name == "y" and len(idx) == 3:
            H = case.config.layers[0].H
            d = "reverse" if idx[2] >= H else "forward"
            return f"y[{', '.join(map(str, idx))}] (batch row {idx[0]}, step {idx[1]}, {d} direction, unit {idx[2] % H})"
        if len(idx) == 2:
            return f"{name}[{idx[0]}, {idx[1]}] (batch row {idx[0]}, unit {idx[1]})"
        return super().describe(case, name, index)


if "keras" not in LAYOUTS:
    register_layout(KerasLayout())


class KerasLayer:
    """A candidate that runs ``keras.layers.<kind>`` ("GRU", "LSTM", "SimpleRNN") in ``dtype`` on the torch
    backend, with gradients through torch autograd. ``split_directions=True`` checks ``go_backwards``
    (module docstring); ``layer_kwargs`` are passed to every layer's constructor (a way to plant a wrong
    conversion)."""

    layout = "keras"
    grads = True
    max_layers = 1

    def __init__(self, kind: str = "GRU", *, dtype="float64", split_directions: bool = False, layer_kwargs: dict | None = None,
                 name: str | None = None):
        if kind not in KINDS:
            raise ValueError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype: expected float32 or float64, got {self.dtype}")
        self.kind, self.cell, self.split_directions = kind, KINDS[kind], bool(split_directions)
        self.layer_kwargs = dict(layer_kwargs or {})
        self.conventions = tuple(LAYOUTS["keras"].CONVENTIONS)
        self.name = name or f"keras.layers.{kind}{' (go_backwards)' if split_directions else ''}"

    def __repr__(self) -> str:
        return f"KerasLayer({self.kind!r}, dtype={self.dtype.name!r}, split_directions={self.split_directions})"

    def _layer(self, keras, config: dict, **extra):
        kw = {"return_sequences": True, "return_state": True, "dtype": self.dtype.name, **extra}
        if self.kind == "GRU":
            kw["reset_after"] = config["reset_after"]
        if self.kind == "SimpleRNN":
            kw["activation"] = config["activation"]
        kw.update(self.layer_kwargs)
        return getattr(keras.layers, self.kind)(config["units"], **kw)

    def _call(self, layer, weights, x, state, mask):
        """Run ``layer`` on torch tensors (x, state) with ``weights`` set; its outputs as torch tensors."""
        layer.build(tuple(x.shape))
        layer.set_weights(weights)
        kwargs = {}
        if state is not None:
            kwargs["initial_state"] = list(state)
        if mask is not None:
            kwargs["mask"] = mask
        return list(layer(x, **kwargs))

    def __call__(self, weights, x, state0, dy=None, dstate_T=None, *, lengths=None):
        import torch

        keras = import_keras()
        config, arrays = weights["config"], list(weights["weights"])
        want = dy is not None

        def leaf(a):
            return torch.from_numpy(np.array(a, copy=True)).requires_grad_(want)

        tx = leaf(x)
        ts0 = None if state0 is None else [leaf(s) for s in state0]
        mask = None if lengths is None else np.arange(tx.shape[1])[None, :] < np.asarray(lengths)[:, None]
        n = len(arrays) // 2
        k = 2 if self.kind == "LSTM" else 1  # states per direction
        with torch.set_grad_enabled(want):
            if not config["bidirectional"]:
                layer = self._layer(keras, config)
                out = self._call(layer, arrays, tx, ts0, mask)
                y, states, variables = out[0], out[1:], list(layer.weights)
            elif not self.split_directions:
                layer = keras.layers.Bidirectional(self._layer(keras, config), merge_mode="concat", dtype=self.dtype.name)
                out = self._call(layer, arrays, tx, ts0, mask)
                y, states = out[0], out[1:]
                variables = list(layer.forward_layer.weights) + list(layer.backward_layer.weights)
            else:
                f_layer, b_layer = self._layer(keras, config), self._layer(keras, config, go_backwards=True)
                fwd = self._call(f_layer, arrays[:n], tx, None if ts0 is None else ts0[:k], mask)
                bwd = self._call(b_layer, arrays[n:], tx, None if ts0 is None else ts0[k:], mask)
                # go_backwards returns outputs in processing order (step T-1 first): flip them back; with a mask
                # the padded steps come first in that order and stay zero, so the flip puts them back at the end
                y = torch.cat([fwd[0], torch.flip(bwd[0], dims=(1,))], dim=-1)
                states, variables = fwd[1:] + bwd[1:], list(f_layer.weights) + list(b_layer.weights)
        y_np, states_np = y.detach().cpu().numpy(), [s.detach().cpu().numpy() for s in states]
        if not want:
            return y_np, states_np
        loss = (y * torch.from_numpy(np.asarray(dy))).sum()
        for s, g in zip(states, dstate_T):
            loss = loss + (s * torch.from_numpy(np.asarray(g))).sum()
        loss.backward()

        def grad(t):
            return np.zeros(tuple(t.shape), dtype=self.dtype) if t.grad is None else t.grad.detach().cpu().numpy()

        grads = {"weights": [grad(v.value) for v in variables], "x": grad(tx), "state0": None if ts0 is None else [grad(s) for s in ts0]}
        return y_np, states_np, grads


def keras_layer(kind: str = "GRU", *, dtype="float64", split_directions: bool = False, layer_kwargs: dict | None = None,
                name: str | None = None) -> KerasLayer:
    """A candidate for ``keras.layers.<kind>`` (see :class:`KerasLayer`)."""
    return KerasLayer(kind, dtype=dtype, split_directions=split_directions, layer_kwargs=layer_kwargs, name=name)


__all__ = ["KINDS", "KerasLayer", "KerasLayout", "import_keras", "keras_layer"]
