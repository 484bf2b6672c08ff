"""`import refrnn` stays light, and the top-level `cuda` name stays NVIDIA's."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def test_import_refrnn_loads_numpy_only():
    out = _run(
        "import sys; import refrnn, refrnn.cli, refrnn.layouts.torch, refrnn.layouts.paper\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'numba', 'llvmlite', 'torch', 'scipy', 'hypothesis', 'sru'})\n"
        "print(heavy, 'numpy' in sys.modules)"
    )
    assert out.strip() == "[] True"


def test_numba_cuda_imports_with_the_repository_root_on_sys_path():
    """Nothing of ours at the top level may shadow NVIDIA's `cuda` namespace package."""
    assert not (ROOT / "cuda").exists()
    out = _run(
        "import sys; assert sys.path[0] in ('', '.') or sys.path[0] == %r\n"
        "import cuda, numba\n"
        "from numba import cuda as nc\n"
        "print(type(cuda.__path__).__name__, nc.__name__)" % str(ROOT)
    )
    assert out.split() == ["_NamespacePath", "numba.cuda"]
