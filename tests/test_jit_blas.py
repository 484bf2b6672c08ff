"""refrnn.jit._blas: run-time thread counts of the loaded OpenBLAS libraries."""

import sys

import numpy as np
import pytest

from refrnn.jit import _blas

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/maps")


def test_threads_sets_every_library_and_restores_it():
    before = _blas.get_threads()
    assert before, "no OpenBLAS found: NumPy's and SciPy's wheels both ship one"
    with _blas.threads(1):
        assert _blas.get_threads() == [1] * len(before)
        a = np.ones((64, 64))
        assert (a @ a)[0, 0] == 64.0  # BLAS still works with the limit set
    assert _blas.get_threads() == before


def test_threads_restores_after_an_exception():
    before = _blas.get_threads()
    with pytest.raises(RuntimeError), _blas.threads(1):
        raise RuntimeError("inside")
    assert _blas.get_threads() == before
