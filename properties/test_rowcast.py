"""The compiled float32 products (:mod:`refrnn.jit._rowcast`) and the forwards that take them.

The step product ``C (N, B) = W (N, K) @ hT (K, B)``, its one-thread twin ``serial``, the blocked
``gemm`` (the same kernel over packed blocks of a wide ``hT``, which may be a transposed view) and
``packed`` (over ``hT`` packed once into 16- or 64-column panels, the last one zero-padded; the
training backward's step product) compute every entry as one chain of K fused
multiply-adds in increasing k (the later K blocks added onto the first), so each entry carries at
most K roundings of a running sum, each bounded by (|W| @ |hT|): the classical dot-product bound
``|C - W @ hT| <= gamma_K (|W| @ |hT|)``, ``gamma_K = K u / (1 - K u)``, ``u = 2**-24``, compared
with the float64 product of the same float32 values, whose own error (``gamma_K`` with ``u =
2**-53``, 2**-29 of the float32 bound) is added to the bound. A term dropped, doubled or taken from
the wrong row, column, panel or block errs by O(|w h|), far above the bound; the bound itself has
no slack to hide one. Entries are the ±j/64 grid scaled by a power of two per row and per column, so
rows of very different magnitude meet in one tile, and some rows or columns are exactly zero.

Sizes are drawn where the kernel changes what it does: N around the 6- and 8-row tiles (and every
remainder of them) and the 24 row chunks, K at the four-step unroll and the edges of its blocks (about 1024 for the step product,
512 for gemm), B from one 16-lane vector to past two 64-column panels and gemm's 128-column block.

The forwards are drawn as the rest of the property suite draws cells, at batches of 16 and 32, with
the rule made to take the kernel (the real rule only takes weights of 4 MB, too slow to draw), and
compared under :func:`refrnn.verify.report.default_tolerance` like every other float32 fast path.
"""

from unittest import mock

import numba
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from refrnn.jit import _backward, _rowcast
from refrnn.jit import gru as jit_gru
from refrnn.jit import lstm as jit_lstm
from refrnn.verify import compare
from refrnn.verify.strategies import cases, configs

U32, U64 = 2.0**-24, 2.0**-53


def _around(*centres, spread=3):
    return st.sampled_from(sorted({c + d for c in centres for d in range(-spread, spread + 1) if c + d >= 0}))


N_SIZES = st.one_of(st.integers(1, 14), _around(6 * 24, 2 * 6 * 24, spread=7))
K_SIZES = st.one_of(st.integers(0, 12), _around(1024, 1536, 2048, 3072))
B_SIZES = st.sampled_from([16, 32, 48, 64, 80, 128, 144])


@st.composite
def _grid_matrix(draw, rows, cols, label):
    """±j/64 entries, each row scaled by 2**a and each column by 2**b (a, b in [-6, 6]); maybe a zero
    row and a zero column. The product of two entries is exact in float32 (no underflow either)."""
    seed = draw(st.integers(0, 2**32 - 1), label=f"{label} seed")
    rng = np.random.default_rng(seed)
    m = rng.integers(-64, 65, size=(rows, cols)).astype(np.float64) / 64
    m *= 2.0 ** rng.integers(-6, 7, size=(rows, 1)) * 2.0 ** rng.integers(-6, 7, size=(1, cols))
    if rows and draw(st.booleans(), label=f"{label} zero row"):
        m[rng.integers(rows)] = 0.0
    if cols and draw(st.booleans(), label=f"{label} zero column"):
        m[:, rng.integers(cols)] = 0.0
    return m.astype(np.float32)


@st.composite
def products(draw):
    N, K, B = draw(N_SIZES, label="N"), draw(K_SIZES, label="K"), draw(B_SIZES, label="B")
    W, hT = draw(_grid_matrix(N, K, "W")), draw(_grid_matrix(K, B, "hT"))
    return W, hT, draw(st.booleans(), label="hT also as a transposed view")


def _packed(W, hT, out):
    """The packed product, ``hT`` the weight whose panels it reads (as the backward packs W_h)."""
    _rowcast.packed(W, _rowcast.panels(hT), out)


KERNELS = {"product": _rowcast.product, "serial": _rowcast.serial, "gemm": _rowcast.gemm, "packed": _packed}
READS_VIEWS = ("gemm", "packed")  # the kernels that take a transposed (Fortran-ordered) hT


@given(products())
def test_rowcast_products_are_within_the_dot_product_bound_and_thread_independent(drawn):
    """Every kernel, on every drawn problem: every entry within gamma_K (|W| @ |hT|) of the exact
    product; one thread gives the same bits; ``serial`` gives the bits of ``product``."""
    W, hT, view = drawn
    (N, K), B = W.shape, hT.shape[1]
    exact = W.astype(np.float64) @ hT.astype(np.float64)
    gamma = K * U32 / (1 - K * U32) + K * U64 / (1 - K * U64)
    bound = gamma * (np.abs(W).astype(np.float64) @ np.abs(hT).astype(np.float64))
    results = {}
    for name, kernel in KERNELS.items():
        for operand in (hT, np.asfortranarray(hT)) if view and name in READS_VIEWS else (hT,):
            out = np.full((N, B), np.nan, np.float32)
            kernel(W, operand, out)
            err = np.abs(out.astype(np.float64) - exact)
            bad = ~(err <= bound)  # NaN (an entry never written) is bad too
            assert not bad.any(), (
                f"{name}: {bad.sum()} entries out of bound, first at {np.argwhere(bad)[0]} of (N, B) = {err.shape}, K = {K}"
            )
            threads = numba.get_num_threads()
            if threads > 1:
                single = np.full_like(out, np.nan)
                numba.set_num_threads(1)
                try:
                    kernel(W, operand, single)
                finally:
                    numba.set_num_threads(threads)
                np.testing.assert_array_equal(single, out, err_msg=f"{name} on one thread")
            results[name] = out
    # the same tiles and K blocks as the parallel product, on one thread
    np.testing.assert_array_equal(results["serial"], results["product"])


FORWARDS = st.sampled_from([16, 32]).flatmap(
    lambda B: cases(configs(("gru", "lstm"), min_B=B, max_B=B, max_T=6, max_D=6, max_H=20), adversarial=None, grads=False)
)


@given(FORWARDS, st.sampled_from(("batched", "fused")))
def test_forward_inference_through_the_kernel_is_within_the_float32_tolerance(case, algorithm):
    """jit GRU (both resets) and LSTM (projection, peepholes) forward_inference with every product on
    the kernel: within (32 + 8T) u of the float64 reference on the same float32-rounded values."""
    module = jit_gru if case.config.layers[0].cell == "gru" else jit_lstm

    def run(layers, x, state0, dy=None, dstate_T=None):
        (p,) = layers
        asked = []
        with mock.patch.object(_rowcast, "applies", lambda dtype, rows, size, *widths: asked.append(np.dtype(dtype)) or True):
            y, s_T = module.forward_inference(p, x, state0[0], algorithm=algorithm)
        assert asked == [np.dtype(np.float32)], asked  # the forward asked the rule, once, for float32
        return y, (s_T,)

    outcome = compare(run, case, layout="refrnn", dtype=np.float32, grads=False)
    assert outcome.passed, outcome.reason


TRAINING = st.sampled_from([16, 32]).flatmap(
    lambda B: cases(configs(("lstm",), min_B=B, max_B=B, max_T=6, max_D=20, max_H=20, options={"proj": (False,)}), adversarial=None)
)


def _training_on_the_kernel(module, algorithm, packs):
    """``(run, calls, packings)``: a :func:`refrnn.verify.compare` candidate making one training step
    of ``module`` (jit GRU or LSTM) with the rule made to take the kernel and the backward's step
    weight packed where ``packs`` (and the real packing rule) say so; ``calls`` records the
    backward's products after its loop on the kernel, ``packings`` the shapes it packed."""
    calls, packings = [], []
    gradients, panels, rule = _backward.rowcast_gradients, _rowcast.panels, _rowcast.packs_step_weight

    def spy(*args):
        calls.append(True)
        return gradients(*args)

    def run(layers, x, state0, dy=None, dstate_T=None):
        (p,) = layers
        with mock.patch.object(_rowcast, "applies", lambda dtype, rows, size, *widths: True), \
                mock.patch.object(_rowcast, "packs_step_weight", lambda width: packs and rule(width)), \
                mock.patch.object(_rowcast, "panels", lambda b, *out: packings.append(b.shape) or panels(b, *out)), \
                mock.patch.object(_backward, "rowcast_gradients", spy):
            y, s_T, cache = module.forward(p, x, state0[0], algorithm=algorithm)
            grads, dx, ds0 = module.backward(p, cache, dy, dstate_T[0])
        return y, (s_T,), ([grads], dx, (ds0,))

    return run, calls, packings


@given(TRAINING, st.sampled_from(("batched", "fused")), st.booleans())
def test_lstm_training_step_through_the_kernel_is_within_the_float32_tolerance(case, algorithm, packs):
    """jit LSTM forward + backward with every product on the kernel (4H a multiple of 16; else the
    rule keeps BLAS and the step is checked the same way), the backward's step product over W_h
    packed or not: outputs, states and every gradient within (32 + 8T) u of the float64
    reference on the same float32-rounded values."""
    run, calls, packings = _training_on_the_kernel(jit_lstm, algorithm, packs)
    outcome = compare(run, case, layout="refrnn", dtype=np.float32)
    assert outcome.passed, outcome.reason
    H = case.config.layers[0].H
    assert bool(calls) == (4 * H % 16 == 0), (calls, case.config)
    assert bool(packings) == (bool(calls) and packs and H % _rowcast.LANES == 0), (packings, packs, case.config)


GRU_TRAINING = st.tuples(st.sampled_from([16, 32]), st.sampled_from([16, 32])).flatmap(
    lambda BH: cases(configs(("gru",), H=BH[1], min_B=BH[0], max_B=BH[0], max_T=6, max_D=20,
                             options={"reset": ("after",)}), adversarial=None)
)


@given(GRU_TRAINING, st.sampled_from(("batched", "fused")), st.booleans())
def test_gru_training_step_through_the_kernel_is_within_the_float32_tolerance(case, algorithm, packs):
    """jit GRU (reset="after", H a multiple of 16) forward + backward on the kernel's step loop
    (:func:`refrnn.jit._kernels.gru_kernel`), the backward's step product over W_h packed or not, its
    weight gradients through ``rowcast_gradients`` (da_x and da_h differing in their n part):
    outputs, state and every gradient within (32 + 8T) u of the float64 reference on the same
    float32-rounded values."""
    run, calls, packings = _training_on_the_kernel(jit_gru, algorithm, packs)
    outcome = compare(run, case, layout="refrnn", dtype=np.float32)
    assert outcome.passed, outcome.reason
    assert calls, case.config
    assert bool(packings) == packs, (packings, packs, case.config)
