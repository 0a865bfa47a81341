"""Damaged or wrong model files: one line naming the file and what is wrong, from the API and every command."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from unetrt.benchmarks.bench import main as bench_main
from unetrt.evaluate import main as eval_main
from unetrt.segmenter import Segmenter
from unetrt.stream.cli import main as stream_main


def _truncated_onnx(folder: Path, tiny: dict[str, Path]) -> Path:
    data = tiny["onnx"].read_bytes()
    path = folder / "truncated.onnx"
    path.write_bytes(data[: len(data) * 2 // 3])
    return path


def _random_onnx(folder: Path, tiny: dict[str, Path]) -> Path:
    path = folder / "random.onnx"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return path


def _empty_onnx(folder: Path, tiny: dict[str, Path]) -> Path:
    path = folder / "empty.onnx"
    path.write_bytes(b"")
    return path


def _text_pt(folder: Path, tiny: dict[str, Path]) -> Path:
    path = folder / "model.pt"
    path.write_text("these are my notes, not a checkpoint\n")
    return path


def _truncated_pt(folder: Path, tiny: dict[str, Path]) -> Path:
    data = tiny["pt"].read_bytes()
    path = folder / "truncated.pt"
    path.write_bytes(data[: len(data) // 2])
    return path


# (how to make the file, words the one line must contain)
BAD_FILES: list[tuple[Callable[[Path, dict[str, Path]], Path], str]] = [
    (_truncated_onnx, "truncated, damaged or not ONNX"),
    (_random_onnx, "truncated, damaged or not ONNX"),
    (_empty_onnx, "No graph was found"),
    (_text_pt, "it starts with b'thes'"),
    (_truncated_pt, "damaged or truncated"),
]
IDS = ["truncated-onnx", "random-onnx", "empty-onnx", "text-pt", "truncated-pt"]


@pytest.mark.parametrize(("make", "words"), BAD_FILES, ids=IDS)
def test_segmenter_raises_one_line_value_error(make: Callable[[Path, dict[str, Path]], Path], words: str,
                                               tmp_path: Path, tiny_model_files: dict[str, Path]) -> None:
    path = make(tmp_path, tiny_model_files)
    if path.suffix == ".pt":
        pytest.importorskip("torch")  # without it a .pt is refused as needing torch, whatever it holds
    with pytest.raises(ValueError) as caught:
        Segmenter(path)
    message = str(caught.value)
    assert "\n" not in message
    assert repr(str(path)) in message and "is not a valid" in message and words in message


def _assert_one_error_line(err: str, path: Path, words: str) -> None:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error:") and str(path) in lines[0] and words in lines[0], lines[0]


@pytest.mark.parametrize(("make", "words"), BAD_FILES, ids=IDS)
def test_commands_exit_2_with_one_line(make: Callable[[Path, dict[str, Path]], Path], words: str, tmp_path: Path,
                                       tiny_model_files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    path = make(tmp_path, tiny_model_files)
    if path.suffix == ".pt":
        pytest.importorskip("torch")
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    commands = {
        "unet-eval": lambda: eval_main(["--model", str(path), "--images", str(images), "--labels", str(labels)]),
        "unet-stream": lambda: stream_main(["sample", "--model", str(path), "--headless"]),
        "unet-bench": lambda: bench_main(["--engine", str(path), "--shape", "64x64", "--warmup", "1",
                                          "--iterations", "1", "--trials", "1"]),
    }
    for name, command in commands.items():
        capsys.readouterr()
        assert command() == 2, name
        _assert_one_error_line(capsys.readouterr().err, path, words)


def test_checkpoint_with_weights_of_another_architecture(tmp_path: Path, tiny_model_files: dict[str, Path]) -> None:
    torch = pytest.importorskip("torch")
    data = torch.load(tiny_model_files["pt"], weights_only=True)
    data["info"]["base"] = 8  # the stored tensors are base 4
    path = tmp_path / "mismatch.pt"
    torch.save(data, path)
    with pytest.raises(ValueError, match="weights do not fit the architecture") as caught:
        Segmenter(path)
    assert "\n" not in str(caught.value)
