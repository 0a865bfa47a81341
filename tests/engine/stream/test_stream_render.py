"""The Renderer: the legend beside the frame (or inside, or off), and no FPS before it is measured."""

from __future__ import annotations

import numpy as np
import pytest
from stream_helpers import FakeSegmenter

from unetrt.palette import Palette
from unetrt.segmenter import SegmentationResult
from unetrt.stream import Stream, StreamStats
from unetrt.stream.render import Renderer, stats_caption


class DescribedSegmenter(FakeSegmenter):
    """A fake segmenter with a palette, so a legend can be drawn."""

    palette = Palette(("background", "thing"), ((0, 0, 0), (255, 0, 0)), binary=False)


class CollectingSink:
    name = "collector"
    wants_stop = False

    def __init__(self) -> None:
        self.images: list[np.ndarray] = []

    def write(self, image: np.ndarray) -> None:
        self.images.append(image)

    def close(self) -> None:
        pass


def _frame() -> np.ndarray:
    return np.full((120, 160, 3), 90, np.uint8)


def _draw(place: str) -> np.ndarray:
    segmenter = DescribedSegmenter()
    renderer = Renderer(segmenter, "mask", 0.5, False, (["background", "thing"], [(0, 0, 0), (0, 0, 255)]), place)
    segmentation = SegmentationResult(np.ones((120, 160), np.uint8), None, 0.0)
    return renderer.draw(_frame(), segmentation, 0.0, 0.0, 0)


def test_outside_legend_leaves_the_scene_uncovered() -> None:
    outside, inside, off = _draw("outside"), _draw("inside"), _draw("off")
    assert off.shape == inside.shape == (120, 160, 3)
    assert outside.shape[0] == 120 and outside.shape[1] > 160
    assert (outside[:, :160] == off).all(), "the legend strip sits beside the picture, not on it"
    assert not (inside == off).all(), "inside, the legend is drawn over the picture"
    assert ((outside[:, 160:] == (0, 0, 255)).all(axis=2)).sum() > 20, "the strip shows the class colours"


def test_stream_writes_the_legend_beside_the_frame() -> None:
    written = {}
    for place in ("outside", "off"):
        sink = CollectingSink()
        Stream([_frame()], DescribedSegmenter(), sink, legend=place, draw_stats=False).run()
        (written[place],) = sink.images
    assert written["outside"].shape[0] == 120 and written["outside"].shape[1] > 160
    assert (written["outside"][:, :160] == written["off"]).all()


@pytest.mark.parametrize(("fps", "shown"), [(0.0, False), (24.96, True)])
def test_caption_leaves_out_an_fps_not_yet_measured(fps: float, shown: bool) -> None:
    caption = stats_caption(fps, 41.6, 0)
    assert ("FPS" in caption) is shown and "latency 42 ms" in caption
    assert "0.0 FPS" not in caption


def test_live_fps_starts_after_the_first_second() -> None:
    stats = StreamStats()
    for now in (10.0, 10.2, 10.4, 10.6, 10.8):
        stats.mark_result(now)
        assert stats.live_fps() == 0.0, "no rate during the first second of results"
    stats.mark_result(11.0)
    assert stats.live_fps() == pytest.approx(5.0)
