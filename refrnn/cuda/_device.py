"""What every GPU path shares: finding numba-cuda, and moving arrays in and out of the device.

Placement rule (the same for every kernel module in :mod:`refrnn.cuda`):

* NumPy arrays are checked like the reference cells check them (:func:`refrnn._checks.float_array`),
  copied to the device once, and the results are copied back once.
* Objects exposing ``__cuda_array_interface__`` (Numba device arrays, CuPy arrays, PyTorch CUDA tensors)
  are used in place, without a copy; the results then stay on the device as Numba device arrays, which
  CuPy (``cupy.asarray``) and PyTorch (``torch.as_tensor(..., device="cuda")``) wrap without a copy too.
  They must be C-contiguous and of the parameters' dtype: nothing is re-laid out or cast behind the
  caller's back, because that would be a hidden copy.

Under ``NUMBA_ENABLE_CUDASIM=1`` the simulator's device arrays (which wrap NumPy arrays and carry no
``__cuda_array_interface__``) count as device arrays too.
"""

from __future__ import annotations

import functools
import importlib.util
from typing import NamedTuple

import numpy as np

from .._checks import float_array

INSTALL_HINT = "install the `cuda` extra (pip install 'refrnn[cuda]', which pulls in numba-cuda)"


@functools.lru_cache(maxsize=None)
def require_cuda():
    """``numba.cuda`` from the numba-cuda package, or an ImportError saying what to install.

    Numba still ships a deprecated built-in CUDA target; it is refused on purpose, because it lags the
    NVIDIA-maintained one and imports through the bindings differently.
    """
    if importlib.util.find_spec("numba") is None or importlib.util.find_spec("numba_cuda") is None:
        raise ImportError(f"refrnn.cuda needs the numba-cuda package, which is not installed: {INSTALL_HINT}")
    from numba import cuda

    if getattr(cuda, "implementation", None) != "NVIDIA":
        raise ImportError(
            "refrnn.cuda needs the numba-cuda package, but `numba.cuda` resolved to Numba's deprecated built-in "
            f"target ({cuda.__file__}): {INSTALL_HINT}"
        )
    return cuda


@functools.lru_cache(maxsize=None)
def require_device() -> None:
    """Raise a RuntimeError that says what to do when no GPU (and no simulator) can run the kernels."""
    cuda = require_cuda()
    if not cuda.is_available():
        raise RuntimeError(
            "refrnn.cuda: no usable CUDA GPU (numba.cuda.is_available() is False; numba.cuda.detect() says why). "
            "Set NUMBA_ENABLE_CUDASIM=1 before Python starts to run the kernels on the CUDA simulator instead."
        )


def simulated() -> bool:
    """True under ``NUMBA_ENABLE_CUDASIM=1`` (kernels run as Python threads on the CPU)."""
    from numba.cuda.core import config

    return bool(config.ENABLE_CUDASIM)


def is_available() -> bool:
    """True when kernels can run: a usable GPU, or the simulator. Never raises."""
    try:
        return bool(require_cuda().is_available())
    except Exception:  # noqa: BLE001 - any failure to reach a device means "not available"
        return False


def is_device_array(value) -> bool:
    return hasattr(value, "__cuda_array_interface__") or bool(getattr(value, "__cuda_ndarray__", False))


def dtype_of(value) -> np.dtype:
    """The dtype of a host or device array, read without copying it."""
    if hasattr(value, "__cuda_array_interface__"):
        return np.dtype(value.__cuda_array_interface__["typestr"])
    if is_device_array(value):
        return np.dtype(value.dtype)
    return np.asarray(value).dtype


def _c_contiguous(shape: tuple[int, ...], strides, itemsize: int) -> bool:
    if strides is None:  # the interface's way of saying "C-contiguous"
        return True
    expected = itemsize
    for n, s in zip(reversed(shape), reversed(strides)):
        if n > 1 and s != expected:  # the stride of a length-1 axis never matters
            return False
        expected *= n
    return True


def device_input(name: str, value, letters: tuple[str, ...], sizes=None, *, dtype) -> tuple[object, bool]:
    """``(device_array, was_on_device)`` for an argument given on the host or on the device.

    Host arrays go through the reference cells' checks (rank, shape, dtype, finiteness) and are copied.
    Device arrays are checked for rank, shape, dtype and contiguity from their metadata alone (finiteness
    would need a copy back) and wrapped without a copy.
    """
    cuda = require_cuda()
    require_device()
    if not is_device_array(value):
        host = float_array(name, value, letters, sizes, dtype=dtype)
        return cuda.to_device(np.ascontiguousarray(host)), False
    if hasattr(value, "__cuda_array_interface__"):
        iface = value.__cuda_array_interface__
        shape, strides, vdtype = tuple(iface["shape"]), iface.get("strides"), np.dtype(iface["typestr"])
    else:  # a simulator array, or a Numba device array inspected the same way
        shape, strides, vdtype = tuple(value.shape), tuple(value.strides), np.dtype(value.dtype)
    # The same messages as for host arrays: check a zero-byte stand-in of the same shape and dtype.
    float_array(name, np.broadcast_to(np.zeros((), vdtype), shape), letters, sizes, dtype=dtype, finite=False)
    if not _c_contiguous(shape, strides, vdtype.itemsize):
        raise ValueError(
            f"{name}: the device array of shape {shape} is not C-contiguous (strides {strides}); refrnn.cuda "
            f"uses device memory in place and never copies behind your back: pass a contiguous array "
            f"(torch: .contiguous(), CuPy: cupy.ascontiguousarray)"
        )
    if getattr(value, "__cuda_ndarray__", False):
        return value, True
    if simulated():
        raise TypeError(
            f"{name}: the CUDA simulator cannot use real device memory ({type(value).__name__}); "
            f"pass a NumPy array or a numba.cuda device array"
        )
    return cuda.as_cuda_array(value), True


def sequence_input(host, x) -> tuple[object, bool]:
    """:func:`device_input` for the input ``x`` (T, B, D) of the model whose host parameters are ``host``."""
    return device_input("x", x, ("T", "B", "D"), {"D": host.input_size}, dtype=host.dtype)


def device_state(name: str, value, letters, sizes, *, dtype):
    """Like :func:`device_input`, for an initial state that may be omitted (``None`` means zeros)."""
    cuda = require_cuda()
    if value is None:
        shape = tuple(sizes[k] for k in letters)
        return cuda.to_device(np.zeros(shape, dtype=dtype))
    return device_input(name, value, letters, sizes, dtype=dtype)[0]


def empty(shape, dtype):
    return require_cuda().device_array(shape, dtype=dtype)


def output(arr, on_device: bool):
    """Return a result where the inputs were: the device array itself, or a NumPy copy."""
    return arr if on_device else arr.copy_to_host()


def copy(arr):
    """A device copy of the device array ``arr`` in memory of its own."""
    out = empty(arr.shape, arr.dtype)
    out.copy_to_device(arr)
    return out


def state_buffer(name: str, state0, rows: int, B: int, H: int, dtype):
    """A ``(rows, B, H)`` device buffer of states for the per-step kernels, row 0 set to ``state0``
    (checked as :func:`device_state` checks it, under ``name``; zeros when None)."""
    buf = empty((rows, B, H), dtype)
    buf[0].copy_to_device(device_state(name, state0, ("B", "H"), {"B": B, "H": H}, dtype=dtype))
    return buf


def sequence_outputs(h, on_device: bool):
    """``(y, h_T)`` from the state buffer ``h`` (T+1, B, H) = h_0..h_T, placed like the inputs.

    On the device ``y`` is a view of the buffer and ``h_T`` gets its own memory, like the reference's
    copy; on the host, ``y`` is the one copy out and ``h_T`` a copy of its last step.
    """
    T = h.shape[0] - 1
    if on_device:
        return h[1:], copy(h[T])
    y = h[1:].copy_to_host()
    return y, (y[T - 1].copy() if T > 0 else h[0].copy_to_host())


class DeviceParams(NamedTuple):
    """A parameter container whose arrays have been copied to the device once (see :func:`upload`).

    ``host`` is the original container (shapes, dtype, options such as the GRU ``reset`` convention);
    ``arrays`` maps each array field name to its device copy.
    """

    host: object
    arrays: dict

    def __getattr__(self, name):  # params.W_h -> the device copy; params.reset -> the host option
        arrays = tuple.__getitem__(self, 1)
        if name in arrays:
            return arrays[name]
        return getattr(tuple.__getitem__(self, 0), name)


def upload(params) -> DeviceParams:
    """Copy a parameter container's arrays to the device once, for repeated GPU calls."""
    if isinstance(params, DeviceParams):
        return params
    cuda = require_cuda()
    return DeviceParams(params, {k: cuda.to_device(np.ascontiguousarray(v)) for k, v in params.arrays().items()})


def host_params(params, expected_cls):
    """The host container behind ``params`` (a container or a :class:`DeviceParams`), type-checked."""
    host = params.host if isinstance(params, DeviceParams) else params
    if not isinstance(host, expected_cls):
        raise TypeError(
            f"params: expected {expected_cls.__name__} (or refrnn.cuda upload() of one), got {type(host).__name__}"
        )
    return host


def grid(n: int, block: int) -> int:
    return (n + block - 1) // block


BLOCK = 256  # threads per block of the flat kernels (one thread per element): full occupancy on every GPU


def launch(n: int) -> tuple[int, int]:
    """``(blocks, threads)`` of a flat launch over ``n`` elements (one block of ``n`` threads when ``n`` is small)."""
    threads = max(1, min(BLOCK, n))
    return grid(n, threads), threads


def check_tile(tile) -> int:
    """The edge of the square thread-block tile: a power of two from 1 to 32 (32*32 = 1024 threads)."""
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < 1 or tile > 32 or tile & (tile - 1):
        raise ValueError(f"tile: expected a power of two from 1 to 32, got {tile!r}")
    return int(tile)
