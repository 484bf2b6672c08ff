"""No threaded BLAS call from inside a compiled parallel region: OpenBLAS (a pthreads build) called from
an OpenMP loop "may hang", and prints a warning on every such call. With torch loaded, numba's parallel
loops run on torch's OpenMP runtime, which is how `refrnn bench` met it (thousands of warnings from the
wavefront's side-by-side cells). Run in a fresh process: the warning comes from C, on file descriptor 2."""

import subprocess
import sys

SCRIPT = r"""
import torch  # loads the OpenMP runtime numba's parallel loops then run on
import numpy as np
from refrnn import gru, lstm
from refrnn.layers import stack
from refrnn.jit import wavefront
x = np.random.default_rng(0).standard_normal((6, 64, 64)).astype(np.float32)
for cell in (gru, lstm):
    layers = stack.init(cell, 64, 256, 2, rng=0, dtype=np.float32)
    prepared = wavefront.prepare(layers)
    for _ in range(2):
        wavefront.forward(layers, x, prepared=prepared, threads=2)
print("ran")
"""


def test_side_by_side_wavefront_calls_blas_on_one_thread_only():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "ran" in out.stdout
    assert "OpenBLAS Warning" not in out.stderr, out.stderr[:300]
