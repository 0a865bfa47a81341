"""unet-bench end to end on a tiny model: the table, the JSON figures, and one-line errors with exit code 2."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest
from conftest import tiny_info

from unetrt.benchmarks import bench, bench_matmul
from unetrt.benchmarks.bench import (
    add_ratios,
    build_parser,
    format_table,
    frame_shapes,
    locate_model,
    main,
    parse_batches,
    quiet_openmp,
    require_tensorrt,
    select_variants,
)
from unetrt.benchmarks.flops import flops_per_image
from unetrt.benchmarks.stats import describe_cpu
from unetrt.benchmarks.variants import HAND_WRITTEN, Workload, all_variants, open_variant_backend
from unetrt.cpu import usable_cores

FAST = ["--shape", "32x32", "--warmup", "1", "--iterations", "2", "--trials", "2", "--threads", "1"]
FIGURES = {"mean", "p50", "p90", "p99", "min", "max", "median", "trial_medians", "spread_pct"}


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one error line, got: {err!r}"
    return lines[0]


@pytest.fixture(scope="module")
def bare_report(tiny_model_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("bench") / "out.json"
    code = main(["--engine", str(tiny_model_files["onnx"]), "--backend", "onnxruntime", "--backend", "torch",
                 *FAST, "--batch", "1,2", "--json", str(out)])
    assert code == 0
    return dict(json.loads(out.read_text()))


def test_side_by_side_json_has_every_figure(bare_report: dict[str, Any]) -> None:
    ok = [r for r in bare_report["results"] if r["status"] == "ok"]
    assert {r["variant"] for r in ok} == {"torch-fp32", "torch-channels-last", "onnxruntime"}
    assert {r["batch"] for r in ok} == {1, 2}
    for r in ok:
        assert set(r["latency_ms"]) >= FIGURES
        assert r["latency_ms"]["iterations"] == 4
        assert r["throughput_images_per_s"] > 0
        assert r["flops_per_image"] > 0 and r["achieved_tflops"] > 0
        assert r["peak_rss_mib"] > 0 and r["rss_note"]
        assert r["cpu_threads"] == 1
        assert r["device"] == "cpu" and r["timer"] == "perf_counter_ns"
        assert {"numpy", "onnxruntime", "torch"} <= set(r["versions"])
        assert r["network_input_hw"] == [32, 32]
    assert bare_report["machine"]["cpu_model"] and bare_report["machine"]["load_average_before"] is not None
    assert bare_report["settings"]["threads"] == 1


def test_ratios_are_relative_to_torch_eager_fp32_of_the_same_batch(bare_report: dict[str, Any]) -> None:
    results = bare_report["results"]
    for batch in (1, 2):
        base = next(r for r in results if r["variant"] == "torch-fp32" and r["batch"] == batch)
        assert base["speedup_vs_torch_fp32"] == 1.0
        ort = next(r for r in results if r["variant"] == "onnxruntime" and r["batch"] == batch)
        expected = base["latency_ms"]["median"] / ort["latency_ms"]["median"]
        assert ort["speedup_vs_torch_fp32"] == pytest.approx(expected)


def test_gpu_variants_are_listed_as_skipped_with_the_reason_on_cpu(bare_report: dict[str, Any]) -> None:
    skipped = {r["variant"]: r["reason"] for r in bare_report["results"] if r["status"] == "skipped"}
    assert set(skipped) == {"torch-fp16", "torch-cuda-graphs"}
    assert all("CUDA" in reason for reason in skipped.values())


def test_table_is_printed_with_ratios(tiny_model_files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["--engine", str(tiny_model_files["pt"]), "--backend", "torch-fp32",
                         "--backend", "onnxruntime", *FAST, "--note", "shared machine"], capsys)
    assert code == 0
    assert "Note: shared machine" in out
    assert "| PyTorch eager FP32 | cpu | 1x32x32 |" in out
    assert "1.00×" in out and "| ONNX Runtime FP32 |" in out
    assert "Machine:" in out


@pytest.mark.parametrize("mode", ["--end-to-end", "--no-data-transfers"])
def test_other_modes_run(tiny_model_files: dict[str, Path], tmp_path: Path, mode: str,
                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.json"
    code, _, _ = _run(["--engine", str(tiny_model_files["onnx"]), "--backend", "torch-fp32", "--backend",
                       "onnxruntime", *FAST, mode, "--json", str(out)], capsys)
    assert code == 0
    report = json.loads(out.read_text())
    assert report["settings"]["mode"] == mode.removeprefix("--").replace("no-data-transfers", "device")
    assert all(r["status"] == "ok" for r in report["results"])
    assert all(r["cpu_threads"] == 1 for r in report["results"])


def test_end_to_end_frames_from_a_folder(tiny_model_files: dict[str, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    """--frames: the frames are the folder's images, resized to --shape, and the report says so."""
    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(folder / name), rng.integers(0, 256, (40, 50, 3), dtype=np.uint8))
    out = tmp_path / "out.json"
    code, _, _ = _run(["--engine", str(tiny_model_files["onnx"]), "--backend", "onnxruntime", *FAST,
                       "--end-to-end", "--batch", "3", "--frames", str(folder), "--json", str(out)], capsys)
    assert code == 0
    report = json.loads(out.read_text())
    assert report["settings"]["frames"] == str(folder)
    assert any(str(folder) in note for note in report["notes"])
    assert all(r["status"] == "ok" for r in report["results"])


def test_end_to_end_of_a_network_that_gives_nan_is_one_line_and_exit_2(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """--end-to-end times masks; a network whose scores are NaN gives none, and the run says why in one line."""
    from nonfinite_models import write_nonfinite_onnx

    model = write_nonfinite_onnx(tmp_path / "nan.onnx", "nan")
    code, _, err = _run(["--engine", str(model), "--backend", "onnxruntime", *FAST, "--end-to-end",
                         "--json", str(tmp_path / "out.json")], capsys)
    assert code == 2
    line = _one_line_error(err)
    assert line.startswith("error: ") and "the network gave NaN or infinite scores at " in line


@pytest.mark.parametrize("mode", [[], ["--no-data-transfers"]])
def test_network_rows_of_a_network_that_gives_nan_are_skipped_with_the_reason(
        tmp_path: Path, mode: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """The rows that time the network alone (backend.infer, or device buffers) timed a network whose output is NaN
    without a word, while --end-to-end refused it: a benchmark user read a fast row of a broken engine as a
    result. Its warm-up's outputs are checked: the row is skipped with the end-to-end rows' reason (the pixels, the
    cause and fix for its precision) in the table and the JSON; the finite INT8 row beside it runs."""
    from nonfinite_models import write_nonfinite_onnx

    model = write_nonfinite_onnx(tmp_path / "nan.onnx", "nan")
    write_nonfinite_onnx(tmp_path / "nan.int8.onnx", "finite")
    out = tmp_path / "out.json"
    code, text, err = _run(["--engine", str(model), "--backend", "onnxruntime", *FAST, *mode, "--json", str(out)],
                           capsys)
    assert code == 0, err
    rows = {r["variant"]: r for r in json.loads(out.read_text())["results"]}
    assert rows["onnxruntime-int8"]["status"] == "ok"
    skipped = rows["onnxruntime"]
    assert skipped["status"] == "skipped"
    assert re.match(r"the network gave NaN or infinite scores at \d+ of 1024 pixels of the network's output "
                    r"\(the network ran at FP32, ", skipped["reason"]), skipped["reason"]
    assert f"| ONNX Runtime FP32 | cpu | 1x32x32 | skipped: {skipped['reason']} |" in text


@pytest.mark.parametrize("mode", [[], ["--no-data-transfers"]])
def test_a_network_row_of_nan_scores_alone_is_one_line_and_exit_2(tmp_path: Path, mode: list[str],
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """The network rows end as the end-to-end ones do when no row could run: one line, exit 2."""
    from nonfinite_models import write_nonfinite_onnx

    model = write_nonfinite_onnx(tmp_path / "nan.onnx", "nan")
    code, _, err = _run(["--engine", str(model), "--backend", "onnxruntime", *FAST, *mode], capsys)
    assert code == 2
    line = _one_line_error(err)
    assert line.startswith("error: no variant could run here: the network gave NaN or infinite scores at ")
    assert "(the network ran at FP32, so no reduced precision overflowed)" in line


def test_nan_scores_of_rows_of_several_batch_sizes_are_told_once_per_precision(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every row of a network that gives NaN, at batch 1 and 4, on ONNX Runtime and OpenVINO (FP32, and BF16 where
    the CPU has it): each row's own line counts other pixels (one image, four), so the summary line listed the same
    cause and fix once per row and batch. It now tells each precision's cause and fix once, after its rows."""
    pytest.importorskip("openvino")
    from nonfinite_models import write_nonfinite_onnx

    model = write_nonfinite_onnx(tmp_path / "nan.onnx", "nan")
    code, _, err = _run(["--engine", str(model), "--backend", "onnxruntime", "--backend", "openvino", *FAST,
                         "--batch-size", "1,4"], capsys)
    assert code == 2
    line = _one_line_error(err)
    assert line.count("(the network ran at FP32, so no reduced precision overflowed)") == 1, line
    assert line.count("the network gave NaN or infinite scores") == line.count("(the network ran at "), line
    assert re.search(r"ONNX Runtime FP32, OpenVINO FP32: the network gave NaN or infinite scores at up to "
                     r"\d+% of an image's pixels \(the network ran at FP32", line), line


def test_check_scores_counts_a_pixel_as_the_finish_does() -> None:
    """Per image, the pixels whose best score is NaN or infinite: NaN or +inf in any class, -inf only where every
    class is -inf (a -inf that loses says 'never this class', as in Segmenter)."""
    logits = np.zeros((2, 3, 2, 2), np.float32)
    logits[0, 1, 0, 0] = np.nan
    logits[0, 2, 0, 1] = np.inf
    logits[0, 0, 1, 0] = -np.inf  # loses: finite best
    logits[1, :, 1, 1] = -np.inf  # wins: not finite
    with pytest.raises(bench.NonFiniteScoresError) as caught:
        bench.check_scores(logits, "fp16")
    assert caught.value.counts == [2, 1] and caught.value.pixels == 4
    assert "(the network ran at FP16, " in str(caught.value)
    bench.check_scores(np.zeros((1, 1, 3, 3), np.float32), "fp32")
    bench.check_scores(None, "fp32")


def test_rows_that_fail_for_different_reasons_are_each_named_in_the_line(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A model that gives NaN on every row of --end-to-end: OpenVINO BF16's line says to run at FP32 (on a CPU
    without native BF16 the row is refused for that first, with its own fix), the FP32 rows' that FP32 overflowed
    nothing. 'no variant could run here: A; B' named no row, so the user read two fixes that contradict each other
    and could not tell which row each was for."""
    pytest.importorskip("openvino")
    from nonfinite_models import write_nonfinite_onnx

    from unetrt.backends.openvino import cpu_has_bf16

    model = write_nonfinite_onnx(tmp_path / "nan.onnx", "nan")
    code, _, err = _run(["--engine", str(model), "--backend", "onnxruntime", "--backend", "openvino", *FAST,
                         "--end-to-end", "--json", str(tmp_path / "out.json")], capsys)
    assert code == 2
    line = _one_line_error(err)
    assert line.startswith("error: no variant could run here: ")
    # A reason may hold "; " itself (the BF16 refusal's fix): each group starts at a row's label.
    groups = re.split(r"; (?=(?:(?:ONNX Runtime|OpenVINO) (?:FP32|BF16|INT8)(?:, )?)+: )",
                      line.split("no variant could run here: ", 1)[1])
    by_rows = dict(group.split(": ", 1) for group in groups)
    bf16_reason = "the network ran at BF16" if cpu_has_bf16() else "this CPU has no native BF16; use precision 'fp32'"
    assert bf16_reason in by_rows["OpenVINO BF16"], line
    fp32 = next(reason for rows, reason in by_rows.items() if "ONNX Runtime FP32" in rows.split(", "))
    assert "the network ran at FP32" in fp32


def test_workload_frames_come_from_the_images_in_turn(tmp_path: Path) -> None:
    first, second = np.full((20, 30, 3), 40, np.uint8), np.full((20, 30, 3), 200, np.uint8)
    paths = (tmp_path / "1.png", tmp_path / "2.png")
    for path, image in zip(paths, (first, second)):
        cv2.imwrite(str(path), image)
    info = SimpleNamespace(in_channels=3)
    frames = Workload("end-to-end", (10, 15), 3, images=paths).frames(info)  # type: ignore[arg-type]
    assert [f.shape for f in frames] == [(10, 15, 3)] * 3
    assert [int(f[0, 0, 0]) for f in frames] == [40, 200, 40]
    gray_info = SimpleNamespace(in_channels=1)
    gray = Workload("end-to-end", (20, 30), 1, images=paths).frames(gray_info)  # type: ignore[arg-type]
    assert gray[0].shape == (20, 30)
    (tmp_path / "3.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot read"):
        Workload("end-to-end", (20, 30), 1, images=(tmp_path / "3.png",)).frames(info)  # type: ignore[arg-type]


def test_a_frame_whose_name_is_not_utf8_is_one_line_not_a_crash(tiny_model_files: dict[str, Path], tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # cv2.imread crashed the process (a segmentation fault) on such a name: here it would fail the test instead.
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.zeros((20, 30, 3), np.uint8))
    bad = folder / os.fsdecode(b"b\xff.png")
    bad.write_bytes((folder / "a.png").read_bytes())

    def opencv(*args: object) -> None:
        raise AssertionError("OpenCV was handed the name")

    monkeypatch.setattr(cv2, "imread", opencv)
    info = SimpleNamespace(in_channels=3)
    with pytest.raises(ValueError, match=r"image '.*b\\xff\.png' has a name that is not valid UTF-8"):
        Workload("end-to-end", (20, 30), 1, images=(bad,)).frames(info)  # type: ignore[arg-type]
    code, _, err = _run(["--engine", str(tiny_model_files["onnx"]), "--backend", "onnxruntime", *FAST,
                         "--end-to-end", "--frames", str(folder)], capsys)
    assert code == 2 and "has a name that is not valid UTF-8" in _one_line_error(err)


def test_duration_and_plot(tiny_model_files: dict[str, Path], tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    plot = tmp_path / "latency.png"
    code, _, _ = _run(["--engine", str(tiny_model_files["onnx"]), "--backend", "onnxruntime", "--shape", "32x32",
                       "--warmup", "1", "--duration", "0.05", "--trials", "2", "--plot", str(plot)], capsys)
    assert code == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name", ["unet.plan", "unet.engine"])
def test_plan_without_tensorrt_exits_2_with_one_line(name: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    try:
        require_tensorrt()
    except ImportError:
        pass
    else:
        pytest.skip("TensorRT is installed here")
    plan = tmp_path / name
    plan.write_bytes(b"not an engine")
    code, out, err = _run(["--engine", str(plan)], capsys)
    assert code == 2
    assert "TensorRT is not installed" in _one_line_error(err)
    assert out == ""


@pytest.mark.parametrize(("argv", "message"), [
    (["--engine", "{onnx}", "--backend", "tensorflow"], "unknown backend 'tensorflow'"),
    (["--engine", "{onnx}", "--shape", "32by32"], "WIDTHxHEIGHT"),
    (["--engine", "{onnx}", "--batch", "1,x"], "batch must be positive"),
    (["--engine", "{onnx}", "--batch", "0"], "batch must be positive"),
    (["--engine", "{onnx}", "--shapes=image:2x3x32x32", "--batch", "1"], "--shapes asks for batch 2 and --batch-size "
                                                                         "for 1; give one"),
    (["--engine", "/nonexistent/unet.onnx"], "does not exist"),
    (["--engine", "no_such_bundled_model"], "no bundled model"),
    (["--engine", "{onnx}", "--unet-base", "8"], "not allowed with"),
    (["--engine", "{onnx}", "--iterations", "0"], "positive"),
    # unet-stream's line for the same request: the file is FP32, and FP16 on the CPU runs an FP16 file.
    (["--engine", "{onnx}", "--precision", "fp16", "--device", "cpu"],
     "precision 'fp16' picks among a bundled model's files; tiny.onnx runs at the precision it was exported with"),
    (["--engine", "{onnx}", "--plot", "latency.svg"], ".png"),
    (["--loadEngine={onnx}", "--shapes=image:1x5x32x32"], "tiny.onnx takes 3"),
    # The line names the option to change, as for every other argument.
    (["--engine", "{onnx}", "--end-to-end", "--frames", "/nonexistent/frames"],
     "--frames folder '/nonexistent/frames' does not exist"),
    ([], "is required"),
])
def test_bad_arguments_exit_2_with_one_clear_line(tiny_model_files: dict[str, Path], argv: list[str], message: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    argv = [a.format(onnx=tiny_model_files["onnx"]) for a in argv]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors leave through sys.exit
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    assert code == 2
    assert message in _one_line_error(err)
    assert out == ""


@pytest.mark.parametrize("value", ["nan", "inf", "0"])
def test_a_duration_that_never_ends_is_refused(value: str, tiny_model_files: dict[str, Path],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    # --duration nan and inf ran forever.
    with pytest.raises(SystemExit) as exit_info:
        main(["--engine", str(tiny_model_files["onnx"]), "--backend", "onnxruntime", *FAST, "--duration", value])
    assert exit_info.value.code == 2
    assert f"expected a positive finite float, got {value!r}" in capsys.readouterr().err


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_a_seed_no_generator_takes_is_refused_before_the_run(seed: str, tiny_model_files: dict[str, Path],
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    # --seed -1 ran, then said "no variant could run here: expected non-negative integer".
    with pytest.raises(SystemExit) as exit_info:
        main(["--engine", str(tiny_model_files["onnx"]), "--backend", "onnxruntime", *FAST, "--seed", seed])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2 and out == ""
    assert "argument --seed: seed must be an integer from 0 to 4294967295" in _one_line_error(err)


@pytest.mark.parametrize("flag", ["--json", "--markdown"])
def test_a_folder_as_report_file_is_refused_before_the_run(tiny_model_files: dict[str, Path], tmp_path: Path,
                                                           flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    # It ran every trial, then ended in IsADirectoryError's traceback.
    (tmp_path / "a-folder").mkdir()
    code, out, err = _run(["--engine", str(tiny_model_files["onnx"]), "--backend", "onnxruntime", *FAST,
                           flag, str(tmp_path / "a-folder")], capsys)
    assert code == 2 and "it is an existing folder" in _one_line_error(err)
    assert out == ""


def test_a_report_file_that_is_the_model_is_refused(tiny_model_files: dict[str, Path], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    model = Path(shutil.copy(tiny_model_files["onnx"], tmp_path / "mine.onnx"))
    before = model.read_bytes()
    code, _, err = _run(["--engine", str(model), "--backend", "onnxruntime", *FAST, "--json", str(model)], capsys)
    assert code == 2 and "exists; add --overwrite" in _one_line_error(err)
    # --overwrite replaces an earlier report, never the model
    code, _, err = _run(["--engine", str(model), "--backend", "onnxruntime", *FAST, "--json", str(model),
                         "--overwrite"], capsys)
    assert code == 2 and "is the model file" in _one_line_error(err)
    assert model.read_bytes() == before


def test_missing_sibling_file_is_named(tiny_model_files: dict[str, Path], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    lonely = shutil.copy(tiny_model_files["onnx"], tmp_path / "lonely.onnx")
    code, _, err = _run(["--engine", str(lonely), "--backend", "torch", *FAST], capsys)
    assert code == 2
    assert "lonely.pt (same stem, beside lonely.onnx) does not exist" in _one_line_error(err)


def test_default_selection_runs_what_exists_baseline_first(tiny_model_files: dict[str, Path]) -> None:
    model = locate_model(str(tiny_model_files["onnx"]))
    variants, notes = select_variants(None, model, "fp32")
    keys = [v.key for v in variants]
    assert keys[0] == "torch-fp32"
    from unetrt.backends.openvino import openvino_available

    openvino = {"openvino-fp32", "openvino-bf16"} if openvino_available() else set()
    assert set(keys) == {"torch-fp32", "torch-fp16", "torch-channels-last", "torch-cuda-graphs", "onnxruntime",
                         *openvino}
    assert any("tiny.plan" in note for note in notes)
    assert any("tiny.int8.onnx does not exist" in note for note in notes)


def _with_int8_sibling(tiny_model_files: dict[str, Path], tiny_int8_onnx: Path, folder: Path) -> tuple[Path, Path]:
    return (Path(shutil.copy(tiny_model_files["onnx"], folder / "tiny.onnx")),
            Path(shutil.copy(tiny_int8_onnx, folder / "tiny.int8.onnx")))


def test_int8_sibling_adds_the_int8_rows(tiny_model_files: dict[str, Path], tiny_int8_onnx: Path,
                                         tmp_path: Path) -> None:
    from unetrt.backends.openvino import openvino_available

    fp32, int8 = _with_int8_sibling(tiny_model_files, tiny_int8_onnx, tmp_path)
    model = locate_model(str(fp32))
    assert model.files["int8"] == int8
    variants, _ = select_variants(["onnxruntime", "openvino-int8"] if openvino_available() else ["onnxruntime"],
                                  model, "fp32")
    assert [v.key for v in variants][:2] == ["onnxruntime", "onnxruntime-int8"]
    assert all(v.precision == "int8" for v in variants[1:])
    assert all(v.file_key == "int8" for v in variants[1:])


def test_an_fp16_export_finds_the_int8_file_of_the_same_export(tiny_model_files: dict[str, Path], tiny_int8_onnx: Path,
                                                               tiny_fp16_onnx: Path, tmp_path: Path) -> None:
    # unet-bench --model m.fp16.onnx, beside the m.int8.onnx the same unet-export wrote, skipped the INT8 rows:
    # "m.fp16.int8.onnx does not exist", and looked for m.fp16.pt.
    _, int8 = _with_int8_sibling(tiny_model_files, tiny_int8_onnx, tmp_path)
    fp16 = Path(shutil.copy(tiny_fp16_onnx, tmp_path / "tiny.fp16.onnx"))
    model = locate_model(str(fp16))
    assert model.files["onnxruntime"] == fp16  # the file named is the one timed
    assert model.files["int8"] == int8 and "int8" not in model.missing
    assert model.missing["torch"].startswith("tiny.pt (same stem, beside tiny.fp16.onnx)")


def test_int8_rows_run_with_ratios_to_onnxruntime_fp32(tiny_model_files: dict[str, Path], tiny_int8_onnx: Path,
                                                       tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, int8 = _with_int8_sibling(tiny_model_files, tiny_int8_onnx, tmp_path)
    out = tmp_path / "int8.json"
    code, text, _ = _run(["--engine", str(int8), "--precision", "int8", "--backend", "onnxruntime",
                          *FAST, "--json", str(out)], capsys)
    assert code == 0, text
    results = {r["variant"]: r for r in json.loads(out.read_text())["results"]}
    assert set(results) == {"onnxruntime", "onnxruntime-int8"}
    assert results["onnxruntime"]["speedup_vs_onnxruntime_fp32"] == pytest.approx(1.0)
    assert results["onnxruntime-int8"]["precision"] == "int8"
    assert results["onnxruntime-int8"]["model_file"] == str(int8)
    assert "× ORT FP32" in text


def test_the_rows_of_an_fp16_onnx_file_say_fp16(tiny_fp16_onnx: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    # NAME.fp16.onnx (or an FP16 graph made elsewhere) given to unet-bench ran in the rows named 'FP32', with
    # precision 'fp32' in the report: a figure for a precision that did not run.
    out = tmp_path / "fp16.json"
    code, text, _ = _run(["--model", str(tiny_fp16_onnx), "--backend", "onnxruntime", *FAST, "--json", str(out)],
                         capsys)
    assert code == 0, text
    (row,) = json.loads(out.read_text())["results"]
    assert (row["label"], row["precision"]) == ("ONNX Runtime FP16", "fp16")
    assert "| ONNX Runtime FP16 |" in text and "ONNX Runtime FP32 |" not in text


def test_two_reports_naming_one_file_are_refused_before_the_run(tiny_model_files: dict[str, Path], tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    # The Markdown, written after the JSON, replaced it without a word (exit 0).
    report = tmp_path / "report.json"
    code, out, err = _run(["--engine", str(tiny_model_files["onnx"]), "--backend", "onnxruntime", *FAST,
                           "-o", str(report), "--markdown", str(tmp_path / "." / "report.json")], capsys)
    assert (code, out) == (2, "")
    assert _one_line_error(err).endswith("both name " + repr(str(tmp_path / "." / "report.json")) +
                                         "; give each report a file of its own")
    assert not report.exists()


def test_a_precision_no_named_backend_runs_names_the_rows_that_do(tiny_model_files: dict[str, Path],
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    # It said "no bf16 variant can run tiny here (no PyTorch eager FP32 baseline in this run: ...)": a note on
    # something else, and no way out. BF16 is OpenVINO's hint on the FP32 model, which this folder has.
    code, out, err = _run(["--engine", str(tiny_model_files["onnx"]), "--precision", "bf16", "--backend",
                           "onnxruntime", *FAST], capsys)
    assert (code, out) == (2, "")
    assert re.fullmatch(r"error: no bf16 variant can run \S*tiny\.onnx here \(bf16 rows here: openvino-bf16; name one "
                        r"with --backend, or leave --backend out\)", _one_line_error(err))


def test_parse_batches() -> None:
    assert parse_batches("1, 8") == [1, 8]


def test_synthetic_unet_of_a_given_base(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.json"
    code, _, _ = _run(["--unet-base", "4", "--backend", "onnxruntime", *FAST, "--json", str(out)], capsys)
    assert code == 0
    report = json.loads(out.read_text())
    assert report["model"]["base"] == 4 and report["model"]["name"] == "synthetic-base4"
    (result,) = report["results"]
    assert result["status"] == "ok" and result["flops_per_image"] > 0


@pytest.mark.cuda
def test_gpu_variants_run_side_by_side_on_cuda(tiny_model_files: dict[str, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    out = tmp_path / "out.json"
    code, _, _ = _run(["--engine", str(tiny_model_files["pt"]), "--backend", "torch", "--device", "cuda", *FAST,
                       "--json", str(out)], capsys)
    assert code == 0
    report = json.loads(out.read_text())
    assert report["matmul_fp16_tflops"] > 0
    for result in report["results"]:
        assert result["status"] == "ok", result.get("reason")
        assert result["timer"] == "cuda-events" and result["peak_device_mib"] >= 0
        assert result["fraction_of_matmul_peak"] > 0


def test_quiet_openmp_sets_passive_waiting_unless_the_user_chose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert quiet_openmp() == "ACTIVE"
    monkeypatch.delenv("OMP_WAIT_POLICY")
    assert quiet_openmp() == "PASSIVE"
    monkeypatch.setitem(sys.modules, "torch", object())
    assert quiet_openmp() is None


def test_a_row_asked_for_by_name_that_cannot_run_exits_2_after_the_report(
        tiny_model_files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(["--engine", str(tiny_model_files["pt"]), "--backend", "torch-fp32",
                           "--backend", "torch-fp16", *FAST], capsys)
    assert code == 2
    assert "| PyTorch eager FP32 | cpu | 1x32x32 |" in out
    assert _one_line_error(err).startswith("error: torch-fp16 did not run: needs a CUDA GPU")


class _CountingRunner:
    """Stands in for an open variant: each step is logged under the variant's key, so that a test reads how many
    calls unet-bench made and in which order; what the backend does is tested elsewhere."""

    def __init__(self, key: str, log: list[str], threads: int | None) -> None:
        self.key, self.log, self.threads, self.device = key, log, threads, "cpu"
        self.closed = False

    def step(self) -> None:
        self.log.append(self.key)

    def checked_step(self) -> None:
        self.step()

    def close(self) -> None:
        self.closed = True


@dataclass
class _Opened:
    """What unet-bench asked of the variants: (key, threads, workload) per open, and every step's key in order."""

    asked: list[tuple[str, int | None, Workload]] = field(default_factory=list)
    steps: list[str] = field(default_factory=list)
    runners: list[_CountingRunner] = field(default_factory=list)


def _fake_runs_and_clock(monkeypatch: pytest.MonkeyPatch) -> _Opened:
    """Counting runners in place of the backends, and a clock that moves only when read: each perf_counter_ns
    read is 1 ms after the last (every timed call lasts 1 ms), each perf_counter read 0.5 s after the last (a
    trial of n calls lasts n x 0.5 s). The figures then follow from the options alone."""
    opened = _Opened()

    def open_runner(variant: Any, model: Path, device: str, threads: int | None, workload: Workload,
                    info: Any) -> _CountingRunner:
        opened.asked.append((variant.key, threads, workload))
        opened.runners.append(_CountingRunner(variant.key, opened.steps, threads))
        return opened.runners[-1]

    nanoseconds, seconds = itertools.count(0, 1_000_000), itertools.count(0.0, 0.5)
    monkeypatch.setattr(bench, "open_runner", open_runner)
    monkeypatch.setattr(bench, "time", SimpleNamespace(perf_counter_ns=lambda: next(nanoseconds),
                                                       perf_counter=lambda: next(seconds)))
    return opened


def test_every_option_reaches_the_timed_loop_and_the_report(tiny_model_files: dict[str, Path], tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    opened = _fake_runs_and_clock(monkeypatch)
    asked_threads: list[int] = []

    def matmul_rates(threads: int) -> dict[str, Any]:
        asked_threads.append(threads)
        return {"size": 64, "threads": threads, "engines": {"onnxruntime-fp32": 100.0},
                "best": {"fp32": ("onnxruntime-fp32", 100.0)}}

    monkeypatch.setattr(bench_matmul, "measure_matmul_rates", matmul_rates)
    out, markdown = tmp_path / "out.json", tmp_path / "out.md"
    code, text, _ = _run(["--engine", str(tiny_model_files["onnx"]), "--backend", "onnxruntime", "--backend",
                          "torch-fp32", "--shape", "30x21", "--batch", "3", "--warmup", "4", "--iterations", "3",
                          "--trials", "2", "--threads", "2", "--seed", "7", "--matmul", "--json", str(out),
                          "--markdown", str(markdown)], capsys)
    assert code == 0, text
    workload = Workload("bare", (21, 30), 3, 7)
    assert opened.asked == [("torch-fp32", 2, workload), ("onnxruntime", 2, workload)]
    # 4 warm-up calls each, then per trial one untimed call and 3 timed ones, the second trial in turned order.
    torch, ort = ["torch-fp32"] * 4, ["onnxruntime"] * 4
    assert opened.steps == torch + ort + torch + ort + ort + torch
    assert all(runner.closed for runner in opened.runners)
    assert asked_threads == [2]
    report = json.loads(out.read_text())
    assert {k: report["settings"][k] for k in ("warmup", "iterations_per_trial", "trials", "threads", "batches",
                                               "frame_shapes_hw", "seed")} == {
        "warmup": 4, "iterations_per_trial": 3, "trials": 2, "threads": 2, "batches": [3],
        "frame_shapes_hw": [[21, 30]], "seed": 7}
    # 30x21 frames go into the network mirror-padded to the next multiple of 4 (depth 3): 32x24.
    flops = flops_per_image(tiny_model_files["onnx"], 3, 24, 32)
    for row in report["results"]:
        assert row["network_input_hw"] == [24, 32] and row["flops_per_image"] == flops
        assert row["latency_ms"]["median"] == 1.0 and row["latency_ms"]["trial_medians"] == [1.0, 1.0]
        assert row["samples_ms"] == [1.0] * 6
        # 3 timed calls of 3 images in 1.5 s each trial: 6 images a second.
        assert row["throughput_images_per_s"] == 6.0
        assert row["achieved_tflops"] == pytest.approx(flops * 6 / 1e12)
        assert row["fraction_of_matmul_rate"] == pytest.approx(flops * 6 / 1e9 / 100.0)
    written = markdown.read_text()
    for shown in (text, written):
        assert f"Machine: {describe_cpu(report['machine'])}, " in shown
        assert "2 trials x 3 after 4 warm-up." in shown
        assert "| onnxruntime-fp32 | 100.0 |" in shown
        assert ("| ONNX Runtime FP32 | cpu | 3x24x32 | 1.00 | 0.0 | 1.00 | 1.00 | 1.00 | 1.00 | 1.00 | 1.00 | 6.0 | "
                "1.00× | 1.00× | – |") in shown


def test_duration_frames_and_the_default_thread_count_reach_the_run(tiny_model_files: dict[str, Path],
                                                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    opened = _fake_runs_and_clock(monkeypatch)
    folder = tmp_path / "frames"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(folder / name), np.zeros((32, 32, 3), np.uint8))
    out = tmp_path / "out.json"
    code, text, _ = _run(["--engine", str(tiny_model_files["onnx"]), "--backend", "onnxruntime", "--shape", "32x32",
                          "--end-to-end", "--frames", str(folder), "--warmup", "1", "--duration", "1.2",
                          "--iterations", "50", "--trials", "2", "--json", str(out)], capsys)
    assert code == 0, text
    images = (folder / "a.png", folder / "b.png")
    assert opened.asked == [("onnxruntime", usable_cores(), Workload("end-to-end", (32, 32), 1, 0, images))]
    report = json.loads(out.read_text())
    (row,) = report["results"]
    # The clock reads 0.5 s later at every call: the third call ends past 1.2 s, in each of the 2 trials.
    assert row["latency_ms"]["iterations"] == 6
    assert report["settings"]["threads"] == usable_cores()
    assert report["settings"]["iterations_per_trial"] == "1.2s"


def test_overwrite_replaces_each_report_whole(tiny_model_files: dict[str, Path], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    _fake_runs_and_clock(monkeypatch)
    reports = {flag: tmp_path / name for flag, name in (("--json", "out.json"), ("--markdown", "out.md"),
                                                         ("--plot", "out.png"))}
    for report in reports.values():
        report.write_text("earlier\n")
        # A second name for the earlier bytes: written over in place (where a disk that filled halfway left half an
        # earlier result) they change; replaced by a new file they stay.
        os.link(report, report.with_name(f"earlier{report.suffix}"))
    flags = [part for flag, report in reports.items() for part in (flag, str(report))]
    code, text, _ = _run(["--engine", str(tiny_model_files["onnx"]), "--backend", "onnxruntime", *FAST, *flags,
                          "--overwrite"], capsys)
    assert code == 0, text
    assert json.loads(reports["--json"].read_text())["schema"] == bench.SCHEMA
    assert reports["--markdown"].read_text() == text
    assert reports["--plot"].read_bytes().startswith(b"\x89PNG")
    assert [report.with_name(f"earlier{report.suffix}").read_text() for report in reports.values()] == ["earlier\n"] * 3


def test_a_workload_given_twice_is_timed_once(tiny_model_files: dict[str, Path], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    # Timed twice, each copy's rows took their ratios from the other copy's reference row: eager FP32 was not 1.00x
    # of itself, and the two rows of a comparison were not timed interleaved.
    opened = _fake_runs_and_clock(monkeypatch)
    out = tmp_path / "out.json"
    code, text, _ = _run(["--engine", str(tiny_model_files["onnx"]), "--backend", "onnxruntime", "--backend",
                          "torch-fp32", "--shape", "32x32", "--shape", "32x32", "--batch", "1,1", "--warmup", "1",
                          "--iterations", "1", "--trials", "1", "-o", str(out)], capsys)
    assert code == 0, text
    assert [key for key, _, _ in opened.asked] == ["torch-fp32", "onnxruntime"]
    report = json.loads(out.read_text())
    assert report["settings"]["frame_shapes_hw"] == [[32, 32]] and report["settings"]["batches"] == [1]
    assert [row["variant"] for row in report["results"]] == ["torch-fp32", "onnxruntime"]


def test_trial_figures_are_medians_over_the_trials_of_a_batch() -> None:
    variant = all_variants("fp32")["onnxruntime"]
    measured = bench._Measured(variant, _CountingRunner("onnxruntime", [], 1), None, 3 * bench.MIB, None, None,
                               latencies=[[1.0, 1.0], [2.0, 2.0], [1.0, 1.0, 1.0, 1.0]], walls=[1.0, 1.0, 8.0])
    figures = bench._figures(measured, 2, 10**9, "perf_counter_ns", "cpu", True)
    # Images a second per trial: 2 x 2 / 1 s, 2 x 2 / 1 s, 4 x 2 / 8 s = 4, 4, 1: median 4 (the mean would be 3).
    assert figures["throughput_images_per_s"] == 4.0
    assert figures["achieved_tflops"] == pytest.approx(10**9 * 4.0 / 1e12)
    # Median of the trial medians 1, 2, 1.
    assert figures["latency_ms"]["median"] == 1.0
    assert figures["samples_ms"] == [1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 1.0, 1.0]
    assert figures["peak_rss_mib"] == 3.0 and figures["cpu_threads"] == 1


def _timed_row(variant: str, frame_hw: list[int], batch: int, median: float | None,
               precision: str = "fp32") -> dict[str, Any]:
    row: dict[str, Any] = {"variant": variant, "mode": "bare", "frame_hw": frame_hw, "batch": batch,
                           "precision": precision, "status": "skipped" if median is None else "ok"}
    if median is not None:
        row["latency_ms"] = {"median": median}
    return row


def test_ratios_compare_rows_of_the_same_frame_size_and_batch_only() -> None:
    rows = [_timed_row("torch-fp32", [32, 32], 1, 4.0), _timed_row("onnxruntime", [32, 32], 1, 2.0),
            _timed_row("torch-fp32", [64, 64], 1, 10.0), _timed_row("onnxruntime", [64, 64], 1, 5.0),
            _timed_row("onnxruntime", [64, 64], 2, 8.0), _timed_row("torch-fp16", [32, 32], 1, None)]
    add_ratios(rows)
    # 4 / 2 and 10 / 5 over eager FP32 of the same size; batch 2 has no baseline; a skipped row has no ratio.
    assert [r["speedup_vs_torch_fp32"] for r in rows] == [1.0, 2.0, 1.0, 2.0, None, None]
    assert [r["speedup_vs_onnxruntime_fp32"] for r in rows] == [0.5, 1.0, 0.5, 1.0, 1.0, None]
    assert [r["speedup_vs_hand_written"] for r in rows] == [None] * 6


def test_an_onnx_runtime_row_of_an_fp16_file_is_no_fp32_reference() -> None:
    # The column "x ORT FP32" gave every row's speed-up over the ONNX Runtime row even when it ran an FP16 file.
    rows = [_timed_row("torch-fp32", [32, 32], 1, 4.0), _timed_row("onnxruntime", [32, 32], 1, 2.0, "fp16")]
    add_ratios(rows)
    assert [r["speedup_vs_onnxruntime_fp32"] for r in rows] == [None, None]
    assert [r["speedup_vs_torch_fp32"] for r in rows] == [1.0, 2.0]


def _fp32_and_fp16_models(tiny_model_files: dict[str, Path], tiny_fp16_onnx: Path, tmp_path: Path) -> Path:
    """A folder with the tiny model's FP32 ONNX, checkpoint and FP16 ONNX side by side, as a user keeps them."""
    folder = tmp_path / "models"
    folder.mkdir()
    for path in (tiny_model_files["onnx"], tiny_model_files["pt"], tiny_fp16_onnx):
        (folder / path.name).write_bytes(path.read_bytes())
    return folder


def test_fp16_on_the_cpu_times_the_file_unet_stream_runs_there(
        tiny_model_files: dict[str, Path], tiny_fp16_onnx: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    # unet-bench --precision fp16 refused the CPU ("needs a CUDA GPU") while unet-stream --precision fp16 ran the
    # FP16 file there: the bench now times that file, on the rows that run it, beside PyTorch eager FP32.
    from unetrt.backends import choose_model
    from unetrt.backends.openvino import openvino_available

    folder = _fp32_and_fp16_models(tiny_model_files, tiny_fp16_onnx, tmp_path)
    out = tmp_path / "fp16.json"
    given = folder / "tiny.fp16.onnx"
    code, text, _ = _run(["--model", str(given), "--precision", "fp16", "--device", "cpu", *FAST,
                          "--json", str(out)], capsys)
    assert code == 0, text
    rows = {r["variant"]: r for r in json.loads(out.read_text())["results"]}
    streamed = choose_model(str(given), "auto", "fp16", "cpu")
    assert streamed.path == given and streamed.precision == "fp16"
    assert rows.keys() == {"torch-fp32", "onnxruntime", *(["openvino-fp32"] if openvino_available() else [])}
    for key in rows.keys() - {"torch-fp32"}:
        assert (rows[key]["precision"], rows[key]["model_file"], rows[key]["status"]) == ("fp16", str(given), "ok")
        assert rows[key]["speedup_vs_onnxruntime_fp32"] is None
    assert rows["torch-fp32"]["precision"] == "fp32"



def test_speedups_over_the_hand_written_pipeline_are_taken_against_its_int8_row() -> None:
    # The hand-written OpenVINO pipeline runs the INT8 model: its row is the reference of the "x hand-written"
    # column, at int8, as the other references are at their fp32.
    rows = [_timed_row(HAND_WRITTEN, [32, 32], 1, 4.0, "int8"), _timed_row("openvino-int8", [32, 32], 1, 2.0, "int8")]
    add_ratios(rows)
    assert [r["speedup_vs_hand_written"] for r in rows] == [1.0, 2.0]


def test_fp16_on_the_cpu_with_only_the_pytorch_rows_is_refused(
        tiny_model_files: dict[str, Path], tiny_fp16_onnx: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    # --backend torch leaves only PyTorch eager FP32 on a CPU: an FP16 benchmark with no FP16 row is refused, not
    # reported as one.
    folder = _fp32_and_fp16_models(tiny_model_files, tiny_fp16_onnx, tmp_path)
    code, out, err = _run(["--model", str(folder / "tiny.fp16.onnx"), "--precision", "fp16", "--device", "cpu",
                           "--backend", "torch", *FAST], capsys)
    assert code == 2 and out == ""
    assert "no fp16 variant can run" in _one_line_error(err) and "--backend" in _one_line_error(err)


def test_fp16_on_the_cpu_of_a_bundled_model_times_its_fp16_file(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # unet-bench --model camvid --precision fp16 on a CPU: the bundled camvid.fp16.onnx that unet-stream runs there.
    out = tmp_path / "camvid.json"
    code, text, _ = _run(["--model", "camvid", "--precision", "fp16", "--device", "cpu", "--backend",
                          "onnxruntime", *FAST, "--json", str(out)], capsys)
    assert code == 0, text
    rows = {r["variant"]: r for r in json.loads(out.read_text())["results"]}
    assert Path(rows["onnxruntime"]["model_file"]).name == "camvid.fp16.onnx"
    assert (rows["onnxruntime"]["precision"], rows["onnxruntime"]["status"]) == ("fp16", "ok")


def _table_row(**changes: Any) -> dict[str, Any]:
    """A timed row of the bare mode with a distinct value in every column, ``changes`` applied."""
    latency = {"median": 2.0, "spread_pct": 12.5, "mean": 2.5, "p50": 2.1, "p90": 3.0, "p99": 4.0, "min": 1.5,
               "max": 5.0}
    row = {"status": "ok", "label": "ONNX Runtime FP32", "device": "cpu", "mode": "bare", "frame_hw": [30, 45],
           "batch": 2, "network_input_hw": [32, 48], "latency_ms": latency, "throughput_images_per_s": 400.0,
           "speedup_vs_torch_fp32": 1.5, "speedup_vs_onnxruntime_fp32": 0.75, "speedup_vs_hand_written": None,
           "achieved_tflops": 0.0123, "fraction_of_matmul_rate": 0.25, "peak_rss_mib": 300.4, "peak_device_mib": None}
    return {**row, **changes}


def test_the_table_puts_each_figure_in_its_column() -> None:
    line = format_table([_table_row()]).splitlines()[2]
    assert line == ("| ONNX Runtime FP32 | cpu | 2x32x48 | 2.00 | 12.5 | 2.50 | 2.10 | 3.00 | 4.00 | 1.50 | 5.00 | "
                    "400.0 | 1.50× | 0.75× | – | 0.012 | 25% | 300 | – |")


def test_end_to_end_rows_name_the_frames_they_timed() -> None:
    # End to end, a model with a working size runs every frame size at that size: two --size values gave rows with
    # the same input cell, and the table did not say which row timed which frames.
    rows = [_table_row(mode="end-to-end", frame_hw=frame_hw, network_input_hw=[176, 224])
            for frame_hw in ([360, 480], [720, 960])]
    inputs = [line.split(" | ")[2] for line in format_table(rows).splitlines()[2:]]
    assert inputs == ["2x360x480 frames (network 2x176x224)", "2x720x960 frames (network 2x176x224)"]


def test_each_row_is_timed_once_baseline_first_and_its_absence_is_noted(tiny_model_files: dict[str, Path]) -> None:
    model = locate_model(str(tiny_model_files["onnx"]))
    variants, _ = select_variants(["onnxruntime", "torch", "torch-fp32"], model, "fp32")
    assert [v.key for v in variants] == ["torch-fp32", "onnxruntime", "torch-fp16", "torch-channels-last",
                                         "torch-cuda-graphs"]
    _, notes = select_variants(["onnxruntime"], model, "fp32")
    assert "no PyTorch eager FP32 baseline in this run: ratios are left empty" in notes


def test_device_cuda_without_a_gpu_is_one_line(tiny_model_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(bench, "_torch_cuda", lambda: None)
    monkeypatch.setattr("unetrt.backends.tensorrt_gpu_available", lambda: False)
    code, out, err = _run(["--engine", str(tiny_model_files["onnx"]), "--backend", "onnxruntime", *FAST,
                           "--device", "cuda"], capsys)
    assert code == 2 and out == ""
    assert "--device cuda asked, but no CUDA GPU is visible" in _one_line_error(err)


def _onnxruntime_gpu_desktop(monkeypatch: pytest.MonkeyPatch, driver_version: int = 12060) -> Any:
    """A desktop whose GPU only onnxruntime-gpu runs: a CPU build of torch, no TensorRT, no pycuda (fakes)."""
    from fakes.cuda import FakeGpu, install_fake_gpu
    from fakes.onnxruntime_cuda import install_fake_onnxruntime_cuda

    gpu = install_fake_gpu(monkeypatch, FakeGpu(name="NVIDIA GeForce RTX 4070", integrated=False,
                                                driver_version=driver_version))
    install_fake_onnxruntime_cuda(monkeypatch, gpu)
    for module in ("tensorrt", "pycuda", "pycuda.driver"):
        monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setattr(bench, "_torch_cuda", lambda: None)
    return gpu


def test_onnx_runtime_on_a_gpu_only_onnxruntime_gpu_runs_is_timed_there(
        tiny_model_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """`unet-bench --backend onnxruntime --device cuda` with onnxruntime-gpu and a CPU build of torch: "no CUDA GPU
    is visible (neither to torch nor to TensorRT with pycuda)", where the GPU runs ONNX Runtime's CUDA provider (and
    without pycuda, naming the GPU asked for pycuda "to run TensorRT engines"). The row runs on it, the GPU named
    by the driver."""
    _onnxruntime_gpu_desktop(monkeypatch)
    code, out, err = _run(["--engine", str(tiny_model_files["onnx"]), "--backend", "onnxruntime", *FAST,
                           "--device", "cuda"], capsys)
    assert code == 0, err
    assert "GPU: NVIDIA GeForce RTX 4070;" in out
    (row,) = [line for line in out.splitlines() if line.startswith("| ONNX Runtime FP32 |")]
    assert "| cuda:0 |" in row


@pytest.mark.parametrize("mode", [[], ["--no-data-transfers"]], ids=["host", "device-buffers"])
def test_a_cuda_provider_failing_for_its_own_reason_is_one_line_and_nothing_on_stdout(
        tiny_model_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        mode: list[str]) -> None:
    """The driver is older than onnxruntime-gpu's CUDA ([DRIVER]): the device-buffer runner made its own session,
    so ORT's "EP Error" banner landed on stdout, in the report, before a RuntimeError of a CPU session given device
    memory. Both modes stop with unetrt's line naming the driver, and stdout stays empty."""
    _onnxruntime_gpu_desktop(monkeypatch, driver_version=11080)
    code, out, err = _run(["--engine", str(tiny_model_files["onnx"]), "--backend", "onnxruntime", *FAST,
                           "--device", "cuda", *mode], capsys)
    assert code == 2 and out == ""
    line = _one_line_error(err)
    assert "CUDA failure 35: CUDA driver version is insufficient for CUDA runtime version" in line
    assert "update the NVIDIA driver" in line


@pytest.mark.parametrize("mode", [[], ["--no-data-transfers"]], ids=["host", "device-buffers"])
def test_a_cuda_provider_failing_inside_the_first_run_is_one_line_and_exit_2(
        tiny_model_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        mode: list[str]) -> None:
    """onnxruntime-gpu's session opens, then its first Run fails in the provider (cuDNN's libraries missing at the
    first convolution: EP_FAIL, [RUN-FAILS]): ONNX Runtime's own EPFail ended the run in a traceback, and so did
    its RuntimeError("Error in execution: ...") of the device mode's IO binding. The row is skipped with unetrt's
    line naming the fix, and the command ends in it with exit code 2."""
    from fakes.onnxruntime_cuda import CUDNN_FRONTEND_FAILED

    _onnxruntime_gpu_desktop(monkeypatch)
    sys.modules["onnxruntime"]._fake_cuda_provider.run_failure = CUDNN_FRONTEND_FAILED  # type: ignore[attr-defined]
    code, out, err = _run(["--engine", str(tiny_model_files["onnx"]), "--backend", "onnxruntime", *FAST,
                           "--device", "cuda", *mode], capsys)
    assert code == 2 and out == ""
    line = _one_line_error(err)
    assert line.startswith("error: no variant could run here: ONNX Runtime's CUDA provider failed running tiny.onnx ")
    assert "(CUDNN_FE failure 11: CUDNN_BACKEND_API_FAILED)" in line
    assert "pip install 'onnxruntime-gpu[cuda,cudnn]'" in line


def _rows_and_logits(argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                     capsys: pytest.CaptureFixture[str], exit_code: int = 0) -> tuple[list[dict[str, Any]],
                                                                                    list[np.ndarray]]:
    """unet-bench ``argv``, which must end with ``exit_code``: its JSON rows and the logits of each warm-up call (what
    the rows check)."""
    seen: list[np.ndarray] = []
    check = bench.check_scores

    def check_scores(logits: np.ndarray | None, precision: str | None) -> None:
        seen.append(np.array(logits))
        check(logits, precision)

    monkeypatch.setattr(bench, "check_scores", check_scores)
    report = tmp_path / f"report{len(list(tmp_path.iterdir()))}.json"
    code, _, err = _run([*argv, "--json", str(report)], capsys)
    assert code == exit_code, err
    return json.loads(report.read_text())["results"], seen


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_onnx_runtime_s_device_mode_on_onnxruntime_gpu_gives_the_bare_mode_s_logits_on_the_device(
        tiny_model_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], device: str) -> None:
    """`unet-bench --backend onnxruntime --device cuda --no-data-transfers` with onnxruntime-gpu: the batch lives in
    the GPU's memory (an OrtValue there, bound as the input) and the output stays there; the row names the GPU as
    the bare row does ("cuda:0", it said "cuda") and its logits are the bare mode's of the same batch. On the CPU
    alike, with host values."""
    gpu = _onnxruntime_gpu_desktop(monkeypatch)
    provider = sys.modules["onnxruntime"]._fake_cuda_provider  # type: ignore[attr-defined]
    argv = ["--engine", str(tiny_model_files["onnx"]), "--backend", "onnxruntime", *FAST, "--device", device]
    (bare,), bare_logits = _rows_and_logits(argv, tmp_path, monkeypatch, capsys)
    runs = len(provider.runs)
    (row,), logits = _rows_and_logits([*argv, "--no-data-transfers"], tmp_path, monkeypatch, capsys)
    assert (row["status"], row["mode"], row["device"]) == ("ok", "device", bare["device"])
    assert row["device"] == ("cuda:0" if device == "cuda" else "cpu")
    assert np.array_equal(logits[0], bare_logits[0]) and logits[0].dtype == bare_logits[0].dtype
    if device == "cuda":
        # Every call ran in the provider through IO binding (whose Run the fake refuses on memory that is not the
        # device's, [BUFFER]), and the device memory went with the row.
        assert len(provider.runs) - runs >= 1 + 2 * 2  # the warm-up call, 2 trials of 2 iterations
        assert gpu.live("device") == 0


@pytest.mark.parametrize("mode", [[], ["--no-data-transfers"]], ids=["host", "device-buffers"])
def test_a_pytorch_row_on_a_gpu_its_torch_does_not_see_says_so_in_each_mode(
        tiny_model_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], mode: list[str]) -> None:
    """A CPU build of torch beside onnxruntime-gpu: the bare mode's PyTorch row is skipped because torch sees no
    CUDA GPU; the device mode's loaded the checkpoint onto 'cuda' all the same and called it "damaged or truncated"
    (torch.load's refusal of a CUDA map_location). Both name torch's missing GPU, and the ONNX Runtime row runs."""
    pytest.importorskip("torch")
    _onnxruntime_gpu_desktop(monkeypatch)
    rows, _ = _rows_and_logits(["--engine", str(tiny_model_files["onnx"]), "--backend", "torch-fp32", "--backend",
                                "onnxruntime", *FAST, "--device", "cuda", *mode], tmp_path, monkeypatch, capsys,
                               exit_code=2)  # a row named that could not run
    assert [(row["variant"], row["status"]) for row in rows] == [("torch-fp32", "skipped"), ("onnxruntime", "ok")]
    assert rows[0]["reason"] == "device 'cuda' asked, but torch sees no CUDA GPU; use device 'cpu' or 'auto'"


@pytest.mark.parametrize("mode", [[], ["--no-data-transfers"]], ids=["host", "device-buffers"])
def test_a_network_of_float16_input_runs_its_batch_cast_in_each_mode(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], mode: list[str]) -> None:
    """A network whose input is float16 (an FP16 graph exported without keeping float32 inputs): the bare mode
    casts the batch, the device mode bound the float32 batch, and ONNX Runtime's "Unexpected input data type" ended
    the command in a traceback. Both run, with the same logits."""
    from conftest import write_described_onnx
    from onnx import TensorProto, helper

    _onnxruntime_gpu_desktop(monkeypatch)
    model = write_described_onnx(tmp_path / "half.onnx", [helper.make_node("Identity", ["image"], ["logits"])],
                                 {"logits": TensorProto.FLOAT16}, input_shape=(1, 3, "h", "w"),
                                 input_type=TensorProto.FLOAT16)
    argv = ["--engine", str(model), "--backend", "onnxruntime", *FAST, "--device", "cuda"]
    (row,), logits = _rows_and_logits([*argv, *mode], tmp_path, monkeypatch, capsys)
    _, bare_logits = _rows_and_logits(argv, tmp_path, monkeypatch, capsys)
    assert row["status"] == "ok" and row["device"] == "cuda:0"
    assert np.array_equal(logits[0], bare_logits[0])


@pytest.mark.parametrize("mode", [[], ["--no-data-transfers"]], ids=["host", "device-buffers"])
def test_a_fixed_input_other_than_the_workload_s_is_one_line_in_each_mode(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], mode: list[str]) -> None:
    """A network fixed at 16 x 16 timed at 32 x 32: the bare mode refuses in unetrt's line naming the fix; the device
    mode bound the batch all the same, and ONNX Runtime's "Got invalid dimensions" ended the command in a
    traceback."""
    from conftest import write_described_onnx
    from onnx import TensorProto, helper

    _onnxruntime_gpu_desktop(monkeypatch)
    model = write_described_onnx(tmp_path / "fixed.onnx", [helper.make_node("Identity", ["image"], ["logits"])],
                                 {"logits": TensorProto.FLOAT}, input_shape=(1, 3, 16, 16))
    code, out, err = _run(["--engine", str(model), "--backend", "onnxruntime", *FAST, "--device", "cuda", *mode],
                          capsys)
    assert code == 2 and out == ""
    assert "fixed.onnx takes a fixed input of 1 x 3 x 16 x 16 (N x C x H x W), not 1 x 3 x 32 x 32" in \
        _one_line_error(err)


def test_frames_are_timed_at_the_working_size_the_model_states() -> None:
    info = tiny_info(working_size=(64, 48))
    model = bench.ModelFiles("tiny", {}, {}, info)
    assert frame_shapes(None, model) == ([(48, 64)], None)
    assert frame_shapes([(30, 21)], model) == ([(21, 30)], None)
    # End to end, Segmenter resizes the frame to the working size (64x48); the bare modes pad the frame itself.
    assert bench._network_hw(info, (100, 201), "end-to-end") == (48, 64)
    assert bench._network_hw(info, (100, 201), "bare") == (100, 204)
    assert Workload("bare", (21, 30), 1).network_batch(info).shape == (1, 3, 24, 32)


def test_random_frames_follow_the_seed() -> None:
    info = tiny_info()
    first, again, other = (Workload("bare", (8, 8), 1, seed).frames(info)[0] for seed in (1, 1, 2))
    assert np.array_equal(first, again) and not np.array_equal(first, other)


def test_the_documented_defaults() -> None:
    args = build_parser().parse_args(["--engine", "camvid"])
    # The help texts say: 5 warm-up calls, 20 timed iterations per trial, 5 trials, batch 1.
    assert (args.warmup, args.iterations, args.trials, args.batch_size) == (5, 20, 5, [1])


def test_the_device_mode_rows_run_on_the_threads_asked(tiny_model_files: dict[str, Path], tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    torch = pytest.importorskip("torch")
    from unetrt.backends import onnxruntime as onnxruntime_backend
    from unetrt.backends.openvino import openvino_available

    asked: list[int | None] = []
    real_options = onnxruntime_backend.session_options

    def session_options(threads: int | None = None) -> Any:
        asked.append(threads)
        return real_options(threads)

    monkeypatch.setattr(onnxruntime_backend, "session_options", session_options)
    openvino = ["--backend", "openvino-fp32"] if openvino_available() else []
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # not the 1 asked below: a PyTorch row that leaves its threads alone reports 2
    try:
        out = tmp_path / "out.json"
        code, text, _ = _run(["--engine", str(tiny_model_files["onnx"]), "--backend", "torch-fp32", "--backend",
                              "onnxruntime", *openvino, *FAST, "--no-data-transfers", "--json", str(out)], capsys)
    finally:
        torch.set_num_threads(before)
    assert code == 0, text
    rows = json.loads(out.read_text())["results"]
    assert len(rows) == (3 if openvino else 2)
    assert all(row["status"] == "ok" and row["cpu_threads"] == 1 for row in rows), rows
    assert asked == [1]


def test_the_bf16_row_asks_openvino_for_bf16(tiny_model_files: dict[str, Path]) -> None:
    pytest.importorskip("openvino")
    variant = all_variants("fp32")["openvino-bf16"]
    assert variant.precision == "bf16"
    try:
        backend = open_variant_backend(variant, tiny_model_files["onnx"], "cpu", 1)
    except ValueError as exc:
        # A CPU without native BF16 refuses the row, rather than time FP32 under the BF16 label.
        assert "no native BF16" in str(exc)
    else:
        backend.close()
        assert backend.precision == "bf16"


def test_the_runtime_alone_benchmarks_without_onnx(tiny_model_files: dict[str, Path], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    # README: unet-bench needs the runtime only; a wheel installed without the export extra has no onnx, and the
    # FLOP counter's module-level `import onnx` made every unet-bench a traceback there.
    monkeypatch.setitem(sys.modules, "onnx", None)
    out = tmp_path / "out.json"
    code, _, _ = _run(["--engine", str(tiny_model_files["onnx"]), "--backend", "onnxruntime", *FAST, "-o", str(out)],
                      capsys)
    report = json.loads(out.read_text())
    assert code == 0
    assert [(r["status"], r["flops_per_image"]) for r in report["results"]] == [("ok", None)]
    assert "onnx is not installed (pip install onnx): FLOPs and TFLOP/s are not counted" in report["notes"]


def test_unet_base_without_torch_names_the_cpu_build(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    # It said "pip install 'unetrt[export]'", which on Linux leaves torch out (PyPI's is a CUDA build).
    monkeypatch.setitem(sys.modules, "torch", None)
    code, out, err = _run(["--unet-base", "4", "--backend", "onnxruntime", *FAST], capsys)
    assert code == 2 and out == ""
    assert _one_line_error(err) == (
        "error: --unet-base builds the model with PyTorch and onnx, and 'torch' is not installed: install the "
        "PyTorch build you want first (the CPU build: pip install torch==2.13.0+cpu --extra-index-url "
        "https://download.pytorch.org/whl/cpu), then pip install 'unetrt[export]'")


def test_check_scores_refuses_an_infinite_winner_and_names_only_the_images_that_have_one() -> None:
    """A +inf beside finite scores wins the pixel (the finish counts it), and a batch where one image is finite and
    the other is not is refused, naming the pixels of each image."""
    logits = np.zeros((2, 3, 2, 2), np.float32)
    logits[1, 2, 0, 1] = np.inf
    with pytest.raises(bench.NonFiniteScoresError) as caught:
        bench.check_scores(logits, "fp16")
    assert caught.value.counts == [0, 1]
