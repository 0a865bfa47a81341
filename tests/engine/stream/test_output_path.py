"""Output paths are checked before a stream starts: one clear line, nothing created."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import pytest

from unetrt.stream import output_path
from unetrt.stream.output_path import (
    check_existing_output,
    check_not_input,
    check_output_path,
    check_writable_file,
    frame_files,
    frame_name,
)
from unetrt.stream.uri import SinkSpec, parse_sink


def test_writable_outputs_pass_and_leave_nothing_behind(tmp_path: Path) -> None:
    for output in ("out.mp4", "new/deeper/out.avi", "frames", "seq/frame_%04d.png"):
        check_output_path(parse_sink(str(tmp_path / output)))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("output", ["notes.txt/out.mp4", "notes.txt/sub/out.mp4", "notes.txt/frames",
                                    "notes.txt/frame_%04d.png"])
def test_a_parent_that_is_a_file(tmp_path: Path, output: str) -> None:
    (tmp_path / "notes.txt").write_text("a file")
    with pytest.raises(ValueError, match=r"notes.txt' is a file, not a folder; choose another output path"):
        check_output_path(parse_sink(str(tmp_path / output)))


def test_a_video_path_that_is_a_folder(tmp_path: Path) -> None:
    (tmp_path / "out.mp4").mkdir()
    with pytest.raises(ValueError, match="it is an existing folder; give a file name"):
        check_output_path(parse_sink(str(tmp_path / "out.mp4")))


def test_a_bag_path_that_is_a_folder_is_called_a_bag(tmp_path: Path) -> None:
    # The user asked for a ROS 2 bag: a line calling it a video sends them looking for the wrong thing.
    (tmp_path / "out.mcap").mkdir()
    with pytest.raises(ValueError, match=r"cannot write ROS 2 bag '.*out.mcap': it is an existing folder"):
        check_output_path(parse_sink(str(tmp_path / "out.mcap")))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_folder_without_write_permission(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        with pytest.raises(ValueError, match="no permission to write in"):
            check_output_path(parse_sink(str(locked / "out.mp4")))
    finally:
        locked.chmod(0o700)


def test_a_folder_nobody_may_write_to() -> None:
    # /sys refuses new files even to root, so this runs under any user.
    if not Path("/sys").is_dir() or _can_create_in("/sys"):
        pytest.skip("needs a /sys that refuses new files")
    with pytest.raises(ValueError, match=r"cannot write output '/sys/unetrt-out.mp4': (no permission|.*read-only)"):
        check_output_path(parse_sink("/sys/unetrt-out.mp4"))


@pytest.mark.parametrize("output", [b"o\xfe.mp4", b"o\xfe.avi", b"fold\xfe", b"fr\xfe/f_%04d.png"])
def test_an_output_whose_name_is_not_utf8_is_refused(tmp_path: Path, output: bytes) -> None:
    # OpenCV crashed the process (a segmentation fault) on such a name, once the model had run on a frame.
    with pytest.raises(ValueError, match=r"output '.*\\xfe.*' has a name that is not valid UTF-8"):
        check_output_path(parse_sink(str(tmp_path / os.fsdecode(output))))
    assert list(tmp_path.iterdir()) == []
    # A ROS 2 bag is written by Python, which takes any name.
    check_output_path(parse_sink(str(tmp_path / os.fsdecode(b"o\xfe.mcap"))))


@pytest.mark.parametrize("output", ["L.mp4", "L.mcap", "L", "new/L/out.mp4", "L/frame_%04d.png", "frame_%0300d.png"])
def test_a_name_longer_than_the_file_system_takes(tmp_path: Path, output: str) -> None:
    # Python 3.11's is_dir raised OSError: [Errno 36] File name too long, a traceback; below a folder not made
    # yet, and for the frames of a pattern, the name failed only when written, after the model had run.
    with pytest.raises(ValueError, match=r"cannot write output .*: a name in it is \d+ bytes .*, longer than the "
                                         r"\d+ bytes this file system takes; use a shorter one"):
        check_output_path(parse_sink(str(tmp_path / output.replace("L", "a" * 300))))
    with pytest.raises(ValueError, match="longer than the"):
        check_writable_file(tmp_path / "new" / ("a" * 300 + ".json"), "--stats")
    assert list(tmp_path.iterdir()) == []


def test_a_pattern_is_checked_at_the_width_a_long_run_reaches(tmp_path: Path) -> None:
    # 245 a's and %04d.png: frame 0's name (253 bytes) fits in 255, frame 10,000,000's (257 bytes) would not.
    check_output_path(parse_sink(str(tmp_path / ("a" * 241 + "%04d.png"))))
    with pytest.raises(ValueError, match="longer than the"):
        check_output_path(parse_sink(str(tmp_path / ("a" * 245 + "%04d.png"))))
    assert frame_name("out/frame_%04d.png", 12) == "out/frame_0012.png"
    for pattern in ("out/frame.png", "out/%d_%d.png", "out/%y_%d.png"):
        with pytest.raises(ValueError, match="needs one %d counter"):
            frame_name(pattern, 0)


def test_a_counter_in_the_folder_name_is_refused_before_any_frame(tmp_path: Path) -> None:
    # Frame 0 would go to runs_00/a.png, a folder nobody made: without this the stream runs the model and
    # then fails at its first write (exit 1), and every frame would be a.png in its own folder.
    for pattern in ("runs_%02d/a.png", "runs_%02d/sub/frame.png"):
        with pytest.raises(ValueError, match="the %d counter must be in the file name, not a folder"):
            check_output_path(parse_sink(str(tmp_path / pattern)))
    assert list(tmp_path.iterdir()) == []
    # A percent sign in a folder, written %%, is a plain character: the folder is the same for every frame.
    assert frame_name("100%%/frame_%04d.png", 7) == "100%/frame_0007.png"


def _can_create_in(folder: str) -> bool:
    probe = Path(folder) / ".unetrt-probe"
    try:
        probe.touch()
    except OSError:
        return False
    probe.unlink()
    return True


def test_a_link_to_a_missing_file_is_an_existing_output(tmp_path: Path) -> None:
    # Written through, the link would put the video wherever it points; without --overwrite it is refused.
    (tmp_path / "out.mp4").symlink_to(tmp_path / "gone" / "recording.mp4")
    with pytest.raises(ValueError, match="exists; add --overwrite"):
        check_existing_output(parse_sink(str(tmp_path / "out.mp4")), overwrite=False)
    check_existing_output(parse_sink(str(tmp_path / "out.mp4")), overwrite=True)


def test_only_names_the_pattern_writes_are_an_earlier_runs_frames(tmp_path: Path) -> None:
    # --overwrite deletes these files: a user's backup or notes beside them are never among them.
    for name in ("frame_000001.png", "frame_1234567.png", "frame_000002.png.bak", "frame_x.png", "my_frame_000003.png"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "frame_000004.png").mkdir()
    found = frame_files(str(tmp_path / "frame_%06d.png"))
    assert [path.name for path in found] == ["frame_000001.png", "frame_1234567.png"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only files")
def test_an_existing_read_only_video_is_refused_even_with_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "out.mp4"
    out.write_bytes(b"a recording")
    out.chmod(0o444)
    with pytest.raises(ValueError, match="the existing file is read-only"):
        check_output_path(parse_sink(str(out)))
    assert out.read_bytes() == b"a recording"


def test_a_name_as_long_as_the_file_system_takes_is_accepted(tmp_path: Path) -> None:
    # The limit is the longest name allowed, not one past it: a name of exactly that many bytes is written.
    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    check_writable_file(tmp_path / ("a" * (limit - len(".json")) + ".json"), "--stats")
    with pytest.raises(ValueError, match=f"is {limit + 1} bytes"):
        check_writable_file(tmp_path / ("a" * (limit + 1 - len(".json")) + ".json"), "--stats")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("code", "reason"), [
    (errno.EACCES, "no permission to write in {folder}"), (errno.EPERM, "no permission to write in {folder}"),
    (errno.EROFS, "{folder} is on a read-only file system"), (errno.ENOSPC, "no space left in {folder}"),
])
def test_a_folder_that_refuses_the_file_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int,
                                                 reason: str) -> None:
    # Each reason is told in words that say what to fix, whatever errno the file system answers with.
    def refused(**kwargs: object) -> tuple[int, str]:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(output_path.tempfile, "mkstemp", refused)
    expected = "cannot write --stats 'stats.json': " + reason.format(folder=repr(str(tmp_path)))
    with pytest.raises(ValueError, match=re.escape(expected)):
        check_writable_file(tmp_path / "stats.json", "--stats 'stats.json'")


def test_a_ros_bag_output_that_is_a_link_to_the_input_is_refused(tmp_path: Path) -> None:
    # With --overwrite the bag would be written through the link, over the video being read.
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"the recording")
    (tmp_path / "out.mcap").symlink_to(video)
    with pytest.raises(ValueError, match=r"out\.mcap' is the input .*clip\.mp4'"):
        check_not_input(SinkSpec("rosbag", str(tmp_path / "out.mcap")), [video])
