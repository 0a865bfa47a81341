"""Convolution FLOPs counted from the ONNX graph agree with the network's own layers."""

from __future__ import annotations

from pathlib import Path

import pytest

from unetrt.benchmarks.flops import conv_flops, flops_per_image


def _flops_from_torch(pt_path: Path, height: int, width: int) -> int:
    torch = pytest.importorskip("torch")
    from unetrt.export.checkpoint import load_model

    model, info = load_model(pt_path)
    total = 0

    def count(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        kernel = module.kernel_size[0] * module.kernel_size[1]
        if isinstance(module, torch.nn.ConvTranspose2d):
            total += 2 * inputs[0].numel() * (module.out_channels // module.groups) * kernel
        else:
            total += 2 * output.numel() * (module.in_channels // module.groups) * kernel

    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
            module.register_forward_hook(count)
    with torch.inference_mode():
        model(torch.zeros(1, info.in_channels, height, width))
    return total


@pytest.mark.parametrize("hw", [(32, 32), (16, 48)])
def test_counts_match_the_pytorch_layers(tiny_model_files: dict[str, Path], hw: tuple[int, int]) -> None:
    expected = _flops_from_torch(tiny_model_files["pt"], *hw)
    assert expected > 0
    assert flops_per_image(tiny_model_files["onnx"], 3, *hw) == expected


def test_flops_scale_with_batch_and_area(tiny_model_files: dict[str, Path]) -> None:
    one = conv_flops(tiny_model_files["onnx"], (1, 3, 32, 32))
    assert conv_flops(tiny_model_files["onnx"], (3, 3, 32, 32)) == 3 * one
    assert conv_flops(tiny_model_files["onnx"], (1, 3, 64, 64)) == 4 * one


def test_wrong_rank_is_refused(tiny_model_files: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="rank"):
        conv_flops(tiny_model_files["onnx"], (3, 32, 32))
