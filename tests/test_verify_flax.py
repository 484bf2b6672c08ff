"""flax.linen GRUCell / LSTMCell / OptimizedLSTMCell / SimpleCell in nn.RNN (JAX, CPU) against the reference: correct
conversions pass with gradients, planted wrong ones are caught, the findings are pinned for the version they were found
in, and the CLI refuses what it cannot run. Without jax and flax only the not-installed paths run."""

import importlib.util

import numpy as np
import pytest

from refrnn.layers import bidirectional as bi
from refrnn import gru, lstm, rnn

pytest.importorskip("hypothesis")
from refrnn.verify import compare, matrix, verify  # noqa: E402
from refrnn.verify.cli import main  # noqa: E402
from refrnn.verify.strategies import case_from  # noqa: E402

EX = 4  # XLA compiles each new shape (about a second on 2 busy cores): few examples, small sizes
SMALL = {"max_T": 10, "max_H": 20, "max_D": 20, "max_B": 6}
HAVE_FLAX = importlib.util.find_spec("jax") is not None and importlib.util.find_spec("flax") is not None
needs_flax = pytest.mark.skipif(not HAVE_FLAX, reason="jax and flax are not installed (pip install 'refrnn[flax]')")


def _flax_rnn(*a, **k):
    from refrnn.verify.adapters_flax import flax_rnn

    return flax_rnn(*a, **k)


def _pinned(found_in: str) -> None:
    import flax

    if flax.__version__ != found_in:
        pytest.skip(f"finding pinned for flax {found_in}; {flax.__version__} is installed: re-run `refrnn verify flax` and re-pin")


# -------------------------------------------------------------------------------------- correct passes
@needs_flax
@pytest.mark.parametrize("cell, dtype", [("GRUCell", "float64"), ("LSTMCell", "float32"), ("OptimizedLSTMCell", "float64"), ("SimpleCell", "float32")])
def test_cells_pass_with_gradients_and_every_convention(cell, dtype):
    report = verify(_flax_rnn(cell, dtype=dtype), max_examples=EX, **SMALL)
    assert report.passed, str(report)
    assert report.grads and any(n.startswith("dparams/") for n in report.worst), str(report)


@needs_flax
def test_reverse_as_its_own_rnn_passes_with_lengths():
    # one fixed bidirectional problem (a few drawn examples may hold none): reverse=True, keep_order=True vs the
    # BiLayer's reverse half, with a sample shorter than T so that the flip has to keep the padding at the end
    case = _case(gru, bidirectional=True, lengths=[3, 5])
    assert compare(_flax_rnn("GRUCell"), case).passed  # nn.Bidirectional itself
    cand = _flax_rnn("GRUCell", split_directions=True)
    out = compare(cand, case)
    assert out.passed and "h_T_reverse" in out.errors and "dparams/backward_rnn/cell/hn/bias" in out.errors, out.reason


@needs_flax
def test_float64_does_not_leak_into_the_process():
    import jax

    before = jax.config.jax_enable_x64
    y, _ = _flax_rnn("GRUCell")(*_args(gru))
    assert y.dtype == np.float64 and jax.config.jax_enable_x64 == before


# ---------------------------------------------------------------------------------- wrong conversions
def _case(mod, bidirectional=False, lengths=None, **opts):
    rng = np.random.default_rng(0)
    if bidirectional:
        p = bi.BiLayer(mod.init(3, 4, rng=rng, **opts), mod.init(3, 4, rng=rng, **opts))
    else:
        p = mod.init(3, 4, rng=rng, **opts)
    p = p.map(lambda a: a + 0.3 * rng.standard_normal(a.shape))  # non-zero biases, so that their placement matters
    state = mod.zero_state(p.fwd if bidirectional else p, 2)
    state = (state, state) if bidirectional else state
    return case_from([p], rng.standard_normal((5, 2, 3)), (state,), lengths=lengths, seed=1)


def _args(mod):
    from refrnn.verify.adapters import get_layout

    import refrnn.verify.adapters_flax  # noqa: F401 - registers the layout

    return get_layout("flax").arguments(_case(mod)._replace(dy=None, dstate_T=None))


class _Planted:
    """A Flax candidate fed a wrongly converted tree (``bug(tree) -> tree``) or returning wrong gradients."""

    def __init__(self, base, bug=None, grad_bug=None, carry_bug=None):
        self.base, self.bug, self.grad_bug, self.carry_bug = base, bug, grad_bug, carry_bug
        for a in ("cell", "layout", "grads", "max_layers", "dtype", "conventions"):
            setattr(self, a, getattr(base, a))

    def __call__(self, weights, x, state0, *rest, **kw):
        tree = weights["params"] if self.bug is None else self.bug({k: dict(v) for k, v in weights["params"].items()})
        if self.carry_bug is not None:
            state0 = self.carry_bug(state0)
        out = self.base({**weights, "params": tree}, x, state0, *rest, **kw)
        if self.grad_bug is not None and len(out) == 3:
            out[2]["params"] = self.grad_bug(out[2]["params"])
        return out


def _swap(a, b):
    def bug(t):
        t[a], t[b] = t[b], t[a]
        return t
    return bug


def _bias_in_hn_swapped(t):  # b_in (outside the reset product) and b_hn (inside) exchanged
    t["in"]["bias"], t["hn"]["bias"] = t["hn"]["bias"], t["in"]["bias"]
    return t


def _doubled_folded_grad(g):  # d(b_x + b_h) read as db_x + db_h: twice the true gradient of the one bias
    g = {k: dict(v) for k, v in g.items()}
    g["ir"]["bias"] = 2 * g["ir"]["bias"]
    return g


@needs_flax
def test_wrong_conversions_are_caught():
    # compare() on one fixed problem: a planted bug shows at once, and shrinking it here would only cost time
    base = _flax_rnn("GRUCell")
    assert compare(base, _case(gru)).passed
    for name, bug in (("gate-order r/z", _swap("ir", "iz")), ("bias-placement b_in/b_hn", _bias_in_hn_swapped)):
        out = compare(_Planted(base, bug), _case(gru))
        assert not out.passed and "y" in out.failing, name
    out = compare(_Planted(base, grad_bug=_doubled_folded_grad), _case(gru))
    assert not out.passed and out.failing == ("dparams/ir/bias",), out.reason
    # direction: the forward and backward trees exchanged
    out = compare(_Planted(base, _swap("forward_rnn", "backward_rnn")), _case(gru, bidirectional=True))
    assert not out.passed and "y" in out.failing
    # a forward layer run with reverse=True: the direction is wrong
    out = compare(_flax_rnn("SimpleCell", rnn_kwargs={"reverse": True, "keep_order": True}), _case(rnn))
    assert not out.passed and "y" in out.failing
    # an LSTM's initial state handed over in refrnn's (h, c) order instead of Flax's (c, h)
    lstm_base = _flax_rnn("LSTMCell")
    case = _case(lstm)
    case = case._replace(state0=((np.full((2, 4), 0.5), np.full((2, 4), -0.25)),))
    assert compare(lstm_base, case).passed
    out = compare(_Planted(lstm_base, carry_bug=lambda c: (c[1], c[0])), case)
    assert not out.passed and "y" in out.failing


# ------------------------------------------------------------------------------ findings, pinned
@needs_flax
def test_finding_a_zero_length_returns_the_carry_after_the_padding():
    """flax 0.12.8: ``nn.RNN(return_carry=True)`` with ``seq_lengths`` picks the carry at index ``length - 1``
    (``_select_last_carry``), so a length of 0 wraps to index -1 and returns the carry after all T padded steps,
    not the initial carry ("the carry will be the state of the last valid element"; a sequence of length 0 has
    none). Minimal: T=2, B=1, length 0. refrnn (like PyTorch) refuses a length of 0, so verify never draws it."""
    _pinned("0.12.8")
    import jax
    import jax.numpy as jnp
    from flax import linen as nn

    x = np.ones((1, 2, 1), np.float32)
    carry0 = np.full((1, 1), 0.5, np.float32)
    module = nn.RNN(nn.GRUCell(1), return_carry=True)
    variables = module.init(jax.random.key(0), x)
    carry, y = module.apply(variables, x, initial_carry=carry0, seq_lengths=jnp.array([0]))
    assert np.array_equal(np.asarray(carry), np.asarray(y[:, -1])) and not np.allclose(np.asarray(carry), carry0)


@needs_flax
def test_finding_float64_without_param_dtype_fails_in_scan():
    """flax 0.12.8 with ``jax_enable_x64``: a cell left at its default ``param_dtype=float32`` and run on float64
    parameters and inputs without an ``initial_carry`` raises a TypeError in ``scan`` (``initialize_carry`` makes a
    float32 carry, the step returns float64), although ``dtype`` is documented as inferred from inputs and params.
    The adapter sets ``param_dtype`` to the candidate's dtype."""
    _pinned("0.12.8")
    import jax
    from flax import linen as nn

    x = np.ones((1, 2, 1))
    with jax.enable_x64(True):
        module = nn.RNN(nn.GRUCell(1), return_carry=True)
        params = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), module.init(jax.random.key(0), x.astype(np.float32)))
        with pytest.raises(TypeError, match="carry input and carry output must have equal types"):
            module.apply(params, x)


# ------------------------------------------------------------------------------------ matrix, CLI
@needs_flax
def test_flax_rows_of_the_matrix():
    rows = {r.op: r for r in matrix.TARGETS["flax"][1]()}
    assert set(rows) == {"GRUCell", "LSTMCell", "OptimizedLSTMCell", "SimpleCell"} and all(r.grads for r in rows.values())
    gru_row = rows["GRUCell"]
    assert matrix._probe(gru_row, "GRU reset before", 2, 0).status == "n/e"
    assert matrix._probe(gru_row, "LSTM", 2, 0).status == "-"
    assert matrix._probe(rows["LSTMCell"], "peepholes", 2, 0).status == "n/e"
    cell = matrix._probe(rows["SimpleCell"], "RNN relu", 2, 0)
    assert cell.status == "PASS" and "activation=relu" in str(cell.report), cell.detail


def test_missing_flax_is_not_installed_in_the_matrix_and_a_usage_error_by_name(monkeypatch, capsys):
    real = matrix.missing
    monkeypatch.setattr(matrix, "missing", lambda target: ["jax", "flax"] if target == "flax" else real(target))
    result = matrix.build(("flax",))
    assert result["not_installed"] == {"flax": ["jax", "flax"]} and not result["rows"]
    assert "flax: not installed (jax, flax)" in matrix.render(result)
    ran = []
    monkeypatch.setattr(matrix, "build", lambda *a, **k: ran.append(a))
    assert main(["flax"]) == 2 and not ran
    assert "jax, flax not installed (pip install 'refrnn[flax]')" in capsys.readouterr().err  # one hint for both
    with pytest.raises(SystemExit) as err:
        main(["flaxx"])
    assert err.value.code == 2


@needs_flax
def test_bad_candidate_arguments_name_themselves():
    with pytest.raises(ValueError, match="cell_name: expected one of GRUCell, LSTMCell, OptimizedLSTMCell, SimpleCell"):
        _flax_rnn("MGUCell")
    with pytest.raises(TypeError, match="dtype"):
        _flax_rnn("GRUCell", dtype="bfloat16")
    with pytest.raises(TypeError, match="rnn_kwargs: expected a dict"):
        _flax_rnn("GRUCell", rnn_kwargs=[("reverse", True)])
    # a convention Flax cannot hold is refused by the layout, before anything runs
    with pytest.raises(ValueError, match="reset gate after the recurrent product"):
        verify(_flax_rnn("GRUCell"), options={"reset": ("before",)}, max_examples=1)


@needs_flax
def test_reverse_without_keep_order_returns_processing_order_with_padding_at_the_end():
    """``nn.RNN(reverse=True, keep_order=False)`` with ``seq_lengths``: "processed from right to left, and returned
    in reverse order ... padding will always remain at the end" -- step t of sample b is the reverse direction's
    output at step L_b - 1 - t of the reference, for t < L_b."""
    import jax
    from flax import linen as nn

    from refrnn.layers import stack
    from refrnn.layouts.flax import to_flax

    rng = np.random.default_rng(3)
    p = gru.init(3, 4, rng=rng).map(lambda a: a + 0.3 * rng.standard_normal(a.shape))
    x, lengths = rng.standard_normal((5, 2, 3)), np.array([3, 5])
    y, _, _ = stack.forward([bi.BiLayer(p, p)], x, lengths=lengths)
    with jax.enable_x64(True):
        module = nn.RNN(nn.GRUCell(4, param_dtype=np.float64), time_major=True, reverse=True, keep_order=False)
        fy = np.asarray(module.apply({"params": {"cell": to_flax(p)}}, x, seq_lengths=lengths))
    for b, L in enumerate(lengths):
        np.testing.assert_allclose(fy[:L, b], y[L - 1 :: -1, b, 4:], rtol=0, atol=1e-12)
