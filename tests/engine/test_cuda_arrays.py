"""unetrt.cuda's one record of a ``__cuda_array_interface__`` array, as the native ``*_cuda`` kernels take it."""

from __future__ import annotations

import numpy as np
import pytest

from unetrt.cuda import cuda_array_interface


class FakeDeviceArray:
    """Only the interface: version 3 of https://numba.readthedocs.io/en/stable/cuda/cuda_array_interface.html
    (``strides`` None means C-contiguous)."""

    def __init__(self, typestr: str = "<f2") -> None:
        self.__cuda_array_interface__ = {"data": (1234, False), "shape": (2, 3, 4), "typestr": typestr,
                                         "strides": None, "version": 3}


def test_the_record_gives_the_kernels_pointer_shape_strides_and_dtype_name() -> None:
    array = cuda_array_interface(FakeDeviceArray(), "tiles")
    assert array.ptr == 1234 and array.shape == (2, 3, 4) and array.strides == (24, 8, 2)
    assert array.dtype_name == "float16"
    assert cuda_array_interface(FakeDeviceArray("<u2"), "frame").dtype_name == "uint16"  # 16-bit camera frames


def test_a_dtype_the_kernels_do_not_take_and_a_host_array_are_refused() -> None:
    with pytest.raises(ValueError, match="'<f8' is not uint8"):
        _ = cuda_array_interface(FakeDeviceArray("<f8"), "tiles").dtype_name
    with pytest.raises(ValueError, match="__cuda_array_interface__"):
        cuda_array_interface(np.zeros(3), "tiles")
