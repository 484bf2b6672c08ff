"""Hand-derived backprop through time equals central finite differences, for every cell and stacks of them.

The loss is :func:`refrnn.gradcheck`'s ``sum(G_y * y) + sum(G_s * s_T)`` with random ``G``;
every parameter, the input and the initial state are checked, normwise relative error <= 1e-6 (the
project's spec; see NOISE for gradients that are exactly zero). Values are the strategies'
well-conditioned draws (gate pre-activations bounded by sqrt(D) + sqrt(H) + 1, entries 0 or
>= bound/64), so central differences at eps = 1e-6 resolve each gradient to ~1e-9 and a failure is a
wrong derivative, not noise. Sizes are tiny: finite differences
cost two forward passes per scalar.

The conditional GRU has two kinks, ``cliptanh`` at 0 and the bottleneck's relu at 0, where the
derivative jumps and central differences straddling the kink measure neither side: examples with a
kink input within 1e-4 of zero are discarded (``assume``), everything else must match.
"""

import numpy as np
from hypothesis import assume, given

from refrnn.layers import stack
from refrnn import gradcheck
from refrnn.verify.strategies import CELLS, cases, configs

SMALL = dict(max_D=3, max_H=3, max_B=2, max_T=4)
KINK = 1e-4  # eps = 1e-6 times |d input / d parameter| <= ~10 stays well inside this margin
# Central differences carry rounding noise of about u * |L| / eps ~ 1e-10 * |L| (|L| < 100 here). An
# array whose true gradient is exactly zero (a bias that batch normalisation cancels) has a normwise
# relative error of 1 against that noise, so errors below this absolute floor count as agreement.
NOISE = 1e-8


def _check(case):
    params = case.layers if len(case.layers) > 1 else case.params
    state0 = case.state0 if len(case.layers) > 1 else case.state0[0]
    report = gradcheck(params, case.x, state0, tol=1e-6, seed=0)
    bad = [n for n, rel in report.relative.items() if rel > 1e-6 and report.absolute[n] > NOISE]
    assert not bad, f"{case.config}\n{report}"


def _away_from_kinks(case) -> bool:
    """No cliptanh or relu input of a conditional-GRU layer within KINK of 0, at any step and row."""
    _, _, cache = stack.forward(case.layers, case.x, case.state0)
    for p, c in zip(case.layers, cache.layers):
        if type(p).__name__.startswith("CCGRU"):
            if np.any(np.abs(c.n_hat + p.s) < KINK):
                return False
            if c.z_lr is not None:
                U = p.U_z_lr
                u = c.x @ p.W_z_lr.T + p.b_z_lr + np.einsum("tbh,gh->tbg", c.h[:-1], U)
                if np.any(np.abs(u) < KINK):
                    return False
    return True


@given(cases(configs(("gru",), **SMALL), grads=False))
def test_gru_backward_equals_finite_differences(case):
    """GRU (reset after and before): every hand-derived gradient is within 1e-6 of central differences."""
    _check(case)


@given(cases(configs(("lstm",), **SMALL), grads=False))
def test_lstm_backward_equals_finite_differences(case):
    """LSTM, with and without peepholes and projection: every gradient within 1e-6 of central differences."""
    _check(case)


@given(cases(configs(("sru",), **SMALL), grads=False))
def test_sru_backward_equals_finite_differences(case):
    """SRU, every skip, v-term, activation and alpha option: every gradient within 1e-6 of central differences."""
    _check(case)


@given(cases(configs(("ccgru",), max_D=3, max_H=4, max_B=3, max_T=3), grads=False))
def test_ccgru_backward_equals_finite_differences(case):
    """Conditional GRU, every variant, mode and norm: every gradient within 1e-6 of central differences (off the kinks)."""
    assume(_away_from_kinks(case))
    _check(case)


@given(cases(configs(tuple(CELLS), min_layers=2, max_layers=3, same_layers=False, max_D=3, max_H=3, max_B=2, max_T=3), grads=False))
def test_stack_backward_equals_finite_differences(case):
    """Mixed stacks of every cell at varying widths: every gradient within 1e-6 of central differences."""
    assume(_away_from_kinks(case))
    _check(case)
