"""GPU kernels (refrnn.cuda, numba.cuda): skipped cleanly on a machine without a CUDA device.

Parameters are uploaded and inputs copied to the device in ``setup``; kernels compile there too (one
call). A timed body is one call of :func:`synced`, which launches the sequence and waits for the device,
so the time is the GPU's, not the launch queue's. Under ``NUMBA_ENABLE_CUDASIM=1`` everything here skips:
simulator timings measure Python threads, not kernels.

Products (see cuda/gru.py): "tiled" fuses the per-step recurrent product with the gate non-linearities
and the state update in one kernel; "cublas" is the usual split, a vendor GEMM then a point-wise kernel.
"""

from __future__ import annotations

from .common import (
    SIZES,
    SRU_SIZES,
    RatioBenchmark,
    TimeBenchmark,
    Unavailable,
    cell_params,
    inputs,
    require,
    require_gpu,
    rng,
)

CUDA_CELLS = ("gru", "gru_before", "lstm")
PRODUCTS = ("tiled", "cublas")


def synced(cuda, fn):
    def run():
        out = fn()
        cuda.synchronize()
        return out

    return run


def require_product(product: str):
    if product == "cublas":
        matmul = require("refrnn.cuda.matmul", "cublas_gemm")
        try:
            matmul.cublas_gemm()
        except RuntimeError as err:  # neither CuPy nor a CUDA build of torch: no vendor product to compare
            raise Unavailable("module", f"a cuBLAS provider ({err})") from None


class _Cuda:
    def _data(self, size, cell, product, dtype="float32"):
        cuda = require_gpu()
        require_product(product)
        s = SIZES[size]
        kernels = require(f"refrnn.cuda.{'lstm' if cell == 'lstm' else 'gru'}", "forward", "upload")
        _, p = cell_params(cell, s["D"], s["H"], dtype)
        P = kernels.upload(p)
        X = cuda.to_device(inputs(s, dtype))
        run = synced(cuda, lambda: kernels.forward(P, X, product=product))
        run()  # compile here
        return run


class CudaForward(_Cuda, TimeBenchmark):
    """GRU (both conventions) and LSTM inference forward on the GPU, float32, by product strategy."""

    params = [list(SIZES), list(CUDA_CELLS), list(PRODUCTS)]
    param_names = ["size", "cell", "product"]

    def setup(self, size, cell, product):
        self.run = self._data(size, cell, product)

    def time_forward(self, size, cell, product):
        self.run()


class CudaTiledOverCublas(_Cuda, RatioBenchmark):
    """The fused tiled kernel's time / the cuBLAS-plus-point-wise split's, in one process."""

    params = [list(SIZES), list(CUDA_CELLS)]
    param_names = ["size", "cell"]

    def setup(self, size, cell):
        self.tiled = self._data(size, cell, "tiled")
        self.cublas = self._data(size, cell, "cublas")

    def track_tiled_over_cublas(self, size, cell):
        return self.ratio(self.tiled, self.cublas)


class CudaOverJit(_Cuda, RatioBenchmark):
    """GPU forward time (tiled) / the njit CPU forward's (batched), float32."""

    params = [list(SIZES), list(CUDA_CELLS)]
    param_names = ["size", "cell"]

    def setup(self, size, cell):
        self.gpu = self._data(size, cell, "tiled")
        from .bench_jit import jit_module

        fast = jit_module(cell)
        s = SIZES[size]
        _, p = cell_params(cell, s["D"], s["H"], "float32")
        x = inputs(s, "float32")
        prepared = fast.prepare(p, "batched")
        self.cpu = lambda: fast.forward_inference(p, x, strategy="batched", prepared=prepared)
        self.cpu()

    def track_cuda_over_jit(self, size, cell):
        return self.ratio(self.gpu, self.cpu)


class CudaSRU(TimeBenchmark):
    """SRU forward and backward on the GPU, float32 ("auto" product: cuBLAS where available)."""

    params = [list(SRU_SIZES)]
    param_names = ["size"]

    def setup(self, size):
        cuda = require_gpu()
        kernels = require("refrnn.cuda.sru", "forward", "backward", "upload")
        sru = require("refrnn.cells.sru", "init")
        s = SRU_SIZES[size]
        p = sru.init(s["D"], s["H"], rng=rng("sru-params", size), dtype="float32")
        P = kernels.upload(p)
        X = cuda.to_device(inputs(s, "float32"))
        y, _, cache = kernels.forward(P, X)
        dY = cuda.to_device(inputs(dict(s, D=s["H"]), "float32", key="sru-dy"))
        self.forward = synced(cuda, lambda: kernels.forward(P, X))
        self.backward = synced(cuda, lambda: kernels.backward(P, cache, dY))
        self.forward()
        self.backward()

    def time_forward(self, size):
        self.forward()

    def time_backward(self, size):
        self.backward()
