"""unet-train on tiny synthetic data sets: logs and curves, losses, resume, seeds, compatibility, errors."""

from __future__ import annotations

import csv
import errno
import itertools
import json
import math
import shlex
import shutil
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from unetrt.export.checkpoint import load_checkpoint, load_model  # noqa: E402
from unetrt.export.distributed import weights_digest  # noqa: E402
from unetrt.export.train import build_parser, main  # noqa: E402

TINY = ["--base", "4", "--depth", "3", "--batch-size", "2", "--threads", "1", "--dropout", "0,0,0"]


def make_isbi(root: Path, slices: int = 6, size: int = 32) -> Path:
    """ISBI-like slices: bright cells separated by dark membranes, labels 255 = cell."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for index in range(slices):
        label = np.full((size, size), 255, np.uint8)
        for line in rng.integers(4, size - 4, 3):
            label[:, line] = 0
            label[line, :] = 0
        image = np.where(label > 0, 170, 60).astype(np.uint8) + rng.integers(0, 30, label.shape).astype(np.uint8)
        cv2.imwrite(str(root / "images" / f"{index:02d}.png"), image)
        cv2.imwrite(str(root / "labels" / f"{index:02d}.png"), label)
    return root


def make_camvid(root: Path, size: tuple[int, int] = (32, 24)) -> Path:
    """A CamVid-layout folder with 3 classes plus ignore id 3."""
    rng = np.random.default_rng(1)
    root.mkdir(parents=True)
    classes = [{"id": i, "name": f"c{i}", "color": [60 * i, 0, 0]} for i in range(4)]
    (root / "classes.json").write_text(json.dumps({"ignore_index": 3, "classes": classes}))
    for split, count in (("train", 4), ("val", 2)):
        (root / split).mkdir(parents=True)
        (root / f"{split}annot").mkdir()
        for index in range(count):
            label = np.zeros(size[::-1], np.uint8)
            label[:, size[0] // 2:] = 1
            label[: size[1] // 3] = 2
            label[0, 0] = 3
            image = np.stack([label * 80, 255 - label * 80, rng.integers(0, 255, label.shape)], -1).astype(np.uint8)
            cv2.imwrite(str(root / split / f"f{index}.png"), image)
            cv2.imwrite(str(root / f"{split}annot" / f"f{index}.png"), label)
    return root


@pytest.fixture(scope="module")
def isbi_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_isbi(tmp_path_factory.mktemp("isbi"))


def _isbi_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["--dataset", "isbi", "--data", str(data), "--val-slices", "4-5", "--out", str(out), *TINY, *extra]


def test_weighted_loss_elastic_crops_write_logs_curves_and_checkpoints(isbi_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code = main(_isbi_args(isbi_root, out, "--epochs", "2", "--loss", "weighted-ce", "--augment",
                           "hflip,vflip,rot90,elastic,jitter", "--crop", "16x16", "--monitor", "metric",
                           "--lr-schedule", "cosine", "--name", "isbi"))
    assert code == 0
    for name in ("best.pt", "last.pt", "log.csv", "history.json", "curves.png", "run.json", "command.json"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "log.csv").open()))
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert {"pixel_error", "rand_error", "challenge_pixel_error", "challenge_rand_error", "iou", "lr"} <= set(rows[0])
    assert 0 <= float(rows[-1]["rand_error"]) <= 1
    assert 0 <= float(rows[-1]["challenge_rand_error"]) <= 1
    assert float(rows[1]["lr"]) < float(rows[0]["lr"])  # cosine schedule
    assert list((out / "weight_cache").glob("weights_distance_*.npz"))
    summary = json.loads((out / "run.json").read_text())
    assert summary["monitor"] == "challenge_rand_error" and summary["world_size"] == 1
    best = load_checkpoint(out / "best.pt")
    assert best["info"]["name"] == "isbi" and "challenge_rand_error" in best["val_metrics"]
    # --monitor metric on a binary model: best.pt is the epoch of the lowest challenge Rand error
    rand_errors = [float(row["challenge_rand_error"]) for row in rows]
    assert best["epoch"] == summary["best_epoch"] == 1 + int(np.argmin(rand_errors))
    assert summary["samples"] == {"train": 4, "select": 2}  # --val-slices 4-5 of slices 0-5


def test_monitor_cleanup_selects_on_the_cleaned_masks_rand_error(isbi_root: Path, tmp_path: Path) -> None:
    from unetrt.postprocess import BinaryCleanup

    statement = tmp_path / "isbi.json"
    cleanup = BinaryCleanup("watershed", max_hole_area=20, seed_threshold=0.4, min_seed_area=2, lines_threshold=0.3)
    statement.write_text(json.dumps({"cleanup": {"settings": {**cleanup.__dict__}}}))
    out = tmp_path / "run"
    assert main(_isbi_args(isbi_root, out, "--epochs", "2", "--monitor", "metric", "--monitor-cleanup",
                           str(statement), "--name", "isbi")) == 0
    rows = json.loads((out / "history.json").read_text())
    cleaned = [row["metrics"]["cleaned_challenge_rand_error"] for row in rows]
    summary = json.loads((out / "run.json").read_text())
    assert summary["monitor"] == "cleaned_challenge_rand_error"
    assert summary["best"]["epoch"] == 1 + int(np.argmin(cleaned))
    assert all(0 <= value <= 1 for value in cleaned)


def test_monitor_cleanup_is_refused_for_multiclass_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    statement = tmp_path / "isbi.json"
    statement.write_text(json.dumps({"cleanup": {"settings": {"mode": "fill-holes", "max_hole_area": 4}}}))
    data = make_camvid(tmp_path / "camvid")
    assert main(["--dataset", "camvid", "--data", str(data), "--out", str(tmp_path / "run"), *TINY, "--epochs", "1",
                 "--monitor", "metric", "--monitor-cleanup", str(statement)]) == 2
    err = capsys.readouterr().err
    assert "--monitor-cleanup is for binary models" in err and err.count("\n") == 1


def test_resume_continues_from_last_epoch(isbi_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    schedule = ("--lr-schedule", "cosine")
    # a 0.6 ms budget: the first leg stops after epoch 1 of 2
    assert main(_isbi_args(isbi_root, out, "--epochs", "2", "--max-steps", "1", *schedule,
                           "--max-minutes", "1e-5")) == 0
    first = load_checkpoint(out / "last.pt")
    assert first["epoch"] == 1
    # Another seed draws other start weights: the resumed run must take the saved ones, and Adam's state with them.
    assert main(_isbi_args(isbi_root, out, "--epochs", "2", "--max-steps", "1", *schedule, "--seed", "1",
                           "--resume", str(out / "last.pt"))) == 0
    history = json.loads((out / "history.json").read_text())
    assert [row["epoch"] for row in history] == [1, 2]
    last = load_checkpoint(out / "last.pt")
    assert last["epoch"] == 2
    # one Adam step in each run: the second continues the first's count
    assert {int(state["step"]) for state in last["optimizer"]["state"].values()} == {2}
    assert last["scheduler"]["last_epoch"] == 2  # the schedule goes on too
    # One Adam step moves a weight by about the learning rate (1e-3) at most; a fresh draw is ~0.1 away.
    weights = [k for k in first["model"] if "running" not in k and "num_batches" not in k]
    assert max((last["model"][k] - first["model"][k]).abs().max().item() for k in weights) < 3e-3


def test_a_resumed_run_keeps_its_best_score_and_patience_count(isbi_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(_isbi_args(isbi_root, out, "--epochs", "1", "--max-steps", "1")) == 0
    # A best validation loss of -1 cannot be beaten, and 3 epochs without improvement went before.
    saved = torch.load(out / "last.pt", weights_only=True)
    saved.update(best=-1.0, stale=3)
    torch.save(saved, out / "last.pt")
    best = (out / "best.pt").read_bytes()
    assert main(_isbi_args(isbi_root, out, "--epochs", "2", "--max-steps", "1", "--resume", str(out / "last.pt"))) == 0
    last = load_checkpoint(out / "last.pt")
    assert (last["best"], last["stale"]) == (-1.0, 4)
    assert (out / "best.pt").read_bytes() == best


def test_an_earlier_run_is_kept_unless_overwrite_or_resume(isbi_root: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(_isbi_args(isbi_root, out, "--epochs", "1", "--max-steps", "1")) == 0
    best = (out / "best.pt").read_bytes()
    capsys.readouterr()
    assert main(_isbi_args(isbi_root, out, "--epochs", "1", "--max-steps", "1", "--seed", "3")) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "holds an earlier run's best.pt" in lines[0] and "--overwrite" in lines[0], lines
    assert (out / "best.pt").read_bytes() == best
    assert main(_isbi_args(isbi_root, out, "--epochs", "1", "--max-steps", "1", "--seed", "3", "--overwrite")) == 0
    assert (out / "best.pt").read_bytes() != best
    (tmp_path / "a-file").write_text("notes")
    assert main(_isbi_args(isbi_root, tmp_path / "a-file", "--epochs", "1")) == 2
    assert "is a file; give a folder" in capsys.readouterr().err


def test_same_seed_same_weights(isbi_root: Path, tmp_path: Path) -> None:
    digests = []
    for run in ("a", "b"):
        assert main(_isbi_args(isbi_root, tmp_path / run, "--epochs", "1", "--max-steps", "2",
                               "--augment", "hflip,elastic")) == 0
        from unetrt.export.checkpoint import load_model

        digests.append(weights_digest(load_model(tmp_path / run / "last.pt")[0]))
    assert digests[0] == digests[1]


def test_multiclass_dice_ce_with_median_frequency(tmp_path: Path) -> None:
    data = make_camvid(tmp_path / "camvid")
    out = tmp_path / "run"
    code = main(["--dataset", "camvid", "--data", str(data), "--out", str(out), *TINY, "--epochs", "1",
                 "--loss", "dice-ce", "--class-weights", "median-freq", "--augment", "hflip,scale,jitter"])
    assert code == 0
    rows = list(csv.DictReader((out / "log.csv").open()))
    assert 0 <= float(rows[0]["mean_iou"]) <= 1


def test_a_wholly_void_validation_frame_still_lets_the_run_keep_its_best_checkpoint(tmp_path: Path) -> None:
    # A validation batch with no scored pixel (one frame, all ignore id 3) made the cross-entropy NaN: the
    # validation loss was NaN every epoch, never an improvement, and the run exited 0 naming a best.pt it never wrote.
    data = make_camvid(tmp_path / "camvid")
    cv2.imwrite(str(data / "valannot" / "f1.png"), np.full((24, 32), 3, np.uint8))
    out = tmp_path / "run"
    assert main(["--dataset", "camvid", "--data", str(data), "--out", str(out), *TINY, "--batch-size", "1",
                 "--epochs", "1", "--augment", "none"]) == 0
    assert math.isfinite(json.loads((out / "history.json").read_text())[0]["val_loss"])
    assert load_checkpoint(out / "best.pt")["epoch"] == 1


def test_a_run_whose_every_validation_score_is_nan_says_so_instead_of_naming_a_best_pt(
        isbi_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A rate of 1e30 blows the weights up in the first step: the validation loss is NaN, never an improvement. The
    # run exited 0 printing a best.pt it never wrote, and run.json named epoch 1 the best.
    out = tmp_path / "run"
    assert main(_isbi_args(isbi_root, out, "--epochs", "1", "--lr", "1e30")) == 2
    last = capsys.readouterr().err.splitlines()[-1]  # after the epoch's progress bar
    assert last.startswith("error: the validation loss was NaN or infinite in every epoch") and "lower --lr" in last
    assert not (out / "best.pt").exists() and (out / "last.pt").exists()
    assert json.loads((out / "run.json").read_text())["best_epoch"] is None


def test_fewer_training_samples_than_processes_is_refused_before_training(
        isbi_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # One training slice (1-5 held out) under torchrun's 2 processes: the sampler gives each process
    # floor(1 / 2) = 0 samples, so no step was ever taken, and the run reported train loss 0 and an untrained
    # best.pt with exit 0. The check comes before any collective, so a context of rank 0 of 2 stands for torchrun.
    from unetrt.export.distributed import DistributedContext

    monkeypatch.setattr("unetrt.export.train.init_distributed",
                        lambda device: DistributedContext(0, 2, 0, torch.device("cpu")))
    out = tmp_path / "run"
    assert main(_isbi_args(isbi_root, out, "--val-slices", "1-5", "--epochs", "1")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1 training sample for 2 processes" in err and "--nproc-per-node 1" in err
    assert not (out / "last.pt").exists()


def test_class_weight_power_softens_the_median_frequency_weights(tmp_path: Path) -> None:
    data = make_camvid(tmp_path / "camvid")
    weights = {}
    for power in ("1", "0.5"):
        out = tmp_path / f"run{power}"
        assert main(["--dataset", "camvid", "--data", str(data), "--out", str(out), *TINY, "--epochs", "1",
                     "--class-weights", "median-freq", "--class-weight-power", power]) == 0
        weights[power] = np.array(load_checkpoint(out / "best.pt")["info"]["extra"]["class_weights"])
    np.testing.assert_allclose(weights["0.5"], np.sqrt(weights["1"]), rtol=1e-6)
    assert not np.allclose(weights["1"], 1.0)


def test_init_from_a_corrected_checkpoint_starts_from_the_weights_as_trained(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from unetrt.export.checkpoint import save_checkpoint
    from unetrt.export.prior import correct_class_prior

    data = make_camvid(tmp_path / "camvid")
    args = ["--dataset", "camvid", "--data", str(data), *TINY, "--epochs", "1", "--max-steps", "1",
            "--class-weights", "median-freq", "--no-batch-norm"]
    assert main([*args, "--out", str(tmp_path / "first")]) == 0
    trained = load_checkpoint(tmp_path / "first" / "best.pt")["model"]["head.bias"].clone()
    corrected = tmp_path / "corrected.pt"
    save_checkpoint(corrected, *correct_class_prior(*load_model(tmp_path / "first" / "best.pt"), 1.0))
    capsys.readouterr()
    assert main([*args, "--lr", "1e-12", "--init", str(corrected), "--out", str(tmp_path / "second")]) == 0
    assert "carries a class-prior correction (tau 1.0)" in capsys.readouterr().out
    second = load_checkpoint(tmp_path / "second" / "best.pt")
    # a vanishing learning rate: the head is the one trained, not the corrected one, and nothing says corrected
    torch.testing.assert_close(second["model"]["head.bias"], trained, atol=1e-6, rtol=0)
    assert "prior_correction" not in second["info"]["extra"]


def test_label_scale_trains_and_scores_on_the_finer_labels(tmp_path: Path) -> None:
    data = make_camvid(tmp_path / "camvid", size=(64, 48))
    out = tmp_path / "run"
    code = main(["--dataset", "camvid", "--data", str(data), "--out", str(out), *TINY, "--epochs", "2",
                 "--size", "32x24", "--label-scale", "2", "--loss", "dice-ce", "--w0", "0", "--crop", "16x16",
                 "--augment", "hflip,scale", "--monitor", "metric"])
    assert code == 0
    rows = list(csv.DictReader((out / "log.csv").open()))
    assert all(math.isfinite(float(row["train_loss"])) and 0 <= float(row["mean_iou"]) <= 1 for row in rows)
    assert json.loads((out / "command.json").read_text())["args"]["label_scale"] == 2
    # --monitor metric on a multi-class model: best.pt is the epoch of the highest mean IoU
    assert load_checkpoint(out / "best.pt")["epoch"] == 1 + int(np.argmax([float(row["mean_iou"]) for row in rows]))


def test_logits_reach_the_finer_labels_as_the_runtime_resizes_them() -> None:
    # The finish step resizes scores with OpenCV's INTER_LINEAR geometry (half-pixel centres, edges clamped);
    # training must score the logits that way, or it learns for a resize inference does not do.
    from unetrt.export.train import _to_label_grid

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(1, 3, 6, 8)).astype(np.float32)
    fine = _to_label_grid(torch.from_numpy(logits), 2).numpy()
    for channel in range(3):
        expected = cv2.resize(logits[0, channel], (16, 12), interpolation=cv2.INTER_LINEAR)
        np.testing.assert_allclose(fine[0, channel], expected, atol=1e-5)
    assert _to_label_grid(torch.from_numpy(logits), 1).shape == (1, 3, 6, 8)


@pytest.mark.parametrize("loss", ["lovasz-ce", "cldice-ce"])
def test_multiclass_lovasz_and_cldice_losses_train(tmp_path: Path, loss: str) -> None:
    data = make_camvid(tmp_path / "camvid")
    out = tmp_path / "run"
    code = main(["--dataset", "camvid", "--data", str(data), "--out", str(out), *TINY, "--epochs", "1",
                 "--loss", loss, "--w0", "0", "--thin-class", "1", "--cldice-iterations", "2"])
    assert code == 0
    assert json.loads((out / "command.json").read_text())["args"]["loss"] == loss
    assert math.isfinite(float(next(csv.DictReader((out / "log.csv").open()))["train_loss"]))


def test_bundled_camvid_command_keeps_its_defaults() -> None:
    args = build_parser().parse_args(shlex.split(
        "--dataset camvid --data ../shared/data/camvid --base 16 --activation relu --working-size 256x192 "
        "--class-weights median-freq --epochs 50 --out runs/camvid --name camvid"))
    assert (args.loss, args.augment, args.lr, args.batch_size, args.patience) == ("ce", "hflip,jitter", 1e-3, 16, 5)
    assert (args.monitor, args.lr_schedule, args.crop, args.resume) == ("loss", "none", None, None)


@pytest.mark.parametrize(("extra", "message"), [
    (["--crop", "18x18"], "--crop"),
    (["--crop", "64x64"], "larger than sample"),
    (["--augment", "twirl"], "unknown augmentation"),
    (["--val-slices", "x-y"], "--val-slices"),
    (["--loss", "bce", "--resume", "missing.pt"], "does not exist"),
    (["--loss", "cldice-ce", "--thin-class", "2"], "--thin-class 2 is not one of the model's classes 0-1"),
    (["--loss", "cldice-ce", "--cldice-iterations", "0"], "--cldice-iterations 0 must be at least 1"),
    (["--label-scale", "0"], "--label-scale must be a positive integer, got 0"),
    (["--class-weight-power", "2"], "--class-weight-power must be between 0"),
    (["--monitor-cleanup", "x.json"], "--monitor-cleanup chooses the figure --monitor metric selects on"),
    (["--monitor", "metric", "--monitor-cleanup", "missing.json"], "is not a model statement with a 'cleanup'"),
    # Accepted before: inf or NaN trained to a NaN best.pt, a negative --ema switched the average off silently,
    # a negative --max-minutes stopped after one epoch.
    (["--lr", "inf"], "--lr must be a positive finite learning rate"),
    (["--lr", "nan"], "--lr must be a positive finite learning rate"),
    (["--loss", "dice-ce", "--dice-weight", "nan"], "--dice-weight must be a finite number of at least 0, got nan"),
    (["--loss", "dice-ce", "--dice-weight", "-5"], "--dice-weight must be a finite number of at least 0, got -5"),
    (["--loss", "lovasz-ce", "--ce-weight", "inf"], "--ce-weight must be a finite number of at least 0"),
    (["--loss", "weighted-ce", "--w0", "nan"], "--w0 must be a finite number of at least 0"),
    (["--loss", "weighted-ce", "--sigma", "nan"], "--sigma must be a positive finite width"),
    (["--ema", "-0.5"], "--ema must be a decay in [0, 1)"),
    (["--ema", "1"], "--ema must be a decay in [0, 1)"),
    (["--max-minutes", "-1"], "--max-minutes must be a positive number of minutes, got -1"),
    (["--max-minutes", "nan"], "--max-minutes must be a positive number of minutes"),
    (["--dropout", "0,0"], "--dropout gives 2 rates for --depth 3; give one per level"),
    # --patience 0 stopped after the first epoch whatever it scored.
    (["--patience", "0"], "--patience must be at least 1"),
])
def test_bad_options_exit_2_with_one_line(isbi_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          extra: list[str], message: str) -> None:
    assert main(_isbi_args(isbi_root, tmp_path / "run", "--epochs", "1", *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_a_depth_without_dropout_rates_is_told_the_default_and_an_example(
        isbi_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # "--dropout gives 5 rates" blamed an option the user never gave: the default's rates are one per level of 5.
    argv = ["--dataset", "isbi", "--data", str(isbi_root), "--val-slices", "4-5", "--out", str(tmp_path / "run"),
            "--depth", "3", "--epochs", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert ("--dropout gives 5 rates for --depth 3; give one per level (its default 0.1,0.1,0.2,0.2,0.3 is for "
            "--depth 5), e.g. --dropout 0.1,0.1,0.2") in err and err.count("\n") == 1
    # Past the default's 5 levels the example repeats the deepest rate.
    assert main([*argv[:-4], "--depth", "6", "--epochs", "1"]) == 2
    assert "e.g. --dropout 0.1,0.1,0.2,0.2,0.3,0.3" in capsys.readouterr().err


@pytest.mark.parametrize(("extra", "message"), [
    (["--seed", "-1"], "argument --seed: seed must be an integer from 0 to 4294967295"),
    (["--seed", "99999999999999999999"], "argument --seed: seed must be an integer from 0 to 4294967295"),
    (["--max-steps", "0"], "argument --max-steps: must be a positive integer, got '0'"),
    (["--max-steps", "-1"], "argument --max-steps: must be a positive integer, got '-1'"),
    (["--dropout", "x"], "argument --dropout: expected one rate in [0, 1) per level, comma-separated"),
    (["--dropout", "0,nan,0"], "argument --dropout: expected one rate in [0, 1) per level, comma-separated"),
])
def test_bad_numbers_are_refused_when_parsed(isbi_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             extra: list[str], message: str) -> None:
    # Before: NumPy's or torch's refusal of the seed after the data had loaded, an empty epoch ending in "no slices
    # were scored", "could not convert string to float: 'x'" naming no option.
    with pytest.raises(SystemExit) as stopped:
        main(_isbi_args(isbi_root, tmp_path / "run", "--epochs", "1", *extra))
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "run").exists()


def test_a_weight_cache_that_is_a_file_is_refused_before_the_data_loads(
        isbi_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # It ended in FileExistsError's traceback once the weight maps were computed.
    cache = tmp_path / "bad.png"
    cache.write_bytes(b"a file")
    code = main(_isbi_args(isbi_root, tmp_path / "run", "--epochs", "1", "--loss", "weighted-ce",
                           "--weight-cache", str(cache)))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"--weight-cache {str(cache)!r}" in err and "is a file" in err
    assert cache.read_bytes() == b"a file" and not (tmp_path / "run").exists()


def test_an_output_folder_without_write_permission_is_refused_before_training(
        isbi_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # A bare "[Errno 13] Permission denied" came after the data had loaded (root writes anywhere, so the refusal
    # is simulated where the check creates its probe file).
    def refuse(*args: object, **kwargs: object) -> tuple[int, str]:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr("unetrt.stream.output_path.tempfile.mkstemp", refuse)
    assert main(_isbi_args(isbi_root, tmp_path / "run", "--epochs", "1")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no permission to write in" in err and "choose a folder you can write to" in err


def test_a_monitor_cleanup_nested_too_deep_is_one_line(isbi_root: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    # json.loads ended in RecursionError's traceback.
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    code = main(_isbi_args(isbi_root, tmp_path / "run", "--epochs", "1", "--max-steps", "1", "--monitor", "metric",
                           "--monitor-cleanup", str(deep)))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "nests its JSON deeper than can be read" in err


def test_time_budget_stops_after_the_first_epoch(isbi_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    # 0.6 ms: less than any epoch takes.
    assert main(_isbi_args(isbi_root, out, "--epochs", "5", "--max-steps", "1", "--max-minutes", "1e-5")) == 0
    assert json.loads((out / "run.json").read_text())["epochs_run"] == 1


def test_init_fine_tunes_from_weights_and_checks_the_architecture(isbi_root: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    first = tmp_path / "first"
    assert main(_isbi_args(isbi_root, first, "--epochs", "1", "--max-steps", "1")) == 0
    start = load_checkpoint(first / "best.pt")["model"]
    second = tmp_path / "second"
    assert main(_isbi_args(isbi_root, second, "--epochs", "1", "--max-steps", "1", "--lr", "1e-12",
                           "--init", str(first / "best.pt"))) == 0
    tuned = load_checkpoint(second / "best.pt")["model"]
    # a vanishing learning rate: the weights are still the ones it started from
    learned = [k for k in start if "running" not in k and "num_batches" not in k]
    assert all(torch.allclose(start[k], tuned[k], atol=1e-8) for k in learned)
    capsys.readouterr()
    assert main(_isbi_args(isbi_root, tmp_path / "third", "--epochs", "1", "--no-batch-norm",
                           "--init", str(first / "best.pt"))) == 2
    assert "match the flags" in capsys.readouterr().err


def test_init_from_a_run_of_other_classes_names_the_class_tables(isbi_root: Path, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    # The architecture tuple ended in "match the flags", yet the class count comes from classes.json, not a flag.
    first = tmp_path / "first"
    assert main(_isbi_args(isbi_root, first, "--epochs", "1", "--max-steps", "1")) == 0
    capsys.readouterr()
    data = make_camvid(tmp_path / "camvid")
    assert main(["--dataset", "camvid", "--data", str(data), "--out", str(tmp_path / "second"), *TINY,
                 "--epochs", "1", "--activation", "elu", "--init", str(first / "best.pt")]) == 2
    err = capsys.readouterr().err
    assert (f"--init {str(first / 'best.pt')!r} has 1 classes (cell), this data set 3 (c0, c1, c2); --init needs "
            "the same classes: give classes.json that run's classes, or train without --init") in err
    assert err.count("\n") == 1


def test_init_from_a_wider_checkpoint_narrows_it(isbi_root: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    wide = tmp_path / "wide"
    assert main(_isbi_args(isbi_root, wide, "--epochs", "1", "--max-steps", "1", "--base", "8")) == 0
    narrow = tmp_path / "narrow"
    assert main(_isbi_args(isbi_root, narrow, "--epochs", "1", "--max-steps", "1", "--base", "4",
                           "--init", str(wide / "best.pt"))) == 0
    assert "narrowed base 8 to base 4" in capsys.readouterr().out
    _, info = load_model(narrow / "best.pt")
    assert info.base == 4


def test_init_from_a_narrower_checkpoint_widens_it(isbi_root: Path, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    first = tmp_path / "first"
    # Without batch norm a step at a vanishing learning rate changes nothing (batch norm would update its
    # running statistics).
    assert main(_isbi_args(isbi_root, first, "--epochs", "1", "--max-steps", "1", "--no-batch-norm")) == 0
    wide = tmp_path / "wide"
    assert main(_isbi_args(isbi_root, wide, "--epochs", "1", "--max-steps", "1", "--lr", "1e-12", "--no-batch-norm",
                           "--init", str(first / "best.pt"), "--base", "8")) == 0
    assert "widened base 4 to base 8" in capsys.readouterr().out
    narrow_net, _ = load_model(first / "best.pt")
    wide_net, info = load_model(wide / "best.pt")
    assert info.base == 8
    x = torch.rand(1, 1, 32, 32)
    with torch.no_grad():
        want, have = narrow_net(x), wide_net(x)
    # the same function but for the noise that separates the repeated channels
    assert float((have - want).abs().max()) < 0.05 * float(want.abs().max())


@pytest.mark.skipif(not torch.backends.mkldnn.is_available() or not torch.ops.mkldnn._is_mkldnn_bf16_supported(),
                    reason="this CPU has no native bfloat16")
def test_bf16_autocast_learns_a_tiny_problem_as_well_as_fp32(isbi_root: Path, tmp_path: Path) -> None:
    errors = {}
    for amp in ("on", "off"):
        out = tmp_path / amp
        # ELU without batch norm: the network this test's loss figures were set for (it learns the tiny
        # problem within 12 epochs; the comparison is between precisions, not architectures).
        assert main(_isbi_args(isbi_root, out, "--epochs", "12", "--lr", "3e-3", "--augment", "none",
                               "--amp", amp, "--dropout", "0,0,0", "--activation", "elu", "--no-batch-norm")) == 0
        rows = list(csv.DictReader((out / "log.csv").open()))
        assert float(rows[-1]["train_loss"]) < 0.5 * float(rows[0]["train_loss"]), amp
        errors[amp] = float(rows[-1]["pixel_error"])
    assert errors["on"] <= errors["off"] + 0.02, errors


def test_amp_dtype_follows_the_device() -> None:
    from unetrt.export.train import amp_dtype_for, cpu_supports_bf16

    cpu = torch.device("cpu")
    assert amp_dtype_for(cpu, "off") is None
    assert amp_dtype_for(cpu, "auto") == (torch.bfloat16 if cpu_supports_bf16() else None)
    assert amp_dtype_for(torch.device("cuda"), "auto") == torch.float16


def test_ema_weights_are_validated_and_saved(isbi_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(_isbi_args(isbi_root, out, "--epochs", "2", "--max-steps", "2", "--ema", "0.5")) == 0
    last = load_checkpoint(out / "last.pt")
    assert set(last["ema"]) == set(last["model"])
    moved = [k for k in last["model"] if "running" not in k and "num_batches" not in k
             and not torch.equal(last["ema"][k], last["model"][k])]
    assert moved, "the average must differ from the current weights after steps of training"
    # moved after each of 2 epochs' 2 steps; the batch-norm statistics are taken as they are, not averaged
    assert last["ema_updates"] == 4
    for key in (k for k in last["model"] if "running" in k):
        torch.testing.assert_close(last["ema"][key], last["model"][key], msg=key)
    out2 = tmp_path / "resumed"
    assert main(_isbi_args(isbi_root, out2, "--epochs", "1", "--max-steps", "1", "--ema", "0.5")) == 0
    # the average is the model validated and kept: best.pt of the only epoch holds its weights
    best, average = load_checkpoint(out2 / "best.pt")["model"], load_checkpoint(out2 / "last.pt")["ema"]
    assert all(torch.equal(best[key], value) for key, value in average.items())
    saved = load_checkpoint(out2 / "last.pt")
    assert main(_isbi_args(isbi_root, out2, "--epochs", "2", "--max-steps", "1", "--ema", "0.5",
                           "--resume", str(out2 / "last.pt"))) == 0
    resumed = load_checkpoint(out2 / "last.pt")
    # The one update after resuming is the run's second: it starts from the saved average, with the warm-up decay
    # min(0.5, (1 + 1) / (10 + 1)) = 2/11 of the TensorFlow rule (a restarted count or average would give another).
    assert (saved["ema_updates"], resumed["ema_updates"]) == (1, 2)
    decay = 2 / 11
    for key in (k for k in resumed["ema"] if "running" not in k and "num_batches" not in k):
        torch.testing.assert_close(resumed["ema"][key], decay * saved["ema"][key] + (1 - decay) * resumed["model"][key],
                                   atol=1e-6, rtol=0)
    assert main(_isbi_args(isbi_root, tmp_path / "bad", "--epochs", "1", "--ema", "1.5")) == 2


def test_test_slices_are_left_out_of_training_and_validation(isbi_root: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from unetrt.export.data import isbi_split

    split = isbi_split(isbi_root, range(2, 4), range(4, 6))
    assert sorted(int(p.stem) for p, _ in split.train) == [0, 1]
    assert sorted(int(p.stem) for p, _ in split.val) == [2, 3]
    with pytest.raises(ValueError, match="overlap"):
        isbi_split(isbi_root, range(2, 4), range(3, 5))
    assert main(_isbi_args(isbi_root, tmp_path / "run", "--epochs", "1", "--val-slices", "2-3",
                           "--test-slices", "4-x")) == 2
    assert "--test-slices" in capsys.readouterr().err


def test_zoom_range_draws_log_uniform_factors_and_is_checked() -> None:
    from unetrt.export.augment import AugmentConfig, augment

    config = AugmentConfig(("scale",), zoom=(0.5, 2.0))
    label = np.zeros((32, 32), np.uint8)
    label[8:24, 8:24] = 1
    areas = [augment(label * 200, label, None, config, np.random.default_rng(seed), ignore_index=9)[1]
             for seed in range(40)]
    sizes = [int((a == 1).sum()) for a in areas]
    # zoom 0.5 shrinks the square's area to about 1/4, zoom 2 blows it up to fill most of the frame
    assert min(sizes) < 256 * 0.5 and max(sizes) > 256 * 2
    assert any((a == 9).any() for a in areas), "zooming out fills the border with the ignore index"
    with pytest.raises(ValueError, match="zoom"):
        AugmentConfig(("scale",), zoom=(2.0, 0.5))


def test_weight_average_warms_up_from_random_weights() -> None:
    from unetrt.export.train import WeightAverage

    start = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(start.weight)
    average = WeightAverage(start, 0.995)
    trained = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.ones_(trained.weight)
    for _ in range(20):
        average.update(trained)
    # a fixed 0.995 would leave 0.995**20 = 90% of the random start; the warm-up's decays 0.1, 0.18, ... leave
    # their product
    left = float(np.prod([min(0.995, (1 + n) / (10 + n)) for n in range(20)]))
    assert left < 1e-3
    assert average.model.weight.item() == pytest.approx(1 - left, abs=1e-6)
    assert average.updates == 20
    resumed = WeightAverage(trained, 0.995, updates=10**6)
    resumed.update(start)
    assert resumed.model.weight.item() == pytest.approx(0.995)


def test_a_resumed_run_trains_on_as_the_uninterrupted_one(isbi_root: Path, tmp_path: Path) -> None:
    # One training slice (1-5 are held out) and no augmentation: every epoch is the same single step, so a
    # resumed run reproduces the uninterrupted one only if it restored Adam's moments, the cosine schedule, the
    # weight average and its warm-up count. The single slice is also smaller than a batch (2) and must still train.
    common = ("--val-slices", "1-5", "--augment", "none", "--lr-schedule", "cosine", "--ema", "0.9", "--epochs", "3")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(_isbi_args(isbi_root, straight, *common)) == 0
    # a 0.6 ms budget: the first leg stops after epoch 1
    assert main(_isbi_args(isbi_root, resumed, *common, "--max-minutes", "1e-5")) == 0
    assert json.loads((resumed / "run.json").read_text())["epochs_run"] == 1
    assert main(_isbi_args(isbi_root, resumed, *common, "--resume", str(resumed / "last.pt"))) == 0
    rows = {run.name: json.loads((run / "history.json").read_text()) for run in (straight, resumed)}
    # cosine from 1e-3 to 1e-3 / 100 over 3 epochs, epoch e at 1e-5 + (1e-3 - 1e-5) * (1 + cos(pi * (e - 1) / 3)) / 2:
    # 1e-3, 7.525e-4, 2.575e-4
    for name, history in rows.items():
        assert [row["lr"] for row in history] == pytest.approx([1e-3, 7.525e-4, 2.575e-4], rel=1e-6), name
    assert [row["val_loss"] for row in rows["resumed"]] == pytest.approx([row["val_loss"] for row in rows["straight"]],
                                                                         rel=1e-5)
    want, have = load_checkpoint(straight / "last.pt"), load_checkpoint(resumed / "last.pt")
    assert want["ema_updates"] == have["ema_updates"] == 3  # one step an epoch
    for part in ("model", "ema"):
        for key, value in want[part].items():
            torch.testing.assert_close(have[part][key], value, msg=f"{part} {key}")
    # --monitor loss: best.pt is the epoch of the lowest validation loss, and run.json says so
    best_epoch = 1 + int(np.argmin([row["val_loss"] for row in rows["resumed"]]))
    assert load_checkpoint(resumed / "best.pt")["epoch"] == best_epoch
    assert json.loads((resumed / "run.json").read_text())["best_epoch"] == best_epoch


def test_a_resumed_run_draws_what_the_uninterrupted_one_would(isbi_root: Path, tmp_path: Path) -> None:
    # Four training slices in batches of 2 (shuffled), flips, jitter and dropout: every epoch draws from torch's
    # random state, so a resumed run matches the uninterrupted one only if it continues the saved state (reseeding
    # at the resume gives epoch 2 other orders, flips and dropout masks).
    common = ("--augment", "hflip,vflip,jitter", "--dropout", "0.2,0.2,0.2", "--epochs", "2")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(_isbi_args(isbi_root, straight, *common)) == 0
    assert main(_isbi_args(isbi_root, resumed, *common, "--max-minutes", "1e-5")) == 0  # stops after epoch 1
    assert main(_isbi_args(isbi_root, resumed, *common, "--resume", str(resumed / "last.pt"))) == 0
    want, have = load_checkpoint(straight / "last.pt")["model"], load_checkpoint(resumed / "last.pt")["model"]
    for key, value in want.items():
        torch.testing.assert_close(have[key], value, rtol=0, atol=0, msg=key)


def test_a_resume_with_another_cosine_length_is_refused(isbi_root: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    # Loading the schedule puts back its 2-epoch length: epochs 3 and 4 of a 4-epoch run would climb back to 1e-3.
    out = tmp_path / "run"
    cosine = ("--lr-schedule", "cosine", "--max-steps", "1")
    assert main(_isbi_args(isbi_root, out, *cosine, "--epochs", "2")) == 0
    before = (out / "last.pt").read_bytes()
    capsys.readouterr()
    assert main(_isbi_args(isbi_root, out, *cosine, "--epochs", "4", "--resume", str(out / "last.pt"))) == 2
    err = capsys.readouterr().err
    assert "with --epochs 4: its cosine schedule runs over 2 epochs; resume with --epochs 2" in err
    assert err.count("\n") == 1 and (out / "last.pt").read_bytes() == before  # one line, nothing trained


@pytest.mark.parametrize(("first", "again", "words"), [
    # Without batch norm the saved weights did not load: a traceback of state_dict keys.
    ((), ("--no-batch-norm",), "its batch_norm is True, this run's is False"),
    # A resume that forgot --size trained on at the slices' own size and saved a last.pt stating no working size.
    (("--size", "32x32"), (), "its working_size is (32, 32), this run's is None"),
])
def test_a_resume_with_another_network_or_working_size_is_refused(
        first: tuple[str, ...], again: tuple[str, ...], words: str, isbi_root: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(_isbi_args(isbi_root, out, "--epochs", "2", "--max-steps", "1", "--max-minutes", "1e-5",
                           *first)) == 0
    before = (out / "last.pt").read_bytes()
    capsys.readouterr()
    assert main(_isbi_args(isbi_root, out, "--epochs", "2", "--max-steps", "1", *again,
                           "--resume", str(out / "last.pt"))) == 2
    err = capsys.readouterr().err
    assert f"cannot resume from {str(out / 'last.pt')!r}: {words}; resume with that run's options" in err
    assert err.count("\n") == 1 and (out / "last.pt").read_bytes() == before  # one line, nothing trained


def test_patience_stops_on_the_epoch_it_runs_out_across_a_resume(isbi_root: Path, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # Without batch norm, steps of 1e-30 leave every weight as it was: the validation loss is exactly the same
    # every epoch, so epoch 1 is the best and every later one is stale.
    out = tmp_path / "run"
    flat = ("--no-batch-norm", "--lr", "1e-30", "--max-steps", "1", "--patience", "2")
    assert main(_isbi_args(isbi_root, out, *flat, "--epochs", "2")) == 0  # one stale epoch so far
    capsys.readouterr()
    assert main(_isbi_args(isbi_root, out, *flat, "--epochs", "10", "--resume", str(out / "last.pt"))) == 0
    summary = json.loads((out / "run.json").read_text())
    # epoch 3 is the second stale epoch in a row: the run stops after it
    assert summary["epochs_run"] == 3 and summary["best_epoch"] == 1
    assert load_checkpoint(out / "best.pt")["epoch"] == 1
    assert "has not improved for 2 epochs" in capsys.readouterr().out


def test_plateau_halves_the_rate_after_half_the_patience_in_stale_epochs() -> None:
    from unetrt.export.train import _scheduler

    args = build_parser().parse_args(["--dataset", "isbi", "--data", "x", "--lr-schedule", "plateau",
                                      "--patience", "4"])
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=args.lr)
    scheduler = _scheduler(optimizer, args)
    rates = []
    for _ in range(5):
        rates.append(optimizer.param_groups[0]["lr"])
        scheduler.step(1.0)
    # the first score is the best; stale epochs 2, 3 and 4 are more than 4 // 2, so epoch 5 runs at half the rate
    assert rates == [1e-3] * 4 + [5e-4]


def test_plateau_counts_as_stale_what_early_stopping_does_for_a_score_to_maximise() -> None:
    from unetrt.export.train import _scheduler

    # --monitor metric on a multi-class model steps the schedule with -mean IoU. PyTorch's relative threshold
    # scales a negative best towards 0, so an IoU 0.00003 below the best (-0.49997 < -0.5 * 0.9999 = -0.49995)
    # counted as an improvement and the rate never halved, while early stopping counted those epochs stale.
    args = build_parser().parse_args(["--dataset", "camvid", "--data", "x", "--lr-schedule", "plateau",
                                      "--patience", "4", "--monitor", "metric"])
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=args.lr)
    scheduler = _scheduler(optimizer, args)
    rates = []
    for score in (-0.5, -0.49997, -0.49997, -0.49997, -0.49997):
        rates.append(optimizer.param_groups[0]["lr"])
        scheduler.step(score)
    # stale epochs 2, 3 and 4 are more than 4 // 2: epoch 5 runs at half the rate
    assert rates == [1e-3] * 4 + [5e-4]


def test_time_budget_is_minutes_of_training(isbi_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A clock that advances 10 s a reading: the run reads it once at its start and three times an epoch (start,
    # duration, budget), so the budget check after epoch e sees 30 * e s.
    ticks = itertools.count(0.0, 10.0)
    monkeypatch.setattr("unetrt.export.train.time", SimpleNamespace(perf_counter=lambda: next(ticks)))
    out = tmp_path / "run"
    assert main(_isbi_args(isbi_root, out, "--epochs", "5", "--max-steps", "1", "--max-minutes", "1")) == 0
    # 30 s and 60 s are within the minute, 90 s is past it: the third epoch is the last
    assert json.loads((out / "run.json").read_text())["epochs_run"] == 3


def test_threads_sets_torchs_cpu_threads(isbi_root: Path, tmp_path: Path) -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert main(_isbi_args(isbi_root, tmp_path / "run", "--epochs", "1", "--max-steps", "1",
                               "--threads", "1")) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(not torch.backends.mkldnn.is_available() or not torch.ops.mkldnn._is_mkldnn_bf16_supported(),
                    reason="this CPU has no native bfloat16")
def test_amp_on_trains_in_bfloat16(isbi_root: Path, tmp_path: Path) -> None:
    # Same seed and data: only the precision of the step differs, and bfloat16 rounds the activations.
    digests = {}
    for amp in ("on", "off"):
        assert main(_isbi_args(isbi_root, tmp_path / amp, "--epochs", "1", "--max-steps", "1", "--amp", amp)) == 0
        digests[amp] = weights_digest(load_model(tmp_path / amp / "last.pt")[0])
    assert digests["on"] != digests["off"]


def test_targets_are_cropped_to_the_centre_the_valid_output_covers() -> None:
    from unetrt.export.train import _fit_to_output

    targets = torch.arange(36).view(1, 6, 6)
    (fitted,) = _fit_to_output(torch.zeros(1, 2, 2, 2), targets)
    # 2x2 logits of a 6x6 input lose 2 pixels on every side: they cover rows and columns 2-3 (6 * row + column)
    assert fitted.tolist() == [[[14, 15], [20, 21]]]


def test_train_loss_is_the_mean_per_sample_as_the_validation_loss(tmp_path: Path) -> None:
    # Frozen weights (no batch norm, steps of 1e-30) and a val/ that is a copy of train/: the epoch's training loss
    # is the validation loss of the same samples. Unweighted CE over equal-size images averages the same however
    # the shuffled batches group them.
    data = make_camvid(tmp_path / "camvid")
    for part in ("", "annot"):
        shutil.rmtree(data / f"val{part}")
        shutil.copytree(data / f"train{part}", data / f"val{part}")
    out = tmp_path / "run"
    assert main(["--dataset", "camvid", "--data", str(data), "--out", str(out), *TINY, "--epochs", "1",
                 "--no-batch-norm", "--lr", "1e-30", "--augment", "none", "--class-weights", "none"]) == 0
    (row,) = json.loads((out / "history.json").read_text())
    assert row["train_loss"] == pytest.approx(row["val_loss"], rel=1e-5)
