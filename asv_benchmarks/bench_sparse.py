"""Conditional-computation GRU (Davis & Arel): the reference, and the z-sparse njit inference paths.

An exactly-zero update gate lets a unit copy its state and skip its reset gate and proposal, so the
sparse paths (refrnn.jit.ccgru) should get faster as the z density falls. Layouts:

    unstructured  B = 1, low-rank z of rank g; per step only the active units' weight rows are read
    block         B = 64, block-sparse z, blocks of bs units; one GEMM per block over its active samples

The density is set by the shift ``s`` of Eq. 7 (:func:`ccgru_at_density`): running statistics from a
training pass over a seeded calibration batch, then ``s`` bisected until the sparse path itself, on
the benchmark's own input, reaches the target density (tests/test_asv_benchmarks.py checks the
result against the reference cell). The speed-up bound is roughly 1/density (refrnn/jit/bench_ccgru.py
counts the FLOPs exactly, z included); the ratios here are sparse time / dense time.
"""

from __future__ import annotations

import functools

import numpy as np

from .common import (
    SPARSE_BLOCK_SIZES,
    SPARSE_DENSITIES,
    SPARSE_LAYOUTS,
    SPARSE_RANKS,
    SPARSE_SIZES,
    RatioBenchmark,
    TimeBenchmark,
    inputs,
    normal,
    one_hot_chars,
    require,
    rng,
)

CALIBRATION_STEPS = 10
WIDTH = 32  # the rank / block size of the time rows; the ratios sweep all three


def reference_ccgru():
    return require("refrnn.cells.ccgru", "init", "forward", "backward", "update_running_stats")


def jit_ccgru():
    return require("refrnn.jit.ccgru", "forward_inference", "prepare")


@functools.lru_cache(maxsize=None)
def _with_running_stats(size: str, layout: str, width: int, dtype: str):
    ccgru = reference_ccgru()
    s = SPARSE_SIZES[size][layout]
    variant, g = ("lowrank", width) if layout == "unstructured" else ("block", s["H"] // width)
    p = ccgru.init(s["D"], s["H"], variant=variant, g=g, rng=rng("ccgru-params", size, layout, width), dtype=np.dtype(dtype))
    # Running statistics: a training pass over a calibration batch, momentum high enough that the
    # initial (0, 1) statistics are forgotten within the pass (0.7^10 < 3%).
    calibration = one_hot_chars(CALIBRATION_STEPS, 16, s["D"], dtype, key="ccgru-calibration")
    _, _, cache = ccgru.forward(p.replace(momentum=0.3), calibration)
    return ccgru.update_running_stats(p, cache).replace(mode="inference"), inputs(s, dtype, key="ccgru-x")


def ccgru_at_density(size: str, layout: str, width: int, density: float, dtype="float32"):
    """``(params, x)``: an inference-mode conditional GRU whose z is non-zero on ``density`` of its
    entries over ``x`` (to 0.005 where the step function allows). "unstructured" is the low-rank
    variant of rank ``width``, "block" the block variant with blocks of ``width`` units."""
    fast = jit_ccgru()
    p, x = _with_running_stats(size, layout, width, dtype)
    # z != 0 exactly where BN(a) + s > 0: the density rises with s. Bisection, as refrnn bench does.
    lo, hi = -8.0, 8.0
    best, best_err = p, np.inf
    for _ in range(20):
        mid = 0.5 * (lo + hi)
        trial = p.replace(s=mid)
        _, _, z = fast.forward_inference(trial, x, path="sparse", return_z=True)
        reached = float(np.mean(z != 0))
        if abs(reached - density) < best_err:
            best, best_err = trial, abs(reached - density)
        if best_err <= 0.005:
            break
        lo, hi = (lo, mid) if reached > density else (mid, hi)
    return best, x


class _Sparse:
    def _data(self, size, layout, width, density):
        self.ref = reference_ccgru()
        self.fast = jit_ccgru()
        self.p, self.x = ccgru_at_density(size, layout, width, density)

    def _path(self, path):
        fast, p, x = self.fast, self.p, self.x
        prepared = fast.prepare(p, path)
        fn = lambda: fast.forward_inference(p, x, path=path, prepared=prepared)  # noqa: E731
        fn()  # compile here
        return fn


class SparseInference(_Sparse, TimeBenchmark):
    """The sparse path ("unstructured" or "block"), float32, rank / block size 32, by z density."""

    params = [list(SPARSE_SIZES), list(SPARSE_LAYOUTS), list(SPARSE_DENSITIES)]
    param_names = ["size", "layout", "density"]

    def setup(self, size, layout, density):
        self._data(size, layout, WIDTH, density)
        self.sparse = self._path("sparse")

    def time_sparse(self, size, layout, density):
        self.sparse()


class DenseInference(_Sparse, TimeBenchmark):
    """The dense njit path of the same cell: every unit computed, whatever z is."""

    params = [list(SPARSE_SIZES), list(SPARSE_LAYOUTS)]
    param_names = ["size", "layout"]

    def setup(self, size, layout):
        self._data(size, layout, WIDTH, SPARSE_DENSITIES[0])
        self.dense = self._path("dense")

    def time_dense(self, size, layout):
        self.dense()


class UnstructuredOverDense(_Sparse, RatioBenchmark):
    """B = 1, low-rank z: sparse path time / dense njit path time, interleaved. Bound: about the density."""

    params = [list(SPARSE_SIZES), list(SPARSE_RANKS), list(SPARSE_DENSITIES)]
    param_names = ["size", "rank", "density"]

    def setup(self, size, rank, density):
        self._data(size, "unstructured", rank, density)
        self.sparse = self._path("sparse")
        self.dense = self._path("dense")

    def track_sparse_over_dense(self, size, rank, density):
        return self.ratio(self.sparse, self.dense)


class BlockOverDense(_Sparse, RatioBenchmark):
    """B = 64, block z: sparse path time / dense njit path time, interleaved. Bound: about the density."""

    params = [list(SPARSE_SIZES), list(SPARSE_BLOCK_SIZES), list(SPARSE_DENSITIES)]
    param_names = ["size", "block_size", "density"]

    def setup(self, size, block_size, density):
        self._data(size, "block", block_size, density)
        self.sparse = self._path("sparse")
        self.dense = self._path("dense")

    def track_sparse_over_dense(self, size, block_size, density):
        return self.ratio(self.sparse, self.dense)


class DenseOverReference(_Sparse, RatioBenchmark):
    """The dense njit path's time / the reference forward's (inference mode), float32."""

    params = [list(SPARSE_SIZES), list(SPARSE_LAYOUTS)]
    param_names = ["size", "layout"]

    def setup(self, size, layout):
        self._data(size, layout, WIDTH, SPARSE_DENSITIES[0])
        self.dense = self._path("dense")
        ref, p, x = self.ref, self.p, self.x
        self.reference = lambda: ref.forward(p, x)

    def track_dense_over_reference(self, size, layout):
        return self.ratio(self.dense, self.reference)


class ReferenceTrain(TimeBenchmark):
    """The reference conditional GRU in training mode (batch statistics), float64: forward and backward."""

    params = [["small", "paper"], ["full", "lowrank", "block"]]
    param_names = ["size", "variant"]

    def setup(self, size, variant):
        ccgru = reference_ccgru()
        s = SPARSE_SIZES[size]["block"]  # B >= 2: batch statistics
        g = None if variant == "full" else WIDTH
        self.ccgru = ccgru
        self.p = ccgru.init(s["D"], s["H"], variant=variant, g=g, rng=rng("ccgru-train", size, variant))
        self.x = inputs(s, "float64", key="ccgru-x")
        y, _, self.cache = ccgru.forward(self.p, self.x)
        self.dy = normal(y.shape, "float64", key="ccgru-dy")

    def time_forward(self, size, variant):
        self.ccgru.forward(self.p, self.x)

    def time_backward(self, size, variant):
        self.ccgru.backward(self.p, self.cache, self.dy)
