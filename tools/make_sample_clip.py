"""Make the bundled sample clip from the CamVid validation sequence 0016E5.

Writes ``engine/samples/camvid_0016E5.mp4`` (MPEG-4, 10 fps, 480x360) from the
frames of ``camvid/val`` sorted by name, then reads it back to check the frame count.

Usage::

    python tools/make_sample_clip.py [--data ../shared/data/camvid/val] [--fps 10]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
from tqdm import tqdm

from unetrt.cli import run_cli

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "camvid" / "val"
DEFAULT_OUTPUT = REPO / "engine" / "samples" / "camvid_0016E5.mp4"
MAX_BYTES = 5 * 1024 * 1024


def make_clip(frames_dir: Path, output: Path, fps: float) -> int:
    """Encode the sorted PNG frames of ``frames_dir`` into ``output``; returns the frame count.

    Raises:
        FileNotFoundError: when the folder has no PNG frames.
        ValueError: when the frames differ in size, the clip does not decode to as many frames, or it is too big.
    """
    files = sorted(frames_dir.glob("*.png"))
    if not files:
        raise FileNotFoundError(f"no PNG frames in {frames_dir}")
    first = cv2.imread(str(files[0]))
    if first is None:
        raise ValueError(f"{files[0]} does not decode as an image")
    size = (first.shape[1], first.shape[0])
    output.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(output), cv2.VideoWriter.fourcc(*"mp4v"), fps, size)
    try:
        for path in tqdm(files, desc="encoding", unit="frame"):
            frame = cv2.imread(str(path))
            if frame is None or (frame.shape[1], frame.shape[0]) != size:
                raise ValueError(f"{path} does not decode to a {size[0]}x{size[1]} image")
            writer.write(frame)
    finally:
        writer.release()
    capture = cv2.VideoCapture(str(output))
    decoded = 0
    while capture.read()[0]:
        decoded += 1
    capture.release()
    if decoded != len(files):
        raise ValueError(f"{output} decodes to {decoded} frames, expected {len(files)}")
    if output.stat().st_size > MAX_BYTES:
        raise ValueError(f"{output} is {output.stat().st_size} bytes, over the {MAX_BYTES}-byte budget")
    return decoded


def main(argv: Sequence[str] | None = None) -> int:
    """Build the sample clip; 0 on success, 2 on a user error."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of CamVid frames")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument("--fps", type=float, default=10.0)
    args = parser.parse_args(argv)

    def action() -> None:
        count = make_clip(args.data, args.output, args.fps)
        print(f"{args.output}: {count} frames at {args.fps:g} fps, {args.output.stat().st_size} bytes")

    return run_cli(action)


if __name__ == "__main__":
    sys.exit(main())
