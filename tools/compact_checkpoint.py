"""Write a checkpoint's weights in float16 (half the bytes), e.g. to commit a wide network's best.pt.

Usage::

    python tools/compact_checkpoint.py runs/camvid_wide/best.pt checkpoints/camvid_wide/best.pt
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from unetrt.cli import run_cli
from unetrt.export.compact import compact_checkpoint


def main(argv: Sequence[str] | None = None) -> int:
    """Compact SOURCE into DESTINATION; exit 2 with one line on a bad file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="a checkpoint written by unet-train")
    parser.add_argument("destination", type=Path, help="the float16 checkpoint to write")
    args = parser.parse_args(argv)

    def run() -> None:
        written = compact_checkpoint(args.source, args.destination)
        print(f"{written}: {written.stat().st_size / 2**20:.1f} MiB (from {args.source.stat().st_size / 2**20:.1f})")

    return run_cli(run)


if __name__ == "__main__":
    sys.exit(main())
