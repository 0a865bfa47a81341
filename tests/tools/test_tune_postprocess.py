"""tools/tune_postprocess.py: the one mask the Segmenter returns takes the threshold of least pixel + Rand error on
the selection block, and the report scores that mask as the challenge scorer does at that threshold."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
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


def test_the_report_states_its_own_stems_and_plain_figures(monkeypatch: pytest.MonkeyPatch) -> None:
    selection, report = _maps(0, 2), _maps(1, 2)
    monkeypatch.setattr(tune_postprocess, "GRID", (BinaryCleanup("none"),))
    monkeypatch.setattr(tune_postprocess, "probability_maps",
                        lambda model, data, stems: selection if stems == ["a"] else report)
    results = tune_postprocess.tune("model", None, ["a"], ["b"])
    assert (results["selection_stems"], results["report_stems"]) == (["a"], ["b"])
    plain = tune_postprocess.challenge_figures(tune_postprocess.challenge_scorer(report, None))
    assert results["report"]["plain"] == plain
    assert plain != tune_postprocess.challenge_figures(tune_postprocess.challenge_scorer(selection, None))


def test_report_stems_shared_with_the_selection_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert tune_postprocess.main(["--model", "isbi", "--data", "nowhere", "--select", "18-20",
                                  "--report", "20-22"]) == 2
    assert "--select and --report share stems ['20']" in capsys.readouterr().err


def test_a_stem_without_its_slice_is_refused(tmp_path: Path) -> None:
    for folder in ("images", "labels"):
        (tmp_path / folder).mkdir()
        cv2.imwrite(str(tmp_path / folder / "18.png"), np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match="not every stem"):
        tune_postprocess.probability_maps("isbi", tmp_path, ["18", "19"])


def test_equally_good_mask_thresholds_give_the_lowest(monkeypatch: pytest.MonkeyPatch) -> None:
    # Cells at 0.95 and membranes at 0.05: every threshold from 0.1 to 0.9 gives the true mask (no error at all).
    maps = [(np.where(truth > 0, 0.95, 0.05).astype(np.float32), truth) for _, truth in _maps(0, 1)]
    monkeypatch.setattr(tune_postprocess, "GRID", (BinaryCleanup("none"),))
    monkeypatch.setattr(tune_postprocess, "probability_maps", lambda model, data, stems: maps)
    results = tune_postprocess.tune("model", None, ["a"], ["b"])
    assert results["report"]["mask"]["pixel_error"] == 0.0
    assert results["chosen"]["threshold"] == 0.1


def test_a_multi_class_model_is_refused(tmp_path: Path, tiny_model_files: dict[str, Path]) -> None:
    for folder in ("images", "labels"):
        (tmp_path / folder).mkdir()
        cv2.imwrite(str(tmp_path / folder / "18.png"), np.zeros((8, 8), np.uint8))
    with pytest.raises(ValueError, match=r"the watershed is for binary models; .* has 3 classes"):
        tune_postprocess.probability_maps(str(tiny_model_files["onnx"]), tmp_path, ["18"])


def test_the_results_are_written_to_the_json_asked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    figures = {"pixel_error": 0.1, "pixel_threshold": 0.5, "rand_error": 0.2, "rand_threshold": 0.4}
    results: dict[str, Any] = {"chosen": {"method": "none"}, "report": {
        "plain": figures, "cleaned": figures, "mask": {"threshold": 0.5, "pixel_error": 0.1, "rand_error": 0.2}}}
    monkeypatch.setattr(tune_postprocess, "tune", lambda model, data, select, report: results)
    out = tmp_path / "tuned.json"
    assert tune_postprocess.main(["--model", "isbi", "--data", str(tmp_path), "--select", "18", "--report", "19",
                                  "--json", str(out)]) == 0
    assert json.loads(out.read_text()) == results
