"""The conformance matrix drawn as a PNG: one coloured cell per (framework op, convention)."""

import pytest

from refrnn.verify import matrix


def _data(rows):
    return {"columns": list(matrix.COLUMNS), "rows": rows, "not_installed": {}, "attribute_probes": [], "seconds": 1.0}


def test_the_matrix_draws_into_a_png(tmp_path):
    cells = {c: {"status": "PASS", "detail": "", "note": None} for c in matrix.COLUMNS}
    cells["lengths"] = {"status": "FAIL", "detail": "T=2, B=1", "note": 1}
    cells["gradients"] = {"status": "n/e", "detail": "no gradients", "note": None}
    data = _data([{"target": "onnx-reference", "framework": "onnx.reference 1.23.2", "op": "GRU", "cells": cells}])
    data["not_installed"] = {"flax": ["flax"]}
    path = matrix.to_png(data, str(tmp_path / "matrix.png"))
    with open(path, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_an_empty_matrix_is_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match="data: the matrix has no rows"):
        matrix.to_png(_data([]), str(tmp_path / "m.png"))
