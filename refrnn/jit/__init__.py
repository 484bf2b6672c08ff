"""Fast paths compiled with numba (CPU), one module per reference cell, same arguments and results.

Importing this package imports numba (``import refrnn`` does not). Kernels compile on first call
and are cached on disk (``cache=True``).
"""
