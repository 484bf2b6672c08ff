r"""Deep RNN: N stacked recurrent layers (any cells, mixed allowed) followed by an M-layer per-step MLP head.

Equations (``cell_l`` the cell of layer l, ``h^0_t = x_t``; the head as in :mod:`refrnn.layers.mlp`)::

    h^l_t  = cell_l(h^l_{t-1}, h^{l-1}_t)          l = 1..N, t = 1..T     (refrnn.layers.stack)
    out_t  = MLP(h^N_t)                             every t at once: one product over T*B rows per layer

The point of the split: the recurrent layers must be walked step by step
(layer by layer here, or along anti-diagonals in :mod:`refrnn.layers.wavefront`), while the head, having no
connection across time, costs M plain matrix products however long the sequence.

The recurrent part is :mod:`refrnn.layers.stack` and the head is :mod:`refrnn.layers.mlp`; this module only joins
them and checks that they fit. States are those of the stack: a tuple with one entry per layer, bottom
first, each in its cell's form (``h`` for a GRU, ``(h, c)`` for an LSTM).

Shapes: x (T, B, D); out (T, B, O); hidden sizes H_1..H_N per layer; the head maps H_N to O.
"""

from __future__ import annotations

import dataclasses
import functools
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from . import mlp, stack
from .._checks import positive_int
from .._moved import renamed
from ..cells import gru, module_for
from .mlp import DenseParams


@dataclasses.dataclass(frozen=True)
class DeepRNN:
    """The parameters of a deep RNN: ``layers`` (cell parameters, bottom first) and ``head`` (DenseParams, first first).

    Gradients come back in the same class. For tools that walk a flat sequence of parameter
    containers (:func:`refrnn.gradcheck`), :meth:`parts` flattens the model and
    :meth:`with_parts` rebuilds it::

        def fwd(parts, x, s0):
            return forward(model.with_parts(parts), x, s0)

        def bwd(parts, cache, dout, ds):
            grads, dx, ds0 = backward(model.with_parts(parts), cache, dout, ds)
            return grads.parts(), dx, ds0

        gradcheck(model.parts(), x, state0, forward=fwd, backward=bwd)   # state0 given: not None
    """

    layers: tuple
    head: tuple

    def __post_init__(self):
        # Cells first: stack._layers reads hidden_size, which a non-cell container (a DenseParams) lacks.
        if isinstance(self.layers, Sequence) and not isinstance(self.layers, (str, bytes)):
            for k, p in enumerate(self.layers):
                try:
                    module_for(p)
                except TypeError as err:
                    raise TypeError(f"layers[{k}]: {err}") from None
        layers = stack._layers(self.layers)
        head = mlp.check_layers(self.head, name="head")
        if head[0].input_size != layers[-1].output_size:
            raise ValueError(
                f"head[0]: input size {head[0].input_size} does not match layers[{len(layers) - 1}]'s output size "
                f"{layers[-1].output_size}"
            )
        for name, p in [(f"layers[{k}]", p) for k, p in enumerate(layers)] + [("head[0]", head[0])]:
            if p.dtype != layers[0].dtype:
                raise TypeError(f"{name}: dtype {p.dtype} does not match layers[0]'s dtype {layers[0].dtype}")
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "head", head)

    @property
    def dtype(self) -> np.dtype:
        return self.layers[0].dtype

    @property
    def input_size(self) -> int:
        return self.layers[0].input_size

    @property
    def hidden_size(self) -> int:
        """The output width of the top recurrent layer (the head's input size)."""
        return self.layers[-1].output_size

    @property
    def output_size(self) -> int:
        return self.head[-1].output_size

    def parts(self) -> tuple:
        """Every parameter container in order: the recurrent layers, then the head's layers."""
        return self.layers + self.head

    def with_parts(self, parts: Sequence) -> "DeepRNN":
        """A model of the same structure built from ``parts`` (as :meth:`parts` orders them)."""
        n = len(self.layers) + len(self.head)
        if not isinstance(parts, Sequence) or len(parts) != n:
            raise ValueError(f"parts: expected a sequence of {n} parameter containers, got {type(parts).__name__}")
        parts = tuple(parts)
        return DeepRNN(parts[: len(self.layers)], parts[len(self.layers) :])

    def astype(self, dtype) -> "DeepRNN":
        return self.with_parts([p.astype(dtype) for p in self.parts()])


class DeepCache(NamedTuple):
    stack: stack.StackCache  # the recurrent layers'
    head: mlp.MLPCache


def _former_argument_order(init_fn):
    """``init`` once took ``(input_size, hidden_size, output_size, cell=gru, ...)``; it now takes the
    cell first, as :func:`refrnn.layers.stack.init` does. A call in the former order (an integer
    first) still works for one release, with a DeprecationWarning."""

    @functools.wraps(init_fn)
    def call(*args, **kwargs):
        if args and isinstance(args[0], (int, np.integer)) and not isinstance(args[0], bool):
            warnings.warn(
                "deep.init(input_size, hidden_size, output_size, cell=...) is deprecated: pass the cell first, "
                "deep.init(cell, input_size, hidden_size, output_size, ...), as stack.init takes it",
                DeprecationWarning,
                stacklevel=2,
            )
            return init_fn(kwargs.pop("cell", gru), *args, **kwargs)
        return init_fn(*args, **kwargs)

    return call


@_former_argument_order
def init(
    cell,
    input_size: int,
    hidden_size: int,
    output_size: int,
    *,
    num_layers: int = 1,
    bidirectional: bool = False,
    head_layers: int = 1,
    head_hidden: int | None = None,
    activation: str = "tanh",
    rng=None,
    dtype=np.float64,
    **cell_options,
) -> DeepRNN:
    """``num_layers`` layers of ``cell`` (a cell module; ``cell_options`` go to its ``init``), built
    by :func:`refrnn.layers.stack.init` with the same arguments, and a head of ``head_layers`` dense
    layers (hidden width ``head_hidden``, default ``hidden_size``; ``activation`` on the hidden ones,
    the last linear) from the top layer's output to ``output_size``.

    Mixed stacks: build the layers yourself and call ``DeepRNN(layers, head)``.
    """
    for name, n in [("output_size", output_size), ("head_layers", head_layers)] + (
        [] if head_hidden is None else [("head_hidden", head_hidden)]
    ):
        positive_int(name, n)
    rng = np.random.default_rng(rng)
    layers = stack.init(cell, input_size, hidden_size, num_layers, bidirectional=bidirectional, rng=rng, dtype=dtype,
                        **cell_options)
    width = hidden_size if head_hidden is None else head_hidden
    sizes = (layers[-1].output_size,) + (width,) * (head_layers - 1) + (output_size,)
    return DeepRNN(layers, mlp.init(sizes, activation=activation, rng=rng, dtype=dtype))


def _model(model) -> DeepRNN:
    if not isinstance(model, DeepRNN):
        raise TypeError(f"model: expected DeepRNN, got {type(model).__name__}")
    return model


def zero_state(model: DeepRNN, batch: int) -> tuple:
    return tuple(module_for(p).zero_state(p, batch) for p in _model(model).layers)


def forward(model: DeepRNN, x, state0=None, *, backend: str = "reference") -> tuple[np.ndarray, tuple, DeepCache]:
    """Run the stack over ``x`` and the head over every step; returns ``(out, states_T, cache)``.

    ``state0`` is None (zeros) or one state per layer, bottom first; ``backend`` as in
    :func:`refrnn.layers.stack.forward` (the cache keeps it for :func:`backward`).
    """
    model = _model(model)
    y, states_T, stack_cache = stack.forward(model.layers, x, state0, backend=backend)
    out, head_cache = mlp.forward(model.head, y)
    return out, states_T, DeepCache(stack_cache, head_cache)


@renamed(dstates_T="dstate_T")
def backward(model: DeepRNN, cache: DeepCache, dout, dstate_T=None) -> tuple[DeepRNN, np.ndarray, tuple]:
    """Backprop through the head, then through time and the layers; returns ``(grads, dx, dstates0)``.

    ``dout`` (T, B, O) is dL/dout; ``dstate_T`` is None (zero) or one state gradient per layer.
    ``grads`` is a :class:`DeepRNN`.
    """
    model = _model(model)
    if not isinstance(cache, DeepCache):
        raise TypeError(f"cache: expected the DeepCache that forward returned for this model, got {type(cache).__name__}")
    head_grads, dy = mlp.backward(model.head, cache.head, dout)
    layer_grads, dx, dstates0 = stack.backward(model.layers, cache.stack, dy, dstate_T)
    return DeepRNN(layer_grads, head_grads), dx, dstates0


__all__ = ["DeepRNN", "DeepCache", "DenseParams", "backward", "forward", "init", "zero_state"]
