"""Nothing lost on the way out (issue 21): the input is never written over, existing outputs need --overwrite,
--stats is checked before the model loads, inputs without a frame are refused, and a full disk is one line and
exit 1 with what was written kept."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from stream_helpers import count_video_frames, write_video

from unetrt.stream import encoders, pipeline
from unetrt.stream.cli import OUTPUT_FAILED, main


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _error_lines(err: str) -> list[str]:
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.startswith("error:")]


@pytest.fixture
def broken_model(tmp_path: Path) -> Path:
    """A model that fails to load: any error that mentions it means the model was loaded before the check."""
    model = tmp_path / "broken.onnx"
    model.write_bytes(b"not onnx")
    return model


@pytest.mark.parametrize("link", ["same", "hard", "symbolic", "relative", "through a new folder"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_the_output_is_never_the_input(link: str, overwrite: bool, tmp_path: Path, broken_model: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    video = write_video(tmp_path / "in.avi", 12)
    before = _digest(video)
    output = tmp_path / "out.avi"
    if link == "same":
        output = video
    elif link == "hard":
        os.link(video, output)
    elif link == "symbolic":
        output.symlink_to(video)
    elif link == "relative":
        output = tmp_path / "sub" / ".." / "in.avi"
        (tmp_path / "sub").mkdir()
    else:
        # 'new' does not exist, so the path names no file yet; the sink makes 'new', and then it names the input.
        output = tmp_path / "new" / ".." / "in.avi"
    args = [str(video), str(output), "--model", str(broken_model)] + (["--overwrite"] if overwrite else [])
    assert main(args) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "is the input" in lines[0] and "would destroy it" in lines[0], lines
    assert _digest(video) == before and count_video_frames(video) == 12


def test_an_image_output_in_the_input_folder_is_refused(tmp_path: Path, broken_model: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    for index in range(3):
        cv2.imwrite(str(frames / f"frame_{index:06d}.png"), np.full((8, 8, 3), index, np.uint8))
    before = {path.name: _digest(path) for path in frames.iterdir()}
    assert main([str(frames), str(frames), "--model", str(broken_model), "--overwrite"]) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "is the input's folder" in lines[0], lines
    assert {path.name: _digest(path) for path in frames.iterdir()} == before
    # Spelled through a folder that does not exist yet, which the sink makes: the same folder once written.
    through_new = tmp_path / "new" / ".." / "frames" / "frame_%06d.png"
    assert main([str(frames), str(through_new), "--model", str(broken_model), "--overwrite"]) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "is the input's folder" in lines[0], lines
    assert {path.name: _digest(path) for path in frames.iterdir()} == before


def test_an_existing_video_needs_overwrite(tmp_path: Path, tiny_model_files: dict[str, Path],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    video = write_video(tmp_path / "in.avi", 4)
    out = tmp_path / "out.avi"
    out.write_bytes(b"an earlier result")
    model = ["--model", str(tiny_model_files["onnx"]), "--threads", "1", "--workers", "1"]
    assert main([str(video), str(out), *model]) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "exists; add --overwrite" in lines[0], lines
    assert out.read_bytes() == b"an earlier result"
    # Through a folder not made yet the path names nothing now, and the video once the sink has made it.
    assert main([str(video), str(tmp_path / "new" / ".." / "out.avi"), *model]) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "exists; add --overwrite" in lines[0], lines
    assert out.read_bytes() == b"an earlier result"
    assert main([str(video), str(out), *model, "--overwrite"]) == 0
    assert count_video_frames(out) == 4


@pytest.mark.parametrize("output", ["out.avi", "frames/frame_%04d.png", "out.mcap"])
def test_an_output_another_run_takes_after_the_start_is_not_written_over(
        output: str, tmp_path: Path, tiny_model_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # Two runs started together both find the path free at their start; the second one's file appears here
    # while this run opens its output, as if the other run had reached its first frame first.
    if output.endswith(".mcap"):
        pytest.importorskip("rosbags")
    video = write_video(tmp_path / "in.avi", 3)
    target = tmp_path / "out" / output
    taken = target.parent / "frame_0000.png" if "%" in output else target
    real_open_sink = pipeline.open_sink

    def another_run_first(*args: object, **kwargs: object) -> object:
        taken.parent.mkdir(parents=True, exist_ok=True)
        taken.write_bytes(b"the other run's output")
        return real_open_sink(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline, "open_sink", another_run_first)
    model = ["--model", str(tiny_model_files["onnx"]), "--threads", "1", "--workers", "1"]
    assert main([str(video), str(target), *model]) == OUTPUT_FAILED
    lines = _error_lines(capsys.readouterr().err)
    # The line names the output taken, and the flag that takes it anyway.
    assert len(lines) == 1 and f"{str(taken)!r} was created by another program after this run started" in lines[0]
    assert "add --overwrite" in lines[0], lines
    assert taken.read_bytes() == b"the other run's output"
    assert sorted(path.name for path in taken.parent.iterdir()) == [taken.name]
    # With --overwrite the run takes the path whoever made it.
    assert main([str(video), str(target), *model, "--overwrite"]) == 0
    assert taken.read_bytes() != b"the other run's output"


def test_an_output_folder_never_mixes_in_frames_of_an_earlier_run(tmp_path: Path, tiny_model_files: dict[str, Path],
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    video = write_video(tmp_path / "in.avi", 6)
    out = tmp_path / "out"
    model = ["--model", str(tiny_model_files["onnx"]), "--threads", "1", "--workers", "1"]
    assert main([str(video), str(out), *model]) == 0
    (out / "notes.txt").write_text("the user's own file")
    assert main([str(video), str(out), *model, "--max-frames", "2"]) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "holds 6 frames of an earlier run" in lines[0] and "--overwrite" in lines[0], lines
    assert len(list(out.glob("frame_*.png"))) == 6
    assert main([str(video), str(out), *model, "--max-frames", "2", "--overwrite"]) == 0
    assert sorted(path.name for path in out.iterdir()) == ["frame_000000.png", "frame_000001.png", "notes.txt"]


def test_an_input_without_a_decodable_frame_exits_2(tmp_path: Path, tiny_model_files: dict[str, Path],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    image = tmp_path / "broken.png"
    image.write_bytes(b"\x89PNG not really")
    assert main([str(image), "--headless", "--model", str(tiny_model_files["onnx"])]) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "has no frame that decodes (1 corrupt)" in lines[0], lines


@pytest.mark.parametrize(("target", "words"), [
    ("notes.txt/stats.json", "is a file, not a folder"),
    ("a-folder", "it is an existing folder"),
    ("in.avi", "is the input"),
    ("recording.mp4", "exists; add --overwrite to replace it"),
    # 'new' does not exist yet: the summary's folder is made at the end, and the path then names the recording.
    ("new/../recording.mp4", "exists; add --overwrite to replace it"),
])
def test_stats_target_is_checked_before_the_model_loads(target: str, words: str, tmp_path: Path,
                                                        broken_model: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("a file")
    (tmp_path / "a-folder").mkdir()
    (tmp_path / "recording.mp4").write_bytes(b"a video the summary would replace")
    video = write_video(tmp_path / "in.avi", 3)
    assert main([str(video), "--headless", "--model", str(broken_model), "--stats", str(tmp_path / target)]) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0] and "--stats" in lines[0], lines
    assert "broken.onnx" not in lines[0]
    assert (tmp_path / "recording.mp4").read_bytes() == b"a video the summary would replace"


def test_stats_in_a_folder_that_refuses_files(tmp_path: Path, broken_model: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    probe = Path("/proc/.unetrt-probe")
    try:
        probe.touch()
        probe.unlink()
        pytest.skip("needs a /proc that refuses new files")
    except OSError:
        pass
    video = write_video(tmp_path / "in.avi", 3)
    assert main([str(video), "--headless", "--model", str(broken_model), "--stats", "/proc/stats.json"]) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "cannot write --stats '/proc/stats.json'" in lines[0], lines


# A full disk: a tmpfs this small fills after a few frames of noise.
DISK_BYTES = 192 * 1024


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A folder on a tiny tmpfs of its own (needs root and mount; skips cleanly without them)."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(folder)],
                             capture_output=True, text=True, check=False) if os.geteuid() == 0 else None
    if mounted is None or mounted.returncode != 0:
        pytest.skip("needs root and mount -t tmpfs to simulate a full disk"
                    + (f": {mounted.stderr.strip()}" if mounted is not None else ""))
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def _noise_video(path: Path, count: int) -> Path:
    """An .avi of noise: it compresses badly, so every written frame costs space."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (160, 120))
    rng = np.random.default_rng(0)
    for _ in range(count):
        writer.write(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
    writer.release()
    return path


def _run_to_full_disk(tmp_path: Path, output: Path, model: Path, capsys: pytest.CaptureFixture[str]) -> str:
    video = _noise_video(tmp_path / "noise.avi", 60)
    code = main([str(video), str(output), "--model", str(model), "--threads", "1", "--workers", "1"])
    captured = capsys.readouterr()
    lines = _error_lines(captured.err)
    assert code == 1, captured.err
    assert len(lines) == 1 and lines[0].startswith(f"error: writing to {output}"), lines
    assert "no space left" in lines[0].lower(), lines
    assert "60 written" not in captured.out
    return lines[0]


@pytest.mark.parametrize("suffix", [".avi", ".mp4"])
def test_a_full_disk_stops_an_opencv_video(suffix: str, full_disk: Path, tmp_path: Path,
                                           tiny_model_files: dict[str, Path], capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(encoders, "ffmpeg_with_libx264", lambda: None)  # OpenCV's own writer, wherever ffmpeg is
    out = full_disk / f"out{suffix}"
    _run_to_full_disk(tmp_path, out, tiny_model_files["onnx"], capsys)
    if suffix == ".avi":
        # Motion JPEG .avi without its index (no room for it) still plays the frames that fit.
        assert count_video_frames(out) > 0


def test_a_full_disk_stops_an_ffmpeg_mp4_that_still_plays(full_disk: Path, tmp_path: Path,
                                                          tiny_model_files: dict[str, Path],
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    if encoders.ffmpeg_with_libx264() is None:
        pytest.skip("needs ffmpeg with libx264")
    out = full_disk / "out.mp4"
    _run_to_full_disk(tmp_path, out, tiny_model_files["onnx"], capsys)
    assert count_video_frames(out) > 0  # the whole fragments before the disk filled


def test_a_full_disk_stops_an_image_folder_without_a_broken_frame(full_disk: Path, tmp_path: Path,
                                                                  tiny_model_files: dict[str, Path],
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = full_disk / "frames"
    _run_to_full_disk(tmp_path, out, tiny_model_files["onnx"], capsys)
    frames = sorted(out.iterdir())
    assert frames and all(cv2.imread(str(path)) is not None for path in frames)


class SilentWriter:
    """OpenCV 4's ``VideoWriter``: ``write`` returns None, also when the frame did not reach the disk."""

    def __init__(self, writer: cv2.VideoWriter) -> None:
        self._writer = writer

    def write(self, image: np.ndarray) -> None:
        self._writer.write(image)

    def release(self) -> None:
        self._writer.release()


def test_a_full_disk_is_noticed_when_the_writer_says_nothing(full_disk: Path) -> None:
    encoder = encoders.OpenCVEncoder(full_disk / "out.avi", "MJPG", encoders.MJPEG, 10.0, (160, 120))
    encoder._writer = SilentWriter(encoder._writer)  # type: ignore[assignment]
    rng = np.random.default_rng(0)
    try:
        with pytest.raises(OSError, match="no space left on the disk"):
            for _ in range(400):  # 400 frames of noise are far more than the disk holds
                encoder.write(rng.integers(0, 256, (120, 160, 3), dtype=np.uint8))
    finally:
        encoder.release()


def test_a_video_removed_while_it_is_written_is_noticed_when_the_writer_says_nothing(tmp_path: Path) -> None:
    # OpenCV 4 keeps writing into a file that was deleted (or whose folder went): every later frame is lost.
    out = tmp_path / "out.avi"
    encoder = encoders.OpenCVEncoder(out, "MJPG", encoders.MJPEG, 10.0, (160, 120))
    encoder._writer = SilentWriter(encoder._writer)  # type: ignore[assignment]
    frame = np.zeros((120, 160, 3), np.uint8)
    try:
        encoder.write(frame)
        out.unlink()
        with pytest.raises(OSError, match="could not write frame 2"):
            encoder.write(frame)
    finally:
        encoder.release()


def test_stats_naming_the_output_is_refused_before_the_model_loads(tmp_path: Path, broken_model: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    # The JSON summary, written last, would have replaced the video the run had just written.
    video = write_video(tmp_path / "in.avi", 3)
    out = tmp_path / "out.avi"
    assert main([str(video), str(out), "--model", str(broken_model), "--stats", str(out)]) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and f"--stats {str(out)!r} is the output" in lines[0], lines
    assert not out.exists()


@pytest.mark.parametrize(("output", "stats"), [
    ("frames/", "frames/frame_000001.png"),
    ("frames/f_%02d.png", "frames/f_7.png"),
])
def test_stats_naming_a_frame_of_an_image_output_is_refused_before_the_model_loads(
        output: str, stats: str, tmp_path: Path, broken_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The JSON summary, written last, replaced frame 1 of the run: a frame lost, and the summary counted it written.
    video = write_video(tmp_path / "in.avi", 3)
    assert main([str(video), str(tmp_path / output), "--model", str(broken_model),
                 "--stats", str(tmp_path / stats)]) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and f"--stats {str(tmp_path / stats)!r} is a frame the output" in lines[0], lines


def test_stats_beside_the_frames_of_an_image_output_is_taken(tmp_path: Path, broken_model: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    # Only names the output writes are its own: the run gets past the checks, to the model (broken on purpose).
    video = write_video(tmp_path / "in.avi", 3)
    assert main([str(video), str(tmp_path / "frames") + "/", "--model", str(broken_model),
                 "--stats", str(tmp_path / "frames" / "stats.json")]) == 2
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "broken.onnx" in lines[0], lines
