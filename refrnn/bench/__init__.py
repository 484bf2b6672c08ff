r"""``refrnn bench``: the fast paths timed against the reference, a plain NumPy loop, PyTorch and the GEMM bound.

Every workload is a set of named *candidates* (zero-argument callables over the same seeded data).
They run in one process, interleaved: after warm-up (which includes Numba compilation), each of
``repeats`` rounds calls every candidate once, in an order rotated from round to round, so all of
them see the same machine load; the median of the rounds is reported. What the table shows are
*ratios* of those medians (a shared 2-core machine moves absolute times by tens of percent; ratios
taken within one run move far less).

Each workload names its *subject* (the fast path under test); the column ``speed-up`` is
``time(candidate) / time(subject)``: above 1, the subject is faster. Two kinds of baseline:

* other implementations: the reference cell (float32), a straightforward NumPy loop, ``torch.nn``
  with ``torch.set_num_threads`` equal to the threads BLAS and Numba use;
* the GEMM bound: all the FLOPs of the forward's matrix products (recurrent and input) divided by
  the sgemm rate measured in the same run. The rate comes from the timed candidate
  "sgemm: recurrent products alone": the T per-step products ``h @ W_h.T`` of the workload, through
  the BLAS call the fast path makes, and nothing else. ``time(subject) / bound`` is what the
  element-wise work, the loop, the input projection's lower GEMM efficiency (K = D is small) and
  memory traffic cost on top of ideal products. The bound is a computed row of the table.

*Bars* are the speed targets the fast paths were built to; each row says met, or the measured gap
(judged on medians).

Noise. Contention only ever adds time, so next to the medians the table gives the ratios of the
*fastest* rounds ("by min"), and each workload prints the machine's load average before and after
it: on a busy shared machine, a bar met by medians but not by minima (or the reverse) is noise.

Adding a workload: write a function ``(scale) -> Case`` and decorate it with
``@workload(name, title)``; ``scale`` is "full", "quick" (the same per-step shapes, fewer steps)
or "tiny" (test sizes). :func:`sizes_for` picks the sizes.

Layout: :mod:`.registry` (what a workload is, the named sizes, the seeded data), :mod:`.timer` (the
one interleaved-median timer), :mod:`.baselines` (NumPy loops, torch, the products alone),
:mod:`.report` (ratios, bars, the table), :mod:`.cli` (``refrnn bench``), ``workloads/<area>.py``
(one module per area; importing this package registers them all) and :mod:`.cuda` (the GPU
benchmark, ``refrnn bench-cuda``; imported only when run).

Usage::

    refrnn bench [--quick] [--json FILE] [--only NAME ...] [--repeats N] [--warmup N] [--pause S] [--clock wall|cpu] [--list]
"""

from __future__ import annotations

from .baselines import bench_threads, gemm_flops, numpy_gru, numpy_lstm, recurrent_products, torch_note, torch_or_none, torch_rnn
from .cli import main
from .registry import (
    DEEP_SIZES, SCALES, SEED, SGEMM, SIZES, SPARSE_SIZES, SRU_SIZES, SUBJECT, WORKLOADS, Bar, Case, Workload, data, sizes_for, workload,
)
from .report import format_result, format_summary, summarise
from .timer import interleaved, measure, medians

__all__ = [
    "Bar", "Case", "DEEP_SIZES", "SCALES", "SEED", "SGEMM", "SIZES", "SPARSE_SIZES", "SRU_SIZES", "SUBJECT", "WORKLOADS",
    "Workload", "bench_threads", "data", "format_result",
    "format_summary", "gemm_flops", "interleaved", "main", "measure", "medians",
    "numpy_gru", "numpy_lstm", "recurrent_products", "sizes_for", "summarise", "torch_note", "torch_or_none", "torch_rnn",
    "workload",
]
