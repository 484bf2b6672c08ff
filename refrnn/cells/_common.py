"""Pieces every reference cell shares: the parameter-container base, activations, gate splitting, and the
two ownership rules.

Ownership. Nothing refrnn keeps (a parameter container's arrays, a cache's arrays) may change after it
was made, so nothing can slip past a check or make backward disagree with forward:

* :func:`owned` is the one rule: an array nobody can write (read-only along its whole chain of bases)
  is kept as it is; any other array is copied once and the copy made read-only. Parameter containers
  apply it to every array on construction (so also on ``replace``/``map``/``astype``), and so does every
  cache made with :func:`cache_fields` (so ``forward`` never holds a live reference to the caller's ``x``).
  Arrays a cell computes itself are frozen in place (:func:`frozen`) and then kept without a copy.
* :func:`check_cache` is what every ``backward`` calls first: the cache must be the cell's own cache
  class with arrays of the shapes and dtype these parameters produce, else ``TypeError``/``ValueError``
  naming ``cache`` and what was expected.
* :func:`gradients` is how every ``backward`` returns: it refuses gradients that overflowed, by the
  upstream gradient's name, instead of letting the container report "parameters must be finite".
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from .._checks import FLOAT_DTYPES, _describe, as_array, count, float_array, instance


def _writable_somewhere(a) -> bool:
    """Whether anything may still write the memory of ``a``: it, or an array it is a view of, is writable,
    or its memory belongs to another object (a mutable buffer, a framework tensor)."""
    while isinstance(a, np.ndarray):
        if a.flags.writeable:
            return True
        a = a.base
    return a is not None and not isinstance(a, bytes)


def owned(a: np.ndarray) -> np.ndarray:
    """``a`` if nothing can write its memory, else a read-only copy (one copy, same memory order).

    The copy is handed out as a view of a read-only base, so ``setflags(write=True)`` on it raises.
    """
    if not _writable_somewhere(a):
        return a
    copy = np.array(a, copy=True, order="K")
    copy.setflags(write=False)
    return copy.view()


def zero_h(params, batch: int) -> np.ndarray:
    """The all-zero state (batch, H) of a cell whose state is the one array ``h`` (GRU, RNN, ccgru)."""
    return np.zeros((count("batch", batch), params.hidden_size), dtype=params.dtype)


def torch_uniform(rng, hidden_size: int, dtype):
    """``u(*shape)``: an array of ``shape`` drawn from U(-1/sqrt(H), 1/sqrt(H)), PyTorch's
    initialisation of every recurrent weight and bias, from ``rng`` (a seed or a Generator)."""
    rng = np.random.default_rng(rng)
    k = 1.0 / np.sqrt(hidden_size)
    return lambda *shape: rng.uniform(-k, k, size=shape).astype(dtype)


def check_x_h0(params, cls, x, h0) -> tuple[np.ndarray, np.ndarray]:
    """``params`` of class ``cls``, ``x`` (T, B, D) and ``h0`` (B, H) checked; None means zeros."""
    instance("params", params, cls)
    x = float_array("x", x, ("T", "B", "D"), {"D": params.input_size}, dtype=params.dtype)
    return x, check_h0(params, h0, x.shape[1])


def check_h0(params, h0, B: int) -> np.ndarray:
    """``h0`` (B, H) checked against ``params`` (its class is the caller's to check); None means zeros."""
    if h0 is None:
        return zero_h(params, B)
    return float_array("state0", h0, ("B", "H"), {"B": B, "H": params.hidden_size}, dtype=params.dtype)


def sigmoid(a: np.ndarray) -> np.ndarray:
    # The same formula PyTorch and cuDNN use, so float64 results agree to the last bits. For very
    # negative a, exp(-a) overflows to inf and 1/inf is the correct limit 0: silence that warning.
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-a))


def split_gates(a: np.ndarray, gates: tuple[str, ...], axis: int = -1) -> tuple[np.ndarray, ...]:
    """Views of the gate blocks of ``a`` along ``axis``, in the order ``gates`` lists them."""
    return tuple(np.split(a, len(gates), axis=axis))


def gate_rows(gates: tuple[str, ...], name: str, hidden: int) -> slice:
    """The row slice of gate ``name`` in a stacked weight of shape (len(gates)*H, ...)."""
    k = gates.index(name)
    return slice(k * hidden, (k + 1) * hidden)


class _class_or_instance:
    """A method that receives the class, and the instance when called on one (``None`` on the class)."""

    def __init__(self, fn):
        self.fn = fn

    def __get__(self, obj, cls):
        return functools.partial(self.fn, cls, obj)


class size_of:
    """A read-only size of a parameter container, read off one of its arrays: ``shape[axis] // per``.

    The containers declare their sizes with it, next to the fields, as the shapes of the equations
    give them (``hidden_size = size_of("W_h", 0, per=4)``: ``W_h`` is (4H, H)).
    """

    def __init__(self, field: str, axis: int, per: int = 1, doc: str | None = None):
        self.field, self.axis, self.per = field, axis, per
        self.__doc__ = doc or f"{field}.shape[{axis}]" + (f" // {per}" if per != 1 else "")

    def __get__(self, obj, cls=None):
        if obj is None:
            return self
        return getattr(obj, self.field).shape[self.axis] // self.per


@dataclasses.dataclass(frozen=True)
class Params:
    """Base of every parameter container: a frozen dataclass of named float arrays.

    Every array is the container's own and read-only (:func:`owned`): editing the array it was built
    from, or trying to edit ``params.W_x`` in place, cannot change it. Subclasses list their array fields first; non-array fields (conventions, flags) are declared with
    ``metadata={"array": False}``. Gradients are returned in the same class, so ``grads.W_h`` is the
    gradient of ``params.W_h``. An optional array field (an LSTM's peepholes or projection) defaults
    to ``None``; an instance's :meth:`array_names`, :meth:`arrays` and :meth:`map` skip it while it is
    ``None``, so the parameters a model does not have are never checked, mapped or differentiated.
    """

    def __post_init__(self):
        dtypes = set()
        for name in self.array_names():
            arr = as_array(f"{type(self).__name__}.{name}", getattr(self, name))
            if arr.dtype not in FLOAT_DTYPES:
                raise TypeError(f"{type(self).__name__}.{name}: expected float32 or float64, got dtype {arr.dtype}")
            object.__setattr__(self, name, owned(arr))  # see the module docstring: read-only, never shared
            dtypes.add(arr.dtype)
        if len(dtypes) > 1:
            found = ", ".join(f"{n}={getattr(self, n).dtype}" for n in self.array_names())
            raise TypeError(f"{type(self).__name__}: all arrays must share one dtype, got {found}")
        self._check_shapes()
        for name in self.array_names():
            if not np.all(np.isfinite(getattr(self, name))):
                raise ValueError(f"{type(self).__name__}.{name}: contains NaN or infinity; parameters must be finite")

    def __setstate__(self, state: dict) -> None:
        # pickle and copy.deepcopy restore the fields without __post_init__: keep the ownership rule there too
        for name, value in state.items():
            object.__setattr__(self, name, owned(value) if isinstance(value, np.ndarray) else value)

    def _check_shapes(self) -> None:  # pragma: no cover - every cell overrides this
        raise NotImplementedError

    @_class_or_instance
    def array_names(cls, self=None) -> tuple[str, ...]:
        """The array fields: all of them on the class, those not ``None`` on an instance."""
        names = tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get("array", True))
        return names if self is None else tuple(n for n in names if getattr(self, n) is not None)

    def arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self.array_names()}

    @property
    def dtype(self) -> np.dtype:
        return getattr(self, self.array_names()[0]).dtype

    @property
    def output_size(self) -> int:
        """The width of the cell's output ``y`` (what a layer above receives): ``hidden_size`` unless a
        cell says otherwise (an LSTM with a projection outputs ``proj_size``)."""
        return self.hidden_size

    def replace(self, **changes) -> "Params":
        return dataclasses.replace(self, **changes)

    def map(self, fn, *others) -> "Params":
        """The same container with ``fn(a, *b)`` applied to every array ``a`` and the arrays ``b`` of the
        same name in ``others`` (containers of the same class and shapes: gradients, optimiser moments);
        options are kept. An Adam step is ``p = p.map(lambda w, m, v: w - lr * m / (sqrt(v) + eps), m, v)``."""
        mine = self.arrays()
        theirs = []
        for k, other in enumerate(others):
            if type(other) is not type(self):
                raise TypeError(f"others[{k}]: expected a {type(self).__name__} like the container mapped over, got {type(other).__name__}")
            arrays = other.arrays()
            for name, arr in mine.items():
                if name not in arrays or np.shape(arrays[name]) != arr.shape:
                    got = "no array" if name not in arrays else f"shape {np.shape(arrays[name])}"
                    raise ValueError(f"others[{k}].{name}: expected shape {arr.shape} like the container mapped over, got {got}")
            theirs.append(arrays)
        return self.replace(**{name: fn(arr, *(t[name] for t in theirs)) for name, arr in mine.items()})

    def astype(self, dtype) -> "Params":
        return self.map(lambda a: a.astype(dtype))


def option(default):
    """A non-array field of a parameter container (a convention name, a flag)."""
    return dataclasses.field(default=default, metadata={"array": False})


def check_weight(owner: str, name: str, arr: np.ndarray, letters: tuple[str, ...], sizes: dict) -> None:
    float_array(f"{owner}.{name}", arr, letters, sizes, finite=False)


def frozen(*arrays: np.ndarray) -> None:
    """Make cache arrays read-only, so an output that is a view of the cache cannot be edited in place
    and silently corrupt a later backward pass."""
    for a in arrays:
        a.setflags(write=False)


# ----------------------------------------------------------------------------------------------------
# Caches


def cache_fields(**shapes):
    """Class decorator for a cell's cache (a NamedTuple): ``shapes`` maps each array field to its shape
    letters (``"T+1"`` for the T+1 states; a trailing ``bool`` for a boolean field).

    Constructing the cache applies :func:`owned` to every array field, wherever the cache is built (the
    reference cell or a fast twin): an array the caller can still write (``x``) is copied, the cell's
    own frozen arrays are kept. :func:`check_cache` reads ``shapes`` back.
    """

    def decorate(cls):
        base_new = cls.__new__

        def __new__(klass, *args, **kwargs):
            self = base_new(klass, *args, **kwargs)
            fixed = {}
            for name in shapes:
                value = getattr(self, name)
                if isinstance(value, np.ndarray):
                    kept = owned(value)
                    if kept is not value:
                        fixed[name] = kept
            return self._replace(**fixed) if fixed else self

        cls.__new__ = __new__
        cls.SHAPES = shapes
        return cls

    return decorate


def check_cache(cache, cls, params, sizes: dict, present: dict | None = None):
    """``cache`` if it is a ``cls`` whose arrays have the shapes and dtype ``params`` produce, else raise.

    ``sizes`` gives the letters the parameters fix (D, H, ...); T and B are read from ``cache.x``.
    ``present`` maps optional fields to whether these parameters need them (``None``: either).
    """
    hint = f"expected the {cls.__name__} that forward returned for these {type(params).__name__}"
    if not isinstance(cache, cls):
        raise TypeError(f"cache: {hint}, got {type(cache).__name__}")
    x = cache.x
    if not isinstance(x, np.ndarray) or x.ndim != 3:
        raise TypeError(f"cache.x: {hint}, whose x is a (T, B, D) array; got {type(x).__name__} {np.shape(x)}")
    T, B = x.shape[:2]
    sizes = {"T": T, "T+1": T + 1, "B": B, **sizes}
    present = present or {}
    for name, letters in cls.SHAPES.items():
        arr = getattr(cache, name)
        need = present.get(name, True)
        if arr is None or need is False:
            if (arr is None) != (need is False) and need is not None:
                state = "has no" if arr is None else "has a"
                raise ValueError(f"cache.{name}: this cache {state} {name}, but these parameters {'do not use' if arr is not None else 'need'} one; {hint}")
            continue
        dtype = np.dtype(bool) if letters[-1] is bool else params.dtype
        letters = tuple(l for l in letters if l is not bool)
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"cache.{name}: expected an array, got {type(arr).__name__}; {hint}")
        if arr.dtype != dtype:
            raise TypeError(f"cache.{name}: dtype {arr.dtype} does not match {dtype}; {hint}")
        want = tuple(sizes[l] for l in letters)
        if arr.shape != want:
            raise ValueError(f"cache.{name}: expected shape {_describe(letters, sizes)}, got shape {arr.shape}; {hint}")
    return cache


# ----------------------------------------------------------------------------------------------------
# Gradients


def _finite(a) -> bool:
    return all(np.all(np.isfinite(leaf)) for leaf in (a if isinstance(a, tuple) else (a,)) if leaf is not None)


def gradients(params, arrays: dict, dx: np.ndarray, dstate0, upstream: str = "dy"):
    """``(grads, dx, dstate0)`` with ``grads`` ``params`` with ``arrays`` put in (frozen in place: no copy).

    A gradient that overflowed to inf/NaN (finite but huge ``dy``, ``dstate_T`` or cached values) is
    refused by the upstream gradient's name rather than reported as non-finite parameters.
    """
    for name, arr in [*arrays.items(), ("dx", dx), ("dstate0", dstate0)]:
        if arr is not None and not _finite(arr):
            raise ValueError(
                f"{upstream}: the gradient {name} overflowed to inf/NaN in {params.dtype}; the upstream gradients "
                f"({upstream}, the final-state gradient) or the cached forward values are too large"
            )
    frozen(*(a for a in arrays.values() if a is not None))
    return params.replace(**arrays), dx, dstate0


def map_params(fn, params, *others):
    """``fn`` over the arrays of ``params`` and of ``others`` of the same structure: one container, or a
    (nested) sequence of them such as a stack's layers. The optimiser-loop companion of
    :meth:`Params.map`: ``layers = map_params(lambda w, g: w - lr * g, layers, grads)``."""
    if isinstance(params, Params):
        return params.map(fn, *others)
    if isinstance(params, (tuple, list)):
        for k, other in enumerate(others):
            if not isinstance(other, (tuple, list)) or len(other) != len(params):
                got = f"{type(other).__name__} of length {len(other)}" if isinstance(other, (tuple, list)) else type(other).__name__
                raise ValueError(f"others[{k}]: expected a sequence of {len(params)} like params, got {got}")
        return tuple(map_params(fn, p, *(o[i] for o in others)) for i, p in enumerate(params))
    raise TypeError(f"params: expected a parameter container or a sequence of them, got {type(params).__name__}")
