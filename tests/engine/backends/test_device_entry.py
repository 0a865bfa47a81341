"""The backends' device entry, as far as it runs without a GPU: shapes, array views and clear refusals on the CPU."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_info

from unetrt.backends import DeviceBackend, open_backend
from unetrt.backends.base import network_output_shape
from unetrt.cuda import DeviceArray


def test_output_shape_follows_the_geometry() -> None:
    assert network_output_shape(tiny_info(num_classes=5), (2, 3, 32, 48)) == (2, 5, 32, 48)
    valid = tiny_info(padding="valid")
    height = network_output_shape(valid, (1, 3, 92, 92))[2]
    assert 0 < height < 92 and (92 - height) % 2 == 0
    with pytest.raises(ValueError, match="not legal"):
        network_output_shape(tiny_info(), (1, 3, 30, 32))
    with pytest.raises(ValueError, match="N x C x H x W"):
        network_output_shape(tiny_info(), (3, 32, 32))


def test_device_array_describes_contiguous_device_memory() -> None:
    view = DeviceArray(0xABC000, (1, 3, 8, 8), np.dtype(np.float16))
    interface = view.__cuda_array_interface__
    assert interface["data"] == (0xABC000, False) and interface["shape"] == (1, 3, 8, 8)
    assert interface["typestr"] == "<f2" and interface["strides"] is None and interface["version"] == 3


@pytest.mark.parametrize("kind", ["onnx", "pt"])
def test_cpu_backends_refuse_the_device_entry_with_advice(tiny_model_files: dict[str, Path], kind: str) -> None:
    with open_backend(tiny_model_files[kind], device="cpu") as backend:
        assert isinstance(backend, DeviceBackend)
        assert backend.output_shape((1, 3, 16, 24)) == (1, 3, 16, 24)
        with pytest.raises(ValueError, match="CUDA"), backend.device_session():
            pass


@pytest.mark.skipif(importlib.util.find_spec("pycuda") is not None, reason="pycuda is installed")
def test_pycuda_driver_names_the_missing_package() -> None:
    from unetrt.cuda_device import PycudaDriver

    with pytest.raises(ImportError, match="pip install pycuda"):
        PycudaDriver()
