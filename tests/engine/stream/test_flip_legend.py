"""--input-flip turns frames before they are segmented; --legend draws class names and colours on the output."""

from __future__ import annotations

import numpy as np
import pytest
from stream_helpers import FakeSegmenter

from unetrt.palette import Palette
from unetrt.stream import Stream
from unetrt.stream.flip import FLIPS, flip_frame
from unetrt.visualize import draw_legend


@pytest.mark.parametrize(("flip", "expected"), [
    ("none", [[1, 2], [3, 4]]), ("horizontal", [[2, 1], [4, 3]]), ("vertical", [[3, 4], [1, 2]]),
    ("rotate-180", [[4, 3], [2, 1]]), ("clockwise", [[3, 1], [4, 2]]), ("counterclockwise", [[2, 4], [1, 3]]),
])
def test_flips(flip: str, expected: list[list[int]]) -> None:
    assert flip_frame(np.array([[1, 2], [3, 4]], np.uint8), flip).tolist() == expected


def test_unknown_flip_names_the_choices() -> None:
    # The message names the value given, so a typo in --input-flip is seen at once.
    with pytest.raises(ValueError, match=r"unknown input flip 'upside-down'; use one of .*rotate-180"):
        flip_frame(np.zeros((2, 2), np.uint8), "upside-down")
    assert set(FLIPS) >= {"none", "horizontal", "vertical", "rotate-180"}


def test_stream_segments_the_flipped_frame() -> None:
    frame = np.zeros((4, 6, 3), np.uint8)
    frame[:, :2] = 255  # bright on the left
    (result,) = list(Stream([frame], FakeSegmenter(), input_flip="horizontal"))
    assert result.mask[:, -2:].all() and not result.mask[:, :-2].any()
    assert (result.frame == frame[:, ::-1]).all()


def test_legend_draws_each_class_colour() -> None:
    image = np.full((360, 480, 3), 128, np.uint8)
    colors = [(0, 0, 255), (0, 255, 0), (255, 0, 0)]
    draw_legend(image, ["road", "car", "sky"], colors)
    for color in colors:
        assert (image == color).all(axis=2).sum() > 20, color
    assert (image[:200] == 128).all(), "the legend sits in the bottom-left corner"
    with pytest.raises(ValueError, match="2 names but 1 colours"):
        draw_legend(image, ["a", "b"], [(0, 0, 0)])


def test_the_legend_shows_the_segmenters_palette() -> None:
    class PaletteSegmenter(FakeSegmenter):
        palette = Palette(("road", "car"), ((255, 0, 0), (0, 255, 0)))

    frame = np.full((360, 480, 3), 128, np.uint8)
    stream = Stream([frame], PaletteSegmenter(), legend=True, draw_stats=False)
    (result,) = list(stream)
    image = stream.render(result)
    for bgr in ((0, 0, 255), (0, 255, 0)):  # road red and car green, in BGR
        assert (image == bgr).all(axis=2).sum() > 20, bgr


def test_legend_needs_class_names() -> None:
    with pytest.raises(ValueError, match="the legend and --ignore-class need a segmenter that describes its classes"):
        Stream([np.zeros((4, 4, 3), np.uint8)], FakeSegmenter(), legend=True)
