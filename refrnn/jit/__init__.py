"""Fast paths compiled with numba (CPU), one module per reference cell, same arguments and results.

Importing this package imports numba (``import refrnn`` does not). Kernels compile on first call
and are cached on disk (``cache=True``).
"""


def release_buffers() -> int:
    """Let go of the large buffers the training steps keep for their next call (the caches and the
    backward's work arrays, see :mod:`refrnn.jit._buffers`); those still in use stay with their
    users. Returns the bytes let go."""
    from . import _buffers

    return _buffers.release()
