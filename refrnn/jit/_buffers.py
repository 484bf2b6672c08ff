"""Large buffers a training step takes again at its next call, so that their pages fault once.

A training cache is one block carved into its arrays (:func:`carved`) rather than one allocation
per array: seven ~3 MB arrays (LSTM, T=100, B=32, H=256) each fault on their pages at every step,
about 1,800 minor faults per jit forward, and are each too small for NumPy's 4 MB huge-page advice.

A training step at the paper's size (T=50, B=64, H=1024) allocates its cache (about 90 MB) in the
forward and as much again in the backward. glibc serves every block above 32 MB with fresh ``mmap``
pages and returns them at ``free``; each new page then faults when the compiled code first writes it.
NumPy advises huge pages for such blocks, and with the kernel's usual ``defrag=madvise`` a fault on an
advised block compacts memory first when free memory is fragmented, as it is once other code (NumPy's
BLAS, torch) has allocated and freed in between. Measured on 2 cores, the paper-size LSTM training
forward between other candidates of ``refrnn bench``: 107 ms with its pages already mapped, 173-283
ms when they were not (55-238 ms of it system time, in 83-194 huge-page faults); 133 ms with huge
pages off (43,000 small faults, 62-85 ms of system time).

So the step keeps its buffers here, by name, and takes one again when nothing outside holds a view
of it any more: NumPy views hold a reference to their base, so a base whose only references are this
module's is free. Each name keeps up to :data:`SLOTS` buffers of any sizes: a training loop still
holds step k's cache while it runs step k + 1, so one layer needs two, and a stack of two layers (or
two directions) four. The memory stays mapped until :func:`release` (``refrnn.jit.release_buffers``).
"""

from __future__ import annotations

import sys
import threading

import numpy as np

SLOTS = 4
_KEPT: dict[str, list[np.ndarray]] = {}
_LOCK = threading.Lock()


def _free_count() -> int:
    """References to a kept base that nothing else holds, as :func:`_base` counts them: its slot in
    the list, a local variable and getrefcount's argument (counted here, not assumed per version)."""
    kept = [np.empty(1)]
    base = kept[0]
    return sys.getrefcount(base)


_FREE = _free_count()


def _base(name: str, size: int, dtype: np.dtype) -> np.ndarray:
    """A 1-D buffer of ``size`` elements of ``dtype``, writable, that nothing outside this module
    holds, kept under ``name`` (the caller holds the lock and makes its views before releasing it).
    The buffers of a name are kept most recently used last; a new one takes the place of the least
    recently used free one when the name has :data:`SLOTS` already, and is not kept if none is free."""
    kept = _KEPT.setdefault(name, [])
    for i in range(len(kept)):  # not enumerate: its tuple would hold one more reference
        base = kept[i]
        if base.size == size and base.dtype == dtype and sys.getrefcount(base) <= _FREE:
            kept.append(kept.pop(i))
            base.flags.writeable = True  # the previous step froze it with its cache
            return base
    base = np.empty(size, dtype)
    if len(kept) >= SLOTS:
        for i in range(len(kept)):
            old = kept[i]
            if sys.getrefcount(old) <= _FREE:
                del kept[i]
                break
    if len(kept) < SLOTS:
        kept.append(base)
    return base


def carved(name: str, dtype, *shapes) -> tuple[np.ndarray, ...]:
    """``(base, a_1, ..., a_n)``: empty C-ordered arrays of ``shapes`` carved out of one block
    ``base``, each starting on a 64-byte boundary (a cache line), the block kept under ``name`` for
    the next call. The arrays' contents are whatever the block last held: the caller writes every
    element it reads. Freeze ``base`` with the arrays (:func:`refrnn.cells._common.frozen`): a
    read-only view of a writable base counts as writable to ``owned``, which would copy it."""
    dtype = np.dtype(dtype)
    line = 64 // dtype.itemsize
    sizes = [int(np.prod(shape)) for shape in shapes]
    padded = [-(-n // line) * line for n in sizes]
    with _LOCK:
        base = _base(name, sum(padded) + line, dtype)
        k = (-base.ctypes.data % 64) // dtype.itemsize
        out = [base]
        for shape, n, step in zip(shapes, sizes, padded):
            out.append(base[k : k + n].reshape(shape))
            k += step
    return tuple(out)


def empty(name: str, shape, dtype) -> np.ndarray:
    """``np.empty(shape, dtype)``, C-ordered, 64-byte aligned, from a block kept under ``name``."""
    return carved(name, dtype, tuple(shape))[1]


def release() -> int:
    """Drop every kept buffer (those still in use stay with their users); returns the bytes dropped
    from this module's hold."""
    with _LOCK:
        dropped = sum(b.nbytes for kept in _KEPT.values() for b in kept)
        _KEPT.clear()
    return dropped


def held() -> int:
    """Bytes this module holds now."""
    with _LOCK:
        return sum(b.nbytes for kept in _KEPT.values() for b in kept)
