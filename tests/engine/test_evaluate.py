from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from conftest import tiny_info

from unetrt.evaluate import (
    MAX_STEMS,
    check_same_classes,
    evaluate,
    evaluate_pairs,
    evaluate_stated,
    format_figures,
    main,
    parse_stems,
)
from unetrt.model_info import ModelInfo
from unetrt.segmenter import SegmentationResult, Segmenter


def make_folders(root: Path, count: int = 3) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    images, labels = root / "images", root / "labels"
    images.mkdir()
    labels.mkdir()
    for i in range(count):
        cv2.imwrite(str(images / f"f{i}.png"), rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
        cv2.imwrite(str(labels / f"f{i}.png"), rng.integers(0, 3, (24, 32), dtype=np.uint8))
    return images, labels


def test_figures_match_a_direct_count(tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    images, labels = make_folders(tmp_path)
    with Segmenter(tiny_model_files["onnx"]) as seg:
        figures = evaluate(seg, images, labels)
        preds = [seg.segment(cv2.imread(str(p))).mask for p in sorted(images.iterdir())]
    truth = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted(labels.iterdir())]
    hits = sum(int((p == t).sum()) for p, t in zip(preds, truth))
    assert figures["pixel_accuracy"] == pytest.approx(hits / (3 * 24 * 32))
    ious = []
    for c in range(3):
        inter = sum(int(((p == c) & (t == c)).sum()) for p, t in zip(preds, truth))
        union = sum(int(((p == c) | (t == c)).sum()) for p, t in zip(preds, truth))
        ious.append(inter / union)
    assert figures["mean_iou"] == pytest.approx(np.mean(ious))
    assert figures["images"] == 3


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "unetrt.evaluate", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_cli_writes_json(tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    images, labels = make_folders(tmp_path)
    proc = run_cli("--model", str(tiny_model_files["onnx"]), "--images", str(images), "--labels", str(labels),
                   "--json", "out.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "mean IoU" in proc.stdout
    figures = json.loads((tmp_path / "out.json").read_text())
    assert set(figures) >= {"mean_iou", "pixel_accuracy", "per_class_iou", "per_class_precision", "per_class_recall"}
    assert "precision" in proc.stdout and set(figures["per_class_precision"]) == set(figures["per_class_iou"])


def test_cli_in_the_shared_vocabulary_scores_the_same(tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    # Issue 24: -o, --size, --device and --threads, as every command spells them, reach the Segmenter.
    images, labels = make_folders(tmp_path)
    proc = run_cli("--model", str(tiny_model_files["onnx"]), "--images", str(images), "--labels", str(labels),
                   "--size", "16x12", "--device", "cpu", "--threads", "1", "-o", "new.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    figures = json.loads((tmp_path / "new.json").read_text())
    with Segmenter(tiny_model_files["onnx"], device="cpu", working_size=(16, 12), threads=1) as seg:
        assert seg.backend.device == "cpu" and seg.backend.threads == 1
        assert figures["mean_iou"] == evaluate(seg, images, labels)["mean_iou"]


def test_cli_scores_at_another_working_size(tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    images, labels = make_folders(tmp_path)
    proc = run_cli("--model", str(tiny_model_files["onnx"]), "--images", str(images), "--labels", str(labels),
                   "--working-size", "16x12", "--json", "out.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "(onnxruntime fp32 cpu, working size 16x12)" in proc.stdout
    figures = json.loads((tmp_path / "out.json").read_text())
    with Segmenter(tiny_model_files["onnx"], working_size=(16, 12)) as seg:
        assert figures["mean_iou"] == evaluate(seg, images, labels)["mean_iou"]
    assert figures["working_size"] == [16, 12]


def test_cli_bad_input_one_line_exit_2(tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    images, labels = make_folders(tmp_path)
    (labels / "f0.png").rename(labels / "other.png")
    cases = [
        (["--model", str(tiny_model_files["onnx"]), "--images", str(images), "--labels", str(labels)],
         "do not match by file stem"),
        (["--model", "missing.onnx", "--images", str(images), "--labels", str(labels)], "does not exist"),
        (["--model", str(tiny_model_files["onnx"]), "--images", "nope", "--labels", str(labels)], "does not exist"),
    ]
    for args, message in cases:
        proc = run_cli(*args, cwd=tmp_path)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr


def test_parse_stems_ranges_keep_padding() -> None:
    import argparse

    from unetrt.evaluate import parse_stems

    assert parse_stems("20-23") == ["20", "21", "22", "23"]
    assert parse_stems("08-10,x") == ["08", "09", "10", "x"]
    with pytest.raises(argparse.ArgumentTypeError, match="like 20-23"):
        parse_stems("9-3")


def test_parse_stems_ranges_take_the_padding_of_their_start_not_their_end() -> None:
    # Stems 7, 8, 9, 10 (files 7.png ... 10.png), not 07 ... 10, which name no file.
    assert parse_stems("7-10") == ["7", "8", "9", "10"]


def test_parse_stems_takes_a_range_of_max_stems_names_and_refuses_one_more() -> None:
    import argparse

    assert len(parse_stems(f"0-{MAX_STEMS - 1}")) == MAX_STEMS
    with pytest.raises(argparse.ArgumentTypeError, match=f"names more than {MAX_STEMS} files"):
        parse_stems(f"0-{MAX_STEMS}")


@pytest.mark.parametrize(("text", "words"), [(",", "no stems"), (" , ", "no stems"),
                                             ("0-999999999", "more than 100000 files")])
def test_parse_stems_refuses_nothing_and_huge_ranges(text: str, words: str) -> None:
    import argparse

    from unetrt.evaluate import parse_stems

    # ',' scored no image with exit 0; 0-999999999 built a billion names (minutes, gigabytes).
    with pytest.raises(argparse.ArgumentTypeError, match=words):
        parse_stems(text)


@pytest.mark.parametrize(("target", "words"), [("labels/f0.png", "is a file of the input folder"),
                                               ("images/f1.png", "is a file of the input folder"),
                                               ("model.onnx", "is the model")])
def test_cli_output_never_replaces_a_file_it_reads(tiny_model_files: dict[str, Path], tmp_path: Path, target: str,
                                                   words: str) -> None:
    images, labels = make_folders(tmp_path)
    model = tmp_path / "model.onnx"
    model.write_bytes(tiny_model_files["onnx"].read_bytes())
    before = (tmp_path / target).read_bytes()
    proc = run_cli("--model", str(model), "--images", str(images), "--labels", str(labels), "-o", target,
                   cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and words in lines[0], proc.stderr
    assert (tmp_path / target).read_bytes() == before


def test_stems_restrict_the_split(tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    images, labels = make_folders(tmp_path)
    with Segmenter(tiny_model_files["onnx"]) as seg:
        assert evaluate(seg, images, labels, stems=["f1"])["images"] == 1
        # The message names the stems that are missing, sorted, not the ones found.
        with pytest.raises(ValueError, match=r"not in .*: f8, f9$"):
            evaluate(seg, images, labels, stems=["f9", "f1", "f8"])


@pytest.fixture(scope="module")
def tiny_binary_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("torch")
    import torch
    from conftest import tiny_info

    from unetrt.export.checkpoint import build_model
    from unetrt.export.onnx_export import export_onnx

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("tiny_binary") / "binary.onnx"
    info = tiny_info(num_classes=1, in_channels=1)
    export_onnx(build_model(info).eval(), info, path)
    return path


def _challenge_f_by_contingency(probs: list[np.ndarray], truths: list[np.ndarray], threshold: float) -> float:
    """Rand F-score of the challenge from explicit contingency tables, pooled over images."""
    both = predicted = true = 0.0
    for prob, truth in zip(probs, truths):
        true_seg = cv2.connectedComponents(truth.astype(np.uint8), connectivity=4)[1]
        pred_seg = cv2.connectedComponents((prob > threshold).astype(np.uint8), connectivity=4)[1]
        table = np.zeros((true_seg.max() + 1, pred_seg.max() + 1))
        np.add.at(table, (true_seg.ravel(), pred_seg.ravel()), 1)
        table = table[1:]  # only pixels inside true cells are scored
        both += (table[:, 1:] * (table[:, 1:] - 1) / 2).sum()
        predicted += (table[:, 1:].sum(0) * (table[:, 1:].sum(0) - 1) / 2).sum()
        true += (table.sum(1) * (table.sum(1) - 1) / 2).sum()
    if both == 0:
        return 0.0
    precision, recall = both / predicted, both / true
    return 2 * precision * recall / (precision + recall)


def make_binary_folders(root: Path, seed: int, rows: tuple[int, ...]) -> tuple[Path, Path]:
    """Two random 32x32 slices whose labels are cut into cells by membrane column 10 + i and the given rows."""
    rng = np.random.default_rng(seed)
    images, labels = root / "images", root / "labels"
    images.mkdir()
    labels.mkdir()
    for i in range(2):
        cv2.imwrite(str(images / f"{i:02d}.png"), rng.integers(0, 256, (32, 32), dtype=np.uint8))
        truth = np.full((32, 32), 255, np.uint8)
        truth[:, 10 + i] = 0
        truth[list(rows), :] = 0
        cv2.imwrite(str(labels / f"{i:02d}.png"), truth)
    return images, labels


def test_binary_figures_include_the_challenge_protocol(tiny_binary_onnx: Path, tmp_path: Path) -> None:
    images, labels = make_binary_folders(tmp_path, 3, (20,))  # membranes cut each slice into four cells
    with Segmenter(tiny_binary_onnx) as seg:
        figures = evaluate(seg, images, labels)
        probs = [seg.segment(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE), probabilities=True).probabilities[0]
                 for p in sorted(images.iterdir())]
    truths = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) > 0 for p in sorted(labels.iterdir())]
    thresholds = [round(0.1 * i, 1) for i in range(11)]
    rand_f = [_challenge_f_by_contingency(probs, truths, t) for t in thresholds]
    assert figures["challenge_rand_error"] == pytest.approx(1 - max(rand_f))
    assert figures["challenge_rand_threshold"] == thresholds[int(np.argmax(rand_f))]
    pixel_f = []
    for t in thresholds:
        tp = sum(int(((p > t) & y).sum()) for p, y in zip(probs, truths))
        wrong = sum(int(((p > t) != y).sum()) for p, y in zip(probs, truths))
        pixel_f.append(2 * tp / (2 * tp + wrong) if tp + wrong else 0.0)
    assert figures["challenge_pixel_error"] == pytest.approx(1 - max(pixel_f))
    assert {"iou", "dice", "pixel_error", "rand_error"} <= set(figures)


def test_cli_precision_reaches_the_segmenter(tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    images, labels = make_folders(tmp_path)
    proc = run_cli("--model", str(tiny_model_files["onnx"]), "--images", str(images), "--labels", str(labels),
                   "--precision", "int8", cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "runs at the precision it was exported with" in lines[0]


def test_cleanup_masks_are_what_the_segmenter_returns_and_what_the_challenge_scores(
        tiny_binary_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from unetrt.evaluate import main
    from unetrt.metrics import IsbiChallengeScorer
    from unetrt.postprocess import BinaryCleanup

    images, labels = make_binary_folders(tmp_path, 5, ())
    cleanup = BinaryCleanup("watershed", max_hole_area=20, seed_threshold=0.6, min_seed_area=2)
    with Segmenter(tiny_binary_onnx, cleanup=cleanup) as seg:
        figures = evaluate(seg, images, labels)
        frame = cv2.imread(str(images / "00.png"), cv2.IMREAD_GRAYSCALE)
        result = seg.segment(frame)
        assert result.probabilities is None  # asked for by the clean-up, not by the caller
    with Segmenter(tiny_binary_onnx) as plain:
        probability = plain.segment(frame, probabilities=True).probabilities[0]
    assert np.array_equal(result.mask, cleanup.apply(probability, 0.5))
    scorer = IsbiChallengeScorer(binarize=cleanup.apply)
    for i in range(2):
        with Segmenter(tiny_binary_onnx) as plain:
            p = plain.segment(cv2.imread(str(images / f"{i:02d}.png"), cv2.IMREAD_GRAYSCALE),
                              probabilities=True).probabilities[0]
        scorer.update(p, cv2.imread(str(labels / f"{i:02d}.png"), cv2.IMREAD_GRAYSCALE))
    assert figures["challenge_rand_error"] == pytest.approx(scorer.scores().rand_error)
    assert figures["cleanup"]["mode"] == "watershed"
    code = main(["--model", str(tiny_binary_onnx), "--images", str(images), "--labels", str(labels),
                 "--cleanup", "fill-holes", "--max-hole-area", "30"])
    assert code == 0 and "masks cleaned by fill-holes" in capsys.readouterr().out


def test_cli_cell_lines_are_scored_and_a_bad_lines_threshold_is_one_line(
        tiny_binary_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from unetrt.evaluate import main

    images, labels = make_binary_folders(tmp_path, 5, ())
    common = ["--model", str(tiny_binary_onnx), "--images", str(images), "--labels", str(labels)]
    assert main([*common, "--cleanup", "none", "--lines-threshold", "0.3"]) == 0
    assert "masks cleaned by none (" in capsys.readouterr().out
    assert main([*common, "--cleanup", "none", "--lines-threshold", "1.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cell lines' threshold must lie in [0, 1], got 1.5" in err[0]


def test_cli_settings_without_a_mode_are_one_line_naming_the_fix(tiny_binary_onnx: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from unetrt.evaluate import main

    images, labels = make_binary_folders(tmp_path, 5, ())
    code = main(["--model", str(tiny_binary_onnx), "--images", str(images), "--labels", str(labels),
                 "--max-hole-area", "30", "--lines-threshold", "0.2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "--max-hole-area, --lines-threshold set a clean-up of your own: name its mode with --cleanup" in err[0]


@pytest.mark.parametrize(("settings", "message"), [
    (["--cleanup", "none", "--max-hole-area", "5"], "--max-hole-area: not used by --cleanup none; drop it"),
    (["--cleanup", "fill-holes", "--seed-threshold", "0.8", "--min-seed-area", "4"],
     "--seed-threshold, --min-seed-area: not used by --cleanup fill-holes; drop them"),
])
def test_cli_settings_the_chosen_cleanup_does_not_use_are_refused(tiny_binary_onnx: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str],
                                                                  settings: list[str], message: str) -> None:
    """They were dropped without a word, and the figures were not those of the clean-up asked for."""
    from unetrt.evaluate import main

    images, labels = make_binary_folders(tmp_path, 5, ())
    assert main(["--model", str(tiny_binary_onnx), "--images", str(images), "--labels", str(labels),
                 *settings]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_cli_scores_a_bundled_model_with_its_stated_cleanup_unless_told_otherwise(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from unetrt.evaluate import main
    from unetrt.postprocess import stated_cleanup

    stated = stated_cleanup("isbi")
    assert stated is not None
    images, labels = make_binary_folders(tmp_path, 5, ())
    common = ["--model", "isbi", "--images", str(images), "--labels", str(labels), "--device", "cpu"]
    assert main(common) == 0
    assert f"masks cleaned by {stated.mode} (" in capsys.readouterr().out
    assert main([*common, "--cleanup", "none"]) == 0
    assert "masks cleaned" not in capsys.readouterr().out


def test_cleanup_is_refused_for_multiclass_models(tiny_model_files: dict[str, Path]) -> None:
    from unetrt.postprocess import BinaryCleanup

    with pytest.raises(ValueError, match="binary models"):
        Segmenter(tiny_model_files["onnx"], cleanup=BinaryCleanup("fill-holes", max_hole_area=5))


@pytest.mark.parametrize(("target", "words"), [("notes.txt/out.json", "is a file, not a folder"),
                                               ("a-folder", "it is an existing folder"),
                                               ("gone/out.json", "folder of --output 'gone/out.json' does not exist"),
                                               ("/proc/out.json", "cannot write --output '/proc/out.json'"),
                                               # The figures are written at this very path, and 'new' does not
                                               # exist: it was an errno line after the whole evaluation.
                                               ("new/../out.json", "folder of --output 'new/../out.json' does not "
                                                                   "exist")])
def test_cli_json_target_is_checked_before_the_model_loads(target: str, words: str, tmp_path: Path) -> None:
    if target.startswith("/proc/") and Path("/proc").is_dir() and _proc_takes_files():
        pytest.skip("needs a /proc that refuses new files")
    (tmp_path / "notes.txt").write_text("a file")
    (tmp_path / "a-folder").mkdir()
    (tmp_path / "broken.onnx").write_bytes(b"not onnx")  # would be the error if the model were loaded first
    images, labels = make_folders(tmp_path)
    proc = run_cli("--model", "broken.onnx", "--images", str(images), "--labels", str(labels),
                   "--json", target, cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and words in lines[0] and "broken.onnx" not in lines[0], lines


def _proc_takes_files() -> bool:
    try:
        Path("/proc/.unetrt-probe").touch()
    except OSError:
        return False
    Path("/proc/.unetrt-probe").unlink()
    return True


def test_labels_outside_the_class_table_are_one_line_not_empty_figures(tiny_model_files: dict[str, Path],
                                                                       tmp_path: Path) -> None:
    # camvid scored on ISBI's 0/255 masks exited 0 with every figure n/a.
    images, labels = make_folders(tmp_path)
    cv2.imwrite(str(labels / "f1.png"), np.full((24, 32), 255, np.uint8))
    proc = run_cli("--model", str(tiny_model_files["onnx"]), "--images", str(images), "--labels", str(labels),
                   cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert "f1.png' holds class ids 255" in lines[0] and "outside the class table (0..2)" in lines[0]


@pytest.mark.parametrize(("argv", "words"), [
    (["--split", "camvid.split.json"], "--split needs --data"),
    (["--split", "camvid.split.json", "--data", ".", "--labels", "labels"],
     "leave out --images, --labels and --stems"),
    # --stems picks files of --images; a split names its own frames, so they would be dropped without a word.
    (["--split", "camvid.split.json", "--data", ".", "--stems", "1-2"], "leave out --images, --labels and --stems"),
])
def test_split_mistakes_name_the_fix(argv: list[str], words: str, capsys: pytest.CaptureFixture[str]) -> None:
    from unetrt.evaluate import main

    assert main(["--model", "camvid", *argv]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], lines


class EchoSegmenter:
    """Stands in for a Segmenter whose mask is the (grayscale) image itself, so the figures can be counted by hand."""

    color_order = "bgr"
    cleanup = None

    def __init__(self, info: ModelInfo) -> None:
        self.info = info
        self.backend = SimpleNamespace(name="echo", precision="int8", device="cpu")

    def segment(self, image: np.ndarray, probabilities: bool = False) -> SegmentationResult:
        mask = image.astype(np.uint8)
        return SegmentationResult(mask, mask[None].astype(np.float32) if probabilities else None, 0.0)


def write_pairs(root: Path, cases: list[tuple[list[int], list[int]]], scale: int = 1) -> list[tuple[Path, Path]]:
    """One 1xN (prediction, truth) pair per case: the image holds the prediction, the label the truth (x scale)."""
    pairs = []
    for i, (pred, truth) in enumerate(cases):
        image, label = root / f"p{i}.png", root / f"t{i}.png"
        cv2.imwrite(str(image), np.array([pred], np.uint8))
        cv2.imwrite(str(label), np.array([truth], np.uint8) * scale)
        pairs.append((image, label))
    return pairs


def test_multiclass_figures_by_hand_skip_the_ignore_index_and_name_absent_classes_none(tmp_path: Path) -> None:
    info = ModelInfo(class_names=("void", "road", "car", "sign"), colors=((0, 0, 0),) * 4, in_channels=1,
                     mean=(0.5,), std=(0.25,), ignore_index=0)
    pairs = write_pairs(tmp_path, [([2, 1, 1, 2, 2, 2], [0, 1, 1, 1, 2, 2])])
    figures = evaluate_pairs(EchoSegmenter(info), pairs)  # type: ignore[arg-type]
    # The void pixel is not scored. Road: 3 true, 2 found, none painted over -> precision 1, recall 2/3, IoU 2/3.
    # Car: 2 true, both found, plus the road pixel painted as car -> precision 2/3, recall 1, IoU 2/3.
    # Void (ignored) and sign (in neither prediction nor truth) have no figure.
    assert figures["per_class_iou"] == pytest.approx({"void": None, "road": 2 / 3, "car": 2 / 3, "sign": None})
    assert figures["per_class_precision"] == pytest.approx({"void": None, "road": 1.0, "car": 2 / 3, "sign": None})
    assert figures["per_class_recall"] == pytest.approx({"void": None, "road": 2 / 3, "car": 1.0, "sign": None})
    assert figures["mean_iou"] == pytest.approx(2 / 3)
    assert figures["pixel_accuracy"] == pytest.approx(4 / 5)


def test_binary_figures_by_hand_pool_the_pixels_and_average_the_rand_error_per_image(tmp_path: Path) -> None:
    info = ModelInfo(class_names=("cell",), colors=((255, 255, 255),), in_channels=1, mean=(0.5,), std=(0.25,))
    pairs = write_pairs(tmp_path, [
        ([1, 1, 1, 1, 1], [1, 1, 0, 1, 1]),  # two cells merged: Rand error 1/3
        ([1, 1, 0, 1, 0], [1, 1, 0, 1, 1]),  # a cell pixel lost: n (2, 1) + 1 singleton -> split 1, merge 6/8: 1/7
        ([1, 1, 1, 1, 0], [1, 1, 1, 1, 1]),  # one cell, a pixel lost: split 1, merge 17/25 -> 4/21
    ], scale=255)
    figures = evaluate_pairs(EchoSegmenter(info), pairs)  # type: ignore[arg-type]
    # Pooled over 15 pixels: TP 11, FP 1, FN 2, TN 1.
    assert figures["iou"] == pytest.approx(11 / 14)
    assert figures["dice"] == pytest.approx(22 / 25)
    assert figures["pixel_error"] == pytest.approx(3 / 15)
    assert figures["rand_error"] == pytest.approx((1 / 3 + 1 / 7 + 4 / 21) / 3)
    # The probabilities are the 0/1 masks, so thresholds 0.0-0.9 give the masks and 0.0 wins: pixel F = 22/25;
    # Rand pairs pooled: TP 2 + 1 + 6, predicted 6 + 1 + 6, true 2 + 2 + 10 -> P 9/13, R 9/14, F 2/3.
    assert (figures["challenge_pixel_error"], figures["challenge_pixel_threshold"]) == (pytest.approx(3 / 25), 0.0)
    assert (figures["challenge_rand_error"], figures["challenge_rand_threshold"]) == (pytest.approx(1 / 3), 0.0)


def test_evaluate_stated_scores_only_the_stems_a_statement_names(tiny_model_files: dict[str, Path],
                                                                 tmp_path: Path) -> None:
    make_folders(tmp_path)  # images/ and labels/ hold f0, f1 and f2
    stated = {"images": "images", "labels": "labels", "stems": ["f0", "f2"]}
    with Segmenter(tiny_model_files["onnx"]) as seg:
        assert evaluate_stated(seg, stated, tmp_path)["images"] == 2


def test_cli_options_reach_the_segmenter(monkeypatch: pytest.MonkeyPatch) -> None:
    # The figures of an option dropped on its way look like those of the option; only the Segmenter can tell.
    seen: list[dict[str, object]] = []

    def segmenter(model: str, **options: object) -> None:
        seen.append(options)
        raise ValueError("the options are seen")

    monkeypatch.setattr("unetrt.evaluate.Segmenter", segmenter)
    common = ["--model", "model.onnx", "--images", "images", "--labels", "labels"]
    assert main([*common, "--threads", "2", "--no-build", "--device", "cpu", "--size", "32x24"]) == 2
    assert main(common) == 2
    asked, defaults = seen
    assert (asked["threads"], asked["build"], asked["device"], asked["working_size"]) == (2, False, "cpu", (32, 24))
    assert "threads" not in defaults and defaults["build"] is True  # TensorRT takes no threads argument


def test_cli_max_hole_area_with_lines_is_used_by_cleanup_none(tiny_binary_onnx: Path, tmp_path: Path) -> None:
    # The cell lines' masks fill specks as fill-holes does, so --cleanup none uses --max-hole-area with them.
    images, labels = make_binary_folders(tmp_path, 5, ())
    assert main(["--model", str(tiny_binary_onnx), "--images", str(images), "--labels", str(labels), "--cleanup",
                 "none", "--max-hole-area", "5", "--lines-threshold", "0.3", "-o", str(tmp_path / "out.json")]) == 0
    cleanup = json.loads((tmp_path / "out.json").read_text())["cleanup"]
    assert (cleanup["mode"], cleanup["max_hole_area"], cleanup["lines_threshold"]) == ("none", 5, 0.3)


class FirstChannelSegmenter(EchoSegmenter):
    """Its mask is the first channel of the frame it is handed, so the figures say which channel came first."""

    def segment(self, image: np.ndarray, probabilities: bool = False) -> SegmentationResult:
        return SegmentationResult(np.ascontiguousarray(image[..., 0]), None, 0.0)


@pytest.mark.parametrize(("order", "first"), [("rgb", 2), ("bgr", 0)])
def test_colour_frames_reach_the_segmenter_in_its_own_channel_order(tmp_path: Path, order: str, first: int) -> None:
    info = ModelInfo(class_names=("a", "b", "c"), colors=((0, 0, 0),) * 3)
    image, label = tmp_path / "frame.png", tmp_path / "label.png"
    cv2.imwrite(str(image), np.array([[[0, 1, 2]] * 4], np.uint8))  # blue 0, green 1, red 2 (OpenCV's B, G, R)
    cv2.imwrite(str(label), np.full((1, 4), first, np.uint8))  # red first for RGB, blue first for BGR
    segmenter = FirstChannelSegmenter(info)
    segmenter.color_order = order
    assert evaluate_pairs(segmenter, [(image, label)])["pixel_accuracy"] == 1.0  # type: ignore[arg-type]


def test_printed_figures_are_the_computed_ones_each_in_its_place() -> None:
    binary = {"model": "isbi", "images": 2, "backend": "echo", "precision": "int8", "device": "cuda:1",
              "working_size": None,
              "cleanup": {"mode": "watershed", "max_hole_area": 50, "threshold": 0.5},
              "iou": 0.5, "dice": 0.25, "pixel_error": 0.125, "rand_error": 0.0625,
              "challenge_pixel_error": 0.1, "challenge_pixel_threshold": 0.3,
              "challenge_rand_error": 0.2, "challenge_rand_threshold": 0.7}
    lines = format_figures(binary).splitlines()
    assert lines[:2] == ["model isbi on 2 images (echo int8 cuda:1)",
                         "masks cleaned by watershed (max_hole_area 50, threshold 0.5)"]
    assert lines[-2:] == ["pixel error     0.1000  (threshold 0.3)", "Rand error      0.2000  (threshold 0.7)"]
    multiclass = {"model": "camvid", "images": 1, "backend": "echo", "working_size": [256, 192], "mean_iou": 0.5,
                  "pixel_accuracy": 0.75, "per_class_iou": {"road": 0.5, "sign": None},
                  "per_class_precision": {"road": 0.25, "sign": None}, "per_class_recall": {"road": 1.0, "sign": None}}
    # Percentages with two decimals; a class that never occurred is n/a in every column.
    assert format_figures(multiclass).splitlines()[1:] == [
        "mean IoU        50.00", "pixel accuracy  75.00", "  class            IoU  precision  recall",
        "  road           50.00      25.00  100.00", "  sign             n/a        n/a     n/a"]


def _class_table(names: list[str]) -> str:
    return json.dumps({"ignore_index": 255, "classes": [
        {"id": index, "name": name, "color": [40 * index, 0, 0]} for index, name in enumerate(names)]})


def test_labels_of_another_class_table_are_refused_not_scored_as_the_models_classes(
        tiny_model_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A model of other classes (another data set's, an earlier class order) scored the labels' ids as its own
    # classes and printed a per-class table of the wrong names, without a word, whenever the ids fitted.
    images, labels = make_folders(tmp_path)
    (tmp_path / "classes.json").write_text(_class_table(["background", "ground", "person"]))
    assert main(["--model", str(tiny_model_files["onnx"]), "--images", str(images), "--labels", str(labels)]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: the labels' class table {str(tmp_path / 'classes.json')!r} has the classes background, "
                   "ground, person, and the model 'tiny' class0, class1, class2: the labels' ids would be scored as "
                   "the model's classes; evaluate a model trained on these classes, or labels of the model's\n")
    # The model's own table beside the labels: scored as before.
    (tmp_path / "classes.json").write_text(_class_table(["class0", "class1", "class2"]))
    assert main(["--model", str(tiny_model_files["onnx"]), "--images", str(images), "--labels", str(labels)]) == 0


def test_labels_of_the_models_classes_in_another_order_are_refused(
        tiny_model_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The same names in an earlier class order: each id would be scored as another class of the same set.
    images, labels = make_folders(tmp_path)
    (tmp_path / "classes.json").write_text(_class_table(["class1", "class0", "class2"]))
    assert main(["--model", str(tiny_model_files["onnx"]), "--images", str(images), "--labels", str(labels)]) == 2
    assert "has the classes class1, class0, class2, and the model 'tiny' class0, class1, class2" in \
        capsys.readouterr().err


def test_a_binary_models_masks_are_not_held_to_a_class_table_beside_them(tmp_path: Path) -> None:
    # A binary model's labels are 0/255 masks, whatever class table (background, cell) a data set keeps beside them:
    # its one class name never equals a table's, so comparing them would refuse every such data set.
    (tmp_path / "labels").mkdir()
    (tmp_path / "classes.json").write_text(_class_table(["background", "cell"]))
    check_same_classes(tiny_info(num_classes=1, in_channels=1), tmp_path / "labels")


def test_an_output_over_the_bundled_split_named_by_its_model_is_refused(
        tiny_model_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # --split camvid reads the package's camvid.split.json: -o naming that file would replace the split itself.
    import shutil

    from unetrt import heldout
    from unetrt.bundled import MODELS_DIR
    from unetrt.evaluate import main

    models = tmp_path / "models"
    models.mkdir()
    split = Path(shutil.copy(MODELS_DIR / "camvid.split.json", models / "camvid.split.json"))
    before = split.read_bytes()
    monkeypatch.setattr(heldout, "MODELS_DIR", models)
    (tmp_path / "data").mkdir()
    assert main(["--model", str(tiny_model_files["onnx"]), "--split", "camvid", "--data", str(tmp_path / "data"),
                 "-o", str(split)]) == 2
    err = capsys.readouterr().err
    assert f"is the split file {str(split)!r}, which the output would replace" in err, err
    assert split.read_bytes() == before


def test_cli_nan_scores_one_line_exit_2(tmp_path: Path) -> None:
    """unet-eval of a network that gives NaN: the error's one line and exit 2, no score file."""
    from nonfinite_models import write_nonfinite_onnx

    images, labels = make_folders(tmp_path)
    model = write_nonfinite_onnx(tmp_path / "nan.onnx", "nan")
    proc = run_cli("--model", str(model), "--images", str(images), "--labels", str(labels), "--json", "out.json",
                   cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: the network gave NaN or infinite scores at ")
    assert "(the network ran at FP32" in lines[0]
    assert not (tmp_path / "out.json").exists()


def test_cli_nan_scores_name_the_image(tmp_path: Path) -> None:
    """unet-eval over a data set where one image's scores are NaN: the line said 'of this frame', leaving the user
    of hundreds of images to find it; it names the image file."""
    from nonfinite_models import GOOD, write_nonfinite_onnx

    images, labels = make_folders(tmp_path)
    for index in range(3):
        frame = np.full((24, 32, 3), GOOD, np.uint8)
        if index == 1:
            frame[2:4, 2:7, 1] = 0  # 10 pixels whose Log is NaN
        cv2.imwrite(str(images / f"f{index}.png"), frame)
    model = write_nonfinite_onnx(tmp_path / "nan.onnx", "nan")
    proc = run_cli("--model", str(model), "--images", str(images), "--labels", str(labels), cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: the network gave NaN or infinite scores at 10 of 768 pixels of image f1.png ")
