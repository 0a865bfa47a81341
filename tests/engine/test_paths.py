"""The path checks say what is there instead of "does not exist" for a path that exists as the wrong kind."""

from __future__ import annotations

from pathlib import Path

import pytest

from unetrt.paths import check_file, check_folder


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
