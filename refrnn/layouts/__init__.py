"""Plain-array converters between refrnn's parameter containers and other libraries' layouts.

No framework is imported: state dicts go in as mappings of arrays (or tensors, read through
``.detach().cpu().numpy()``) and come out as mappings of NumPy arrays.
"""

from __future__ import annotations

import numpy as np


def to_numpy(name: str, value) -> np.ndarray:
    """A private NumPy copy of an array or framework tensor (the caller may keep training the source)."""
    if hasattr(value, "detach"):  # torch.Tensor, without importing torch
        value = value.detach().cpu().numpy()
    arr = np.array(value, copy=True)
    if arr.dtype.kind != "f":
        raise TypeError(f"{name}: expected a floating-point array, got dtype {arr.dtype}")
    return arr
