"""``unet-eval``: segmentation quality of a model over an image folder and its label folder.

Multi-class models report mean IoU, per-class IoU and pixel accuracy (the ignore
index excluded). Binary models report IoU, Dice, pixel error (1 - pixel accuracy) and
the mean ISBI 2012 Rand error of the masks the segmenter returns (its threshold and
clean-up: isbi's stated 0.1 and cell lines), and the same two errors as the
ISBI 2012 challenge computes them (best of thresholds 0.0 to 1.0, pooled over the
images; see ``unetrt.metrics.IsbiChallengeScorer``), the figures the U-Net paper reports.

Example:
    unet-eval --model camvid --images ../shared/data/camvid/val --labels ../shared/data/camvid/valannot
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from .bundled import MODELS_DIR
from .cli import format_size, print_out, run_cli
from .cli_options import (
    ALIASES_EPILOG,
    CommandParser,
    add_backend,
    add_device,
    add_model,
    add_output,
    add_precision,
    add_size,
    add_threads,
)
from .datasets import check_label_ids, find_class_table, paired_files, read_class_table, read_image, read_label
from .frame_path import NonFiniteScoresError
from .heldout import PARTS, HeldOutSplit, split_file
from .metrics import ConfusionMatrix, IsbiChallengeScorer, rand_error
from .model_info import ModelInfo
from .paths import write_whole
from .postprocess import POSTPROCESS_MODES, STATED, BinaryCleanup
from .segmenter import Segmenter
from .stream.output_path import check_reads_nothing, check_writable_file


def evaluate(segmenter: Segmenter, images: str | Path, labels: str | Path,
             stems: Sequence[str] | None = None) -> dict[str, Any]:
    """Segment every image of a folder and score it against the label with the same stem.

    Args:
        segmenter: an open Segmenter (images are read with OpenCV and handed to it in its ``color_order``).
        images: folder of frames.
        labels: folder of label maps (class ids, or 0/255 masks for binary models).
        stems: score only the files with these stems (e.g. a held-out block of slices).

    Returns:
        A JSON-ready dictionary of figures (see the module docstring).

    Raises:
        FileNotFoundError: when a folder does not exist.
        ValueError: when the stems differ, a file cannot be read, a label's size differs from its image, or the
            labels' ``classes.json`` names other classes than the model (:func:`check_same_classes`).

    Example:
        >>> with Segmenter("camvid") as seg:  # doctest: +SKIP
        ...     figures = evaluate(seg, "val", "valannot")
    """
    pairs = paired_files(images, labels)
    check_same_classes(segmenter.info, labels)
    if stems is not None:
        wanted = set(stems)
        missing = wanted - {image.stem for image, _ in pairs}
        if missing:
            raise ValueError(f"--stems names files that are not in {str(images)!r}: {', '.join(sorted(missing))}")
        pairs = [pair for pair in pairs if pair[0].stem in wanted]
    return evaluate_pairs(segmenter, pairs)


def evaluate_stated(segmenter: Segmenter, stated: Mapping[str, Any], data_root: str | Path) -> dict[str, Any]:
    """Score a segmenter on the data a bundled model's ``NAME.json`` reports its figures on.

    Args:
        segmenter: an open Segmenter (images are read with OpenCV and handed to it in its ``color_order``).
        stated: the model's statement (``engine/models/NAME.json``): a held-out ``split`` ({"file": a split
            file in ``engine/models``, "data": its data set folder, "part": the part reported on}), else
            ``images``, ``labels`` and ``stems``.
        data_root: the folder those data set paths are relative to (``../shared/data``).

    Returns:
        The figures, as :func:`evaluate_pairs`.

    Raises:
        ValueError: as :func:`evaluate` and :meth:`unetrt.heldout.HeldOutSplit.pairs`.

    Example:
        >>> stated = json.loads(Path("engine/models/camvid.json").read_text())  # doctest: +SKIP
        >>> with Segmenter("camvid") as seg:  # doctest: +SKIP
        ...     figures = evaluate_stated(seg, stated, "../shared/data")
    """
    root = Path(data_root)
    split = stated.get("split")
    if split is not None:
        pairs = HeldOutSplit.read(MODELS_DIR / split["file"]).pairs(root / split["data"], split["part"])
        return evaluate_pairs(segmenter, pairs)
    return evaluate(segmenter, root / stated["images"], root / stated["labels"], stated.get("stems"))


def check_same_classes(info: ModelInfo, labels: str | Path) -> None:
    """Refuse labels whose ``classes.json`` (in or beside the label folder) names other classes than the model.

    Their ids would be scored as the model's classes of those ids, and whenever the ids fit the model's table no
    other check could see it.

    Raises:
        ValueError: naming both class lists.
    """
    table_path = find_class_table(labels)
    if info.binary or table_path is None:
        return
    table = read_class_table(table_path)
    if table.names != tuple(info.class_names):
        raise ValueError(f"the labels' class table {str(table_path)!r} has the classes {', '.join(table.names)}, and "
                         f"the model {info.name!r} {', '.join(info.class_names)}: the labels' ids would be scored as "
                         "the model's classes; evaluate a model trained on these classes, or labels of the model's")


def evaluate_pairs(segmenter: Segmenter, pairs: Sequence[tuple[Path, Path]]) -> dict[str, Any]:
    """Segment each image of (image, label) pairs and score it against its label.

    Args:
        segmenter: an open Segmenter (images are read with OpenCV and handed to it in its ``color_order``).
        pairs: (image file, label file) pairs, e.g. one part of a held-out split (:mod:`unetrt.heldout`).

    Returns:
        A JSON-ready dictionary of figures (see the module docstring).

    Raises:
        ValueError: when a file cannot be read or a label's size differs from its image;
            :class:`~unetrt.NonFiniteScoresError` naming the image whose scores were NaN or infinite.

    Example:
        >>> split = HeldOutSplit.read(split_file("camvid"))
        >>> with Segmenter("camvid") as seg:  # doctest: +SKIP
        ...     figures = evaluate_pairs(seg, split.pairs("../shared/data/camvid", "report"))
    """
    info = segmenter.info
    binary = info.binary
    matrix = ConfusionMatrix(2 if binary else info.num_classes, None if binary else info.ignore_index)
    rand_errors = []
    cleanup = segmenter.cleanup
    challenge = IsbiChallengeScorer(binarize=None if cleanup is None else cleanup.apply)
    for image_path, label_path in tqdm(pairs, desc="evaluating", unit="image", disable=None):
        image = read_image(image_path, info.in_channels)
        if image.ndim == 3 and segmenter.color_order == "rgb":
            # Read as OpenCV's BGR; the segmenter takes its frames in its own order.
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        label = read_label(label_path, binary)
        if label.shape != image.shape[:2]:
            raise ValueError(
                f"label {label_path.name} is {label.shape[1]}x{label.shape[0]} but image {image_path.name} is "
                f"{image.shape[1]}x{image.shape[0]}"
            )
        if not binary:
            # Ids outside the table (another data set's labels, 0/255 masks) would score as nothing, silently.
            check_label_ids(label, label_path, info.num_classes, info.ignore_index)
        try:
            result = segmenter.segment(image, probabilities=binary)
        except NonFiniteScoresError as error:
            # 'this frame' of a data set of hundreds: the image to look at (or leave out) is named.
            raise error.restated(frame=f"image {image_path.name}") from None
        matrix.update(result.mask, label)
        if binary and result.probabilities is not None:
            rand_errors.append(rand_error(result.mask, label))
            challenge.update(result.probabilities[0], label)
    # The precision and device with the backend: an INT8 figure is not the FP32 one (and may differ between CPUs),
    # and ONNX Runtime and torch run on either device.
    figures: dict[str, Any] = {"model": info.name, "images": len(pairs), "backend": segmenter.backend.name,
                               "precision": segmenter.backend.precision, "device": segmenter.backend.device,
                               "working_size": None if info.working_size is None else list(info.working_size)}
    if cleanup is not None:
        figures["cleanup"] = asdict(cleanup)
    if binary:
        iou = matrix.iou()
        tp = matrix.matrix[1, 1]
        dice = 2 * tp / max(matrix.matrix[1, :].sum() + matrix.matrix[:, 1].sum(), 1)
        figures.update({
            "iou": float(iou[1]),
            "dice": float(dice),
            "pixel_error": 1.0 - matrix.pixel_accuracy(),
            "rand_error": float(np.mean(rand_errors)),
        })
        scores = challenge.scores()
        figures.update({
            "challenge_pixel_error": scores.pixel_error, "challenge_pixel_threshold": scores.pixel_threshold,
            "challenge_rand_error": scores.rand_error, "challenge_rand_threshold": scores.rand_threshold,
        })
    else:
        figures.update({
            "mean_iou": matrix.mean_iou(),
            "pixel_accuracy": matrix.pixel_accuracy(),
            "per_class_iou": per_class(info.class_names, matrix.iou()),
            # Whether a class is missed or painted over its neighbours: IoU alone does not say.
            "per_class_precision": per_class(info.class_names, matrix.precision()),
            "per_class_recall": per_class(info.class_names, matrix.recall()),
        })
    return figures


def per_class(class_names: Sequence[str], values: np.ndarray) -> dict[str, float | None]:
    """One figure per class name, JSON-ready: None where the figure is NaN (a class that never occurred).

    Example:
        >>> per_class(["road", "pole"], np.array([0.9, np.nan]))
        {'road': 0.9, 'pole': None}
    """
    return {name: None if np.isnan(v) else float(v) for name, v in zip(class_names, values, strict=True)}


def format_figures(figures: dict[str, Any]) -> str:
    """The figures as the lines ``unet-eval`` prints."""
    size = figures.get("working_size")
    at = f", working size {format_size(size)}" if size else ""
    runs_at = "".join(f" {figures[key]}" for key in ("precision", "device") if figures.get(key))
    lines = [f"model {figures['model']} on {figures['images']} images ({figures['backend']}{runs_at}{at})"]
    if "cleanup" in figures:
        settings = ", ".join(f"{k} {v}" for k, v in figures["cleanup"].items() if k != "mode")
        lines.append(f"masks cleaned by {figures['cleanup']['mode']} ({settings})")
    if "mean_iou" in figures:
        lines.append(f"mean IoU        {100 * figures['mean_iou']:.2f}")
        lines.append(f"pixel accuracy  {100 * figures['pixel_accuracy']:.2f}")
        precision, recall = figures.get("per_class_precision", {}), figures.get("per_class_recall", {})

        def shown(value: float | None) -> str:
            return "n/a" if value is None else f"{100 * value:.2f}"

        if precision:
            lines.append(f"  {'class':<12s}  {'IoU':>6s}  {'precision':>9s}  {'recall':>6s}")
        for name, value in figures["per_class_iou"].items():
            line = f"  {name:<12s}  {shown(value):>6s}"
            if precision:
                line += f"  {shown(precision.get(name)):>9s}  {shown(recall.get(name)):>6s}"
            lines.append(line)
    else:
        lines.append(f"IoU             {figures['iou']:.4f}")
        lines.append(f"Dice            {figures['dice']:.4f}")
        lines.append(f"pixel error     {figures['pixel_error']:.4f}")
        lines.append(f"Rand error      {figures['rand_error']:.4f}")
        lines.append("ISBI 2012 challenge protocol (best threshold of 0.0, 0.1, ..., 1.0; counts pooled):")
        lines.append(f"pixel error     {figures['challenge_pixel_error']:.4f}  "
                     f"(threshold {figures['challenge_pixel_threshold']:.1f})")
        lines.append(f"Rand error      {figures['challenge_rand_error']:.4f}  "
                     f"(threshold {figures['challenge_rand_threshold']:.1f})")
    return "\n".join(lines)


# The most stems one range may name: a data set folder holds far fewer files, and a typo such as 0-999999999
# must not build a list of a billion names.
MAX_STEMS = 100_000


def parse_stems(text: str) -> list[str]:
    """Parse ``20-23`` or ``a,b,07-09`` into file stems; numeric ranges keep the zero padding of their start.

    Raises:
        argparse.ArgumentTypeError: on a malformed range.

    Example:
        >>> parse_stems("08-11,x")
        ['08', '09', '10', '11', 'x']
    """
    stems: list[str] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        first, dash, last = part.partition("-")
        if not dash:
            stems.append(part)
            continue
        if not (first.isdigit() and last.isdigit() and int(first) <= int(last)):
            raise argparse.ArgumentTypeError(f"stem range must be like 20-23, got {part!r}")
        if int(last) - int(first) >= MAX_STEMS:
            raise argparse.ArgumentTypeError(f"stem range {part!r} names more than {MAX_STEMS} files; give the "
                                             "stems of the files in the folder")
        stems += [str(i).zfill(len(first)) for i in range(int(first), int(last) + 1)]
    if not stems:
        raise argparse.ArgumentTypeError(f"no stems in {text!r}; give file stems and/or ranges, e.g. 20-23")
    return stems


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``unet-eval``."""
    parser = CommandParser(prog="unet-eval", description="Score a model on an image/label folder pair.",
                           epilog=ALIASES_EPILOG)
    add_model(parser, help="a .plan, .onnx or .pt file, or a bundled model name")
    parser.add_argument("--images", default=None, help="folder of frames")
    parser.add_argument("--labels", default=None, help="folder of label maps with the same file stems")
    parser.add_argument("--split", default=None, metavar="SPLIT_JSON",
                        help="score one part of a held-out split (engine/heldout.py) of the data set folder --data, "
                             "in place of --images/--labels: a split file, or a bundled model's name (camvid) for "
                             "the split it was chosen on")
    parser.add_argument("--part", choices=PARTS, default="report",
                        help="--split: the part to score (report: the frames no choice was made on)")
    parser.add_argument("--data", default=None, help="--split: the data set folder (train/, val/, ...)")
    parser.add_argument("--stems", default=None, type=parse_stems,
                        help="score only these file stems: a comma list and/or ranges, e.g. 20-23")
    add_backend(parser)
    add_precision(parser, help="a bundled model's precision (auto: the fastest installed engine and precision that "
                               "keeps the accuracy; bf16 is OpenVINO's hint)")
    add_device(parser, help="where the network runs (auto: a CUDA GPU when one is usable, else the CPU)")
    add_threads(parser, help="CPU inference threads (ONNX Runtime, OpenVINO, torch)",
                default_text="the backend's: the usable cores")
    add_size(parser, help="resize frames to this size for the network, in place of the model's own")
    parser.add_argument("--no-build", dest="build", action="store_false",
                        help="on a GPU with TensorRT, use a cached TensorRT engine only, never build one")
    add_output(parser, aliases=("--json",), metavar="FILE.json", help="also write the figures to this JSON file")
    defaults = BinaryCleanup()
    parser.add_argument("--cleanup", choices=(STATED, *POSTPROCESS_MODES), default=STATED,
                        help="binary models: clean the masks by hole filling or seeded watershed (the challenge "
                             "figures score the cleaned masks at every threshold); stated: the clean-up a bundled "
                             "model's statement names (isbi's), none for a model file")
    parser.add_argument("--max-hole-area", type=int, default=None,
                        help="--cleanup: enclosed background specks smaller than this many pixels become cell "
                             f"(default {defaults.max_hole_area})")
    parser.add_argument("--seed-threshold", type=float, default=None,
                        help=f"--cleanup watershed: seeds are the cells above this probability (default "
                             f"{defaults.seed_threshold})")
    parser.add_argument("--min-seed-area", type=int, default=None,
                        help=f"--cleanup watershed: smaller seeds are dropped (default {defaults.min_seed_area})")
    parser.add_argument("--lines-threshold", type=float, default=None,
                        help="binary models: grow the --cleanup's cells at this threshold over the membrane until "
                             "they meet and cut the one-pixel lines where they meet into every mask")
    return parser


def _check_inputs(args: argparse.Namespace) -> None:
    if args.split is None and (args.images is None or args.labels is None):
        raise ValueError("say what to score: --images and --labels, or --split with --data")
    if args.split is not None and args.data is None:
        raise ValueError("--split needs --data: the data set root its stems are found in (e.g. "
                         "--data ../shared/data/camvid)")
    if args.split is not None and (args.images is not None or args.labels is not None or args.stems is not None):
        raise ValueError("--split takes its frames from --data; leave out --images, --labels and --stems")


CLEANUP_SETTINGS = ("max_hole_area", "seed_threshold", "min_seed_area", "lines_threshold")


def _cleanup(args: argparse.Namespace) -> BinaryCleanup | str:
    """``--cleanup`` and its settings: the statement's clean-up, or one of the user's own."""
    given = {name: getattr(args, name) for name in CLEANUP_SETTINGS if getattr(args, name) is not None}
    if args.cleanup == STATED:
        if given:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            raise ValueError(f"{flags} set a clean-up of your own: name its mode with --cleanup "
                             f"({', '.join(POSTPROCESS_MODES)})")
        return STATED
    # Settings the chosen clean-up does not use would be dropped without a word.
    unused = [name for name in given if (name in ("seed_threshold", "min_seed_area") and args.cleanup != "watershed")
              or (name == "max_hole_area" and args.cleanup == "none" and "lines_threshold" not in given)]
    if unused:
        flags = ", ".join("--" + name.replace("_", "-") for name in unused)
        raise ValueError(f"{flags}: not used by --cleanup {args.cleanup}; drop {'them' if len(unused) > 1 else 'it'} "
                         "or choose the --cleanup that uses them (watershed takes every setting)")
    return BinaryCleanup(args.cleanup, **given)


def _run(args: argparse.Namespace) -> None:
    _check_inputs(args)
    split = None if args.split is None else split_file(args.split)
    if args.output:
        # Before the model loads: a long evaluation must not end in a traceback and lose its figures.
        check_writable_file(Path(args.output), f"--output {args.output!r}")
        # The path as given, not resolved: the figures are written at it, and 'new/../out.json' needs 'new'.
        if not Path(args.output).parent.is_dir():
            raise FileNotFoundError(f"folder of --output {args.output!r} does not exist")
        folders = [args.images, args.labels] if args.split is None else [args.data]
        check_reads_nothing(Path(args.output), f"--output {args.output!r}",
                            [Path(folder) for folder in folders if folder is not None],
                            {"the model": Path(args.model), "the split file": split})
    cleanup = _cleanup(args)
    # Only threads that were asked for reach the backend: TensorRT takes none.
    threads = {} if args.threads is None else {"threads": args.threads}
    with Segmenter(args.model, backend=args.backend, device=args.device, precision=args.precision, cleanup=cleanup,
                   working_size=args.working_size, build=args.build, **threads) as segmenter:
        if split is None:
            figures = evaluate(segmenter, args.images, args.labels, args.stems)
        else:
            figures = evaluate_pairs(segmenter, HeldOutSplit.read(split).pairs(args.data, args.part))
            figures["split"] = {"file": args.split, "part": args.part}
    print_out(format_figures(figures))
    if args.output:
        write_whole(Path(args.output), json.dumps(figures, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``unet-eval``; returns the exit code."""
    args = build_parser().parse_args(argv)
    return run_cli(lambda: _run(args))


if __name__ == "__main__":
    sys.exit(main())
