"""The sru package's SRUCell as a row of the conformance matrix, and its float64 inference finding, pinned."""

import warnings

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("hypothesis")
with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)  # without CUDA the package falls back to a dummy extension
    sru_pkg = pytest.importorskip("sru")

from refrnn.cells import sru  # noqa: E402
from refrnn.verify import compare, matrix  # noqa: E402
from refrnn.verify.adapters import SRUCellModule  # noqa: E402
from refrnn.verify.strategies import case_from  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Running SRU on CPU with grad_enabled=True")


def _case():
    rng = np.random.default_rng(0)
    p = sru.init(4, 4, rng=rng)
    return case_from([p], rng.standard_normal((3, 2, 4)), (np.zeros((2, 4)),), seed=1)


def test_the_sru_row_runs_only_what_its_adapter_can_pass():
    (row,) = matrix.TARGETS["sru"][1]()
    assert row.op == "SRUCell" and row.grads
    assert matrix._probe(row, "GRU reset after", 2, 0).status == "-"
    assert matrix._probe(row, "batch-major", 2, 0).status == "n/e"
    assert matrix._probe(row, "lengths", 2, 0).status == "n/c"
    assert matrix._probe(row, "init present", 3, 0).status == "PASS"


def test_finding_sru_float64_inference_fails_on_cpu():
    """sru 2.6.0 on CPU: without autograd (``torch.no_grad()``, inference) SRUCell runs its C++ kernel, which takes
    float32 only, and a float64 cell raises "expected scalar type Float but found Double"; with autograd it runs
    its PyTorch recurrence and float64 matches the reference. The matrix's float64 column (forward only) shows it."""
    if getattr(sru_pkg, "__version__", None) != "2.6.0":
        pytest.skip(f"finding pinned for sru 2.6.0; {getattr(sru_pkg, '__version__', '?')} is installed: re-run `refrnn verify all`")
    out = compare(SRUCellModule(dtype="float64"), _case(), grads=False)
    assert not out.passed and "expected scalar type Float but found Double" in out.reason
    assert compare(SRUCellModule(dtype="float64"), _case(), grads=True).passed
    assert compare(SRUCellModule(dtype="float32"), _case(), grads=False).passed
    (row,) = matrix.TARGETS["sru"][1]()
    cell = matrix._probe(row, "float64", 2, 0)  # the matrix's note ends with what the TorchScript traceback ends with
    assert cell.status == "FAIL" and cell.detail.endswith("expected scalar type Float but found Double"), cell.detail
