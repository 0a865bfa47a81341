"""``unet-bench --engine unet.plan`` on a Jetson: TensorRT, pycuda and a GPU, no CUDA torch (JetPack ships none),
over the fake TensorRT, pycuda and driver. The plan named is the one timed, and everything is released."""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fakes.cuda import FakeGpu

from unetrt.benchmarks.bench import main

pytestmark = pytest.mark.gpu_contract
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from plan_fixtures import install_fake_jetson, route_cuda_kernels_to  # noqa: E402


@pytest.fixture
def jetson(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeGpu:
    """A fake Orin with TensorRT and pycuda; torch, if importable at all, sees no GPU."""
    return install_fake_jetson(monkeypatch, tmp_path / "engines")


def _build(onnx: Path, plan: Path, precision: str = "fp16") -> Path:
    from unetrt.export.tensorrt import main as unet_build

    assert unet_build([str(onnx), "-o", str(plan), "--precision", precision, "--no-progress"]) == 0
    return plan


def _run(argv: list[str], tmp_path: Path) -> dict[str, Any]:
    report = tmp_path / "report.json"
    assert main([*argv, "--iterations", "2", "--trials", "1", "--warmup", "1", "--json", str(report)]) == 0
    return json.loads(report.read_text())


def test_a_plan_runs_on_tensorrt_without_a_cuda_torch(jetson: FakeGpu, tiny_model_files: dict[str, Path],
                                                      tmp_path: Path) -> None:
    (tmp_path / "alone").mkdir()
    plan = _build(tiny_model_files["onnx"], tmp_path / "alone" / "unet.plan")
    report = _run(["--engine", str(plan)], tmp_path)
    rows = {row["variant"]: row for row in report["results"]}
    assert rows["tensorrt"]["status"] == "ok" and rows["tensorrt"]["precision"] == "fp16"
    assert report["settings"]["device"] == "cuda" and report["machine"]["gpu"] == jetson.name
    assert jetson.primary(0).retains == 0 and jetson.live("device") == 0 and jetson.live("library") == 0


@pytest.mark.parametrize("named", ["unet.engine", "unet.int8.plan"])
def test_the_plan_named_is_the_one_timed(named: str, jetson: FakeGpu, tiny_model_files: dict[str, Path],
                                         tmp_path: Path) -> None:
    """A sibling NAME.plan (here FP32) must not stand in for the file given."""
    folder = tmp_path / "plans"
    folder.mkdir()
    shutil.copy(tiny_model_files["onnx"], folder / "unet.onnx")
    _build(folder / "unet.onnx", folder / "unet.plan", "fp32")
    given = _build(folder / "unet.onnx", folder / named, "fp16")
    report = _run(["--engine", str(given), "--backend", "tensorrt"], tmp_path)
    assert report["model"]["files"]["tensorrt"] == str(given)
    assert [(row["precision"], row["label"]) for row in report["results"] if row["variant"] == "tensorrt"] == [
        ("fp16", "TensorRT FP16")]


def test_the_model_given_twice_is_refused(jetson: FakeGpu, tiny_model_files: dict[str, Path], tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    plan = _build(tiny_model_files["onnx"], tmp_path / "unet.plan")
    with pytest.raises(SystemExit) as exit_info:
        main(["--engine", str(plan), "--onnx", str(tiny_model_files["onnx"])])
    assert exit_info.value.code == 2
    assert "the model is given twice" in capsys.readouterr().err


def test_ctrl_c_during_the_warm_up_releases_the_engine(jetson: FakeGpu, tiny_model_files: dict[str, Path],
                                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from unetrt.backends.tensorrt import TensorRTBackend

    plan = _build(tiny_model_files["onnx"], tmp_path / "unet.plan")

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(TensorRTBackend, "infer", interrupted)
    assert main(["--engine", str(plan), "--backend", "tensorrt"]) == 130
    assert jetson.primary(0).retains == 0 and jetson.live("device") == 0 and jetson.live("library") == 0


@pytest.mark.parametrize("spelling", [["--engine", "{plan}", "--no-data-transfers"],
                                      ["--loadEngine={plan}", "--noDataTransfers"]], ids=["unetrt", "trtexec"])
def test_the_device_mode_runs_without_torch_cuda_and_gives_the_bare_modes_logits(
        spelling: list[str], jetson: FakeGpu, tiny_model_files: dict[str, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The row a trtexec user asks for (--noDataTransfers) on the product's main device: it kept its buffers in torch
    CUDA tensors and was skipped on a Jetson ("torch sees no GPU"); it now runs on TensorRTBackend.resident, named as
    the bare row, its warm-up's checked logits the bare row's, and everything is released."""
    from unetrt.benchmarks import bench

    plan = _build(tiny_model_files["onnx"], tmp_path / "unet.plan")
    checked: list[np.ndarray] = []
    check = bench.check_scores
    monkeypatch.setattr(bench, "check_scores", lambda logits, precision: (checked.append(logits),
                                                                          check(logits, precision)))
    rows = {}
    for mode, argv in (("bare", ["--engine", str(plan)]),
                       ("device", [part.format(plan=plan) for part in spelling])):
        (tmp_path / "report.json").unlink(missing_ok=True)
        (rows[mode],) = [row for row in _run([*argv, "--backend", "tensorrt"], tmp_path)["results"]
                         if row["variant"] == "tensorrt"]
        assert rows[mode]["status"] == "ok" and rows[mode]["mode"] == mode, rows[mode]
        assert jetson.primary(0).retains == 0 and jetson.live("device") == 0 and jetson.live("library") == 0
    assert rows["device"]["device"] == rows["bare"]["device"] == f"cuda:0 ({jetson.name})"
    assert len(checked) == 2  # one warm-up call per row
    np.testing.assert_array_equal(checked[1], checked[0])


def _run_plan_beside_its_onnx_and_pt(tiny_model_files: dict[str, Path], tmp_path: Path) -> dict[str, Any]:
    """unet-bench's report for a plan built beside the .onnx and .pt it came from, as a Jetson user keeps them."""
    folder = tmp_path / "model"
    folder.mkdir()
    for kind in ("onnx", "pt"):
        shutil.copy(tiny_model_files[kind], folder / f"unet.{kind}")
    plan = _build(folder / "unet.onnx", folder / "unet.plan")
    return _run(["--engine", str(plan)], tmp_path)


def test_beside_its_onnx_and_pt_the_plan_still_runs_and_cpu_only_rows_say_why(
        jetson: FakeGpu, tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    """JetPack's torch (when there is one) is a CPU build: the PyTorch rows on the GPU are skipped with the reason,
    not a traceback, and the plan's row runs."""
    report = _run_plan_beside_its_onnx_and_pt(tiny_model_files, tmp_path)
    rows = {row["variant"]: row for row in report["results"]}
    assert rows["tensorrt"]["status"] == "ok"
    assert all(row["status"] == "ok" or row["reason"] for row in rows.values())


def test_an_int8_plan_runs_under_precision_int8(jetson: FakeGpu, tiny_model_files: dict[str, Path],
                                                tmp_path: Path) -> None:
    import numpy as np

    from unetrt.export.quantize import quantize_onnx

    batches = [np.random.default_rng(seed).standard_normal((1, 3, 32, 32)).astype(np.float32) for seed in range(2)]
    qdq = quantize_onnx(tiny_model_files["onnx"], tmp_path / "unet.int8.onnx", batches, "minmax", "tensorrt")
    plan = _build(qdq, tmp_path / "unet.int8.plan", "int8")
    report = _run(["--engine", str(plan), "--precision", "int8", "--backend", "tensorrt"], tmp_path)
    assert [(row["variant"], row["precision"], row["status"]) for row in report["results"]] == [
        ("tensorrt", "int8", "ok")]


def test_report_files_never_replace_an_earlier_result_or_the_plans_metadata(
        jetson: FakeGpu, tiny_model_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = _build(tiny_model_files["onnx"], tmp_path / "unet.plan")
    earlier = tmp_path / "earlier.json"
    earlier.write_text("{}")
    assert main(["--engine", str(plan), "--json", str(earlier)]) == 2
    assert "exists; add --overwrite" in capsys.readouterr().err and earlier.read_text() == "{}"
    metadata = tmp_path / "unet.plan.json"
    before = metadata.read_bytes()
    assert main(["--engine", str(plan), "--json", str(metadata), "--overwrite"]) == 2
    assert "the TensorRT plan's metadata" in capsys.readouterr().err and metadata.read_bytes() == before


def test_plot_without_matplotlib_is_refused_before_the_run(jetson: FakeGpu, tiny_model_files: dict[str, Path],
                                                           tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    import importlib.util

    from fakes.tensorrt_builder import Builder

    plan = _build(tiny_model_files["onnx"], tmp_path / "unet.plan")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "matplotlib" else find_spec(name, *args))
    builds = Builder.builds
    assert main(["--engine", str(plan), "--plot", str(tmp_path / "latency.png")]) == 2
    assert capsys.readouterr().err.strip().endswith("--plot needs matplotlib: pip install matplotlib")
    assert Builder.builds == builds and jetson.primary(0).retains == 0


def test_without_pycuda_the_cpu_rows_run_and_the_report_says_why_tensorrt_did_not(
        jetson: FakeGpu, tiny_model_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """JetPack ships TensorRT but not pycuda: the driver still counts the GPU, but TensorRT cannot run on it, so the
    rows run on the CPU and the report names pycuda (a plan given outright is refused in one line instead)."""
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(tiny_model_files["onnx"], folder / "unet.onnx")
    monkeypatch.setitem(sys.modules, "pycuda", None)
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    report = _run(["--engine", str(folder / "unet.onnx")], tmp_path)
    rows = {row["variant"]: row for row in report["results"]}
    assert report["settings"]["device"] == "cpu" and rows["onnxruntime"]["status"] == "ok"
    assert "tensorrt" not in rows and any("pycuda is not installed" in note for note in report["notes"])


def test_a_plan_that_cannot_load_here_exits_2_after_the_rows_that_ran(
        jetson: FakeGpu, tiny_model_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A plan built on another GPU: its row is skipped, its ONNX sibling's row runs, and the exit code says that
    the plan named was not timed (it was 0, and a script timing plans read the other rows as the plan's)."""
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(tiny_model_files["onnx"], folder / "unet.onnx")
    plan = _build(folder / "unet.onnx", folder / "unet.plan")
    from fakes.onnxruntime_cuda import install_fake_onnxruntime_cuda

    provider = install_fake_onnxruntime_cuda(monkeypatch, jetson)  # onnxruntime-gpu: a row other than the plan's
    monkeypatch.setattr("unetrt.backends.onnxruntime_gpu_available", lambda: True)
    # A Xavier: TensorRT refuses a plan of another compute capability (one of another GPU model of the same
    # architecture loads, with a warning [GPU-MODEL]).
    monkeypatch.setattr(jetson, "name", "Xavier (fake)")
    monkeypatch.setattr(jetson, "compute_capability", (7, 2))
    report = tmp_path / "report.json"
    assert main(["--engine", str(plan), "--iterations", "2", "--trials", "1", "--warmup", "1",
                 "--json", str(report)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: tensorrt did not run: ") and "the rows that ran are in the report above" in err
    rows = {row["variant"]: row for row in json.loads(report.read_text())["results"]}
    assert rows["tensorrt"]["status"] == "skipped" and rows["onnxruntime"]["status"] == "ok"
    # The CUDA runtime under ONNX Runtime keeps its retain of the primary context for good; unetrt keeps none.
    assert jetson.primary(0).retains == len(provider.runtime_contexts) == 1
    assert jetson.live("device") == 0 and jetson.live("library") == 0


def test_a_plan_that_fails_in_the_warm_up_is_skipped_and_released(jetson: FakeGpu, tiny_model_files: dict[str, Path],
                                                                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from unetrt.backends.tensorrt import TensorRTBackend

    plan = _build(tiny_model_files["onnx"], tmp_path / "unet.plan")

    def refused(*args: object) -> None:
        raise ValueError("input shape 1x3x32x32 is outside the engine's optimisation profile")

    monkeypatch.setattr(TensorRTBackend, "infer", refused)
    assert main(["--engine", str(plan), "--backend", "tensorrt"]) == 2
    assert "outside the engine's optimisation profile" in capsys.readouterr().err
    assert jetson.primary(0).retains == 0 and jetson.live("device") == 0 and jetson.live("library") == 0


def test_the_share_of_the_gpus_matmul_rate_is_the_achieved_rate_over_it(jetson: FakeGpu,
                                                                        tiny_model_files: dict[str, Path],
                                                                        tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("unetrt.benchmarks.bench.matmul_fp16_tflops", lambda: 4.0)
    (tmp_path / "alone").mkdir()
    plan = _build(tiny_model_files["onnx"], tmp_path / "alone" / "unet.plan")
    report = _run(["--engine", str(plan)], tmp_path)
    (row,) = [row for row in report["results"] if row["variant"] == "tensorrt"]
    assert report["matmul_fp16_tflops"] == 4.0 and row["achieved_tflops"] > 0
    assert row["fraction_of_matmul_peak"] == pytest.approx(row["achieved_tflops"] / 4.0)


def test_a_dla_plans_row_names_its_dla_core(jetson: FakeGpu, tiny_model_files: dict[str, Path],
                                            tmp_path: Path) -> None:
    from unetrt.export.tensorrt import main as unet_build

    (tmp_path / "alone").mkdir()
    plan = tmp_path / "alone" / "unet.plan"
    assert unet_build([str(tiny_model_files["onnx"]), "-o", str(plan), "--precision", "fp16", "--dla-core", "0",
                       "--min-shape", "1x3x32x32", "--max-shape", "1x3x32x32", "--no-progress"]) == 0
    report = _run(["--engine", str(plan), "--size", "32x32"], tmp_path)
    assert [row["label"] for row in report["results"] if row["variant"] == "tensorrt"] == [
        "TensorRT FP16, DLA core 0"]


def test_the_first_bench_at_another_size_builds_the_engine_for_that_size(jetson: FakeGpu, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A Jetson user times the bundled model at their camera's size: the engine cache's engine was built (minutes)
    at the model's working size, fixed there, and every frame of --size 480x360 was then refused as outside its
    profile ("no variant could run here")."""
    from plan_fixtures import builds

    report = _run(["--model", "camvid", "--size", "480x360", "--backend", "tensorrt"], tmp_path)
    (row,) = [row for row in report["results"] if row["variant"] == "tensorrt"]
    assert row["status"] == "ok" and builds() == 1
    assert "building a TensorRT engine for camvid FP16 at 480x360" in capsys.readouterr().err


def test_a_bench_asked_fp32_times_an_fp32_engine(jetson: FakeGpu, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """--precision fp32 on a Jetson timed the engine cache's FP16 engine beside FP32 rows of the other backends."""
    report = _run(["--model", "camvid", "--precision", "fp32", "--backend", "tensorrt"], tmp_path)
    (row,) = [row for row in report["results"] if row["variant"] == "tensorrt"]
    assert row["status"] == "ok"
    assert "building a TensorRT engine for camvid FP32" in capsys.readouterr().err


@pytest.mark.parametrize(("flags", "why"), [
    (["--size", "480x360", "--size", "320x240"], "an engine of the engine cache takes one frame size, and 2 are asked"),
    (["--batch-size", "8"], "an engine of the engine cache takes batches of up to 4, and --batch-size asks for 8")],
    ids=["two-sizes", "batch-8"])
def test_a_bench_no_cached_engine_can_run_says_so_before_building(flags: list[str], why: str, jetson: FakeGpu,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from plan_fixtures import builds

    assert main(["--model", "camvid", "--backend", "tensorrt", "--iterations", "2", *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and why in err[-1] and "--model FILE.plan" in err[-1], err
    assert builds() == 0


@pytest.mark.parametrize("flags", [["--batch-size", "4"], ["--size", "480x360", "--size", "480x360"]],
                         ids=["batch-4", "one-size-twice"])
def test_what_a_cached_engine_takes_is_timed_on_it(flags: list[str], jetson: FakeGpu, tmp_path: Path) -> None:
    """The engine cache's engine takes batches up to 4 and one frame size: a batch of 4, or one size given twice,
    is timed on it, not left out as more than it takes."""
    from plan_fixtures import builds

    report = _run(["--model", "camvid", "--backend", "tensorrt", *flags], tmp_path)
    assert [row["status"] for row in report["results"] if row["variant"] == "tensorrt"] == ["ok"]
    assert builds() == 1


def _device_growth(monkeypatch: pytest.MonkeyPatch, gpu: FakeGpu) -> dict[str, int]:
    """The fake GPU's device memory each row added, from just before its open to its warm-up's last call (what the
    report's figure must be), by variant; and each timed step checked to return with its GPU work done."""
    from unetrt.benchmarks import bench

    before: dict[str, int] = {}
    grown: dict[str, int] = {}
    open_runner, check = bench.open_runner, bench.check_scores
    opening: list[str] = []

    def counted_open(variant: Any, *args: Any) -> Any:
        opening.append(variant.key)
        before[variant.key] = gpu.device_bytes_in_use()
        return open_runner(variant, *args)

    def counted_check(logits: Any, precision: str | None) -> None:
        grown[opening[-1]] = gpu.device_bytes_in_use() - before[opening[-1]]
        check(logits, precision)

    monkeypatch.setattr(bench, "open_runner", counted_open)
    monkeypatch.setattr(bench, "check_scores", counted_check)
    # The host clock times these rows (no CUDA torch): right only if each step returns with its GPU work done, so
    # no stream of the fake GPU (whose queued work waits for a synchronise, as on a GPU) may hold work after one.
    time_ms = bench.Clock.time_ms

    def waited(clock: Any, step: Any) -> float:
        elapsed = time_ms(clock, step)
        assert clock.kind == "perf_counter_ns" and not any(stream.pending for stream in gpu.streams.values())
        return elapsed

    monkeypatch.setattr(bench.Clock, "time_ms", waited)
    return grown


@pytest.mark.parametrize("mode", [[], ["--no-data-transfers"]], ids=["bare", "device"])
def test_a_plans_rows_report_the_device_memory_the_engine_takes_without_torch(
        mode: list[str], jetson: FakeGpu, tiny_model_files: dict[str, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """On a Jetson (no CUDA torch) `unet-bench --engine unet.plan` gave no device memory for its TensorRT rows (read
    through torch alone), on a board whose GPU shares its memory with everything else. The figure is the growth
    cuMemGetInfo reads through the driver, at least the engine's weights, with a note saying how it was measured and
    that on this integrated GPU other processes move it; the gauge's retain of the context goes with the row."""
    from fakes.tensorrt import FakeEngine

    plan = _build(tiny_model_files["onnx"], tmp_path / "unet.plan")
    grown = _device_growth(monkeypatch, jetson)
    report = _run(["--engine", str(plan), "--backend", "tensorrt", *mode], tmp_path)
    (row,) = report["results"]
    assert row["status"] == "ok" and row["mode"] == ("device" if mode else "bare")
    assert row["peak_device_mib"] == pytest.approx(grown["tensorrt"] / 2**20)
    assert grown["tensorrt"] >= plan.stat().st_size + FakeEngine.load_overhead + FakeEngine.context_memory
    note = row["device_memory_note"]
    assert "cuMemGetInfo" in note and "integrated GPU" in note and "other processes" in note, note
    assert jetson.primary(0).retains == 0 and jetson.live("device") == 0 and jetson.live("library") == 0


@pytest.mark.parametrize("mode", [[], ["--no-data-transfers"]], ids=["bare", "device"])
def test_onnx_runtime_rows_on_a_gpu_torch_does_not_see_report_their_device_memory(
        mode: list[str], tiny_model_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A desktop with onnxruntime-gpu beside a CPU build of torch (no pycuda, no TensorRT): the ONNX Runtime rows ran
    on the GPU with no device memory in the report. The figure is the growth the driver reads, at least the model's
    weights the session keeps on the device; a discrete GPU's note says nothing of shared memory."""
    import onnx
    from fakes.cuda import install_fake_gpu
    from fakes.onnxruntime_cuda import install_fake_onnxruntime_cuda

    from unetrt.benchmarks import bench

    gpu = install_fake_gpu(monkeypatch, FakeGpu(name="NVIDIA GeForce RTX 4070", integrated=False))
    install_fake_onnxruntime_cuda(monkeypatch, gpu)
    for module in ("tensorrt", "pycuda", "pycuda.driver"):
        monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setattr(bench, "_torch_cuda", lambda: None)
    weights = sum(onnx.numpy_helper.to_array(tensor).nbytes
                  for tensor in onnx.load(str(tiny_model_files["onnx"])).graph.initializer)
    grown = _device_growth(monkeypatch, gpu)
    report = _run(["--engine", str(tiny_model_files["onnx"]), "--backend", "onnxruntime", "--device", "cuda", *mode],
                  tmp_path)
    (row,) = [row for row in report["results"] if row["variant"] == "onnxruntime"]
    assert row["status"] == "ok" and row["device"] == "cuda:0"
    assert row["peak_device_mib"] == pytest.approx(grown["onnxruntime"] / 2**20) and grown["onnxruntime"] >= weights
    note = row["device_memory_note"]
    assert "cuMemGetInfo" in note and "integrated" not in note, note
    # The CUDA runtime under ONNX Runtime keeps its retain for good; the gauge's own is gone.
    assert gpu.primary(0).retains == 1 and gpu.driver_stack() in ([], [gpu.primary(0)])


def test_a_plan_moved_with_its_model_counts_its_flops_from_the_model_beside_it(
        jetson: FakeGpu, tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    """A plan built from another name's model in one folder and moved with it to another (a desktop's plan copied
    onto the robot): the model it records by its absolute path is not there, so the FLOP count reads the model of
    that name beside the plan, not a path that names no file."""
    from unetrt.benchmarks.flops import flops_per_image

    built = tmp_path / "built"
    built.mkdir()
    shutil.copy(tiny_model_files["onnx"], built / "mine.onnx")
    _build(built / "mine.onnx", built / "unet.plan")
    robot = tmp_path / "robot"
    shutil.move(built, robot)
    report = _run(["--engine", str(robot / "unet.plan"), "--backend", "tensorrt"], tmp_path)
    (row,) = report["results"]
    assert row["status"] == "ok", row
    assert row["flops_per_image"] == flops_per_image(robot / "mine.onnx", 3, *row["network_input_hw"])


def test_device_memory_another_program_holds_is_not_in_a_rows_figure(
        jetson: FakeGpu, tiny_model_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a GPU where another program already holds memory, a row's figure is the growth its own open and warm-up
    cause, not all the memory in use on the device."""

    class OtherProgram:
        """What holds the memory (freed when it is garbage)."""

    other = OtherProgram()
    assert jetson.hold(other, 1 << 30)
    plan = _build(tiny_model_files["onnx"], tmp_path / "unet.plan")
    grown = _device_growth(monkeypatch, jetson)
    report = _run(["--engine", str(plan), "--backend", "tensorrt"], tmp_path)
    (row,) = report["results"]
    assert row["status"] == "ok" and 0 < grown["tensorrt"] < 1 << 30
    assert row["peak_device_mib"] == pytest.approx(grown["tensorrt"] / 2**20)
    del other


def test_rows_the_default_device_cannot_run_say_why_and_name_device_cpu(jetson: FakeGpu,
                                                                           tiny_model_files: dict[str, Path],
                                                                           tmp_path: Path) -> None:
    """``unet-bench`` with the default ``--device auto`` on a Jetson times on its GPU. The rows that cannot run
    there gave the backends' refusals of a device asked for: "device 'cuda' asked, but torch sees no CUDA GPU; use
    device 'cpu' or 'auto'" (the user asked nothing, and had 'auto'), "backend 'openvino' runs on the CPU; device
    must be 'auto' or 'cpu', got 'cuda'". Each now says why and which flag times it."""
    report = _run_plan_beside_its_onnx_and_pt(tiny_model_files, tmp_path)
    reasons = {row["label"]: row.get("reason") for row in report["results"]}
    on_the_cpu = "; --device auto chose the GPU here, and --device cpu times this row on the CPU"
    expected = {"TensorRT FP16": None,
                "ONNX Runtime FP32": "this onnxruntime has no CUDA provider (onnxruntime-gpu has)" + on_the_cpu,
                "OpenVINO FP32": "OpenVINO runs on the CPU alone" + on_the_cpu,
                "OpenVINO BF16": "OpenVINO runs on the CPU alone" + on_the_cpu}
    if importlib.util.find_spec("torch") is not None:
        expected |= {"PyTorch eager FP32": "this torch sees no CUDA GPU" + on_the_cpu,
                     "PyTorch eager FP16": "this torch sees no CUDA GPU",
                     "PyTorch channels_last FP16": "this torch sees no CUDA GPU",
                     "PyTorch CUDA graphs FP16": "this torch sees no CUDA GPU"}
    assert {label: reasons.get(label) for label in expected} == expected


def test_the_hand_written_yardstick_still_runs_beside_a_jetsons_end_to_end_rows(
        jetson: FakeGpu, tiny_model_files: dict[str, Path], tiny_int8_onnx: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The hand-written OpenVINO pipeline is the reference of the "x hand-written" column on every device: the rows
    OpenVINO cannot run on the GPU that --device auto chose are skipped, this one is not."""
    pytest.importorskip("openvino")
    from unetrt import _tiling  # type: ignore[attr-defined]

    route_cuda_kernels_to(monkeypatch, jetson, _tiling)  # the TensorRT row's frame path
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(tiny_model_files["onnx"], folder / "unet.onnx")
    shutil.copy(tiny_int8_onnx, folder / "unet.int8.onnx")
    plan = _build(folder / "unet.onnx", folder / "unet.plan")
    report = _run(["--engine", str(plan), "--end-to-end", "--size", "32x32"], tmp_path)
    rows = {row["variant"]: row for row in report["results"]}
    assert rows["hand-written-openvino-int8"]["status"] == "ok"
    assert rows["openvino-int8"]["status"] == "skipped" and rows["tensorrt"]["status"] == "ok"
