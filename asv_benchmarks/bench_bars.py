"""The ratios `refrnn bench`'s bars judge, measured on the bench's own workloads, as history rows.

Each row builds the workload of ``refrnn bench`` it is named after (``refrnn.bench.registry.WORKLOADS``,
at the bench's full sizes) and times two of that workload's own candidates against each other with
:func:`common.measure_ratio`; a bound is computed from the workload's own FLOP counts, as
``refrnn.bench.report.summarise`` computes it. So a row and the bench's table measure the same calls on
the same data, and a change to a workload changes both. Commits without ``refrnn.bench`` (or without
the workload) skip these rows.

Every value is a time over a time, below 1 the subject's is the smaller (asv flags a rise):

* ``TrainStepOverTorch``: a training step, jit forward + jit backward, over torch autograd's (bars:
  GRU <= 1/1.5, LSTM <= 1);
* ``ForwardOverNumpyLoop``: the GRU fast path's forward over a plain NumPy loop's (bars: <= 1/1.1 at
  the paper's size, <= 1/1.2 as a single stream);
* ``SubjectOverGemmBound``: the subject over the GEMM bound, every workload whose table has that row
  (bars: <= 1.2 for the GRU forward at the paper's size and the four training steps);
* ``SparseOverFlopBound``: the conditional GRU's sparse path at a z-density, over the time its
  FLOP-ratio bound allows it: ``time(sparse) / (time(dense) / bound)``, i.e. the bound divided by the
  measured speed-up over the dense path (bars: speed-up >= 90% of the bound for unstructured z, i.e.
  <= 1.11, and >= 85% for block z, i.e. <= 1.18).

Two rows track no bar. ``SparseOverMemoryFloor``: the block-sparse conditional GRU at the subject's
z-density over the bench's memory-floor candidate (the weights of the blocks active in some sample,
read once a step, nothing computed): what the products, the gate and the element-wise work cost on
top of the memory traffic the path cannot avoid. ``RowcastOverSgemm``: the kernel the forwards take
in place of BLAS, the recurrent products alone through :mod:`refrnn.jit._rowcast` over the same
products through BLAS, on the forward workloads whose subject takes it (below 1: the compiled kernel
is the faster).

The other bars (each forward against ``torch.nn``) have rows already: ``bench_torch.RefrnnOverTorch``
(jit) and ``bench_sru.SRUOverTorchLSTM`` (jit). :data:`BAR_ROWS` maps every bar to its row, and
``tests/test_asv_benchmarks.py`` checks that every bar of every workload is in it.
"""

from __future__ import annotations

from .common import RatioBenchmark, Unavailable, module_exists, require

# Workload names of refrnn bench (append only: asv keys results by these names).
TRAIN_WORKLOADS = ("gru-train-paper", "gru-train-mid", "lstm-train-paper", "lstm-train-mid")
NUMPY_LOOP_WORKLOADS = ("gru-paper", "gru-stream")
GEMM_BOUND_WORKLOADS = (
    "gru-paper", "gru-stream", "lstm-paper", "gru-before", "strategy-wide-input", "strategy-stream-wide-input",
    *TRAIN_WORKLOADS,
    "ccgru-train-mid", "ccgru-train-paper", "sru-forward", "sru-train-mid", "sru-train-paper",
)  # fmt: skip
ROWCAST_WORKLOADS = ("gru-paper", "lstm-paper", "gru-before")
SPARSE_WORKLOADS = tuple(f"ccgru-unstructured-r{r}" for r in (16, 32, 64)) + tuple(f"ccgru-block-bs{b}" for b in (16, 32, 64))
FLOOR_WORKLOADS = tuple(w for w in SPARSE_WORKLOADS if w.startswith("ccgru-block"))  # those whose Case has a floor
SPARSE_BAR_DENSITIES = (0.25, 0.10)  # refrnn.bench.workloads.ccgru.BAR_DENSITIES (a test pins them equal)

# (workload, the bar's ``other``) -> the row that tracks that bar. The sparse bars' ``other`` is the
# dense path, one bar per density.
BAR_ROWS = {
    **{(w, "torch autograd"): "bench_bars.TrainStepOverTorch.track_step_over_torch_autograd" for w in TRAIN_WORKLOADS},
    **{(w, "GEMM bound"): "bench_bars.SubjectOverGemmBound.track_subject_over_gemm_bound" for w in GEMM_BOUND_WORKLOADS},
    **{(w, "NumPy loop"): "bench_bars.ForwardOverNumpyLoop.track_subject_over_numpy_loop" for w in NUMPY_LOOP_WORKLOADS},
    **{(w, "njit dense"): "bench_bars.SparseOverFlopBound.track_sparse_over_flop_bound" for w in SPARSE_WORKLOADS},
    ("gru-paper", "torch.nn.GRU"): "bench_torch.RefrnnOverTorch.track_refrnn_over_torch",
    ("gru-stream", "torch.nn.GRU"): "bench_torch.RefrnnOverTorch.track_refrnn_over_torch",
    ("lstm-paper", "torch.nn.LSTM"): "bench_torch.RefrnnOverTorch.track_refrnn_over_torch",
    ("sru-forward", "torch.nn.LSTM"): "bench_sru.SRUOverTorchLSTM.track_sru_over_torch_lstm",
}


def bench_case(name: str, scale: str):
    """The ``refrnn bench`` workload ``name`` built at ``scale`` ("full" for asv; the unit test uses "tiny")."""
    require("refrnn.bench.workloads")  # importing it registers every workload
    registry = require("refrnn.bench.registry", "WORKLOADS")
    if name not in registry.WORKLOADS:
        raise Unavailable("attribute", f"refrnn bench workload {name!r}")
    return registry.WORKLOADS[name].build(scale)


def gemm_bound_factor(case) -> float:
    """``time(GEMM bound) / time(the products candidate)``: the bound is the time of all the products'
    FLOPs (``case.flops``) at the rate the candidate ``case.sgemm`` reaches on its own FLOPs."""
    return case.flops / case.sgemm_flops


def flop_bound(case, density: float) -> float:
    """The FLOP-ratio bound (dense FLOPs / sparse FLOPs) of a conditional GRU workload's sparse
    candidate at ``density``, the one its bar states (the workload's ``Case.bounds``)."""
    ccgru = require("refrnn.bench.workloads.ccgru", "label")
    label = ccgru.label(density)
    if not any(b.fast == label for b in case.bars) or label not in case.bounds:
        raise Unavailable("attribute", f"a bar on {label!r} in this workload (bar densities: {SPARSE_BAR_DENSITIES})")
    return case.bounds[label]


class _Workload(RatioBenchmark):
    bench_scale = "full"  # the bench's sizes; the unit test lowers it to "tiny" (ratio_repeats likewise)

    def _case(self, name):
        self.case = bench_case(name, self.bench_scale)
        return self.case

    def _candidate(self, label):
        """The case's candidate ``label``, called once (compilation happens here, not in a ratio)."""
        if label not in self.case.candidates:
            if "torch" in label and not module_exists("torch"):  # the bench leaves torch's candidates out
                raise Unavailable("module", f"torch (the candidate {label!r})")
            raise Unavailable("attribute", f"candidate {label!r} of this workload; it has {sorted(self.case.candidates)}")
        fn = self.case.candidates[label]
        fn()
        return fn


class TrainStepOverTorch(_Workload):
    """A training step of the bench's ``*-train-*`` workloads, jit forward + jit backward (the subject),
    over torch autograd's, float32. Bars: GRU <= 1/1.5, LSTM <= 1."""

    params = [list(TRAIN_WORKLOADS)]
    param_names = ["workload"]

    def setup(self, workload):
        case = self._case(workload)
        torch_label = require("refrnn.bench.workloads.train_gru_lstm", "TORCH").TORCH
        self.subject = self._candidate(case.subject)
        self.torch = self._candidate(torch_label)

    def track_step_over_torch_autograd(self, workload):
        return self.ratio(self.subject, self.torch)


class ForwardOverNumpyLoop(_Workload):
    """The GRU forward's subject (the fast path, default strategy) over the bench's NumPy loop,
    float32. Bars: <= 1/1.1 at the paper's size, <= 1/1.2 as a single stream."""

    params = [list(NUMPY_LOOP_WORKLOADS)]
    param_names = ["workload"]

    def setup(self, workload):
        case = self._case(workload)
        self.subject = self._candidate(case.subject)
        self.loop = self._candidate("NumPy loop")

    def track_subject_over_numpy_loop(self, workload):
        return self.ratio(self.subject, self.loop)


class SubjectOverGemmBound(_Workload):
    """The subject's time over the GEMM bound's: the time of all the subject's products at the sgemm
    rate its products-alone candidate reaches in the same run (refrnn bench's "GEMM bound" row).
    Bars: <= 1.2 for gru-paper and the four GRU/LSTM training steps; the other workloads have no bar."""

    params = [list(GEMM_BOUND_WORKLOADS)]
    param_names = ["workload"]

    def setup(self, workload):
        case = self._case(workload)
        if case.sgemm is None:
            raise Unavailable("attribute", f"a GEMM bound of {workload!r}")
        self.subject = self._candidate(case.subject)
        self.products = self._candidate(case.sgemm)
        self.factor = gemm_bound_factor(case)

    def track_subject_over_gemm_bound(self, workload):
        return float(f"{self.ratio(self.subject, self.products) / self.factor:.4g}")


class SparseOverFlopBound(_Workload):
    """The conditional GRU's sparse path at a z-density over the time the FLOP-ratio bound allows
    it (the dense path's time / the bound): the bound over the measured speed-up. At 1 the sparse path
    is as fast as its FLOPs promise; the bars (speed-up >= 90% of the bound for unstructured z, >= 85%
    for block z) are <= 1.11 and <= 1.18."""

    params = [list(SPARSE_WORKLOADS), list(SPARSE_BAR_DENSITIES)]
    param_names = ["workload", "density"]

    def setup(self, workload, density):
        case = self._case(workload)
        ccgru = require("refrnn.bench.workloads.ccgru", "label")
        self.bound = flop_bound(case, density)
        self.sparse = self._candidate(ccgru.label(density))
        self.dense = self._candidate("njit dense")

    def track_sparse_over_flop_bound(self, workload, density):
        return float(f"{self.ratio(self.sparse, self.dense) * self.bound:.4g}")


class SparseOverMemoryFloor(_Workload):
    """The block-sparse conditional GRU at the workload's subject density over its memory floor (the
    bench's candidate that only reads the weights of the blocks some sample has active, once a step).
    No bar; 1 would be a path as fast as its memory traffic allows."""

    params = [list(FLOOR_WORKLOADS)]
    param_names = ["workload"]

    def setup(self, workload):
        case = self._case(workload)
        if case.floor is None:
            raise Unavailable("attribute", f"a memory-floor candidate in {workload}")
        self.subject = self._candidate(case.subject)
        self.floor = self._candidate(case.floor)

    def track_sparse_over_memory_floor(self, workload):
        return self.ratio(self.subject, self.floor)


class RowcastOverSgemm(_Workload):
    """A forward workload's recurrent products alone through the compiled step product of
    :mod:`refrnn.jit._rowcast` over the same products through BLAS (the bench's two products-alone
    candidates). No bar; where it rises above 1, the forwards' rule for taking the kernel is due a
    re-measure."""

    params = [list(ROWCAST_WORKLOADS)]
    param_names = ["workload"]

    def setup(self, workload):
        case = self._case(workload)
        label = require("refrnn.bench.baselines", "ROWCAST").ROWCAST
        if label not in case.candidates:  # a batch or weight the forward keeps on BLAS (the tiny sizes)
            raise Unavailable("combination", f"{workload} at scale {self.bench_scale!r}: its forward does not take the kernel")
        self.rowcast = self._candidate(label)
        self.products = self._candidate(case.sgemm)

    def track_rowcast_over_sgemm(self, workload):
        return self.ratio(self.rowcast, self.products)
