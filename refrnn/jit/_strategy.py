"""Which order :mod:`refrnn.jit.gru` and :mod:`refrnn.jit.lstm` use when ``algorithm="auto"`` (the default),
and the one check of a prepared weight layout every jit fast path runs.

The two orders do the same FLOPs, give the same results up to rounding, and differ in where the
input products go:

* "batched": all T steps' input products as one GEMM first, then a (T, B, G*H) buffer read back
  step by step; each step's recurrent product has K = H.
* "fused": each step one product over the concatenated weights, K = D + H; nothing kept across steps.

Measured with ``refrnn bench`` (2 cores, float32, H = 1024, medians, one quiet run):

=========================  ================  ================  ==========
workload                   batched           fused             pick
=========================  ================  ================  ==========
GRU  B=64 T=50  D=27       230 ms            162 ms            fused
LSTM B=64 T=50  D=27       255 ms            210 ms            fused
GRU  B=1  T=200 D=27       20.4 ms           24.1 ms           batched
GRU  B=64 T=50  D=1024     276 ms            407 ms            batched
GRU  B=1  T=200 D=1024     29.6 ms           101 ms            batched
=========================  ================  ================  ==========

With one sample the products are GEMVs whose cost is reading the weights, and "fused" reads
D*G*H more of them every step; with a wide input, "fused" turns the one efficient input GEMM into T
small ones. With many samples and a narrow input (one-hot characters, the seed paper's setting)
K = D + H costs a few per cent more than K = H, the (T, B, G*H) buffer is gone, and the measured
product rate was higher (K = 1024 exactly made OpenBLAS's packing of W_h.T stride 4 KiB apart).
"""

from __future__ import annotations

from .._checks import one_of
from .._moved import algorithm_keyword

STRATEGIES = ("auto", "batched", "fused")


def former_field_names(cls):
    """Class decorator for the GRU and LSTM prepared layouts: their fields' former names still read
    (``strategy`` for ``algorithm``; ``c`` for ``bias``, since ``c`` is the LSTM's cell state everywhere
    else), for one release."""
    cls.strategy = property(lambda self: self.algorithm, doc="The former name of ``algorithm``.")
    cls.c = property(lambda self: self.bias, doc="The former name of ``bias``.")
    return cls


def choose(strategy: str, input_size: int, hidden_size: int, batch: int) -> str:
    """Resolve ``"auto"``: "fused" for a batch of two or more and an input at most H/8 wide, else "batched"."""
    if strategy != "auto":
        return strategy
    return "fused" if batch > 1 and 8 * input_size <= hidden_size else "batched"


def prepare_algorithm(params, params_cls, algorithm: str, strategy: str | None) -> str:
    """The checked arguments of a GRU/LSTM ``prepare``: ``params`` of ``params_cls``, and the layout's
    algorithm ("batched" or "fused"; ``strategy=`` is the keyword's former name)."""
    if not isinstance(params, params_cls):
        raise TypeError(f"params: expected {params_cls.__name__}, got {type(params).__name__}")
    algorithm = algorithm_keyword(algorithm, strategy=strategy)
    one_of("algorithm", algorithm, STRATEGIES[1:])
    return algorithm


def resolver(params, batch: int):
    """``resolve(algorithm)`` for :func:`prepared_for`, for a GRU or LSTM over ``batch`` samples."""

    def resolve(algorithm):
        one_of("algorithm", algorithm, STRATEGIES)
        return choose(algorithm, params.input_size, params.hidden_size, batch)

    return resolve


def prepared_for(params, algorithm: str, prepared, prepare, kind, resolve):
    """The prepared layout a jit forward runs with: ``prepared`` checked, or ``prepare(params, a)`` now.

    ``resolve(algorithm)`` checks the name and turns it into the algorithm a layout is prepared for
    ("auto" by its rule, "sparse" by the variant, ...). ``algorithm="auto"`` takes the algorithm of
    ``prepared`` when one is given. A given layout must be an instance of ``kind`` built for these
    very params (``prepared.params is params``) and that algorithm: a layout of other weights
    would run silently with them.
    """
    concrete = resolve(algorithm)
    if algorithm == "auto" and isinstance(prepared, kind):
        concrete = prepared.algorithm
    if prepared is None:
        return prepare(params, concrete)
    if not isinstance(prepared, kind) or prepared.params is not params or prepared.algorithm != concrete:
        raise ValueError(
            f"prepared: expected prepare(params, {concrete!r}) for these very params, got "
            + (f"one for algorithm {prepared.algorithm!r}" if isinstance(prepared, kind) else type(prepared).__name__)
        )
    return prepared


def algorithm_and_layout(params, algorithm: str, prepared, prepare, kind, batch: int, kernel: bool):
    """``(algorithm, prepared)`` a GRU or LSTM forward runs with. On the compiled kernel's step loop
    (``kernel``) with no layout given, the algorithm by its rule and the "batched" layout (views of
    the weights: that loop reads W_x and W_h where they are, so the "fused" order needs no
    concatenated weight); otherwise :func:`prepared_for` and its layout's algorithm."""
    resolve = resolver(params, batch)
    if kernel and prepared is None:
        return resolve(algorithm), prepare(params, "batched")
    prepared = prepared_for(params, algorithm, prepared, prepare, kind, resolve)
    return prepared.algorithm, prepared
