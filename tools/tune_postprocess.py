"""Choose a binary model's mask clean-up on one block of slices, report it on another.

For every setting of a small grid (:class:`unetrt.postprocess.BinaryCleanup`: hole filling, seeded
watershed, each with and without cell lines), the ISBI 2012 challenge's Rand error of the cleaned masks
(best of the thresholds 0.0 ... 1.0, counts pooled) is computed on the selection block; the best setting is then scored
once on the report block, next to the plain thresholded masks of the same model. Probability maps
are computed once per slice.

The challenge takes each error at its own best threshold; :class:`unetrt.Segmenter` returns one mask. Its
threshold (the chosen clean-up's ``threshold``) is the one of least pixel + Rand error on the selection block,
and the report block scores that one mask too (``report.mask``).

Example:
    python tools/tune_postprocess.py --model isbi --data ../shared/data/isbi2012-em \
        --select 18-20 --report 21-23 --json runs/isbi_postprocess.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from unetrt import Segmenter
from unetrt.cli import run_cli
from unetrt.datasets import paired_files, read_image, read_label
from unetrt.evaluate import parse_stems
from unetrt.metrics import IsbiChallengeScorer
from unetrt.postprocess import BinaryCleanup

LINE_THRESHOLDS = (None, 0.1, 0.2, 0.3, 0.5, 0.7)
GRID = (
    *(BinaryCleanup("none", lines_threshold=lines) for lines in LINE_THRESHOLDS[1:]),
    *(BinaryCleanup("fill-holes", max_hole_area=area, lines_threshold=lines)
      for area in (50, 100, 200, 400, 800) for lines in LINE_THRESHOLDS),
    *(BinaryCleanup("watershed", max_hole_area=area, seed_threshold=seed, min_seed_area=10, lines_threshold=lines)
      for seed in (0.2, 0.3, 0.4, 0.5) for area in (0, 400)
      for lines in LINE_THRESHOLDS if lines is None or lines <= seed),
)


def probability_maps(model: str, data: Path, stems: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(foreground probability, true mask) of every slice in ``stems``."""
    pairs = [pair for pair in paired_files(data / "images", data / "labels") if pair[0].stem in set(stems)]
    if len(pairs) != len(set(stems)):
        raise ValueError(f"not every stem of {list(stems)} has an image and a label in {str(data)!r}")
    maps = []
    with Segmenter(model, cleanup=None) as segmenter:
        if not segmenter.info.binary:
            raise ValueError(f"the watershed is for binary models; {model!r} has {segmenter.info.num_classes} classes")
        for image_path, label_path in tqdm(pairs, desc="probability maps", unit="slice", disable=None):
            result = segmenter.segment(read_image(image_path, segmenter.info.in_channels), probabilities=True)
            assert result.probabilities is not None
            maps.append((result.probabilities[0], read_label(label_path, True)))
    return maps


def challenge_scorer(maps: Sequence[tuple[np.ndarray, np.ndarray]],
                     cleanup: BinaryCleanup | None) -> IsbiChallengeScorer:
    """The challenge's counts of plain thresholds (``cleanup`` None) or of the cleaned masks, over every slice."""
    scorer = IsbiChallengeScorer(binarize=None if cleanup is None else cleanup.apply)
    for probability, truth in maps:
        scorer.update(probability, truth)
    return scorer


def challenge_figures(scorer: IsbiChallengeScorer) -> dict[str, float]:
    """Challenge pixel and Rand errors, each at its own best threshold."""
    scores = scorer.scores()
    return {"pixel_error": scores.pixel_error, "pixel_threshold": scores.pixel_threshold,
            "rand_error": scores.rand_error, "rand_threshold": scores.rand_threshold}


def mask_figures(scorer: IsbiChallengeScorer, threshold: float) -> dict[str, float]:
    """Challenge pixel and Rand errors of the one mask of ``threshold``."""
    return next(row for row in scorer.per_threshold() if row["threshold"] == threshold)


def tune(model: str, data: Path, select: Sequence[str], report: Sequence[str]) -> dict[str, Any]:
    """Grid-search on ``select``, score the chosen clean-up and the plain masks on ``report``."""
    selection_maps = probability_maps(model, data, select)
    scorers = [challenge_scorer(selection_maps, cleanup) for cleanup in tqdm(GRID, desc="grid", disable=None)]
    grid = [{**asdict(cleanup), **challenge_figures(scorer)} for cleanup, scorer in zip(GRID, scorers, strict=True)]
    # Ties in Rand error (settings that differ only where the lines overrule them) go to the lower pixel error.
    best = min(range(len(GRID)), key=lambda index: (grid[index]["rand_error"], grid[index]["pixel_error"]))
    masks = scorers[best].per_threshold()
    # The one mask's threshold: least pixel + Rand error; ties go to the lower threshold.
    mask = min(masks, key=lambda row: (row["pixel_error"] + row["rand_error"], row["threshold"]))
    chosen = replace(GRID[best], threshold=mask["threshold"])
    report_maps = probability_maps(model, data, report)
    cleaned = challenge_scorer(report_maps, chosen)
    return {
        "model": model, "selection_stems": list(select), "report_stems": list(report),
        "selection": {"plain": challenge_figures(challenge_scorer(selection_maps, None)), "grid": grid,
                      "mask_thresholds": masks},
        "chosen": asdict(chosen),
        "report": {"plain": challenge_figures(challenge_scorer(report_maps, None)),
                   "cleaned": challenge_figures(cleaned), "mask": mask_figures(cleaned, chosen.threshold)},
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a binary model file or bundled name")
    parser.add_argument("--data", type=Path, required=True, help="folder with images/ and labels/")
    parser.add_argument("--select", type=parse_stems, required=True, help="stems that choose the settings")
    parser.add_argument("--report", type=parse_stems, required=True, help="stems the chosen settings are scored on")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)

    def work() -> None:
        if set(args.select) & set(args.report):
            raise ValueError(f"--select and --report share stems {sorted(set(args.select) & set(args.report))}")
        results = tune(args.model, args.data, args.select, args.report)
        report = results["report"]
        print(f"chosen on {','.join(args.select)}: {results['chosen']}")
        for name in ("plain", "cleaned"):
            row = report[name]
            print(f"{name:9s} on {','.join(args.report)}: challenge pixel error {row['pixel_error']:.4f} "
                  f"(t {row['pixel_threshold']:.1f}), Rand error {row['rand_error']:.4f} "
                  f"(t {row['rand_threshold']:.1f})")
        mask = report["mask"]
        print(f"one mask  on {','.join(args.report)} (Segmenter, threshold {mask['threshold']:.1f}): pixel error "
              f"{mask['pixel_error']:.4f}, Rand error {mask['rand_error']:.4f}")
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")

    return run_cli(work)


if __name__ == "__main__":
    sys.exit(main())
