"""``color_order='rgb'``: RGB (RGBA) frames give exactly the masks and probabilities their BGR (BGRA) twins give
through the extract kernel's channel mapping, pictures come back in the frame's order, and bad values are refused.
The emulated CUDA path's twin of these checks is in test_cuda_device.py."""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import tiny_info

from unetrt.device import HostDevice
from unetrt.evaluate import evaluate
from unetrt.frame_path import FramePath, network_input
from unetrt.segmenter import Segmenter
from unetrt.tiling import plan_whole


def _bgr_frames(channels: int, count: int = 2, shape: tuple[int, int] = (37, 53)) -> list[np.ndarray]:
    rng = np.random.default_rng(channels)
    # Channels far apart, so that a swapped pair of them changes the network's answer.
    frames = [rng.integers(0, 256, (*shape, channels), dtype=np.uint8) for _ in range(count)]
    for frame in frames:
        frame[..., 0] //= 4
    return frames


def _rgb(frame: np.ndarray) -> np.ndarray:
    """The RGB (RGBA) twin of a BGR (BGRA) frame, alpha kept last."""
    order = [2, 1, 0, 3][: frame.shape[2]]
    return np.ascontiguousarray(frame[..., order])


def _assert_same(want: list[object], have: list[object]) -> None:
    for a, b in zip(want, have, strict=True):
        assert np.array_equal(a.mask, b.mask)  # type: ignore[attr-defined]
        assert np.array_equal(a.probabilities.view(np.uint32), b.probabilities.view(np.uint32))  # type: ignore[attr-defined]


@pytest.mark.parametrize("channels", [3, 4], ids=["rgb", "rgba"])
@pytest.mark.parametrize("tile", [None, 16], ids=["whole", "tiled"])
def test_rgb_frames_give_the_masks_of_their_bgr_twins(tiny_model_files: dict[str, Path], channels: int,
                                                      tile: int | None) -> None:
    frames = _bgr_frames(channels)
    with Segmenter(tiny_model_files["onnx"], probabilities=True, tile=tile) as bgr, \
            Segmenter(tiny_model_files["onnx"], probabilities=True, tile=tile, color_order="rgb") as rgb:
        assert bgr.color_order == "bgr" and rgb.color_order == "rgb"
        want = [bgr.segment(frame) for frame in frames]
        _assert_same(want, [rgb.segment(_rgb(frame)) for frame in frames])
        # Frames of one size share a network call: compared with a batch, as ONNX Runtime's sums may differ by batch.
        _assert_same(bgr.segment_batch(frames), rgb.segment_batch([_rgb(frame) for frame in frames]))
        # The same frame read in the other order is another picture: the setting is not ignored.
        assert not np.array_equal(want[0].probabilities, rgb.segment(frames[0]).probabilities)


def test_a_gray_model_takes_rgb_frames_as_their_bgr_twins() -> None:
    """A 1-channel model's gray conversion (in the extract kernel, on every device) reads the frame's order."""
    info = tiny_info(num_classes=1, in_channels=1)
    frame = _bgr_frames(3, 1, (24, 32))[0]
    grid = plan_whole(24, 32, "same", 3)
    want = FramePath(HostDevice(lambda batch: batch.copy()), info).run([frame], grid, True)[0]
    have = FramePath(HostDevice(lambda batch: batch.copy()), info, color_order="rgb").run([_rgb(frame)], grid, True)[0]
    _assert_same([want], [have])
    assert np.array_equal(network_input([frame], info), network_input([_rgb(frame)], info, color_order="rgb"))


def test_gray_frames_are_the_same_in_either_order(tiny_model_files: dict[str, Path]) -> None:
    frame = _bgr_frames(3, 1)[0][..., 1]
    with Segmenter(tiny_model_files["onnx"], probabilities=True) as bgr, \
            Segmenter(tiny_model_files["onnx"], probabilities=True, color_order="rgb") as rgb:
        _assert_same([bgr.segment(frame)], [rgb.segment(frame)])


def test_colorize_and_overlay_come_back_in_the_frames_order(tiny_model_files: dict[str, Path]) -> None:
    frame = _bgr_frames(3, 1)[0]
    with Segmenter(tiny_model_files["onnx"]) as bgr, Segmenter(tiny_model_files["onnx"], color_order="rgb") as rgb:
        result = bgr.segment(frame)
        colored = rgb.colorize(result)
        assert np.array_equal(colored, bgr.colorize(result)[..., ::-1])
        ids = result.mask
        assert np.array_equal(colored, np.asarray(rgb.palette.colors, np.uint8)[ids])  # the palette's RGB colours
        assert np.array_equal(rgb.overlay(_rgb(frame), result), bgr.overlay(frame, result)[..., ::-1])
        rgba, bgra = _rgb(_bgr_frames(4, 1)[0]), _bgr_frames(4, 1)[0]
        assert np.array_equal(rgb.overlay(rgba, result), bgr.overlay(bgra, result)[..., ::-1])


@pytest.mark.parametrize("value", ["RGB8", "RGB", None, ("r", "g", "b")])
def test_an_unknown_color_order_is_refused_before_the_model_opens(value: object) -> None:
    message = rf"color_order must be one of 'bgr', 'rgb'.*got {re.escape(repr(value))}"
    with pytest.raises(ValueError, match=message):
        Segmenter("no-such-model.onnx", color_order=value)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        FramePath(HostDevice(lambda batch: batch), tiny_info(), color_order=value)  # type: ignore[arg-type]


def test_evaluate_hands_an_rgb_segmenter_rgb_images(tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    """unet-eval's images are read with OpenCV (BGR): an RGB segmenter scores them as the BGR one does."""
    rng = np.random.default_rng(0)
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for i, frame in enumerate(_bgr_frames(3, 3, (24, 32))):
        cv2.imwrite(str(images / f"f{i}.png"), frame)
        cv2.imwrite(str(labels / f"f{i}.png"), rng.integers(0, 3, (24, 32), dtype=np.uint8))
    with Segmenter(tiny_model_files["onnx"]) as bgr, Segmenter(tiny_model_files["onnx"], color_order="rgb") as rgb:
        assert evaluate(rgb, images, labels) == evaluate(bgr, images, labels)
