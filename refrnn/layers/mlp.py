r"""Per-step MLP head: M dense layers applied to every timestep, as one product over T*B rows per layer.

The head has no recurrence: row (t, b) of the output depends on row (t, b) of the input only. So the
T*B rows of a sequence go through each layer together, one matrix product per layer, instead of T
small products: these layers parallelise over time where recurrent ones cannot, which is why a deep
RNN's per-step head costs so much less than its recurrent layers.

Equations (row-vector convention, ``phi_k`` the activation of layer k, ``a_0`` the input rows)::

    a_k = phi_k(a_{k-1} W_k^T + b_k)          k = 1..M
    out = a_M

Activations, named by ``DenseParams.activation``: ``"tanh"``, ``"relu"`` (``max(a, 0)``) and
``"identity"``. Each derivative is read from the layer's *output*, as the cells do
(``1 - a^2``, ``[a > 0]``, ``1``). :func:`init` makes the hidden layers ``tanh`` and the last layer
linear (``"identity"``), the usual regression/logit head.

A head is a tuple of :class:`DenseParams`, first layer first, the same convention as the layers of
:mod:`refrnn.layers.stack`; gradients come back as a tuple of the same shape.

Shapes: y (T, B, H); out (T, B, O); layer k: W (O_k, I_k), b (O_k,), with I_1 = H, I_{k+1} = O_k, O_M = O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from .._checks import float_array, instance, one_of
from ..cells._common import Params, check_weight, frozen, gradients, option, owned, size_of

ACTIVATIONS = ("tanh", "relu", "identity")


def _relu(a: np.ndarray) -> np.ndarray:
    return np.maximum(a, 0.0)


# name -> (phi, phi' written in terms of phi's output)
_PHI = {
    "tanh": (np.tanh, lambda out: 1.0 - out * out),
    "relu": (_relu, lambda out: (out > 0).astype(out.dtype)),
    "identity": (lambda a: a, None),  # None: the derivative is 1, skip the product
}


@dataclasses.dataclass(frozen=True)
class DenseParams(Params):
    """One dense layer ``a -> phi(a W^T + b)``; ``activation`` names ``phi`` (one of ``ACTIVATIONS``)."""

    W: np.ndarray
    b: np.ndarray
    activation: str = option("identity")

    def _check_shapes(self) -> None:
        one_of("activation", self.activation, ACTIVATIONS)
        name = type(self).__name__
        W = np.asarray(self.W)
        if W.ndim != 2:
            raise ValueError(f"{name}.W: expected a 2-d array of shape (O, I), got shape {W.shape}")
        check_weight(name, "b", self.b, ("O",), {"O": W.shape[0]})

    input_size = size_of("W", 1)
    output_size = size_of("W", 0)


class MLPCache(NamedTuple):
    """``a`` holds a_0..a_M as (T*B, .) row blocks (a_0 is the input); ``T``, ``B`` restore the shapes."""

    a: tuple
    T: int
    B: int


def check_layers(layers, name: str = "layers") -> tuple[DenseParams, ...]:
    """``layers`` as a tuple, or raise: a non-empty sequence of DenseParams whose sizes chain, one dtype."""
    if not isinstance(layers, Sequence) or isinstance(layers, (str, bytes)) or len(layers) == 0:
        raise TypeError(f"{name}: expected a non-empty sequence of DenseParams, got {type(layers).__name__}")
    layers = tuple(layers)
    for k, p in enumerate(layers):
        if not isinstance(p, DenseParams):
            raise TypeError(f"{name}[{k}]: expected DenseParams, got {type(p).__name__}")
    for k, (below, above) in enumerate(zip(layers, layers[1:])):
        if above.input_size != below.output_size:
            raise ValueError(
                f"{name}[{k + 1}]: input size {above.input_size} does not match {name}[{k}]'s output size {below.output_size}"
            )
        if above.dtype != below.dtype:
            raise TypeError(f"{name}[{k + 1}]: dtype {above.dtype} does not match {name}[{k}]'s dtype {below.dtype}")
    return layers


def init(
    sizes: Sequence[int],
    *,
    activation: str = "tanh",
    out_activation: str = "identity",
    rng=None,
    dtype=np.float64,
) -> tuple[DenseParams, ...]:
    """A head with ``len(sizes) - 1`` layers mapping ``sizes[0]`` features to ``sizes[-1]``.

    Hidden layers use ``activation``, the last ``out_activation``. Entries are uniform in
    ``(-1/sqrt(I), 1/sqrt(I))`` for a layer of input size I (``torch.nn.Linear``'s default).
    """
    if not isinstance(sizes, Sequence) or isinstance(sizes, (str, bytes)):
        raise TypeError(f"sizes: expected a sequence of layer widths (input, ..., output), got {type(sizes).__name__}")
    sizes = tuple(sizes)
    if len(sizes) < 2 or not all(isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n >= 1 for n in sizes):
        raise ValueError(f"sizes: expected at least two positive integers (input, ..., output), got {sizes!r}")
    one_of("activation", activation, ACTIVATIONS)
    one_of("out_activation", out_activation, ACTIVATIONS)
    rng = np.random.default_rng(rng)
    layers = []
    for k, (n_in, n_out) in enumerate(zip(sizes, sizes[1:])):
        bound = 1.0 / np.sqrt(n_in)
        W = rng.uniform(-bound, bound, size=(n_out, n_in)).astype(dtype)
        b = rng.uniform(-bound, bound, size=n_out).astype(dtype)
        layers.append(DenseParams(W, b, activation=out_activation if k == len(sizes) - 2 else activation))
    return tuple(layers)


def forward(layers, y) -> tuple[np.ndarray, MLPCache]:
    """Apply the head to every timestep of ``y``; returns ``(out, cache)``. ``out`` is a read-only view of the cache."""
    layers = check_layers(layers)
    first = layers[0]
    y = float_array("y", y, ("T", "B", "H"), {"H": first.input_size}, dtype=first.dtype)
    T, B, H = y.shape
    a = [owned(y.reshape(T * B, H))]  # the cache never holds a live reference to the caller's y
    for p in layers:
        phi, _ = _PHI[p.activation]
        a.append(phi(a[-1] @ p.W.T + p.b))  # one product over all T*B rows
    frozen(*a[1:])
    return a[-1].reshape(T, B, layers[-1].output_size), MLPCache(tuple(a), T, B)


def _check_cache(layers, cache) -> MLPCache:
    hint = "expected the MLPCache that forward returned for these layers"
    instance("cache", cache, MLPCache)
    a, T, B = cache
    sizes = [layers[0].input_size] + [p.output_size for p in layers]
    if not isinstance(a, tuple) or len(a) != len(sizes):
        raise ValueError(f"cache.a: {hint} ({len(sizes)} row blocks a_0..a_M), got {len(a) if isinstance(a, tuple) else type(a).__name__}")
    for k, (arr, n) in enumerate(zip(a, sizes)):
        if not isinstance(arr, np.ndarray) or arr.shape != (T * B, n) or arr.dtype != layers[0].dtype:
            got = f"{arr.shape} {arr.dtype}" if isinstance(arr, np.ndarray) else type(arr).__name__
            raise ValueError(f"cache.a[{k}]: expected shape (T*B, {n}) = {(T * B, n)} {layers[0].dtype}, got {got}; {hint}")
    return cache


def backward(layers, cache: MLPCache, dout) -> tuple[tuple[DenseParams, ...], np.ndarray]:
    """Backprop through the head. ``dout`` (T, B, O) is dL/dout; returns ``(grads, dy)``, grads a tuple of DenseParams."""
    layers = check_layers(layers)
    a, T, B = _check_cache(layers, cache)
    O = layers[-1].output_size
    dout = float_array("dout", dout, ("T", "B", "O"), {"T": T, "B": B, "O": O}, dtype=layers[-1].dtype)
    d = dout.reshape(T * B, O)  # dL/da_k, walking k = M..0
    grads = [None] * len(layers)
    for k in reversed(range(len(layers))):
        p = layers[k]
        dphi = _PHI[p.activation][1]
        d_pre = d if dphi is None else d * dphi(a[k + 1])  # gradient at a_{k-1} W_k^T + b_k
        grads[k] = gradients(p, dict(W=d_pre.T @ a[k], b=d_pre.sum(axis=0)), None, None, upstream="dout")[0]
        d = d_pre @ p.W
    return tuple(grads), d.reshape(T, B, layers[0].input_size)
