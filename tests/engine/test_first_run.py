"""A Jetson user's first run, on the CPU: the real orchestration over the fake TensorRT, pycuda and driver.

``Segmenter("camvid")`` / ``unet-stream`` on a machine with TensorRT and a GPU: the first open builds the engine
and caches it, the second loads it without building, a corrupted entry and a plan of another TensorRT are
rebuilt, the masks agree with ONNX Runtime FP32, and the summary names TensorRT.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shlex
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from fakes.cuda import FakeGpu, capturing_on_another_thread
from fakes.tensorrt import FakeEngine
from fakes.tensorrt_builder import Builder
from fakes.trt_plan import deserialize, serialize
from plan_fixtures import (
    act_during_build,
    builds,
    full_disk_under,
    install_fake_gpu_machine,
    install_fake_tensorrt_gpu,
    signal_during_build,
)

from unetrt.bundled import MODELS_DIR
from unetrt.plan_metadata import read_plan_metadata, write_plan_metadata
from unetrt.segmenter import Segmenter

pytestmark = pytest.mark.gpu_contract
FRAMES = 12  # CamVid val frames compared (of 101), spread over the split


@pytest.fixture
def gpu() -> FakeGpu:
    """The fake Orin of :func:`first_run`."""
    return FakeGpu()


@pytest.fixture
def first_run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, gpu: FakeGpu) -> Path:
    """A CUDA machine with TensorRT (fakes), no ONNX Runtime CUDA provider, an empty engine cache; the frame path's
    CUDA kernels are the CPU kernels run on the fake GPU's memory."""
    from unetrt import _tiling  # type: ignore[attr-defined]

    cache = tmp_path / "engines"
    install_fake_gpu_machine(monkeypatch, _tiling, cache, gpu)
    return cache


@pytest.fixture(scope="module")
def camvid_frames(shared_data: Path) -> list[np.ndarray]:
    import cv2

    files = sorted((shared_data / "camvid" / "val").glob("*.png"))
    if not files:
        pytest.skip("no CamVid val frames in ../shared/data/camvid/val")
    picked = files[:: max(1, len(files) // FRAMES)][:FRAMES]
    return [cv2.imread(str(path), cv2.IMREAD_COLOR) for path in picked]


def _only_entry(cache: Path) -> Path:
    plans = sorted(cache.glob("*.plan"))
    assert len(plans) == 1, plans
    return plans[0]


def test_first_open_builds_second_loads(first_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with Segmenter("camvid") as segmenter:
        assert (segmenter.backend.name, segmenter.backend.precision) == ("tensorrt", "fp16")
        assert segmenter.backend.device.startswith("cuda:0")
    assert builds() == 1
    width, height = json.loads((MODELS_DIR / "camvid.json").read_text())["working_size"]["stated"]
    assert f"building a TensorRT engine for camvid FP16 at {width}x{height}" in capsys.readouterr().err
    plan = _only_entry(first_run)
    with Segmenter("camvid", build=False) as segmenter:
        assert segmenter.backend.name == "tensorrt"
        assert Path(segmenter.backend.path) == plan  # type: ignore[attr-defined]
    assert builds() == 1 and capsys.readouterr().err == ""


def test_masks_agree_with_onnxruntime_fp32(first_run: Path, camvid_frames: list[np.ndarray]) -> None:
    with Segmenter("camvid", backend="onnxruntime", precision="fp32", device="cpu") as reference:
        expected = [reference.segment(frame).mask for frame in camvid_frames]
    with Segmenter("camvid") as segmenter:
        assert segmenter.backend.name == "tensorrt"
        masks = [segmenter.segment(frame).mask for frame in camvid_frames]
    agreement = np.mean([np.mean(a == b) for a, b in zip(masks, expected, strict=True)])
    assert agreement >= 0.995, agreement


def test_int8_builds_an_int8_engine_from_the_tensorrt_layout(first_run: Path, camvid_frames: list[np.ndarray],
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A Jetson user asking for INT8 gets a TensorRT INT8 engine, built on first use and cached. Before, the bundled
    model offered TensorRT its CPU-layout NAME.int8.onnx, which TensorRT refuses, and ran ONNX Runtime INT8 on the
    CPU after a note."""
    import hashlib

    with Segmenter("camvid", precision="int8") as segmenter:
        assert (segmenter.backend.name, segmenter.backend.precision) == ("tensorrt", "int8")
        masks = [segmenter.segment(frame).mask for frame in camvid_frames]
    assert builds() == 1
    assert "building a TensorRT engine for camvid INT8" in capsys.readouterr().err
    source = (MODELS_DIR / "camvid.int8.tensorrt.onnx").read_bytes()
    assert read_plan_metadata(_only_entry(first_run)).source_sha256 == hashlib.sha256(source).hexdigest()
    with Segmenter("camvid", precision="int8", build=False, warm_up=False) as segmenter:
        assert segmenter.backend.name == "tensorrt"
    assert builds() == 1
    with Segmenter("camvid", backend="onnxruntime", precision="fp32", device="cpu") as reference:
        expected = [reference.segment(frame).mask for frame in camvid_frames]
    agreement = np.mean([np.mean(a == b) for a, b in zip(masks, expected, strict=True)])
    assert agreement >= 0.98, agreement


def test_the_tensorrt_parser_refuses_the_cpu_int8_layout(first_run: Path) -> None:
    """The fake parser's [QDQ-ZERO] rule: the CPU layout's non-zero zero points fail as in TensorRT, and the
    TensorRT layout parses (the runtime refuses the CPU layout earlier, unetrt.plan_build.check_int8_request)."""
    import tensorrt as trt

    for name, parses in (("camvid.int8.onnx", False), ("camvid.int8.tensorrt.onnx", True)):
        parser = trt.OnnxParser(trt.Builder(trt.Logger()).create_network(0), trt.Logger())
        assert parser.parse((MODELS_DIR / name).read_bytes()) is parses, name
        if not parses:
            assert "TensorRT only supports symmetric quantization" in parser.get_error(0).desc()


def _forge(plan: Path, tensorrt_version: str | None = None, garbage: bool = False) -> None:
    """Replace the plan's bytes, with metadata that still matches them: only TensorRT itself can refuse it."""
    import hashlib

    fake = deserialize(plan.read_bytes())
    assert fake is not None
    data = b"\0" * 4096 if garbage else serialize(replace(fake, tensorrt_version=tensorrt_version or "10.2.0"))
    plan.write_bytes(data)
    write_plan_metadata(plan, replace(read_plan_metadata(plan), plan_sha256=hashlib.sha256(data).hexdigest()))


@pytest.mark.parametrize("garbage", [True, False], ids=["corrupt-plan", "plan-of-another-tensorrt"])
def test_entry_tensorrt_refuses_is_rebuilt(garbage: bool, first_run: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    with Segmenter("camvid", warm_up=False):
        pass
    plan = _only_entry(first_run)
    _forge(plan, garbage=garbage)
    with Segmenter("camvid", warm_up=False) as segmenter:
        assert segmenter.backend.name == "tensorrt"
    assert builds() == 2
    assert "is unusable" in capsys.readouterr().err
    rebuilt = deserialize(plan.read_bytes())
    assert rebuilt is not None and rebuilt.tensorrt_version == "10.3.0"


def test_refused_entry_with_no_build_falls_back(first_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with Segmenter("camvid", warm_up=False):
        pass
    _forge(_only_entry(first_run), garbage=True)
    with Segmenter("camvid", build=False, warm_up=False) as segmenter:
        fallback = segmenter.backend.name
    assert fallback in ("openvino", "onnxruntime") and builds() == 1
    assert "is unusable (TensorRT could not deserialise" in capsys.readouterr().err


def test_unet_stream_first_run_summary_names_tensorrt(first_run: Path, tmp_path: Path) -> None:
    from unetrt.stream.cli import main

    stats = tmp_path / "stats.json"
    code = main(["sample", str(tmp_path / "out.mp4"), "--max-frames", "3", "--headless", "--stats", str(stats)])
    assert code == 0
    summary = json.loads(stats.read_text())
    runtime = summary["runtime"]
    assert (runtime["backend"], runtime["precision"]) == ("tensorrt", "fp16")
    assert str(runtime["device"]).startswith("cuda:0")
    assert builds() == 1
    assert main(["sample", str(tmp_path / "again.mp4"), "--max-frames", "2", "--headless", "--no-build"]) == 0
    assert builds() == 1


def test_unet_stream_backend_tensorrt_no_build_without_an_engine_is_one_line_and_exit_2(
        first_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """docs/jetson.md: with --backend tensorrt the command stops with one line saying how to build it. It ended in
    a traceback (the lookup error was not one of a command's user errors) with exit code 1."""
    from unetrt.stream.cli import main

    output = tmp_path / "out.mp4"
    assert main(["sample", str(output), "--max-frames", "2", "--headless", "--backend", "tensorrt", "--no-build"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: no usable cached TensorRT engine for camvid FP16"), lines
    assert lines[0].endswith("run once without --no-build (build=True) to build and cache it")
    assert builds() == 0 and not output.exists()


def test_a_plan_of_fixed_batch_names_the_rebuild_a_stream_needs(first_run: Path, gpu: FakeGpu, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A plan built elsewhere at a fixed batch of 4 (trtexec --shapes=image:4x3x176x224): unet-stream, which runs
    one frame at a time, said to rebuild it with --max-shape 4x3x176x224, the shape it already has."""
    from fakes.tensorrt import write_plan_from_onnx

    from unetrt.stream.cli import main

    fixed = (4, 3, 176, 224)
    plan = write_plan_from_onnx(MODELS_DIR / "camvid.onnx", tmp_path / "b4.plan", gpu, profile=(fixed, fixed, fixed))
    output = tmp_path / "out.mp4"
    assert main(["sample", str(output), "--model", str(plan), "--max-frames", "2", "--headless"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "input shape 1x3x176x224 is outside" in lines[0], lines
    assert lines[0].endswith("or rebuild the engine with unet-build ... --min-shape 1x3x176x224"), lines
    assert not output.exists()


def test_unet_bench_finds_the_cached_engine_of_a_bundled_model(first_run: Path) -> None:
    from unetrt.benchmarks.bench import locate_model

    missing = locate_model("camvid", build=False)
    assert "tensorrt" not in missing.files and "no usable cached TensorRT engine" in missing.missing["tensorrt"]
    assert builds() == 0
    model = locate_model("camvid")
    assert model.files["tensorrt"] == _only_entry(first_run) and model.plan_precision == "fp16"
    assert "tensorrt" not in model.missing and builds() == 1


def test_an_unwritable_cache_still_ends_on_tensorrt(first_run: Path, monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A service account without a home or a read-only root file system: the engine is built for this run."""
    blocker = tmp_path / "readonly"
    blocker.write_text("a file where the cache's parent folder should be")
    monkeypatch.setenv("UNETRT_ENGINE_CACHE", str(blocker / "engines"))
    with Segmenter("camvid", warm_up=False) as segmenter:
        assert segmenter.backend.name == "tensorrt"
    assert builds() == 1
    err = capsys.readouterr().err
    assert "cannot write the engine cache" in err and "UNETRT_ENGINE_CACHE" in err


def test_doctor_build_that_cannot_cache_the_engine_fails_after_its_report(
        first_run: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """setup_jetson.sh ends with doctor --build to prepare the engine cache. With a cache it could not write, the
    doctor built into a folder removed at its exit, said "later starts load it from" that folder, reported that
    streams run on TensorRT and exited 0: every stream start then built again, and a --no-build service ran on the
    CPU."""
    from unetrt.doctor import main as doctor

    blocker = tmp_path / "readonly"
    blocker.write_text("a file where the cache's parent folder should be")
    monkeypatch.setenv("UNETRT_ENGINE_CACHE", str(blocker / "engines"))
    assert doctor(["--build"]) == 1
    captured = capsys.readouterr()
    assert captured.out.splitlines()[-1].startswith("unet-stream --model camvid runs on: tensorrt fp16 cuda:0")
    err = captured.err.strip().splitlines()
    assert "every start will build again" in err[0] and not any("later starts load it" in line for line in err)
    assert any("this run loads it from /" in line and "removed when it ends" in line for line in err), err
    assert err[-1].startswith("error: --build: the TensorRT engine was built for this run only, not cached"), err
    assert err[-1].endswith("set UNETRT_ENGINE_CACHE to a writable folder and run it again")
    assert builds() == 1
    monkeypatch.setenv("UNETRT_ENGINE_CACHE", str(first_run))
    assert doctor(["--build"]) == 0 and "error" not in capsys.readouterr().err


@pytest.mark.parametrize("blocked", ["file-in-the-way", "read-only"])
def test_the_doctor_says_a_cache_that_cannot_be_written_makes_every_start_build(
        blocked: str, first_run: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A read-only root file system (overlayroot on a kiosk Jetson) or a file where the cache should be: the plain
    report said the cache was empty and 'its first start builds it (... python -m unetrt.doctor --build builds it
    now)', where every start builds it and --build caches nothing; the report says so, and builds nothing."""
    from unetrt import plan_cache
    from unetrt.doctor import main as doctor

    _pycuda_installed(monkeypatch)
    if blocked == "read-only":
        folder = tmp_path / "ro" / "engines"
        (tmp_path / "ro").mkdir()
        monkeypatch.setattr(plan_cache.os, "access", lambda path, mode, **_: Path(path) != tmp_path / "ro")
        reason = "Permission denied"
    else:
        (tmp_path / "readonly").write_text("a file where the cache's parent folder should be")
        folder = tmp_path / "readonly" / "engines"
        reason = f"{tmp_path / 'readonly'} is a file, not a folder"
    monkeypatch.setenv("UNETRT_ENGINE_CACHE", str(folder))
    assert doctor([]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[5] == (f"engine cache: {folder}: empty; cannot be written ({reason}): an engine not cached there "
                        "is built at every start; set UNETRT_ENGINE_CACHE to a writable folder"), lines[5]
    assert ("none is cached, so every start builds it (minutes on a Jetson, as the cache cannot be written); with "
            "--no-build: ") in lines[-1] and "doctor --build builds it now" not in lines[-1], lines[-1]
    assert builds() == 0 and not folder.exists()



@pytest.mark.parametrize(("asked", "end"), [
    (["--backend", "tensorrt"], "; --no-build stops"),
    (["--device", "cuda"], "; --no-build stops: device 'cuda' asked, but this onnxruntime has no CUDA provider; "
                           "install onnxruntime-gpu")], ids=["backend-tensorrt", "device-cuda"])
def test_the_doctor_on_a_cache_that_cannot_be_written_has_no_until_then_for_what_no_build_does(
        asked: list[str], end: str, first_run: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Where every start builds the engine there is no 'until then' for --no-build: it stops at every start."""
    from unetrt.doctor import main as doctor

    _pycuda_installed(monkeypatch)
    (tmp_path / "blocker").write_text("a file where the cache's parent folder should be")
    monkeypatch.setenv("UNETRT_ENGINE_CACHE", str(tmp_path / "blocker" / "engines"))
    assert doctor(asked) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.endswith(f"none is cached, so every start builds it (minutes on a Jetson, as the cache cannot be "
                         f"written){end}"), last
    assert builds() == 0

def test_a_disk_that_fills_up_during_the_first_build_still_ends_on_tensorrt(
        first_run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A Jetson's SD card full by the time the engine is written: the run uses the engine it built (minutes),
    not ONNX Runtime on the CPU, and says why the next start builds again."""
    full_disk_under(first_run, monkeypatch)
    with Segmenter("camvid", warm_up=False) as segmenter:
        assert segmenter.backend.name == "tensorrt"
        assert not Path(segmenter.backend.path).is_relative_to(first_run)  # type: ignore[attr-defined]
        assert segmenter.segment(np.zeros((360, 480, 3), np.uint8)).mask.shape == (360, 480)
    assert builds() == 1
    err = capsys.readouterr().err
    assert "built but cannot be cached" in err and "free space there" in err and "ONNX Runtime" not in err


def test_a_refused_entry_in_a_read_only_cache_is_rebuilt_elsewhere(first_run: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A prebuilt engine on a read-only file system that TensorRT refuses after an upgrade: the run still ends on
    TensorRT, with an engine built for it elsewhere."""
    import errno

    with Segmenter("camvid", warm_up=False):
        pass
    plan = _only_entry(first_run)
    _forge(plan, garbage=True)

    def read_only(plan_path: Path, plan_sha256: str | None) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(plan_path))

    monkeypatch.setattr("unetrt.plan_cache.discard_entry", read_only)
    with Segmenter("camvid", warm_up=False) as segmenter:
        assert segmenter.backend.name == "tensorrt"
        assert Path(segmenter.backend.path).parent != first_run  # type: ignore[attr-defined]
    assert builds() == 2
    assert "cannot remove the unusable engine" in capsys.readouterr().err


@pytest.mark.parametrize("short_of", ["weights", "loading", "activations"])
def test_a_gpu_out_of_memory_keeps_the_cached_engine(short_of: str, first_run: Path, gpu: FakeGpu,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Another program holds the GPU's memory: the engine cannot load its weights (or the rest that loading it
    takes: free memory above the plan's size is no proof the plan is damaged), or get an execution context. The run
    says so and goes on on the CPU; the cached engine is neither discarded nor rebuilt, and serves once memory is
    back."""
    with Segmenter("camvid", warm_up=False) as segmenter:
        assert segmenter.backend.name == "tensorrt"
    entry = _only_entry(first_run)
    good = entry.read_bytes()
    capsys.readouterr()
    gpu.memory_bytes = {"weights": 0, "loading": len(good) + FakeEngine.load_overhead // 2,
                        "activations": len(good) + FakeEngine.load_overhead}[short_of]
    with Segmenter("camvid", warm_up=False) as segmenter:
        assert segmenter.backend.name in ("openvino", "onnxruntime")
    err = capsys.readouterr().err
    if short_of in ("weights", "loading"):
        assert f"no TensorRT engine (TensorRT could not load {str(entry)!r}: the GPU has " in err
    else:
        assert "no TensorRT engine (TensorRT could not create an execution context" in err
        assert "too little GPU memory" in err
    assert "rebuilding" not in err and "corrupt" not in err
    assert builds() == 1 and _only_entry(first_run).read_bytes() == good
    gpu.memory_bytes = None
    with Segmenter("camvid", warm_up=False) as segmenter:
        assert segmenter.backend.name == "tensorrt"
    assert builds() == 1


def test_a_graph_captured_on_another_thread_keeps_the_cached_engine(first_run: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """A PyTorch model on another thread captures a CUDA graph (torch.cuda.graph: global mode) while the segmenter
    opens: TensorRT cannot allocate the engine's memory then [CAPTURE-ALLOC], and the cached engine was called
    corrupt, deleted and rebuilt. The run says why it cannot use the GPU now and goes on on the CPU; the engine is
    kept and serves the next run."""
    with Segmenter("camvid", warm_up=False) as segmenter:
        assert segmenter.backend.name == "tensorrt"
    entry = _only_entry(first_run)
    good = entry.read_bytes()
    capsys.readouterr()
    with capturing_on_another_thread(), Segmenter("camvid", warm_up=False) as segmenter:
        assert segmenter.backend.name in ("openvino", "onnxruntime")
    err = capsys.readouterr().err
    assert "another thread captures a CUDA graph" in err
    assert "rebuilding" not in err and "corrupt" not in err
    assert builds() == 1 and _only_entry(first_run).read_bytes() == good
    with Segmenter("camvid", warm_up=False) as segmenter:
        assert segmenter.backend.name == "tensorrt"
    assert builds() == 1


def test_no_memory_for_the_engine_buffers_frees_what_it_took(first_run: Path, gpu: FakeGpu,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    with Segmenter("camvid", warm_up=False):
        pass
    capsys.readouterr()
    # The weights and the context fit, the input buffer does not.
    gpu.memory_bytes = (_only_entry(first_run).stat().st_size + FakeEngine.load_overhead + FakeEngine.context_memory
                        + 1)
    with Segmenter("camvid", warm_up=False) as segmenter:
        assert segmenter.backend.name in ("openvino", "onnxruntime")
    err = capsys.readouterr().err
    assert "the GPU has no memory left for the buffers of" in err and "cuMemAlloc failed: out of memory" in err
    assert gpu.live("device") == 0 and gpu.live("library") == 0 and builds() == 1


def test_a_cache_cloned_from_another_orin_module_builds_its_own_entry(first_run: Path, gpu: FakeGpu) -> None:
    """A fleet image prepared on an AGX Orin (16 SMs) and flashed onto an Orin NX (8): the same name and
    architecture, but the NX builds and caches its own engine instead of running tactics timed on the AGX."""
    with Segmenter("camvid", warm_up=False):
        pass
    gpu.multiprocessors = 8
    with Segmenter("camvid", warm_up=False) as segmenter:
        assert segmenter.backend.name == "tensorrt"
        assert "8 SMs" in segmenter.backend.metadata.gpu.describe()  # type: ignore[attr-defined]
    assert builds() == 2 and len(list(first_run.glob("*.plan"))) == 2
    gpu.multiprocessors = 16
    with Segmenter("camvid", warm_up=False):
        pass
    assert builds() == 2


def test_without_pycuda_the_first_run_says_how_to_get_tensorrt(first_run: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """JetPack ships TensorRT but not pycuda: the default path still tries TensorRT (the driver itself counts the
    GPU), and the CPU run that follows comes after one line naming the missing package, never silently."""
    import sys

    from unetrt.doctor import main as doctor

    monkeypatch.setitem(sys.modules, "pycuda", None)  # import pycuda now raises ImportError
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    with Segmenter("camvid", warm_up=False) as segmenter:
        assert segmenter.backend.name in ("openvino", "onnxruntime")
    err = capsys.readouterr().err
    assert "no TensorRT engine (pycuda is not installed: run `pip install pycuda`" in err
    assert builds() == 0
    assert doctor(["--device", "cpu"]) == 0
    assert "a GPU is present, but TensorRT cannot run: pycuda is not installed" in capsys.readouterr().out


def test_without_pycuda_device_cuda_on_a_jetson_names_pycuda_first(
        first_run: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """docs/jetson.md: with `--device cuda` the fallback is ONNX Runtime's CUDA provider, which JetPack's pip has
    not; the Segmenter, unet-stream and the doctor stop on the one line it quotes, pycuda named first."""
    from unetrt.doctor import main as doctor
    from unetrt.stream.cli import main as stream

    monkeypatch.setitem(sys.modules, "pycuda", None)
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    with pytest.raises(ValueError) as refused:
        Segmenter("camvid", device="cuda", warm_up=False)
    line = str(refused.value)
    assert re.fullmatch(r"no TensorRT engine \(pycuda is not installed: .*\), and onnxruntime cannot run it instead: "
                        r"device 'cuda' asked, but this onnxruntime has no CUDA provider; install onnxruntime-gpu",
                        line), line
    capsys.readouterr()
    assert stream(["sample", str(tmp_path / "out.mp4"), "--device", "cuda", "--headless"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"error: {line}"
    assert doctor(["--device", "cuda"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"error: {line}"
    assert builds() == 0


def test_without_the_cuda_kernels_frames_go_through_host_memory_and_say_why(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """unetrt installed where nvcc was not found: TensorRT still runs the network (through host memory), with a
    warning naming the reinstall; asking for the GPU-resident path outright is refused with the same line."""
    from unetrt.device import HostDevice

    # This checkout's build may have its CUDA kernels (nvcc was here): answer as a build without them does.
    monkeypatch.setattr("unetrt.cuda_device.cuda_kernels_built", lambda: False)
    install_fake_tensorrt_gpu(monkeypatch)
    monkeypatch.setattr("unetrt.backends.onnxruntime_gpu_available", lambda: False)
    monkeypatch.setenv("UNETRT_ENGINE_CACHE", str(tmp_path / "engines"))
    frame = np.full((360, 480, 3), 90, np.uint8)
    with pytest.warns(RuntimeWarning, match="frames go through host memory: unetrt._tiling was built without its "
                                            "CUDA kernels.*UNETRT_CUDA=1"), \
            Segmenter("camvid", warm_up=False) as segmenter:
        assert segmenter.backend.name == "tensorrt" and isinstance(segmenter.device, HostDevice)
        assert segmenter.segment(frame).mask.shape == (360, 480)
    with pytest.raises(ImportError, match="built without its CUDA kernels"):
        Segmenter("camvid", warm_up=False, device_path="cuda")


def test_tensorrt_that_cannot_start_cuda_falls_back_with_one_line(first_run: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """TensorRT's constructors return null when CUDA fails to initialise under them (a driver older than
    TensorRT's CUDA), which its Python bindings raise as a TypeError (NVIDIA/TensorRT issues 635, 2913)."""
    import tensorrt as trt

    def no_cuda(*args: object) -> None:
        raise TypeError("pybind11::init(): factory function returned nullptr")

    monkeypatch.setattr(trt, "Builder", no_cuda)
    with Segmenter("camvid", warm_up=False) as segmenter:
        assert segmenter.backend.name in ("openvino", "onnxruntime")
    assert "no TensorRT engine (TensorRT could not start on this GPU (pybind11::init()" in capsys.readouterr().err
    assert builds() == 0


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_during_the_first_build_stops_it_without_a_fallback(first_run: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C minutes into a Jetson's first build ends the program: no engine cached, no ONNX Runtime instead,
    and the next start builds afresh (the entry's lock was let go)."""
    reached = signal_during_build(monkeypatch, signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        Segmenter("camvid", warm_up=False)
    assert Builder.cancelled == 1 and max(reached) < Builder.steps - 1
    assert "no TensorRT engine" not in capsys.readouterr().err
    assert list(first_run.glob("*.plan")) == [] and list(first_run.glob(".*.tmp")) == []
    monkeypatch.setattr(Builder, "on_step", None)
    monkeypatch.setattr(Builder, "steps", 3)
    with Segmenter("camvid", warm_up=False) as segmenter:
        assert segmenter.backend.name == "tensorrt"
    assert builds() == 2


def wait_announced(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """An event set once a start says it waits for another's build of its engine."""
    from unetrt import plan_cache

    announce = plan_cache._announce
    waiting = threading.Event()

    def noted(text: str) -> None:
        announce(text)
        if text.startswith("another process (or thread) is building"):
            waiting.set()

    monkeypatch.setattr(plan_cache, "_announce", noted)
    return waiting


def open_camvid_into(outcome: list[BaseException | str]) -> None:
    """A robot's callback thread opening Segmenter("camvid"): the backend it got, or what it raised, goes to
    ``outcome`` for the test's thread."""
    try:
        with Segmenter("camvid", warm_up=False) as segmenter:
            outcome.append(segmenter.backend.name)
    except BaseException as exc:  # handed to the test's thread
        outcome.append(exc)


def test_cancel_builds_stops_a_first_build_on_a_callback_thread(first_run: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C reaches the main thread only: a first build a robot's callback thread started goes on for minutes
    unless the program's shutdown path calls unetrt.cancel_builds(), which stops it at its next step; that thread
    gets BuildCancelledError (no CPU fallback), nothing is cached, and the next start builds afresh."""
    import unetrt
    from unetrt.plan_build import BuildCancelledError

    started = threading.Event()
    reached = act_during_build(monkeypatch, started.set)  # 30 s unless stopped
    outcome: list[BaseException | str] = []
    worker = threading.Thread(target=open_camvid_into, args=(outcome,))
    worker.start()
    assert started.wait(30), "the build never started"
    assert unetrt.cancel_builds() == 1
    worker.join(10)
    assert not worker.is_alive(), "the build went on after cancel_builds()"
    assert len(outcome) == 1 and isinstance(outcome[0], BuildCancelledError), outcome
    assert "unetrt.cancel_builds" in str(outcome[0]) and max(reached) < 599
    assert list(first_run.glob("*.plan")) == [] and list(first_run.glob(".*.tmp")) == []
    assert unetrt.cancel_builds() == 0  # nothing left in progress
    monkeypatch.setattr(Builder, "on_step", None)
    monkeypatch.setattr(Builder, "steps", 3)
    with Segmenter("camvid", warm_up=False) as segmenter:
        assert segmenter.backend.name == "tensorrt"


def test_cancel_builds_stops_a_second_camera_waiting_for_the_first_build(
        first_run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Two cameras' callback threads open Segmenter("camvid") on a robot's first boot, and the robot is shut down
    during the build. cancel_builds() stopped the build, but the camera waiting for it then took the entry's lock
    and began a build of its own (minutes on a Jetson), which the process's exit waited for."""
    import unetrt
    from unetrt.plan_build import BuildCancelledError

    waiting = wait_announced(monkeypatch)
    started = threading.Event()
    act_during_build(monkeypatch, started.set)  # 30 s a build unless stopped
    outcome: list[BaseException | str] = []
    cameras = [threading.Thread(target=open_camvid_into, args=(outcome,)) for _ in range(2)]
    for thread in cameras:
        thread.start()
    assert started.wait(30) and waiting.wait(30), "no build with a camera waiting for it"
    cancelled = unetrt.cancel_builds()
    for thread in cameras:
        thread.join(10)
    assert not any(thread.is_alive() for thread in cameras), "a camera went on building after cancel_builds()"
    assert len(outcome) == 2 and all(isinstance(exc, BuildCancelledError) for exc in outcome), outcome
    assert cancelled == 2  # the build, and the start waiting for it
    assert capsys.readouterr().err.count("unetrt: building a TensorRT engine") == 1
    assert list(first_run.glob("*.plan")) == [] and unetrt.cancel_builds() == 0


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_during_the_first_build_of_unet_stream_ends_it_with_143(first_run: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """systemd waits 90 s and docker 10 s after SIGTERM before they kill: a camera service that is building its
    first engine must stop at once, not minutes later, and not by a kill that leaves the build's files behind."""
    from unetrt.stream.cli import main

    signal_during_build(monkeypatch, signal.SIGTERM)
    output = tmp_path / "out.mp4"
    assert main(["sample", str(output), "--max-frames", "3", "--headless"]) == 143
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == "terminated" and "Traceback" not in err and "no TensorRT engine" not in err
    assert Builder.cancelled == 1 and list(first_run.glob("*.plan")) == [] and not output.exists()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stop_while_the_built_plan_is_written_keeps_it_whole_for_the_next_start(
        signum: int, first_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """docs/jetson.md: after Ctrl-C or SIGTERM "a plan that was already being written is finished whole, and the
    next start loads it". The interrupt came out between the metadata and the plan (a second or more of writing
    tens of MB to an SD card, after minutes of building): the plan was lost and the next start built it again."""
    from unetrt import plan_build
    from unetrt.stream.cli import main

    write = plan_build.replace_file

    def stopped_as_the_plan_is_written(path: Path, data: bytes) -> None:
        if path.suffix == ".plan":
            os.kill(os.getpid(), signum)
            time.sleep(0.5)  # the handler runs in the main thread meanwhile
        write(path, data)

    monkeypatch.setattr(plan_build, "replace_file", stopped_as_the_plan_is_written)
    output = tmp_path / "out.mp4"
    assert main(["sample", str(output), "--max-frames", "3", "--headless"]) == 128 + signum
    assert "Traceback" not in capsys.readouterr().err and builds() == 1
    monkeypatch.setattr(plan_build, "replace_file", write)
    with Segmenter("camvid", build=False, warm_up=False) as segmenter:
        assert segmenter.backend.name == "tensorrt"
        assert Path(segmenter.backend.path) == _only_entry(first_run)  # type: ignore[attr-defined]
    assert builds() == 1


def test_tensorrt_runtime_that_cannot_start_cuda_keeps_the_cached_engine(
        first_run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The runtime's constructor failing (no memory for a context, a driver older than TensorRT's CUDA) says
    nothing about the plan: the engine stays cached and nothing is rebuilt."""
    import tensorrt as trt

    with Segmenter("camvid", warm_up=False):
        pass
    good = _only_entry(first_run).read_bytes()
    capsys.readouterr()

    def no_cuda(*args: object) -> None:
        raise TypeError("pybind11::init(): factory function returned nullptr")

    monkeypatch.setattr(trt, "Runtime", no_cuda)
    with Segmenter("camvid", warm_up=False) as segmenter:
        assert segmenter.backend.name in ("openvino", "onnxruntime")
    err = capsys.readouterr().err
    assert "no TensorRT engine (TensorRT could not start on this GPU" in err and "rebuilding" not in err
    assert builds() == 1 and _only_entry(first_run).read_bytes() == good


def test_no_memory_for_a_cuda_context_falls_back_in_one_line(first_run: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """pycuda's errors derive from Exception alone: unconverted, they escaped the fallback as a traceback."""
    driver = sys.modules["pycuda.driver"]
    with Segmenter("camvid", warm_up=False):
        pass
    capsys.readouterr()

    def out_of_memory(device: object) -> None:
        raise driver.MemoryError("cuDevicePrimaryCtxRetain failed: out of memory")

    monkeypatch.setattr(driver.Device, "retain_primary_context", out_of_memory)
    with Segmenter("camvid", warm_up=False) as segmenter:
        assert segmenter.backend.name in ("openvino", "onnxruntime")
    err = capsys.readouterr().err
    assert "no TensorRT engine (the GPU has no memory left for the context of CUDA device 0" in err
    assert builds() == 1 and len(list(first_run.glob("*.plan"))) == 1


def test_no_memory_for_the_frame_path_is_one_value_error_and_frees_what_it_took(
        first_run: Path, gpu: FakeGpu, monkeypatch: pytest.MonkeyPatch) -> None:
    driver = sys.modules["pycuda.driver"]
    with Segmenter("camvid", warm_up=False):
        pass
    mem_alloc = driver.mem_alloc
    calls: list[int] = []

    def allocate_until_full(nbytes: int) -> object:
        calls.append(nbytes)
        if len(calls) > 2:  # the engine's two buffers fit, the frame path's do not
            raise driver.MemoryError("cuMemAlloc failed: out of memory")
        return mem_alloc(nbytes)

    monkeypatch.setattr(driver, "mem_alloc", allocate_until_full)
    with pytest.raises(ValueError, match=r"^the GPU has no memory left for .* MiB of the frame path's device "
                                         r"buffers \(cuMemAlloc failed: out of memory\); close other programs"):
        Segmenter("camvid")
    assert gpu.live("device") == 0 and gpu.live("library") == 0


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_after_the_model_opened_closes_it(first_run: Path, gpu: FakeGpu, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM while the stream still sets itself up (its model open, its renderer not yet): exit 143 with the
    engine, its buffers and the CUDA context released, not left to the interpreter's exit."""

    import unetrt.stream.pipeline as pipeline
    from unetrt.stream.cli import main

    renderer = pipeline.Renderer

    def renderer_after_sigterm(*args: object, **kwargs: object) -> object:
        os.kill(os.getpid(), signal.SIGTERM)  # systemd stops the service just now
        time.sleep(0.05)
        return renderer(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline, "Renderer", renderer_after_sigterm)
    assert main(["sample", str(tmp_path / "out.mp4"), "--max-frames", "2", "--headless"]) == 143
    assert gpu.primary(0).retains == 0 and gpu.live("device") == 0 and gpu.live("library") == 0


def test_doctor_build_builds_the_engine_streams_use(first_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from unetrt.doctor import main as doctor

    assert doctor(["--build"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("unet-stream --model camvid runs on: tensorrt fp16 "
                                                                 "cuda:0")
    with Segmenter("camvid", build=False, warm_up=False) as segmenter:
        assert segmenter.backend.name == "tensorrt"
    assert builds() == 1


@pytest.mark.parametrize("asked", [[], ["--backend", "tensorrt"]], ids=["auto", "backend-tensorrt"])
def test_doctor_before_the_first_build_names_tensorrt_and_the_build(asked: list[str], first_run: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """setup_jetson.sh --no-engine ends with the doctor, which builds nothing: with no engine cached yet it named the
    CPU fallback as what streams run on (after a note about a --no-build nobody gave), though a stream builds the
    engine and runs TensorRT; with --backend tensorrt it ended in a traceback."""
    from unetrt.doctor import main as doctor

    assert doctor(asked) == 0
    captured = capsys.readouterr()
    last = captured.out.splitlines()[-1]
    assert last.startswith("unet-stream --model camvid runs on: tensorrt fp16 once its engine is built: none is "
                           "cached, so its first start builds it"), last
    command = " ".join(["python -m unetrt.doctor --build", *asked])
    assert f"{command} builds it now)" in last
    if asked:
        assert last.endswith("; until then, --no-build stops")
    else:  # OpenVINO, or ONNX Runtime where OpenVINO is not installed (JetPack)
        assert "; until then, with --no-build: " in last and last.endswith(" cpu")
    assert captured.err == "" and builds() == 0
    assert doctor([*asked, "--build"]) == 0  # what the line names builds the engine streams then load
    with Segmenter("camvid", build=False, warm_up=False) as segmenter:
        assert segmenter.backend.name == "tensorrt"
    assert builds() == 1


def test_the_build_the_doctor_names_builds_the_engine_a_stream_at_that_size_loads(
        first_run: Path, tmp_path: Path, tiny_model_files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """The line's command is copied into a shell: a model path with a space stays one argument, and the working
    size asked for is the one it builds (an engine of another size is not the one the stream loads)."""
    from unetrt.doctor import main as doctor

    model = tmp_path / "my models" / "tiny.onnx"
    model.parent.mkdir()
    model.write_bytes(tiny_model_files["onnx"].read_bytes())
    assert doctor(["--model", str(model), "--working-size", "64x48"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    named = re.search(r"; (python -m unetrt\.doctor --build .*) builds it now\)", last)
    assert named is not None, last
    argv = shlex.split(named.group(1))
    assert argv[:4] == ["python", "-m", "unetrt.doctor", "--build"] and builds() == 0
    assert doctor(argv[3:]) == 0 and builds() == 1
    with Segmenter(model, build=False, warm_up=False, working_size=(64, 48)) as segmenter:
        assert segmenter.backend.name == "tensorrt"
    assert builds() == 1


def test_the_doctor_closes_the_fallback_it_opens_to_name_it(first_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before the first build the last line names what --no-build runs by opening it: a CPU backend whose threads
    and memory a service that runs the doctor in its own process must not keep."""
    import unetrt.doctor as doctor_module

    opened: list[Any] = []
    closed: list[Any] = []
    real_open = doctor_module.open_backend

    def recorded(*args: Any, **kwargs: Any) -> Any:
        backend = real_open(*args, **kwargs)
        real_close = backend.close

        def close() -> None:
            closed.append(backend)
            real_close()

        opened.append(backend)
        monkeypatch.setattr(backend, "close", close)
        return backend

    monkeypatch.setattr(doctor_module, "open_backend", recorded)
    assert doctor_module.main([]) == 0
    assert len(opened) == 1 and closed == opened and builds() == 0


def test_doctor_build_releases_the_gpu_it_opened(first_run: Path, gpu: FakeGpu) -> None:
    """The doctor opens the backend exactly as a stream does, and closes it: a service started after
    setup_jetson.sh's doctor --build in the same process must find no context or engine memory left behind."""
    from unetrt.doctor import main as doctor

    assert doctor(["--build"]) == 0
    assert gpu.primary(0).retains == 0 and gpu.live("device") == 0


def test_doctor_device_cpu_reports_the_cpu_path_on_a_gpu_machine(first_run: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from unetrt.doctor import main as doctor

    assert doctor(["--device", "cpu"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith(" cpu")
    assert builds() == 0


@pytest.mark.parametrize("asked", [["--device", "cpu"], ["--backend", "openvino"]])
def test_doctor_build_with_a_path_that_runs_no_tensorrt_is_one_line_and_exit_2(
        asked: list[str], first_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from unetrt.doctor import main as doctor

    assert doctor([*asked, "--build"]) == 2
    captured = capsys.readouterr()
    option = " ".join(asked)
    assert captured.err.strip().splitlines() == [
        f"error: --build builds the TensorRT engine a stream runs on, and {option} runs no TensorRT: "
        f"drop --build or {option}"]
    assert captured.out == "" and builds() == 0


def test_doctor_build_that_builds_no_engine_fails_after_its_report(first_run: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """scripts/setup_jetson.sh ends with doctor --build: a setup whose streams would run on the CPU must not end
    in "done"."""
    from unetrt.doctor import main as doctor

    monkeypatch.setitem(sys.modules, "pycuda", None)
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    assert doctor(["--build"]) == 1
    captured = capsys.readouterr()
    assert "runs on: " in captured.out.splitlines()[-1]
    assert captured.err.splitlines()[-1].startswith("error: --build: no TensorRT engine was built (the note "
                                                    "above says why); streams run on ")


def test_doctor_says_a_pycuda_that_does_not_import_is_there(first_run: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """pycuda built against another CUDA: its import fails although it is installed; the report says so and
    still ends with what a stream runs."""
    import unetrt.doctor as doctor_module

    monkeypatch.setattr(doctor_module, "_version", lambda name: "2024.1" if name == "pycuda" else "1.0")
    monkeypatch.setitem(sys.modules, "pycuda", None)
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    assert doctor_module.main([]) == 0
    out = capsys.readouterr().out
    assert "pycuda 2024.1 does not import" in out and "runs on: " in out.splitlines()[-1]
    with pytest.raises(ImportError) as failed:  # the reason, as the import gives it, is what tells the fix
        importlib.import_module("pycuda.driver")
    assert f"does not import ({failed.value}); rebuild it here" in out


def test_doctor_names_a_pycuda_that_imports_without_its_record(first_run: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """pycuda on PYTHONPATH without its dist-info (tools/gpu_check_bundle.sh removes it): streams import it and run
    TensorRT, and the report said "TensorRT cannot run: pycuda is not installed" above a last line naming tensorrt;
    the doctor judged pycuda by its distribution's record, a stream by its import."""
    from unetrt.doctor import main as doctor

    monkeypatch.setattr(sys.modules["pycuda"], "VERSION_TEXT", "2024.1.2", raising=False)
    with Segmenter("camvid", warm_up=False) as segmenter:
        assert segmenter.backend.name == "tensorrt"
    capsys.readouterr()
    assert doctor([]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[2] == "TensorRT 10.3.0, pycuda 2024.1.2, GPU 0: Orin (fake) (sm_87, 16 SMs)", lines[2]
    assert lines[-1] == "unet-stream --model camvid runs on: tensorrt fp16 cuda:0 (Orin (fake))", lines[-1]


def test_doctor_without_opencv_reports_and_fails(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import unetrt.doctor as doctor_module
    from unetrt.opencv import OpenCVImportError

    def no_cv2() -> None:
        raise OpenCVImportError("unetrt needs OpenCV (the cv2 module) and none is installed")

    monkeypatch.setattr("unetrt.opencv.import_cv2", no_cv2)
    assert doctor_module.main(["--device", "cpu"]) == 1
    captured = capsys.readouterr()
    assert "OpenCV: unetrt needs OpenCV" in captured.out
    assert captured.err.splitlines()[-1] == ("error: unet-stream cannot run without OpenCV (the OpenCV line says "
                                             "how to get it)")


def test_doctor_build_prepares_the_working_size_a_service_streams_at(first_run: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from unetrt.doctor import main as doctor

    assert doctor(["--build", "--working-size", "320x240"]) == 0
    with Segmenter("camvid", build=False, warm_up=False, working_size=(320, 240)) as segmenter:
        assert segmenter.backend.name == "tensorrt"
    assert builds() == 1


def test_doctor_names_the_cuda_driver_the_l4t_release_and_the_power_mode(first_run: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """"TensorRT could not start" sends the user to the doctor for the driver's CUDA version: it must show it."""
    import unetrt.doctor as doctor_module
    from unetrt import jetson

    release = tmp_path / "nv_tegra_release"
    release.write_text("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: x\n")
    monkeypatch.setattr(jetson, "L4T_RELEASE", release)
    (tmp_path / "nvpmodel.conf").write_text("< POWER_MODEL ID=0 NAME=MAXN >\n< POWER_MODEL ID=1 NAME=15W >\n")
    (tmp_path / "status").write_text("pmode:0001 fmode:fanNull\n")
    monkeypatch.setattr(jetson, "NVPMODEL_STATUS", tmp_path / "status")
    monkeypatch.setattr(jetson, "NVPMODEL_CONF", tmp_path / "nvpmodel.conf")
    monkeypatch.setattr(jetson, "DEVFREQ", tmp_path / "no-devfreq")
    assert doctor_module.main([]) == 0
    assert ("CUDA driver: supports CUDA 12.6; Jetson: L4T R36.4.3, power mode 15W (mode 1), "
            in capsys.readouterr().out)


@pytest.mark.parametrize("openvino", [True, False], ids=["openvino", "jetson-without-openvino"])
def test_an_option_of_the_cpu_fallback_leaves_the_default_on_tensorrt(first_run: Path, openvino: bool,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Robot code sets the CPU fallback's options (threads, OpenVINO's lanes) once for every machine: on a GPU
    machine the default path must still end on TensorRT, which takes neither, also on a Jetson, where OpenVINO is
    not installed and the fallback is ONNX Runtime."""
    monkeypatch.setattr("unetrt.backends.openvino.openvino_available", lambda: openvino)
    with Segmenter("camvid", threads=2, lanes=1) as segmenter:
        assert segmenter.backend.name == "tensorrt"
    with pytest.raises(ValueError, match=r"unknown option\(s\) 'lane' for any backend; the options are .*lanes"):
        Segmenter("camvid", lane=1)
    with pytest.raises(ValueError, match=r"unknown option\(s\) 'lanes' for tensorrt; the options are cache_dir"):
        Segmenter("camvid", backend="tensorrt", lanes=1)


def test_a_plan_asked_for_options_of_a_build_says_it_runs_as_built(first_run: Path) -> None:
    with Segmenter("camvid") as segmenter:
        plan = Path(segmenter.backend.path)  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match=rf"dla_core: options of an engine built here from an .onnx model; the plan "
                                         rf"{plan.name} runs as it was built \(rebuild it with unet-build"):
        Segmenter(plan, dla_core=0)


@pytest.mark.parametrize("converter", [True, False], ids=["onnxconverter-common", "without-onnxconverter-common"])
def test_tensorrt_11_first_run_builds_fp16_from_the_converted_graph(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                    converter: bool,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """TensorRT 11 (JetPack 7.2's Orin, current x86) has no FP16 flag: the first run converts the FP32 graph with
    onnxconverter-common, which scripts/setup_jetson.sh installs. Where it is missing, the fallback's line says what
    to install instead of "No module named 'onnxconverter_common'"."""
    from unetrt import _tiling  # type: ignore[attr-defined]

    install_fake_gpu_machine(monkeypatch, _tiling, tmp_path / "engines", version="11.4.1")
    if not converter:
        monkeypatch.setitem(sys.modules, "onnxconverter_common", None)  # import onnxconverter_common now raises
    else:
        pytest.importorskip("onnxconverter_common")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Segmenter("camvid", warm_up=False) as segmenter:
            backend = (segmenter.backend.name, segmenter.backend.precision)
    err = capsys.readouterr().err
    if converter:
        # The conversion raised a few subnormal weights by less than 1e-7 and said so in a warning the user of the
        # bundled model could do nothing about: the first run is quiet.
        assert [str(warning.message) for warning in caught] == []
        assert backend == ("tensorrt", "fp16") and builds() == 1
        plan = _only_entry(tmp_path / "engines")
        assert read_plan_metadata(plan).strongly_typed
        assert deserialize(plan.read_bytes()).precision == "fp16"  # type: ignore[union-attr]
    else:
        assert backend[0] != "tensorrt" and builds() == 0
        assert ("no TensorRT engine (converting an ONNX graph to FP16 (what TensorRT 11 builds FP16 engines from) "
                "needs onnxconverter-common: pip install 'onnxconverter-common>=1.14'); running") in err


@pytest.mark.parametrize("version", ["10.3.0", "11.4.1"], ids=["jetpack-6", "tensorrt-11"])
def test_the_bundled_model_whose_weights_are_stored_as_float16_builds_an_fp16_engine(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, version: str) -> None:
    """The bundled FP32 graphs store their weights as float16, each cast to float32 where it is read. Taken for an
    FP16 graph, they were built strongly typed: in FP32, labelled FP16 (about half the speed on a Jetson)."""
    from unetrt import _tiling  # type: ignore[attr-defined]

    pytest.importorskip("onnxconverter_common")
    install_fake_gpu_machine(monkeypatch, _tiling, tmp_path / "engines", version=version)
    for name in ("camvid", "isbi"):
        with Segmenter(name, warm_up=False) as segmenter:
            assert (segmenter.backend.name, segmenter.backend.precision) == ("tensorrt", "fp16")
            plan = Path(segmenter.backend.path)  # type: ignore[attr-defined]
        metadata = read_plan_metadata(plan)
        built = deserialize(plan.read_bytes())
        assert built is not None and (metadata.precision, built.precision) == ("fp16", "fp16"), name
        assert built.head_precision == "fp32", name  # the logit head stays FP32 under FP16 kernels
        if version.startswith("10."):
            assert not metadata.strongly_typed and "FP16" in metadata.build_options["builder_flags"]
            # TensorRT parsed the float32 weights, with no Cast in front of a convolution
            parsed = onnx.load_from_string(built.onnx_model).graph
            assert not any(node.op_type == "Cast" for node in parsed.node), name


@pytest.fixture(scope="module")
def isbi_slices(shared_data: Path) -> list[np.ndarray]:
    import cv2

    files = [shared_data / "isbi2012-em" / "images" / f"{stem}.png" for stem in (21, 22, 23)]
    if not all(path.is_file() for path in files):
        pytest.skip("no ISBI slices 21-23 in ../shared/data/isbi2012-em/images")
    return [cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) for path in files]


@pytest.mark.parametrize("name", ["camvid", "isbi"])
def test_the_fp16_engine_of_a_bundled_model_keeps_fp32s_masks_far_from_fp16s_range(
        name: str, first_run: Path, camvid_frames: list[np.ndarray], isbi_slices: list[np.ndarray],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/jetson.md, Precision: on JetPack 6 the default FP16 engine, every layer's output a half ([FP16]), gives
    ONNX Runtime FP32's masks on at least 99.9 % of each frame's pixels (isbi with its stated clean-up), its
    probabilities within 0.02, and no layer writes a value of 100 or more (65504 is a half's largest)."""
    import onnxruntime as ort
    from fakes.tensorrt import computed_in_fp16

    inputs: list[np.ndarray] = []
    compute = FakeEngine.compute

    def recorded(engine: FakeEngine, images: np.ndarray) -> np.ndarray:
        inputs.append(images.copy())
        return compute(engine, images)

    monkeypatch.setattr(FakeEngine, "compute", recorded)
    frames = camvid_frames if name == "camvid" else isbi_slices
    with Segmenter(name, backend="onnxruntime", precision="fp32", device="cpu") as reference:
        expected = [reference.segment(frame, probabilities=True) for frame in frames]
    with Segmenter(name, warm_up=False) as segmenter:
        assert (segmenter.backend.name, segmenter.backend.precision) == ("tensorrt", "fp16")
        got = [segmenter.segment(frame, probabilities=True) for frame in frames]
        plan = deserialize(Path(segmenter.backend.path).read_bytes())  # type: ignore[attr-defined]
    agreement = [float(np.mean(a.mask == b.mask)) for a, b in zip(got, expected, strict=True)]
    assert min(agreement) >= 0.999, agreement
    assert max(float(np.max(np.abs(a.probabilities - b.probabilities)))  # type: ignore[operator]
               for a, b in zip(got, expected, strict=True)) <= 0.02
    # Every half a layer writes, as the fake engine computes them: the graph with each one an output too.
    assert plan is not None and plan.fp16_layers and len(inputs) == len(frames)
    network = onnx.load_from_string(computed_in_fp16(plan.onnx_model, plan.head_precision == "fp32"))
    halves = [out for node in network.graph.node for out in node.output if out.endswith("/half")]
    network.graph.output.extend(onnx.helper.make_tensor_value_info(half, onnx.TensorProto.FLOAT16, None)
                                for half in halves)
    session = ort.InferenceSession(network.SerializeToString(), providers=["CPUExecutionProvider"])
    largest = max(float(np.max(np.abs(value.astype(np.float32))))
                  for images in inputs
                  for value in session.run(halves, {session.get_inputs()[0].name: images.astype(np.float32)}))
    assert largest < 100, largest


def test_the_first_run_on_a_dla_puts_the_network_on_it(first_run: Path) -> None:
    """An AGX Orin's DLA takes one fixed shape: the cached engine is built at batch 1 of the working size (with the
    default range of batches TensorRT had run every layer on the GPU under the DLA's name), and a batch of frames
    goes through it one frame at a time."""
    frames = [np.full((360, 480, 3), value, np.uint8) for value in (0, 90, 180)]
    with Segmenter("camvid", dla_core=0, warm_up=False) as segmenter:
        plan = Path(segmenter.backend.path)  # type: ignore[attr-defined]
        assert segmenter.backend.max_batch == 1 and "DLA core 0" in segmenter.backend.device
        masks = [result.mask for result in segmenter.segment_batch(frames)]
        alone = [segmenter.segment(frame).mask for frame in frames]
    built = deserialize(plan.read_bytes())
    assert built is not None and built.dla_core == 0
    for mask, single in zip(masks, alone):
        np.testing.assert_array_equal(mask, single)


def test_a_failed_first_build_is_tried_once_by_a_stream_of_several_workers(
        first_run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A build that fails (an 8 GB Orin Nano out of memory, minutes in) gives way to the CPU: the stream's CPU
    workers open on that fallback, not by trying the build again each (1 + 4 builds on a 6-core Orin Nano)."""
    from unetrt.stream.workers import open_segmenters

    def failing(self: Builder, network: object, config: object) -> None:
        Builder.builds += 1
        return None  # TensorRT's answer to a failed build

    monkeypatch.setattr(Builder, "build_serialized_network", failing)
    monkeypatch.setattr("unetrt.cpu.usable_cores", lambda: 6)
    segmenters = open_segmenters("camvid", {"warm_up": False}, None)
    try:
        assert len(segmenters) > 1 and {s.backend.name for s in segmenters} <= {"openvino", "onnxruntime"}
        assert len({(s.backend.name, s.backend.precision) for s in segmenters}) == 1
    finally:
        for segmenter in segmenters:
            segmenter.close()
    assert builds() == 1
    assert capsys.readouterr().err.count("no TensorRT engine") == 1


def test_a_missing_camera_is_reported_before_the_first_build(first_run: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """The first unet-stream on a Jetson builds an engine for minutes: a camera number that does not exist is
    reported at once, not after that build."""
    from unetrt.stream.cli import main

    device = "/dev/video97"
    if os.path.exists(device) or not sys.platform.startswith("linux"):
        pytest.skip(f"needs Linux without {device}")
    assert main([device, "--headless"]) == 2
    err = capsys.readouterr().err
    assert f"camera {device!r} does not exist" in err and "building a TensorRT engine" not in err
    assert builds() == 0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get(url: str) -> tuple[int, bytes]:
    """A real HTTP client's GET: the status and body (0 and b"" when the connection is refused)."""
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.URLError as error:
        assert isinstance(error.reason, ConnectionRefusedError), error
        return 0, b""


class _CsiCamera:
    """``cv2.VideoCapture`` of nvarguscamerasrc with a sensor connected: every read a frame; counts the sessions
    open, which Argus serves one at a time."""

    def __init__(self, sessions: list[int]) -> None:
        self.sessions = sessions
        sessions[0] += 1
        sessions[1] += 1

    def isOpened(self) -> bool:  # noqa: N802  (OpenCV's name)
        return True

    def get(self, prop: int) -> float:
        return 30.0 if prop == 5 else 0.0  # cv2.CAP_PROP_FPS

    def read(self) -> tuple[bool, np.ndarray]:
        return True, np.full((168, 224, 3), 90, np.uint8)

    def release(self) -> None:
        self.sessions[1] -= 1


def test_a_csi_camera_that_is_not_connected_is_reported_before_the_first_build(
        first_run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """docs/jetson.md: `unet-stream csi://0 http://0.0.0.0:8080 --wait 0` with a sensor that is not connected (a loose
    cable, a wrong sensor id) ends in seconds with the camera's own error line, before the build: it was found once
    the engine had been built, minutes into the first run. Nothing is built, and the live view goes with the
    program."""
    from unetrt.stream import sources
    from unetrt.stream.cli import main

    monkeypatch.setattr(sources, "opencv_has_gstreamer", lambda: True)  # the pipeline then fails to open here
    port = _free_port()
    reached = act_during_build(monkeypatch, lambda: None, steps=5, step_s=0)
    assert main(["csi://0", f"http://127.0.0.1:{port}", "--wait", "0"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["error: cannot open csi 'csi://0'; check that a camera is connected as sensor 0, that no other "
                     "program uses it, and restart the camera daemon: sudo systemctl restart nvargus-daemon"], lines
    assert reached == [] and builds() == 0 and list(first_run.glob("*.plan")) == []
    assert _get(f"http://127.0.0.1:{port}/") == (0, b"")


def test_a_connected_csi_camera_is_let_go_during_the_first_build_and_streams_after_it(
        first_run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The camera is opened beside the model, and let go before the build: Argus is not held, nor its frames
    converted, for the build's minutes; the live view says the engine is being built; the stream opens the camera
    again once the engine is cached."""
    from unetrt.stream import sources
    from unetrt.stream.cli import main

    monkeypatch.setattr(sources, "opencv_has_gstreamer", lambda: True)
    sessions = [0, 0]  # opened in all, open now
    monkeypatch.setattr(sources.cv2, "VideoCapture", lambda *args: _CsiCamera(sessions))
    port = _free_port()
    seen: list[tuple[list[int], str]] = []

    def look() -> None:
        seen.append((list(sessions), json.loads(_get(f"http://127.0.0.1:{port}/stats")[1])["status"]))

    act_during_build(monkeypatch, look, steps=5, step_s=0)
    assert main(["csi://0", f"http://127.0.0.1:{port}", "--max-frames", "3"]) == 0
    assert len(seen) == 1 and seen[0][0] == [1, 0], seen
    assert seen[0][1].startswith("building a TensorRT engine for camvid FP16"), seen
    assert sessions == [2, 0] and builds() == 1 and len(list(first_run.glob("*.plan"))) == 1
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("fixed", [False, True], ids=["still-missing", "cable-fixed-during-the-build"])
def test_a_camera_not_up_yet_does_not_stop_the_first_build_and_is_said_at_once(
        fixed: bool, first_run: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Under the retry policy a camera that does not open is not up yet, not gone: the build goes on (the next start
    needs the engine anyway), and the terminal and the live view say at once that the camera is not up. Once the
    policy gives up (here --max-reconnects 1, during the build) that is said at once too; the build is finished and
    cached, and the camera is tried once more: fixed meanwhile, the stream runs (a service's --wait 60 for a camera
    up at 90 s, during a first build of minutes, ended with exit 2 after the build); still missing, the stream ends
    with the camera's own error (exit 2)."""
    import logging

    from unetrt.stream import sources
    from unetrt.stream.cli import main

    monkeypatch.setattr(sources, "opencv_has_gstreamer", lambda: True)
    sessions = [0, 0]
    plugged, looked = threading.Event(), threading.Event()
    no_sensor = sources.cv2.VideoCapture  # without GStreamer here the pipeline fails to open, as without a sensor
    attempts = [0]

    def capture(*args: object) -> Any:
        if plugged.is_set():
            return _CsiCamera(sessions)
        attempts[0] += 1
        if attempts[0] == 2:
            # The retry fails (and the policy gives up) once the live view was read: under load the policy gave up
            # before the build's step that reads it, whose page then said so in place of "not up yet".
            assert looked.wait(60), "the live view was never read"
        return no_sensor(*args)

    monkeypatch.setattr(sources.cv2, "VideoCapture", capture)
    port = _free_port()
    given_up = threading.Event()

    class GivenUp(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.ERROR:
                given_up.set()

    handler = GivenUp()
    logging.getLogger("unetrt.stream").addHandler(handler)
    seen: list[tuple[list[str], str]] = []

    def look() -> None:
        # The first attempt's line reaches the page just after the build may begin: read until it is there.
        deadline = time.monotonic() + 60
        status = ""
        while "is not up yet" not in status and time.monotonic() < deadline:
            status = json.loads(_get(f"http://127.0.0.1:{port}/stats")[1])["status"]
        seen.append(([r.getMessage() for r in caplog.records if r.levelno == logging.WARNING], status))
        looked.set()
        assert given_up.wait(30), "the retry policy never gave up"
        if fixed:
            plugged.set()

    reached = act_during_build(monkeypatch, look, steps=5, step_s=0)
    try:
        code = main(["csi://0", f"http://127.0.0.1:{port}", "--max-reconnects", "1", "--max-frames", "3"])
    finally:
        logging.getLogger("unetrt.stream").removeHandler(handler)
    assert len(seen) == 1, seen
    warned, status = seen[0]
    assert any(line.startswith("csi://0 is not up yet (cannot open csi 'csi://0'; check that a camera is connected")
               for line in warned), warned
    assert status.startswith("building a TensorRT engine for camvid FP16") and "; csi://0 is not up yet (" in status
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].endswith("still not up after 1 retries (--max-reconnects); the model goes "
                                                   "on opening (a TensorRT engine being built is cached for the next "
                                                   "start; Ctrl-C stops it), then csi://0 is tried once more"), errors
    assert len(reached) == 5 and builds() == 1 and len(list(first_run.glob("*.plan"))) == 1
    err = capsys.readouterr().err
    if fixed:
        assert code == 0 and sessions == [1, 0] and "Traceback" not in err
        return
    assert code == 2 and sessions == [0, 0]
    assert err.strip().splitlines()[-1] == ("error: cannot open csi 'csi://0'; check that a camera is connected as "
                                            "sensor 0, that no other program uses it, and restart the camera daemon: "
                                            "sudo systemctl restart nvargus-daemon"), err


def _booting_csi(monkeypatch: pytest.MonkeyPatch, sessions: list[int],
                 on_attempt: Any = None) -> threading.Event:
    """``cv2.VideoCapture`` of a CSI sensor whose driver is not up yet, as at a Jetson's boot: each attempt fails
    until the returned event is set. ``on_attempt`` is called with each attempt's number (1, 2, ...) first."""
    from unetrt.stream import sources

    monkeypatch.setattr(sources, "opencv_has_gstreamer", lambda: True)
    up = threading.Event()
    attempts = [0]
    no_sensor = sources.cv2.VideoCapture  # without GStreamer here the pipeline fails to open, as without a sensor

    def capture(*args: object) -> object:
        attempts[0] += 1
        if on_attempt is not None:
            on_attempt(attempts[0])
        return _CsiCamera(sessions) if up.is_set() else no_sensor(*args)

    monkeypatch.setattr(sources.cv2, "VideoCapture", capture)
    return up


@pytest.mark.parametrize("when", ["engine-cached", "up-during-the-build", "up-after-the-build"])
def test_a_service_at_boot_streams_once_the_camera_is_up(when: str, first_run: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """docs/jetson.md: a systemd service started at boot, `unet-stream csi://0 ... --wait 60`, whose camera driver comes
    up seconds after it: it streams once the camera is up, with a cached engine and with a first build (the camera
    up during it, or after it), and holds no camera session at the end."""
    from unetrt.stream.cli import main

    if when == "engine-cached":
        Segmenter("camvid").close()
    sessions = [0, 0]
    up = _booting_csi(monkeypatch, sessions, lambda attempt: up.set() if attempt == 3 and when != "up-during-the-build"
                      else None)
    if when == "up-during-the-build":
        act_during_build(monkeypatch, up.set, steps=5, step_s=0)
    else:
        act_during_build(monkeypatch, lambda: None, steps=5, step_s=0)
    assert main(["csi://0", "--wait", "60", "--max-frames", "3", "--headless"]) == 0
    assert builds() == 1 and sessions[1] == 0 and sessions[0] >= 1
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
@pytest.mark.parametrize("moment", ["before-the-camera-answers", "before-it-answers-a-first-build", "during-the-build",
                                    "during-the-one-more-attempt", "once-the-camera-is-open"])
def test_a_service_stopped_while_its_camera_is_not_up_exits_as_a_stop(
        moment: str, signum: int, code: int, first_run: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C, or systemd's SIGTERM (a stop during boot, a shutdown), while a service's camera is not up yet: before
    it answers (a cached engine: its second attempt; a first build: its first, which the build waits for), during
    the first build, during the one more attempt after a build the retry policy gave up in; or once it opened (a
    cached engine: its frames dropped while the model loads, or streaming). The program ends as a stop (130, 143),
    without a traceback, and holds no camera session (SIGTERM during the one more attempt exited 2 with the camera's
    error)."""
    from unetrt.stream.cli import main

    def stop(attempt: int) -> None:
        if moment == "once-the-camera-is-open" and attempt == 1:
            up.set()
            threading.Thread(target=lambda: opened.wait(30) and os.kill(os.getpid(), signum)).start()
        if (moment, attempt) in (("before-the-camera-answers", 2), ("before-it-answers-a-first-build", 1),
                                 ("during-the-one-more-attempt", 3)):
            os.kill(os.getpid(), signum)

    sessions = [0, 0]
    opened = threading.Event()
    read = _CsiCamera.read

    def reading(self: _CsiCamera) -> tuple[bool, np.ndarray]:
        opened.set()
        return read(self)

    monkeypatch.setattr(_CsiCamera, "read", reading)
    up = _booting_csi(monkeypatch, sessions, stop)
    if moment in ("before-the-camera-answers", "once-the-camera-is-open"):
        Segmenter("camvid").close()
    if moment == "during-the-build":
        signal_during_build(monkeypatch, signum, steps=5, step_s=0)
    else:
        # --max-reconnects 1: two attempts beside the build, then the one more after it.
        act_during_build(monkeypatch, lambda: None, steps=5, step_s=0)
    arguments = ["csi://0", "--headless"]
    arguments += ["--max-reconnects", "1"] if moment == "during-the-one-more-attempt" else ["--wait", "60"]
    assert main(arguments) == code
    assert sessions[1] == 0 and (sessions[0] == 1 if moment == "once-the-camera-is-open" else not up.is_set()), sessions
    assert "Traceback" not in capsys.readouterr().err


def test_a_csi_open_that_does_not_answer_holds_the_first_build_back_no_longer_than_the_open_timeout(
        first_run: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A wedged nvargus-daemon blocks the pipeline's open, which no timeout of OpenCV's bounds: the build waited for
    that first attempt without end, where before the change it was built and cached first. It waits --open-timeout
    (streaming.md: "at most --open-timeout"), says so, and builds; the attempt goes on beside it."""
    from unetrt.stream import sources
    from unetrt.stream.cli import main

    monkeypatch.setattr(sources, "opencv_has_gstreamer", lambda: True)
    sessions = [0, 0]
    events: list[str] = []
    building = threading.Event()

    def wedged(*args: object) -> _CsiCamera:
        building.wait(60)  # answers only once the build has begun (without end, on a wedged daemon)
        events.append("camera answered")
        return _CsiCamera(sessions)

    def on_step(step: int) -> None:
        if step == 0:
            events.append("build began")
            building.set()

    monkeypatch.setattr(sources.cv2, "VideoCapture", wedged)
    monkeypatch.setattr(Builder, "steps", 5)
    monkeypatch.setattr(Builder, "on_step", on_step)
    assert main(["csi://0", "--open-timeout", "1", "--max-frames", "3", "--headless"]) == 0
    assert events[:2] == ["build began", "camera answered"], events
    assert ("csi://0 has not answered after 1 s (--open-timeout); the model goes on opening, and so does the source "
            "beside it") in caplog.messages, caplog.messages
    assert builds() == 1 and sessions == [2, 0] and "Traceback" not in capsys.readouterr().err


def test_a_video_that_does_not_open_is_reported_before_the_first_build(
        first_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file that exists but does not open (damaged, a codec OpenCV lacks) can never stream: it is said in one
    line before anything is built, not after the build's minutes."""
    from unetrt.stream.cli import main

    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"not a video" * 100)
    assert main([str(clip), "--headless"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"error: cannot open video {str(clip)!r}; the file may be damaged or use a codec this OpenCV "
                     "build cannot decode"], lines
    assert builds() == 0 and list(first_run.glob("*.plan")) == []


def test_a_network_stream_that_does_not_answer_is_reported_before_the_first_build(
        first_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--wait 0 asks for one attempt: an RTSP address nobody serves is said before the build, in one line."""
    from unetrt.stream.cli import main

    url = f"rtsp://127.0.0.1:{_free_port()}/cam"
    assert main([url, "--headless", "--wait", "0", "--open-timeout", "5"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot open rtsp {url!r}; check the address"), lines
    assert builds() == 0 and list(first_run.glob("*.plan")) == []


def test_a_video_opened_beside_the_first_build_still_starts_at_its_first_frame(first_run: Path) -> None:
    """The file is opened while the engine is built and kept open through the build (never read meanwhile): the
    stream's first result is the file's first frame, and the file is opened once."""
    import cv2

    from unetrt.stream import Stream, sources

    clip = MODELS_DIR.parent / "samples" / "camvid_0016E5.mp4"
    capture = cv2.VideoCapture(str(clip))
    ok, first = capture.read()
    capture.release()
    assert ok
    opened: list[str] = []
    real_open = sources.VideoCaptureSource.open

    def recording_open(self: sources.VideoCaptureSource) -> None:
        opened.append(self.name)
        real_open(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sources.VideoCaptureSource, "open", recording_open)
        with Stream(str(clip), "camvid", max_frames=2) as stream:
            results = list(stream)
    assert builds() == 1 and opened == [str(clip)]
    assert [result.index for result in results] == [0, 1] and np.array_equal(results[0].frame, first)


class _StreamViewer(threading.Thread):
    """A browser's picture: asks for /stream once and keeps the JPEG parts that come, until the server ends it."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.frames: list[bytes] = []
        self.connected = threading.Event()

    def run(self) -> None:
        with urllib.request.urlopen(self.url, timeout=120) as response:
            self.connected.set()
            while True:
                line = response.readline()
                if not line:
                    return
                if line.lower().startswith(b"content-length:"):
                    response.readline()  # the blank line after the part's headers
                    self.frames.append(response.read(int(line.split(b":")[1])))


def test_the_live_view_shows_the_first_build_then_the_stream_without_a_reload(
        first_run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """docs/jetson.md's Install section: `unet-stream ... http://0.0.0.0:8080`, then open the page. During the first
    build the page and /stats say that the engine is being built and how far the build is (TensorRT's phase and
    step, as the terminal's bar shows); a page opened then gets the frames once they come, on the connection it
    opened during the build."""
    from unetrt.stream.cli import main

    port = _free_port()
    page: list[tuple[int, str]] = []
    stats: list[dict[str, Any]] = []
    viewer = _StreamViewer(f"http://127.0.0.1:{port}/stream")

    def look() -> None:
        status, body = _get(f"http://127.0.0.1:{port}/")
        page.append((status, body.decode()))
        stats.append(json.loads(_get(f"http://127.0.0.1:{port}/stats")[1]))
        viewer.start()
        assert viewer.connected.wait(30)

    act_during_build(monkeypatch, look, at_step=2, steps=5, step_s=0)
    assert main(["sample", f"http://127.0.0.1:{port}", "--max-frames", "20", "--headless"]) == 0
    viewer.join(60)
    assert not viewer.is_alive(), "the stream of the live view did not end with the program"
    assert len(stats) == 1 and stats[0]["status"].startswith("building a TensorRT engine for camvid FP16"), stats
    assert "the first run on a Jetson takes minutes, later starts load it from" in stats[0]["status"]
    assert stats[0]["build"] == {"phase": "Tactic selection", "done": 2, "steps": 5,
                                 "elapsed_s": stats[0]["build"]["elapsed_s"]}, stats
    assert page[0][0] == 200 and "building a TensorRT engine for camvid FP16" in page[0][1]
    assert "Tactic selection 2/5 (" in page[0][1] and 'src="/stream"' in page[0][1]
    assert viewer.frames and all(frame.startswith(b"\xff\xd8") for frame in viewer.frames), len(viewer.frames)
    assert builds() == 1 and "Traceback" not in capsys.readouterr().err


def _streams_made_at_once(streams: list[tuple[str, str]]) -> list[BaseException]:
    """Make (and close) a Stream of no frames for each (model, live view address), each on a thread of its own, as
    a process with several cameras does; what any of them raised."""
    from unetrt.stream import pipeline

    errors: list[BaseException] = []

    def make(model: str, output: str) -> None:
        try:
            pipeline.Stream([], model, output).close()
        except BaseException as exc:  # handed to the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=make, args=stream) for stream in streams]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return errors


def test_two_streams_building_at_once_each_show_their_own_build_on_their_page(
        first_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/streaming.md: several streams with live views in one process (two cameras, two models) each show their
    own stream's build; each page showed every build of the process, the step counts of both builds one after the
    other in its progress."""
    from unetrt.stream import pipeline

    shown: dict[int, list[tuple[str, object]]] = {}
    set_status = pipeline.HttpViewSink.set_status

    def recording(self: Any, status: str, build: object = None) -> None:
        shown.setdefault(self.port, []).append((status, build))
        set_status(self, status, build)

    both_building = threading.Barrier(2, timeout=30)

    def on_step(step: int) -> None:
        if step == 0:
            both_building.wait()  # the two builds are under way at once

    monkeypatch.setattr(pipeline.HttpViewSink, "set_status", recording)
    monkeypatch.setattr(Builder, "steps", 5)
    monkeypatch.setattr(Builder, "on_step", on_step)
    pages = {"camvid": _free_port(), "isbi": _free_port()}
    errors = _streams_made_at_once([(model, f"http://127.0.0.1:{port}") for model, port in pages.items()])
    assert not errors and builds() == 2, errors
    for model, port in pages.items():
        other = next(name for name in pages if name != model)
        statuses = shown[port]
        building = [status for status, _ in statuses if status.startswith("building a TensorRT engine for ")]
        assert building and all(f"for {model} FP16" in status for status in building), statuses
        assert not any(other in status for status, _ in statuses), statuses
        steps = [build for _, build in statuses if build is not None]
        assert len(steps) == 2 + 2 + 5, steps  # one build's: its two phases begun, their 2 and 5 steps


def test_a_stream_waiting_for_another_stream_s_build_of_its_engine_says_so_on_its_page(
        first_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two cameras on one model: one stream builds, and the other's page says that it waits for that build, without
    the other build's steps as if they were its own."""
    from unetrt.stream import pipeline

    shown: dict[int, list[tuple[str, object]]] = {}
    set_status = pipeline.HttpViewSink.set_status
    waiting = threading.Event()

    def recording(self: Any, status: str, build: object = None) -> None:
        shown.setdefault(self.port, []).append((status, build))
        if status.startswith("another process (or thread) is building the TensorRT engine for camvid FP16"):
            waiting.set()
        set_status(self, status, build)

    monkeypatch.setattr(pipeline.HttpViewSink, "set_status", recording)
    monkeypatch.setattr(Builder, "steps", 5)
    monkeypatch.setattr(Builder, "on_step", lambda step: step or waiting.wait(30))
    ports = [_free_port(), _free_port()]
    errors = _streams_made_at_once([("camvid", f"http://127.0.0.1:{port}") for port in ports])
    assert not errors and builds() == 1 and waiting.is_set(), errors
    steps = {port: [build for _, build in shown[port] if build is not None] for port in ports}
    waited = next(port for port in ports if any(status.startswith("another process") for status, _ in shown[port]))
    built = next(port for port in ports if port != waited)
    assert steps[waited] == [] and len(steps[built]) == 2 + 2 + 5, steps


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
def test_a_first_build_stopped_ends_the_live_view_with_the_program(
        signum: int, code: int, first_run: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C or systemd's SIGTERM during the first build: the build stops, nothing is cached, the program exits 130
    or 143 as without a live view, and the live view, which answered during the build, is gone."""
    from unetrt.stream.cli import main

    port = _free_port()
    during: list[int] = []

    def look_then_stop() -> None:
        during.append(_get(f"http://127.0.0.1:{port}/stats")[0])
        os.kill(os.getpid(), signum)

    act_during_build(monkeypatch, look_then_stop)
    assert main(["sample", f"http://127.0.0.1:{port}", "--headless"]) == code
    assert during == [200]
    assert _get(f"http://127.0.0.1:{port}/") == (0, b"")
    assert Builder.cancelled == 1 and list(first_run.glob("*.plan")) == []
    assert "Traceback" not in capsys.readouterr().err


def test_a_busy_port_is_refused_before_the_first_build(first_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The live view now listens from before the model opens: a port another program holds is still refused first,
    in one line, with nothing built."""
    from unetrt.stream.cli import main

    with socket.create_server(("127.0.0.1", 0)) as other:
        port = other.getsockname()[1]
        assert main(["sample", f"http://127.0.0.1:{port}", "--headless"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot serve the live view on 127.0.0.1:{port}"), lines
    assert builds() == 0


@pytest.mark.parametrize("override", [None, "~/engines"], ids=["default", "tilde-in-UNETRT_ENGINE_CACHE"])
def test_no_home_directory_still_ends_on_tensorrt(first_run: Path, monkeypatch: pytest.MonkeyPatch,
                                                  override: str | None, capsys: pytest.CaptureFixture[str]) -> None:
    """HOME unset and no passwd entry (a container run with a numeric user id, env -i): pathlib cannot name a
    home, and that RuntimeError escaped as a traceback instead of the private-folder fallback."""
    import pwd

    from unetrt.doctor import main as doctor

    def unknown_user(uid: int) -> pwd.struct_passwd:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setattr(pwd, "getpwuid", unknown_user)
    # The CPU fallback a Jetson has (OpenVINO's own telemetry needs a home directory too).
    monkeypatch.setattr("unetrt.backends.openvino.openvino_available", lambda: False)
    if override is None:
        monkeypatch.delenv("UNETRT_ENGINE_CACHE")
    else:
        monkeypatch.setenv("UNETRT_ENGINE_CACHE", override)
    with Segmenter("camvid", warm_up=False) as segmenter:
        assert segmenter.backend.name == "tensorrt"
    assert builds() == 1
    assert "has no home directory" in capsys.readouterr().err
    with Segmenter("camvid", build=False, warm_up=False) as segmenter:
        assert segmenter.backend.name != "tensorrt"
    assert "no home directory" in capsys.readouterr().err
    assert doctor(["--device", "cpu"]) == 0
    assert "engine cache: none: no folder for the engine cache" in capsys.readouterr().out
    # What a stream runs on: TensorRT, built into a private folder at every start, not the fallback as if cached.
    assert doctor([]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert "runs on: tensorrt fp16 once its engine is built" in last, last
    assert "every start builds it" in last and "no folder for the engine cache" in last, last


def test_a_first_build_logged_to_a_file_says_it_is_still_building(first_run: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Under systemd, ros2 launch or docker logs stderr is no terminal and tqdm draws nothing: minutes of a first
    build showed one line, then silence. A line every PROGRESS_NOTE_S (30 s) of the build's own clock, here one
    that moves 10 s at each reading: 20 steps of tactic selection and 2 of the build take 220 s, 7 lines."""
    import types

    from unetrt import plan_build

    readings = iter(range(0, 10_000, 10))
    monkeypatch.setattr(plan_build, "time", types.SimpleNamespace(monotonic=lambda: float(next(readings))))
    act_during_build(monkeypatch, lambda: None, steps=20, step_s=0)
    with Segmenter("camvid", warm_up=False) as segmenter:
        assert segmenter.backend.name == "tensorrt"
    notes = [line for line in capsys.readouterr().err.splitlines() if "still building the TensorRT engine" in line]
    assert len(notes) == 220 // 30, notes
    assert notes[0] == "unetrt: still building the TensorRT engine (30 s so far; Tactic selection 3/20)"


def test_a_build_logged_to_a_file_promises_no_cache_it_does_not_write(first_run: Path, monkeypatch: pytest.MonkeyPatch,
                                                                       tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """A service on a read-only root file system: the build line said this run's engine is removed when it ends and
    every start builds again, and each line every 30 s then said 'it is cached once built'."""
    import types

    from unetrt import plan_build

    readings = iter(range(0, 10_000, 10))
    monkeypatch.setattr(plan_build, "time", types.SimpleNamespace(monotonic=lambda: float(next(readings))))
    act_during_build(monkeypatch, lambda: None, steps=20, step_s=0)
    blocker = tmp_path / "readonly"
    blocker.write_text("a file where the cache's parent folder should be")
    monkeypatch.setenv("UNETRT_ENGINE_CACHE", str(blocker / "engines"))
    with Segmenter("camvid", warm_up=False) as segmenter:
        assert segmenter.backend.name == "tensorrt"
    err = capsys.readouterr().err
    assert "every start will build again" in err
    notes = [line for line in err.splitlines() if "still building the TensorRT engine" in line]
    assert notes and not any("cached" in line for line in notes), notes


@pytest.mark.parametrize("volume", [False, True], ids=["container-layer", "mounted-volume"])
def test_a_cache_inside_a_throwaway_container_says_so(first_run: Path, tmp_path: Path, volume: bool,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """jetson-containers runs `docker run --rm` with /data mounted: ~/.cache is in the container's own layer, so
    "later starts load it" was untrue and every start built again for minutes."""
    import unetrt.plan_cache as plan_cache

    marker = tmp_path / ".dockerenv"
    marker.touch()
    monkeypatch.setattr(plan_cache, "CONTAINER_MARKERS", (marker,))
    monkeypatch.setattr(plan_cache, "CONTAINER_ROOT", tmp_path)  # the cache's own device: the container layer
    if volume:
        monkeypatch.setattr(plan_cache, "_lost_with_container", lambda folder: False)  # another device
    with Segmenter("camvid", warm_up=False) as segmenter:
        assert segmenter.backend.name == "tensorrt"
    err = capsys.readouterr().err
    assert ("in this container's own file system, lost when the container is removed" in err) != volume
    assert ("later starts load it from" in err) == volume


def test_a_tensorrt_upgrade_says_why_it_builds_and_removes_the_engine_it_replaces(
        first_run: Path, gpu: FakeGpu, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A JetPack upgrade (new TensorRT): the first start said "no engine is cached" and kept the old plan and timing
    cache forever (a plan is tens of MB on an eMMC or SD card). An entry of a newer TensorRT (another venv) stays."""
    with Segmenter("camvid", warm_up=False):
        pass
    with Segmenter("camvid", warm_up=False, working_size=(320, 240)):
        pass
    old = _only_entry_of(first_run, (224, 168))
    capsys.readouterr()
    install_fake_tensorrt_gpu(monkeypatch, gpu, version="10.4.0")
    with Segmenter("camvid", warm_up=False) as segmenter:
        assert segmenter.backend.name == "tensorrt"
    err = capsys.readouterr().err
    assert "(the cached engine was built by TensorRT 10.3.0, this is 10.4.0)" in err
    assert "removed 1 cached engine(s) of camvid that this one replaces" in err
    assert not old.exists() and not old.with_suffix(".plan.json").exists()
    assert [path.name for path in first_run.glob("timing-*")] == ["timing-10.4.0-sm_87-16sm.cache"]
    assert _only_entry_of(first_run, (320, 240)).exists()  # another working size: not replaced by this one
    newer = _only_entry_of(first_run, (224, 168))
    install_fake_tensorrt_gpu(monkeypatch, gpu, version="10.3.0")
    with Segmenter("camvid", warm_up=False):
        pass
    assert newer.exists() and "cached engine(s)" not in capsys.readouterr().err


def _only_entry_of(cache: Path, working_size: tuple[int, int]) -> Path:
    plans = [plan for plan in cache.glob("*.plan")
             if read_plan_metadata(plan).info.working_size == working_size]
    assert len(plans) == 1, plans
    return plans[0]


def test_a_retrained_model_replaces_its_engine(first_run: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """unet-train, export to the same path, run again: one engine per training run piled up in the cache."""
    import shutil

    model = tmp_path / "mine.onnx"
    for name in ("camvid.onnx", "camvid.json"):
        shutil.copy(MODELS_DIR / name, tmp_path / name.replace("camvid", "mine"))
    with Segmenter(model, warm_up=False):
        pass
    graph = onnx.load(str(model))
    graph.doc_string = "retrained"
    onnx.save(graph, str(model))
    capsys.readouterr()
    with Segmenter(model, warm_up=False) as segmenter:
        assert segmenter.backend.name == "tensorrt"
    err = capsys.readouterr().err
    assert "(the cached engine was built from an earlier version of mine.onnx)" in err
    assert "removed 1 cached engine(s)" in err
    assert len(list(first_run.glob("mine-*.plan"))) == 1


def test_two_models_of_one_file_name_in_two_folders_keep_an_engine_each(
        first_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Two robots' models, each `model.onnx` in its own folder, run from that folder (`unet-stream --model
    model.onnx`): the cache took the path as typed for the file, so each start removed the other's engine as "an
    earlier version of model.onnx" and built again (minutes on a Jetson; a --no-build service fell back to the CPU).
    The same file named by its absolute path after a retrain is still the one it replaces."""
    import shutil

    for robot, note in (("a", ""), ("b", "robot b")):
        (tmp_path / robot).mkdir()
        shutil.copy(MODELS_DIR / "camvid.onnx", tmp_path / robot / "model.onnx")
        if note:
            graph = onnx.load(str(tmp_path / robot / "model.onnx"))
            graph.doc_string = note
            onnx.save(graph, str(tmp_path / robot / "model.onnx"))
    for robot in ("a", "b"):
        monkeypatch.chdir(tmp_path / robot)
        with Segmenter("model.onnx", warm_up=False):
            pass
    assert "replaces" not in capsys.readouterr().err
    for robot in ("a", "b"):
        monkeypatch.chdir(tmp_path / robot)
        with Segmenter("model.onnx", warm_up=False, build=False) as segmenter:
            assert segmenter.backend.name == "tensorrt", robot
    assert builds() == 2 and len(list(first_run.glob("model-*.plan"))) == 2
    graph = onnx.load(str(tmp_path / "a" / "model.onnx"))
    graph.doc_string = "robot a, retrained"
    onnx.save(graph, str(tmp_path / "a" / "model.onnx"))
    monkeypatch.chdir(tmp_path)
    with Segmenter(tmp_path / "a" / "model.onnx", warm_up=False):
        pass
    err = capsys.readouterr().err
    assert "(the cached engine was built from an earlier version of model.onnx)" in err
    assert "removed 1 cached engine(s) of model" in err and len(list(first_run.glob("model-*.plan"))) == 2


def _ownership(monkeypatch: pytest.MonkeyPatch, euid: int, owners: dict[Path, tuple[int, int]]) -> None:
    """This process runs as ``euid``; a path's owner is its entry in ``owners`` (root where it has none), and
    os.chown records into it."""
    import unetrt.plan_cache as plan_cache

    monkeypatch.setattr(plan_cache.os, "geteuid", lambda: euid)
    monkeypatch.setattr(plan_cache, "_owner", lambda path: owners.get(Path(path), (0, 0)))
    monkeypatch.setattr(plan_cache.os, "chown", lambda path, uid, gid: owners.__setitem__(Path(path), (uid, gid)))


def test_sudo_keeping_the_users_home_leaves_the_cache_to_the_user(first_run: Path, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """sudo -E (a ROS 2 node needing root) keeps HOME: root's first run made ~/.cache, the cache folder and the
    entry root's, and the user's later starts could cache nothing there (another size, a JetPack upgrade)."""
    home = tmp_path / "home"
    home.mkdir()
    owners = {home: (1000, 1000)}
    _ownership(monkeypatch, 0, owners)
    monkeypatch.delenv("UNETRT_ENGINE_CACHE")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(home))
    with Segmenter("camvid", warm_up=False) as segmenter:
        assert segmenter.backend.name == "tensorrt"
    written = [path for path in home.rglob("*") if "unetrt" in path.parts or path == home / ".cache"]
    assert len([path for path in written if path.suffix == ".plan"]) == 1
    assert {path: owners.get(path) for path in written} == {path: (1000, 1000) for path in written}


def test_a_cache_a_sudo_run_left_to_root_says_how_to_give_it_back(first_run: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import errno

    import unetrt.plan_cache as plan_cache

    home = tmp_path / "home"
    cache = home / ".cache" / "unetrt" / "engines"
    cache.mkdir(parents=True)
    _ownership(monkeypatch, 1000, {home: (1000, 1000)})  # .cache and below: root's

    def refused(path: Path, mode: str = "r") -> object:
        if Path(path).parent == cache:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return open(path, mode)

    monkeypatch.setattr(plan_cache, "open", refused, raising=False)
    monkeypatch.setenv("UNETRT_ENGINE_CACHE", str(cache))
    with Segmenter("camvid", warm_up=False) as segmenter:
        assert segmenter.backend.name == "tensorrt"
    err = capsys.readouterr().err
    assert f"{home / '.cache'} belongs to root (a run with sudo?): sudo chown -R " in err


def test_two_cameras_opening_at_once_build_once_and_the_other_says_it_waits(
        first_run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A robot's first boot: two ROS 2 nodes in one process each open Segmenter("camvid") at the same moment on an
    empty cache. One builds; the other says it waits for that build (not minutes of silence), then loads it."""
    waiting = wait_announced(monkeypatch)
    build = Builder.build_serialized_network

    def held_until_the_other_waits(self: Builder, network: object, config: object) -> object:
        waiting.wait(60)  # should the other never say it waits, the build goes on and the assertions fail
        return build(self, network, config)  # type: ignore[arg-type]

    monkeypatch.setattr(Builder, "build_serialized_network", held_until_the_other_waits)
    start = threading.Barrier(2)
    opened: list[Segmenter] = []

    def camera() -> None:
        start.wait(30)
        opened.append(Segmenter("camvid"))

    threads = [threading.Thread(target=camera) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    try:
        assert len(opened) == 2 and {s.backend.name for s in opened} == {"tensorrt"}
        assert builds() == 1 and opened[0].backend.path == opened[1].backend.path == _only_entry(first_run)
    finally:
        for segmenter in opened:
            segmenter.close()
    err = capsys.readouterr().err
    assert err.count("unetrt: building a TensorRT engine") == 1
    assert err.count("unetrt: another process (or thread) is building the TensorRT engine for camvid") == 1


def test_doctor_with_an_engine_that_cannot_run_here_says_what_is_cached_and_why(
        first_run: Path, gpu: FakeGpu, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A month on: JetPack upgraded TensorRT, the SD card went into an Orin NX, the model was retrained. The doctor
    said "none is cached" each time, with the old engines still there (tens of MB each on an SD card): it names
    each one, why it cannot run here, and whether the next build replaces it or leaves it (with the command that
    removes it)."""
    import shutil

    from unetrt.doctor import main as doctor

    with Segmenter("camvid", warm_up=False):
        pass
    old = _only_entry(first_run)
    install_fake_tensorrt_gpu(monkeypatch, gpu, version="10.4.0")
    capsys.readouterr()
    assert doctor([]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    megabytes = f"{old.stat().st_size / 2**20:.0f} MB"
    assert (f"once its engine is built: none that runs here is cached ({old.name}, {megabytes}: built by TensorRT "
            "10.3.0, this is 10.4.0; the next build replaces it), so its next start builds it") in last, last
    assert builds() == 0 and old.exists()  # the doctor builds nothing (the upgrade's fake counts from 0)

    # The card moved to an Orin NX (8 SMs): the AGX's engine is kept (the AGX may use the card again).
    install_fake_tensorrt_gpu(monkeypatch, FakeGpu(multiprocessors=8), version="10.3.0")
    assert doctor([]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert (f"({old.name}, {megabytes}: built for {gpu.name} (sm_87, 16 SMs), this is {gpu.name} (sm_87, 8 SMs); "
            f"kept beside the new one: rm {old} {old}.json frees it)") in last, last

    # A retrained model exported over the file the engine was built from.
    install_fake_tensorrt_gpu(monkeypatch, gpu, version="10.3.0")
    model = tmp_path / "mine.onnx"
    for name in ("camvid.onnx", "camvid.json"):
        shutil.copy(MODELS_DIR / name, tmp_path / name.replace("camvid", "mine"))
    with Segmenter(model, warm_up=False):
        pass
    mine = next(first_run.glob("mine-*.plan"))
    graph = onnx.load(str(model))
    graph.doc_string = "retrained"
    onnx.save(graph, str(model))
    capsys.readouterr()
    assert doctor(["--model", str(model)]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert f"({mine.name}, " in last and ": built from an earlier version of mine.onnx; the next build " \
                                         "replaces it)" in last, last


def test_doctor_with_a_damaged_engine_names_it(first_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A power cut while another tool rewrote the plan: the entry is there but its bytes do not match."""
    from unetrt.doctor import main as doctor

    with Segmenter("camvid", warm_up=False):
        pass
    plan = _only_entry(first_run)
    plan.write_bytes(plan.read_bytes()[:100])
    capsys.readouterr()
    assert doctor([]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert (f"once its engine is built: the cached {plan.name} cannot be used (its plan is truncated or replaced "
            "(checksum mismatch)); the next build replaces it, so its next start builds it") in last, last


def test_doctor_says_how_much_the_engine_cache_holds(first_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Engines of other precisions and working sizes are kept (another command may use them), each tens of MB on an
    SD card, and nothing said how many there were: the doctor's cache line counts them and their size."""
    from unetrt.doctor import main as doctor

    assert doctor(["--device", "cpu"]) == 0
    assert f"engine cache: {first_run}: empty (set UNETRT_ENGINE_CACHE to move it)" in capsys.readouterr().out
    with Segmenter("camvid", warm_up=False), Segmenter("camvid", warm_up=False, precision="fp32"):
        pass
    size = sum(path.stat().st_size for path in first_run.iterdir() if path.is_file())
    assert doctor(["--device", "cpu"]) == 0
    assert (f"engine cache: {first_run}: 2 engines, {size / 2**20:.0f} MB (set UNETRT_ENGINE_CACHE to move it)"
            in capsys.readouterr().out.splitlines())


def test_a_first_build_out_of_memory_falls_back_in_one_line_naming_the_fix(
        first_run: Path, gpu: FakeGpu, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """The first start on an 8 GB Orin Nano busy with other programs: the build runs out of memory ([BUILD-MEMORY]);
    the stream runs on the CPU, and its one line says so, why, and what fixes it; nothing is cached, and the next
    start, with the memory free again, builds the engine."""
    gpu.memory_bytes = 64 << 20
    monkeypatch.setattr(Builder, "build_memory", 256 << 20)
    with Segmenter("camvid", warm_up=False) as segmenter:
        assert segmenter.backend.name in ("openvino", "onnxruntime")
    notes = [line for line in capsys.readouterr().err.splitlines() if "no TensorRT engine" in line]
    assert len(notes) == 1 and "close the programs using the GPU or build with a smaller workspace" in notes[0], notes
    assert notes[0].endswith(f"; running {segmenter.backend.name} instead"), notes
    assert not list(first_run.glob("*.plan"))
    gpu.memory_bytes = None
    with Segmenter("camvid", warm_up=False) as segmenter:
        assert segmenter.backend.name == "tensorrt"


def test_a_first_build_that_falls_back_says_so_to_the_live_view(first_run: Path, gpu: FakeGpu,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A live view watching the first build of an Orin Nano short of memory: its page went on saying 'building a
    TensorRT engine' while the stream opened the CPU fallback; it gets the fallback's line, as stderr does."""
    from unetrt.build_watch import BuildStep, watching_builds

    class Page:
        def __init__(self) -> None:
            self.notes: list[str] = []

        def build_note(self, text: str) -> None:
            self.notes.append(text)

        def build_step(self, step: BuildStep) -> None:
            pass

    gpu.memory_bytes = 64 << 20
    monkeypatch.setattr(Builder, "build_memory", 256 << 20)
    page = Page()
    with watching_builds(page), Segmenter("camvid", warm_up=False) as segmenter:
        fallback = segmenter.backend.name
    assert page.notes[0].startswith("building a TensorRT engine for camvid FP16"), page.notes
    assert page.notes[-1].startswith("no TensorRT engine (") and page.notes[-1].endswith(f"; running {fallback} "
                                                                                          "instead"), page.notes


def test_no_build_after_a_tensorrt_upgrade_says_why_the_engine_is_not_usable(
        first_run: Path, gpu: FakeGpu, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A service started with --no-build after a JetPack upgrade: its one line said "no engine is cached" with the
    old engine in the cache; it says the engine was built by the older TensorRT."""
    from unetrt.stream.cli import main

    with Segmenter("camvid", warm_up=False):
        pass
    install_fake_tensorrt_gpu(monkeypatch, gpu, version="10.4.0")
    capsys.readouterr()
    assert main(["sample", str(first_run.parent / "out.mp4"), "--max-frames", "2", "--headless", "--backend",
                 "tensorrt", "--no-build"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "(the cached engine was built by TensorRT 10.3.0, this is 10.4.0); run once " \
                               "without --no-build" in lines[0], lines


def test_doctor_device_cuda_before_the_first_build_reports(first_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m unetrt.doctor --device cuda` (or cuda:1) before the engine is built ended in exit 2, "this
    onnxruntime has no CUDA provider", with no report: naming what --no-build runs meanwhile opened ONNX Runtime on
    the GPU, which a Jetson has no provider for. The report says --no-build stops, and why."""
    from unetrt.doctor import main as doctor

    assert doctor(["--device", "cuda"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("unet-stream --model camvid runs on: tensorrt fp16 once its engine is built: none is "
                           "cached, so its first start builds it"), last
    assert last.endswith("; until then, --no-build stops: device 'cuda' asked, but this onnxruntime has no CUDA "
                         "provider; install onnxruntime-gpu"), last

def test_the_doctor_hashes_the_model_file_once(first_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The doctor before the first build hashed the ONNX file (tens of MB, on an SD card) for the cache key and again
    for its note on what the cache holds."""
    import unetrt.plan_cache as plan_cache

    hashed: list[Path] = []
    real = plan_cache.file_sha256

    def counted(path: str | Path) -> str:
        hashed.append(Path(path))
        return real(path)

    monkeypatch.setattr(plan_cache, "file_sha256", counted)
    from unetrt.doctor import main as doctor

    assert doctor([]) == 0
    assert [path.name for path in hashed] == ["camvid.onnx"]


def _pycuda_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The doctor finds pycuda's distribution (the fake has none) and names its version."""
    import unetrt.doctor as doctor_module

    real = doctor_module._version
    monkeypatch.setattr(doctor_module, "_version", lambda name: "2024.1.2" if name == "pycuda" else real(name))


def test_the_doctor_asks_the_gpu_list_once(first_run: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    """The report before the first build asked every GPU's identity for the TensorRT line's count and again for its
    note on what the cache holds: two ways to one answer, which two GPUs' states could make disagree."""
    import unetrt.doctor as doctor_module

    _pycuda_installed(monkeypatch)
    asked: list[int] = []
    real = doctor_module.machine_gpus

    def counted() -> list[Any]:
        asked.append(1)
        return real()

    monkeypatch.setattr(doctor_module, "machine_gpus", counted)
    assert doctor_module.main([]) == 0
    assert "runs on: tensorrt fp16 once its engine is built: none is cached" in capsys.readouterr().out
    assert len(asked) == 1


DESKTOP = FakeGpu(name="NVIDIA GeForce RTX 4090", compute_capability=(8, 9), multiprocessors=128, integrated=False,
                  count=2, kinds={1: ("NVIDIA RTX A4000", (8, 6), 48)})


@pytest.mark.parametrize("gpu", [DESKTOP], ids=["sm89-and-sm86"])
def test_a_desktop_with_two_kinds_of_gpu_keeps_an_engine_for_each(first_run: Path, gpu: FakeGpu,
                                                                   monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """An x86 workstation, device 0 sm_89 and device 1 sm_86: each GPU builds and then loads its own engine (a plan
    of one does not run on the other), and the doctor names the GPU it reports on, and does not offer to remove the
    other GPU's engine as one that cannot run here."""
    from unetrt.backends.tensorrt import TensorRTBackend
    from unetrt.doctor import main as doctor
    from unetrt.plan_metadata import PlanCompatibilityError

    _pycuda_installed(monkeypatch)
    for _ in range(2):
        for device in ("cuda:1", "cuda:0"):
            with Segmenter("camvid", device=device, warm_up=False) as segmenter:
                assert segmenter.backend.device.startswith(f"{device} (")
    assert builds() == 2 and Builder.devices == [1, 0]
    entries = {read_plan_metadata(plan).gpu.compute_capability: plan for plan in first_run.glob("*.plan")}
    assert sorted(entries) == [(8, 6), (8, 9)]
    with pytest.raises(PlanCompatibilityError, match="built for NVIDIA GeForce RTX 4090"):
        TensorRTBackend(entries[(8, 9)], device="cuda:1")
    capsys.readouterr()
    assert doctor(["--device", "cuda:1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "GPU 1 of 2: NVIDIA RTX A4000 (sm_86, 48 SMs)" in lines[2], lines[2]
    assert lines[-1].endswith("runs on: tensorrt fp16 cuda:1 (NVIDIA RTX A4000)")
    for path in (entries[(8, 6)], entries[(8, 6)].with_suffix(".plan.json")):
        path.unlink()
    assert doctor(["--device", "cuda:1"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert (f"({entries[(8, 9)].name}, " in last and "; the engine of cuda:0 on this machine, kept)" in last
            and " rm " not in last), last


def test_the_doctor_says_cuda_visible_devices_renumbered_the_gpus(first_run: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from unetrt.doctor import main as doctor

    _pycuda_installed(monkeypatch)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert doctor(["--device", "cpu"]) == 0
    assert ", GPU 0 (CUDA_VISIBLE_DEVICES=1): Orin (fake) (sm_87, 16 SMs)" in capsys.readouterr().out



@pytest.mark.parametrize("gpu", [DESKTOP], ids=["sm89-and-sm86"])
def test_the_doctor_on_a_gpu_the_machine_lacks_is_one_line(first_run: Path, gpu: FakeGpu,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    from unetrt.doctor import main as doctor

    _pycuda_installed(monkeypatch)
    assert doctor(["--device", "cuda:2"]) == 2
    assert capsys.readouterr().err == ("error: CUDA device 2 does not exist; this machine has 2 CUDA device(s)\n")


def test_a_gpu_the_machine_lacks_is_one_line_for_a_stream_and_a_segmenter_too(
        first_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--device cuda:1` on an Orin (one GPU; a desktop's config copied over): the automatic choice took the missing
    device for TensorRT's failure, said it ran ONNX Runtime instead, and then stopped on 'this onnxruntime has no
    CUDA provider; install onnxruntime-gpu', a fix that does not exist on a Jetson. It is the caller's mistake,
    whatever runs the model: one line naming the devices there are, as the doctor says it."""
    from unetrt.stream.cli import main as stream

    line = "CUDA device 1 does not exist; this machine has 1 CUDA device(s)"
    assert stream(["sample", str(tmp_path / "out.mp4"), "--device", "cuda:1", "--headless"]) == 2
    assert capsys.readouterr().err == f"error: {line}\n"
    with pytest.raises(ValueError, match=re.escape(line)):
        Segmenter("camvid", device="cuda:1")
    assert capsys.readouterr().err == "" and builds() == 0


def test_a_plan_built_on_the_desktop_is_refused_naming_the_rebuild_from_the_model_copied_beside_it(
        first_run: Path, gpu: FakeGpu, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A user builds `mine.plan` on the desktop (TensorRT 11, an RTX GPU), copies it with its `.plan.json` and
    `mine.onnx` to the Jetson and streams it. TensorRT runs a plan only with the TensorRT and the GPU architecture
    that built it (TensorRT Support Matrix, "Engine Portability"), so it is refused in one line, before TensorRT sees
    it; but the rebuild command that line gave named the desktop's path of the model, which the Jetson does not have.
    It now names the copy beside the plan, and that command builds the plan that runs."""
    import shutil

    from unetrt.export.tensorrt import main as unet_build
    from unetrt.stream.cli import main as stream

    desktop, jetson = tmp_path / "desktop" / "runs", tmp_path / "jetson"
    desktop.mkdir(parents=True)
    jetson.mkdir()
    shutil.copy(MODELS_DIR / "camvid.onnx", desktop / "mine.onnx")
    install_fake_tensorrt_gpu(monkeypatch, FakeGpu(name="NVIDIA GeForce RTX 4090", compute_capability=(8, 9),
                                                   multiprocessors=128, integrated=False), version="11.4.1")
    assert unet_build([str(desktop / "mine.onnx"), "-o", str(desktop / "mine.plan"), "--precision", "fp16"]) == 0
    for name in ("mine.plan", "mine.plan.json", "mine.onnx"):
        shutil.copy(desktop / name, jetson / name)
    shutil.rmtree(tmp_path / "desktop")
    install_fake_tensorrt_gpu(monkeypatch, gpu)
    monkeypatch.chdir(jetson)
    capsys.readouterr()
    with pytest.raises(ValueError) as refused:
        Segmenter("mine.plan", warm_up=False)
    line = str(refused.value)
    assert "\n" not in line
    assert "TensorRT 11.4.1 built it, this machine has TensorRT 10.3.0" in line
    assert "it was built for NVIDIA GeForce RTX 4090 (sm_89, 128 SMs)" in line
    command = line.split("rebuild it on this machine with: ")[1]
    assert command.startswith("unet-build mine.onnx -o mine.plan "), command
    assert stream(["sample", str(tmp_path / "out.mp4"), "--model", "mine.plan", "--headless"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unet-build mine.onnx -o mine.plan " in err and "Traceback" not in err
    assert unet_build(shlex.split(command)[1:]) == 0
    with Segmenter("mine.plan", warm_up=False) as segmenter:
        assert (segmenter.backend.name, segmenter.backend.precision) == ("tensorrt", "fp16")


def test_a_plan_whose_model_was_retrained_since_its_build_says_so_and_names_the_rebuild(
        first_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A user builds `mine.plan` with unet-build on the Jetson, retrains, copies the new `mine.onnx` over the old one
    and starts the stream with the plan again. The plan runs the network it was built from (the plan is what was
    asked for), but nothing said the masks were the old model's. Now a warning names it and the rebuild; a plan whose
    metadata went missing names the model beside it in its rebuild line instead of MODEL.onnx."""
    import shutil
    import warnings

    from unetrt.export.tensorrt import main as unet_build

    shutil.copy(MODELS_DIR / "camvid.onnx", tmp_path / "mine.onnx")
    monkeypatch.chdir(tmp_path)
    assert unet_build(["mine.onnx", "-o", "mine.plan"]) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Segmenter("mine.plan", warm_up=False).close()
    shutil.copy(MODELS_DIR / "isbi.onnx", tmp_path / "mine.onnx")  # the retrained model, copied over
    with pytest.warns(RuntimeWarning) as caught:
        Segmenter("mine.plan", warm_up=False).close()
    (line,) = [str(warning.message) for warning in caught if "changed since" in str(warning.message)]
    assert "'mine.plan' runs the network mine.onnx held when the plan was built" in line
    assert "rebuild with: unet-build mine.onnx -o mine.plan " in line
    (tmp_path / "mine.plan.json").unlink()
    capsys.readouterr()
    with pytest.raises(FileNotFoundError, match=r"rebuild with: unet-build mine\.onnx -o mine\.plan$"):
        Segmenter("mine.plan", warm_up=False)


@pytest.mark.parametrize("beside", [None, "camvid.int8.onnx", "camvid.int8.tensorrt.onnx"],
                         ids=["nothing-beside", "cpu-layout-beside", "tensorrt-layout-beside"])
def test_int8_of_a_float_model_of_ones_own_names_the_file_an_int8_engine_is_built_from(
        beside: str | None, first_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`unet-stream --model mine.onnx --precision int8` on a Jetson: TensorRT builds INT8 only from a calibrated QDQ
    model in its symmetric layout, which a float model is not. The line said to write one "from unet-export --int8",
    whose default is the CPU layout TensorRT refuses, and named no file beside the model. It now names the export with
    --int8-target tensorrt and what calibration needs, or the INT8 file beside the model (a CPU-layout one as such)."""
    import shutil

    from unetrt.export.tensorrt import main as unet_build
    from unetrt.stream.cli import main as stream

    shutil.copy(MODELS_DIR / "camvid.onnx", tmp_path / "mine.onnx")
    if beside is not None:
        shutil.copy(MODELS_DIR / beside, tmp_path / "mine.int8.onnx")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError) as refused:
        Segmenter("mine.onnx", precision="int8", warm_up=False)
    line = str(refused.value)
    assert "\n" not in line and "'mine.onnx'" in line, line
    if beside is None:
        assert ("unet-export CHECKPOINT -o mine.onnx --precision int8 --int8-target tensorrt --calibration FRAMES "
                "--check-labels LABELS") in line and "then run mine.int8.onnx" in line, line
    elif beside == "camvid.int8.onnx":
        assert "mine.int8.onnx beside it is in the CPU layout" in line and "--int8-target tensorrt" in line, line
    else:
        assert "run mine.int8.onnx, beside it" in line, line
    assert stream(["sample", "out.mp4", "--model", "mine.onnx", "--precision", "int8", "--headless"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and line in err
    assert unet_build(["mine.onnx", "-o", "mine.plan", "--precision", "int8"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ("--int8-target tensorrt" in err if beside != "camvid.int8.tensorrt.onnx" else
                                     "mine.int8.onnx, beside it" in err), err
    assert builds() == 0
    if beside == "camvid.int8.tensorrt.onnx":
        with Segmenter("mine.int8.onnx", warm_up=False) as segmenter:
            assert (segmenter.backend.name, segmenter.backend.precision) == ("tensorrt", "int8")


def test_an_int8_model_of_ones_own_in_the_cpu_layout_runs_on_the_cpu_after_one_line_and_the_doctor_says_so(
        first_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`unet-export --precision int8` without `--int8-target tensorrt` writes the CPU layout, which TensorRT refuses.
    docs/jetson.md: such a file is refused in one line naming --int8-target tensorrt, and the automatic choice runs
    ONNX Runtime INT8 on the CPU. Before that line came "building a TensorRT engine ... the first run on a Jetson
    takes minutes", and the doctor said a stream "runs on: tensorrt int8 once its engine is built ... its first start
    builds it", where every start runs on the CPU: the layout is now checked with the cache key, before the build."""
    import shutil

    from unetrt.doctor import main as doctor

    shutil.copy(MODELS_DIR / "camvid.int8.onnx", tmp_path / "mine.int8.onnx")
    monkeypatch.chdir(tmp_path)
    with Segmenter("mine.int8.onnx", warm_up=False) as segmenter:
        assert (segmenter.backend.name, segmenter.backend.precision) == ("onnxruntime", "int8")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "building" not in err, err
    assert err.startswith("unetrt: no TensorRT engine ('mine.int8.onnx' quantizes activations to uint8 with zero "
                          "points") and "--int8-target tensorrt" in err, err
    assert doctor(["--model", "mine.int8.onnx"]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last == "unet-stream --model mine.int8.onnx runs on: onnxruntime int8 cpu", last
    assert builds() == 0


def test_unet_stream_of_a_model_overflowing_fp16_stops_naming_fp32_and_runs_with_it(
        first_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """docs/jetson.md, the user's own model that overflows FP16 (its activations pass 65504 between two layers,
    finite at FP32): unet-stream builds the default FP16 engine, stops at the first frame that overflows it with the
    one line naming the frame, FP16 and --precision fp32, exit 2; rerun with --precision fp32, it builds the FP32
    engine beside the FP16 one and streams every frame."""
    import cv2
    from nonfinite_models import write_fp16_overflow_onnx

    from unetrt.stream.cli import main

    model = write_fp16_overflow_onnx(tmp_path / "mine.onnx")
    folder = tmp_path / "frames"
    folder.mkdir()
    for index in range(6):
        frame = np.full((48, 64, 3), 150, np.uint8)
        if index >= 4:
            frame[10:20, 10:20, 2] = 255  # 100 pixels whose red channel passes 65504 once scaled by 200 twice
        cv2.imwrite(str(folder / f"{index:03d}.png"), frame)
    argv = [str(folder), str(tmp_path / "out.mp4"), "--model", str(model), "--headless"]
    assert main(argv) == 2  # the four frames before it stay a finished video
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error") or "Trace" in line]
    assert len(err) == 1 and err[0].startswith("error: the network gave NaN or infinite scores at 100 of 3072 pixels "
                                               "of frame 4 of the input (the network ran at FP16"), err
    assert "--precision fp32" in err[0]
    stats = tmp_path / "stats.json"
    assert main([*argv, "--overwrite", "--precision", "fp32", "--stats", str(stats)]) == 0
    summary = json.loads(stats.read_text())
    assert (summary["runtime"]["backend"], summary["runtime"]["precision"]) == ("tensorrt", "fp32")
    assert str(summary["runtime"]["device"]).startswith("cuda:0") and summary["written"] == 6
    assert builds() == 2 and len(list(first_run.glob("*.plan"))) == 2


def test_a_plan_built_from_a_model_named_as_typed_and_opened_from_another_folder_is_not_taken_for_changed(
        first_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Robot a's `mine.plan`, built in its folder with `unet-build mine.onnx -o mine.plan` (the model recorded as
    typed), opened from robot b's folder, which holds a `mine.onnx` of its own: the plan warned that its model had
    changed and named a rebuild from b's file, which would have put b's network into a's plan. The plan's model is
    the one beside it: unchanged, no warning; retrained, the rebuild names it."""
    import shutil
    import warnings

    from unetrt.export.tensorrt import main as unet_build

    for robot, model in (("a", "camvid.onnx"), ("b", "isbi.onnx")):
        (tmp_path / robot).mkdir()
        shutil.copy(MODELS_DIR / model, tmp_path / robot / "mine.onnx")
    monkeypatch.chdir(tmp_path / "a")
    assert unet_build(["mine.onnx", "-o", "mine.plan"]) == 0
    monkeypatch.chdir(tmp_path / "b")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Segmenter("../a/mine.plan", warm_up=False).close()
    shutil.copy(MODELS_DIR / "isbi.onnx", tmp_path / "a" / "mine.onnx")  # a's model retrained
    with pytest.warns(RuntimeWarning, match=r"rebuild with: unet-build \.\./a/mine\.onnx -o \.\./a/mine\.plan "):
        Segmenter("../a/mine.plan", warm_up=False).close()
