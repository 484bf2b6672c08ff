"""The GPU kernels' packaging: refrnn/cuda/ is a real subpackage and never shadows NVIDIA's `cuda` package.

Runs in the normal test process (no GPU, no simulator needed): every check is a fresh interpreter started
in the repository root, where the root is on sys.path exactly as under ``python -m pytest``.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
KERNEL_MODULES = ["_device", "matmul", "gru", "lstm", "sru", "ccgru"]


def _run(code: str, **env_changes):
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env.update(env_changes)
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env)


def test_cuda_kernels_are_a_real_subpackage():
    """No top-level cuda/ (it would shadow NVIDIA's namespace), no symlink, no package-dir mapping."""
    folder = ROOT / "refrnn" / "cuda"
    assert folder.is_dir() and not folder.is_symlink() and (folder / "__init__.py").is_file()
    assert not (ROOT / "cuda").exists()
    assert "package-dir" not in (ROOT / "pyproject.toml").read_text()


def test_numba_cuda_works_with_the_repository_root_on_sys_path():
    done = _run(
        "import sys, os; assert os.path.abspath(sys.path[0] or '.') == os.getcwd()\n"
        "from numba import cuda as nc\n"
        "import cuda\n"
        "print(nc.__name__, nc.implementation, getattr(cuda, '__file__', None), type(cuda.__path__).__name__)"
    )
    assert done.returncode == 0, done.stderr
    # numba-cuda's target, and `cuda` is a namespace package (NVIDIA's), not a module file of ours.
    assert done.stdout.split() == ["numba.cuda", "NVIDIA", "None", "_NamespacePath"]


def test_kernel_modules_import_as_refrnn_cuda():
    names = KERNEL_MODULES
    done = _run(
        "import importlib, os\n"
        f"for name in {names!r}:\n"
        "    print(os.path.realpath(importlib.import_module('refrnn.cuda.' + name).__file__))"
    )
    assert done.returncode == 0, done.stderr
    assert [Path(line) for line in done.stdout.split()] == [(ROOT / "refrnn" / "cuda" / f"{n}.py").resolve() for n in names]


def test_missing_numba_cuda_is_a_clear_import_error():
    # sys.modules[name] = None is how Python spells "this package is not installed" to import machinery.
    done = _run("import sys; sys.modules['numba_cuda'] = None\nimport refrnn.cuda.gru")
    assert done.returncode != 0
    assert "ImportError: refrnn.cuda needs the numba-cuda package" in done.stderr
    assert "pip install 'refrnn[cuda]'" in done.stderr


def test_no_gpu_is_a_clear_runtime_error():
    """Kernels compile on first launch, so the modules import anywhere; a call without a GPU (and without
    the simulator) says what is missing and how to run on the simulator instead."""
    done = _run(
        "import numpy as np\n"
        "from numba import cuda\n"
        "from refrnn.cells import gru as ref\n"
        "from refrnn.cuda import gru\n"
        "if cuda.is_available():\n"
        "    print('GPU')\n"
        "else:\n"
        "    try:\n"
        "        gru.forward(ref.init(2, 3, rng=0), np.zeros((1, 1, 2)))\n"
        "    except RuntimeError as err:\n"
        "        print('ERR', err)\n"
    )
    assert done.returncode == 0, done.stderr
    if done.stdout.startswith("GPU"):
        pytest.skip("a GPU is available here: nothing to refuse")
    assert done.stdout.startswith("ERR refrnn.cuda: no usable CUDA GPU"), done.stdout
    assert "NUMBA_ENABLE_CUDASIM=1" in done.stdout


# Every kernel with the argument types its launches use (C-contiguous arrays, Python ints and bools,
# a scalar of the parameters' dtype), so numba-cuda's real type inference and NVVM run on them: the
# simulator executes the kernels as Python and checks neither.
_PTX_CHECK = r"""
import sys, types
import numpy as np
from numba import cuda, types as nt
import numba.cuda.dispatcher as disp
if not hasattr(disp, "get_current_device"):
    print("SKIP numba-cuda internals changed (dispatcher.get_current_device)"); sys.exit(0)
# Device functions ask the current device for its compute capability; there is no device here.
disp.get_current_device = lambda: types.SimpleNamespace(compute_capability=(9, 0))
from refrnn.bench import _peak as peak
from refrnn.cuda import ccgru, gru, lstm, matmul, sru
dt, I, Bo = nt.float32, nt.int64, nt.boolean
a = lambda nd, t=dt: nt.Array(t, nd, "C")
u8, i32 = nt.Array(nt.uint8, 2, "C"), nt.Array(nt.int32, 2, "C")
f32 = np.dtype(np.float32)
g, (ls, lp), sk, ck = gru._kernels(f32, 16), lstm._kernels(f32, 16), sru._kernels(f32), ccgru._kernels(f32, 16)
kernels = [
    (matmul._gemm_kernel(f32, 16), (a(2), a(2), a(2), a(1), Bo, Bo, Bo)),
    (g["step_after"], (a(3), a(2), a(1), a(3), I)),
    (g["step_before_rz"], (a(3), a(2), a(1), a(3), I, a(2), a(2))),
    (g["step_before_n"], (a(3), a(2), a(1), a(3), I, a(2), a(2))),
    (g["pointwise_after"], (a(3), a(2), a(1), a(1), a(3), I)),
    (g["pointwise_before_rz"], (a(3), a(2), a(1), a(1), a(3), I, a(2), a(2))),
    (g["pointwise_before_n"], (a(3), a(2), a(1), a(1), a(3), I, a(2))),
    (ls, (a(3), a(2), a(1), a(3), a(3), I)),
    (lp, (a(3), a(2), a(1), a(1), a(3), a(3), I)),
    (sk[0], (a(3), a(3), a(2), a(2), u8, a(3), a(3), a(2), Bo, Bo)),
    (sk[1], (a(3), a(3), a(2), a(3), u8, a(3), a(2), a(3), a(3), a(2), a(2), Bo)),
    (sk[2], (a(2), I, a(1))),
    (sk[3], (a(3), a(3), I)),
    (ck[0], (a(3), a(2), a(1), a(1), dt, a(3), I, a(2), i32, i32)),
    (ck[1], (a(3), a(2), a(3), I, a(2), i32, i32)),
    (ck[2], (a(3), I, a(2))),
    (peak.fma_kernel(f32), (a(1), I)),
]
for n, (kernel, sig) in enumerate(kernels):
    try:
        ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=(9, 0))
    except Exception as err:
        missing = type(err).__name__ == "DynamicLibNotFoundError" or "nvvm" in str(err).lower()
        if n == 0 and missing:
            print("SKIP the CUDA compiler libraries (NVVM, NVRTC) are not installed:", str(err)[:200]); sys.exit(0)
        raise
    assert ".f64" not in ptx or kernel is kernels[-1][0], f"{kernel.py_func.__name__}: float64 arithmetic in a float32 kernel"
print("OK", len(kernels))
"""


def test_every_kernel_compiles_for_a_real_gpu():
    """Real typing and code generation for sm_90 without a GPU (needs the NVVM and NVRTC libraries, which
    the nvidia-nvvm and nvidia-cuda-nvrtc wheels provide; skipped without them). Also checks that float32
    kernels do no float64 arithmetic (typed constants), which would run at a fraction of the speed."""
    done = _run(_PTX_CHECK)
    assert done.returncode == 0, done.stderr[-3000:]
    if done.stdout.startswith("SKIP"):
        pytest.skip(done.stdout.strip())
    assert done.stdout.strip() == "OK 17"


def test_gpu_benchmark_exits_cleanly_without_a_gpu():
    done = _run(
        "import sys\nfrom numba import cuda\nprint(cuda.is_available())\n"
        "from refrnn.bench import cuda as bench_cuda\nsys.exit(bench_cuda.main([]))"
    )
    if done.stdout.startswith("True"):
        pytest.skip("a GPU is available here: the benchmark would run")
    assert done.returncode == 0, done.stderr
    assert "refrnn bench-cuda: nothing to benchmark: refrnn.cuda: no usable CUDA GPU" in done.stdout
