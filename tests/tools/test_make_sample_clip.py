"""tools/make_sample_clip.py: every frame at the rate asked, in a clip that is closed and decodes; frames of another
size refused by name; the clip's budget and frame count held."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from tool_module import load_tool

make_sample_clip = load_tool("make_sample_clip")


def _frames(folder: Path, count: int, size: tuple[int, int] = (64, 48)) -> Path:
    folder.mkdir(exist_ok=True)
    for index in range(count):
        cv2.imwrite(str(folder / f"f{index:02d}.png"), np.full((size[1], size[0], 3), 60 * index, np.uint8))
    return folder


def test_the_clip_holds_every_frame_at_the_rate_asked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "clip.mp4"
    assert make_sample_clip.main(["--data", str(_frames(tmp_path / "frames", 3)), "--output", str(out),
                                  "--fps", "5"]) == 0
    # make_clip counted the frames by decoding the clip, which needs the writer released (an unfinished MP4 does
    # not decode).
    assert f"{out}: 3 frames at 5 fps" in capsys.readouterr().out
    capture = cv2.VideoCapture(str(out))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(5.0)
    capture.release()


def test_a_frame_of_another_size_is_refused_by_name(tmp_path: Path) -> None:
    folder = _frames(tmp_path / "frames", 1)
    cv2.imwrite(str(folder / "f01.png"), np.zeros((40, 64, 3), np.uint8))
    out = tmp_path / "clip.mp4"
    with pytest.raises(ValueError, match=r"f01\.png does not decode to a 64x48 image"):
        make_sample_clip.make_clip(folder, out, 10.0)


def test_a_clip_that_decodes_short_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = cv2.VideoCapture

    class TwoFrames:
        """The real clip read back, but ending after two frames."""

        def __init__(self, path: str) -> None:
            self.capture, self.left = real(path), 2

        def read(self) -> tuple[bool, Any]:
            self.left -= 1
            return self.capture.read() if self.left >= 0 else (False, None)

        def release(self) -> None:
            self.capture.release()

    monkeypatch.setattr(make_sample_clip.cv2, "VideoCapture", TwoFrames)
    with pytest.raises(ValueError, match="decodes to 2 frames, expected 3"):
        make_sample_clip.make_clip(_frames(tmp_path / "frames", 3), tmp_path / "clip.mp4", 10.0)


def test_a_clip_at_its_budget_passes_and_one_byte_over_is_refused(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    frames, out = _frames(tmp_path / "frames", 2), tmp_path / "clip.mp4"
    make_sample_clip.make_clip(frames, out, 10.0)
    size = out.stat().st_size
    monkeypatch.setattr(make_sample_clip, "MAX_BYTES", size)
    assert make_sample_clip.make_clip(frames, out, 10.0) == 2
    monkeypatch.setattr(make_sample_clip, "MAX_BYTES", size - 1)
    with pytest.raises(ValueError, match=f"is {size} bytes, over the {size - 1}-byte budget"):
        make_sample_clip.make_clip(frames, out, 10.0)
