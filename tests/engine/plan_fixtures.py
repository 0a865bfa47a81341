"""A fake TensorRT (builder and runtime) over a fake GPU for the engine-build and engine-cache tests."""

from __future__ import annotations

import enum
import sys
import types
from dataclasses import dataclass

import numpy as np
import pytest
from fakes.tensorrt_builder import Builder, install_builder


@dataclass
class StandInGpu:
    name: str = "Orin (fake)"
    compute_capability: tuple[int, int] = (8, 7)
    integrated: bool = True
    total_memory: int = 8 << 30


class DataType(enum.Enum):
    FLOAT = "float32"
    HALF = "float16"
    INT8 = "int8"
    INT32 = "int32"


def install_fake_tensorrt_gpu(monkeypatch: pytest.MonkeyPatch, gpu: StandInGpu | None = None,
                              version: str = "10.3.0", dla_cores: int = 2) -> tuple[types.ModuleType, StandInGpu]:
    """Fake ``tensorrt`` (builder side) and ``pycuda`` (device queries) in ``sys.modules``."""
    gpu = gpu or StandInGpu()
    module = types.ModuleType("tensorrt")
    module.__version__ = version  # type: ignore[attr-defined]
    module.DataType = DataType  # type: ignore[attr-defined]
    module.nptype = lambda dtype: np.dtype(dtype.value).type  # type: ignore[attr-defined]
    module.Logger = type("Logger", (), {"WARNING": 2, "VERBOSE": 4,  # type: ignore[attr-defined]
                                        "__init__": lambda self, severity=2: None})
    install_builder(module, gpu, dla_cores)
    driver = types.ModuleType("pycuda.driver")

    class Device:
        def __init__(self, ordinal: int) -> None:
            self.ordinal = ordinal

        @staticmethod
        def count() -> int:
            return 1

        def name(self) -> str:
            return gpu.name

        def compute_capability(self) -> tuple[int, int]:
            return gpu.compute_capability

        def get_attribute(self, attribute: int) -> int:
            assert attribute == 18
            return int(gpu.integrated)

        def total_memory(self) -> int:
            return gpu.total_memory

    driver.Device = Device  # type: ignore[attr-defined]
    driver.init = lambda flags=0: None  # type: ignore[attr-defined]
    driver.Error = RuntimeError  # type: ignore[attr-defined]
    driver.device_attribute = types.SimpleNamespace(INTEGRATED=18)  # type: ignore[attr-defined]
    package = types.ModuleType("pycuda")
    package.driver = driver  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    monkeypatch.setitem(sys.modules, "pycuda", package)
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
    monkeypatch.setattr(Builder, "builds", 0)
    return module, gpu


def builds() -> int:
    """How many engine builds ran since the fake was installed."""
    return int(Builder.builds)

