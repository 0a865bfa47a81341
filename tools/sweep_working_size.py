"""Accuracy of a model at several working sizes: what a smaller (faster) network input costs.

A model states the working size frames are resized to before inference (its training size
unless ``unet-export --working-size`` stated another). The network's work grows with its
pixels, so a smaller working size is faster; a model trained with scale augmentation
(``unet-train --augment scale --zoom MIN,MAX``) often keeps its accuracy well below the
size it was trained at. This scores the model at every size given, on every engine and
precision given, with ``unet-eval``'s :func:`unetrt.evaluate.evaluate`, and writes the figures
(JSON) and a plot of mean IoU (binary models: challenge pixel error) against working size.

Speed at each size is measured separately, by
``python -m unetrt.benchmarks.bench_main_job --working-size WxH``.

Example:
    python tools/sweep_working_size.py camvid --images ../shared/data/camvid/val \\
        --labels ../shared/data/camvid/valannot --sizes 192x144,256x192,320x240,384x288 \\
        --out docs/working_size_camvid
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from unetrt.cli import HelpFormatter, format_size, parse_size, run_cli
from unetrt.evaluate import evaluate, parse_stems
from unetrt.paths import write_whole
from unetrt.plot_png import plot_png
from unetrt.segmenter import Segmenter

DEFAULT_RUNS = ("onnxruntime:fp32", "auto:auto")


def parse_run(text: str) -> tuple[str, str]:
    """``ENGINE:PRECISION`` (e.g. ``openvino:int8``; ``auto:auto`` is the default path) -> its two parts.

    Raises:
        argparse.ArgumentTypeError: without exactly one ':'.

    Example:
        >>> parse_run("openvino:int8")
        ('openvino', 'int8')
    """
    engine, sep, precision = text.partition(":")
    if not sep or not engine or not precision or ":" in precision:
        raise argparse.ArgumentTypeError(f"a run is ENGINE:PRECISION, e.g. openvino:int8 or auto:auto, got {text!r}")
    return engine, precision


def headline(figures: dict[str, Any]) -> tuple[str, float]:
    """The figure a sweep compares: mean IoU, or the challenge pixel error of a binary model."""
    if "mean_iou" in figures:
        return "mean_iou", float(figures["mean_iou"])
    return "challenge_pixel_error", float(figures["challenge_pixel_error"])


def sweep(model: str, images: Path, labels: Path, sizes: Sequence[tuple[int, int]],
          runs: Sequence[tuple[str, str]], stems: Sequence[str] | None = None) -> dict[str, Any]:
    """Score ``model`` at every working size with every engine and precision.

    Returns:
        JSON-ready: per run, per size, the engine and precision that ran and every ``unet-eval`` figure.

    Raises:
        ValueError: on no size or no run, or what the Segmenter or evaluation raises.
    """
    if not sizes or not runs:
        raise ValueError(f"a sweep needs at least one size and one run, got {len(sizes)} and {len(runs)}")
    results: dict[str, Any] = {"model": model, "images": str(images), "stems": stems, "runs": []}
    for engine, precision in runs:
        rows = []
        for size in sizes:
            with Segmenter(model, backend=engine, precision=precision, device="cpu", working_size=size,
                           warm_up=False) as segmenter:
                figures = evaluate(segmenter, images, labels, stems)
                ran = {"backend": segmenter.backend.name, "precision": segmenter.backend.precision}
            metric, value = headline(figures)
            print(f"{engine}:{precision} ({ran['backend']} {ran['precision']}) at {format_size(size)}: "
                  f"{metric} {value:.4f}", flush=True)
            rows.append({"working_size": list(size), **ran, "metric": metric, "value": value,
                         "figures": figures})
        results["runs"].append({"run": f"{engine}:{precision}", "rows": rows})
    return results


def plot(results: dict[str, Any], path: Path, trained: tuple[int, int] | None) -> None:
    """The headline figure against the working size's pixels, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.2))
    metric = "mean_iou"
    for run in results["runs"]:
        rows = run["rows"]
        metric = rows[0]["metric"]
        scale = 100 if metric == "mean_iou" else 1
        pixels = [w * h / 1e3 for w, h in (row["working_size"] for row in rows)]
        axes.plot(pixels, [scale * row["value"] for row in rows], marker="o",
                  label=f"{rows[0]['backend']} {rows[0]['precision']}")
    sizes = results["runs"][0]["rows"]
    axes.set_xticks([w * h / 1e3 for w, h in (row["working_size"] for row in sizes)],
                    [format_size(row["working_size"]) for row in sizes], rotation=30)
    if trained is not None:
        axes.axvline(trained[0] * trained[1] / 1e3, color="grey", linestyle=":", label="trained at")
    axes.set_xlabel("working size (spaced by its pixel count)")
    axes.set_ylabel("mean IoU (%)" if metric == "mean_iou" else "challenge pixel error")
    axes.set_title(f"{results['model']}: accuracy against working size ({Path(results['images']).name})")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    write_whole(path, plot_png(figure, dpi=110))
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=HelpFormatter)
    parser.add_argument("model", help="a bundled model name or a model file")
    parser.add_argument("--images", required=True, type=Path, help="labelled frames")
    parser.add_argument("--labels", required=True, type=Path, help="their labels")
    parser.add_argument("--stems", type=parse_stems, default=None, help="score only these stems, e.g. 21-23")
    parser.add_argument("--sizes", required=True, help="working sizes WxH, comma separated")
    parser.add_argument("--runs", default=",".join(DEFAULT_RUNS),
                        help="ENGINE:PRECISION pairs, comma separated (auto:auto: the default path)")
    parser.add_argument("--trained", type=parse_size, default=None, metavar="WxH",
                        help="the size the model was trained at, marked on the plot")
    parser.add_argument("--out", required=True, type=Path, help="writes OUT.json and OUT.png")

    def action() -> None:
        args = parser.parse_args(argv)
        try:
            sizes = [parse_size(text) for text in args.sizes.split(",")]
            runs = [parse_run(text) for text in args.runs.split(",")]
        except argparse.ArgumentTypeError as exc:
            raise ValueError(str(exc)) from None
        if not args.out.parent.is_dir():
            raise FileNotFoundError(f"folder of --out {str(args.out)!r} does not exist")
        results = sweep(args.model, args.images, args.labels, sizes, runs, args.stems)
        results["trained_working_size"] = None if args.trained is None else list(args.trained)
        args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
        plot(results, args.out.with_suffix(".png"), args.trained)
        print(f"wrote {args.out.with_suffix('.json')} and {args.out.with_suffix('.png')}")

    return run_cli(action)


if __name__ == "__main__":
    sys.exit(main())
