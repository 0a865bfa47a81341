from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from unetrt.bundled import MODELS_DIR
from unetrt.evaluate import evaluate, evaluate_pairs, evaluate_stated
from unetrt.heldout import HeldOutSplit, split_file
from unetrt.segmenter import Segmenter

BUNDLED_SPLIT = Path(__file__).resolve().parents[2] / "engine" / "models" / "camvid.split.json"


def make_video_set(root: Path) -> Path:
    """Two sequences, frames 30 apart, split over train/ and val/ as CamVid's are."""
    rng = np.random.default_rng(0)
    for images, labels in (("train", "trainannot"), ("val", "valannot")):
        (root / images).mkdir(parents=True)
        (root / labels).mkdir()
    stems = [("train", f"seqA_{n:05d}") for n in range(0, 600, 30)] + [("train", f"seqB_f{n:05d}")
                                                                          for n in range(0, 300, 30)]
    stems += [("val", f"seqA_{n:05d}") for n in range(601, 700, 2)]
    for folder, stem in stems:
        cv2.imwrite(str(root / folder / f"{stem}.png"), rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
        cv2.imwrite(str(root / f"{folder}annot" / f"{stem}.png"), rng.integers(0, 3, (24, 32), dtype=np.uint8))
    return root


def write_split(path: Path, **fields: object) -> Path:
    data = {"guard_frames": 60, "select": ["seqA:00300-00360", "seqB:120-150"],
            "report": ["seqA:00601-00699"], **fields}
    path.write_text(json.dumps(data))
    return path


def stems(pairs: list[tuple[Path, Path]]) -> set[str]:
    return {image.stem for image, _ in pairs}


def test_parts_and_guard_band_share_no_frame(tmp_path: Path) -> None:
    root = make_video_set(tmp_path / "data")
    split = HeldOutSplit.read(write_split(tmp_path / "split.json"))
    select, report, train = (stems(split.pairs(root, "select")), stems(split.pairs(root, "report")),
                             stems(split.train_pairs(root)))
    assert select == {"seqA_00300", "seqA_00330", "seqA_00360", "seqB_f00120", "seqB_f00150"}
    assert report == {f"seqA_{n:05d}" for n in range(601, 700, 2)}
    assert not (select & train or report & train or select & report)
    # the guard band (60 frames) keeps training two frames away from each span on each side
    assert {"seqA_00240", "seqA_00270", "seqA_00390", "seqA_00420", "seqA_00570"}.isdisjoint(train)
    assert {"seqA_00210", "seqA_00450", "seqA_00540", "seqB_f00030", "seqB_f00240"} <= train
    assert {"seqB_f00060", "seqB_f00210"}.isdisjoint(train)


@pytest.mark.parametrize("fields, message", [
    ({"select": ["seqA:0300"]}, "a span looks like"),
    ({"report": []}, "non-empty lists"),
    ({"guard_frames": -1}, "guard_frames"),
    ({"select": ["seqC:0-10"]}, "matches no frame"),
])
def test_a_broken_split_is_named(tmp_path: Path, fields: dict[str, object], message: str) -> None:
    root = make_video_set(tmp_path / "data")
    with pytest.raises(ValueError, match=message):
        HeldOutSplit.read(write_split(tmp_path / "split.json", **fields)).pairs(root, "select")


@pytest.mark.parametrize("content, message", [
    (b"[" * 100_000 + b"]" * 100_000, "nests its JSON deeper than can be read"),
    (b'{"select": ["\xe9"]}', r"is not UTF-8 text \(byte 13\)"),
    (b"{not json", "is not valid JSON"),
])
def test_a_split_file_that_cannot_be_read_is_named(tmp_path: Path, content: bytes, message: str) -> None:
    # Deep nesting was a RecursionError, Latin-1 text a UnicodeDecodeError that named no file.
    (tmp_path / "split.json").write_bytes(content)
    with pytest.raises(ValueError, match=f"split file '.*split.json' {message}"):
        HeldOutSplit.read(tmp_path / "split.json")


def test_bundled_camvid_split_holds_out_whole_spans(shared_data: Path) -> None:
    split = HeldOutSplit.read(BUNDLED_SPLIT)
    root = shared_data / "camvid"
    report, select = stems(split.pairs(root, "report")), stems(split.pairs(root, "select"))
    train = stems(split.train_pairs(root))
    assert len(report) == 122 and len(select) == 36
    assert not (train & report or train & select or report & select)
    # every val/ frame (0016E5, the span the old selection used) is in the report part, none in training
    assert {p.stem for p in (root / "val").iterdir()} <= report


def test_evaluate_pairs_equals_evaluate_on_the_same_files(tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    root = make_video_set(tmp_path / "data")
    split = HeldOutSplit.read(write_split(tmp_path / "split.json"))
    with Segmenter(tiny_model_files["onnx"]) as seg:
        by_split = evaluate_pairs(seg, split.pairs(root, "report"))
        by_folder = evaluate(seg, root / "val", root / "valannot")
    assert by_split == by_folder


def run_eval(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "unetrt.evaluate", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_cli_scores_a_split_part(tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    root = make_video_set(tmp_path / "data")
    split = write_split(tmp_path / "split.json")
    proc = run_eval("--model", str(tiny_model_files["onnx"]), "--split", str(split), "--data", str(root),
                    "--part", "select", "--json", "out.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    figures = json.loads((tmp_path / "out.json").read_text())
    assert figures["images"] == 5 and figures["split"] == {"file": str(split), "part": "select"}


def test_a_bundled_models_name_is_its_split_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An installed unetrt keeps the split inside the package: the documents' engine/models/camvid.split.json is a
    # path of the checkout only, so a pip user had no way to name it.
    monkeypatch.chdir(tmp_path)
    assert split_file("camvid") == MODELS_DIR / "camvid.split.json"
    own = write_split(tmp_path / "camvid")
    assert split_file(own) == own
    with pytest.raises(FileNotFoundError, match=r"'engine/models/camvid.split.json' does not exist: the bundled one "
                                                r"is --split camvid \(.*: camvid\)$"):
        split_file("engine/models/camvid.split.json")
    with pytest.raises(FileNotFoundError, match=r"'isbi' does not exist \(give a split file, or the name of a bundled"):
        split_file("isbi")


def test_cli_scores_the_bundled_split_by_name_from_any_folder(tiny_model_files: dict[str, Path],
                                                              tmp_path: Path) -> None:
    root = tmp_path / "camvid"
    for images, labels in (("train", "trainannot"), ("val", "valannot")):
        (root / images).mkdir(parents=True)
        (root / labels).mkdir()
    # A frame of each report span, a select frame and a training frame.
    for folder, stem in (("val", "0016E5_07959"), ("val", "0001TP_008250"), ("val", "0006R0_f03630"),
                         ("val", "0016E5_05010"), ("train", "0016E5_00000")):
        cv2.imwrite(str(root / folder / f"{stem}.png"), np.zeros((24, 32, 3), np.uint8))
        cv2.imwrite(str(root / f"{folder}annot" / f"{stem}.png"), np.zeros((24, 32), np.uint8))
    (tmp_path / "elsewhere").mkdir()
    proc = run_eval("--model", str(tiny_model_files["onnx"]), "--split", "camvid", "--data", str(root),
                    "-o", "out.json", cwd=tmp_path / "elsewhere")
    assert proc.returncode == 0, proc.stderr
    figures = json.loads((tmp_path / "elsewhere" / "out.json").read_text())
    assert figures["images"] == 3 and figures["split"] == {"file": "camvid", "part": "report"}
    proc = run_eval("--model", str(tiny_model_files["onnx"]), "--split", "engine/models/camvid.split.json",
                    "--data", str(root), cwd=tmp_path / "elsewhere")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "the bundled one is --split camvid" in lines[0], proc.stderr


def test_cli_without_frames_to_score_says_so(tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    proc = run_eval("--model", str(tiny_model_files["onnx"]), cwd=tmp_path)
    assert proc.returncode == 2
    assert "--images and --labels, or --split with --data" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_spans_hold_only_their_own_sequence_and_the_frames_inside(tmp_path: Path) -> None:
    root = make_video_set(tmp_path / "data")
    rng = np.random.default_rng(1)
    # a sequence whose name starts with another's: seqA's spans must not reach it
    cv2.imwrite(str(root / "train" / "seqAB_00330.png"), rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    cv2.imwrite(str(root / "trainannot" / "seqAB_00330.png"), rng.integers(0, 3, (24, 32), dtype=np.uint8))
    # frames 00300 and 00360 lie one frame outside 00301-00359
    split = HeldOutSplit.read(write_split(tmp_path / "split.json", select=["seqA:00301-00359"]))
    assert stems(split.pairs(root, "select")) == {"seqA_00330"}
    assert "seqAB_00330" in stems(split.train_pairs(root))


def test_a_span_may_hold_a_single_frame(tmp_path: Path) -> None:
    root = make_video_set(tmp_path / "data")
    split = HeldOutSplit.read(write_split(tmp_path / "split.json", select=["seqA:00330-00330"]))
    assert stems(split.pairs(root, "select")) == {"seqA_00330"}


def test_evaluate_stated_scores_the_part_the_statement_names(tiny_model_files: dict[str, Path],
                                                              tmp_path: Path) -> None:
    make_video_set(tmp_path / "data")  # the statement names its data set relative to the data root, tmp_path
    split = write_split(tmp_path / "split.json")
    with Segmenter(tiny_model_files["onnx"]) as seg:
        # report: the 50 odd val frames 601-699; select: seqA 300, 330, 360 and seqB 120, 150
        for part, count in (("report", 50), ("select", 5)):
            stated = {"split": {"file": str(split), "data": "data", "part": part}}
            assert evaluate_stated(seg, stated, tmp_path)["images"] == count


def test_a_missing_split_file_named_like_a_bundled_model_is_not_the_bundled_split(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A path whose file is missing (a typo in the folder) must be refused, not quietly read as the bundled split.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"'splits/camvid' does not exist"):
        split_file("splits/camvid")
