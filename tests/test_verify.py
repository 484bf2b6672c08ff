"""refrnn.verify: accepts the real PyTorch modules, rejects every deliberately wrong cell with its reason."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings

from refrnn.layers import stack
from refrnn.verify import Tolerance, compare, default_tolerance, verify
from refrnn.verify import strategies as S
from refrnn.verify.adapters import get_layout, torch_module
from refrnn.verify.cli import main
from refrnn.verify.mutants import FORWARD_MUTANTS, MUTANTS, CCGRUForward

torch.set_num_threads(1)  # tiny modules: threads only add synchronisation


# ------------------------------------------------------------------------------------ real modules
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kind", ["GRU", "GRUCell", "LSTM", "LSTMCell"])
def test_verify_accepts_the_torch_modules(kind, dtype):
    report = verify(torch_module(kind, dtype=dtype), max_examples=15, seed=1, min_B=0)
    assert report.passed, str(report)
    assert report.examples == 15 and report.failure is None
    names = set(report.worst)
    assert {"y", "h_n", "dx", "dh_0"} <= names and any(n.startswith("dweight_ih") for n in names)
    assert report.closest.ratio < 1.0
    if dtype == "float64":
        assert report.closest.abs < 1e-12  # two float64 implementations of the same equations


# ------------------------------------------------------------------------------------------ mutants
@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_verify_rejects_every_mutant_with_its_reason(name):
    mutant = MUTANTS[name]()
    report = verify(mutant)  # at the defaults: what a user gets
    assert not report.passed, f"{name} ({mutant.bug}) was accepted:\n{report}"
    failure = report.failure
    assert failure.divergence is not None, failure.reason
    assert any(failure.divergence.output.startswith(e) for e in mutant.expect), failure.reason
    if mutant.only:  # a gradient-only bug: every forward output must still pass
        assert all(any(f.startswith(e) for e in mutant.expect) for f in failure.failing_outputs), failure.failing_outputs
        assert report.worst["y"].passed
    text = str(report)
    assert "FAIL" in text and failure.reason in text and "shrunk minimal example" in text
    assert f"T={failure.config.T}" in text


@pytest.mark.parametrize("name", ["gru-missing-b_hn", "gru-wrong-b_h-grad", "lstm-swapped-gates"])
def test_verify_rejects_mutants_in_float32_too(name):
    report = verify(MUTANTS[name](dtype="float32"), max_examples=30, seed=0)
    assert not report.passed
    assert report.tolerance == default_tolerance(np.float32)


@pytest.mark.parametrize("name", sorted(FORWARD_MUTANTS))
def test_verify_rejects_the_forward_only_mutants(name):
    mutant = FORWARD_MUTANTS[name]()
    report = verify(mutant, grads=False)
    assert not report.passed, f"{name} ({mutant.bug}) was accepted:\n{report}"
    assert report.failure.divergence.output == "y", report.failure.reason
    cfg = report.failure.config
    # one step of one sample is enough to see either bug; the width shrinks to a handful of units
    assert (cfg.T, cfg.B, cfg.D) == (1, 1, 1) and cfg.H <= 8, cfg


def test_the_ccgru_forward_the_sigmoid_mutant_is_built_on_is_correct():
    """So the mutant is rejected for its sigmoid alone, not for a second, accidental bug."""
    report = verify(CCGRUForward(), grads=False, max_examples=40, seed=0)
    assert report.passed, str(report)
    assert report.closest.abs < 1e-12


def test_verify_accepts_the_sru_package():
    pytest.importorskip("sru")
    from refrnn.verify.adapters import SRUCellModule

    for dtype in ("float64", "float32"):
        report = verify(SRUCellModule(dtype=dtype), max_examples=15, seed=0)
        assert report.passed, str(report)
        assert {"y", "c_T", "dx", "dc_0", "dweight", "dbias"} <= set(report.worst)


def test_shrunk_example_of_a_missing_bias_points_at_the_n_gate_bias():
    report = verify(MUTANTS["gru-missing-b_hn"](), max_examples=30, seed=0)
    cfg = report.failure.config
    assert (cfg.T, cfg.B, cfg.D, len(cfg.layers), cfg.H) == (1, 1, 1, 1, 1)  # shrunk all the way down
    b_hh = report.failure.arguments["weights"]["bias_hh_l0"]
    assert b_hh[2] != 0  # the one bias the bug drops is what the minimal example keeps
    assert "step 0" in report.failure.reason


def test_gradient_bug_is_located_to_gate_and_unit():
    report = verify(MUTANTS["gru-wrong-b_h-grad"](), max_examples=30, seed=0)
    assert "gate n" in report.failure.reason  # db_hr, db_hz equal db_xr, db_xz: only n can differ
    assert report.failure.divergence.output.startswith("dbias_hh")


# ------------------------------------------------------------------------------ candidates in general
def _reference_candidate(layers, x, state0, dy=None, dstate_T=None):
    y, s_T, cache = stack.forward(layers, x, state0)
    if dy is None:
        return y, s_T
    grads, dx, ds0 = stack.backward(layers, cache, dy, dstate_T)
    return y, s_T, {"layers": grads, "x": dx, "state0": ds0}


def test_refrnn_layout_accepts_the_reference_itself_for_every_cell_option():
    report = verify(_reference_candidate, cell="gru", layout="refrnn", max_examples=15, options={"reset": ("before", "after")})
    assert report.passed, str(report)
    assert report.closest.abs == 0.0  # same code, same values: bit for bit


def test_a_crashing_candidate_is_reported_not_raised():
    def crashes(weights, x, state0, dy=None, dstate_T=None):
        if x.shape[0] > 2:
            raise RuntimeError("kernel only supports T <= 2")
        return torch_module("GRU")(weights, x, state0, dy, dstate_T)

    report = verify(crashes, cell="gru", layout="torch", max_examples=30)
    assert not report.passed
    assert "RuntimeError: kernel only supports T <= 2" in report.failure.reason
    assert report.failure.config.T == 3  # shrunk to the smallest T that crashes


def test_a_candidate_without_gradients_needs_grads_false():
    def forward_only(weights, x, state0, dy=None, dstate_T=None):
        return torch_module("GRU")(weights, x, state0)  # without dy it returns (y, h_n)

    failed = verify(forward_only, cell="gru", layout="torch", max_examples=5)
    assert not failed.passed and "returned no gradients" in failed.failure.reason
    ok = verify(forward_only, cell="gru", layout="torch", grads=False, max_examples=10)
    assert ok.passed and not any(n.startswith("d") for n in ok.worst)


def test_wrong_shapes_and_nan_are_reported():
    def transposed_y(weights, x, state0, dy=None, dstate_T=None):
        y, h = torch_module("GRU")(weights, x, state0)
        return np.swapaxes(y, 0, 1), h

    report = verify(transposed_y, cell="gru", layout="torch", grads=False, max_examples=30)
    assert "y has shape" in report.failure.reason

    def nan_y(weights, x, state0, dy=None, dstate_T=None):
        y, h = torch_module("GRU")(weights, x, state0)
        return np.full_like(y, np.nan), h

    report = verify(nan_y, cell="gru", layout="torch", grads=False, max_examples=5)
    assert "candidate nan" in report.failure.reason


def test_tolerance_is_a_parameter_and_grows_with_T():
    f32 = default_tolerance(np.float32)
    assert f32.at(100) > f32.at(1) > default_tolerance(np.float64).at(100) == 1e-10
    # A float32 candidate judged by the float64 tolerance fails: rounding is then out of bounds.
    strict = verify(torch_module("GRU", dtype="float32"), tol=1e-10, max_examples=20)
    assert not strict.passed and strict.tolerance == Tolerance(1e-10)
    with pytest.raises(ValueError, match="tol"):
        verify(torch_module("GRU"), tol=-1.0)


@settings(max_examples=10, derandomize=True, database=None, deadline=None)
@given(S.cases(S.configs(("gru",), max_T=30, options={"reset": ("after",)}), adversarial=False))
def test_compare_rounds_inputs_for_the_reference(case):
    """The float64 reference runs on the float32-rounded values: a correct float32 model is then within
    the float32 tolerance, while the unrounded values would put it ~1e-8 off from the start."""
    outcome = compare(torch_module("GRU", dtype="float32"), case, layout="torch", dtype=np.float32)
    assert outcome.passed, outcome.reason


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="layout: unknown layout 'caffe'"):
        get_layout("caffe")
    with pytest.raises(ValueError, match="cell: unknown cell 'qrnn'"):
        verify(_reference_candidate, cell="qrnn", layout="refrnn")
    with pytest.raises(ValueError, match="cannot express"):
        verify(torch_module("GRU"), options={"reset": ("before",)}, max_examples=2)


def test_cli_prints_a_table_and_exits_zero(capsys):
    assert main(["torch", "--examples", "3"]) == 0
    out = capsys.readouterr().out
    for module in ("nn.GRU ", "nn.GRUCell", "nn.LSTM ", "nn.LSTMCell"):
        assert module in out
    assert out.count("PASS") == 8 + 4 and "FAIL" not in out and "all checks passed" in out


def test_cli_verifies_the_sru_package(capsys):
    pytest.importorskip("sru")
    assert main(["sru", "--examples", "3"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("sru.SRUCell")]
    assert len(rows) == 2 and all(line.rstrip().endswith("PASS") for line in rows) and "FAIL" not in out


def test_verify_finds_that_the_sru_package_cannot_run_an_empty_batch():
    """A real finding of verify: sru 2.6.0 raises on B = 0, which PyTorch's own modules accept."""
    pytest.importorskip("sru")
    from refrnn.verify.adapters import SRUCellModule

    report = verify(SRUCellModule(), max_examples=20, min_B=0)
    assert not report.passed
    assert report.failure.config.B == 0 and "candidate raised RuntimeError" in report.failure.reason


def test_the_failing_arguments_name_the_gate_of_each_pinned_weight():
    """The shrunk example's non-zero weights are listed with where they sit (layer, gate, unit), as
    the gradient failures are, so a reader sees which gate's bias the bug needs."""
    from refrnn.verify.report import Failure

    report = verify(MUTANTS["gru-missing-b_hn"](), max_examples=40, seed=0)
    listing = report.failure.describe_arguments()
    bias = next(line for line in listing.splitlines() if "bias_hh_l0" in line)
    assert "zero except" in bias and "(layer 0, gate n, unit 0)" in bias, listing
    # without a locator (a Failure built by hand) the listing still works, without annotations
    bare = Failure("r", report.failure.config, (), None, report.failure.arguments)
    assert "gate" not in bare.describe_arguments()
