"""Plain-array converters between refrnn's parameter containers and other libraries' layouts.

No framework is imported: state dicts go in as mappings of arrays (or tensors, read through
``.detach().cpu().numpy()``) and come out as mappings of NumPy arrays.
"""

from __future__ import annotations

import numpy as np


def to_numpy(name: str, value, *, weights: bool = False) -> np.ndarray:
    """A private NumPy copy of an array or framework tensor (the caller may keep training the source),
    floating-point, or an error naming ``name``.

    ``weights=True`` (the converters' parameters) also requires finite values and makes the copy
    read-only, so the parameter container built from it keeps it without a second copy
    (:func:`refrnn.cells._common.owned`)."""
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch
        value = value.detach().cpu().numpy()
    if value is None or isinstance(value, (str, bytes)):
        raise TypeError(f"{name}: expected a floating-point array, got {type(value).__name__}")
    try:
        arr = np.array(value, copy=True)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{name}: cannot be read as an array ({err}); got {type(value).__name__}") from None
    if arr.dtype.kind != "f":
        raise TypeError(f"{name}: expected a floating-point array, got dtype {arr.dtype}")
    if weights:
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name}: contains NaN or infinity (shape {arr.shape}); parameters must be finite")
        arr.setflags(write=False)
    return arr


def same_dtype(arrays: dict) -> None:
    """Every array of ``arrays`` (name -> array, None skipped) has the first one's dtype, or a TypeError
    names the first that differs (refrnn never casts silently)."""
    items = [(n, a) for n, a in arrays.items() if a is not None]
    for name, a in items[1:]:
        if a.dtype != items[0][1].dtype:
            raise TypeError(f"{name}: dtype {a.dtype} does not match {items[0][0]}'s dtype {items[0][1].dtype}")
