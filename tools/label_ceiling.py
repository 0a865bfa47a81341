"""How well a working size can score at best: labels taken down to it and back, per class IoU.

A network that runs at a working size below the frame's returns scores on the smaller grid, and the finish
resizes them bilinearly to the frame and takes the argmax. Perfect scores on that grid are the labels
themselves taken down to it; what they lose on the way back is a ceiling no training can pass. Two ways down:

``fractions``
    each class's share of every small pixel (its one-hot plane area-averaged): what the best possible scores
    hold, and what a loss against labels kept finer than the network's input (``unet-train --label-scale``)
    teaches.
``nearest``
    the class of one frame pixel per small pixel (nearest neighbour): what training sees when the labels are
    resized with the frames, so what a network trained that way learns to reproduce at best.

Example:
    python tools/label_ceiling.py --split engine/models/camvid.split.json --data ../shared/data/camvid \\
        --parts select,report --size 256x192
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from unetrt.cli import format_size, parse_size, run_cli
from unetrt.cli_options import CommandParser
from unetrt.datasets import read_class_table, read_label
from unetrt.heldout import HeldOutSplit
from unetrt.metrics import ConfusionMatrix

METHODS = ("fractions", "nearest")


def round_trip(label: np.ndarray, size: tuple[int, int], num_classes: int, method: str) -> np.ndarray:
    """The label taken to ``size`` (W, H) by ``method``, resized back bilinearly as class planes, argmax.

    Args:
        label: HxW class ids (ids at or above ``num_classes`` are ignored: they are in no plane).
        size: the working size (width, height).
        num_classes: the class table's size.
        method: ``fractions`` or ``nearest`` (see the module docstring).

    Returns:
        HxW class ids as the finish would return them from perfect scores.

    Raises:
        ValueError: for an unknown method.

    Example:
        >>> label = np.zeros((6, 12), np.uint8); label[:, 4:6] = 1  # a pole 2 px wide, a third kept
        >>> round_trip(label, (4, 2), 2, "fractions")[0, :6].tolist(), round_trip(label, (4, 2), 2, "nearest").sum()
        ([0, 0, 0, 0, 1, 0], np.uint64(0))
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    height, width = label.shape
    if method == "nearest":
        label = cv2.resize(label, size, interpolation=cv2.INTER_NEAREST)
    planes = []
    for class_id in range(num_classes):
        plane = (label == class_id).astype(np.float32)
        if method == "fractions":
            plane = cv2.resize(plane, size, interpolation=cv2.INTER_AREA)
        planes.append(cv2.resize(plane, (width, height), interpolation=cv2.INTER_LINEAR))
    return np.argmax(np.stack(planes), axis=0).astype(np.uint8)


def ceilings(label_paths: Sequence[Path], size: tuple[int, int], num_classes: int,
             ignore_index: int | None) -> dict[str, list[float]]:
    """Per-class IoU of each method's round trip over the labels, pooled."""
    matrices = {method: ConfusionMatrix(num_classes, ignore_index) for method in METHODS}
    for path in label_paths:
        label = read_label(path, binary=False)
        for method, matrix in matrices.items():
            matrix.update(round_trip(label, size, num_classes, method), label)
    return {method: [float(v) for v in matrix.iou()] for method, matrix in matrices.items()}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = CommandParser(prog="label_ceiling.py", description=__doc__.split("\n")[0])
    parser.add_argument("--split", required=True, type=Path, help="a held-out split (engine/heldout.py)")
    parser.add_argument("--data", required=True, type=Path, help="the camvid-layout data root")
    parser.add_argument("--parts", default="select,report", help="parts of the split, comma separated")
    parser.add_argument("--size", required=True, type=parse_size, help="working size WxH")
    parser.add_argument("--out", type=Path, default=None, help="also write the figures to this JSON file")

    def action() -> None:
        args = parser.parse_args(argv)
        split = HeldOutSplit.read(args.split)
        table = read_class_table(args.data / "classes.json")
        labels = [label for part in args.parts.split(",") for _, label in split.pairs(args.data, part.strip())]
        figures = ceilings(labels, args.size, len(table.names), table.ignore_index)
        print(f"{len(labels)} labels of {args.parts}, at {format_size(args.size)} and back:")
        for method, ious in figures.items():
            per_class = ", ".join(f"{name} {100 * iou:.1f}" for name, iou in zip(table.names, ious, strict=True))
            print(f"{method:9s} mean IoU {100 * float(np.mean(ious)):.1f}: {per_class}")
        if args.out is not None:
            args.out.write_text(json.dumps({"size": list(args.size), "parts": args.parts, "labels": len(labels),
                                            "classes": list(table.names), "iou": figures}, indent=2) + "\n")
    return run_cli(action)


if __name__ == "__main__":
    sys.exit(main())
