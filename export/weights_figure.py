"""``unet-weights``: a figure of the loss weight maps of a few labelled samples.

One row per sample: image, mask, the paper's distance (border) weights and the
object-size weights, darker = heavier, each map with its colour bar.

Example:
    unet-weights --images ../shared/data/isbi2012-em/images --labels ../shared/data/isbi2012-em/labels \
        -o weights.png
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from unetrt.cli import run_cli
from unetrt.cli_options import ALIASES_EPILOG, CommandParser, add_output, add_size
from unetrt.datasets import find_class_table, paired_files, read_class_table, read_image, read_label
from unetrt.model_info import MAX_WORKING_PIXELS, MAX_WORKING_SIDE
from unetrt.palette import Palette
from unetrt.stream.output_path import check_reads_nothing, check_writable_file

from .weights import distance_weight_map, size_weight_map


def _is_binary(label: np.ndarray) -> bool:
    # As unet-train reads a binary label: a 0/255 mask, or ids 0 and 1.
    values = set(np.unique(label).tolist())
    return values <= {0, 255} or values <= {0, 1}


# One row per sample at 16 x 3.6 inches: beyond these the figure stops being readable (and, at dpi 100000,
# allocatable).
MAX_SAMPLES = 50
MIN_DPI, MAX_DPI = 10, 600
# The mask panel's colour of ignored pixels: the first that no class of the table has.
IGNORE_COLORS = (("black", (0, 0, 0)), ("white", (255, 255, 255)), ("grey", (128, 128, 128)),
                 ("magenta", (255, 0, 255)))


def weights_figure(
    images: str | Path,
    labels: str | Path,
    out: str | Path,
    samples: int = 3,
    size: tuple[int, int] | None = None,
    w0: float = 10.0,
    sigma: float = 5.0,
    dpi: int = 60,
) -> Path:
    """Draw the figure for the first ``samples`` pairs spread evenly over the folders.

    Binary labels (0/255, or ids 0 and 1, with no class table) use the cell/membrane convention; class-id labels
    take the ignore index and colours from a ``classes.json`` in the label folder or its parent when there is one.

    Returns:
        The path written.

    Raises:
        FileNotFoundError, ValueError: on missing folders or unreadable files, or settings
            :func:`check_figure_settings` refuses.

    Example:
        >>> weights_figure("isbi/images", "isbi/labels", "weights.png")  # doctest: +SKIP
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    check_figure_settings(out, images, labels, samples, size, w0, sigma, dpi)
    pairs = paired_files(images, labels)
    chosen = [pairs[i] for i in np.linspace(0, len(pairs) - 1, min(samples, len(pairs))).round().astype(int)]
    table_path = find_class_table(labels)
    table = read_class_table(table_path) if table_path else None
    fig, axes = plt.subplots(len(chosen), 4, figsize=(16, 3.6 * len(chosen)), squeeze=False)
    for row, (image_path, label_path) in enumerate(chosen):
        raw = read_label(label_path, binary=False)
        # A class table says the labels are class ids, whichever ids a frame happens to hold.
        binary = table is None and _is_binary(raw)
        label = (raw != 0).astype(np.uint8) if binary else raw
        image = read_image(image_path, 1 if binary else 3)
        if size is not None:
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            label = cv2.resize(label, size, interpolation=cv2.INTER_NEAREST)
        ignore = None if binary or table is None else table.ignore_index
        num_classes = 2 if binary else (len(table.names) if table else int(label.max()) + 1)
        # Multi-class: unit class weights so the picture shows the border term, not per-image class rarity.
        class_weights = None if binary else np.ones(num_classes)
        distance = distance_weight_map(label, binary, num_classes, w0=w0, sigma=sigma, ignore_index=ignore,
                                       class_weights=class_weights)
        sizes = size_weight_map(label, binary, ignore_index=ignore)
        axes[row, 0].imshow(image if binary else cv2.cvtColor(image, cv2.COLOR_BGR2RGB), cmap="gray")
        axes[row, 0].set_title(image_path.name)
        if binary:
            # Fixed limits: a mask of one value (all cell, or none) is drawn in its own shade, not scaled to black.
            axes[row, 1].imshow(label, cmap="gray", vmin=0, vmax=1)
            axes[row, 1].set_title("mask (white = cell)")
        else:
            # Without a class table every class is drawn black, as ignored labels are. With one, ignored pixels take
            # a colour no class has: the table of docs/own-data.md draws its background black.
            colors = table.colors if table else ((0, 0, 0),) * num_classes
            shown_name, ignore_color = next(
                ((name, rgb) for name, rgb in IGNORE_COLORS if table is None or rgb not in table.colors),
                IGNORE_COLORS[0])
            palette = Palette(table.names if table else tuple(str(i) for i in range(num_classes)), colors,
                              ignore_color=ignore_color)
            axes[row, 1].imshow(palette.lut_rgb[label])
            axes[row, 1].set_title(f"mask ({shown_name} = ignored)")
        for col, (data, title) in enumerate(((distance, f"distance weights (w0={w0:g}, sigma={sigma:g})"),
                                             (sizes, "size weights")), start=2):
            shown = axes[row, col].imshow(data, cmap="magma_r")
            axes[row, col].set_title(title)
            fig.colorbar(shown, ax=axes[row, col], fraction=0.046, pad=0.02)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


def check_figure_settings(out: str | Path, images: str | Path, labels: str | Path, samples: int,
                          size: tuple[int, int] | None, w0: float, sigma: float, dpi: int) -> None:
    """Refuse settings the figure cannot be drawn with, before any work: each error names the value.

    Raises:
        ValueError: an output that cannot be written or is a file of the input folders (the figure would replace
            it), samples outside 1-50, a size past the working-size limits, a w0 that is not a finite number
            >= 0 (0: class balance alone), a sigma that is not a finite number > 0, a dpi outside 10-600.
    """
    out = Path(out)
    check_writable_file(out, f"--output {str(out)!r}")
    check_reads_nothing(out, f"--output {str(out)!r}", [Path(images), Path(labels)])
    if not 1 <= samples <= MAX_SAMPLES:
        raise ValueError(f"--samples must be from 1 to {MAX_SAMPLES}, got {samples}")
    if size is not None and (max(size) > MAX_WORKING_SIDE or size[0] * size[1] > MAX_WORKING_PIXELS):
        raise ValueError(f"--size {size[0]}x{size[1]} is too large: at most {MAX_WORKING_SIDE} px a side and "
                         f"{MAX_WORKING_PIXELS // 1_000_000} M pixels")
    if not (math.isfinite(w0) and w0 >= 0):
        raise ValueError(f"--w0 must be a finite number >= 0, got {w0}")
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"--sigma must be a finite number of pixels > 0, got {sigma}")
    if not MIN_DPI <= dpi <= MAX_DPI:
        raise ValueError(f"--dpi must be from {MIN_DPI} to {MAX_DPI}, got {dpi}")


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``unet-weights``."""
    parser = CommandParser(prog="unet-weights", description=__doc__.split("\n")[0].replace("``", ""),
                           epilog=ALIASES_EPILOG)
    parser.add_argument("--images", required=True, help="image folder")
    parser.add_argument("--labels", required=True,
                        help="label folder (0/255 or 0/1 masks; class ids with a classes.json)")
    add_output(parser, default="weights.png", aliases=("--out",), metavar="FILE.png", help="PNG to write")
    parser.add_argument("--samples", type=int, default=3, help="rows (samples spread over the folder)")
    add_size(parser, dest="size", aliases=(), help="resize samples first")
    parser.add_argument("--w0", type=float, default=10.0, help="border weight")
    parser.add_argument("--sigma", type=float, default=5.0, help="border width in pixels")
    parser.add_argument("--dpi", type=int, default=60, help="resolution of the figure file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``unet-weights``; returns the exit code."""
    args = build_parser().parse_args(argv)
    return run_cli(lambda: print(weights_figure(args.images, args.labels, args.output, args.samples, args.size,
                                                args.w0, args.sigma, args.dpi)))


if __name__ == "__main__":
    sys.exit(main())
