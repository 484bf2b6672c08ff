"""SRU: the time-batched input projection equals step-by-step projection, and the sru layout is lossless.

Equations (:mod:`refrnn.cells.sru`)::

    U = x W^T                                      one (T*B, D) @ (D, k*H) product for all steps
    U_t = x_t W^T                                  the same, one step at a time
    f_t = sigmoid(U_f,t + v_f * c_{t-1} + b_f),  r_t = sigmoid(U_r,t + v_r * c_{t-1} + b_r)
    c_t = f_t * c_{t-1} + (1 - f_t) * U_c,t,     h_t = r_t * g(c_t) + (1 - r_t) * s_t

Only U mixes units, and it reads no state, so the whole sequence's projection can be one matrix
product (the SRU paper's Section 3.1); the recurrence is element-wise. The property recomputes the
recurrence with the projection done per step and compares (rounding of differently grouped BLAS
calls only, 1e-13).

Shapes: x (T, B, D); W (k*H, D); c (B, H).
"""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from refrnn.cells import sru
from refrnn.cells._common import sigmoid
from refrnn.layouts.sru import from_sru, to_sru
from refrnn.verify.strategies import cases, configs

ROUNDING = 1e-13


def _step_by_step(p, x, c):
    H = p.hidden_size
    v_f, v_r = (p.v[:H], p.v[H:]) if p.v is not None else (0.0, 0.0)
    b_f, b_r = p.b[:H], p.b[H:]
    ys = []
    for x_t in x:
        U_t = x_t @ p.W.T  # this step's projection only
        f = sigmoid(U_t[:, H : 2 * H] + v_f * c + b_f)
        r = sigmoid(U_t[:, 2 * H : 3 * H] + v_r * c + b_r)
        c = f * c + (1.0 - f) * U_t[:, :H]
        g = np.tanh(c) if p.activation == "tanh" else c
        if p.skip == "none":
            h = r * g
        else:
            s = p.alpha * (x_t[:, p.skip_offset : p.skip_offset + H] if p.skip == "identity" else U_t[:, 3 * H :])
            h = r * g + (1.0 - r) * s
        ys.append(h)
    return np.stack(ys) if ys else np.zeros((0, x.shape[1], H)), c


@given(cases(configs(("sru",), max_D=5, max_H=4, max_T=8, min_B=0), adversarial=None, grads=False))
def test_time_batched_projection_equals_step_by_step(case):
    """SRU forward (one product for all T steps) equals projecting x_t inside the loop, for every skip, v, activation and alpha."""
    p = case.params
    y, c_T, _ = sru.forward(p, case.x, case.state0[0])
    y_steps, c_steps = _step_by_step(p, case.x, case.state0[0])
    np.testing.assert_allclose(y, y_steps, rtol=0, atol=ROUNDING)
    np.testing.assert_allclose(c_T, c_steps, rtol=0, atol=ROUNDING)


SRU_PACKAGE_CONFIGS = configs(("sru",), max_D=5, max_H=4, max_layers=3, options={"skip": ("auto", "none"), "skip_offset": (0,)})


@given(cases(SRU_PACKAGE_CONFIGS, grads=False), st.booleans())
def test_sru_layout_round_trip_is_the_identity(case, cell):
    """from_sru(to_sru(layers)) returns the same SRU parameters bit for bit (SRUCell, and SRU with 1-3 layers)."""
    layers = case.layers[:1] if cell else case.layers
    first = layers[0]
    rescale = any(p.alpha != 1.0 for p in layers)
    kind = "SRUCell" if cell else "SRU"
    sd = to_sru(layers[0] if cell else layers, kind, rescale=rescale)
    options = dict(has_skip_term=first.skip != "none", use_tanh=first.activation == "tanh", v_terms=first.v is not None)
    back = from_sru(sd, kind, rescale=rescale, **options)
    back = (back,) if cell else back
    assert len(back) == len(layers)
    for p, q in zip(layers, back):
        assert (p.skip, p.alpha, p.skip_offset, p.activation) == (q.skip, q.alpha, q.skip_offset, q.activation)
        assert p.array_names() == q.array_names()
        for name in p.array_names():
            np.testing.assert_array_equal(getattr(p, name), getattr(q, name))
    again = to_sru(back[0] if cell else back, kind, rescale=rescale)
    assert list(again) == list(sd)
    for key in sd:
        np.testing.assert_array_equal(again[key], sd[key])
