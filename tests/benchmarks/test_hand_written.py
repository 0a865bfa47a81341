"""The hand-written OpenVINO INT8 row of unet-bench: its masks agree with unetrt's, and it runs end to end only."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest
from conftest import tiny_info

from unetrt.benchmarks.bench import locate_model, main, select_variants
from unetrt.benchmarks.variants import HAND_WRITTEN, HandWrittenPipeline, HandWrittenRunner
from unetrt.bundled import bundled_model_path
from unetrt.datasets import list_images
from unetrt.geometry import nearest_legal_sizes
from unetrt.segmenter import Segmenter

pytest.importorskip("openvino")

FAST = ["--shape", "48x32", "--warmup", "1", "--iterations", "2", "--trials", "2", "--threads", "1"]


def test_masks_agree_with_unetrt_on_camvid_frames(shared_data: Path) -> None:
    frames = [cv2.imread(str(path)) for path in list_images(shared_data / "camvid" / "val")[:3]]
    with Segmenter("camvid", backend="openvino", precision="int8", threads=2) as segmenter:
        pipeline = HandWrittenPipeline(bundled_model_path("camvid", ".int8.onnx"), segmenter.info,
                                       frames[0].shape[:2], threads=2)
        try:
            for frame in frames:
                mask = pipeline.segment(frame)
                assert mask.shape == frame.shape[:2] and mask.dtype == np.uint8
                assert mask.max() < segmenter.info.num_classes
                # The same network on the same resized input: only the last resize differs (nearest labels
                # against unetrt's bilinear scores), along class borders.
                assert (mask == segmenter.segment(frame).mask).mean() > 0.97
        finally:
            pipeline.close()


def test_network_input_is_the_working_size_rounded_to_what_the_network_takes() -> None:
    from unetrt.model_file import read_model_file

    path = bundled_model_path("camvid", ".int8.onnx")
    info = read_model_file(path).info
    assert info.working_size is not None
    width, height = info.working_size
    legal = (nearest_legal_sizes(height)[1], nearest_legal_sizes(width)[1])
    assert HandWrittenPipeline(path, info, (360, 480), threads=1).input_hw == legal
    unsized = HandWrittenPipeline(path, dataclasses.replace(info, working_size=None), (100, 70), threads=1)
    assert unsized.input_hw == (112, 80)
    frame = np.zeros((100, 70, 3), np.uint8)
    assert unsized.segment(frame).shape == (100, 70)


def _with_int8_sibling(tiny_model_files: dict[str, Path], tiny_int8_onnx: Path, folder: Path) -> Path:
    shutil.copy(tiny_model_files["onnx"], folder / "tiny.onnx")
    return Path(shutil.copy(tiny_int8_onnx, folder / "tiny.int8.onnx"))


def test_row_runs_end_to_end_beside_unetrt(tiny_model_files: dict[str, Path], tiny_int8_onnx: Path,
                                           tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    int8 = _with_int8_sibling(tiny_model_files, tiny_int8_onnx, tmp_path)
    out = tmp_path / "e2e.json"
    code = main(["--engine", str(int8), "--backend", "openvino-int8", "--backend", HAND_WRITTEN, *FAST,
                 "--end-to-end", "--json", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    results = {r["variant"]: r for r in json.loads(out.read_text())["results"]}
    assert results[HAND_WRITTEN]["status"] == "ok"
    assert results[HAND_WRITTEN]["precision"] == "int8"
    assert results[HAND_WRITTEN]["model_file"] == str(int8)
    assert results[HAND_WRITTEN]["latency_ms"]["median"] > 0
    assert "| Hand-written OpenVINO INT8 (cv2 + numpy) | cpu |" in text
    hand, unetrt = results[HAND_WRITTEN], results["openvino-int8"]
    assert hand["speedup_vs_hand_written"] == pytest.approx(1.0)
    assert unetrt["speedup_vs_hand_written"] == pytest.approx(
        hand["latency_ms"]["median"] / unetrt["latency_ms"]["median"])
    assert "× hand-written" in text


def test_row_is_left_out_of_the_bare_modes(tiny_model_files: dict[str, Path], tiny_int8_onnx: Path,
                                           tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    int8 = _with_int8_sibling(tiny_model_files, tiny_int8_onnx, tmp_path)
    variants, _ = select_variants(["openvino"], locate_model(str(int8)), "fp32")
    assert HAND_WRITTEN in [v.key for v in variants]
    out = tmp_path / "bare.json"
    assert main(["--engine", str(int8), "--backend", "openvino", *FAST, "--json", str(out)]) == 0
    assert HAND_WRITTEN not in {r["variant"] for r in json.loads(out.read_text())["results"]}
    capsys.readouterr()
    assert main(["--engine", str(int8), "--backend", HAND_WRITTEN, *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "add --end-to-end" in err


def test_binary_gray_model_is_thresholded(shared_data: Path) -> None:
    path = list_images(shared_data / "isbi2012-em" / "images")[21]
    frame = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    with Segmenter("isbi", backend="openvino", precision="int8", threads=2, cleanup=None) as segmenter:
        pipeline = HandWrittenPipeline(bundled_model_path("isbi", ".int8.onnx"), segmenter.info, frame.shape[:2],
                                       threads=2)
        mask = pipeline.segment(frame)
        assert mask.shape == frame.shape and set(np.unique(mask)) == {0, 1}
        # No resize on either side (512x512 runs whole): the same pixels but for the padding's mirror border.
        assert (mask == segmenter.segment(frame).mask).mean() > 0.97


def test_the_pipeline_runs_on_the_threads_asked(tiny_int8_onnx: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The row reports --threads as its thread count: OpenVINO must be told it, not left at its default."""
    from unetrt.backends import openvino as openvino_backend
    from unetrt.model_file import read_model_file

    core = openvino_backend.shared_core()
    configs: list[dict[str, Any]] = []

    class RecordingCore:
        def read_model(self, path: str) -> Any:
            return core.read_model(path)

        def compile_model(self, network: Any, device: str, config: dict[str, Any]) -> Any:
            configs.append(config)
            return core.compile_model(network, device, config)

    monkeypatch.setattr(openvino_backend, "shared_core", RecordingCore)
    HandWrittenPipeline(tiny_int8_onnx, read_model_file(tiny_int8_onnx).info, (32, 48), threads=1).close()
    assert configs == [{"INFERENCE_NUM_THREADS": 1}]


def test_every_frame_of_a_batch_is_segmented() -> None:
    # The row's img/s counts the whole batch: each of its frames must go through the pipeline.
    seen: list[np.ndarray] = []
    pipeline = SimpleNamespace(device="cpu", threads=1, segment=seen.append)
    frames = [np.full((4, 4, 3), value, np.uint8) for value in (0, 1, 2)]
    HandWrittenRunner(pipeline, frames).step()  # type: ignore[arg-type]
    assert [int(frame[0, 0, 0]) for frame in seen] == [0, 1, 2]


def test_a_valid_padding_model_is_refused() -> None:
    # The recipe resizes frames straight to the network input: a 'valid' model's masks would lack their context.
    with pytest.raises(ValueError, match="'same'-padding models only"):
        HandWrittenPipeline(Path("unused.int8.onnx"), tiny_info(padding="valid"), (32, 32), threads=1)


def test_row_on_a_gpu_run_reports_no_device_memory(tiny_model_files: dict[str, Path], tiny_int8_onnx: Path,
                                                    tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`unet-bench --device cuda --end-to-end` on a Jetson: the hand-written row runs on the CPU, so it gets no
    device memory figure; on the integrated GPU its own host memory would read as device memory."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "engine"))
    from plan_fixtures import install_fake_jetson

    install_fake_jetson(monkeypatch, tmp_path / "engines")
    int8 = _with_int8_sibling(tiny_model_files, tiny_int8_onnx, tmp_path)
    out = tmp_path / "e2e.json"
    assert main(["--engine", str(int8), "--backend", HAND_WRITTEN, *FAST, "--end-to-end", "--device", "cuda",
                 "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["results"]
    assert row["status"] == "ok" and row["device"] == "cpu", row
    assert row["peak_device_mib"] is None and row["device_memory_note"] is None
