"""GPU fast paths (numba.cuda), one module per reference cell, with the contract of :mod:`refrnn.jit`.

Importing this package imports nothing; each kernel module imports numba-cuda (and says what to
install when it is missing), and kernels compile on their first launch. The folder lives inside
``refrnn/`` because a top-level package named ``cuda`` would shadow NVIDIA's ``cuda`` namespace
package (cuda-bindings), which ``from numba import cuda`` needs.
"""
