"""The bench says which BLAS it ran on: every loaded OpenBLAS with its core type and threads, and a
warning when the environment forces the core type (the figures are then not the machine's native ones)."""

import os

from refrnn.bench.report import format_blas
from refrnn.jit import _blas


def test_every_loaded_openblas_is_described_with_its_core_type_and_threads():
    libs = _blas.describe()
    assert libs, "NumPy's OpenBLAS at least is loaded"
    owners = {b["owner"] for b in libs}
    assert "numpy" in owners
    for b in libs:
        assert b["core"] and b["config"].startswith("OpenBLAS") and b["threads"] >= 1
    forced = os.environ.get("OPENBLAS_CORETYPE")
    if forced:  # the library reports the kernel set the variable forced
        assert all(b["core"].lower() == forced.lower() for b in libs), libs
    assert _blas.forced_core() == (forced or None)


def test_the_header_lines_warn_only_when_a_core_type_is_forced():
    blas = [{"owner": "numpy", "config": "OpenBLAS 0.3.31  USE64BITINT DYNAMIC_ARCH NO_AFFINITY Haswell", "core": "SkylakeX", "threads": 2}]
    native = format_blas({"blas": blas, "blas_forced_core": None})
    assert native == ["BLAS (numpy's): OpenBLAS 0.3.31, core SkylakeX, 2 threads"]
    forced = format_blas({"blas": blas, "blas_forced_core": "Haswell"})
    assert forced[0] == native[0] and forced[1].startswith("warning: OPENBLAS_CORETYPE=Haswell forces")
    assert "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE" in forced[1]
