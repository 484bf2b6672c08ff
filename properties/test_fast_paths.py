"""Every numba fast path equals its reference: forward, the cache backward reads, and so the gradients.

Equations: those of the reference cells; the fast paths (:mod:`refrnn.jit`) only reorder the work
(one GEMM over all steps, fused [W_x | W_h] products, sparse z paths). float64 must agree within
1e-10 absolute (the project's spec); float32 is compared with the float64 reference on the same
float32-rounded values under :func:`refrnn.verify.report.default_tolerance` ((32 + 8 T) u), through
:func:`refrnn.verify.compare` in the ``refrnn`` layout.

The conditional GRU's paths are inference paths (running or folded statistics); besides equality,
each must copy a unit's state bit for bit wherever its own z is exactly 0 (the zero-z copy-forward
that lets it skip the unit).

Shapes: x (T, B, D); states per cell; caches as the reference's.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refrnn.cells import ccgru, gru, lstm
from refrnn.verify import compare
from refrnn.verify.strategies import cases, configs

jit_gru = pytest.importorskip("refrnn.jit.gru")  # numba is a dependency; this guards a broken install
from refrnn.jit import ccgru as jit_ccgru  # noqa: E402
from refrnn.jit import lstm as jit_lstm  # noqa: E402

TOL64 = 1e-10
STRATEGIES = st.sampled_from(("batched", "fused"))


def _with_z(out):
    """(y, h_T, z) from the fast forward's (y, h_T, cache)."""
    y, h_T, cache = out
    return y, h_T, cache.z


def _close(a, b, tol=TOL64):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=tol)


@given(cases(configs(("gru",), max_T=6, max_H=5, max_D=4), adversarial=None), STRATEGIES)
def test_jit_gru_equals_the_reference(case, strategy):
    """jit GRU (both resets, batched and fused): y, h_T, every cache array and every gradient within 1e-10 of the reference."""
    p, x, h0 = case.params, case.x, case.state0[0]
    y, h_T, cache = gru.forward(p, x, h0)
    y_j, h_T_j, cache_j = jit_gru.forward(p, x, h0, algorithm=strategy)
    _close(y_j, y)
    _close(h_T_j, h_T)
    for name in cache._fields:
        _close(getattr(cache_j, name), getattr(cache, name))
    y_i, h_T_i = jit_gru.forward_inference(p, x, h0, algorithm=strategy)
    _close(y_i, y)
    _close(h_T_i, h_T)
    grads, dx, dh0 = gru.backward(p, cache, case.dy, case.dstate_T[0])
    grads_j, dx_j, dh0_j = gru.backward(p, cache_j, case.dy, case.dstate_T[0])
    _close(dx_j, dx)
    _close(dh0_j, dh0)
    for name in p.array_names():
        _close(getattr(grads_j, name), getattr(grads, name))


@given(cases(configs(("lstm",), max_T=6, max_H=5, max_D=4), adversarial=None), STRATEGIES)
def test_jit_lstm_equals_the_reference(case, strategy):
    """jit LSTM (peepholes, projection; batched and fused): outputs, states, cache and gradients within 1e-10."""
    p, x, s0 = case.params, case.x, case.state0[0]
    y, s_T, cache = lstm.forward(p, x, s0)
    y_j, s_T_j, cache_j = jit_lstm.forward(p, x, s0, algorithm=strategy)
    _close(y_j, y)
    for a, b in zip(s_T_j, s_T):
        _close(a, b)
    for name in cache._fields:
        if getattr(cache, name) is not None:
            _close(getattr(cache_j, name), getattr(cache, name))
    y_i, _ = jit_lstm.forward_inference(p, x, s0, algorithm=strategy)
    _close(y_i, y)
    grads, dx, _ = lstm.backward(p, cache, case.dy, case.dstate_T[0])
    grads_j, dx_j, _ = lstm.backward(p, cache_j, case.dy, case.dstate_T[0])
    _close(dx_j, dx)
    for name in p.array_names():
        _close(getattr(grads_j, name), getattr(grads, name))


INFERENCE = configs(("ccgru",), max_T=6, max_H=6, max_B=4, options={"mode": ("inference",)})


@given(cases(INFERENCE, adversarial=None, grads=False), st.sampled_from(jit_ccgru.PATHS))
def test_jit_ccgru_equals_the_reference_and_copies_where_z_is_zero(case, path):
    """jit conditional GRU, every path: y, h_T and z within 1e-10 of the reference; units with z == 0 keep h bit for bit."""
    p, x, h0 = case.params, case.x, case.state0[0]
    if path == "block" and p.variant != "block":
        path = "unstructured"  # the block path needs z constant on blocks
    y, h_T, cache = ccgru.forward(p, x, h0)
    y_j, h_T_j, z_j = _with_z(jit_ccgru.forward(p, x, h0, algorithm=path))
    _close(y_j, y)
    _close(h_T_j, h_T)
    _close(z_j, cache.z)
    h_all = np.concatenate([h0[None], y_j])
    closed = z_j == 0.0
    for t in range(case.config.T):
        np.testing.assert_array_equal(h_all[t + 1][closed[t]], h_all[t][closed[t]])


def _jit_forward(module, **kw):
    def candidate(layers, x, state0, dy=None, dstate_T=None):
        (p,) = layers
        y, s_T = module.forward_inference(p, x, state0[0], **kw)
        return y, (s_T,)

    return candidate


@given(
    cases(configs(("gru", "lstm", "ccgru"), max_T=12, max_H=5, options={"mode": ("inference",)}), adversarial=None, grads=False),
    STRATEGIES,
)
def test_jit_float32_is_within_the_float32_tolerance_of_the_float64_reference(case, strategy):
    """jit GRU, LSTM and conditional GRU in float32 are within (32 + 8T) u of float64 on the same rounded values."""
    cell = case.config.layers[0].cell
    if cell == "ccgru":
        candidate = _jit_forward(jit_ccgru, algorithm="dense" if strategy == "batched" else "sparse")
    else:
        candidate = _jit_forward(jit_gru if cell == "gru" else jit_lstm, algorithm=strategy)
    outcome = compare(candidate, case, layout="refrnn", dtype=np.float32, grads=False)
    assert outcome.passed, outcome.reason


# Widths whose tiles (8 or 16 units, blocks of 8 or more) the float32 paths multiply with the compiled
# kernel of refrnn.jit._rowcast rather than BLAS; batches past its 6-row tile and every remainder of it.
KERNEL_TILES = st.sampled_from([8, 16, 32]).flatmap(
    lambda H: cases(configs(("ccgru",), H=H, max_T=4, max_D=6, min_B=2, max_B=20, options={"mode": ("inference",)}),
                    adversarial=None, grads=False)
)


@given(KERNEL_TILES, st.sampled_from(("dense", "sparse")))
def test_jit_ccgru_float32_through_the_kernel_is_within_the_float32_tolerance(case, algorithm):
    """The conditional GRU's float32 batch paths with their tile and gate products on the kernel
    (dense tiles; gathered blocks; the gate split between threads): within (32 + 8T) u of float64."""
    outcome = compare(_jit_forward(jit_ccgru, algorithm=algorithm), case, layout="refrnn", dtype=np.float32, grads=False)
    assert outcome.passed, outcome.reason
