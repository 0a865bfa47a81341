"""A stream with a segmenter that takes RGB frames: a Python iterable's frames are the caller's, in the segmenter's
order, and the written picture is BGR as every sink expects; an OpenCV-decoded source (BGR) is refused in one line."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from stream_helpers import CollectingSink, write_video

from unetrt.segmenter import Segmenter
from unetrt.stream import Stream


def _bgr_frames() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(3)]
    for frame in frames:
        frame[..., 0] //= 4  # blue far from red, so that reading one as the other changes the masks
    return frames


def test_rgb_frames_through_an_rgb_segmenter_give_the_bgr_streams_masks_and_pictures(
        tiny_model_files: dict[str, Path]) -> None:
    bgr = _bgr_frames()
    rgb = [np.ascontiguousarray(frame[..., ::-1]) for frame in bgr]
    runs = {}
    for order, frames in (("bgr", bgr), ("rgb", rgb)):
        sink = CollectingSink()
        with Segmenter(tiny_model_files["onnx"], color_order=order) as seg:
            results = list(Stream(frames, seg, sink, visualize="overlay,mask", legend="outside", draw_stats=False))
        runs[order] = (results, sink.images)
    (bgr_results, bgr_pictures), (rgb_results, rgb_pictures) = runs["bgr"], runs["rgb"]
    for want, have, frame in zip(bgr_results, rgb_results, rgb, strict=True):
        assert np.array_equal(want.mask, have.mask)
        assert np.array_equal(have.frame, frame), "a result holds the caller's frame as given"
    assert len(rgb_pictures) == 3
    for want, have in zip(bgr_pictures, rgb_pictures, strict=True):
        assert np.array_equal(want, have), "the written picture (panels and legend) is BGR in both"


@pytest.mark.parametrize("kind", ["folder", "video"])
def test_an_opencv_source_is_refused_for_an_rgb_segmenter(tiny_model_files: dict[str, Path], tmp_path: Path,
                                                          kind: str) -> None:
    if kind == "folder":
        cv2.imwrite(str(tmp_path / "a.png"), _bgr_frames()[0])
        source = str(tmp_path)
    else:
        source = str(write_video(tmp_path / "clip.avi", 2))
    message = r"decodes BGR frames but the segmenter takes color_order='rgb': open the segmenter with color_order='bgr'"
    with Segmenter(tiny_model_files["onnx"], color_order="rgb") as seg, pytest.raises(ValueError, match=message):
        Stream(source, seg)
    # Refused before the model is opened (no file here: opening it would raise FileNotFoundError).
    with pytest.raises(ValueError, match=message):
        Stream(source, "no-such-model.onnx", segmenter_options={"color_order": "rgb"})
    with pytest.raises(ValueError, match=r"color_order must be one of 'bgr', 'rgb'.*got 'RGB8'"):
        Stream(source, "no-such-model.onnx", segmenter_options={"color_order": "RGB8"})
