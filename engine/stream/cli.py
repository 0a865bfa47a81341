"""``unet-stream INPUT [OUTPUT]``: segment a camera, stream, video or image folder live.

Examples::

    unet-stream sample out.mp4 --model camvid          # the bundled CamVid clip
    unet-stream /dev/video0 display://0 --visualize overlay,mask
    unet-stream csi://0 --headless --stats stats.json  # Jetson CSI camera, no window
    unet-stream csi://0 http://0.0.0.0:8080 --legend   # live view in a browser on any computer of the network
    unet-stream rtsp://192.168.1.2:8554/cam out/frame_%05d.png --max-fps 5
    unet-stream recording.mcap segmented.mcap --topic /camera/image_raw  # ROS 2 bag in, /unetrt/mask out
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..cli import StopOnSigterm, parse_size, print_out, raise_terminated, run_cli
from ..cli_options import (
    ALIASES_EPILOG,
    CommandParser,
    add_aliases,
    add_backend,
    add_device,
    add_model,
    add_output,
    add_precision,
    add_size,
    add_threads,
)
from ..frame_path import NonFiniteScoresError
from ..paths import write_whole
from .flip import FLIPS
from .options import StreamOptions
from .output_path import check_not_replacing, check_writable_file, is_frame_file, same_file
from .pipeline import Stream
from .render import LEGEND_PLACES
from .sinks import display_available
from .sources import SourceError, reads_still_hung, stored_frame_count
from .stats import format_summary
from .uri import SinkSpec, parse_sink
from .writer import OutputError

# Exit status when the output failed (a full disk): the frames written before it are kept and playable.
OUTPUT_FAILED = 1

log = logging.getLogger("unetrt.stream")


def _class_name_list(text: str) -> tuple[str, ...]:
    """``--ignore-class``'s comma-separated names.

    Raises:
        argparse.ArgumentTypeError: when it names no class (``,`` or blank), which would leave every class drawn.
    """
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise argparse.ArgumentTypeError(f"names no class, got {text!r}; give class names, e.g. sky,road")
    return names


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``unet-stream``."""
    parser = CommandParser(
        prog="unet-stream",
        description="Segment frames from a camera, network stream, video or image folder in real time.",
        # The epilog is printed as written (argparse substitutes %-codes only in help strings), so one '%' here.
        epilog="inputs: 0, /dev/video0, v4l2:///dev/video0, csi://0, rtsp://host/path, file://clip.mp4, clip.mp4, "
               "a folder, 'frames/*.png', sample (the bundled CamVid clip), a ROS 2 bag (a rosbag2 folder, rec.mcap, "
               "rec.db3; needs pip install 'unetrt[ros]'). "
               "outputs: display://0, out.mp4 (H.264 when ffmpeg or OpenCV has an encoder, else MPEG-4 Part 2), "
               "out.avi (Motion JPEG), a folder, out/frame_%04d.png, http://127.0.0.1:8080 (live view in a "
               "browser on this machine; http://0.0.0.0:8080 serves every network interface), out.mcap (a ROS 2 bag: "
               "/unetrt/mask mono8 class ids and /unetrt/overlay JPEG, with each input message's header). "
               "Sizes are WIDTHxHEIGHT or separate widths and heights, in pixels. " + ALIASES_EPILOG,
    )
    parser.add_argument("input", help="input URI (see below)")
    add_output(parser, positional="OUTPUT", metavar="OUTPUT",
               help="output URI (default: a window when there is a display, else none)")
    # segnet (jetson-inference) names its built-in models --network and its own files --model.
    add_model(parser, default="camvid", required=False, aliases=("--network",),
              help="model file (.onnx, .pt, .plan) or bundled name")
    add_backend(parser)
    add_precision(parser, help="a bundled model's precision (auto: the fastest installed engine and precision "
                               "that keeps the accuracy; bf16 is OpenVINO's hint)")
    add_device(parser, help="where the network runs (auto: a CUDA GPU when one is usable, else the CPU)")
    parser.add_argument("--no-build", dest="build", action="store_false",
                        help="on a GPU with TensorRT, use a cached TensorRT engine only, never build one (without a "
                             "cached engine the next backend runs)")
    add_threads(parser, help="CPU inference threads per worker (ONNX Runtime, OpenVINO, torch)",
                default_text="the usable cores shared out among the workers")
    parser.add_argument("--workers", type=int, default=None,
                        help="segmenters running side by side (default: one per CPU core, at most 4, for CPU "
                             "inference, sharing the cores; one on a GPU)")
    add_size(parser, help="resize frames to this size for the network, in place of the model's own (smaller is "
                          "faster and a little less accurate)")
    parser.add_argument("--visualize", default="overlay", help="overlay, mask or overlay,mask (side by side)")
    parser.add_argument("--alpha", type=float, default=0.5, help="mask opacity in the overlay, 0..1")
    parser.add_argument("--ignore-class", dest="ignore_classes", default=(), metavar="NAME[,NAME...]",
                        type=_class_name_list,
                        help="classes the picture leaves undrawn, as segnet's --ignore-class (the overlay shows the "
                             "frame there; masks are unchanged). Default: none")
    parser.add_argument("--input-width", type=int, default=None, help="resize frames (and ask cameras) to this width")
    parser.add_argument("--input-height", type=int, default=None, help="... and this height (give both)")
    parser.add_argument("--max-fps", type=float, default=None, help="process at most this many frames per second")
    # segnet's --input-rate asks the camera for a rate; here frames above the rate are skipped (docs/cli.md).
    add_aliases(parser, ["--input-rate", "--framerate"], "max_fps", type=float)
    parser.add_argument("--loop", type=int, default=0, help="replay a file or folder: N more times, -1 forever")
    add_aliases(parser, ["--input-loop"], "loop", type=int)
    parser.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    parser.add_argument("--tile", type=parse_tile, default=None,
                        help="segment in overlapping tiles of N pixels or WIDTHxHEIGHT (large frames)")
    parser.add_argument("--overlap", type=int, default=None,
                        help="pixels neighbouring tiles share (with --tile) (default: the smaller tile side / 8, in "
                             "steps of the network's size multiple; 0 for a 'valid' model)")
    parser.add_argument("--blend", default=None,
                        help="how tile overlaps combine: gaussian, linear or crop (default: gaussian)")
    parser.add_argument("--input-flip", default="none", choices=list(FLIPS),
                        help="turn every frame before segmenting it (a camera mounted upside down: rotate-180)")
    parser.add_argument("--legend", nargs="?", const="outside", default="off", choices=LEGEND_PLACES,
                        help="draw the class names and colours: outside (a strip beside the frame; --legend alone), "
                             "inside (over its bottom-left corner) or off")
    parser.add_argument("--headless", action="store_true", help="never open a window")
    parser.add_argument("--no-overlay-stats", dest="draw_stats", action="store_false",
                        help="do not draw FPS and latency on the output (they are drawn by default)")
    parser.add_argument("--stats", nargs="?", const="-", default=None, metavar="PATH",
                        help="write the JSON summary to PATH, or to stdout without PATH (the table goes to stderr)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing output video, or delete an earlier run's frames (files named "
                             "like the new ones) from an output folder; without it both are refused")
    parser.add_argument("--wait", type=float, default=None, metavar="SECONDS",
                        help="wait this long for a live source that is not up yet, retrying with backoff "
                             "(default: as long as --max-reconnects allows; 0: fail at once)")
    parser.add_argument("--max-reconnects", type=int, default=None, metavar="N",
                        help="give a live source up after N failed reopen attempts in a row (default: never)")
    parser.add_argument("--open-timeout", type=float, default=10.0, metavar="SECONDS",
                        help="a network stream that does not open, or send a frame, within this time counts "
                             "as failed and is retried; a first TensorRT build waits at most this long for the "
                             "source's first attempt, a camera's too (default: 10)")
    parser.add_argument("--topic", default=None,
                        help="the image topic of a ROS 2 bag input (default: the bag's only image topic)")
    parser.add_argument("--verbose", "-v", action="store_true",
                        help="log every reconnect and skipped frame, and let OpenCV and FFmpeg log too")
    return parser


def parse_tile(text: str) -> int | tuple[int, int]:
    """``N`` or ``WIDTHxHEIGHT`` -> the Segmenter's ``tile``: a side, or (height, width).

    Example:
        >>> parse_tile("256"), parse_tile("320x240")
        (256, (240, 320))
    """
    if text.isdigit() and int(text) > 0:
        return int(text)
    width, height = parse_size(text)
    return height, width


def _input_size(args: argparse.Namespace) -> tuple[int, int] | None:
    width, height = args.input_width, args.input_height
    if width is None and height is None:
        return None
    if width is None or height is None or width < 1 or height < 1:
        raise ValueError(f"give both --input-width and --input-height as positive numbers, got {width}x{height}")
    return width, height


def _output(args: argparse.Namespace) -> SinkSpec | None:
    """The output, parsed once here (the stream takes the spec as it is)."""
    if args.output is None:
        return SinkSpec("display", "0") if not args.headless and display_available() else None
    spec = parse_sink(args.output)
    if args.headless and spec.kind == "display":
        raise ValueError(f"--headless cannot show {args.output}; write to a file or drop --headless")
    return spec


def stream_options(args: argparse.Namespace) -> StreamOptions:
    """The stream's settings from the parsed flags, built once.

    Raises:
        ValueError: on a bad value (see :class:`~unetrt.stream.options.StreamOptions`).
    """
    try:
        return StreamOptions(visualize=args.visualize, alpha=args.alpha, draw_stats=args.draw_stats,
                             legend=args.legend, ignore_classes=args.ignore_classes, input_flip=args.input_flip,
                             input_size=_input_size(args), max_fps=args.max_fps, loop=args.loop,
                             max_frames=args.max_frames, max_reconnects=args.max_reconnects, wait=args.wait,
                             open_timeout=args.open_timeout, segmenter_options=_segmenter_options(args),
                             workers=args.workers, overwrite=args.overwrite, video_library_logs=args.verbose,
                             topic=args.topic)
    except ValueError as error:
        raise ValueError(_in_flag_terms(str(error))) from None


# StreamOptions' fields that a flag of the same name sets.
_FLAG_FIELDS = ("alpha", "max_fps", "loop", "max_frames", "max_reconnects", "wait", "open_timeout", "workers")


def _in_flag_terms(message: str) -> str:
    """A StreamOptions refusal as the command's user meets it: named by the flag typed, without the Python None.

    StreamOptions speaks of its fields and of None ("max_frames must be ... (or None: until the source ends)"); on
    the command line there is no None, and the default it names is not always the command's (--open-timeout's is 10
    s, not FFmpeg's 30).
    """
    field, sep, rest = message.partition(" must ")
    if not sep or field not in _FLAG_FIELDS:
        return message
    rest = re.sub(r" \(or None: [^)]*\)", "", rest)
    return f"--{field.replace('_', '-')} must {rest}"


def _segmenter_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {"backend": args.backend, "device": args.device, "precision": args.precision,
                               "build": args.build}
    for name in ("threads", "tile", "overlap", "blend", "working_size"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    return options


def _check_stats_target(args: argparse.Namespace) -> None:
    """Check ``--stats PATH`` before the model loads, so the summary of a long run is not lost at its end.

    Raises:
        ValueError: when PATH cannot be written, or is the input or the output.
    """
    if args.stats in (None, "-"):
        return
    target = Path(args.stats)
    check_writable_file(target, f"--stats {args.stats!r}")
    for other, role in ((args.input, "input"), (args.output, "output")):
        if other is not None and same_file(target, Path(other)):
            raise ValueError(f"--stats {args.stats!r} is the {role}; give the summary a file of its own")
    # An image output writes (or, with --overwrite, deletes) its frames by name: the summary would replace one.
    spec = None if args.output is None else parse_sink(args.output)
    if spec is not None and spec.kind == "images" and is_frame_file(spec.location, target):
        raise ValueError(f"--stats {args.stats!r} is a frame the output {args.output!r} writes; give the summary a "
                         "file of its own")
    check_not_replacing(target, f"--stats {args.stats!r}", args.overwrite)


def _write_stats(summary: dict[str, Any], target: str | None) -> None:
    """Print the table and write the JSON summary.

    Raises:
        ValueError: when the summary file cannot be written (it was checked before the run; the disk may
            have filled since), after the table and the JSON on stdout, so nothing is lost.
    """
    table = format_summary(summary)
    text = json.dumps(summary, indent=2)
    if target == "-":
        print(table, file=sys.stderr)
        print_out(text)
        return
    print_out(table)
    if target is not None:
        try:
            Path(target).parent.mkdir(parents=True, exist_ok=True)
            write_whole(Path(target), text + "\n")
        except OSError as exc:
            print(text)
            raise ValueError(f"cannot write --stats {target!r}: {exc.strerror or exc}; the summary is above") from exc


def _stream(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Where the output goes is always worth a line: the live view's address, the video's codec.
    for name in ("unetrt.stream.webview", "unetrt.stream.sinks"):
        logging.getLogger(name).setLevel(logging.INFO)
    with StopOnSigterm() as sigterm:
        interrupted = _run_stream(args, sigterm)
    if interrupted:
        raise KeyboardInterrupt
    sigterm.raise_if_received()


def _run_stream(args: argparse.Namespace, sigterm: StopOnSigterm) -> bool:
    """Stream until the end, Ctrl-C or SIGTERM; finish the output and print the summary. True after Ctrl-C."""
    interrupted = False
    output_error: OutputError | None = None
    source_error: SourceError | None = None
    scores_error: NonFiniteScoresError | None = None
    _check_stats_target(args)
    try:
        # The stream checks the input and output before it loads the model, so mistakes are reported at once.
        # Until the stream exists SIGTERM raises, so that a supervisor's stop ends a first-run TensorRT build
        # (minutes on a Jetson) at once rather than after it; then it stops the stream, which finishes its output.
        sigterm.stop = raise_terminated
        stream = Stream(args.input, args.model, _output(args), stream_options(args))
        try:
            sigterm.stop = stream.stop
        except BaseException:  # SIGTERM raised just before its stop was in place: the opened model is closed
            stream.close()
            raise
        with stream, tqdm(unit="frame", disable=None, desc="unet-stream") as progress:
            delivered = 0
            try:
                for index, _ in enumerate(stream):
                    if index == 0:  # the source is open now: a stored one knows how many frames it holds
                        progress.reset(total=_expected_frames(stream, args))
                    progress.update()
                    delivered = index + 1
            except KeyboardInterrupt:
                interrupted = True
            except OutputError as exc:  # reported after the summary, which says how many frames were written
                output_error = exc
            except SourceError as exc:
                if not delivered:
                    raise  # never streamed (not up, no frame that decodes): the error line says it all
                # A camera unplugged mid-run: the summary (and --stats) of what was segmented and written comes first.
                source_error = exc
            except NonFiniteScoresError as exc:
                if not delivered:
                    raise
                # A model overflowing FP16 on a bright scene hours into a run: its figures are kept, as a camera's.
                scores_error = exc
            finally:
                _close_ignoring_ctrl_c(stream)
    except SourceError as exc:
        raise ValueError(str(exc)) from exc
    _write_stats(stream.summary(), args.stats)
    if output_error is not None:
        raise output_error
    if source_error is not None:
        raise ValueError(str(source_error)) from source_error
    if scores_error is not None:
        raise scores_error
    return interrupted


def _close_ignoring_ctrl_c(stream: Stream) -> None:
    """Finish the output; a second Ctrl-C must not cut the video short while its index is written."""
    if threading.current_thread() is not threading.main_thread():
        stream.close()
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        stream.close()
    finally:
        signal.signal(signal.SIGINT, previous)


def _expected_frames(stream: Stream, args: argparse.Namespace) -> int | None:
    """Frames the stream will segment, when that is known (for the progress bar); the source is open."""
    count = stored_frame_count(stream.source)
    if stream.source.live or args.loop != 0 or count is None:
        return args.max_frames
    return min(count, args.max_frames) if args.max_frames is not None else count


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``unet-stream``.

    Returns:
        0 on success, 2 on a user error, or on a live source gone for good or a frame the network gave NaN or
        infinite scores for (these two after the summary of what was streamed),
        1 when writing the output failed (a full disk: the frames written
        before are kept), 130 after Ctrl-C and 143 after SIGTERM (in these three cases the output is
        finished and the summary printed first).
    """
    args = build_parser().parse_args(argv)
    try:
        code = run_cli(lambda: _stream(args))
    except OutputError as exc:
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        code = OUTPUT_FAILED
    if reads_still_hung():
        # A read from a frozen server is still blocked in FFmpeg: skip the interpreter's shutdown, which would
        # abort the process when that read returns (the summary and the output are already finished).
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
