"""bench_main_job: whole unet-stream processes timed against each other, and its errors."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

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
    # Ways of one name had their runs pooled into one median, shown in two identical rows.
    (["--way", "old=/bin/true", "--way", "old=/bin/true"], "two ways are named 'old'"),
    (["--way", "default=/bin/true"], "two ways are named 'default'"),
    (["--working-size", "320x240", "--working-size", "320x240"], "two ways are named 'default at 320x240'"),
    # A misspelt bundled name was a traceback: the RuntimeError of the first run that failed on it.
    (["--model", "camvdi"], "no bundled model 'camvdi' in format '.onnx'; bundled models: camvid"),
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


def test_repeats_interleave_the_ways_and_figures_are_medians_against_the_first(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Three repeats of two ways with made-up summaries: the medians and ratios below are worked by hand.
    summaries = {"base": [(10.0, 12.0), (30.0, 8.0), (20.0, 10.0)],
                 "fast": [(40.0, 30.0), (60.0, 35.0), (50.0, 25.0)]}
    order: list[str] = []

    def fake_run_once(way: bench_main_job.Way, model: str, folder: Path, hide_ffmpeg: bool = False,
                      max_frames: int | None = None) -> dict[str, Any]:
        fps, steady = summaries[way.name][sum(name == way.name for name in order)]
        order.append(way.name)
        return {"fps": fps, "steady_fps": steady, "processed": 9}

    machine = {"cpu_model": "Test CPU", "cpu_features": {"avx512_vnni": True, "amx_int8": False},
               "usable_cores": 2, "load_average": (1.0, 1.0, 1.0)}
    monkeypatch.setattr(bench_main_job, "run_once", fake_run_once)
    monkeypatch.setattr(bench_main_job, "machine_description", lambda: machine)
    ways = [bench_main_job.Way("base", "/bin/true"), bench_main_job.Way("fast", "/bin/true")]
    result = bench_main_job.benchmark(ways, "camvid", 3)
    assert order == ["base", "fast"] * 3  # interleaved, every repeat run
    base, fast = result["rows"]
    # medians: base fps 20, steady 10; fast fps 50, steady 30 -> 50 / 20 = 2.5 and 30 / 10 = 3.0
    assert (base["fps"], base["steady_fps"], fast["fps"], fast["steady_fps"]) == (20.0, 10.0, 50.0, 30.0)
    assert fast["fps_trials"] == [40.0, 60.0, 50.0] and fast["steady_fps_trials"] == [30.0, 35.0, 25.0]
    assert (fast["x_baseline"], fast["x_baseline_steady"]) == (2.5, 3.0)
    assert (base["x_baseline"], base["x_baseline_steady"]) == (1.0, 1.0)
    assert result["baseline"] == "base" and result["repeats"] == 3 and result["ffmpeg_hidden"] is False
    report = bench_main_job.to_markdown(result)
    assert "Machine: Test CPU (AVX-512 VNNI; no AMX)" in report  # the CPU's INT8 features named, not only its model
    assert "| fast | not in its summary (a version before the runtime line) | 9 | 50.0 | 2.50× | 30.0 | 3.00× | " \
           "40.0, 60.0, 50.0 |" in report


def test_runs_too_short_for_a_steady_rate_give_no_steady_ratio(monkeypatch: pytest.MonkeyPatch) -> None:
    # Under a second of results the stream states no steady rate (0); dividing by the baseline's 0 was a
    # ZeroDivisionError at the end of the benchmark.
    monkeypatch.setattr(bench_main_job, "run_once", lambda *args, **kwargs: {"fps": 5.0, "steady_fps": 0.0,
                                                                             "processed": 2})
    monkeypatch.setattr(bench_main_job, "machine_description", lambda: {"cpu_model": "Test CPU", "cpu_features": {},
                                                                        "usable_cores": 2,
                                                                        "load_average": (1.0, 1.0, 1.0)})
    result = bench_main_job.benchmark([bench_main_job.Way("base", "/bin/true")], "camvid", 1)
    assert result["rows"][0]["x_baseline"] == 1.0 and result["rows"][0]["x_baseline_steady"] is None
    assert "| 5.0 | 1.00× | 0.0 | - |" in bench_main_job.to_markdown(result)
