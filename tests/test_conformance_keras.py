"""Keras 3 GRU/LSTM/SimpleRNN (torch backend) against the reference: correct conversions pass, planted wrong ones
are caught, and the float64 finding is pinned for the version it was found in."""

import os

import numpy as np
import pytest

from refrnn import lstm, rnn
from refrnn.layouts.keras import from_keras, to_keras
from refrnn.verify import verify

pytest.importorskip("hypothesis")
os.environ.setdefault("KERAS_BACKEND", "torch")  # before Keras is first imported (it reads the backend once)
pytest.importorskip("keras")
pytest.importorskip("torch")
from refrnn.verify.adapters_keras import import_keras, keras_layer  # noqa: E402

EX = 8  # Keras steps through time in Python, a layer is built per example: few examples, short sequences
SMALL = {"max_T": 12, "max_H": 40, "max_D": 40}


@pytest.fixture(scope="module", autouse=True)
def _keras():
    try:
        return import_keras()
    except ImportError as err:
        pytest.skip(str(err))


def test_simple_rnn_layout_round_trip():
    p = rnn.init(3, 4, rng=0, activation="relu")
    w = to_keras(p)
    assert [a.shape for a in w] == [(3, 4), (4, 4), (4,)]
    back = from_keras(w, "SimpleRNN", activation="relu")
    assert back.activation == "relu" and np.array_equal(back.W_h, p.W_h) and np.array_equal(back.b_x, p.b_x + p.b_h)
    with pytest.raises(ValueError, match="activation"):
        from_keras(w, "SimpleRNN", activation="gelu")
    with pytest.raises(ValueError, match="activation: only a SimpleRNN"):
        from_keras(to_keras(p), "GRU", activation="relu")


@pytest.mark.parametrize("kind", ["GRU", "LSTM", "SimpleRNN"])
def test_float32_layers_pass_with_masking_bidirectional_and_no_initial_state(kind):
    report = verify(keras_layer(kind, dtype="float32"), max_examples=EX, **SMALL)
    assert report.passed, str(report)
    assert {"batch_first", "unbatched"} <= set(report.coverage.not_drawn)
    assert report.grads and {"dx", "dkernel", "drecurrent_kernel", "dbias"} <= set(report.worst), str(report)


class _DoubledBiasGrad:
    """A Keras candidate whose one LSTM bias gradient is read as db_x + db_h (twice the true gradient of a folded bias)."""

    def __init__(self):
        self.base = keras_layer("LSTM", dtype="float32")
        for a in ("cell", "layout", "grads", "max_layers", "dtype", "conventions"):
            setattr(self, a, getattr(self.base, a))

    def __call__(self, *args, **kw):
        y, states, g = self.base(*args, **kw)
        g["weights"][2] = 2 * g["weights"][2]
        return y, states, g


def test_gradients_through_torch_autograd_with_a_mask_and_a_planted_bias_gradient():
    from refrnn.verify import compare
    from refrnn.verify.strategies import case_from

    rng = np.random.default_rng(0)
    p = lstm.init(3, 4, rng=rng).map(lambda a: a + 0.3 * rng.standard_normal(a.shape))
    case = case_from([p], rng.standard_normal((5, 2, 3)), ((np.zeros((2, 4)), np.zeros((2, 4))),), lengths=[2, 5], seed=1)
    out = compare(keras_layer("LSTM", dtype="float32"), case)
    assert out.passed and "dbias" in out.errors and "dc_0" in out.errors, out.reason
    out = compare(_DoubledBiasGrad(), case)
    assert not out.passed and out.failing == ("dbias",), out.reason


def test_go_backwards_passes_as_the_reverse_direction():
    report = verify(keras_layer("GRU", dtype="float32", split_directions=True), conventions=("bidirectional", "lengths"), max_examples=EX, **SMALL)
    assert report.passed and report.coverage.conventions["bidirectional"] >= 2, str(report)


def test_float64_gru_reset_after_without_a_mask_is_exact():
    report = verify(keras_layer("GRU"), options={"reset": ("after",)}, conventions=("bidirectional", "no_initial_state"), max_examples=EX, **SMALL)
    assert report.passed, str(report)


def test_finding_keras_float64_generic_cell_rounds_to_float32():
    """keras 3.15.1 on torch: a dtype="float64" SimpleRNN (and a GRU with reset_after=False or any masked
    layer, which take the same generic cell path) rounds its products to float32 (Keras's result_type maps
    float64 operands to float32): errors ~1e-8, above the float64 bound 1e-10, well within float32's; its
    gradients (torch autograd through the same path) agree to 1e-6."""
    import keras

    if keras.__version__ != "3.15.1":
        pytest.skip(f"finding pinned for keras 3.15.1; {keras.__version__} is installed: re-run `refrnn verify keras`")
    cand = keras_layer("SimpleRNN")
    report = verify(cand, conventions=(), max_examples=EX, grads=False, **SMALL)  # a forward finding: shrink the forward
    assert not report.passed and "y" in report.failure.failing_outputs, str(report)
    assert verify(cand, conventions=(), max_examples=EX, tol=1e-6, **SMALL).passed


class _Swapped:
    """A Keras candidate fed PyTorch-ordered GRU kernels: z and r blocks not swapped (a classic port bug)."""

    def __init__(self):
        self.base = keras_layer("GRU", dtype="float32")
        for a in ("cell", "layout", "grads", "max_layers", "dtype", "conventions"):
            setattr(self, a, getattr(self.base, a))

    def __call__(self, weights, x, state0, **kw):
        w = [np.array(a) for a in weights["weights"]]
        U = weights["config"]["units"]
        for k in (0, 1):
            w[k][:, :U], w[k][:, U : 2 * U] = weights["weights"][k][:, U : 2 * U], weights["weights"][k][:, :U]
        return self.base({**weights, "weights": w}, x, state0, **kw)


def _case(cell, **opts):
    from refrnn.verify.strategies import case_from

    rng = np.random.default_rng(0)
    p = cell.init(3, 4, rng=rng, **opts)
    return case_from([p], rng.standard_normal((5, 2, 3)), (rng.standard_normal((2, 4)),), grads=False)


def test_wrong_conversions_are_caught():
    # compare() on one fixed problem: a planted bug shows at once, and shrinking it here would only cost time
    from refrnn import gru
    from refrnn.verify import compare

    assert compare(keras_layer("GRU", dtype="float32"), _case(gru), grads=False).passed
    assert not compare(_Swapped(), _case(gru), grads=False).passed
    # go_backwards on a forward layer: the direction is wrong and the outputs come back reversed
    assert compare(keras_layer("SimpleRNN", dtype="float32"), _case(rnn), grads=False).passed
    out = compare(keras_layer("SimpleRNN", dtype="float32", layer_kwargs={"go_backwards": True}), _case(rnn), grads=False)
    assert not out.passed and "y" in out.failing
    # a reset_after=True model run as reset_after=False: Keras itself refuses the bias shape
    out = compare(keras_layer("GRU", dtype="float32", layer_kwargs={"reset_after": False}), _case(gru), grads=False)
    assert not out.passed and "not compatible" in out.reason


def test_bad_arguments():
    with pytest.raises(ValueError, match="kind: expected one of GRU, LSTM, SimpleRNN"):
        keras_layer("ConvLSTM2D")
    with pytest.raises(TypeError, match="dtype"):
        keras_layer("GRU", dtype="int8")
