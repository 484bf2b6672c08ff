"""GPU kernel tests. Collected only in their own process (see tests/conftest.py):
``NUMBA_ENABLE_CUDASIM=1 python -m pytest tests/cuda`` in CI, ``REFRNN_TEST_CUDA=1`` on a real GPU."""
