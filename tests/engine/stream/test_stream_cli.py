from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from stream_helpers import FakeSegmenter, count_video_frames, frame_with_index, signal_once_writing, write_video

from unetrt.bundled import bundled_model_names
from unetrt.stream import Stream
from unetrt.stream.cli import _expected_frames, _write_stats, build_parser, main, parse_tile
from unetrt.stream.uri import SinkSpec


def test_video_to_video_keeps_every_frame(tmp_path: Path, tiny_model_files: dict[str, Path],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    video = write_video(tmp_path / "in.mp4", 12)
    out, stats = tmp_path / "out.mp4", tmp_path / "stats.json"
    code = main([str(video), str(out), "--model", str(tiny_model_files["onnx"]), "--visualize", "overlay,mask",
                 "--stats", str(stats), "--threads", "1"])
    assert code == 0
    assert count_video_frames(out) == 12
    capture = cv2.VideoCapture(str(out))
    assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FPS)) == (128, 10)
    summary = json.loads(stats.read_text())
    assert summary["processed"] == summary["written"] == 12 and summary["dropped"] == 0
    assert "inference" in summary["stages_ms"] and "p99" in summary["latency_ms"]
    assert "12 processed" in capsys.readouterr().out


@pytest.mark.skipif("camvid" not in bundled_model_names(), reason="the bundled camvid model is not in this checkout")
def test_bundled_camvid_model(tmp_path: Path) -> None:
    video = write_video(tmp_path / "in.mp4", 5, size=(160, 120))
    out = tmp_path / "out.mp4"
    assert main([str(video), str(out), "--model", "camvid"]) == 0
    assert count_video_frames(out) == 5


def test_stats_to_stdout_and_image_folder(tmp_path: Path, tiny_model_files: dict[str, Path],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    video = write_video(tmp_path / "in.avi", 3)
    code = main([str(video), str(tmp_path / "frames"), "--model", str(tiny_model_files["onnx"]), "--stats",
                 "--input-width", "32", "--input-height", "24", "--no-overlay-stats"])
    assert code == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["processed"] == 3
    assert "processed" in captured.err
    images = sorted((tmp_path / "frames").glob("*.png"))
    assert len(images) == 3 and cv2.imread(str(images[0])).shape == (24, 32, 3)


@pytest.mark.parametrize(("argv", "words"), [
    (["/nonexistent/clip.mp4"], "does not exist"),
    (["csi://front"], "sensor number"),
    (["sample", "out.mkv"], "cannot write"),
    (["sample", "--input-width", "100"], "both --input-width and --input-height"),
    (["sample", "display://0", "--headless"], "--headless"),
    (["sample", "--alpha", "2"], "alpha"),
])
def test_user_errors_are_one_line_and_exit_2(argv: list[str], words: str, tiny_model_files: dict[str, Path],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*argv, "--model", str(tiny_model_files["onnx"])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and words in err[0]


@pytest.mark.parametrize(("flag", "value"), [
    ("--max-frames", "0"), ("--max-fps", "nan"), ("--loop", "-2"), ("--alpha", "2"), ("--workers", "0"),
    ("--wait", "-1"), ("--max-reconnects", "-1"), ("--open-timeout", "0"),
])
def test_a_bad_flag_value_is_named_by_the_flag_not_the_python_field(flag: str, value: str, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    # The refusals came from StreamOptions in its terms: "max_frames must be ... (or None: until the source ends)",
    # a field and a None that the command line does not have, and for --open-timeout a default (FFmpeg's 30 s) that
    # is not the command's (10 s).
    assert main(["sample", str(tmp_path / "out.mp4"), flag, value]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: {flag} must ") and " got " in line and "None" not in line, line


@pytest.mark.parametrize("argv", [
    [b"v\xff.mp4", b"out.mp4"],
    [b"sample", b"o\xfe.mp4"],
    [b"sample", b"o\xfe.avi"],
    [b"sample", b"fold\xfe"],
    [b"sample", b"fr\xfe/f_%04d.png"],
    [b"frames", b"out"],
])
def test_a_name_that_is_not_utf8_is_one_line_not_a_crash(argv: list[bytes], tmp_path: Path,
                                                         tiny_model_files: dict[str, Path]) -> None:
    # In a child process: OpenCV crashed the process on such a name (a segmentation fault, exit code -11).
    (tmp_path / os.fsdecode(b"v\xff.mp4")).write_bytes(write_video(tmp_path / "in.mp4", 2).read_bytes())
    (tmp_path / "frames").mkdir()
    cv2.imwrite(str(tmp_path / "frames" / "a.png"), np.zeros((48, 64, 3), np.uint8))
    (tmp_path / "frames" / os.fsdecode(b"b\xff.png")).write_bytes((tmp_path / "frames" / "a.png").read_bytes())
    before = sorted(os.listdir(tmp_path))
    run = subprocess.run([sys.executable, "-m", "unetrt.stream.cli", *map(os.fsdecode, argv), "--headless",
                          "--max-frames", "2", "--model", str(tiny_model_files["onnx"])],
                         cwd=tmp_path, capture_output=True, timeout=120)
    err = run.stderr.decode(errors="replace").strip().splitlines()
    assert run.returncode == 2 and len(err) == 1, run.stderr
    assert err[0].startswith("error: ") and "has a name that is not valid UTF-8" in err[0]
    assert sorted(os.listdir(tmp_path)) == before  # no output file or folder was made


def test_an_image_pattern_whose_names_are_too_long_is_refused_before_the_model_runs(
        tmp_path: Path, tiny_model_files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    # It ran the model, then failed at the first frame: "[Errno 36] File name too long", exit code 1.
    pattern = tmp_path / "frames" / "f_%99999d.png"
    assert main(["sample", str(pattern), "--headless", "--max-frames", "2",
                 "--model", str(tiny_model_files["onnx"])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bytes this file system takes; use a shorter one" in err[0]
    assert list(tmp_path.iterdir()) == []


def test_tile_is_passed_to_the_segmenter(tmp_path: Path, tiny_model_files: dict[str, Path]) -> None:
    video = write_video(tmp_path / "in.mp4", 3, size=(96, 64))
    model = str(tiny_model_files["onnx"])
    for tile in ("32", "48x32"):
        out = tmp_path / f"out_{tile}.mp4"
        assert main([str(video), str(out), "--model", model, "--tile", tile, "--overlap", "8"]) == 0
        assert count_video_frames(out) == 3
    # The tile really reaches the segmenter: one it cannot use is reported as a user error.
    assert main([str(video), "--model", model, "--tile", "7", "--headless"]) == 2


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process is POSIX")
def test_ctrl_c_finishes_the_video_and_prints_the_summary(tmp_path: Path, tiny_model_files: dict[str, Path]) -> None:
    video = write_video(tmp_path / "in.mp4", 10)
    out, stats = tmp_path / "out.mp4", tmp_path / "stats.json"
    command = [sys.executable, "-m", "unetrt.stream.cli", str(video), str(out), "--loop", "-1",
               "--model", str(tiny_model_files["onnx"]), "--threads", "1", "--max-fps", "50", "--stats", str(stats)]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
    stdout, stderr = signal_once_writing(child, out, signal.SIGINT, wait_s=60, settle_s=0.5, exit_s=30)
    assert child.returncode == 130, stderr
    assert "processed" in stdout and "interrupted" in stderr
    written = json.loads(stats.read_text())["written"]
    assert written > 0 and count_video_frames(out) == written


@pytest.mark.skipif("camvid" not in bundled_model_names(), reason="the bundled camvid model is not in this checkout")
def test_precision_is_passed_to_the_segmenter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from unetrt.stream.cli import _segmenter_options, build_parser

    args = build_parser().parse_args(["sample", "--precision", "int8", "--backend", "onnxruntime"])
    assert _segmenter_options(args)["precision"] == "int8"
    video = write_video(tmp_path / "in.mp4", 2, size=(160, 120))
    assert main([str(video), str(tmp_path / "out.mp4"), "--model", "camvid", "--precision", "int8",
                 "--backend", "onnxruntime"]) == 0
    assert main([str(video), str(tmp_path / "out2.mp4"), "--model", "camvid", "--precision", "bf16",
                 "--backend", "onnxruntime"]) == 2
    assert "OpenVINO's inference-precision hint" in capsys.readouterr().err


def test_tile_sizes_are_checked_and_given_to_the_segmenter_height_first() -> None:
    # The Segmenter's tile is (height, width); the flag is WIDTHxHEIGHT as every size of the commands.
    assert (parse_tile("64"), parse_tile("48x32")) == (64, (32, 48))
    for text in ("0", "0x32", "-8"):
        with pytest.raises(argparse.ArgumentTypeError, match="WIDTHxHEIGHT with positive integers"):
            parse_tile(text)


def test_headless_without_an_output_opens_no_window_where_there_is_a_display(monkeypatch: pytest.MonkeyPatch) -> None:
    from unetrt.stream import cli

    monkeypatch.setattr(cli, "display_available", lambda: True)
    assert cli._output(build_parser().parse_args(["sample", "--headless"])) is None
    assert cli._output(build_parser().parse_args(["sample"])) == SinkSpec("display", "0")


def test_a_summary_that_cannot_be_written_at_the_end_is_printed_instead(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    # --stats was checked before the run; a disk that filled since must not lose the summary of a long run.
    summary = Stream([frame_with_index(i) for i in range(3)], FakeSegmenter()).run()
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=r"cannot write --stats .*; the summary is above"):
        _write_stats(summary, str(tmp_path / "file" / "stats.json"))
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{\n"):]) == json.loads(json.dumps(summary))


def test_a_summary_that_fails_halfway_leaves_the_earlier_file_whole(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    # --overwrite replaces an earlier summary; a disk that filled halfway through the new one (here a file size
    # limit, past which a write fails with EFBIG; Python ignores SIGXFSZ) left a truncated JSON in its place.
    summary = Stream([frame_with_index(i) for i in range(3)], FakeSegmenter()).run()
    target = tmp_path / "stats.json"
    target.write_text('{"earlier": "run"}\n')
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (256, limit[1]))
    try:
        with pytest.raises(ValueError, match=r"cannot write --stats .*; the summary is above"):
            _write_stats(summary, str(target))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limit)
    assert target.read_text() == '{"earlier": "run"}\n'
    assert [path.name for path in tmp_path.iterdir()] == ["stats.json"]  # no temporary file left beside it
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{\n"):]) == json.loads(json.dumps(summary))


def test_the_progress_total_is_the_frames_the_run_will_segment(tmp_path: Path) -> None:
    video = str(write_video(tmp_path / "in.avi", 5))
    stream = Stream(video, FakeSegmenter())
    stream.source.open()
    try:
        # 5 frames stored: --max-frames below caps the total, above it the video's end does; replays have no end.
        for flags, total in ([], 5), (["--max-frames", "3"], 3), (["--max-frames", "9"], 5), (["--loop", "-1"], None):
            assert _expected_frames(stream, build_parser().parse_args([video, *flags])) == total, flags
    finally:
        stream.source.close()


def test_a_recording_cut_short_is_streamed_to_where_it_was_cut(tmp_path: Path, tiny_model_files: dict[str, Path],
                                                               caplog: pytest.LogCaptureFixture) -> None:
    # A recording whose writer died (head -c of a clip): its missing tail was reported as 9 frames that "did not
    # decode" and counted as corrupt, 9 more for every --loop.
    whole = write_video(tmp_path / "whole.avi", 30).read_bytes()
    video = tmp_path / "cut.avi"
    video.write_bytes(whole[: len(whole) // 2])
    out, stats = tmp_path / "out.avi", tmp_path / "stats.json"
    assert main([str(video), str(out), "--model", str(tiny_model_files["onnx"]), "--loop", "1", "--stats",
                 str(stats), "--threads", "1"]) == 0
    summary = json.loads(stats.read_text())
    assert 0 < summary["written"] == count_video_frames(out) < 60
    assert summary["corrupt"] == 0, summary
    lines = [record.getMessage() for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(lines) == 2 and all("of the 30 it announces: the rest did not decode" in line for line in lines), lines


def test_the_help_says_open_timeout_bounds_a_builds_wait_for_the_camera() -> None:
    """docs/jetson.md and streaming.md: a first TensorRT build waits for the source's first attempt at most
    --open-timeout, a CSI camera's included; --help said the flag was a network stream's alone."""
    help_text = " ".join(build_parser().format_help().split())
    entry = help_text.split("--open-timeout SECONDS", 1)[1].split(" --topic", 1)[0]
    assert "a first TensorRT build waits at most this long for the source's first attempt, a camera's too" in entry


def test_the_help_states_the_tiling_defaults() -> None:
    """docs/cli.md: --help states every default that has a value; --overlap and --blend have one (Segmenter's) and
    said nothing of it."""
    help_text = " ".join(build_parser().format_help().split())
    overlap = help_text.split("--overlap OVERLAP", 1)[1].split(" --blend", 1)[0]
    blend = help_text.split("--blend BLEND", 1)[1].split(" --input-flip", 1)[0]
    assert "(default: the smaller tile side / 8" in overlap and "0 for a 'valid' model" in overlap, overlap
    assert "(default: gaussian)" in blend, blend


def _frames_of_a_network_turning_nan(tmp_path: Path, nan_frames: range) -> tuple[Path, Path]:
    """A network whose scores are NaN where a pixel's green is 0 (Log), and a folder of eight 64x48 frames of which
    those in ``nan_frames`` hold 100 such pixels."""
    from nonfinite_models import write_nonfinite_onnx

    model = write_nonfinite_onnx(tmp_path / "nan.onnx", "nan")
    folder = tmp_path / "frames"
    folder.mkdir()
    for index in range(8):
        frame = np.full((48, 64, 3), 150, np.uint8)
        if index in nan_frames:
            frame[10:20, 10:20, 1] = 0  # 100 pixels whose Log is NaN
        cv2.imwrite(str(folder / f"{index:03d}.png"), frame)
    return model, folder


def test_nan_scores_mid_stream_end_in_one_line_and_a_playable_video(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """A network that turns NaN on the seventh frame (an FP16 engine overflowing on a bright scene): the stream ends
    in the error's one line with exit 2, and the six frames written before stay a finished, playable video."""
    model, folder = _frames_of_a_network_turning_nan(tmp_path, nan_frames=range(6, 8))
    out = tmp_path / "out.mp4"
    assert main([str(folder), str(out), "--model", str(model), "--headless", "--workers", "2"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error") or "Trace" in line]
    assert len(err) == 1 and err[0].startswith("error: the network gave NaN or infinite scores at 100 of 3072 pixels")
    assert count_video_frames(out) == 6


@pytest.mark.parametrize("to_stdout", [False, True], ids=["file", "stdout"])
def test_nan_scores_mid_stream_keep_the_summary_and_stats_of_what_was_streamed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], to_stdout: bool) -> None:
    """docs/jetson.md: an FP16 overflow stops the stream on that frame with its video finished. The summary and
    --stats of the frames streamed before it were lost (the error left before them), where a camera unplugged
    mid-run keeps them (docs/streaming.md): a robot's run of hours ended with no figures at all."""
    model, folder = _frames_of_a_network_turning_nan(tmp_path, nan_frames=range(6, 8))
    out, stats = tmp_path / "out.mp4", tmp_path / "stats.json"
    argv = [str(folder), str(out), "--model", str(model), "--headless", "--workers", "2", "--stats"]
    assert main([*argv, *([] if to_stdout else [str(stats)])]) == 2
    captured = capsys.readouterr()
    summary = json.loads(captured.out) if to_stdout else json.loads(stats.read_text())
    assert summary["written"] == count_video_frames(out) == 6
    err = [line for line in captured.err.splitlines() if line.startswith("error") or "Trace" in line]
    assert len(err) == 1 and err[0].startswith("error: the network gave NaN or infinite scores at 100 of 3072 pixels")
    # The error line comes last, after the summary's table, as after a camera gone for good.
    assert captured.err.rstrip().splitlines()[-1] == err[0]


def test_nan_scores_mid_stream_name_the_frame_of_the_input(tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    """The stream's line said 'of this frame': after hours of a bag or a recording, which one? It names the
    frame's index in the input (the sixth of eight frames gives NaN: frame 5)."""
    model, folder = _frames_of_a_network_turning_nan(tmp_path, nan_frames=range(5, 6))
    assert main([str(folder), str(tmp_path / "out.mp4"), "--model", str(model), "--headless"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert err == [line for line in err if "at 100 of 3072 pixels of frame 5 of the input (" in line] != []
