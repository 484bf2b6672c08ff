r"""Block fusion of the gate products: ``W_x x + W_h h == [W_x | W_h] @ [x; h]``, and what it is not.

Equations (G gate blocks of H rows each; ``|`` joins columns, ``;`` stacks rows)::

    [W_x | W_h] @ [x; h] = W_x x + W_h h                 (G*H, D+H) @ (D+H,) -> (G*H,)     the fusion
    [[W_x, 0], [0, W_h]] @ [x; h] = [W_x x; W_h h]       (2G*H, D+H) @ (D+H,) -> (2G*H,)   block-diagonal

The fused-matmul Q&A in the seed notes writes the second form and expands it as a sum; the matrix
product of a block-diagonal matrix *stacks* the two products instead, so it is 2*G*H tall and cannot
even be added to the (G*H,) pre-activation vector. Only the horizontal concatenation fuses.

Shapes: x_t (B, D), h_{t-1} (B, H), pre-activations (B, G*H).
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from refrnn.cells import ccgru, gru, lstm
from refrnn.cells._common import sigmoid
from refrnn.verify.strategies import bounded, cases, configs

ROUNDING = 1e-13  # the fused product sums the same terms in another order: ~1e-16 per term


def _fused(params, x_t, h_prev):
    W = np.hstack([params.W_x, params.W_h])  # (G*H, D+H)
    xh = np.concatenate([x_t, h_prev], axis=-1)  # (B, D+H)
    return xh @ W.T + params.b_x + params.b_h


@given(cases(configs(("lstm",), max_T=4), adversarial=None, grads=False))
def test_lstm_gates_are_activations_of_one_fused_product(case):
    """Every LSTM gate i, f, g, o at every step is its activation of [W_x | W_h] @ [x_t; h_{t-1}] + b_x + b_h (+ peepholes)."""
    p = case.params
    _, _, cache = lstm.forward(p, case.x, case.state0[0])
    for t in range(case.config.T):
        a_i, a_f, a_g, a_o = np.split(_fused(p, case.x[t], cache.h[t]), 4, axis=-1)
        if p.w_ic is not None:  # peepholes are element-wise: they add to the fused product, never join it
            a_i, a_f, a_o = a_i + p.w_ic * cache.c[t], a_f + p.w_fc * cache.c[t], a_o + p.w_oc * cache.c[t + 1]
        for got, want in [(cache.i[t], sigmoid(a_i)), (cache.f[t], sigmoid(a_f)), (cache.g[t], np.tanh(a_g)), (cache.o[t], sigmoid(a_o))]:
            np.testing.assert_allclose(got, want, rtol=0, atol=ROUNDING)


@given(cases(configs(("gru",), max_T=4), adversarial=None, grads=False))
def test_gru_gates_are_activations_of_one_fused_product(case):
    """GRU r and z are sigmoids of the fused product; n is too for reset='before' (with r*h for h), never for 'after'."""
    p = case.params
    H = p.hidden_size
    _, _, cache = gru.forward(p, case.x, case.state0[0])
    for t in range(case.config.T):
        h_prev = cache.h[t]
        a_r, a_z, _ = np.split(_fused(p, case.x[t], h_prev), 3, axis=-1)
        np.testing.assert_allclose(cache.r[t], sigmoid(a_r), rtol=0, atol=ROUNDING)
        np.testing.assert_allclose(cache.z[t], sigmoid(a_z), rtol=0, atol=ROUNDING)
        n_rows = slice(2 * H, 3 * H)
        if p.reset == "before":
            # reset-before gates the *input* of W_hn, so n fuses too, over [x; r*h]
            W_n = np.hstack([p.W_x[n_rows], p.W_h[n_rows]])
            a_n = np.concatenate([case.x[t], cache.r[t] * h_prev], axis=-1) @ W_n.T + p.b_x[n_rows] + p.b_h[n_rows]
            np.testing.assert_allclose(cache.n[t], np.tanh(a_n), rtol=0, atol=ROUNDING)
        else:
            # reset-after gates the *output* of W_hn: the two products must stay apart
            a_x = case.x[t] @ p.W_x[n_rows].T + p.b_x[n_rows]
            a_h = h_prev @ p.W_h[n_rows].T + p.b_h[n_rows]
            np.testing.assert_allclose(cache.n[t], np.tanh(a_x + cache.r[t] * a_h), rtol=0, atol=ROUNDING)


@given(cases(configs(("ccgru",), max_T=4), adversarial=None, grads=False))
def test_ccgru_gates_fuse_except_the_proposal(case):
    """Conditional GRU: r and the z path are activations of fused [W | U] @ [x; h] products; ĥ is not (r gates U_h h)."""
    p = case.params
    H = p.hidden_size
    _, _, cache = ccgru.forward(p, case.x, case.state0[0])
    fused_z = p.variant == "full"
    W_z, U_z, b_z = (p.W_z, p.U_z, p.b_z) if fused_z else (p.W_z_lr, p.U_z_lr, p.b_z_lr)
    for t in range(case.config.T):
        x_t, h_prev = case.x[t], cache.h[t]
        xh = np.concatenate([x_t, h_prev], axis=-1)
        a_r = xh @ np.hstack([p.W_rh[:H], p.U_rh[:H]]).T + p.b_rh[:H]
        np.testing.assert_allclose(cache.r[t], sigmoid(a_r), rtol=0, atol=ROUNDING)
        # ĥ keeps U_h h apart: r multiplies it after the product (the paper's Eq. 5)
        a_h = x_t @ p.W_rh[H:].T + p.b_rh[H:] + cache.r[t] * (h_prev @ p.U_rh[H:].T)
        np.testing.assert_allclose(cache.h_hat[t], np.tanh(a_h), rtol=0, atol=ROUNDING)
        u = xh @ np.hstack([W_z, U_z]).T + b_z  # the z path's only product with x and h
        if not fused_z:
            np.testing.assert_allclose(cache.z_lr[t], np.maximum(u, 0.0), rtol=0, atol=ROUNDING)
        elif p.mode == "inference" or p.norm == "folded":
            inv_std = 1.0 if p.norm == "folded" else 1.0 / np.sqrt(p.running_var + p.eps)
            np.testing.assert_allclose(cache.n_hat[t], (u - p.running_mean) * inv_std, rtol=0, atol=1e-11)


@st.composite
def gate_blocks(draw):
    G = draw(st.sampled_from([3, 4]), label="gates")  # GRU 3, LSTM 4
    H = draw(st.integers(1, 5), label="H")
    D = draw(st.integers(1, 5), label="D")
    W_x = draw(bounded((G * H, D), label="W_x"))
    W_h = draw(bounded((G * H, H), label="W_h"))
    x = draw(bounded((D,), label="x"))
    h = draw(bounded((H,), label="h"))
    return G, H, D, W_x, W_h, x, h


@given(gate_blocks())
def test_horizontal_concatenation_fuses_the_two_products(blocks):
    """[W_x | W_h] @ [x; h] equals W_x x + W_h h, with the shape (G*H,) of one gate pre-activation vector."""
    G, H, D, W_x, W_h, x, h = blocks
    fused = np.hstack([W_x, W_h]) @ np.concatenate([x, h])
    assert fused.shape == (G * H,)
    np.testing.assert_allclose(fused, W_x @ x + W_h @ h, rtol=0, atol=ROUNDING)


@given(gate_blocks())
def test_block_diagonal_form_stacks_the_products_instead_of_summing_them(blocks):
    """[[W_x, 0], [0, W_h]] @ [x; h] is (G*H + G*H)-tall, equals [W_x x; W_h h], and cannot be added to W_x x + W_h h."""
    G, H, D, W_x, W_h, x, h = blocks
    block_diagonal = np.block([[W_x, np.zeros((G * H, H))], [np.zeros((G * H, D)), W_h]])
    assert block_diagonal.shape == (2 * G * H, D + H)
    stacked = block_diagonal @ np.concatenate([x, h])
    assert stacked.shape == (2 * G * H,) != (G * H,)
    np.testing.assert_allclose(stacked[: G * H], W_x @ x, rtol=0, atol=ROUNDING)  # the top block row only sees x
    np.testing.assert_allclose(stacked[G * H :], W_h @ h, rtol=0, atol=ROUNDING)  # the bottom one only sees h
    with pytest.raises(ValueError, match="broadcast"):  # the shapes do not even compose
        stacked + (W_x @ x + W_h @ h)
    # Summing the two halves (a further (G*H, 2*G*H) product [I | I]) would recover the fusion, at
    # twice the multiply-adds of [W_x | W_h]: the block-diagonal matrix is half zeros.
    np.testing.assert_allclose(stacked[: G * H] + stacked[G * H :], W_x @ x + W_h @ h, rtol=0, atol=ROUNDING)
