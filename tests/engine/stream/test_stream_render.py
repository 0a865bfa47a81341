"""The Renderer: the legend beside the frame (or inside, or off), and no FPS before it is measured."""

from __future__ import annotations

import numpy as np
import pytest
from stream_helpers import CollectingSink, FakeSegmenter

from unetrt.palette import Palette
from unetrt.segmenter import SegmentationResult
from unetrt.stream import Stream, StreamResult, StreamStats, render
from unetrt.stream.render import Renderer, stats_caption


class DescribedSegmenter(FakeSegmenter):
    """A fake segmenter with a palette, so a legend can be drawn."""

    palette = Palette(("background", "thing"), ((0, 0, 0), (255, 0, 0)), binary=False)


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
    written: dict[str | bool, np.ndarray] = {}
    for place in ("outside", "off", True):
        sink = CollectingSink()
        Stream([_frame()], DescribedSegmenter(), sink, legend=place, draw_stats=False).run()
        (written[place],) = sink.images
    assert written["outside"].shape[0] == 120 and written["outside"].shape[1] > 160
    assert (written["outside"][:, :160] == written["off"]).all()
    # legend=True (--legend without a place) is the outside strip: the scene stays uncovered.
    assert (written[True] == written["outside"]).all()


def test_pictures_of_many_heights_keep_a_bounded_number_of_legend_strips(monkeypatch: pytest.MonkeyPatch) -> None:
    """A strip was kept for every frame height met: a folder of photos of many heights held one each (0.6 MB at
    720 rows) until the stream ended."""
    drawn: list[int] = []
    draw_strip = render.legend_strip
    monkeypatch.setattr(render, "legend_strip", lambda entries, height: drawn.append(height) or draw_strip(entries,
                                                                                                         height))
    renderer = Renderer(DescribedSegmenter(), "mask", 0.5, False, (["background", "thing"], [(0, 0, 0), (0, 0, 255)]))
    heights = [40 + 8 * k for k in range(render.LEGEND_STRIPS + 5)]
    for height in [*heights, 48, 40, 48, 40]:  # then two cameras' heights in turn: each strip drawn once more
        picture = renderer.draw(np.zeros((height, 30, 3), np.uint8),
                                SegmentationResult(np.ones((height, 30), np.uint8), None, 0.0), 0.0, 0.0, 0)
        assert picture.shape[0] == height and (picture[:, 30:] == (0, 0, 255)).all(axis=2).any()
    assert drawn == [*heights, 48, 40]
    assert len(renderer._strips) == render.LEGEND_STRIPS


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


class PaletteColours(DescribedSegmenter):
    """Colours masks through its palette, as a Segmenter does."""

    def colorize(self, result: SegmentationResult) -> np.ndarray:
        return self.palette.lut_bgr[result.mask]


def _half_thing_frame() -> tuple[np.ndarray, SegmentationResult]:
    mask = np.zeros((120, 160), np.uint8)
    mask[:, 80:] = 1
    return _frame(), SegmentationResult(mask, None, 0.0)


def test_ignored_class_is_left_undrawn_in_overlay_and_mask() -> None:
    frame, segmentation = _half_thing_frame()
    segmenter = PaletteColours()
    drawn = Renderer(segmenter, ("overlay", "mask"), 0.5, False, None).draw(frame, segmentation, 0.0, 0.0, 0)
    hidden = Renderer(segmenter, ("overlay", "mask"), 0.5, False, None,
                      undrawn_ids=segmenter.palette.ids_of(["thing"])).draw(frame, segmentation, 0.0, 0.0, 0)
    overlay, mask_panel = hidden[:, :160], hidden[:, 160:]
    assert (overlay[:, 80:] == frame[:, 80:]).all(), "the overlay shows the frame where the ignored class is"
    assert (mask_panel[:, 80:] == 0).all(), "the mask panel is black there"
    assert (hidden[:, :80] == drawn[:, :80]).all() and (hidden[:, 160:240] == drawn[:, 160:240]).all()
    assert not (drawn[:, 80:160] == frame[:, 80:]).all(), "without --ignore-class the class is drawn"


def test_stream_ignores_a_class_in_picture_and_legend_but_not_in_results() -> None:
    frame = _frame()
    frame[:, 80:] = 200  # FakeSegmenter: brighter than 127 is class 1, 'thing'
    sink = CollectingSink()
    results = list(Stream([frame], PaletteColours(), sink, legend="outside", draw_stats=False,
                          ignore_classes=("thing",)))
    assert (results[0].mask[:, 80:] == 1).all(), "the masks are unchanged"
    (image,) = sink.images
    assert (image[:, 80:160] == frame[:, 80:]).all()
    strip = image[:, 160:]
    assert not ((strip == (0, 0, 255)).all(axis=2)).any(), "the legend leaves the ignored class out"


def test_an_unknown_ignored_class_lists_the_classes() -> None:
    with pytest.raises(ValueError, match="no class named 'tree'; the classes are background, thing"):
        Stream([_frame()], PaletteColours(), CollectingSink(), ignore_classes=("tree",))


@pytest.mark.parametrize("convert", [lambda f: f.astype(np.uint16) * 257, lambda f: (f / 255.0).astype(np.float32),
                                     lambda f: f / 255.0], ids=["uint16", "float32", "float64"])
def test_a_16_bit_or_float_camera_is_drawn_as_its_8_bit_picture(convert: object) -> None:
    """Such frames reached the blend as they were: a uint16 picture with invisible colours, or a cv2.error."""
    frame, segmentation = _half_thing_frame()
    segmenter = PaletteColours()
    renderer = Renderer(segmenter, ("overlay", "mask"), 0.5, False, None,
                        undrawn_ids=segmenter.palette.ids_of(["thing"]))
    expected = renderer.draw(frame, segmentation, 0.0, 0.0, 0)
    drawn = renderer.draw(convert(frame), segmentation, 0.0, 0.0, 0)  # type: ignore[operator]
    assert drawn.dtype == np.uint8 and np.abs(drawn.astype(int) - expected).max() <= 1


@pytest.mark.parametrize("alpha", [0.0, 0.25, 1.0])
def test_alpha_is_the_opacity_of_the_mask_in_the_overlay(alpha: float) -> None:
    frame, segmentation = _half_thing_frame()
    segmenter = PaletteColours()
    colored = segmenter.colorize(segmentation)
    drawn = Renderer(segmenter, "overlay", alpha, False, None).draw(frame, segmentation, 0.0, 0.0, 0)
    expected = (1.0 - alpha) * frame.astype(float) + alpha * colored.astype(float)
    assert np.abs(drawn.astype(float) - expected).max() <= 1


def test_the_caption_counts_dropped_frames_once_there_are_some() -> None:
    assert stats_caption(24.96, 41.6, 3) == "25.0 FPS  latency 42 ms  dropped 3"
    assert "dropped" not in stats_caption(24.96, 41.6, 0)


def test_a_stream_result_is_captioned_with_its_own_fps_latency_and_the_dropped_count(
        monkeypatch: pytest.MonkeyPatch) -> None:
    captions: list[str] = []

    def keep_caption(image: np.ndarray, text: str) -> np.ndarray:
        captions.append(text)
        return image

    monkeypatch.setattr(render, "draw_caption", keep_caption)
    frame, segmentation = _half_thing_frame()
    result = StreamResult(7, frame, segmentation.mask, segmentation, 0.0, 0.0, 41.6, fps=24.96)
    Renderer(PaletteColours(), "overlay", 0.5, True, None).render(result, dropped=3)
    assert captions == ["25.0 FPS  latency 42 ms  dropped 3"]


class CachedColours(PaletteColours):
    """Hands out the same colour mask every time (a colouriser that caches its pictures)."""

    def __init__(self) -> None:
        super().__init__()
        self.cached: np.ndarray | None = None

    def colorize(self, result: SegmentationResult) -> np.ndarray:
        if self.cached is None:
            self.cached = super().colorize(result)
        return self.cached


def test_an_undrawn_class_never_paints_over_the_segmenters_colour_mask() -> None:
    frame, segmentation = _half_thing_frame()
    segmenter = CachedColours()
    before = segmenter.colorize(segmentation).copy()
    Renderer(segmenter, ("overlay", "mask"), 0.5, False, None,
             undrawn_ids=segmenter.palette.ids_of(["thing"])).draw(frame, segmentation, 0.0, 0.0, 0)
    assert (segmenter.colorize(segmentation) == before).all()
