import os

# GPU kernels are tested in a process of their own: NUMBA_ENABLE_CUDASIM must be set before numba is first
# imported, which the CPU tests in this process have already done (see the README's test command).
collect_ignore = [] if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" or os.environ.get("REFRNN_TEST_CUDA") == "1" else ["cuda"]
