"""Output paths are checked before a stream starts: one clear line, nothing created."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from unetrt.stream.output_path import check_output_path
from unetrt.stream.uri import parse_sink


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


def _can_create_in(folder: str) -> bool:
    probe = Path(folder) / ".unetrt-probe"
    try:
        probe.touch()
    except OSError:
        return False
    probe.unlink()
    return True
