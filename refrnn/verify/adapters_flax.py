r"""Flax ``linen`` recurrent cells run through ``nn.RNN`` (and ``nn.Bidirectional``) as verify candidates, on
JAX's CPU backend, with gradients from ``jax.vjp``.

::

    from refrnn.verify import verify
    from refrnn.verify.adapters_flax import flax_rnn

    report = verify(flax_rnn("GRUCell", dtype="float32"))     # GRUCell, LSTMCell, OptimizedLSTMCell, SimpleCell

The layout ``flax`` hands a candidate ``{"params": tree, "config": {...}}``: ``tree`` is the parameter
tree of :func:`refrnn.layouts.flax.to_flax` (one cell's, or ``nn.Bidirectional``'s) and ``config`` has
``cell``, ``features``, a SimpleCell's ``activation`` and ``bidirectional``. States are Flax carries
(:func:`refrnn.layouts.flax.state_to_flax`: ``h``, an LSTM's ``(c, h)``, a bidirectional layer's
``(forward, backward)``). The candidate runs ``nn.RNN(cell, return_carry=True)`` and returns
``(y, carry_T)``, or with upstream gradients ``(y, carry_T, {"params": tree, "x": dx, "state0": carry})``
from one ``jax.vjp`` of ``(params, x, initial_carry) -> (y, carry_T)``.

=====================  ==================================================================================
time-major             ``nn.RNN(time_major=True)``; ``batch_first``: ``time_major=False`` (Flax's default)
unbatched              x (T, D): Flax treats every axis but time and features as batch, so none is one
bidirectional          ``nn.Bidirectional(nn.RNN(cell), nn.RNN(cell))`` (concatenated outputs, carries
                       ``(forward, backward)``); with ``split_directions=True`` a forward ``nn.RNN`` and an
                       ``nn.RNN(reverse=True, keep_order=True)``, the latter checked against the BiLayer's
                       reverse half
lengths                ``seq_lengths=``: the final carry is the one at each length (``nn.RNN`` documents that
                       outputs past a length are *not* zeroed, so y is compared on valid steps only, and the
                       upstream gradient of y is zero past each length, where y means nothing)
no initial state       ``initial_carry`` not passed (``initialize_carry``: zeros)
=====================  ==================================================================================

Not expressible (Flax has no such cell): GRU ``reset="before"``, LSTM peepholes and projection,
several layers (a stack of ``nn.RNN`` is a model, not an option). Every ``Dense`` runs in the
parameters' dtype (``param_dtype`` is the candidate's, so ``initialize_carry`` agrees with it).

float64. JAX computes in float32 unless ``jax_enable_x64`` is set. Each call of a candidate runs
inside ``jax.enable_x64(True)`` (float64) or ``jax.enable_x64(False)`` (float32): a context manager
that sets the option for the calling thread and restores the previous value when the call returns,
so a user's process keeps whatever setting it had (``jax.config.update`` is never called). Each
distinct configuration is ``jax.jit``-compiled once and cached in this module (XLA compiles again for
each new shape: about a second on a busy 2-core machine, which is what a Flax example costs).
"""

from __future__ import annotations

import functools

import numpy as np

from ..layouts import flax as flax_layout
from .adapters import LAYOUTS, Layout, _np, _time_major_to, _unpack, conventions_of, register_layout
from .strategies import Case, CellConfig

CELLS = flax_layout.CELLS


def import_flax():
    """``(jax, flax.linen)``, or ImportError saying which is missing."""
    import jax
    from flax import linen

    return jax, linen


def flax_version() -> str:
    import flax
    import jax

    return f"flax {flax.__version__} (jax {jax.__version__})"


def _valid(case: Case) -> np.ndarray | None:
    """(T, B) True on each sample's valid steps (None without lengths)."""
    if case.lengths is None:
        return None
    return np.arange(case.config.T)[:, None] < np.asarray(case.lengths)[None, :]


def _masked(case: Case, a: np.ndarray) -> np.ndarray:
    """A (T, B, ...) array with the steps past each length set to 0."""
    valid = _valid(case)
    return a if valid is None else np.where(valid[:, :, None], a, 0).astype(a.dtype)


def _unbatch(case: Case, state):
    if state is None or not case.config.unbatched:
        return state
    if isinstance(state, (tuple, list)):
        return tuple(_unbatch(case, s) for s in state)
    return np.asarray(state)[0]


class FlaxLayout(Layout):
    """One Flax cell in ``nn.RNN`` (or ``nn.Bidirectional``): see the module docstring."""

    name = "flax"
    CONVENTIONS, NOT_EXPRESSIBLE = conventions_of(name)

    def unsupported(self, config: CellConfig) -> str | None:
        if why := self.one_layer(config, "an nn.RNN is one layer (a stack is a model)", ("gru", "lstm", "rnn"),
                                 "a GRUCell, LSTMCell or SimpleCell"):
            return why
        opts = config.layers[0].opts
        if opts.get("reset", "after") != "after":
            return "Flax's GRUCell applies the reset gate after the recurrent product (reset='after')"
        if opts.get("proj_size") or opts.get("peepholes"):
            return "Flax's LSTMCell has no peepholes and no projection"
        return super().unsupported(config)

    def options(self, cell: str) -> dict:
        if cell == "gru":
            return {"reset": ("after",)}
        return {"peepholes": (False,), "proj": (False,)} if cell == "lstm" else {}

    def _params(self, case: Case):
        return case.layers[0]

    def _carry(self, case: Case, state):
        return None if state is None else _unbatch(case, flax_layout.state_to_flax(self._params(case), state))

    def arguments(self, case: Case) -> tuple:
        p = self._params(case)
        cell = p.fwd if case.config.bidirectional else p
        config = {"cell": case.config.layers[0].cell, "features": cell.hidden_size, "activation": getattr(cell, "activation", "tanh"),
                  "bidirectional": case.config.bidirectional}
        weights = {"params": flax_layout.to_flax(p), "config": config}
        args = (weights, _time_major_to(case, case.x), self._carry(case, None if case.state0 is None else case.state0[0]))
        if case.dy is not None:
            args += (_time_major_to(case, _masked(case, case.dy)), self._carry(case, case.dstate_T[0]))
        return args

    def _names(self, case: Case, prefix: str, which: str) -> list[str]:
        one = ["c", "h"] if case.config.layers[0].cell == "lstm" else ["h"]
        names = [f"{prefix}{n}_{which}" for n in one]
        return names + ([n + "_reverse" for n in names] if case.config.bidirectional else [])

    def _flat_carry(self, case: Case, carry, names) -> dict:
        """A carry's arrays in :meth:`_names` order: forward then backward, each (c, h) or h."""
        lstm = case.config.layers[0].cell == "lstm"
        dirs = carry if case.config.bidirectional else (carry,)
        if not isinstance(dirs, (tuple, list)) or len(dirs) != (2 if case.config.bidirectional else 1):
            raise TypeError(f"candidate: expected the carry as {'(forward, backward)' if case.config.bidirectional else 'one carry'}, got {type(carry).__name__}")
        arrays = []
        for c in dirs:
            if lstm and (not isinstance(c, (tuple, list)) or len(c) != 2):
                raise TypeError(f"candidate: an LSTM carry is the pair (c, h), got {type(c).__name__}")
            arrays.extend(c if lstm else (c,))
        return {n: _np(n, a) for n, a in zip(names, arrays)}

    def _y(self, case: Case, y_candidate_axes: np.ndarray) -> np.ndarray:
        valid = _valid(case)
        if valid is None:
            return y_candidate_axes
        return np.where(_time_major_to(case, valid[:, :, None]), y_candidate_axes, 0.0)

    @staticmethod
    def _flat_tree(tree, prefix: str = "dparams") -> dict:
        out = {}
        for k, v in tree.items():
            if hasattr(v, "items"):
                out.update(FlaxLayout._flat_tree(v, f"{prefix}/{k}"))
            else:
                out[f"{prefix}/{k}"] = _np(f"{prefix}/{k}", v)
        return out

    def reference_outputs(self, case, y, states_T, grads, dx, dstates0):
        out = {"y": self._y(case, _time_major_to(case, y))}
        out.update(self._flat_carry(case, self._carry(case, states_T[0]), self._names(case, "", "T")))
        if grads is not None:
            out["dx"] = _time_major_to(case, dx)
            if case.state0 is not None:
                out.update(self._flat_carry(case, self._carry(case, dstates0[0]), self._names(case, "d", "0")))
            out.update(self._flat_tree(flax_layout.to_flax(grads[0], gradient=True)))
        return out

    def candidate_outputs(self, case, result, grads: bool):
        y, carry, g = _unpack(result, grads)
        out = {"y": self._y(case, _np("y", y))}
        out.update(self._flat_carry(case, carry, self._names(case, "", "T")))
        if grads:
            if not isinstance(g, dict) or "params" not in g:
                raise TypeError(f"candidate: grads must be a dict with 'params', 'x' and 'state0', got {type(g).__name__}")
            out["dx"] = _np("grads['x']", g["x"])
            if case.state0 is not None and g.get("state0") is not None:
                out.update(self._flat_carry(case, g["state0"], self._names(case, "d", "0")))
            out.update(self._flat_tree(g["params"]))
        return out

    def describe(self, case: Case, name: str, index: tuple) -> str:
        idx = tuple(int(i) for i in index)
        where = ", ".join(map(str, idx))
        H = case.config.layers[0].H
        if name in ("y", "dx") and len(idx) >= 2:
            t, b = (idx[1], idx[0]) if case.config.batch_first else (idx[0], idx[1])
            if case.config.unbatched:
                t, b = idx[0], None
            row = "" if b is None else f", batch row {b}"
            if name == "dx":
                return f"dx[{where}] (step {t}{row}, input feature {idx[-1]})"
            d = (", reverse direction" if idx[-1] >= H else ", forward direction") if case.config.bidirectional else ""
            return f"y[{where}] (step {t}{row}{d}, unit {idx[-1] % H})"
        if name.startswith("dparams/"):
            parts = name.split("/")
            dense, leaf = parts[-2], parts[-1]
            direction = " reverse direction," if "backward_rnn" in parts else (" forward direction," if "forward_rnn" in parts else "")
            gate = f" gate {dense[1:]}," if len(dense) > 1 else ""
            if leaf == "kernel" and len(idx) == 2:
                what = "input feature" if dense[0] == "i" else "recurrent unit"
                return f"{name}[{where}] ({direction}{gate} {what} {idx[0]}, unit {idx[1]})".replace("( ", "(")
            return f"{name}[{where}] ({direction}{gate} unit {idx[-1]})".replace("( ", "(")
        return super().describe(case, name, index)


if "flax" not in LAYOUTS:
    register_layout(FlaxLayout())


@functools.lru_cache(maxsize=64)
def _program(cell_name: str, features: int, activation: str, dtype: str, bidirectional: bool, split: bool, batch_first: bool,
             grads: bool, cell_kwargs: tuple, rnn_kwargs: tuple):
    """One jitted ``(params, x, carry0, lengths[, dy, dcarry]) -> (y, carry_T[, (dparams, dx, dcarry0)])``
    for one configuration (XLA recompiles it per shape)."""
    jax, nn = import_flax()
    jdtype = np.dtype(dtype)

    def cell():
        kw = {"features": features, "param_dtype": jdtype}
        if cell_name == "SimpleCell":
            kw["activation_fn"] = nn.relu if activation == "relu" else nn.tanh
        kw.update(dict(cell_kwargs))
        return getattr(nn, cell_name)(**kw)

    tm = not batch_first
    rkw = dict(rnn_kwargs)
    if not bidirectional:
        module = nn.RNN(cell(), time_major=tm, return_carry=True, **rkw)

        def apply(params, x, carry0, lengths):  # nn.RNN holds its cell's tree under "cell"
            return module.apply({"params": {"cell": params}}, x, initial_carry=carry0, seq_lengths=lengths)
    elif not split:
        module = nn.Bidirectional(nn.RNN(cell(), **rkw), nn.RNN(cell(), **rkw), time_major=tm, return_carry=True)

        def apply(params, x, carry0, lengths):
            return module.apply({"params": params}, x, initial_carry=carry0, seq_lengths=lengths)
    else:
        fwd = nn.RNN(cell(), time_major=tm, return_carry=True, **rkw)
        bwd = nn.RNN(cell(), time_major=tm, return_carry=True, **{"reverse": True, "keep_order": True, **rkw})

        def apply(params, x, carry0, lengths):
            c0f, c0b = (None, None) if carry0 is None else carry0
            cf, yf = fwd.apply({"params": params["forward_rnn"]}, x, initial_carry=c0f, seq_lengths=lengths)
            cb, yb = bwd.apply({"params": params["backward_rnn"]}, x, initial_carry=c0b, seq_lengths=lengths)
            return (cf, cb), jax.numpy.concatenate([yf, yb], axis=-1)

    def run(params, x, carry0, lengths, dy=None, dcarry=None):
        def f(params, x, carry0):
            carry, y = apply(params, x, carry0, lengths)
            return y, carry

        if not grads:
            return f(params, x, carry0)
        (y, carry), vjp = jax.vjp(f, params, x, carry0)
        return y, carry, vjp((dy, dcarry))

    return jax.jit(run)


def _x64(jax):
    """JAX's thread-local ``jax_enable_x64`` context manager (``jax.experimental.enable_x64`` before it was public)."""
    found = getattr(jax, "enable_x64", None)
    if found is None:
        from jax.experimental import enable_x64 as found
    return found


def _tuples(a):
    """Nested lists -> tuples (JAX matches cotangents to outputs by pytree structure)."""
    if isinstance(a, (tuple, list)):
        return tuple(_tuples(v) for v in a)
    return a


def _numpy(tree):
    if tree is None:
        return None
    if isinstance(tree, (tuple, list)):
        return tuple(_numpy(v) for v in tree)
    if hasattr(tree, "items"):
        return {k: _numpy(v) for k, v in tree.items()}
    return np.asarray(tree)


class FlaxRNN:
    """A candidate that runs ``flax.linen.<cell_name>`` ("GRUCell", "LSTMCell", "OptimizedLSTMCell",
    "SimpleCell") through ``nn.RNN`` in ``dtype`` on JAX's CPU backend, with gradients from ``jax.vjp``.

    ``split_directions=True`` checks ``nn.RNN(reverse=True, keep_order=True)`` on its own (module
    docstring). ``cell_kwargs`` / ``rnn_kwargs`` go to every cell's / ``nn.RNN``'s constructor (a way
    to plant a wrong conversion, such as ``reverse=True`` on a forward layer)."""

    layout = "flax"
    grads = True
    max_layers = 1

    def __init__(self, cell_name: str = "GRUCell", *, dtype="float64", split_directions: bool = False,
                 cell_kwargs: dict | None = None, rnn_kwargs: dict | None = None, name: str | None = None):
        if cell_name not in CELLS:
            raise ValueError(f"cell_name: expected one of {', '.join(CELLS)}, got {cell_name!r}")
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype: expected float32 or float64, got {self.dtype}")
        for arg, value in (("cell_kwargs", cell_kwargs), ("rnn_kwargs", rnn_kwargs)):
            if value is not None and not isinstance(value, dict):
                raise TypeError(f"{arg}: expected a dict of constructor keywords, got {type(value).__name__}")
        self.cell_name, self.split_directions = cell_name, bool(split_directions)
        self.cell = flax_layout.KIND[cell_name]
        self.cell_kwargs, self.rnn_kwargs = dict(cell_kwargs or {}), dict(rnn_kwargs or {})
        self.conventions = tuple(LAYOUTS["flax"].CONVENTIONS)
        self.name = name or f"flax.linen.{cell_name}{' (reverse=True as its own nn.RNN)' if split_directions else ''}"

    def __repr__(self) -> str:
        return f"FlaxRNN({self.cell_name!r}, dtype={self.dtype.name!r}, split_directions={self.split_directions})"

    def __call__(self, weights, x, state0, dy=None, dstate_T=None, *, lengths=None, batch_first=False):
        jax, _ = import_flax()
        config, params = weights["config"], weights["params"]
        grads = dy is not None
        program = _program(
            self.cell_name, int(config["features"]), config["activation"], self.dtype.name, bool(config["bidirectional"]),
            self.split_directions and bool(config["bidirectional"]), bool(batch_first), grads,
            tuple(sorted(self.cell_kwargs.items())), tuple(sorted(self.rnn_kwargs.items())),
        )
        with _x64(jax)(self.dtype == np.float64):
            lens = None if lengths is None else jax.numpy.asarray(np.asarray(lengths, dtype=np.int32))
            args = (params, np.asarray(x), _tuples(state0), lens)
            if grads:
                out = program(*args, np.asarray(dy), _tuples(dstate_T))
            else:
                out = program(*args)
            out = jax.device_get(out)
        y, carry = np.asarray(out[0]), _numpy(out[1])
        if not grads:
            return y, carry
        dparams, dx, dcarry0 = out[2]
        return y, carry, {"params": _numpy(dparams), "x": np.asarray(dx), "state0": _numpy(dcarry0)}


def flax_rnn(cell_name: str = "GRUCell", *, dtype="float64", split_directions: bool = False, cell_kwargs: dict | None = None,
             rnn_kwargs: dict | None = None, name: str | None = None) -> FlaxRNN:
    """A candidate for ``flax.linen.<cell_name>`` in ``nn.RNN`` (see :class:`FlaxRNN`)."""
    return FlaxRNN(cell_name, dtype=dtype, split_directions=split_directions, cell_kwargs=cell_kwargs, rnn_kwargs=rnn_kwargs, name=name)


__all__ = ["CELLS", "FlaxLayout", "FlaxRNN", "flax_rnn", "flax_version", "import_flax"]
