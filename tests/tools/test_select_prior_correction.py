"""tools/select_prior_correction.py: each tau scored as unet-eval scores it, the best chosen, the report refused."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from tool_module import load_tool

torch = pytest.importorskip("torch")

from unetrt.evaluate import evaluate_pairs  # noqa: E402
from unetrt.export.checkpoint import build_model, load_model, save_checkpoint  # noqa: E402
from unetrt.export.prior import correct_class_prior  # noqa: E402
from unetrt.heldout import HeldOutSplit  # noqa: E402
from unetrt.model_info import ModelInfo  # noqa: E402
from unetrt.segmenter import Segmenter  # noqa: E402

select_prior_correction = load_tool("select_prior_correction")


def _setup(root: Path) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(0)
    data = root / "camvid"
    (data / "val").mkdir(parents=True)
    (data / "valannot").mkdir()
    classes = [{"id": i, "name": f"c{i}", "color": [60 * i, 0, 0]} for i in range(3)]
    (data / "classes.json").write_text(json.dumps({"ignore_index": 3, "classes": classes}))
    for frame in range(10, 14):
        label = rng.integers(0, 3, (4, 4)).repeat(8, 0).repeat(8, 1).astype(np.uint8)
        image = (label[..., None] * 70 + rng.integers(0, 40, (32, 32, 3))).astype(np.uint8)
        cv2.imwrite(str(data / "val" / f"0016E5_{frame:05d}.png"), image)
        cv2.imwrite(str(data / "valannot" / f"0016E5_{frame:05d}.png"), label)
    split = root / "split.json"
    split.write_text(json.dumps({"guard_frames": 0, "select": ["0016E5:00010-00011"],
                                 "report": ["0016E5:00012-00013"]}))
    info = ModelInfo(class_names=("c0", "c1", "c2"), colors=((0, 0, 0),) * 3, base=4, depth=3, activation="relu",
                     ignore_index=3, name="tiny", extra={"dropout": [0, 0, 0], "class_weights": [0.5, 3.0, 1.0]})
    torch.manual_seed(0)
    checkpoint = root / "best.pt"
    save_checkpoint(checkpoint, build_model(info).eval(), info)
    return checkpoint, split, data


def test_each_tau_scores_what_the_corrected_model_scores_and_the_best_is_chosen(tmp_path: Path) -> None:
    checkpoint, split, data = _setup(tmp_path)
    out = tmp_path / "prior.json"
    assert select_prior_correction.main([str(checkpoint), "--split", str(split), "--data", str(data),
                                         "--taus", "0,0.5,1", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert [row["tau"] for row in record["rows"]] == [0.0, 0.5, 1.0]
    best = max(record["rows"], key=lambda row: (row["mean_iou"], -row["tau"]))
    assert record["chosen"] == best["tau"] and record["part"] == "select"
    # The figure of tau 1 is unet-eval's on the corrected model, on the select part only.
    model, info = correct_class_prior(*load_model(checkpoint), 1.0)
    corrected = tmp_path / "corrected.pt"
    save_checkpoint(corrected, model, info)
    with Segmenter(corrected, backend="torch", device="cpu") as segmenter:
        figures = evaluate_pairs(segmenter, HeldOutSplit.read(split).pairs(data, "select"))
    assert record["rows"][2]["mean_iou"] == pytest.approx(figures["mean_iou"], abs=1e-9)


@pytest.mark.parametrize(("extra", "message"), [
    (["--part", "report"], "must stay unseen"),
    (["--taus", "0,2"], "--taus must be numbers between 0 and 1"),
    (["--taus", "a"], "--taus must be numbers between 0 and 1"),
    (["--part", "bogus"], "split part must be one of select, report, got 'bogus'"),
])
def test_bad_choices_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str],
                                          message: str) -> None:
    checkpoint, split, data = _setup(tmp_path)
    argv = [str(checkpoint), "--split", str(split), "--data", str(data), "--out", str(tmp_path / "p.json"), *extra]
    assert select_prior_correction.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_equal_figures_choose_the_smallest_tau(tmp_path: Path) -> None:
    checkpoint, split, data = _setup(tmp_path)
    model, info = load_model(checkpoint)
    # Unit class weights: every tau shifts the biases by tau * log(1) = 0, so every tau scores the same.
    info = replace(info, extra={**info.extra, "class_weights": [1.0, 1.0, 1.0]})
    save_checkpoint(checkpoint, model, info)
    out = tmp_path / "prior.json"
    assert select_prior_correction.main([str(checkpoint), "--split", str(split), "--data", str(data),
                                         "--taus", "0.25,0.5,1", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert len({row["mean_iou"] for row in record["rows"]}) == 1 and record["chosen"] == 0.25


def test_each_tau_is_scored_at_the_size_asked(tmp_path: Path) -> None:
    checkpoint, split, data = _setup(tmp_path)
    out = tmp_path / "prior.json"
    assert select_prior_correction.main([str(checkpoint), "--split", str(split), "--data", str(data),
                                         "--taus", "0", "--size", "16x16", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    with Segmenter(checkpoint, backend="torch", device="cpu", working_size=(16, 16)) as segmenter:
        at_size = evaluate_pairs(segmenter, HeldOutSplit.read(split).pairs(data, "select"))
    assert record["working_size"] == "16x16"
    assert record["rows"][0]["mean_iou"] == pytest.approx(at_size["mean_iou"], abs=1e-9)


def test_taus_are_scored_once_each_in_increasing_order() -> None:
    assert select_prior_correction.parse_taus("1,0,0.5,0") == [0.0, 0.5, 1.0]
