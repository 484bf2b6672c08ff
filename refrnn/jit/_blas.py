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
import os

# Symbol spellings of the functions below: plain OpenBLAS, and the scipy-openblas wheels (32/64-bit ints).
_SPELLINGS = (("openblas_", ""), ("scipy_openblas_", ""), ("scipy_openblas_", "64_"), ("openblas_", "64_"))


@functools.cache
def _loaded() -> tuple:
    """``(path, function)`` of every OpenBLAS loaded in this process, once SciPy's is loaded too;
    ``function(name)`` is that library's ``openblas_<name>`` in its own spelling."""
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
        for prefix, suffix in _SPELLINGS:
            if getattr(lib, f"{prefix}get_num_threads{suffix}", None) is not None:
                found.append((path, functools.partial(_function, lib, prefix, suffix)))
                break
    return tuple(found)


def _function(lib, prefix, suffix, name):
    return getattr(lib, f"{prefix}{name}{suffix}", None)


@functools.cache
def _libraries() -> tuple:
    """(set, get) of the thread count of every loaded OpenBLAS."""
    found = []
    for _, function in _loaded():
        setter, getter = function("set_num_threads"), function("get_num_threads")
        if setter is not None and getter is not None:
            setter.argtypes, setter.restype, getter.restype = [ctypes.c_int], None, ctypes.c_int
            found.append((setter, getter))
    return tuple(found)


def describe() -> list[dict]:
    """Every loaded OpenBLAS: ``path``, ``owner`` (the package that bundles it: "numpy", "scipy"),
    ``config`` (version and build options), ``core`` (the CPU kernel set it runs: the one
    ``OPENBLAS_CORETYPE`` forces, else the one it detected) and ``threads``."""
    out = []
    for path, function in _loaded():
        info = {"path": path, "owner": next((o for o in ("numpy", "scipy", "torch") if f"{o}.libs" in path or f"/{o}/" in path), "other")}
        for key, name in (("config", "get_config"), ("core", "get_corename")):
            f = function(name)
            if f is not None:
                f.restype = ctypes.c_char_p
                info[key] = f().decode(errors="replace").strip()
        getter = function("get_num_threads")
        getter.restype = ctypes.c_int
        info["threads"] = getter()
        out.append(info)
    return out


def forced_core() -> str | None:
    """The core type the environment forces on OpenBLAS (``OPENBLAS_CORETYPE``), or None.

    A forced type is read when each library loads: a kernel set older than the CPU (Haswell's AVX2
    on an AVX-512 machine) runs at a fraction of the native rate, and torch's oneDNN ignores the
    variable, so a comparison with torch under it is not what a user's machine would show."""
    return os.environ.get("OPENBLAS_CORETYPE") or None


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
