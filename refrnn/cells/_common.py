"""Pieces every reference cell shares: the parameter-container base, activations, gate splitting."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from .._checks import FLOAT_DTYPES, float_array


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


@dataclasses.dataclass(frozen=True)
class Params:
    """Base of every parameter container: a frozen dataclass of named float arrays.

    Subclasses list their array fields first; non-array fields (conventions, flags) are declared with
    ``metadata={"array": False}``. Gradients are returned in the same class, so ``grads.W_h`` is the
    gradient of ``params.W_h``. An optional array field (an LSTM's peepholes or projection) defaults
    to ``None``; an instance's :meth:`array_names`, :meth:`arrays` and :meth:`map` skip it while it is
    ``None``, so the parameters a model does not have are never checked, mapped or differentiated.
    """

    def __post_init__(self):
        dtypes = set()
        for name in self.array_names():
            arr = np.asarray(getattr(self, name))
            if arr.dtype not in FLOAT_DTYPES:
                raise TypeError(f"{type(self).__name__}.{name}: expected float32 or float64, got dtype {arr.dtype}")
            object.__setattr__(self, name, arr)
            dtypes.add(arr.dtype)
        if len(dtypes) > 1:
            found = ", ".join(f"{n}={getattr(self, n).dtype}" for n in self.array_names())
            raise TypeError(f"{type(self).__name__}: all arrays must share one dtype, got {found}")
        self._check_shapes()
        for name in self.array_names():
            if not np.all(np.isfinite(getattr(self, name))):
                raise ValueError(f"{type(self).__name__}.{name}: contains NaN or infinity; parameters must be finite")

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

    def map(self, fn) -> "Params":
        """The same container with ``fn`` applied to every array (options are kept)."""
        return self.replace(**{name: fn(arr) for name, arr in self.arrays().items()})

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
