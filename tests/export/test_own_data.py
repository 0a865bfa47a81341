"""Training on your own data: docs/own-data.md's recipe end to end, the recipe's defaults, one-line dataset errors."""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from unetrt.export.checkpoint import load_checkpoint  # noqa: E402
from unetrt.export.data import SplitFiles  # noqa: E402
from unetrt.export.train import _model_info, build_parser  # noqa: E402
from unetrt.export.train import main as train_main  # noqa: E402

DOC = Path(__file__).resolve().parents[2] / "docs" / "own-data.md"
MODELS = Path(__file__).resolve().parents[2] / "engine" / "models"
RECIPE_MARK = "<!-- recipe:"
# Tiny sizes appended to the recipe's unet-train line (argparse keeps the last value of an option).
TINY_TRAIN = ["--working-size", "64x48", "--base", "4", "--depth", "3", "--dropout", "0,0,0", "--epochs", "2",
              "--batch-size", "2", "--threads", "1"]
CLASSES = {"ignore_index": 255, "classes": [{"id": 0, "name": "background", "color": [0, 0, 0]},
                                            {"id": 1, "name": "disc", "color": [255, 200, 0]},
                                            {"id": 255, "name": "unlabelled", "color": [255, 255, 255]}]}


def make_dataset(root: Path, size: tuple[int, int] = (64, 48), train: int = 4, val: int = 2) -> Path:
    """Two classes: a bright disc (1) on dark noise (0), a few unlabelled (255) pixels; JPEG images, PNG labels."""
    rng = np.random.default_rng(3)
    (root).mkdir(parents=True)
    (root / "classes.json").write_text(json.dumps(CLASSES))
    for split, count in (("train", train), ("val", val)):
        (root / split).mkdir()
        (root / f"{split}annot").mkdir()
        for index in range(count):
            label = np.zeros(size[::-1], np.uint8)
            centre = (int(rng.integers(16, size[0] - 16)), int(rng.integers(14, size[1] - 14)))
            cv2.circle(label, centre, int(rng.integers(8, 13)), 1, -1)
            label[0, :4] = 255
            noise = rng.integers(0, 60, (*label.shape, 3))
            image = np.where(label[..., None] == 1, 200 + noise // 2, noise).astype(np.uint8)
            cv2.imwrite(str(root / split / f"{split}_{index:03d}.jpg"), image)
            cv2.imwrite(str(root / f"{split}annot" / f"{split}_{index:03d}.png"), label)
    return root


def recipe_lines() -> list[list[str]]:
    """The commands of the documented recipe: the fenced block after the recipe mark."""
    text = DOC.read_text()
    block = text[text.index(RECIPE_MARK):].split("```")[1]
    lines = [line for line in block.splitlines()[1:] if line.strip()]
    return [shlex.split(line) for line in lines]


def run_command(argv: list[str]) -> int:
    """Run a unet-* command of the recipe in this process."""
    from unetrt.evaluate import main as eval_main
    from unetrt.export.onnx_export import main as export_main
    from unetrt.stream.cli import main as stream_main

    commands: dict[str, Callable[[list[str]], int]] = {
        "unet-train": lambda args: train_main([*args, *TINY_TRAIN]), "unet-eval": eval_main,
        "unet-export": export_main, "unet-stream": lambda args: stream_main([*args, "--threads", "1"])}
    return commands[argv[0]](argv[1:])


@pytest.mark.slow
def test_documented_recipe_runs_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    make_dataset(tmp_path / "mydata")
    monkeypatch.chdir(tmp_path)
    lines = recipe_lines()
    assert [line[0] for line in lines] == ["unet-train", "unet-eval", "unet-export", "unet-stream"]
    for line in lines:
        assert run_command(line) == 0, line
    out = capsys.readouterr()
    # The epoch's bar: batches of the epoch, the running loss, elapsed time and ETA.
    assert "epoch 1 train" in out.err and "2/2 [" in out.err and "loss=" in out.err
    assert "mean IoU" in out.out or "mean_iou" in out.out
    assert Path("mine_val.mp4").stat().st_size > 0
    from unetrt import Segmenter

    with Segmenter("mine.onnx") as seg:
        assert seg.info.class_names == ("background", "disc") and seg.info.ignore_index == 255
        frame = cv2.imread("mydata/val/val_000.jpg")
        assert seg.segment(frame).mask.shape == frame.shape[:2]


def _architecture(argv: list[str]) -> dict[str, object]:
    """What ``unet-train ARGV`` would build: the architecture fields of its ModelInfo."""
    args = build_parser().parse_args(argv)
    info = _model_info(args, SplitFiles([], [], ("a", "b"), ((0, 0, 0), (1, 1, 1)), None,
                                        1 if args.dataset == "isbi" else 3))
    return {"base": info.base, "depth": info.depth, "activation": info.activation, "padding": info.padding,
            "batch_norm": info.extra["batch_norm"], "dropout": list(info.extra["dropout"])}


def _bundled_architecture(name: str) -> dict[str, object]:
    info = load_checkpoint(MODELS / f"{name}.pt")["info"]
    return {key: info.get(key, info["extra"].get(key)) for key in
            ("base", "depth", "activation", "padding", "batch_norm", "dropout")}


def _widened(architecture: dict[str, object]) -> dict[str, object]:
    # unet-train --init widens a narrower checkpoint, and dropout is identity once trained: stages of one recipe
    # may differ in base and dropout rates, in nothing else that builds the network.
    return {key: value for key, value in architecture.items() if key not in ("base", "dropout")}


def test_defaults_are_the_bundled_models_recipe() -> None:
    # The defaults start the bundled model's recipe: its first stage, which later stages may widen.
    first = shlex.split(json.loads((MODELS / "camvid.json").read_text())["training_commands"][0])[1:]
    defaults = _architecture(["--dataset", "camvid", "--data", "mydata"])
    assert defaults == _architecture(first)
    assert _widened(defaults) == _widened(_bundled_architecture("camvid"))
    args = build_parser().parse_args(["--dataset", "camvid", "--data", "mydata"])
    assert args.class_weights == "median-freq" and "class_weights" in load_checkpoint(MODELS / "camvid.pt")["info"][
        "extra"]


@pytest.mark.parametrize("name", ["camvid", "isbi"])
def test_recorded_training_commands_still_build_the_bundled_models(name: str) -> None:
    commands = json.loads((MODELS / f"{name}.json").read_text())["training_commands"]
    assert commands
    bundled = _bundled_architecture(name)
    bases = []
    for command in commands:
        architecture = _architecture(shlex.split(command)[1:])
        assert _widened(architecture) == _widened(bundled), command
        bases.append(architecture["base"])
    assert bases == sorted(bases) and bases[-1] == bundled["base"], bases  # widened, never narrowed


def test_epoch_bar_shows_in_a_log_with_its_steps_loss_and_eta(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    data = make_dataset(tmp_path / "mydata", train=6)
    argv = ["--dataset", "camvid", "--data", str(data), "--out", str(tmp_path / "run"), *TINY_TRAIN,
            "--epochs", "1", "--max-steps", "2"]
    assert train_main(argv) == 0
    err = capsys.readouterr().err  # not a terminal: the bar is written as a log line
    bar = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("epoch 1 train")]
    assert bar and "2/2 [" in bar[-1] and "<" in bar[-1] and "loss=" in bar[-1]


def _mismatched_pairs(root: Path) -> None:
    (root / "trainannot" / "train_001.png").rename(root / "trainannot" / "other.png")


def _label_of_another_size(root: Path) -> None:
    cv2.imwrite(str(root / "trainannot" / "train_001.png"), np.zeros((40, 64), np.uint8))


def _ids_outside_the_table(root: Path) -> None:
    label = cv2.imread(str(root / "valannot" / "val_001.png"), cv2.IMREAD_UNCHANGED)
    label[5:7, 5:7] = 7
    cv2.imwrite(str(root / "valannot" / "val_001.png"), label)


def _colour_label(root: Path) -> None:
    label = cv2.imread(str(root / "trainannot" / "train_000.png"), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(root / "trainannot" / "train_000.png"), np.stack([label * 255, label * 200, label], -1))


def _images_of_mixed_sizes(root: Path) -> None:
    for folder, suffix in (("train", ".jpg"), ("trainannot", ".png")):
        path = root / folder / f"train_002{suffix}"
        cv2.imwrite(str(path), cv2.resize(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), (96, 64),
                                          interpolation=cv2.INTER_NEAREST))


def _size_the_network_cannot_take(root: Path) -> None:
    for folder in ("train", "trainannot", "val", "valannot"):
        for path in (root / folder).iterdir():
            cv2.imwrite(str(path), cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[:45])


def _class_table_without_names(root: Path) -> None:
    (root / "classes.json").write_text(json.dumps({"classes": [{"id": 0}, {"id": 1}]}))


def _no_class_table(root: Path) -> None:
    (root / "classes.json").unlink()


@pytest.mark.parametrize(("damage", "working_size", "words"), [
    (_mismatched_pairs, "64x48", "1 images have no label (e.g. train_001); 1 labels have no image (e.g. other)"),
    (_label_of_another_size, "64x48", "is 64x48 but its label"),
    (_ids_outside_the_table, "64x48", "holds class ids 7 (4 pixels) outside the class table (0..1 and ignore_index"),
    (_colour_label, "64x48", "is a colour image"),
    (_images_of_mixed_sizes, None, "samples differ in size"),
    (_size_the_network_cannot_take, None, "resize them with --size 64x48"),
    (_class_table_without_names, "64x48", "is not a class table (KeyError: 'name'); expected the form"),
    (_no_class_table, "64x48", "classes.json' not found"),
])
def test_broken_datasets_stop_with_one_line(damage: Callable[[Path], None], working_size: str | None, words: str,
                                            tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_dataset(tmp_path / "mydata")
    damage(data)
    tiny = [arg for arg in TINY_TRAIN if arg != "64x48" and arg != "--working-size"]
    argv = ["--dataset", "camvid", "--data", str(data), "--out", str(tmp_path / "run"), *tiny, "--epochs", "1"]
    assert train_main([*argv, *(["--working-size", working_size] if working_size else [])]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error:") and words in err, err
    assert not (tmp_path / "run" / "last.pt").exists()


def test_held_out_split_trains_outside_its_spans(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "mydata", train=6, val=2)
    # train_000..005 and val_000..001: frames 0..5 of sequence "train", 0..1 of "val"
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"guard_frames": 1, "select": ["train:0-0"], "report": ["val:0-1"]}))
    argv = ["--dataset", "camvid", "--data", str(data), "--out", str(tmp_path / "run"), "--split", str(split),
            *TINY_TRAIN, "--epochs", "1"]
    assert train_main(argv) == 0
    summary = json.loads((tmp_path / "run" / "run.json").read_text())
    # frame 1 of "train" is inside the guard band of the select span; frames 2..5 remain for training
    assert summary["samples"] == {"train": 4, "select": 1} and summary["split"] == str(split)


def test_held_out_split_is_for_the_camvid_layout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"select": ["a:0-1"], "report": ["a:2-3"]}))
    assert train_main(["--dataset", "isbi", "--data", str(tmp_path), "--split", str(split)]) == 2
    assert "use --val-slices and --test-slices" in capsys.readouterr().err


def test_a_bundled_models_name_trains_on_its_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # unet-train --split camvid (as unet-eval takes it): the package's camvid.split.json, from any folder.
    from unetrt.export import train
    from unetrt.heldout import HeldOutSplit, split_file

    given: list[HeldOutSplit | None] = []
    monkeypatch.setattr(train, "camvid_split", lambda data, split: given.append(split))
    monkeypatch.chdir(tmp_path)
    train._split(build_parser().parse_args(["--dataset", "camvid", "--data", str(tmp_path), "--split", "camvid"]))
    assert given == [HeldOutSplit.read(split_file("camvid"))]
