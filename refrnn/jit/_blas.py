"""Thread counts of the loaded OpenBLAS libraries (NumPy's, and SciPy's, which ``np.dot`` inside numba
calls), set at run time.

Why: a kernel that is itself parallel (a ``prange``) and calls BLAS from its threads, or right after
NumPy's BLAS ran on every core, oversubscribes the cores. OpenBLAS's worker threads keep spinning
for a while after each call and take the cores from numba's threads (measured, 2 cores, the block-
sparse conditional GRU at B = 64, H = 1024: dense path 130-150 ms with BLAS on two threads, 85-90 ms
with BLAS on one thread and numba's loop on two). ``OPENBLAS_NUM_THREADS`` only works before a
library loads, and NumPy is loaded before any of refrnn, so this calls each library's own
``*_set_num_threads`` / ``*_get_num_threads`` (what threadpoolctl does). Process-wide: other threads'
BLAS calls see the limit while it is set. Linux only (``/proc/self/maps``); elsewhere a no-op.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools

_NAMES = (  # (setter, getter) by symbol prefix: plain OpenBLAS, and the scipy-openblas wheels (32/64-bit ints)
    ("openblas_set_num_threads", "openblas_get_num_threads"),
    ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
    ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
    ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
)


@functools.cache
def _libraries() -> tuple:
    """(set, get) of every OpenBLAS loaded in this process, once SciPy's is loaded too."""
    import numpy  # noqa: F401

    try:
        import scipy.linalg  # noqa: F401  (SciPy's BLAS: the one np.dot inside njit uses)
    except ImportError:
        pass
    try:
        with open("/proc/self/maps") as fh:
            paths = sorted({line.split()[-1] for line in fh if "openblas" in line.lower() and "/" in line})
    except OSError:
        return ()
    found = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for set_name, get_name in _NAMES:
            setter, getter = getattr(lib, set_name, None), getattr(lib, get_name, None)
            if setter is not None and getter is not None:
                setter.argtypes, setter.restype, getter.restype = [ctypes.c_int], None, ctypes.c_int
                found.append((setter, getter))
                break
    return tuple(found)


def get_threads() -> list[int]:
    """The thread count of each loaded OpenBLAS."""
    return [get() for _, get in _libraries()]


def set_threads(n: int) -> int:
    """Use ``n`` threads in every loaded OpenBLAS; returns how many libraries it reached."""
    for set_, _ in _libraries():
        set_(n)
    return len(_libraries())


@contextlib.contextmanager
def threads(n: int):
    """``with threads(1): ...`` runs the block with every OpenBLAS on ``n`` threads, then restores them."""
    libs = _libraries()
    saved = [get() for _, get in libs]
    for set_, _ in libs:
        set_(n)
    try:
        yield
    finally:
        for (set_, _), k in zip(libs, saved):
            set_(k)
