"""Turning a frame and its coloured mask into the picture a stream writes, with live figures drawn on it.

:class:`Renderer` owns what is drawn: the panels, the class colours (through the segmenter), the legend
and the FPS and latency caption.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import cv2
import numpy as np

from ..palette import Palette
from ..preprocessing import check_color_order
from ..segmenter import SegmentationResult
from ..visualize import blend, displayable, draw_legend

if TYPE_CHECKING:
    from .result import StreamResult

VISUALIZE_MODES = ("overlay", "mask")
# 'outside': a strip beside the frame, so no part of the scene is covered; 'inside': over its bottom-left corner.
LEGEND_PLACES = ("outside", "inside", "off")
# Space kept right of the legend's longest name in an outside strip, in pixels.
LEGEND_MARGIN = 4
# Legend strips kept, one per frame height, least recently used dropped first: a folder of photos of many heights
# kept one for each (about 0.6 MB at 720 rows) for the whole run. Enough for a few cameras' sizes.
LEGEND_STRIPS = 4

LegendEntries = tuple[list[str], list[tuple[int, int, int]]]


class Colorizer(Protocol):
    """What gives a mask its class colours (a :class:`~unetrt.segmenter.Segmenter` is one)."""

    def colorize(self, result: SegmentationResult) -> np.ndarray:
        """The mask in class colours (HxWx3, in the segmenter's colour order: BGR unless it takes RGB)."""
        ...


def parse_visualize(text: str | Sequence[str]) -> tuple[str, ...]:
    """``'overlay,mask'`` (or a sequence) -> the panels to draw, side by side, left to right.

    Raises:
        ValueError: on an unknown or missing mode.

    Example:
        >>> parse_visualize("overlay,mask")
        ('overlay', 'mask')
    """
    modes = tuple(m.strip() for m in (text.split(",") if isinstance(text, str) else text) if m.strip())
    if not modes:
        raise ValueError(f"visualize needs at least one of {', '.join(VISUALIZE_MODES)}, got {text!r}")
    for mode in modes:
        if mode not in VISUALIZE_MODES:
            raise ValueError(f"unknown visualize mode {mode!r}; use overlay, mask or overlay,mask")
    return modes


def parse_legend(legend: bool | str) -> str:
    """Where the legend goes: one of ``LEGEND_PLACES`` (True: 'outside', False: 'off').

    Raises:
        ValueError: naming the places.

    Example:
        >>> parse_legend(True), parse_legend("inside"), parse_legend(False)
        ('outside', 'inside', 'off')
    """
    if isinstance(legend, bool):
        return "outside" if legend else "off"
    if legend not in LEGEND_PLACES:
        raise ValueError(f"unknown legend place {legend!r}; use one of {', '.join(LEGEND_PLACES)}")
    return legend


def compose(frame: np.ndarray, colored: np.ndarray, modes: Sequence[str], alpha: float,
            undrawn: np.ndarray | None = None) -> np.ndarray:
    """The panels named by ``modes`` side by side: 'overlay' blends the mask over the frame, 'mask' is the mask.

    ``undrawn`` (HxW bool, optional) marks pixels of classes left undrawn: the overlay shows the frame there and
    the mask panel black.

    Raises:
        ValueError: when alpha is outside [0, 1] or the sizes differ.

    Example:
        >>> compose(np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2, 3), np.uint8), ("overlay", "mask"), 0.5).shape
        (2, 4, 3)
    """
    if undrawn is not None:
        colored = colored.copy()
        colored[undrawn] = 0
    panels = []
    for mode in modes:
        if mode == "mask":
            panels.append(colored)
            continue
        overlay = blend(frame, colored, alpha)
        if undrawn is not None:
            overlay[undrawn] = frame[undrawn]
        panels.append(overlay)
    return panels[0] if len(panels) == 1 else np.hstack(panels)


def draw_caption(image: np.ndarray, text: str) -> np.ndarray:
    """Write ``text`` in the top-left corner on a dark band, scaled to the image height (in place)."""
    scale = max(0.35, image.shape[0] / 720)
    thickness = max(1, round(scale * 1.5))
    (width, height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    pad = max(2, round(4 * scale))
    cv2.rectangle(image, (0, 0), (width + 2 * pad, height + baseline + 2 * pad), (0, 0, 0), cv2.FILLED)
    cv2.putText(image, text, (pad, pad + height), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness,
                cv2.LINE_AA)
    return image


def stats_caption(fps: float, latency_ms: float, dropped: int) -> str:
    """The caption drawn on a frame; the FPS is left out while it is 0 (the first second, not measured yet).

    Example:
        >>> stats_caption(0.0, 41.6, 0), stats_caption(24.96, 41.6, 3)
        ('latency 42 ms', '25.0 FPS  latency 42 ms  dropped 3')
    """
    parts = [f"{fps:.1f} FPS"] if fps > 0 else []
    parts.append(f"latency {latency_ms:.0f} ms")
    if dropped:
        parts.append(f"dropped {dropped}")
    return "  ".join(parts)


def segmenter_palette(segmenter: Any) -> Palette:
    """The palette a segmenter colours its masks with.

    Raises:
        ValueError: when the segmenter has none.
    """
    palette: Palette | None = getattr(segmenter, "palette", None)
    if palette is None:
        raise ValueError("the legend and --ignore-class need a segmenter that describes its classes "
                         "(a unetrt Segmenter has .palette)")
    return palette


def legend_entries(segmenter: Any, hidden: Sequence[str] = ()) -> LegendEntries:
    """Class names and BGR colours for the legend, from the segmenter's palette, without the ``hidden`` classes.

    Raises:
        ValueError: when the segmenter has no palette.
    """
    return segmenter_palette(segmenter).legend(hidden)


def legend_strip(entries: LegendEntries, height: int) -> np.ndarray:
    """The legend on a black strip ``height`` rows high and as wide as its longest name needs.

    Example:
        >>> legend_strip((["road"], [(128, 64, 128)]), 120).shape[0]
        120
    """
    # draw_legend lays the legend out (its text scale follows the height); drawn on a black canvas wider
    # than any legend, the strip keeps the columns it used.
    canvas = np.zeros((height, 2 * height + 320, 3), np.uint8)
    draw_legend(canvas, *entries)
    used = np.flatnonzero(canvas.any(axis=(0, 2)))
    width = int(used[-1]) + 1 + LEGEND_MARGIN if used.size else 0
    return canvas[:, :width].copy()


class Renderer:
    """Draws the picture a stream writes for a result: the chosen panels, the caption and the legend.

    Args:
        colors: what colours the mask (the segmenter; asked at each frame).
        visualize: panels, left to right ('overlay', 'mask'; see :func:`parse_visualize`).
        alpha: mask opacity in the overlay, in [0, 1].
        draw_stats: draw FPS and latency (see :func:`stats_caption`).
        legend: class names and BGR colours (see :func:`legend_entries`), or None for no legend.
        legend_place: 'outside' (a strip right of the panels) or 'inside' (over the bottom-left corner).
        undrawn_ids: mask ids of classes left undrawn (see :func:`compose`).
        color_order: the channel order of the frames and of ``colors``' masks ('bgr' or 'rgb', a segmenter's
            ``color_order``); the picture is BGR either way, as every sink writes it with OpenCV.

    Raises:
        ValueError: on an unknown panel, legend place or colour order.

    Example:
        >>> class Gray:
        ...     def colorize(self, result): return cv2.merge([result.mask] * 3)
        >>> renderer = Renderer(Gray(), "overlay", 0.5, False, (["road"], [(128, 64, 128)]), "outside")
        >>> renderer.draw(np.zeros((120, 160, 3), np.uint8),
        ...               SegmentationResult(np.zeros((120, 160), np.uint8), None, 0.0), 0.0, 0.0, 0).shape[1] > 160
        True
    """

    def __init__(self, colors: Colorizer, visualize: str | Sequence[str], alpha: float, draw_stats: bool,
                 legend: LegendEntries | None, legend_place: str = "outside",
                 undrawn_ids: Sequence[int] = (), color_order: str = "bgr") -> None:
        self.colors = colors
        self.color_order = check_color_order(color_order)
        self.visualize = parse_visualize(visualize)
        self.alpha = alpha
        self.draw_stats = draw_stats
        self.legend = legend
        self.legend_place = parse_legend(legend_place)
        self.undrawn_ids = np.asarray(sorted(set(undrawn_ids)), np.uint8)
        self._strips: OrderedDict[int, np.ndarray] = OrderedDict()

    def render(self, result: StreamResult, dropped: int) -> np.ndarray:
        """The picture for a stream result, ``dropped`` frames so far written in the caption."""
        return self.draw(result.frame, result.segmentation, result.fps, result.latency_ms, dropped)

    def draw(self, frame: np.ndarray, segmentation: SegmentationResult, fps: float, latency_ms: float,
             dropped: int) -> np.ndarray:
        """The panels of ``frame`` and its segmentation, with the caption and the legend drawn on (a new image)."""
        frame = displayable(frame)  # a 16-bit or float camera's frames are drawn as 8-bit colour
        undrawn = np.isin(segmentation.mask, self.undrawn_ids) if self.undrawn_ids.size else None
        image = compose(frame, self.colors.colorize(segmentation), self.visualize, self.alpha, undrawn)
        if self.color_order == "rgb":
            # Before the caption and the BGR legend: sinks (video, display, JPEG, ROS overlay) write OpenCV's BGR.
            image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        if self.draw_stats:
            draw_caption(image, stats_caption(fps, latency_ms, dropped))
        legend = self.legend
        if legend is None or self.legend_place == "off":
            return image
        if self.legend_place == "inside":
            return draw_legend(image, *legend)
        return np.hstack([image, self._strip(legend, image.shape[0])])

    def _strip(self, legend: LegendEntries, height: int) -> np.ndarray:
        """The outside legend for pictures ``height`` rows high, drawn once per height while it is in use (the
        legend does not change)."""
        strip = self._strips.get(height)
        if strip is None:
            strip = self._strips[height] = legend_strip(legend, height)
        self._strips.move_to_end(height)
        while len(self._strips) > LEGEND_STRIPS:
            self._strips.popitem(last=False)
        return strip
