"""bench_main_job: whole unet-stream processes timed against each other, and its errors."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from unetrt.benchmarks import bench_main_job


def test_every_way_runs_the_clip_and_the_baseline_comes_first(tmp_path: Path) -> None:
    assert bench_main_job.main(["--repeats", "1", "--max-frames", "4", "--hide-ffmpeg",
                                "--results-dir", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "main_job_cpu.json").read_text())
    assert [row["way"] for row in result["rows"]] == ["onnxruntime fp32, one worker", "default",
                                                      "default, one worker"]
    assert result["baseline"] == "onnxruntime fp32, one worker" and result["ffmpeg_hidden"]
    for row in result["rows"]:
        assert row["frames"] == 4 and row["fps"] > 0 and row["codec"] == "mpeg4", row
    assert result["rows"][0]["x_baseline"] == 1.0
    assert result["rows"][0]["runtime"]["backend"] == "onnxruntime"
    assert result["rows"][2]["runtime"]["workers"] == 1
    assert "| default |" in (tmp_path / "main_job_cpu.md").read_text()


def test_working_size_ways_run_the_main_job_at_that_size(tmp_path: Path) -> None:
    assert bench_main_job.main(["--repeats", "1", "--max-frames", "2", "--working-size", "192x144",
                                "--results-dir", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "main_job_cpu.json").read_text())
    row = next(row for row in result["rows"] if row["way"] == "default at 192x144")
    assert row["runtime"]["working_size"] == "192x144" and "--working-size 192x144" in row["command"]
    assert "working size 192x144 |" in (tmp_path / "main_job_cpu.md").read_text()


def test_another_checkouts_stream_is_the_baseline(tmp_path: Path) -> None:
    stream = Path(sys.executable).parent / "unet-stream"
    assert bench_main_job.main(["--repeats", "1", "--max-frames", "2", "--way", f"again={stream}",
                                "--results-dir", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "main_job_cpu.json").read_text())
    assert result["baseline"] == "again" and result["rows"][0]["way"] == "again"
    assert len(result["rows"]) == 4


@pytest.mark.parametrize(("argv", "words"), [
    (["--way", "no-equals-sign"], "NAME=EXECUTABLE"),
    (["--way", "old=/nonexistent/unet-stream"], "does not exist"),
    (["--repeats", "0"], "--repeats must be at least 1"),
    (["--max-frames", "0"], "--max-frames must be at least 1"),
])
def test_bad_arguments_are_one_line_and_exit_2(argv: list[str], words: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main_job.main([*argv, "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and "\n" not in err
    assert not list(tmp_path.iterdir())


def test_path_without_ffmpeg_drops_only_its_folders(tmp_path: Path) -> None:
    with_ffmpeg, without = tmp_path / "a", tmp_path / "b"
    with_ffmpeg.mkdir()
    without.mkdir()
    (with_ffmpeg / "ffmpeg").touch()
    assert bench_main_job.path_without_ffmpeg(os.pathsep.join([str(with_ffmpeg), str(without)])) == str(without)
    if shutil.which("ffmpeg"):
        assert shutil.which("ffmpeg", path=bench_main_job.path_without_ffmpeg(os.environ["PATH"])) is None


def test_the_fp32_baseline_of_a_model_file_is_its_fp32_twin(tiny_model_files: dict[str, Path], tiny_int8_onnx: Path,
                                                            tmp_path: Path) -> None:
    from unetrt.benchmarks.bench_main_job import fp32_baseline

    assert fp32_baseline("camvid") == (None, ("--precision", "fp32"))
    assert fp32_baseline(str(tiny_model_files["onnx"])) == (None, ())
    int8 = tmp_path / "tiny.int8.onnx"
    int8.write_bytes(tiny_int8_onnx.read_bytes())
    with pytest.raises(ValueError, match="no FP32 twin"):
        fp32_baseline(str(int8))
    (tmp_path / "tiny.onnx").write_bytes(tiny_model_files["onnx"].read_bytes())
    assert fp32_baseline(str(int8)) == (str(tmp_path / "tiny.onnx"), ())


def test_a_model_file_runs_against_its_fp32_twin(tiny_model_files: dict[str, Path], tiny_int8_onnx: Path,
                                                 tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "tiny.onnx").write_bytes(tiny_model_files["onnx"].read_bytes())
    (folder / "tiny.int8.onnx").write_bytes(tiny_int8_onnx.read_bytes())
    assert bench_main_job.main(["--model", str(folder / "tiny.int8.onnx"), "--repeats", "1", "--max-frames", "2",
                                "--hide-ffmpeg", "--results-dir", str(tmp_path), "--name", "t"]) == 0
    rows = {row["way"]: row for row in json.loads((tmp_path / "t.json").read_text())["rows"]}
    assert "tiny.onnx --backend onnxruntime --workers 1" in rows["onnxruntime fp32, one worker"]["command"]
    assert rows["onnxruntime fp32, one worker"]["runtime"]["precision"] == "fp32"
    assert "tiny.int8.onnx --workers 1" in rows["default, one worker"]["command"]
    assert rows["default, one worker"]["runtime"]["precision"] == "int8"
