"""refrnn reproduce trains through the compiled paths: the language model's loss and gradients on the jit
backend equal the reference backend's (float64, 1e-10), the command says which it trains with, and
an unknown backend is refused. (Several Adam updates: ``properties/test_jit_train_sru_ccgru.py``.)"""

import numpy as np
import pytest

from refrnn.reproduce import model as lm

pytest.importorskip("refrnn.jit.ccgru")


@pytest.mark.parametrize("kind, g, embed", [("gru", None, 0), ("block", 2, 0), ("lowrank", 3, 4), ("full", None, 0)])
def test_loss_and_grads_on_the_compiled_paths_equal_the_reference(kind, g, embed):
    m = lm.init(kind, 6, g=g, embed=embed, rng=0, dtype=np.float64)
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 27, size=(6, 3))
    h0 = rng.standard_normal((3, 6))
    bpc_r, g_r, h_r, m_r = lm.loss_and_grads(m, ids[:-1], ids[1:], h0, backend="reference")
    bpc_j, g_j, h_j, m_j = lm.loss_and_grads(m, ids[:-1], ids[1:], h0, backend="jit")
    assert abs(bpc_r - bpc_j) <= 1e-12
    assert g_r.keys() == g_j.keys()
    for name in g_r:
        assert np.max(np.abs(g_r[name] - g_j[name])) <= 1e-10, name
    assert np.max(np.abs(h_r - h_j)) <= 1e-10
    if kind != "gru":
        assert np.max(np.abs(m_r.cell.running_var - m_j.cell.running_var)) <= 1e-10


def test_the_default_backend_is_the_compiled_one_and_bad_backends_are_refused():
    import inspect

    from refrnn.jit import ccgru as jit_ccgru
    from refrnn.reproduce import train

    assert inspect.signature(lm.loss_and_grads).parameters["backend"].default == "jit"
    assert inspect.signature(train.train).parameters["backend"].default == "jit"
    cell = lm.init("block", 4, g=2, rng=0).cell
    assert lm.cell_paths(cell) == (jit_ccgru.forward_train, jit_ccgru.backward)
    m = lm.init("gru", 4, rng=0)
    ids = np.zeros((3, 2), int)
    with pytest.raises(ValueError, match="backend: expected one of 'jit', 'reference', got 'numpy'"):
        lm.loss_and_grads(m, ids, ids, backend="numpy")


def test_the_command_says_what_it_trains_with(tmp_path, capsys):
    from refrnn.reproduce import cli

    rc = cli.main(["--smoke", "--kinds", "block", "--shifts", "0", "--steps", "2", "--recal-segments", "1",
                   "--quiet", "--out", str(tmp_path)])
    assert rc == 0
    assert "training through the compiled paths (refrnn.jit forward and backward)" in capsys.readouterr().out
    assert cli._parser().parse_args([]).backend == "jit"
