"""Placement and bad input for every GPU entry point: device arrays in place, clear errors otherwise."""

import numpy as np
import pytest
from numba import cuda

from refrnn.cells import gru as reference
from refrnn.cuda import _device, gru


def _params():
    return reference.init(3, 4, rng=0)


class _Interface:
    """A foreign device array (as CuPy or PyTorch would hand over), described by its interface only."""

    def __init__(self, shape, strides, typestr="<f8"):
        self.__cuda_array_interface__ = {"shape": shape, "strides": strides, "typestr": typestr, "data": (0, False), "version": 3}


def test_non_contiguous_device_arrays_are_refused():
    x = cuda.to_device(np.zeros((2, 1, 6)))[:, :, ::2]  # shape (2, 1, 3), every other element
    with pytest.raises(ValueError, match=r"x: the device array of shape \(2, 1, 3\) is not C-contiguous"):
        gru.forward_inference(_params(), x)
    # The same check on a foreign array, before anything is wrapped: a transposed (2, 1, 3) view.
    with pytest.raises(ValueError, match="not C-contiguous"):
        gru.forward_inference(_params(), _Interface((2, 1, 3), (8, 48, 16)))


def test_length_one_axes_do_not_make_an_array_non_contiguous():
    assert _device._c_contiguous((2, 1, 3), (24, 999, 8), 8)
    assert _device._c_contiguous((2, 3), None, 8)
    assert not _device._c_contiguous((2, 3), (8, 16), 8)


def test_device_dtype_mismatch_is_a_type_error():
    x = cuda.to_device(np.zeros((2, 1, 3), dtype=np.float32))
    with pytest.raises(TypeError, match="x: dtype float32 does not match the parameters' dtype float64"):
        gru.forward_inference(_params(), x)
    with pytest.raises(TypeError, match="x: dtype float32 does not match"):
        gru.forward_inference(_params(), _Interface((2, 1, 3), None, "<f4"))


def test_device_shape_mismatch_names_the_argument():
    with pytest.raises(ValueError, match=r"x: expected shape \(T, B, D\) with D=3, got shape \(2, 1, 5\)"):
        gru.forward_inference(_params(), cuda.to_device(np.zeros((2, 1, 5))))
    with pytest.raises(ValueError, match=r"state0: expected shape \(B, H\)"):
        gru.forward_inference(_params(), np.zeros((2, 1, 3)), cuda.to_device(np.zeros((2, 4))))


def test_host_inputs_are_checked_like_the_reference():
    x = np.zeros((2, 1, 3))
    x[1, 0, 2] = np.nan
    with pytest.raises(ValueError, match="x: contains NaN"):
        gru.forward_inference(_params(), x)
    with pytest.raises(TypeError, match="params: expected GRUParams"):
        gru.forward_inference(reference.init(3, 4, rng=0).arrays(), np.zeros((2, 1, 3)))


def test_host_in_host_out_and_device_in_device_out():
    p, x = _params(), np.random.default_rng(0).standard_normal((1, 1, 3))
    y_host, _ = gru.forward_inference(p, x, tile=4)
    y_dev, _ = gru.forward_inference(p, cuda.to_device(x), tile=4)
    assert isinstance(y_host, np.ndarray)
    assert _device.is_device_array(y_dev) and not isinstance(y_dev, np.ndarray)
    np.testing.assert_array_equal(y_dev.copy_to_host(), y_host)


def test_upload_is_idempotent_and_keeps_the_options():
    p = reference.init(3, 4, reset="before", rng=0)
    up = gru.upload(p)
    assert gru.upload(up) is up
    assert up.reset == "before" and up.host is p
    np.testing.assert_array_equal(up.W_h.copy_to_host(), p.W_h)
