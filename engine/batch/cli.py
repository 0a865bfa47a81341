"""``unet-batch``: segment a fleet's recordings on a Ray cluster, one mask PNG per frame.

Exit codes: 0 when every frame was segmented (or already was), 1 when some frame failed (the summary lists
them), 2 on a user error (bad input, model or option; Ray not installed; no Ray cluster at --address), 130 on
Ctrl-C, 143 on SIGTERM.

Example:
    unet-batch recordings/*.mp4 frames/ -o masks --model camvid --address auto --workers 4
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from ..cli import run_cli
from ..cli_options import (
    ALIASES_EPILOG,
    CommandParser,
    add_backend,
    add_batch_size,
    add_model,
    add_output,
    add_precision,
    add_size,
    add_threads,
    positive_int,
)
from .job import DEFAULT_BATCH_SIZE, SUMMARY_NAME, BatchSettings, run_batch

FRAMES_FAILED = 1
LOCAL_ADDRESSES = ("none", "local")
# Subfolders the report names; summary.json lists them all.
SUBFOLDERS_NAMED = 5


def parse_address(text: str) -> str | None:
    """``--address``: 'auto', ``ray://HOST:PORT``, ``HOST:PORT``, or 'none' (a local cluster for the job).

    Raises:
        argparse.ArgumentTypeError: on anything else.

    Example:
        >>> parse_address("ray://head:10001"), parse_address("none")
        ('ray://head:10001', None)
    """
    value = text.strip()
    if value.lower() in LOCAL_ADDRESSES:
        return None
    if value == "auto":
        return value
    host, colon, port = value.removeprefix("ray://").rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(
            f"--address must be auto, ray://HOST:PORT, HOST:PORT or none, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``unet-batch``."""
    parser = CommandParser(
        prog="unet-batch", epilog=ALIASES_EPILOG,
        description="Segment image files, folders, globs and videos on a Ray cluster: one mask PNG per frame "
                    "(OUT/<stem>.png for an image, OUT/<video stem>/<frame index>.png for a video) and "
                    f"OUT/{SUMMARY_NAME}. A re-run writes only the outputs that are missing.")
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="image files, video files, and folders or globs of them")
    add_output(parser, required=True, metavar="OUT_DIR", help="folder for masks and the summary")
    add_model(parser, help="a .plan, .onnx or .pt file (same path on every node) or a bundled model name")
    add_backend(parser)
    add_precision(parser, help="a bundled model's precision (auto: the fastest that keeps the accuracy)")
    add_size(parser, help="resize frames to this size for the network, in place of the model's own")
    parser.add_argument("--address", type=parse_address, default=None,
                        help="the Ray cluster: auto (the one this machine joined with 'ray start'), "
                             "ray://HOST:PORT (Ray Client), HOST:PORT, or none: a local cluster for this job "
                             "(default: none)")
    parser.add_argument("--workers", type=positive_int, default=None,
                        help="actors in the pool, one Segmenter each (default: one per GPU of the cluster; "
                             "without GPUs one per --threads CPUs, one CPU kept for decoding)")
    add_threads(parser, default=1, help="CPU inference threads per actor, and the CPUs it reserves")
    parser.add_argument("--gpus-per-worker", type=float, default=1.0,
                        help="GPUs each actor reserves on GPU nodes (0.5: two actors share a GPU)")
    add_batch_size(parser, default=DEFAULT_BATCH_SIZE, help="frames per actor call")
    parser.add_argument("--overlay", action="store_true",
                        help="also write each frame with its mask blended over it (<name>.overlay.png)")
    return parser


def report(summary: dict[str, Any]) -> str:
    """The lines ``unet-batch`` prints at the end."""
    frames = summary["frames"]
    lines = [f"{frames['written']} frames written, {frames['skipped']} already done, {frames['failed']} failed "
             f"in {summary['wall_time_s']:.1f} s ({summary['fps'] or 0:.1f} frames/s) by {summary['pool_size']} "
             f"workers on {len(summary['cluster']['nodes'])} nodes ({summary['backend']}, {summary['precision']})"]
    for failure in summary["failures"][:10]:
        at = "" if failure["frame"] is None else f" frame {failure['frame']}"
        lines.append(f"failed: {failure['input']}{at}: {failure['error']}")
    if frames["failed"] > 10:
        lines.append(f"... and {frames['failed'] - 10} more failures")
    unread = summary.get("not_read") or []
    if unread:
        named = ", ".join(unread[:SUBFOLDERS_NAMED]) + (
            f" and {len(unread) - SUBFOLDERS_NAMED} more" if len(unread) > SUBFOLDERS_NAMED else "")
        lines.append(f"not read: the files in the subfolders {named} of an input folder "
                     "(unet-batch reads the files of a folder, not its subfolders): give each subfolder as an input of "
                     "its own")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``unet-batch``; returns the exit code."""
    args = build_parser().parse_args(argv)
    failed = 0

    def action() -> None:
        nonlocal failed
        settings = BatchSettings(model=args.model, backend=args.backend, precision=args.precision,
                                 working_size=args.working_size, threads=args.threads,
                                 gpus_per_worker=args.gpus_per_worker, batch_size=args.batch_size,
                                 overlay=args.overlay)
        summary = run_batch(args.inputs, args.output, settings, address=args.address, workers=args.workers)
        print(report(summary))
        failed = summary["frames"]["failed"]
        if failed:
            print(f"error: {failed} frames failed; {args.output}/{SUMMARY_NAME} lists them", file=sys.stderr)

    code = run_cli(action)
    return code or (FRAMES_FAILED if failed else 0)


if __name__ == "__main__":
    sys.exit(main())
