"""The fake TensorRT's own rules (tests/fakes/tensorrt.py) that the product's tests lean on."""

from __future__ import annotations

import pytest

from fakes.cuda import FakeGpu, install_fake_gpu
from fakes.tensorrt import Logger, install_fake_tensorrt
from fakes.tensorrt_builder import install_builder

pytestmark = pytest.mark.gpu_contract


@pytest.mark.parametrize("driver, starts", [(12080, False), (13000, True), (13020, True)])
def test_tensorrt_for_cuda_13_starts_only_on_a_driver_of_cuda_13(driver: int, starts: bool,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """[DRIVER]: the runtime and the builder return null (the bindings' TypeError) after logging error 35, and any
    driver of the wheel's CUDA major version runs it."""
    gpu = install_fake_gpu(monkeypatch, FakeGpu(integrated=False, driver_version=driver))
    trt = install_fake_tensorrt(monkeypatch, gpu, "11.0.0", built_for_cuda=13)
    install_builder(trt, gpu)
    for factory in (trt.Runtime, trt.Builder):
        logger = Logger()
        if starts:
            factory(logger)
            assert logger.messages == []
            continue
        with pytest.raises(TypeError, match="factory function returned nullptr"):
            factory(logger)
        assert logger.messages[0].startswith("CUDA initialization failure with error: 35")
