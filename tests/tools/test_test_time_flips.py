"""tools/test_time_flips.py: every flip undone exactly, the plain row unet-eval's, bad arguments one line."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest
from tool_module import load_tool

torch = pytest.importorskip("torch")

from unetrt.datasets import paired_files  # noqa: E402
from unetrt.evaluate import evaluate_pairs  # noqa: E402
from unetrt.export.checkpoint import build_model, save_checkpoint  # noqa: E402
from unetrt.heldout import HeldOutSplit  # noqa: E402
from unetrt.model_info import ModelInfo  # noqa: E402
from unetrt.segmenter import Segmenter  # noqa: E402

test_time_flips = load_tool("test_time_flips")


def _dihedral_symmetric(weight: torch.Tensor) -> torch.Tensor:
    """The kernel averaged over the eight rotations and mirrors of its square."""
    copies = [torch.rot90(weight, turns, dims=(-2, -1)) for turns in range(4)]
    copies += [copy.flip(-1) for copy in copies]
    return torch.stack(copies).mean(0)


def _model(root: Path, classes: int, symmetric: bool) -> Path:
    names = ("fg",) if classes == 1 else tuple(f"c{i}" for i in range(classes))
    info = ModelInfo(class_names=names, colors=((0, 0, 0),) * classes, base=4, depth=3, activation="relu",
                     ignore_index=None if classes == 1 else classes, name="tiny",
                     extra={"dropout": [0, 0, 0]})
    torch.manual_seed(1)
    model = build_model(info).eval()
    if symmetric:
        # Kernels symmetric under the square's eight transforms make the network commute with them (zero 'same'
        # padding, 2x2 pooling and up-convolutions on even sides): every flipped copy's probabilities, turned
        # back, are the plain ones, so any error in undoing a flip changes the figures.
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                    module.weight.copy_(_dihedral_symmetric(module.weight))
    path = root / f"model_{classes}_{symmetric}.pt"
    save_checkpoint(path, model, info)
    return path


def _folders(root: Path, classes: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(classes)
    images, labels = root / "images", root / "labels"
    images.mkdir()
    labels.mkdir()
    for stem in ("18", "19", "20"):
        label = rng.integers(0, max(classes, 2), (4, 4)).repeat(8, 0).repeat(8, 1).astype(np.uint8)
        image = (label[..., None] * 70 + rng.integers(0, 60, (32, 32, 3))).astype(np.uint8)
        cv2.imwrite(str(images / f"{stem}.png"), image)
        cv2.imwrite(str(labels / f"{stem}.png"), label * 255 if classes == 1 else label)
    return images, labels


@pytest.mark.parametrize("turns", range(4))
@pytest.mark.parametrize("mirrored", [False, True])
def test_each_transform_is_undone(turns: int, mirrored: bool) -> None:
    frame = np.arange(5 * 7 * 3).reshape(5, 7, 3)
    transformed = test_time_flips.transform_frame(frame, (turns, mirrored))
    back = test_time_flips.untransform_planes(np.moveaxis(transformed, -1, 0), (turns, mirrored))
    assert np.array_equal(np.moveaxis(back, 0, -1), frame)


@pytest.mark.parametrize("classes", [3, 1])
def test_a_network_that_commutes_with_flips_scores_the_same_with_them(tmp_path: Path, classes: int) -> None:
    model = _model(tmp_path, classes, symmetric=True)
    images, labels = _folders(tmp_path, classes)
    out = tmp_path / "flips.json"
    assert test_time_flips.main([str(model), "--images", str(images), "--labels", str(labels), "--flips", "dihedral",
                                 "--out", str(out)]) == 0
    plain, flipped = json.loads(out.read_text())["rows"]
    assert (plain["flips"], flipped["flips"], flipped["network_runs_per_frame"]) == ("none", "dihedral", 8)
    keys = ["challenge_pixel_error", "challenge_rand_error"] if classes == 1 else ["mean_iou"]
    for key in keys:
        assert flipped[key] == pytest.approx(plain[key], abs=1e-9)


def test_the_plain_row_is_unet_evals_figure(tmp_path: Path) -> None:
    model = _model(tmp_path, 3, symmetric=False)
    images, labels = _folders(tmp_path, 3)
    with Segmenter(model) as segmenter:
        expected = evaluate_pairs(segmenter, paired_files(images, labels))
        rows = test_time_flips.score_flip_sets(segmenter, paired_files(images, labels), ["none", "horizontal"])
    assert rows[0]["mean_iou"] == pytest.approx(expected["mean_iou"], abs=1e-9)
    assert rows[0]["per_class_iou"] == pytest.approx(expected["per_class_iou"], abs=1e-9)
    assert rows[1]["network_runs_per_frame"] == 2


@pytest.mark.parametrize(("argv", "message"), [
    ([], "give either --split (with --data) or --images with --labels"),
    (["--split", "s.json"], "--split needs --data"),
    (["--images", "IMAGES"], "--images needs --labels"),
    (["--images", "IMAGES", "--labels", "LABELS", "--stems", "40-41"], "--stems matched no file"),
])
def test_bad_arguments_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                                            message: str) -> None:
    model = _model(tmp_path, 3, symmetric=False)
    images, labels = _folders(tmp_path, 3)
    argv = [arg.replace("IMAGES", str(images)).replace("LABELS", str(labels)) for arg in argv]
    assert test_time_flips.main([str(model), *argv, "--out", str(tmp_path / "o.json")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_horizontal_flips_are_the_frame_and_its_left_right_mirror() -> None:
    frame = np.arange(4 * 6).reshape(4, 6)
    flipped = [test_time_flips.transform_frame(frame, t) for t in test_time_flips.FLIP_SETS["horizontal"]]
    assert [copy.tolist() for copy in flipped] == [frame.tolist(), frame[:, ::-1].tolist()]


def test_a_split_scores_its_select_part_at_the_size_asked(tmp_path: Path) -> None:
    model = _model(tmp_path, 3, symmetric=False)
    data = tmp_path / "camvid"
    data.mkdir()
    images, labels = _folders(data, 3)
    images.rename(data / "val")
    labels.rename(data / "valannot")
    for folder in ("val", "valannot"):
        for path in (data / folder).iterdir():
            path.rename(path.with_name(f"0016E5_000{path.name}"))
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"guard_frames": 0, "select": ["0016E5:00018-00019"],
                                 "report": ["0016E5:00020-00020"]}))
    out = tmp_path / "flips.json"
    assert test_time_flips.main([str(model), "--split", str(split), "--data", str(data), "--size", "16x16",
                                 "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    with Segmenter(model, working_size=(16, 16)) as segmenter:
        expected = evaluate_pairs(segmenter, HeldOutSplit.read(split).pairs(data, "select"))
    assert (record["images"], record["working_size"]) == (2, "16x16")
    # The plain row costs one network run a frame, the horizontal one two.
    assert [row["network_runs_per_frame"] for row in record["rows"]] == [1, 2]
    assert record["rows"][0]["mean_iou"] == pytest.approx(expected["mean_iou"], abs=1e-9)


def _halves_segmenter() -> Any:
    """A stand-in two-class segmenter that calls the left half of whatever frame it is given class 1 (0.8) and the
    right half class 0 (class 1 at 0.3)."""

    def segment(frame: np.ndarray, probabilities: bool) -> Any:
        width = frame.shape[1]
        one = np.where(np.arange(width) < width // 2, 0.8, 0.3)[None, :].repeat(frame.shape[0], 0)
        return SimpleNamespace(probabilities=np.stack([1 - one, one]).astype(np.float32))

    info = SimpleNamespace(binary=False, num_classes=2, ignore_index=None, in_channels=3, class_names=("c0", "c1"))
    return SimpleNamespace(info=info, segment=segment)


def test_the_flipped_row_averages_the_probabilities_of_every_flip(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "frame.png"), np.zeros((4, 4, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "label.png"), np.ones((4, 4), np.uint8))
    plain, flipped = test_time_flips.score_flip_sets(_halves_segmenter(), [(tmp_path / "frame.png",
                                                                            tmp_path / "label.png")],
                                                     ["none", "horizontal"])
    # Plain: the left half is class 1, the right half class 0; every label is 1: IoU 8/16 for class 1, 0 for class 0.
    assert plain["mean_iou"] == pytest.approx(0.25)
    # The mirror's turned-back probabilities put class 1 at 0.8 on the right: the average is 0.55 everywhere,
    # so every pixel is class 1 and class 0 occurs nowhere.
    assert flipped["mean_iou"] == pytest.approx(1.0)


def test_the_backend_precision_and_size_asked_reach_the_segmenter(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    images, labels = _folders(tmp_path, 3)
    opened: list[dict[str, Any]] = []

    class Opened:
        info = SimpleNamespace(working_size=(16, 16))

        def __enter__(self) -> Any:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

    monkeypatch.setattr(test_time_flips, "Segmenter", lambda model, **kwargs: opened.append(kwargs) or Opened())
    monkeypatch.setattr(test_time_flips, "score_flip_sets", lambda segmenter, pairs, flip_sets: [])
    assert test_time_flips.main(["model.onnx", "--images", str(images), "--labels", str(labels), "--backend",
                                 "onnxruntime", "--precision", "int8", "--size", "16x16",
                                 "--out", str(tmp_path / "flips.json")]) == 0
    assert opened == [{"backend": "onnxruntime", "precision": "int8", "working_size": (16, 16)}]
