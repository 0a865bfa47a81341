"""tools/tune_postprocess.py: the one mask the Segmenter returns takes the threshold of least pixel + Rand error on
the selection block, and the report scores that mask as the challenge scorer does at that threshold."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from tool_module import load_tool

from unetrt.metrics import CHALLENGE_THRESHOLDS, IsbiChallengeScorer
from unetrt.postprocess import BinaryCleanup

tune_postprocess = load_tool("tune_postprocess")


def _maps(seed: int, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cells 16 px apart behind 2-px membranes, drawn by a noisy map whose membranes have gaps."""
    rng = np.random.default_rng(seed)
    maps = []
    for _ in range(count):
        truth = np.full((64, 64), 255, np.uint8)
        truth[::16, :] = truth[:, ::16] = 0
        probability = np.where(truth > 0, 0.8, 0.15) + rng.normal(0, 0.12, truth.shape)
        probability[5:9, ::16] = 0.6  # gaps in the membrane
        maps.append((np.clip(probability, 0, 1).astype(np.float32), truth))
    return maps


def test_the_mask_threshold_is_the_least_pixel_plus_rand_error_on_the_selection(
        monkeypatch: pytest.MonkeyPatch) -> None:
    selection, report = _maps(0, 2), _maps(1, 2)
    monkeypatch.setattr(tune_postprocess, "GRID", (BinaryCleanup("none"), BinaryCleanup("fill-holes", 50)))
    monkeypatch.setattr(tune_postprocess, "probability_maps",
                        lambda model, data, stems: selection if stems == ["a"] else report)
    results = tune_postprocess.tune("model", None, ["a"], ["b"])
    rows = results["selection"]["mask_thresholds"]
    assert [row["threshold"] for row in rows] == list(CHALLENGE_THRESHOLDS)
    best = min(rows, key=lambda row: (row["pixel_error"] + row["rand_error"], row["threshold"]))
    chosen = BinaryCleanup(**results["chosen"])
    assert chosen.threshold == best["threshold"]
    scorer = IsbiChallengeScorer(thresholds=(chosen.threshold,), binarize=chosen.apply)
    for probability, truth in report:
        scorer.update(probability, truth)
    mask = results["report"]["mask"]
    assert mask["rand_error"] == pytest.approx(scorer.scores().rand_error)
    assert mask["pixel_error"] == pytest.approx(scorer.scores().pixel_error)
    # The clean-up itself is chosen by the challenge's Rand error as before: the threshold changes nothing there.
    grid = results["selection"]["grid"]
    best_index = min(range(len(grid)), key=lambda i: (grid[i]["rand_error"], grid[i]["pixel_error"]))
    assert replace(chosen, threshold=0.5) == tune_postprocess.GRID[best_index]
