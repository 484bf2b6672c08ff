"""Thread counts for BLAS and Numba, set after NumPy is imported.

Why: on a shared 2-core machine, OpenBLAS's default of one thread per core makes the small
per-step products of training *slower*, by an order of magnitude when other processes hold the
cores (measured here: 50 ms an update with one thread, 770 ms with two, H = 256, B = 32, load 4.7).
``OPENBLAS_NUM_THREADS`` only works before NumPy loads, and ``refrnn`` imports NumPy first, so the
libraries' own setters are called (:mod:`refrnn.jit._blas`).
"""

from __future__ import annotations


def set_threads(n: int, *, numba_too: bool = True) -> int:
    """Use ``n`` threads in every loaded OpenBLAS (NumPy's and SciPy's, which Numba calls) and in
    Numba's parallel loops. Returns the number of BLAS libraries it reached."""
    from ..jit import _blas

    reached = _blas.set_threads(n)
    if numba_too:
        import numba

        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    return reached
