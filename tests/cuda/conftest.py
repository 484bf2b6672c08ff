"""GPU kernel tests. Collected only in their own process (see tests/conftest.py):
``NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cuda`` in CI, ``REFRNN_TEST_CUDA=1`` on a real GPU.

The simulator runs every thread as a Python thread (about 1 ms per thread and launch), so the cases use
tiny sizes and a 4 x 4 tile: H=5 or 6 then spans two tiles, one of them partial, and every boundary test
in the kernels runs. One case per kernel also runs the default 16 x 16 tile.
"""

import numpy as np
import pytest


@pytest.fixture
def host_gemm():
    """A vendor-style ``gemm(A, B, C, trans_a, trans_b)`` done on the host: exercises the "cublas" strategy's
    point-wise kernels and call sequence under the simulator (and anywhere the vendor product is missing)."""

    def gemm(A, B, C, trans_a=False, trans_b=False):
        a, b = A.copy_to_host(), B.copy_to_host()
        C.copy_to_device(np.ascontiguousarray((a.T if trans_a else a) @ (b.T if trans_b else b)))

    return gemm


@pytest.fixture
def cublas_or_skip():
    from refrnn.cuda import matmul

    try:
        return matmul.cublas_gemm()
    except RuntimeError as err:
        pytest.skip(str(err))
