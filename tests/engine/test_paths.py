"""The path checks say what is there instead of "does not exist" for a path that exists as the wrong kind."""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from unetrt.paths import check_file, check_folder, check_utf8_name, probe_path, read_json, write_whole


def test_a_file_and_a_folder_pass_their_own_check(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"")
    assert check_file(str(tmp_path / "model.onnx"), "model file") == tmp_path / "model.onnx"
    assert check_folder(str(tmp_path), "image folder") == tmp_path


def test_each_wrong_kind_is_named(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"^model file '.*missing.onnx' does not exist$"):
        check_file(tmp_path / "missing.onnx", "model file")
    with pytest.raises(ValueError, match=r"^model file '.*' is a folder; give the file itself$"):
        check_file(tmp_path, "model file")
    with pytest.raises(FileNotFoundError, match=r"^image folder '.*nowhere' does not exist$"):
        check_folder(tmp_path / "nowhere", "image folder")
    with pytest.raises(NotADirectoryError, match=r"^image folder '.*model.onnx' is a file; give the folder"):
        check_folder(tmp_path / "model.onnx", "image folder")


def test_a_folder_given_as_the_model_is_one_line_with_exit_2(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    from unetrt.evaluate import main

    folder = tmp_path / "models.onnx"
    folder.mkdir()
    images = tmp_path / "images.png"
    images.write_bytes(b"")
    assert main(["--model", str(folder), "--images", str(tmp_path), "--labels", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: model file {str(folder)!r} is a folder; give the file itself\n"
    assert main(["--model", "camvid", "--images", str(images), "--labels", str(tmp_path)]) == 2
    assert "is a file; give the folder that holds the files" in capsys.readouterr().err


def test_a_name_too_long_for_the_file_system_is_one_line_with_its_length() -> None:
    # Python 3.11's is_dir raises ENAMETOOLONG (later ones may answer False): raised here as it does there.
    def refused(errno_: int) -> Callable[[Path], bool]:
        def test(path: Path) -> bool:
            raise OSError(errno_, os.strerror(errno_), str(path))

        return test

    name = Path("é" * 200)  # 'é' is 2 bytes in UTF-8
    with pytest.raises(ValueError, match=r"^input 'é+'\.\.\. is a name longer than this file system takes "
                                         r"\(400 bytes\); use a shorter one$"):
        probe_path(name, "input", refused(errno.ENAMETOOLONG))
    # Any other failure is no user error, and keeps its own error.
    with pytest.raises(PermissionError):
        probe_path(name, "input", refused(errno.EACCES))


def test_a_file_that_is_not_json_says_where(tmp_path: Path) -> None:
    path = tmp_path / "split.json"
    path.write_text('{"train": [1, 2,]}')
    with pytest.raises(ValueError, match=r"^split file '.*split\.json' is not valid JSON: .*line 1 column 17"):
        read_json(path, "split file")


def test_a_utf8_name_under_an_ascii_locale_names_the_locale_not_the_name(monkeypatch: pytest.MonkeyPatch) -> None:
    # PYTHONUTF8=0 LC_ALL=C: Python reads file names as ASCII, so "clip ü.mp4" (valid UTF-8 on disk) arrives with
    # its two bytes escaped; the line said the name was not UTF-8 and to convmv it from latin1, which would have
    # encoded it twice.
    monkeypatch.setattr(sys, "getfilesystemencoding", lambda: "ascii")
    escaped = "clip ü.mp4".encode().decode("ascii", errors="surrogateescape")
    with pytest.raises(ValueError) as error:
        check_utf8_name(escaped, "input")
    assert str(error.value) == ("input 'clip ü.mp4' is a UTF-8 name, but Python reads file names as ascii here (a C "
                                "or POSIX locale with PYTHONUTF8=0): run with PYTHONUTF8=1 or a UTF-8 locale "
                                "(LC_ALL=C.UTF-8)")
    # A Latin-1 name (0xfc alone is no UTF-8) is still the name's to change, under either encoding.
    latin1 = b"clip \xfc.mp4".decode("ascii", errors="surrogateescape")
    with pytest.raises(ValueError, match=r"^input 'clip \\xfc\.mp4' has a name that is not valid UTF-8.*convmv"):
        check_utf8_name(latin1, "input")


def test_bytes_are_written_whole_through_a_link_and_in_place_of_a_file(tmp_path: Path) -> None:
    # unet-bench --plot writes its PNG with write_whole: through a link the user made, the target gets the bytes
    # (the link stays a link), as a text report does.
    png = b"\x89PNG\r\n\x1a\n\x00\xff"
    target = tmp_path / "target.png"
    target.write_bytes(b"earlier")
    link = tmp_path / "plot.png"
    link.symlink_to(target)
    write_whole(link, png)
    assert link.is_symlink() and target.read_bytes() == png
    write_whole(tmp_path / "plain.png", png)
    assert (tmp_path / "plain.png").read_bytes() == png
