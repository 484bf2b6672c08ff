"""The workload registry of ``refrnn bench``: what a workload is, the named sizes, and the seeded data.

A workload is a function ``build(scale) -> Case`` registered with :func:`workload`; the order of
registration is the run order. ``scale`` is "full", "quick" (the same per-step shapes, fewer steps)
or "tiny" (test sizes); :func:`sizes_for` picks the sizes.

The named sizes below are also the sizes of the asv suite (``asv_benchmarks/common.py``). That suite
keeps its own append-only copies, because it times old commits that have none of this package;
``tests/test_asv_benchmarks.py`` pins the two equal.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

SCALES = ("full", "quick", "tiny")
SEED = 4

SGEMM = "sgemm: recurrent products alone"
SUBJECT = "(the subject)"  # a Bar's ``fast`` standing for the workload's subject (resolved in summarise)

# GRU/LSTM: the seed paper's character LM (one-hot characters, H = 1024), a single stream, and the
# same two with an input as wide as the state (a stacked layer).
SIZES = {
    "paper": dict(B=64, T=50, D=27, H=1024),
    "stream": dict(B=1, T=200, D=27, H=1024),
    "paper_wide": dict(B=64, T=50, D=1024, H=1024),
    "stream_wide": dict(B=1, T=200, D=1024, H=1024),
}
# Training (forward + backward of a unit upstream gradient on y): the paper's size, and a mid-sized
# layer whose products are small enough that the per-step overheads show.
TRAIN_SIZES = {"paper": dict(T=50, B=64, D=27, H=1024), "mid": dict(T=100, B=32, D=256, H=256)}
# SRU, where its one big product dominates: D = H.
SRU_SIZES = {"paper": dict(T=100, B=32, D=1024, H=1024)}
# Conditional GRU, sparse inference: one stream with low-rank z, a batch with block z.
SPARSE_SIZES = {"paper": {"unstructured": dict(B=1, T=200, D=27, H=1024), "block": dict(B=64, T=50, D=27, H=1024)}}
# Deep RNN: N GRU layers against M = N MLP layers, every width H = 256 (the full sweep takes minutes).
DEEP_WIDTH = 256
DEEP_GRID = ((50, 1), (50, 64), (200, 1), (200, 64))  # (T, B)
DEEP_LAYERS = (1, 2, 4, 8)
DEEP_SIZES = {f"T{T}_B{B}": dict(T=T, B=B, D=DEEP_WIDTH, H=DEEP_WIDTH) for T, B in DEEP_GRID}


@dataclasses.dataclass(frozen=True)
class Bar:
    """A target: ``time(other) / time(fast) >= at_least`` (a speed-up; below 1 allows a slowdown)."""

    fast: str
    other: str
    at_least: float
    text: str


@dataclasses.dataclass(frozen=True)
class Case:
    """One workload at one scale: its candidates (the subject first), bars and FLOP count."""

    sizes: dict
    candidates: dict[str, Callable[[], object]]
    subject: str
    bars: tuple[Bar, ...] = ()
    sgemm: str | None = None  # the candidate that times the recurrent products alone
    sgemm_flops: float = 0.0  # FLOPs of that candidate
    flops: float = 0.0  # FLOPs of all the forward's products (recurrent + input): the GEMM bound's
    notes: tuple[str, ...] = ()
    # The candidate that times the memory traffic the subject cannot avoid and nothing else (the
    # block-sparse conditional GRU's weights, streamed once a step); its result is not the subject's
    # output.
    floor: str | None = None
    bounds: dict = dataclasses.field(default_factory=dict)  # candidate -> its FLOP-ratio bound over its bar's baseline


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    title: str
    build: Callable[[str], Case]


WORKLOADS: dict[str, Workload] = {}


def workload(name: str, title: str):
    """Register ``build(scale) -> Case`` under ``name`` (the order of registration is the run order)."""

    def register(build):
        if name in WORKLOADS:
            raise ValueError(f"workload {name!r} is already registered")
        WORKLOADS[name] = Workload(name, title, build)
        return build

    return register


def sizes_for(scale: str, full: dict, tiny: dict, quick_steps: int | None = None) -> dict:
    """The sizes of a workload at ``scale``: "quick" keeps every shape of ``full`` but runs
    ``quick_steps`` steps (default T/5), so per-step costs, and hence ratios, stay comparable."""
    if scale == "full":
        return dict(full)
    if scale == "quick":
        return {**full, "T": quick_steps or max(1, full["T"] // 5)}
    return dict(tiny)


def data(D, H, T, B, dtype=np.float32):
    """``(rng, x)``: the generator every workload draws its parameters from next, and the input."""
    rng = np.random.default_rng(SEED)
    # One-hot characters, the paper's input; dense normal inputs when D is not a character set.
    if D == 27:
        x = np.eye(D, dtype=dtype)[rng.integers(D, size=(T, B))]
    else:
        x = rng.standard_normal((T, B, D)).astype(dtype)
    return rng, x
