"""Matrix products through the one OpenBLAS the compiled kernels use (SciPy's, which numba calls).

NumPy's ``@`` runs in NumPy's own bundled OpenBLAS, a second library with its own thread pool.
Alternating the two pools back to back, as a training step does when NumPy products sit between
compiled forward and backward kernels, lets each pool's idle, spinning threads starve the other's
on a small machine. Code around the compiled training paths therefore makes its products here.
"""

from __future__ import annotations

import numpy as np

from ._kernels import input_products


def readonly(a: np.ndarray) -> np.ndarray:
    """A C-contiguous read-only view of ``a`` (a copy only when ``a`` is not C-contiguous).

    Read-only is part of an array's numba type: every array a kernel only reads goes in read-only,
    whatever the caller had (a frozen cache, a fresh ``dy``), so each kernel compiles once per dtype.
    """
    view = np.ascontiguousarray(a).view()
    view.setflags(write=False)
    return view


def product(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for 2-d ``a`` and ``b`` of one dtype, in SciPy's OpenBLAS; NumPy for empty operands
    (which the compiled call does not take). A C-contiguous operand goes in read-only and a
    transposed one (Fortran-ordered) as it is, so few signatures are compiled; anything else is
    copied to C order first."""
    if a.size == 0 or b.size == 0:
        return a @ b
    return input_products(_operand(a), _operand(b))


def _operand(a: np.ndarray) -> np.ndarray:
    if a.flags.f_contiguous and not a.flags.c_contiguous:
        return a
    return readonly(a)
