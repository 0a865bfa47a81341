"""What averaging a model's probabilities over flipped copies of each frame would buy, on selection data.

Test-time augmentation spends network runs on accuracy: each frame also goes through the network mirrored (and,
for data without an up or down such as EM slices, rotated), each result is turned back, and the class
probabilities are averaged before the argmax or the threshold. This tool scores a model plain and with each set
of flips on one part of a held-out split (or on listed stems), so the gain can be set against the cost of
1x, 2x or 8x the network per frame before anything is built into the runtime.

``horizontal``
    the frame and its left-right mirror (road scenes: a mirrored street is a street).
``dihedral``
    the eight rotations and mirrors of the square (EM slices: no direction is special).

Multi-class models report mean and per-class IoU of the argmax; binary models the ISBI 2012 challenge pixel and
Rand errors of the averaged foreground probability (best threshold, as ``unet-eval``; no mask clean-up).

Example:
    python tools/test_time_flips.py camvid --split engine/models/camvid.split.json --data ../shared/data/camvid \\
        --flips horizontal --out runs/flips_camvid.json
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from unetrt.cli import format_size, parse_size, run_cli
from unetrt.cli_options import CommandParser, add_backend, add_precision
from unetrt.datasets import paired_files, read_image, read_label
from unetrt.evaluate import parse_stems, per_class
from unetrt.heldout import HeldOutSplit
from unetrt.metrics import ConfusionMatrix, IsbiChallengeScorer
from unetrt.segmenter import Segmenter

# A transform is (quarter turns counter-clockwise, then mirrored left-right or not).
Transform = tuple[int, bool]
FLIP_SETS: dict[str, tuple[Transform, ...]] = {
    "none": ((0, False),),
    "horizontal": ((0, False), (0, True)),
    "dihedral": tuple((turns, mirrored) for turns in range(4) for mirrored in (False, True)),
}


def transform_frame(frame: np.ndarray, transform: Transform) -> np.ndarray:
    """The frame (HxW or HxWxC) turned and mirrored as ``transform`` says.

    Example:
        >>> transform_frame(np.arange(6).reshape(2, 3), (1, True)).tolist()
        [[0, 3], [1, 4], [2, 5]]
    """
    turns, mirrored = transform
    turned = np.rot90(frame, turns, axes=(0, 1))
    return np.ascontiguousarray(turned[:, ::-1] if mirrored else turned)


def untransform_planes(planes: np.ndarray, transform: Transform) -> np.ndarray:
    """Planes (KxHxW) computed on a transformed frame, put back onto the original frame's grid.

    Example:
        >>> frame = np.arange(6).reshape(2, 3)
        >>> bool((untransform_planes(transform_frame(frame, (3, True))[None], (3, True))[0] == frame).all())
        True
    """
    turns, mirrored = transform
    unmirrored = planes[:, :, ::-1] if mirrored else planes
    return np.rot90(unmirrored, -turns, axes=(1, 2))


def score_flip_sets(segmenter: Segmenter, pairs: Sequence[tuple[Path, Path]],
                    flip_sets: Sequence[str]) -> list[dict[str, Any]]:
    """Score the segmenter on (image, label) pairs with its probabilities averaged over each set of flips.

    Args:
        segmenter: an open Segmenter.
        pairs: (image file, label file) pairs.
        flip_sets: names in ``FLIP_SETS``; each frame goes through the network once per transform they hold.

    Returns:
        One row per set: ``{"flips", "network_runs_per_frame"}`` and mean IoU with per-class IoU
        (multi-class) or the challenge pixel and Rand errors (binary).

    Example:
        >>> with Segmenter("camvid") as seg:  # doctest: +SKIP
        ...     rows = score_flip_sets(seg, pairs, ["none", "horizontal"])
    """
    info = segmenter.info
    scorers: dict[str, Any] = {
        name: IsbiChallengeScorer() if info.binary else ConfusionMatrix(info.num_classes, info.ignore_index)
        for name in flip_sets}
    transforms = sorted({transform for name in flip_sets for transform in FLIP_SETS[name]})
    for image_path, label_path in tqdm(pairs, desc="scoring", unit="image", disable=None):
        image = read_image(image_path, info.in_channels)
        label = read_label(label_path, info.binary)
        planes = {}
        for transform in transforms:
            result = segmenter.segment(transform_frame(image, transform), probabilities=True)
            assert result.probabilities is not None
            planes[transform] = untransform_planes(result.probabilities, transform)
        for name in flip_sets:
            probabilities = np.mean([planes[transform] for transform in FLIP_SETS[name]], axis=0)
            if info.binary:
                scorers[name].update(probabilities[0], label)
            else:
                scorers[name].update(probabilities.argmax(0).astype(np.uint8), label)
    rows = []
    for name in flip_sets:
        row: dict[str, Any] = {"flips": name, "network_runs_per_frame": len(FLIP_SETS[name])}
        if info.binary:
            scores = scorers[name].scores()
            row.update({"challenge_pixel_error": scores.pixel_error, "challenge_rand_error": scores.rand_error})
        else:
            row.update({"mean_iou": scorers[name].mean_iou(),
                        "per_class_iou": per_class(info.class_names, scorers[name].iou())})
        rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = CommandParser(prog="test_time_flips.py", description=__doc__.split("\n")[0])
    parser.add_argument("model", help="a .pt, .onnx or bundled model")
    parser.add_argument("--split", type=Path,
                        help="a held-out split (engine/heldout.py); scores its 'select' part (the report part "
                             "stays unseen until a choice is made)")
    parser.add_argument("--data", type=Path, help="with --split: the split's data root")
    parser.add_argument("--images", type=Path, help="without --split: folder of frames")
    parser.add_argument("--labels", type=Path, help="without --split: folder of label maps")
    parser.add_argument("--stems", type=parse_stems, help="without --split: only these stems, e.g. 18-20")
    parser.add_argument("--flips", default="horizontal", choices=tuple(name for name in FLIP_SETS if name != "none"),
                        help="the set of flips to average over, scored beside the plain model (default: horizontal)")
    parser.add_argument("--size", type=parse_size, default=None, metavar="WxH",
                        help="working size (default: the model's)")
    add_backend(parser)
    add_precision(parser, help="a bundled model's precision, as unet-eval's (default: auto)")
    parser.add_argument("--out", required=True, type=Path, help="writes the rows (JSON)")

    def action() -> None:
        args = parser.parse_args(argv)
        if (args.split is None) == (args.images is None):
            raise ValueError("give either --split (with --data) or --images with --labels")
        if args.split is not None:
            if args.data is None:
                raise ValueError("--split needs --data, the split's data root")
            pairs = HeldOutSplit.read(args.split).pairs(args.data, "select")
        else:
            if args.labels is None:
                raise ValueError("--images needs --labels, the folder of label maps with the same stems")
            pairs = paired_files(args.images, args.labels)
            if args.stems is not None:
                pairs = [pair for pair in pairs if pair[0].stem in set(args.stems)]
                if not pairs:
                    raise ValueError(f"--stems matched no file in {str(args.images)!r}")
        if not args.out.parent.is_dir():
            raise FileNotFoundError(f"folder of --out {str(args.out)!r} does not exist")
        with Segmenter(args.model, backend=args.backend, precision=args.precision, working_size=args.size) as segmenter:
            rows = score_flip_sets(segmenter, pairs, ["none", args.flips])
            size = segmenter.info.working_size
        record = {"model": args.model, "working_size": None if size is None else format_size(size),
                  "images": len(pairs), "rows": rows}
        args.out.write_text(json.dumps(record, indent=2) + "\n")
        for row in rows:
            figure = (f"mean IoU {100 * row['mean_iou']:.2f}" if "mean_iou" in row else
                      f"pixel error {row['challenge_pixel_error']:.4f}, Rand error {row['challenge_rand_error']:.4f}")
            print(f"{row['flips']:<10s} ({row['network_runs_per_frame']} network run(s) a frame): {figure}")
        print(f"wrote {args.out}")
    return run_cli(action)


if __name__ == "__main__":
    sys.exit(main())
