"""The bundled models: PyTorch and ONNX Runtime agree, and unet-eval reproduces the stated figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from unetrt.bundled import MODELS_DIR, bundled_model_names
from unetrt.datasets import list_images, read_image


@pytest.mark.parametrize("name", bundled_model_names())
def test_torch_and_onnxruntime_logits_agree(name: str, shared_data: Path) -> None:
    pytest.importorskip("torch")
    from unetrt.backends import open_backend
    from unetrt.frame_path import network_input

    with open_backend(name, "onnxruntime") as onnx_net, open_backend(name, "torch", device="cpu") as torch_net:
        info = onnx_net.info
        folder = shared_data / ("camvid/val" if name == "camvid" else "isbi2012-em/images")
        for path in list_images(folder)[::25]:
            batch = network_input([read_image(path, info.in_channels)], info)
            difference = np.abs(onnx_net.infer(batch) - torch_net.infer(batch)).max()
            assert difference <= 1e-4, f"{path.name}: max |logit difference| {difference:.2e}"


@pytest.mark.parametrize("name", bundled_model_names())
def test_unet_eval_reproduces_stated_validation_figures(name: str, shared_data: Path) -> None:
    from unetrt.evaluate import evaluate
    from unetrt.segmenter import Segmenter

    stated = json.loads((MODELS_DIR / f"{name}.json").read_text())
    with Segmenter(name) as segmenter:
        figures = evaluate(segmenter, shared_data / stated["images"], shared_data / stated["labels"],
                           stems=stated.get("stems"))
    for key, value in stated["validation"].items():
        # ONNX Runtime's CPU kernels differ in the last bits between processors; a handful of
        # pixels may flip, which moves a split-level figure by far less than this.
        assert figures[key] == pytest.approx(value, abs=5e-4), key
