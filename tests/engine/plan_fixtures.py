"""The fake TensorRT (runtime and builder) over the fake GPU, pycuda and driver, for the engine-build, engine-cache
and first-run tests."""

from __future__ import annotations

import errno
import os
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import pytest
from fakes.cuda import FakeGpu, install_fake_gpu
from fakes.tensorrt import install_fake_tensorrt
from fakes.tensorrt_builder import Builder, install_builder


def install_fake_tensorrt_gpu(monkeypatch: pytest.MonkeyPatch, gpu: FakeGpu | None = None, version: str = "10.3.0",
                              dla_cores: int = 2, total_memory: int = 8 << 30,
                              built_for_cuda: int | None = None) -> tuple[types.ModuleType, FakeGpu]:
    """Fake ``tensorrt`` (runtime and builder), ``pycuda`` and CUDA driver in place of the real ones.

    Args:
        gpu: the fake device (default: an integrated Orin).
        version: the fake TensorRT's version.
        built_for_cuda: the CUDA major version its libraries need of the driver (None: any driver).
        dla_cores: the DLA cores its builder sees.
        total_memory: what pycuda's ``Device.total_memory()`` reports (pycuda documentation, ``Device``:
            "total_memory(): Return the total amount of memory on the device in bytes").

    Returns:
        The fake ``tensorrt`` module and the fake GPU.
    """
    gpu = install_fake_gpu(monkeypatch, gpu or FakeGpu())
    monkeypatch.setattr(sys.modules["pycuda.driver"].Device, "total_memory", lambda self: total_memory,
                        raising=False)
    module = install_fake_tensorrt(monkeypatch, gpu, version, built_for_cuda)
    install_builder(module, gpu, dla_cores)
    monkeypatch.setattr(Builder, "builds", 0)
    monkeypatch.setattr(Builder, "devices", [])
    monkeypatch.setattr(Builder, "workspaces", [])
    monkeypatch.setattr(Builder, "build_memory", 0)
    monkeypatch.setattr(Builder, "cancelled", 0)
    monkeypatch.setattr(Builder, "steps", 3)
    monkeypatch.setattr(Builder, "on_step", None)
    return module, gpu



def install_fake_jetson(monkeypatch: pytest.MonkeyPatch, cache: Path) -> FakeGpu:
    """A fake Orin with TensorRT and pycuda, engines cached in ``cache``; torch, if importable at all, sees no GPU
    (JetPack ships no CUDA torch), and ONNX Runtime has no CUDA provider."""
    gpu = FakeGpu()
    install_fake_tensorrt_gpu(monkeypatch, gpu)
    monkeypatch.setattr("unetrt.benchmarks.bench._torch_cuda", lambda: None)
    monkeypatch.setattr("unetrt.backends.onnxruntime_gpu_available", lambda: False)
    monkeypatch.setenv("UNETRT_ENGINE_CACHE", str(cache))
    return gpu

def builds() -> int:
    """How many engine builds ran since the fake was installed."""
    return int(Builder.builds)


def route_cuda_kernels_to(monkeypatch: pytest.MonkeyPatch, gpu: FakeGpu, kernels: types.ModuleType) -> None:
    """Make every ``CudaDevice`` the Segmenter opens run ``kernels``' numpy entry points on the fake GPU's memory
    (:class:`fakes.kernels.FakeKernels`) in place of the CUDA build of ``unetrt._tiling``, which therefore counts as
    built (on a machine without nvcc too, where ``unetrt._tiling`` has no CUDA kernels)."""
    from fakes.kernels import FakeKernels

    import unetrt.cuda_device as cuda_device

    real = cuda_device.CudaDevice

    def on_fake_gpu(backend: object, **options: object) -> object:
        return real(backend, kernels=FakeKernels(gpu, kernels), **options)  # type: ignore[arg-type]

    monkeypatch.setattr(cuda_device, "CudaDevice", on_fake_gpu)
    monkeypatch.setattr(cuda_device, "cuda_kernels_built", lambda: True)


def install_fake_gpu_machine(monkeypatch: pytest.MonkeyPatch, kernels: types.ModuleType, cache: Path,
                             gpu: FakeGpu | None = None, version: str = "10.3.0") -> FakeGpu:
    """A CUDA machine with TensorRT ``version`` (fakes) and no ONNX Runtime CUDA provider, engines cached in
    ``cache``, the frame path's CUDA kernels ``kernels``' numpy entry points on the fake GPU's memory
    (:func:`route_cuda_kernels_to`); returns the fake GPU."""
    _, gpu = install_fake_tensorrt_gpu(monkeypatch, gpu, version=version)
    route_cuda_kernels_to(monkeypatch, gpu, kernels)
    monkeypatch.setattr("unetrt.backends.onnxruntime_gpu_available", lambda: False)
    monkeypatch.setenv("UNETRT_ENGINE_CACHE", str(cache))
    return gpu


def act_during_build(monkeypatch: pytest.MonkeyPatch, action: Callable[[], object], at_step: int = 2,
                     steps: int = 600, step_s: float = 0.05) -> list[int]:
    """Make each fake build long (``steps`` steps of ``step_s`` seconds: 30 s by default) and call ``action`` from
    the builder thread at step ``at_step``.

    Returns:
        The steps the builds reached, appended as they complete (a cancelled build stops short of ``steps``).
    """
    reached: list[int] = []

    def on_step(step: int) -> None:
        reached.append(step)
        if step == at_step:
            action()
        time.sleep(step_s)

    monkeypatch.setattr(Builder, "steps", steps)
    monkeypatch.setattr(Builder, "on_step", on_step)
    return reached


def signal_during_build(monkeypatch: pytest.MonkeyPatch, signum: int, at_step: int = 2, steps: int = 600,
                        step_s: float = 0.05) -> list[int]:
    """:func:`act_during_build` that sends this process ``signum`` at step ``at_step``, as a user's Ctrl-C or a
    supervisor's SIGTERM would."""
    return act_during_build(monkeypatch, lambda: os.kill(os.getpid(), signum), at_step, steps, step_s)


def full_disk_under(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plans (and timing caches) written into ``folder`` fail as on a full disk; elsewhere they are written."""
    from unetrt import plan_build

    write = plan_build.replace_file

    def full_disk(path: Path, data: bytes) -> None:
        if path.is_relative_to(folder):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        write(path, data)

    monkeypatch.setattr(plan_build, "replace_file", full_disk)
