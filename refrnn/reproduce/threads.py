"""Thread counts for BLAS and Numba, set after NumPy is imported.

Why: on a shared 2-core machine, OpenBLAS's default of one thread per core makes the small
per-step products of training *slower*, by an order of magnitude when other processes hold the
cores (measured here: 50 ms an update with one thread, 770 ms with two, H = 256, B = 32, load 4.7).
``OPENBLAS_NUM_THREADS`` only works before NumPy loads, and ``refrnn`` imports NumPy first, so
this calls each loaded OpenBLAS's ``*_set_num_threads`` directly (what threadpoolctl does).
"""

from __future__ import annotations

import ctypes

_SETTERS = ("openblas_set_num_threads", "openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
            "scipy_openblas_set_num_threads64_")


def _loaded_openblas() -> list[str]:
    try:
        with open("/proc/self/maps") as fh:
            return sorted({line.split()[-1] for line in fh if "openblas" in line.lower() and "/" in line})
    except OSError:  # not Linux: leave the defaults
        return []


def set_threads(n: int, *, numba_too: bool = True) -> int:
    """Use ``n`` threads in every loaded OpenBLAS (NumPy's and SciPy's, which Numba calls) and in
    Numba's parallel loops. Returns the number of BLAS libraries it reached."""
    import numpy  # noqa: F401  (make sure NumPy's BLAS is loaded)

    try:
        import scipy.linalg  # noqa: F401  (SciPy's BLAS, the one np.dot inside njit uses)
    except ImportError:
        pass
    reached = 0
    for path in _loaded_openblas():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _SETTERS:
            fn = getattr(lib, name, None)
            if fn is not None:
                fn(ctypes.c_int(n))
                reached += 1
                break
    if numba_too:
        import numba

        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    return reached
