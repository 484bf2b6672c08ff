"""ONNX GRU/LSTM/RNN nodes on onnxruntime and onnx.reference against the reference: correct conversions pass,
planted wrong ones are caught, and each upstream finding is pinned for the version it was found in."""

import json

import numpy as np
import pytest

from refrnn.layers import bidirectional as bi
from refrnn import rnn
from refrnn.layouts.onnx import from_onnx, to_onnx
from refrnn.verify import verify

onnx = pytest.importorskip("onnx")
pytest.importorskip("hypothesis")
from refrnn.verify import matrix  # noqa: E402
from refrnn.verify.adapters_onnx import onnx_op  # noqa: E402
from refrnn.verify.cli import main  # noqa: E402

# every convention but layout=1, which onnxruntime refuses (pinned below)
NO_LAYOUT = ("bidirectional", "lengths", "no_initial_state")
EX = 25


def _ort():
    return pytest.importorskip("onnxruntime")


def _pinned(package: str, found_in: str) -> None:
    """Skip (not fail) once the installed version differs from the one the finding was pinned for."""
    installed = _ort().__version__ if package == "onnxruntime" else onnx.__version__
    if installed != found_in:
        pytest.skip(f"finding pinned for {package} {found_in}; {installed} is installed: re-run `refrnn verify all` and re-pin")


# ----------------------------------------------------------------------------------------------- layout
def test_rnn_round_trip_is_bit_exact_with_an_activation_per_direction():
    p = bi.BiLayer(rnn.init(3, 4, rng=0, activation="tanh"), rnn.init(3, 4, rng=1, activation="relu"))
    tensors, attrs = to_onnx(p)
    assert attrs["activations"] == ["Tanh", "Relu"] and tensors["W"].shape == (2, 4, 3) and tensors["B"].shape == (2, 8)
    back = from_onnx("RNN", tensors["W"], tensors["R"], tensors["B"], activations=attrs["activations"])
    assert back.rev.activation == "relu" and back.fwd.activation == "tanh"
    for name, a in p.arrays().items():
        assert np.array_equal(a, back.arrays()[name]), name
    with pytest.raises(ValueError, match="activations: 'Sigmoid' has no refrnn equivalent"):
        from_onnx("RNN", tensors["W"], tensors["R"], activations=["Sigmoid", "Tanh"])
    with pytest.raises(ValueError, match="activations: expected 2 name"):
        from_onnx("RNN", tensors["W"], tensors["R"], activations=["Tanh"])
    with pytest.raises(ValueError, match="activations: refrnn's GRU"):
        from_onnx("GRU", np.zeros((1, 6, 3)), np.zeros((1, 6, 2)), activations=["Sigmoid", "Tanh"])


# -------------------------------------------------------------------------------------- correct passes
@pytest.mark.parametrize("op", ["GRU", "LSTM", "RNN"])
def test_onnxruntime_float32_passes_every_convention_it_supports(op):
    _ort()
    report = verify(onnx_op(op, runtime="onnxruntime", dtype="float32"), conventions=NO_LAYOUT, max_examples=EX)
    assert report.passed, str(report)
    assert report.coverage.conventions["bidirectional"] >= 2 and report.coverage.conventions["lengths"] >= 2
    assert "unbatched" in report.coverage.not_drawn and "rank-3" in report.coverage.not_drawn["unbatched"]


def test_onnxruntime_reverse_direction_as_its_own_node_passes():
    _ort()
    report = verify(onnx_op("GRU", split_directions=True, dtype="float32"), conventions=("bidirectional", "lengths"), max_examples=EX)
    assert report.passed and report.coverage.conventions["bidirectional"] >= 2, str(report)


@pytest.mark.parametrize("op", ["GRU", "LSTM"])
def test_onnx_reference_float64_passes_without_lengths(op):
    report = verify(onnx_op(op, runtime="reference"), conventions=("bidirectional", "batch_first", "no_initial_state"), max_examples=EX)
    assert report.passed, str(report)
    feats = report.coverage.features
    assert feats.get("reset=before", 0) + feats.get("peepholes", 0) >= 2, feats  # linear_before_reset=0 / P drawn


# ------------------------------------------------------------------------------------ planted bugs
class _Planted:
    """An ONNX candidate whose weights are converted wrongly on the way in."""

    def __init__(self, base, bug):
        self.base, self.bug = base, bug
        for a in ("cell", "layout", "grads", "max_layers", "dtype", "conventions", "name"):
            setattr(self, a, getattr(base, a))

    def __call__(self, weights, x, state0, **kw):
        return self.base(self.bug(dict(weights)), x, state0, **kw)


def _swap_gates_zr(w):  # Keras/PyTorch gate order copied into ONNX without the z, r swap
    H = w["attributes"]["hidden_size"]
    for k in ("W", "R"):
        a = w[k].copy()
        a[:, :H], a[:, H : 2 * H] = w[k][:, H : 2 * H], w[k][:, :H]
        w[k] = a
    return w


def _biases_swapped(w):  # Wb and Rb exchanged: invisible except where they enter differently (b_hn)
    B = w["B"]
    half = B.shape[1] // 2
    w["B"] = np.concatenate([B[:, half:], B[:, :half]], axis=1)
    return w


def _linear_before_reset_dropped(w):  # the exporter bug: a PyTorch GRU written with the ONNX default
    w["attributes"] = {**w["attributes"], "linear_before_reset": 0}
    return w


def _directions_swapped(w):
    if w["attributes"]["direction"] == "bidirectional":
        for k in ("W", "R", "B", "P"):
            if k in w:
                w[k] = w[k][::-1].copy()
    return w


@pytest.mark.parametrize(
    "bug, options",
    [(_swap_gates_zr, None), (_biases_swapped, {"reset": ("after",)}), (_linear_before_reset_dropped, {"reset": ("after",)}),
     (_directions_swapped, None)],
    ids=["gate-order", "bias-placement", "linear-before-reset", "direction"],
)
def test_a_wrong_conversion_is_caught(bug, options):
    cand = _Planted(onnx_op("GRU", runtime="reference"), bug)
    conventions = ("bidirectional",) if bug is _directions_swapped else ()
    report = verify(cand, options=options, conventions=conventions, max_examples=60)
    assert not report.passed, str(report)
    if bug is _directions_swapped:
        assert report.failure.config.bidirectional


def test_reverse_node_for_a_forward_layer_is_caught():
    _ort()
    cand = onnx_op("RNN", dtype="float32", attributes={"direction": "reverse"})
    report = verify(cand, conventions=(), max_examples=40)
    assert not report.passed and report.failure.config.T >= 2, str(report)


# ------------------------------------------------------------------------------ findings, pinned
def test_finding_onnxruntime_refuses_layout_1():
    """onnxruntime 1.31.1's CPU GRU/LSTM/RNN kernels refuse ``layout=1`` ("Batchwise recurrent operations
    (layout == 1) are not supported"), which the ONNX spec defines since opset 14."""
    _pinned("onnxruntime", "1.31.1")
    report = verify(onnx_op("LSTM", dtype="float32"), conventions=("batch_first",), max_examples=EX)
    assert not report.passed and report.failure.config.batch_first and "layout == 1" in report.failure.reason


def test_finding_onnxruntime_has_no_float64_kernels():
    """onnxruntime 1.31.1: GRU and LSTM accept a double model and fail when run ("does not support double
    yet"); RNN has no double kernel at all. The spec's type constraint T includes double."""
    _pinned("onnxruntime", "1.31.1")
    for op, message in (("GRU", "does not support double"), ("RNN", "Could not find an implementation")):
        report = verify(onnx_op(op, dtype="float64"), conventions=(), max_examples=5)
        assert not report.passed and message in report.failure.reason, (op, report.failure.reason)


def test_finding_onnx_reference_ignores_sequence_lens():
    """onnx 1.23.2's ReferenceEvaluator runs every sequence for all T steps: Y past a length is not 0 and
    Y_h is the state at step T. Minimal: T=2, B=1, lengths=[1]."""
    _pinned("onnx", "1.23.2")
    report = verify(onnx_op("GRU", runtime="reference"), conventions=("lengths",), max_examples=EX)
    f = report.failure
    assert not report.passed and f.config.packed and (f.config.T, f.config.B) == (2, 1), str(report)


def test_finding_onnx_reference_rnn_has_no_relu():
    """onnx 1.23.2's ReferenceEvaluator RNN raises "Unknown activation function 'Relu'" (the spec lists Relu)."""
    _pinned("onnx", "1.23.2")
    report = verify(onnx_op("RNN", runtime="reference"), options={"activation": ("relu",)}, conventions=(), max_examples=5)
    assert not report.passed and "Unknown activation function 'Relu'" in report.failure.reason


@pytest.mark.parametrize("op, attrs", [("GRU", {"clip": 0.01}), ("LSTM", {"input_forget": 1}), ("GRU", {"activations": ["HardSigmoid", "Tanh"]})])
def test_finding_onnx_reference_ignores_attributes_onnxruntime_applies(op, attrs):
    """onnx 1.23.2's ReferenceEvaluator ignores ``clip``, ``input_forget`` and ``activations``: with them set its
    output still equals the attribute-free reference, while onnxruntime's differs."""
    _pinned("onnx", "1.23.2")
    assert verify(onnx_op(op, runtime="reference", dtype="float32", attributes=attrs), conventions=(), max_examples=15).passed
    _ort()
    assert not verify(onnx_op(op, dtype="float32", attributes=attrs), conventions=(), max_examples=15).passed


# ------------------------------------------------------------------------------------ matrix, CLI
def test_matrix_of_the_reference_evaluator(capsys):
    result = matrix.build(("onnx-reference",), examples=6)
    rows = {r.op: r for r in result["rows"]}
    assert set(rows) == {"GRU", "LSTM", "RNN"}
    assert rows["LSTM"].cells["projection"].status == "n/e" and rows["GRU"].cells["LSTM"].status == "-"
    assert rows["GRU"].cells["GRU reset before"].status == "PASS" and rows["GRU"].cells["gradients"].status == "n/e"
    text = matrix.render(result)
    assert "framework / op" in text and "onnx.reference" in text
    data = json.loads(json.dumps(matrix.to_json(result)))
    assert data["columns"] == list(matrix.COLUMNS) and len(data["rows"]) == 3


def test_cli_refuses_an_unknown_target_and_a_missing_framework(monkeypatch, capsys):
    with pytest.raises(SystemExit) as err:
        main(["caffe"])
    assert err.value.code == 2
    ran = []
    monkeypatch.setattr(matrix, "missing", lambda target: ["onnxruntime"])
    monkeypatch.setattr(matrix, "build", lambda *a, **k: ran.append(a))
    assert main(["onnxruntime"]) == 2 and not ran
    assert "onnxruntime not installed (pip install onnxruntime==1.31.1)" in capsys.readouterr().err


def test_bad_candidate_arguments_name_themselves():
    with pytest.raises(ValueError, match="op: expected one of GRU, LSTM, RNN"):
        onnx_op("SRU")
    with pytest.raises(ValueError, match="runtime"):
        onnx_op("GRU", runtime="tvm")
    with pytest.raises(TypeError, match="dtype"):
        onnx_op("GRU", dtype="float16")
    with pytest.raises(TypeError, match="attributes"):
        onnx_op("GRU", attributes=[("clip", 1.0)])
