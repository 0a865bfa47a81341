"""``StreamOptions``: every setting of a stream in one checked, frozen object.

``unet-stream`` builds one from its flags; ``Stream(source, model, output, options)`` takes one, and
``Stream``'s keyword arguments (``max_fps=15``) are the same fields.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from ..model_info import MAX_WORKING_PIXELS, MAX_WORKING_SIDE
from ..values import is_real_number, is_whole_number
from ..visualize import check_alpha
from .flip import FLIPS, check_flip
from .render import parse_legend, parse_visualize


@dataclass(frozen=True)
class StreamOptions:
    """How a stream reads, paces, segments and draws (checked when made).

    Attributes:
        live: override whether stale frames may be dropped (None: cameras and streams yes, files, folders and
            Python iterables no).
        visualize: panels to write: 'overlay', 'mask' or 'overlay,mask' (a sequence of the names is accepted;
            kept as a tuple).
        alpha: mask opacity in the overlay, in [0, 1].
        draw_stats: draw FPS and latency on written frames (the FPS from the first second of results on).
        legend: where the class names and colours go: 'outside' (a strip beside the frame), 'inside' (over the
            frame's bottom-left corner) or 'off'; True means 'outside', False 'off'. Needs a segmenter with
            ``info``.
        ignore_classes: class names the picture leaves undrawn (jetson-inference segnet's ``--ignore-class``):
            the overlay shows the frame there, the mask panel black, the legend leaves them out. The masks and
            results are unchanged.
        input_flip: 'none', 'horizontal', 'vertical', 'rotate-180', 'clockwise' or 'counterclockwise': how
            every frame is turned at capture, before it is segmented (a camera mounted upside down: 'rotate-180').
        input_size: ``(width, height)`` to resize every frame to at capture (and ask cameras for).
        max_fps: process at most this many frames per second (None: as fast as possible).
        loop: replays of a stored source: 0 none, N more times, -1 forever.
        max_frames: stop after this many results.
        output_fps: rate stored in an output video (default: the source's, else ``max_fps``, else 30).
        queue_size: depth of the stored-source and writer queues.
        reconnect_delay: first and largest wait in seconds between reopen attempts of a failed live source.
        max_reconnects: reopen attempts in a row before a live source counts as gone (None: forever); also
            bounds the retries while a live source is not up yet at the start.
        wait: seconds to wait at the start for a live source that is not up yet, retrying with the reconnect
            backoff and a log line per attempt (None: as long as ``max_reconnects`` allows; 0: fail at once);
            counted from when the stream began opening its model, beside which the source opens (given a segmenter
            object, the stream opens no model: from :meth:`~unetrt.stream.Stream.start`).
            Stored sources never wait.
        open_timeout: seconds a network stream may take to open, or to deliver a frame, before the attempt
            counts as failed (None: FFmpeg's default, 30 s); also the longest an engine build waits for the first
            attempt of a source opened beside the model (a camera's too).
        segmenter_options: keyword arguments for :class:`~unetrt.segmenter.Segmenter` when the stream opens
            the segmenters from a model name or path (e.g. ``{"backend": "onnxruntime", "threads": 2}``);
            without ``threads`` the CPU cores are shared out among the workers.
        workers: segmenters running side by side when the stream opens them (None: one per CPU core, at most
            4, for CPU inference; one on a GPU). A segmenter object runs alone.
        overwrite: replace an existing output video, and delete an earlier run's frames (only files named like
            this output's frames) from an image output folder before writing; False refuses both.
        video_library_logs: let OpenCV and FFmpeg print their own log lines (``[ WARN:...]``) on stderr; by
            default they are silenced and the stream's own log says what failed. A level set in
            ``OPENCV_LOG_LEVEL`` or ``OPENCV_FFMPEG_LOGLEVEL`` is kept.
        topic: the image topic of a ROS 2 bag source (None: the bag's only image topic).

    Raises:
        ValueError: naming the setting and what it accepts.

    Example:
        >>> StreamOptions(max_fps=15, legend=True).legend
        'outside'
    """

    live: bool | None = None
    visualize: str | Sequence[str] = "overlay"
    alpha: float = 0.5
    draw_stats: bool = True
    legend: bool | str = "off"
    ignore_classes: tuple[str, ...] = ()
    input_flip: str = "none"
    input_size: tuple[int, int] | None = None
    max_fps: float | None = None
    loop: int = 0
    max_frames: int | None = None
    output_fps: float | None = None
    queue_size: int = 2
    reconnect_delay: tuple[float, float] = (0.5, 8.0)
    max_reconnects: int | None = None
    wait: float | None = None
    open_timeout: float | None = None
    segmenter_options: Mapping[str, Any] = field(default_factory=dict)
    workers: int | None = None
    overwrite: bool = True
    video_library_logs: bool = False
    topic: str | None = None

    def __post_init__(self) -> None:
        _check_kinds(self)
        # Normalised here, once, so every reader sees one spelling (frozen: set through object.__setattr__).
        object.__setattr__(self, "visualize", parse_visualize(self.visualize))
        object.__setattr__(self, "legend", parse_legend(self.legend))
        object.__setattr__(self, "ignore_classes", _class_names(self.ignore_classes))
        check_flip(self.input_flip)
        _check_numbers(self)
        # Tuples, so a list passed in cannot change the frozen options afterwards.
        object.__setattr__(self, "reconnect_delay", tuple(self.reconnect_delay))
        if self.input_size is not None:
            object.__setattr__(self, "input_size", tuple(self.input_size))

    @classmethod
    def from_settings(cls, options: StreamOptions | None, settings: Mapping[str, Any]) -> StreamOptions:
        """``options`` (or the defaults) with the keyword ``settings`` laid over them.

        Raises:
            ValueError: on a name that is no setting (naming the settings), or a bad value.

        Example:
            >>> StreamOptions.from_settings(StreamOptions(max_fps=5), {"loop": 2}).max_fps
            5
        """
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - names)
        if unknown:
            raise ValueError(f"unknown stream setting {', '.join(map(repr, unknown))}; settings: "
                             f"{', '.join(sorted(names))}")
        if options is None:
            return cls(**settings)
        merged = {f.name: getattr(options, f.name) for f in fields(cls)}
        return cls(**{**merged, **settings})


def _is_str(value: object) -> bool:
    return isinstance(value, str)


def _pair(value: object, item: Callable[[object], bool]) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2 and all(map(item, value))


def _check_kinds(options: StreamOptions) -> None:
    """Refuse a value of the wrong type before it is normalised or compared (it failed there, or much later)."""
    for name in ("draw_stats", "overwrite", "video_library_logs"):
        if not isinstance(getattr(options, name), bool):
            raise ValueError(f"{name} must be True or False, got {getattr(options, name)!r}")
    if options.live is not None and not isinstance(options.live, bool):
        raise ValueError("live must be True, False or None (cameras and streams live, the others not), "
                         f"got {options.live!r}")
    visualize = options.visualize
    if not (isinstance(visualize, str) or (isinstance(visualize, Sequence)
                                           and all(isinstance(mode, str) for mode in visualize))):
        raise ValueError("visualize must be 'overlay', 'mask' or 'overlay,mask' (or a list of those names), "
                         f"got {visualize!r}")
    if not isinstance(options.input_flip, str):
        # check_flip looks the name up in a dict: a list would be a TypeError there.
        raise ValueError(f"unknown input flip {options.input_flip!r}; use one of {', '.join(FLIPS)}")
    if not isinstance(options.segmenter_options, Mapping) or not all(map(_is_str, options.segmenter_options)):
        raise ValueError("segmenter_options must be a dict of Segmenter keyword arguments, e.g. "
                         f"{{'backend': 'onnxruntime', 'threads': 2}}, got {options.segmenter_options!r}")
    if options.topic is not None and not isinstance(options.topic, str):
        raise ValueError("topic must be an image topic name such as '/camera/image' (or None: the bag's only "
                         f"image topic), got {options.topic!r}")


def _class_names(names: object) -> tuple[str, ...]:
    """``ignore_classes`` as a tuple of names.

    Raises:
        ValueError: on one string (tuple() would take it letter by letter) or anything but names.
    """
    if isinstance(names, str):
        suggestion = [name.strip() for name in names.split(",")]
        raise ValueError(f"ignore_classes must be a list of class names, e.g. {suggestion!r}, got {names!r}")
    listed = tuple(names) if isinstance(names, Iterable) else None
    if listed is None or not all(map(_is_str, listed)):
        raise ValueError(f"ignore_classes must be a list of class names, e.g. ['sky'], got {names!r}")
    return listed


def _check_numbers(options: StreamOptions) -> None:
    check_alpha(options.alpha)
    if options.max_fps is not None and not (is_real_number(options.max_fps) and options.max_fps > 0):
        raise ValueError(f"max_fps must be positive (or None: as fast as possible), got {options.max_fps!r}")
    if options.output_fps is not None and not (is_real_number(options.output_fps) and math.isfinite(options.output_fps)
                                               and options.output_fps > 0):
        raise ValueError(f"output_fps must be positive (or None: the source's rate), got {options.output_fps!r}")
    if not (is_whole_number(options.loop) and options.loop >= -1):
        # A fraction would count down past 0 and replay forever.
        raise ValueError(f"loop must be -1 (forever), 0 (once) or a positive whole count, got {options.loop!r}")
    if options.max_frames is not None and not (is_whole_number(options.max_frames) and options.max_frames >= 1):
        raise ValueError("max_frames must be a whole number of at least 1 (or None: until the source ends), "
                         f"got {options.max_frames!r}")
    if not (is_whole_number(options.queue_size) and options.queue_size >= 1):
        raise ValueError(f"queue_size must be a whole number of at least 1, got {options.queue_size!r}")
    delay = options.reconnect_delay
    if not (_pair(delay, is_real_number) and 0 <= delay[0] <= delay[1] and math.isfinite(delay[1])):
        raise ValueError(f"reconnect_delay must be (first, longest) seconds with 0 <= first <= longest, got {delay!r}")
    size = options.input_size
    if size is not None and not (_pair(size, is_whole_number) and min(size) >= 1):
        raise ValueError(f"input_size must be (width, height) in whole pixels, both positive, got {size!r}")
    if size is not None and (max(size) > MAX_WORKING_SIDE or size[0] * size[1] > MAX_WORKING_PIXELS):
        # Every frame is resized to it before the network sees it: refused here, not by OpenCV's allocator.
        raise ValueError(f"input_size {size[0]}x{size[1]} is too large: at most {MAX_WORKING_SIDE} px a side and "
                         f"{MAX_WORKING_PIXELS // 1_000_000} M pixels (--input-width/--input-height)")
    wait = options.wait
    if wait is not None and not (is_real_number(wait) and math.isfinite(wait) and wait >= 0):
        raise ValueError(f"wait must be >= 0 seconds (or None: as long as max_reconnects allows), got {options.wait!r}")
    reconnects = options.max_reconnects
    if reconnects is not None and not (is_whole_number(reconnects) and reconnects >= 0):
        raise ValueError("max_reconnects must be a whole number >= 0 (or None: forever), "
                         f"got {options.max_reconnects!r}")
    timeout = options.open_timeout
    if timeout is not None and not (is_real_number(timeout) and math.isfinite(timeout) and timeout > 0):
        raise ValueError("open_timeout must be a positive number of seconds (or None: FFmpeg's default, 30 s), "
                         f"got {timeout!r}")
    if options.workers is not None and not (is_whole_number(options.workers) and options.workers >= 1):
        raise ValueError("workers must be a whole number of at least 1 (or None: one per CPU core), "
                         f"got {options.workers!r}")
