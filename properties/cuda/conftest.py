"""GPU-kernel properties: collected only in a process where Numba's CUDA target is usable.

``NUMBA_ENABLE_CUDASIM=1 python -m pytest properties/cuda`` runs them under the simulator (the variable
must be set before Numba is first imported, so never in the main test process); ``REFRNN_TEST_CUDA=1``
on a machine with a GPU. The Hypothesis profile comes from properties/conftest.py.
"""

import os

collect_ignore_glob = [] if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" or os.environ.get("REFRNN_TEST_CUDA") == "1" else ["test_*.py"]
