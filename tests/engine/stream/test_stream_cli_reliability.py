"""unet-stream under SIGTERM, with bad output paths, with network sources that are down or silent, and what its
summary says about the run."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from stream_helpers import count_video_frames, signal_once_writing, write_video

from unetrt.stream.cli import main

POSIX_ONLY = pytest.mark.skipif(sys.platform == "win32", reason="signals to a child process are POSIX")


def _stream_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "unetrt.stream.cli", *args]


def _child_env() -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("OPENCV_FFMPEG_LOGLEVEL", None)  # the child decides, as a user's shell would leave it unset
    return env


@POSIX_ONLY
def test_sigterm_finishes_the_video_and_prints_the_summary(tmp_path: Path, tiny_model_files: dict[str, Path]) -> None:
    video = write_video(tmp_path / "in.mp4", 10)
    out, stats = tmp_path / "out.mp4", tmp_path / "stats.json"
    command = _stream_command(str(video), str(out), "--loop", "-1", "--model", str(tiny_model_files["onnx"]),
                              "--threads", "1", "--max-fps", "50", "--stats", str(stats))
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_child_env())
    stdout, stderr = signal_once_writing(child, out, signal.SIGTERM, wait_s=120, settle_s=0.0, exit_s=60)
    assert child.returncode == 143, stderr
    assert "processed" in stdout and stderr.strip().splitlines()[-1] == "terminated"
    written = json.loads(stats.read_text())["written"]
    assert written > 0 and count_video_frames(out) == written


@pytest.mark.parametrize(("output", "words"), [
    ("notes.txt/out.mp4", "is a file, not a folder"),
    ("notes.txt/frames", "is a file, not a folder"),
    ("folder.mp4", "it is an existing folder"),
])
def test_output_path_errors_come_before_the_model_loads(output: str, words: str, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("a file")
    (tmp_path / "folder.mp4").mkdir()
    broken_model = tmp_path / "broken.onnx"
    broken_model.write_bytes(b"not onnx")  # would be the error if the model were loaded first
    video = write_video(tmp_path / "in.mp4", 3)
    assert main([str(video), str(tmp_path / output), "--model", str(broken_model)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot write") and words in err[0], err


def test_output_in_a_folder_that_refuses_files(tmp_path: Path, tiny_model_files: dict[str, Path],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    probe = Path("/sys/.unetrt-probe")
    try:
        probe.touch()
        probe.unlink()
        pytest.skip("needs a /sys that refuses new files")
    except OSError:
        pass
    video = write_video(tmp_path / "in.mp4", 3)
    assert main([str(video), "/sys/unetrt-test/out.mp4", "--model", str(tiny_model_files["onnx"])]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write output '/sys/unetrt-test/out.mp4'" in err[0], err


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def silent_host() -> Iterator[int]:
    """A port on 127.0.0.1 that accepts connections (in the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield int(sock.getsockname()[1])


def _only_our_lines(stderr: str) -> list[str]:
    """Every stderr line, asserting each is ours: a log line of unetrt or the final 'error:' line."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    for line in lines:
        assert " unetrt." in line or line.startswith("error:"), f"foreign line on stderr: {line!r}\n{stderr}"
    return lines


def test_source_not_up_is_waited_for_then_given_up_quietly(tiny_model_files: dict[str, Path]) -> None:
    url = f"rtsp://127.0.0.1:{_closed_port()}/cam"
    started = time.monotonic()
    result = subprocess.run(_stream_command(url, "--headless", "--wait", "2", "--model", str(tiny_model_files["onnx"])),
                            capture_output=True, text=True, timeout=120, env=_child_env(), check=False)
    elapsed = time.monotonic() - started
    assert result.returncode == 2, result.stderr
    lines = _only_our_lines(result.stderr)
    waits = [line for line in lines if "is not up yet" in line]
    assert len(waits) >= 2 and "(attempt 2)" in waits[0], result.stderr
    assert lines[-1].startswith("error: cannot open rtsp") and "still not up after waiting 2 s (--wait)" in lines[-1]
    assert elapsed >= 2.0


def test_verbose_keeps_the_video_library_lines(tiny_model_files: dict[str, Path]) -> None:
    url = f"rtsp://127.0.0.1:{_closed_port()}/cam"
    result = subprocess.run(_stream_command(url, "--headless", "--wait", "0", "--verbose",
                                            "--model", str(tiny_model_files["onnx"])),
                            capture_output=True, text=True, timeout=120, env=_child_env(), check=False)
    assert result.returncode == 2
    # Without --verbose these are the lines the test above proves absent.
    assert "Connection refused" in result.stderr and "[tcp @" in result.stderr, result.stderr


def test_host_that_never_answers_times_out_and_says_so(silent_host: int, tiny_model_files: dict[str, Path]) -> None:
    url = f"rtsp://127.0.0.1:{silent_host}/cam"
    started = time.monotonic()
    result = subprocess.run(_stream_command(url, "--headless", "--wait", "0", "--open-timeout", "5",
                                            "--model", str(tiny_model_files["onnx"])),
                            capture_output=True, text=True, timeout=120, env=_child_env(), check=False)
    elapsed = time.monotonic() - started
    assert result.returncode == 2, result.stderr
    lines = _only_our_lines(result.stderr)
    assert any("still connecting to " + url in line and "giving up after 5 s (--open-timeout)" in line
               for line in lines), result.stderr
    assert lines[-1].startswith("error: cannot open rtsp")
    assert elapsed < 60  # FFmpeg alone would wait 30 s per attempt; 5 s and model loading fit well within


def test_summary_says_what_ran_and_splits_queue_wait_from_processing(
        tmp_path: Path, tiny_model_files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    video = write_video(tmp_path / "in.mp4", 6)
    stats = tmp_path / "stats.json"
    assert main([str(video), "--headless", "--model", str(tiny_model_files["onnx"]), "--threads", "1",
                 "--workers", "2", "--stats", str(stats)]) == 0
    summary = json.loads(stats.read_text())
    assert summary["runtime"] == {"backend": "onnxruntime", "precision": "fp32",
                                  "model": str(tiny_model_files["onnx"]), "device": "cpu", "threads": 1,
                                  "workers": 2, "working_size": None, "cleanup": None}
    for name in ("latency_ms", "queue_wait_ms", "processing_ms"):
        assert summary[name]["count"] == 6, name
    # End to end is the wait in the read-ahead queue plus the processing, frame by frame, so also in the mean.
    assert summary["latency_ms"]["mean"] == pytest.approx(
        summary["queue_wait_ms"]["mean"] + summary["processing_ms"]["mean"], abs=0.01)
    printed = capsys.readouterr().out
    assert f"model {tiny_model_files['onnx']} on onnxruntime, fp32, cpu, 2 workers x 1 thread" in printed
    assert "queue_wait" in printed and "processing" in printed


def test_working_size_option_reaches_the_network_and_the_summary(
        tmp_path: Path, tiny_model_files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    video = write_video(tmp_path / "in.mp4", 3)
    stats = tmp_path / "stats.json"
    assert main([str(video), "--headless", "--model", str(tiny_model_files["onnx"]), "--threads", "1",
                 "--workers", "1", "--working-size", "24x16", "--stats", str(stats)]) == 0
    assert json.loads(stats.read_text())["runtime"]["working_size"] == "24x16"
    assert "cpu, 1 thread, working size 24x16" in capsys.readouterr().out


def test_bad_working_size_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    video = write_video(tmp_path / "in.mp4", 1)
    with pytest.raises(SystemExit) as exit_info:
        main([str(video), "--headless", "--working-size", "0x16"])
    assert exit_info.value.code == 2
    assert "size must be WIDTHxHEIGHT with positive integers, e.g. 480x360, got '0x16'" in capsys.readouterr().err


@POSIX_ONLY
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "ctrl-c"])
def test_signal_to_the_whole_process_group_still_finishes_the_video(
        sig: int, tmp_path: Path, tiny_model_files: dict[str, Path]) -> None:
    # A terminal's Ctrl-C and `kill -- -PGID` signal every process of the group, the video encoder included.
    video = write_video(tmp_path / "in.mp4", 10)
    out, stats = tmp_path / "out.mp4", tmp_path / "stats.json"
    command = _stream_command(str(video), str(out), "--loop", "-1", "--model", str(tiny_model_files["onnx"]),
                              "--threads", "1", "--max-fps", "50", "--stats", str(stats))
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_child_env(),
                             start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not out.exists() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # some frames into the encoder
        assert child.poll() is None, child.communicate()
        os.killpg(child.pid, sig)
        stdout, stderr = child.communicate(timeout=60)
        assert "processed" in stdout
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == (143 if sig == signal.SIGTERM else 130), stderr
    written = json.loads(stats.read_text())["written"]
    assert written > 0 and count_video_frames(out) == written, stderr


@POSIX_ONLY
def test_a_reader_that_left_early_does_not_lose_the_stats_file(tmp_path: Path,
                                                               tiny_model_files: dict[str, Path]) -> None:
    # `unet-stream ... --stats s.json | head -1`: printing the table to the closed pipe ended the run in
    # BrokenPipeError's traceback (exit 1) before s.json was written, so the figures of a finished run were lost.
    video = write_video(tmp_path / "in.mp4", 3)
    stats = tmp_path / "stats.json"
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the summary: every write to stdout fails, as after head -1
    try:
        result = subprocess.run(_stream_command(str(video), str(tmp_path / "out.mp4"), "--model",
                                                str(tiny_model_files["onnx"]), "--threads", "1", "--workers", "1",
                                                "--stats", str(stats)),
                                stdout=write_end, stderr=subprocess.PIPE, text=True, env=_child_env(), timeout=120,
                                check=False)
    finally:
        os.close(write_end)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert json.loads(stats.read_text())["written"] == 3


@POSIX_ONLY
def test_a_closed_stderr_does_not_end_the_run(tmp_path: Path, tiny_model_files: dict[str, Path]) -> None:
    # A supervisor that starts the command with stderr closed (`2>&-`): the progress bar wrote to Python's
    # sys.stderr, None, and the run ended at its first frame with exit code 1, no video and no --stats file.
    video = write_video(tmp_path / "in.mp4", 3)
    out, stats = tmp_path / "out.mp4", tmp_path / "stats.json"
    # Through the console script's launcher, which imports OpenCV first, as the installed `unet-stream` does.
    command = [sys.executable, "-c", "import sys; from unetrt.commands import unet_stream; sys.exit(unet_stream())",
               str(video), str(out), "--model", str(tiny_model_files["onnx"]), "--threads", "1", "--workers", "1",
               "--stats", str(stats)]
    result = subprocess.run(["sh", "-c", 'exec "$@" 2>&-', "sh", *command], stdout=subprocess.PIPE, text=True,
                            env=_child_env(), timeout=120, check=False)
    assert result.returncode == 0, result.stdout
    assert json.loads(stats.read_text())["written"] == 3 and count_video_frames(out) == 3
