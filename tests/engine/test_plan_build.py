"""The builder core (unetrt.plan_build, unet-build) against the rule-keeping fake TensorRT builder."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import write_unparsable_onnx
from fakes.cuda import FakeGpu
from fakes.tensorrt_builder import Builder
from fakes.trt_plan import deserialize
from plan_fixtures import builds, install_fake_tensorrt_gpu, signal_during_build

from unetrt.export.tensorrt import build_parser, main
from unetrt.plan_build import BuildOptions, build_engine, default_workspace_mib
from unetrt.plan_metadata import metadata_path, read_plan_metadata

pytestmark = pytest.mark.gpu_contract


@pytest.fixture
def fake_trt(monkeypatch: pytest.MonkeyPatch) -> FakeGpu:
    return install_fake_tensorrt_gpu(monkeypatch)[1]


def test_fp16_build_writes_plan_and_metadata(fake_trt: FakeGpu, tiny_model_files: dict[str, Path],
                                             tmp_path: Path) -> None:
    plan = tmp_path / "tiny.plan"
    metadata = build_engine(tiny_model_files["onnx"], plan, BuildOptions(fp16=True, progress=False))
    assert read_plan_metadata(plan) == metadata
    fake = deserialize(plan.read_bytes())
    assert fake is not None and fake.precision == "fp16" and fake.tensorrt_version == "10.3.0"
    assert fake.head_precision == "fp32"  # the layer writing the logits is pinned to FP32, and TensorRT obeys
    assert (metadata.gpu.name, metadata.precision) == (fake_trt.name, "fp16")
    assert metadata.plan_sha256 is not None and metadata.source_sha256 is not None
    assert builds() == 1
    # Finding 8 (FP16 input): an FP16 plan takes half input, so no reformat layer; the logits stay FP32.
    assert (metadata.input_dtype, metadata.output_dtype) == ("float16", "float32")
    assert (fake.input_dtype, fake.output_dtype) == ("float16", "float32")
    fp32 = build_engine(tiny_model_files["onnx"], plan, BuildOptions(progress=False))
    assert (fp32.precision, fp32.input_dtype) == ("fp32", "float32")


def test_foreign_timing_cache_warns_and_starts_fresh(fake_trt: FakeGpu, tiny_model_files: dict[str, Path],
                                                     tmp_path: Path) -> None:
    # Finding 4: set_timing_cache refuses a cache from another device (returns False); the old code ignored that
    # and then failed on get_timing_cache() (None) after the build.
    # An AGX Orin's cache given on an Orin Nano (8 SMs) is another device's too: both are "Orin", sm_87.
    here = f"{fake_trt.name}/sm_87/{fake_trt.multiprocessors}sm"
    for foreign in ("NVIDIA A100/sm_80/108sm", f"{fake_trt.name}/sm_87/{fake_trt.multiprocessors * 2}sm"):
        cache = tmp_path / "trt.cache"
        cache.write_text(json.dumps({"magic": "unetrt-fake-timing-cache", "tensorrt_version": "10.3.0",
                                     "device": foreign, "entries": 40}))
        with pytest.warns(RuntimeWarning, match="another GPU or TensorRT version"):
            build_engine(tiny_model_files["onnx"], tmp_path / "tiny.plan",
                         BuildOptions(fp16=True, timing_cache=cache, progress=False))
        rewritten = json.loads(cache.read_text())
        assert rewritten["device"] == here and rewritten["entries"] > 0


def test_damaged_timing_cache_warns_and_starts_fresh(fake_trt: FakeGpu, tiny_model_files: dict[str, Path],
                                                     tmp_path: Path) -> None:
    # A cache file cut short by a full disk: create_timing_cache gives None, and passing that on to
    # set_timing_cache was a TypeError out of `unet-build --timing-cache`.
    cache = tmp_path / "trt.cache"
    cache.write_bytes(b'{"magic": "unetrt-fake-timing-ca')
    with pytest.warns(RuntimeWarning, match="cannot be read \\(damaged, or not a timing cache\\)"):
        build_engine(tiny_model_files["onnx"], tmp_path / "tiny.plan",
                     BuildOptions(fp16=True, timing_cache=cache, progress=False))
    rewritten = json.loads(cache.read_text())
    assert rewritten["device"] == f"{fake_trt.name}/sm_87/{fake_trt.multiprocessors}sm" and rewritten["entries"] > 0


def test_the_timing_cache_warning_names_the_line_that_called_build_engine(
        fake_trt: FakeGpu, tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    """The build runs on a thread of its own (so that Ctrl-C stops it), where no frame is the caller's: the warning
    named unetrt's interruptible.py, for every caller, so the default filter showed it once a process."""
    cache = tmp_path / "trt.cache"
    cache.write_bytes(b'{"magic": "unetrt-fake-timing-ca')
    options = BuildOptions(fp16=True, timing_cache=cache, progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = sys._getframe().f_lineno + 1
        build_engine(tiny_model_files["onnx"], tmp_path / "tiny.plan", options)
    said = [(w.filename, w.lineno) for w in caught if "timing cache" in str(w.message)]
    assert said == [(__file__, line)], said


def test_own_timing_cache_is_reused_without_warning(fake_trt: FakeGpu, tiny_model_files: dict[str, Path],
                                                    tmp_path: Path) -> None:
    cache = tmp_path / "trt.cache"
    options = BuildOptions(fp16=True, timing_cache=cache, progress=False)
    build_engine(tiny_model_files["onnx"], tmp_path / "a.plan", options)
    first = json.loads(cache.read_text())["entries"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_engine(tiny_model_files["onnx"], tmp_path / "b.plan", options)
    assert json.loads(cache.read_text())["entries"] == 2 * first


def test_metadata_is_in_place_before_the_plan(fake_trt: FakeGpu, tiny_model_files: dict[str, Path],
                                              tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Finding 4: the old code wrote the plan, then its metadata; a crash in between left a plan the backend
    # refuses. Now a crash while the plan is renamed into place leaves the metadata and no plan.
    plan = tmp_path / "tiny.plan"
    real_replace = os.replace

    def crash_on_plan(source: str | Path, target: str | Path) -> None:
        if str(target).endswith(".plan"):
            raise OSError("disk full")
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", crash_on_plan)
    with pytest.raises(ValueError, match=r"could not be written to .*tiny.plan \(disk full\)"):
        build_engine(tiny_model_files["onnx"], plan, BuildOptions(fp16=True, progress=False))
    assert metadata_path(plan).is_file() and not plan.exists()
    assert [p.name for p in tmp_path.iterdir()] == [metadata_path(plan).name], "no temporary file is left"


@pytest.mark.parametrize("integrated, memory, expected", [(True, 8 << 30, 1024), (True, 2 << 30, 512),
                                                          (False, 80 << 30, None)])
def test_workspace_is_capped_on_integrated_gpus(integrated: bool, memory: int, expected: int | None,
                                                monkeypatch: pytest.MonkeyPatch, tiny_model_files: dict[str, Path],
                                                tmp_path: Path) -> None:
    # Finding 6: TensorRT's default workspace limit is the device memory, on a Jetson the whole system memory.
    install_fake_tensorrt_gpu(monkeypatch, FakeGpu(integrated=integrated), total_memory=memory)
    metadata = build_engine(tiny_model_files["onnx"], tmp_path / "tiny.plan", BuildOptions(fp16=True, progress=False))
    assert metadata.build_options["workspace_mib"] == expected == default_workspace_mib(integrated, memory)
    asked = build_engine(tiny_model_files["onnx"], tmp_path / "tiny.plan",
                         BuildOptions(fp16=True, workspace_mib=300, progress=False))
    assert asked.build_options["workspace_mib"] == 300
    # What TensorRT itself was told, not only what the metadata records: left unset, its workspace is the whole
    # memory a Jetson shares with everything else ([WORKSPACE]). In bytes: 1024 MiB = 1024 * 2**20 = 1073741824.
    assert Builder.workspaces == [None if expected is None else expected * 2**20, 300 * 2**20]


def test_the_plan_records_its_model_by_its_absolute_path(fake_trt: FakeGpu, tiny_model_files: dict[str, Path],
                                                         tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`unet-build models/tiny.onnx` from a folder: the metadata names the model wherever the plan is opened from
    (recorded as typed, a reader in another folder could only guess which `models/tiny.onnx` it was)."""
    import shutil

    (tmp_path / "models").mkdir()
    shutil.copy(tiny_model_files["onnx"], tmp_path / "models" / "tiny.onnx")
    monkeypatch.chdir(tmp_path)
    assert main(["models/tiny.onnx", "-o", "tiny.plan", "--no-progress"]) == 0
    metadata = read_plan_metadata(tmp_path / "tiny.plan")
    assert metadata.source == str(tmp_path / "models" / "tiny.onnx")
    monkeypatch.chdir(tmp_path / "models")
    assert metadata.source_file(tmp_path / "tiny.plan") == tmp_path / "models" / "tiny.onnx"


def test_dla_core_with_gpu_fallback_is_recorded(fake_trt: FakeGpu, tiny_model_files: dict[str, Path],
                                                tmp_path: Path) -> None:
    # Finding 7: --dla-core N, GPU fallback, the core in the plan's JSON and rebuild command.
    plan = tmp_path / "tiny.plan"
    metadata = build_engine(tiny_model_files["onnx"], plan, BuildOptions(fp16=True, dla_core=1, progress=False))
    fake = deserialize(plan.read_bytes())
    assert fake is not None and fake.dla_core == 1
    # A DLA takes one fixed shape: with the default range every layer had gone to the GPU under a DLA label.
    assert fake.profile[0] == fake.profile[1] == fake.profile[2] and metadata.profile.max_batch == 1
    assert json.loads(metadata_path(plan).read_text())["dla_core"] == 1
    assert "GPU_FALLBACK" in metadata.build_options["builder_flags"]
    args = build_parser().parse_args(shlex.split(metadata.rebuild_command(plan))[1:])
    assert args.dla_core == 1 and args.fp16
    from unetrt.backends.tensorrt import TensorRTBackend

    with TensorRTBackend(plan) as backend:  # what runs it says so wherever the device is shown (bench, stream)
        assert backend.device == "cuda:0 (Orin (fake), DLA core 1)"
        assert backend._held.runtime.DLA_core == 1  # type: ignore[attr-defined]


@pytest.mark.parametrize("options, message", [
    (BuildOptions(fp16=True, dla_core=2), "has 2 DLA core"),
    (BuildOptions(dla_core=0), "FP16 and INT8 layers only"),
])
def test_impossible_dla_requests(options: BuildOptions, message: str, fake_trt: FakeGpu,
                                 tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=message):
        build_engine(tiny_model_files["onnx"], tmp_path / "tiny.plan", options)
    assert not any(tmp_path.iterdir())


def test_a_dla_is_not_asked_for_a_qdq_graph_on_tensorrt_10(fake_trt: FakeGpu, tiny_model_files: dict[str, Path],
                                                           tmp_path: Path) -> None:
    """TensorRT 10's DLA takes implicit quantization (calibration scales) only, not a graph's Q/DQ nodes: with GPU
    fallback a QDQ graph's layers ran on the GPU under the DLA's name. Refused before the build, naming FP16."""
    from unetrt.export.quantize import quantize_onnx

    batches = [np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)]
    qdq = quantize_onnx(tiny_model_files["onnx"], tmp_path / "tiny.int8.onnx", batches, "minmax", "tensorrt")
    plan = tmp_path / "tiny.plan"
    with pytest.raises(ValueError, match=r"DLA .*Q/DQ.*--precision fp16"):
        build_engine(qdq, plan, BuildOptions(int8=True, dla_core=0, progress=False))
    assert not plan.exists() and builds() == 0
    # The GPU alone still builds it.
    assert build_engine(qdq, plan, BuildOptions(int8=True, progress=False)).precision == "int8"


@pytest.mark.parametrize("version", ["10.8.0", "10.13.3", "11.0.0", "11.4.0"])
def test_a_dla_is_refused_where_tensorrt_has_no_dla_support(version: str, monkeypatch: pytest.MonkeyPatch,
                                                            tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    """NVIDIA: "TensorRT 10.7 was the last 10.x release that supported DLA"; "DLA was unavailable in TensorRT 11.0
    through 11.3 ... TensorRT 11.4.0 supported DLA only on Windows on ARM" (Working with DLA, TensorRT 11.4.1)."""
    install_fake_tensorrt_gpu(monkeypatch, version=version)
    plan = tmp_path / "tiny.plan"
    with pytest.raises(ValueError, match=rf"TensorRT {version} has no DLA support"):
        build_engine(tiny_model_files["onnx"], plan, BuildOptions(fp16=True, dla_core=0, progress=False))
    assert not plan.exists() and builds() == 0


@pytest.mark.parametrize("version, fix", [("10.3.0", "add --fp16 to --dla-core"),
                                          ("11.4.1", "add --fp16 (or --int8 with a QDQ model) to --dla-core")])
def test_an_fp32_dla_request_names_only_a_precision_that_dla_runs(version: str, fix: str,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  tiny_model_files: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    """On TensorRT 10 (JetPack 6) the line offered --int8 with a QDQ model, which is then refused for the DLA."""
    pytest.importorskip("onnxconverter_common")
    install_fake_tensorrt_gpu(monkeypatch, version=version)
    with pytest.raises(ValueError) as refused:
        build_engine(tiny_model_files["onnx"], tmp_path / "tiny.plan", BuildOptions(dla_core=0, progress=False))
    assert str(refused.value) == f"a DLA runs FP16 and INT8 layers only; {fix}"
    assert builds() == 0


@pytest.mark.parametrize("version", ["10.3.0", "10.7.0", "11.4.1"])
def test_a_dla_is_used_where_tensorrt_supports_it(version: str, monkeypatch: pytest.MonkeyPatch,
                                                  tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("onnxconverter_common")
    install_fake_tensorrt_gpu(monkeypatch, version=version)
    plan = tmp_path / "tiny.plan"
    build_engine(tiny_model_files["onnx"], plan, BuildOptions(fp16=True, dla_core=0, progress=False))
    fake = deserialize(plan.read_bytes())
    assert fake is not None and fake.dla_core == 0


def test_profile_is_fixed_at_the_working_size(fake_trt: FakeGpu, tiny_model_files: dict[str, Path],
                                              tmp_path: Path) -> None:
    # Finding 8 (profile part): frames reach the network at the working size only.
    plan = tmp_path / "tiny.plan"
    metadata = build_engine(tiny_model_files["onnx"], plan,
                            BuildOptions(fp16=True, working_size=(64, 48), progress=False))
    assert metadata.profile.min[1:] == metadata.profile.opt[1:] == metadata.profile.max[1:] == (3, 48, 64)
    fake = deserialize(plan.read_bytes())
    assert fake is not None and fake.profile[0][2:] == fake.profile[2][2:] == (48, 64)
    wider = build_engine(tiny_model_files["onnx"], plan, BuildOptions(
        fp16=True, working_size=(64, 48), min_shape=(1, 3, 16, 16), max_shape=(2, 3, 96, 96), progress=False))
    assert (wider.profile.min, wider.profile.max) == ((1, 3, 16, 16), (2, 3, 96, 96))


def test_the_engine_is_tuned_for_the_shapes_its_metadata_records(fake_trt: FakeGpu, tiny_model_files: dict[str, Path],
                                                                 tmp_path: Path) -> None:
    """The optimisation profile given to TensorRT is the one the metadata records, opt included: TensorRT picks its
    tactics for opt ("opt: the dimensions to use for autotuning", ``IOptimizationProfile.set_shape``), so an engine
    given max for opt is tuned for batch 4 where the Segmenter runs batch 1 (the default's opt), and the metadata
    and the doctor would say otherwise (only min and max were checked: opt could be max and every test passed)."""
    plan = tmp_path / "tiny.plan"
    for options in (BuildOptions(fp16=True, working_size=(64, 48), progress=False),
                    BuildOptions(min_shape=(1, 3, 16, 16), opt_shape=(1, 3, 64, 64), max_shape=(2, 3, 96, 96),
                                 progress=False)):
        metadata = build_engine(tiny_model_files["onnx"], plan, options)
        fake = deserialize(plan.read_bytes())
        assert fake is not None
        assert fake.profile == (metadata.profile.min, metadata.profile.opt, metadata.profile.max)
        assert metadata.profile.opt[0] == 1 and metadata.profile.opt != metadata.profile.max


def test_a_dla_build_takes_one_shape(fake_trt: FakeGpu, tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    plan = tmp_path / "tiny.plan"
    opt = (1, 3, 64, 96)
    metadata = build_engine(tiny_model_files["onnx"], plan,
                            BuildOptions(fp16=True, dla_core=0, opt_shape=opt, progress=False))
    assert metadata.profile.min == metadata.profile.max == opt
    with pytest.raises(ValueError, match=r"a DLA runs one fixed input shape, not 1x3x32x32 \.\. 4x3x64x96: give "):
        build_engine(tiny_model_files["onnx"], plan, BuildOptions(fp16=True, dla_core=0, min_shape=(1, 3, 32, 32),
                                                                  max_shape=(4, 3, 64, 96), progress=False))


def test_unet_build_command_with_dla(fake_trt: FakeGpu, tiny_model_files: dict[str, Path], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    plan = tmp_path / "tiny.plan"
    code = main([str(tiny_model_files["onnx"]), "-o", str(plan), "--fp16", "--dla-core", "0", "--no-progress"])
    assert code == 0
    assert "DLA core 0 with GPU fallback" in capsys.readouterr().out
    assert read_plan_metadata(plan).dla_core == 0
    code = main([str(tiny_model_files["onnx"]), "-o", str(plan), "--fp16", "--dla-core", "5", "--no-progress"])
    assert code == 2
    assert capsys.readouterr().err.startswith("error: --dla-core 5: this device has 2 DLA core(s)")



def test_unet_build_passes_workspace_opt_level_and_timing_cache_to_the_builder(
        fake_trt: FakeGpu, tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    plan, cache = tmp_path / "tiny.plan", tmp_path / "trt.cache"
    assert main([str(tiny_model_files["onnx"]), "-o", str(plan), "--fp16", "--workspace", "300", "--opt-level", "5",
                 "--timing-cache", str(cache), "--no-progress"]) == 0
    options = read_plan_metadata(plan).build_options
    assert (options["workspace_mib"], options["opt_level"]) == (300, 5)
    assert cache.is_file()  # written back for the next build, which then skips the tactic timing


@pytest.mark.parametrize(("flags", "source", "precision"), [
    (["--fp16", "--dla-core", "0"], "camvid.onnx", "fp16"),
    (["--precision", "int8"], "camvid.int8.tensorrt.onnx", "int8")], ids=["fp16-dla", "int8"])
def test_unet_build_takes_a_bundled_models_name(flags: list[str], source: str, precision: str, fake_trt: FakeGpu,
                                                tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """docs/jetson.md builds a DLA engine by hand with unet-build, and a Jetson user has the bundled model, not an
    export of their own: `unet-build camvid` was refused as "not an ONNX model" (every other command takes the
    name), with a fix naming unet-export."""
    import hashlib

    from unetrt.bundled import MODELS_DIR

    plan = tmp_path / "camvid.plan"
    assert main(["camvid", "-o", str(plan), "--no-progress", *flags]) == 0, capsys.readouterr().err
    metadata = read_plan_metadata(plan)
    assert metadata.source_sha256 == hashlib.sha256((MODELS_DIR / source).read_bytes()).hexdigest()
    assert metadata.precision == precision and metadata.info.name == "camvid"


@pytest.mark.parametrize(("args", "error"), [
    ([], "give -o PLAN, --triton-repo DIR, or both"),
    (["-o", "{tmp}/tiny.trt"], "output must end in .plan or .engine, got '{tmp}/tiny.trt'"),
    (["-o", "{tmp}/no/such/tiny.plan"], "output folder '{tmp}/no/such' does not exist"),
    (["-o", "{tmp}/tiny.plan", "--triton-repo", "{tmp}/models", "--instances", "0"],
     "--instances must be >= 1 and --max-queue-delay-us >= 0, got 0 and 100"),
    # These two were said only after the build, in a warning that its timings could not be saved.
    (["-o", "{tmp}/tiny.plan", "--timing-cache", "{tmp}/no/such/trt.cache"],
     "--timing-cache folder '{tmp}/no/such' does not exist"),
    (["-o", "{tmp}/tiny.plan", "--timing-cache", "{tmp}"],
     "--timing-cache '{tmp}' is a folder; give a file in it, e.g. {tmp}/trt.cache"),
], ids=["no-output", "suffix", "missing-folder", "instances", "timing-cache-folder-missing",
        "timing-cache-is-a-folder"])
def test_unet_build_refuses_a_bad_output_or_option_before_building(
        args: list[str], error: str, fake_trt: FakeGpu, tiny_model_files: dict[str, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """One line naming what is wrong, exit 2, and no minutes-long build first (a Jetson's takes that long)."""
    argv = [str(tiny_model_files["onnx"]), *(arg.format(tmp=tmp_path) for arg in args), "--no-progress"]
    assert main(argv) == 2
    assert capsys.readouterr().err == f"error: {error.format(tmp=tmp_path)}\n"
    assert builds() == 0


def test_int8_of_an_fp32_model_names_the_export_tensorrt_takes(
        fake_trt: FakeGpu, tiny_model_files: dict[str, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The line named plain ``unet-export --int8``, whose default CPU layout (uint8 with zero points) unet-build
    then refuses in turn: the fix it names must give a file TensorRT takes."""
    assert main([str(tiny_model_files["onnx"]), "-o", str(tmp_path / "tiny.plan"), "--int8", "--no-progress"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "has no QuantizeLinear/DequantizeLinear node" in lines[0]
    assert "unet-export CHECKPOINT -o tiny.onnx --precision int8 --int8-target tensorrt" in lines[0]
    assert builds() == 0 and not any(tmp_path.iterdir())


@pytest.mark.parametrize("name, content, error", [
    ("damaged.onnx", b"not a protobuf at all", "model file '{path}' is not a valid ONNX model (an .onnx file written "
                                               "by unet-export): it is truncated, damaged or not ONNX at all"),
    ("tiny.plan", b"a plan given where its ONNX model goes",
     "'{path}' is not an ONNX model: an engine is built from the .onnx file unet-export writes"),
], ids=["damaged-onnx", "a-plan"])
def test_unet_build_of_a_file_that_is_no_onnx_model_is_one_line(
        name: str, content: bytes, error: str, fake_trt: FakeGpu, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """onnx.load's protobuf DecodeError came out of unet-build as a traceback with exit code 1."""
    model = tmp_path / name
    model.write_bytes(content)
    assert main([str(model), "-o", str(tmp_path / "out.plan"), "--no-progress"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: " + error.format(path=model)), lines
    assert builds() == 0 and not (tmp_path / "out.plan").exists()


def test_unet_build_into_a_folder_named_like_a_plan_is_refused_before_building(
        fake_trt: FakeGpu, tiny_model_files: dict[str, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """It was found only once the plan was built (minutes on a Jetson), and the line sent the user to free space."""
    folder = tmp_path / "engines.plan"
    folder.mkdir()
    assert main([str(tiny_model_files["onnx"]), "-o", str(folder), "--no-progress"]) == 2
    assert capsys.readouterr().err == (f"error: output '{folder}' is a folder; give a file name, e.g. "
                                       f"{folder}/model.plan\n")
    assert builds() == 0 and [p.name for p in tmp_path.iterdir()] == [folder.name] and not any(folder.iterdir())


def test_unet_build_in_trtexec_words_builds_the_same_plan(fake_trt: FakeGpu, tiny_model_files: dict[str, Path],
                                                          tmp_path: Path) -> None:
    # Issue 24: --precision/--size and trtexec's --onnx/--saveEngine/--fp16/--optShapes reach the builder alike.
    ours, theirs = tmp_path / "ours.plan", tmp_path / "theirs.plan"
    assert main(["--model", str(tiny_model_files["onnx"]), "-o", str(ours), "--precision", "fp16", "--size", "64x48",
                 "--no-progress"]) == 0
    assert main([f"--onnx={tiny_model_files['onnx']}", f"--saveEngine={theirs}", "--fp16",
                 "--minShapes=image:1x3x48x64", "--optShapes=image:1x3x48x64", "--maxShapes=image:4x3x48x64",
                 "--no-progress"]) == 0
    first, second = read_plan_metadata(ours), read_plan_metadata(theirs)
    assert first.precision == second.precision == "fp16"
    assert first.profile == second.profile and first.profile.opt == (1, 3, 48, 64)


def test_unet_build_takes_trtexecs_int8_with_fp16_as_int8(fake_trt: FakeGpu, tiny_model_files: dict[str, Path],
                                                          tmp_path: Path) -> None:
    """docs/cli.md: --fp16 and --int8 "both together as in trtexec", the way trtexec builds INT8 with FP16
    fallback (what --int8 builds here). They were refused: "give --int8 or --fp16, not both"."""
    from unetrt.export.quantize import quantize_onnx

    batches = [np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)]
    qdq = quantize_onnx(tiny_model_files["onnx"], tmp_path / "tiny.int8.onnx", batches, "minmax", "tensorrt")
    ours, theirs = tmp_path / "ours.plan", tmp_path / "theirs.plan"
    assert main([str(qdq), "-o", str(ours), "--precision", "int8", "--no-progress"]) == 0
    assert main([f"--onnx={qdq}", f"--saveEngine={theirs}", "--int8", "--fp16", "--no-progress"]) == 0
    first, second = read_plan_metadata(ours), read_plan_metadata(theirs)
    assert first.precision == second.precision == "int8"
    assert first.build_options == second.build_options and first.profile == second.profile


def test_parse_errors_are_listed_by_node(fake_trt: FakeGpu, tmp_path: Path) -> None:
    write_unparsable_onnx(tmp_path / "bad.onnx")
    with pytest.raises(ValueError, match=r"could not parse .*node 'mystery' \(NoSuchOp\)"):
        build_engine(tmp_path / "bad.onnx", tmp_path / "bad.plan", BuildOptions(progress=False))


def test_progress_monitor_bars_follow_the_phases(fake_trt: FakeGpu, tiny_model_files: dict[str, Path],
                                                 tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    build_engine(tiny_model_files["onnx"], tmp_path / "tiny.plan", BuildOptions(fp16=True, progress=True))
    assert builds() == 1  # the monitor answered True at every step: the build was not cancelled


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.parametrize("progress", [True, False])
def test_ctrl_c_stops_the_builder_at_its_next_step_and_writes_nothing(
        progress: bool, fake_trt: FakeGpu, tiny_model_files: dict[str, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """TensorRT's build releases the GIL: Ctrl-C during it must still stop it (a Jetson's first build takes
    minutes), through the progress monitor whether or not bars are shown, and leave no plan, temporary or context."""
    import weakref

    import unetrt.plan_build as plan_build

    monitor = plan_build._progress_monitor
    freed_in: list[bool] = []  # whether a live CUDA context was current when the monitor was freed

    def context_alive() -> bool:
        context = fake_trt.current()
        return context is not None and context.alive

    def watched_monitor(*args: Any) -> Any:
        made = monitor(*args)
        # TensorRT objects must go while the build's CUDA context is current, not later on the caller's thread.
        weakref.finalize(made, lambda: freed_in.append(context_alive()))
        return made

    monkeypatch.setattr(plan_build, "_progress_monitor", watched_monitor)
    reached = signal_during_build(monkeypatch, signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        build_engine(tiny_model_files["onnx"], tmp_path / "tiny.plan", BuildOptions(fp16=True, progress=progress))
    assert Builder.cancelled == 1 and max(reached) < Builder.steps - 1
    assert sorted(path.name for path in tmp_path.iterdir()) == []
    assert fake_trt.current() is None and fake_trt.primary(0).retains == 0
    assert freed_in == [True]
    err = capsys.readouterr().err
    assert "unetrt: stopping the TensorRT build at its next step" in err
    assert "[ERROR]" not in err  # cancelled by the monitor's answer, not by an exception in it


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_unet_build_stops_on_sigterm_with_143_and_no_plan(fake_trt: FakeGpu, tiny_model_files: dict[str, Path],
                                                          tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    before = signal.getsignal(signal.SIGTERM)
    signal_during_build(monkeypatch, signal.SIGTERM)
    plan = tmp_path / "tiny.plan"
    assert main([str(tiny_model_files["onnx"]), "-o", str(plan), "--precision", "fp16", "--no-progress"]) == 143
    assert capsys.readouterr().err.strip().splitlines()[-1] == "terminated"
    assert Builder.cancelled == 1 and list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is before


def test_unet_build_on_a_full_disk_is_one_line_and_exit_2(fake_trt: FakeGpu, tiny_model_files: dict[str, Path],
                                                          tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from unetrt import plan_build

    def full_disk(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(plan_build, "replace_file", full_disk)
    plan = tmp_path / "tiny.plan"
    assert main([str(tiny_model_files["onnx"]), "-o", str(plan), "--precision", "fp16", "--no-progress"]) == 2
    assert capsys.readouterr().err == (f"error: the TensorRT engine was built but could not be written to {plan} "
                                       "(No space left on device); free space there or write it elsewhere\n")
    assert not plan.exists()


@pytest.mark.parametrize("described", [True, False], ids=["with-its-metadata", "metadata-lost"])
def test_unet_build_over_a_plan_on_a_full_disk_leaves_no_new_metadata_beside_the_old_plan(
        described: bool, fake_trt: FakeGpu, tiny_model_files: dict[str, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The metadata is written first and is small, so a disk that fills up takes the plan's write alone. The new
    metadata was left beside the old plan, and that plan then opened as the new build (FP32 said, FP16 run)."""
    import errno

    from unetrt import plan_build

    plan = tmp_path / "tiny.plan"
    assert main([str(tiny_model_files["onnx"]), "-o", str(plan), "--precision", "fp16", "--no-progress"]) == 0
    before = metadata_path(plan).read_bytes()
    if not described:
        metadata_path(plan).unlink()
    write = plan_build.replace_file

    def full_for_plans(path: Path, data: bytes) -> None:
        if path.suffix == ".plan":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        write(path, data)

    monkeypatch.setattr(plan_build, "replace_file", full_for_plans)
    assert main([str(tiny_model_files["onnx"]), "-o", str(plan), "--precision", "fp32", "--no-progress"]) == 2
    fake = deserialize(plan.read_bytes())
    assert fake is not None and fake.precision == "fp16"
    if described:
        assert metadata_path(plan).read_bytes() == before
    else:  # a plan without metadata is refused naming the rebuild, not run as the FP32 build
        assert not metadata_path(plan).exists()


def test_unet_build_over_a_plan_on_a_disk_too_full_for_its_metadata_keeps_the_old_plan_running(
        fake_trt: FakeGpu, tiny_model_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A Jetson's SD card too full for even the new metadata, written first: the earlier plan and its metadata stay
    as they were, and the engine runs as before the failed build. Its metadata, never replaced, was removed as if it
    were the new build's (putting it back failed on the same full disk), so the engine that ran before was refused
    from then on, naming a rebuild that the full disk refuses too."""
    import errno

    from unetrt import plan_build, plan_metadata
    from unetrt.backends.tensorrt import TensorRTBackend

    plan = tmp_path / "tiny.plan"
    assert main([str(tiny_model_files["onnx"]), "-o", str(plan), "--precision", "fp16", "--no-progress"]) == 0
    engine, described = plan.read_bytes(), metadata_path(plan).read_bytes()

    def full_disk(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    for module in (plan_build, plan_metadata):
        monkeypatch.setattr(module, "replace_file", full_disk)
    capsys.readouterr()
    assert main([str(tiny_model_files["onnx"]), "-o", str(plan), "--precision", "fp32", "--no-progress"]) == 2
    assert "could not be written" in capsys.readouterr().err
    assert plan.read_bytes() == engine and metadata_path(plan).read_bytes() == described
    with TensorRTBackend(plan) as backend:
        assert backend.precision == "fp16"


def test_fp16_graph_builds_strongly_typed_with_its_own_input_type(fake_trt: FakeGpu, tiny_model_files: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    from unetrt.export.fp16 import convert_file

    fp16_graph = convert_file(tiny_model_files["onnx"], tmp_path / "tiny.fp16.onnx")
    metadata = build_engine(fp16_graph, tmp_path / "tiny.plan", BuildOptions(progress=False))
    assert metadata.strongly_typed and metadata.precision == "fp16"
    assert metadata.input_dtype == "float32" and metadata.build_options["builder_flags"] == []


def test_dla_plan_opens_on_its_core(fake_trt: FakeGpu, tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    from unetrt.backends.tensorrt import TensorRTBackend

    plan = tmp_path / "tiny.plan"
    build_engine(tiny_model_files["onnx"], plan, BuildOptions(fp16=True, dla_core=1, progress=False))
    with TensorRTBackend(plan) as backend:
        assert backend._held.runtime.DLA_core == 1  # set before the plan was deserialised


@pytest.mark.parametrize("core, cores", [(1, 0), (0, 0), (1, 1)], ids=["core-1-on-none", "core-0-on-none",
                                                                          "core-1-on-one"])
def test_a_dla_plan_on_a_device_without_that_core_says_so(fake_trt: FakeGpu, tiny_model_files: dict[str, Path],
                                                          tmp_path: Path, monkeypatch: pytest.MonkeyPatch, core: int,
                                                          cores: int) -> None:
    """An AGX Orin's DLA plan copied onto an Orin Nano (no DLA, the same GPU name, sm_87 and SM count) or a module
    with one DLA: named as such, with the command that builds it for the GPU, not taken for a corrupt plan. Core N
    needs N + 1 cores ("Must be between 0 and N-1 where N is the number of available DLA cores",
    ``tensorrt.Runtime.DLA_core``)."""
    import tensorrt as trt

    from unetrt.backends.tensorrt import TensorRTBackend
    from unetrt.plan_metadata import PlanCompatibilityError

    plan = tmp_path / "tiny.plan"
    build_engine(tiny_model_files["onnx"], plan, BuildOptions(fp16=True, dla_core=core, progress=False))
    monkeypatch.setattr(trt.Runtime, "num_DLA_cores", cores)
    refusal = (rf"runs on DLA core {core}; this device has {cores} DLA core\(s\): build it for the GPU alone with: "
               r"unet-build ")
    with pytest.raises(PlanCompatibilityError, match=refusal) as refused:
        TensorRTBackend(plan)
    assert "--dla-core" not in str(refused.value)


def test_the_engine_is_built_on_the_device_asked_for(monkeypatch: pytest.MonkeyPatch,
                                                      tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    """TensorRT builds on the thread's current CUDA device (device 0 when none is): cuda:1 must be current."""
    _, gpu = install_fake_tensorrt_gpu(monkeypatch, FakeGpu(count=2, integrated=False))
    build_engine(tiny_model_files["onnx"], tmp_path / "one.plan", BuildOptions(progress=False), device_index=1)
    build_engine(tiny_model_files["onnx"], tmp_path / "zero.plan", BuildOptions(progress=False))
    assert Builder.devices == [1, 0]
    assert gpu.current() is None and all(gpu.primary(index).retains == 0 for index in (0, 1))


def test_tensorrt_11_builds_fp16_and_int8_strongly_typed(monkeypatch: pytest.MonkeyPatch,
                                                         tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    """TensorRT 11 removed the weak-typing flags (the fake raises AttributeError for them): FP16 comes from the
    graph converted to FP16, INT8 from the QDQ graph, both built strongly typed."""
    from unetrt.export.quantize import quantize_onnx

    install_fake_tensorrt_gpu(monkeypatch, FakeGpu(integrated=False), version="11.4.0")
    fp16 = build_engine(tiny_model_files["onnx"], tmp_path / "fp16.plan", BuildOptions(fp16=True, progress=False))
    assert (fp16.precision, fp16.strongly_typed, fp16.build_options["builder_flags"]) == ("fp16", True, [])
    assert fp16.tensorrt_version == "11.4.0"
    batches = [np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)]
    qdq = quantize_onnx(tiny_model_files["onnx"], tmp_path / "tiny.int8.onnx", batches, "minmax", "tensorrt")
    int8 = build_engine(qdq, tmp_path / "int8.plan", BuildOptions(int8=True, progress=False))
    assert (int8.precision, int8.strongly_typed) == ("int8", True)
    fp32 = build_engine(tiny_model_files["onnx"], tmp_path / "fp32.plan", BuildOptions(progress=False))
    assert fp32.precision == "fp32"


@pytest.mark.parametrize("version", ["10.3.0", "11.4.0"])
def test_the_fake_plan_runs_fp16_layers_only_under_the_fp16_flag_of_weak_typing(
        monkeypatch: pytest.MonkeyPatch, tiny_model_files: dict[str, Path], tmp_path: Path, version: str) -> None:
    """[FP16-LAYERS]: TensorRT 10's FP16 and INT8 builds set BuilderFlag.FP16 on a weakly typed network, so their
    layers compute in FP16 (the runtime fake's [FP16]); an FP32 build, and TensorRT 11's strongly typed builds (whose
    FP16 is in the graph's own types), record no such layers."""
    from unetrt.export.quantize import quantize_onnx

    install_fake_tensorrt_gpu(monkeypatch, FakeGpu(integrated=False), version=version)
    batches = [np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)]
    qdq = quantize_onnx(tiny_model_files["onnx"], tmp_path / "tiny.int8.onnx", batches, "minmax", "tensorrt")
    weak = version.startswith("10.")
    for name, source, options, fp16_layers in (("fp32", tiny_model_files["onnx"], BuildOptions(), False),
                                               ("fp16", tiny_model_files["onnx"], BuildOptions(fp16=True), weak),
                                               ("int8", qdq, BuildOptions(int8=True), weak)):
        plan = tmp_path / f"{name}.plan"
        build_engine(source, plan, dataclasses.replace(options, progress=False))
        fake = deserialize(plan.read_bytes())
        assert fake is not None and fake.fp16_layers == fp16_layers, name


def test_fake_profile_refuses_inconsistent_shapes(fake_trt: FakeGpu) -> None:
    """[PROFILE]: set_shape raises as the bindings do; unetrt's profiles are checked before they reach it."""
    import tensorrt as trt

    profile = trt.Builder(trt.Logger()).create_optimization_profile()
    with pytest.raises(RuntimeError, match="opt is inconsistent"):
        profile.set_shape("image", (1, 3, 64, 64), (1, 3, 32, 32), (1, 3, 96, 96))
    with pytest.raises(RuntimeError, match="max is inconsistent"):
        profile.set_shape("image", (1, 3, 32, 32), (1, 3, 64, 64), (1, 3, 96))
    profile.set_shape("image", (1, 3, 32, 32), (1, 3, 64, 64), (4, 3, 96, 96))


def test_fake_progress_monitor_must_construct_its_base(fake_trt: FakeGpu) -> None:
    """[TRAMPOLINE]: a monitor whose __init__ skips the base class's is refused on instantiation."""
    import tensorrt as trt

    class Forgetful(trt.IProgressMonitor):
        def __init__(self) -> None:
            self.bars: dict[str, Any] = {}

    class Inheriting(trt.IProgressMonitor):
        pass

    with pytest.raises(TypeError, match="must be called when overriding __init__"):
        Forgetful()
    Inheriting()
    from unetrt.plan_build import _progress_monitor

    _progress_monitor(threading.Event(), False)  # unetrt's monitor constructs its base


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_build_pins_linear_io_formats(fake_trt: FakeGpu, tiny_model_files: dict[str, Path], tmp_path: Path,
                                      precision: str) -> None:
    """[FORMATS]: TensorRT allows every format at the network's I/O by default and may build an FP16 input as
    kHWC8; the build pins both tensors to linear NCHW, the layout infer and the extract kernel write."""
    plan = tmp_path / "tiny.plan"
    build_engine(tiny_model_files["onnx"], plan, BuildOptions(fp16=precision == "fp16", progress=False))
    fake = deserialize(plan.read_bytes())
    assert fake is not None and (fake.input_format, fake.output_format) == ("LINEAR", "LINEAR")


def test_a_build_out_of_memory_on_an_orin_nano_names_the_fix_in_one_line(
        monkeypatch: pytest.MonkeyPatch, tiny_model_files: dict[str, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """An 8 GB Orin Nano with a camera pipeline and a browser running: TensorRT cannot allocate what its tactics need
    ([BUILD-MEMORY]), logs why and returns no plan. unet-build ended in "rerun with --verbose to see why", which shows
    the same allocation errors again without the fix; it names the smaller workspace (and closing what uses the
    GPU), and the build with that workspace succeeds."""
    module, gpu = install_fake_tensorrt_gpu(monkeypatch, FakeGpu(integrated=True, memory_bytes=512 << 20),
                                            total_memory=8 << 30)
    monkeypatch.setattr(Builder, "build_memory", 2 << 30)
    plan = tmp_path / "tiny.plan"
    assert main([str(tiny_model_files["onnx"]), "-o", str(plan), "--fp16", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert err[0].endswith("where TensorRT's errors above say out of memory, close the programs using the GPU or "
                           "build with a smaller workspace (unet-build ... --workspace 256; this build had 1024 MiB), "
                           "else rerun with --verbose to see why"), err
    from unetrt.backends.tensorrt import tensorrt_logger

    assert any("Cuda Runtime (out of memory)" in message for message in tensorrt_logger().messages)
    assert not plan.exists() and not metadata_path(plan).exists()
    assert main([str(tiny_model_files["onnx"]), "-o", str(plan), "--fp16", "--no-progress", "--workspace", "256"]) == 0
    assert read_plan_metadata(plan).build_options["workspace_mib"] == 256
    assert module.__version__ and gpu.free_device_bytes() == 512 << 20  # the failed build left nothing held


@pytest.mark.parametrize(("version", "dla_cores", "argv", "outcome"), [
    ("10.3.0", 2, ["camvid", "--int8"], "int8"),
    ("10.3.0", 2, ["camvid", "--fp16", "--dla-core", "1"], "fp16 dla 1"),
    ("10.3.0", 2, ["camvid", "--int8", "--dla-core", "0"], "error: --dla-core with a Q/DQ INT8 graph: TensorRT 10.3.0"),
    ("10.3.0", 0, ["camvid", "--fp16", "--dla-core", "0"], "error: "),
    ("10.3.0", 2, ["camvid", "--fp16", "--dla-core", "2"], "error: "),
    ("10.3.0", 2, ["camvid", "--dla-core", "0"], "error: a DLA runs FP16 and INT8 layers only; add --fp16 to "
                                                 "--dla-core"),
    ("11.4.1", 2, ["camvid", "--int8"], "int8"),
    ("11.4.1", 2, ["camvid", "--int8", "--dla-core", "0"], "int8 dla 0"),
    ("11.0.0", 2, ["camvid", "--fp16", "--dla-core", "0"], "error: --dla-core: TensorRT 11.0.0 has no DLA support"),
], ids=["trt10-int8", "trt10-dla1", "trt10-int8-dla", "nano-dla", "no-core-2", "fp32-dla", "trt11-int8",
        "trt11.4.1-int8-dla", "trt11.0-dla"])
def test_int8_and_dla_on_an_orin_as_a_user_types_them(version: str, dla_cores: int, argv: list[str], outcome: str,
                                                      monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """docs/jetson.md's INT8 and DLA builds on an AGX Orin (two DLA cores) and an Orin Nano (none), on JetPack 6's
    TensorRT 10.3 and on TensorRT 11: each either builds what it names or stops in one line (exit 2, no traceback,
    nothing written)."""
    pytest.importorskip("onnxconverter_common")
    install_fake_tensorrt_gpu(monkeypatch, version=version, dla_cores=dla_cores)
    plan = tmp_path / "camvid.plan"
    code = main([*argv, "-o", str(plan), "--no-progress"])
    err = capsys.readouterr().err
    if outcome.startswith("error: "):
        assert code == 2 and err.count("\n") == 1 and err.startswith(outcome), err
        assert "Traceback" not in err and not plan.exists() and builds() == 0
        return
    assert code == 0, err
    precision, *dla = outcome.split()
    metadata = read_plan_metadata(plan)
    fake = deserialize(plan.read_bytes())
    assert fake is not None and metadata.precision == fake.precision == precision
    assert fake.dla_core == (int(dla[1]) if dla else None) == metadata.dla_core


@pytest.mark.parametrize(("gpu", "argv", "ending"), [
    (FakeGpu(integrated=False, memory_bytes=512 << 20), [], "(unet-build ... --workspace 1024), else rerun with "
                                                            "--verbose to see why"),
    (FakeGpu(integrated=True, memory_bytes=1 << 20), ["--workspace", "3"],
     "(unet-build ... --workspace 1; this build had 3 MiB), else rerun with --verbose to see why"),
], ids=["discrete-default-workspace", "tiny-workspace"])
def test_a_build_out_of_memory_names_a_workspace_that_builds(
        gpu: FakeGpu, argv: list[str], ending: str, monkeypatch: pytest.MonkeyPatch,
        tiny_model_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A discrete GPU builds with TensorRT's own workspace limit (the whole device memory): out of memory, the line
    names 1024 MiB and no workspace of its own; a build already given a few MiB is never told to try 0 (which
    unet-build refuses), but 1."""
    install_fake_tensorrt_gpu(monkeypatch, gpu)
    monkeypatch.setattr(Builder, "build_memory", 2 << 30)
    plan = tmp_path / "tiny.plan"
    assert main([str(tiny_model_files["onnx"]), "-o", str(plan), "--fp16", "--no-progress", *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith(ending), err


def test_a_plan_built_on_one_kind_of_gpu_does_not_load_on_another(monkeypatch: pytest.MonkeyPatch,
                                                                  tiny_model_files: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    """[DEVICE] (the fakes): a workstation with an sm_89 and an sm_86 card. The builder writes the plan for the
    device whose context is current, and TensorRT refuses a plan of another compute capability where it is
    deserialised; a metadata check that let one through would meet that refusal."""
    from fakes.cuda import primary_context_pushed

    trt, _ = install_fake_tensorrt_gpu(monkeypatch, FakeGpu(name="NVIDIA GeForce RTX 4090", compute_capability=(8, 9),
                                                            multiprocessors=128, integrated=False, count=2,
                                                            kinds={1: ("NVIDIA RTX A4000", (8, 6), 48)}))
    one = build_engine(tiny_model_files["onnx"], tmp_path / "one.plan", BuildOptions(progress=False), device_index=1)
    assert (one.gpu.name, one.gpu.compute_capability, one.gpu.multiprocessors) == ("NVIDIA RTX A4000", (8, 6), 48)
    assert deserialize((tmp_path / "one.plan").read_bytes()).compute_capability == (8, 6)  # type: ignore[union-attr]
    logger = trt.Logger()
    for ordinal, loads in ((0, False), (1, True)):
        with primary_context_pushed(ordinal):
            engine = trt.Runtime(logger).deserialize_cuda_engine((tmp_path / "one.plan").read_bytes())
            assert (engine is not None) == loads
            del engine  # [TEARDOWN]: in its context
    assert "incompatible device, expecting compute 8.9 got compute 8.6" in logger.messages[0]


def test_a_build_while_another_thread_captures_a_cuda_graph_names_the_capture(
        fake_trt: FakeGpu, tiny_model_files: dict[str, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """unet-build while a PyTorch program's thread captures a CUDA graph in global mode: TensorRT's cudaMalloc is
    refused ([CAPTURE-ALLOC]) and the build returns no plan. The line said "where TensorRT's errors above say out of
    memory ... build with a smaller workspace", a fix that changes nothing here; it names the capture."""
    from fakes.cuda import capturing_on_another_thread

    plan = tmp_path / "tiny.plan"
    with capturing_on_another_thread():
        assert main([str(tiny_model_files["onnx"]), "-o", str(plan), "--fp16", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert "another thread captures a CUDA graph in global mode" in err[0] and "--workspace" not in err[0], err
    assert not plan.exists()
    assert main([str(tiny_model_files["onnx"]), "-o", str(plan), "--fp16", "--no-progress"]) == 0


def test_a_build_refused_by_a_capture_is_a_gpu_resource_error(fake_trt: FakeGpu, tiny_model_files: dict[str, Path],
                                                              tmp_path: Path) -> None:
    """In the API, a build refused by another thread's CUDA graph capture is a GpuResourceError (the GPU cannot give
    it now; later, it may), which a caller can tell from a model TensorRT cannot build."""
    from fakes.cuda import capturing_on_another_thread

    from unetrt.cuda import GpuResourceError

    plan = tmp_path / "tiny.plan"
    with capturing_on_another_thread(), pytest.raises(GpuResourceError, match="captures a CUDA graph"):
        build_engine(tiny_model_files["onnx"], plan, BuildOptions(fp16=True))
    assert not plan.exists()


@pytest.mark.parametrize("name", ["mine.onnx", "mine.fp16.onnx"])
def test_int8_of_a_float_model_in_another_folder_builds_the_int8_file_beside_it(
        name: str, fake_trt: FakeGpu, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`unet-build models/mine.onnx --int8` (or its FP16 file) from the folder above: the line names the INT8 file
    unet-export wrote beside that model (mine.int8.onnx, in TensorRT's layout), not one of the working folder, and
    says to build it."""
    import shutil

    from unetrt.bundled import MODELS_DIR

    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(MODELS_DIR / "camvid.onnx", models / name)
    shutil.copy(MODELS_DIR / "camvid.int8.tensorrt.onnx", models / "mine.int8.onnx")
    monkeypatch.chdir(tmp_path)
    assert main([f"models/{name}", "-o", "mine.plan", "--int8", "--no-progress"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.endswith("has no QuantizeLinear/DequantizeLinear node: build mine.int8.onnx, beside it"), line
    assert builds() == 0


@pytest.mark.parametrize(("beside", "advice"), [
    ("camvid.int8.onnx", "mine.int8.onnx beside it is in the CPU layout (uint8 with zero points), which TensorRT "
                         "refuses: export it again with --int8-target tensorrt (unet-export CHECKPOINT -o mine.onnx "
                         "--precision int8 --int8-target tensorrt --calibration FRAMES --check-labels LABELS), then "
                         "build mine.int8.onnx"),
    ("camvid.onnx", "export one with unet-export CHECKPOINT -o mine.onnx"),
    (None, "export one with unet-export CHECKPOINT -o mine.onnx")], ids=["cpu-layout", "float", "damaged"])
def test_int8_source_advice_points_only_at_a_qdq_file_tensorrt_takes(
        beside: str | None, advice: str, tmp_path: Path) -> None:
    """The INT8 file beside a float model is named as the one to build only where it is one TensorRT takes: one in
    the CPU layout is named with the export that replaces it; a float model under that name, or a file that is no
    model (a copy cut short), is no INT8 model, so the advice is the export."""
    import shutil

    from unetrt.bundled import MODELS_DIR
    from unetrt.plan_build import int8_source_advice

    if beside is None:
        (tmp_path / "mine.int8.onnx").write_bytes(b"\x08\x07cut short")
    else:
        shutil.copy(MODELS_DIR / beside, tmp_path / "mine.int8.onnx")
    assert int8_source_advice(tmp_path / "mine.onnx", "build").startswith(advice)
