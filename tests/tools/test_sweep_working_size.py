"""tools/sweep_working_size.py: the same figures unet-eval gives at each size, a plot, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from tool_module import load_tool

from unetrt.evaluate import evaluate
from unetrt.segmenter import Segmenter


def labelled_folders(root: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(5)
    images, labels = root / "images", root / "labels"
    images.mkdir()
    labels.mkdir()
    for i in range(2):
        cv2.imwrite(str(images / f"f{i}.png"), rng.integers(0, 256, (30, 40, 3), dtype=np.uint8))
        cv2.imwrite(str(labels / f"f{i}.png"), rng.integers(0, 3, (30, 40), dtype=np.uint8))
    return images, labels


def test_each_size_scores_as_unet_eval_does_and_a_plot_is_written(tiny_model_files: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    tool = load_tool("sweep_working_size")
    images, labels = labelled_folders(tmp_path)
    out = tmp_path / "sweep"
    assert tool.main([str(tiny_model_files["onnx"]), "--images", str(images), "--labels", str(labels),
                      "--sizes", "16x12,40x28", "--runs", "onnxruntime:auto", "--trained", "40x28",
                      "--out", str(out)]) == 0
    results = json.loads(out.with_suffix(".json").read_text())
    rows = results["runs"][0]["rows"]
    assert [row["working_size"] for row in rows] == [[16, 12], [40, 28]]
    for row in rows:
        with Segmenter(tiny_model_files["onnx"], working_size=tuple(row["working_size"])) as seg:
            assert row["value"] == evaluate(seg, images, labels)["mean_iou"]
        assert row["metric"] == "mean_iou" and row["backend"] == "onnxruntime" and row["precision"] == "fp32"
    assert results["trained_working_size"] == [40, 28]
    assert out.with_suffix(".png").stat().st_size > 0


@pytest.mark.parametrize(("extra", "words"), [
    (["--sizes", "16by12"], "size must be WIDTHxHEIGHT"),
    (["--sizes", "16x12", "--runs", "onnxruntime"], "a run is ENGINE:PRECISION"),
    (["--sizes", "16x12", "--runs", "onnxruntime:fp32:int8"], "a run is ENGINE:PRECISION"),
    (["--sizes", "16x12", "--out", "/no/such/folder/sweep"], "does not exist"),
])
def test_bad_arguments_are_one_line_and_exit_2(extra: list[str], words: str, tiny_model_files: dict[str, Path],
                                              tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tool = load_tool("sweep_working_size")
    images, labels = labelled_folders(tmp_path)
    argv = [str(tiny_model_files["onnx"]), "--images", str(images), "--labels", str(labels),
            "--out", str(tmp_path / "sweep"), *extra]
    assert tool.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and "\n" not in err


def test_only_the_stems_given_are_scored_on_the_engine_given(tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    tool = load_tool("sweep_working_size")
    images, labels = labelled_folders(tmp_path)
    results = tool.sweep(str(tiny_model_files["onnx"]), images, labels, [(40, 28)], [("openvino", "fp32")], ["f1"])
    (row,) = results["runs"][0]["rows"]
    assert (row["backend"], row["precision"]) == ("openvino", "fp32")
    with Segmenter(tiny_model_files["onnx"], backend="openvino", precision="fp32", working_size=(40, 28)) as seg:
        assert row["value"] == evaluate(seg, images, labels, ["f1"])["mean_iou"]
        # Both frames together score otherwise, so the figure above is f1's alone.
        assert row["value"] != evaluate(seg, images, labels)["mean_iou"]
