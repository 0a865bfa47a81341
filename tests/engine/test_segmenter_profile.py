"""Frames at and past both edges of a TensorRT engine's optimisation profile, through the fake Orin: a frame smaller
than the profile's minimum is mirror-padded up to it and its scores cropped back (it was refused), a larger one is
tiled, on the GPU path and the host path alike. An identity network shows the cropped answer is the frame itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import write_described_onnx
from fakes.cuda import FakeGpu
from fakes.tensorrt import write_plan_from_onnx
from onnx import TensorProto, helper
from plan_fixtures import install_fake_tensorrt_gpu, route_cuda_kernels_to

from unetrt.cuda_device import CudaDevice
from unetrt.device import HostDevice
from unetrt.segmenter import Segmenter

pytestmark = pytest.mark.gpu_contract
PROFILE = ((1, 3, 32, 48), (1, 3, 48, 64), (4, 3, 64, 96))  # min 32x48, max 64x96 (height x width)


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch) -> FakeGpu:
    from unetrt import _tiling  # type: ignore[attr-defined]

    gpu = FakeGpu()
    install_fake_tensorrt_gpu(monkeypatch, gpu)
    route_cuda_kernels_to(monkeypatch, gpu, _tiling)
    return gpu


@pytest.fixture
def identity_plan(gpu: FakeGpu, tmp_path: Path) -> Path:
    """An engine of an identity network (the tiny model's description: 3 channels in, 3 classes out) whose profile
    takes 32x48 to 64x96 images."""
    onnx_path = write_described_onnx(tmp_path / "identity.onnx", [helper.make_node("Identity", ["image"], ["logits"])],
                                     {"logits": TensorProto.FLOAT}, input_shape=("N", 3, "H", "W"))
    return write_plan_from_onnx(onnx_path, tmp_path / "identity.plan", gpu, profile=PROFILE)


def _softmax_of_frame(frame: np.ndarray) -> np.ndarray:
    """The identity network's probabilities: the softmax over the normalised RGB channels (mean 0.5, std 0.25)."""
    scores = ((frame[..., ::-1].astype(np.float32) / 255 - 0.5) / 0.25).transpose(2, 0, 1)
    exp = np.exp(scores - scores.max(axis=0))
    return exp / exp.sum(axis=0)


@pytest.mark.parametrize("size", [(20, 30), (1, 1), (31, 47), (32, 48), (10, 200), (150, 20), (64, 96), (65, 97)])
@pytest.mark.parametrize("device_path", ["auto", "host"])
def test_frames_past_either_edge_of_the_profile_give_the_frame_back(identity_plan: Path, size: tuple[int, int],
                                                                    device_path: str) -> None:
    """A frame smaller than the profile's minimum (20x30 against 32x48) was refused ("input shape 1x3x32x32 is
    outside the engine's optimisation profile ...; resize the frames to at least 48x32"); a robot's crop of its
    camera image is often that small. Mirror-padded up to the minimum and cropped back, the identity network gives
    the frame's own scores at every pixel, as a frame inside the profile does; one axis below the minimum and the
    other past the maximum (10x200, 150x20) is tiled along the long axis and padded along the short one."""
    rng = np.random.default_rng(size[0] * 1000 + size[1])
    frame = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    with Segmenter(identity_plan, probabilities=True, device_path=device_path, blend="crop") as segmenter:
        assert isinstance(segmenter.device, CudaDevice if device_path == "auto" else HostDevice)
        assert segmenter.backend.min_input_hw == (32, 48)  # type: ignore[attr-defined]
        result = segmenter.segment(frame)
        grid = segmenter.tile_grid(*size)
    assert grid.tile_hw[0] >= 32 and grid.tile_hw[1] >= 48 and grid.tile_hw[0] <= 64 and grid.tile_hw[1] <= 96
    expected = _softmax_of_frame(frame)
    assert result.probabilities is not None and result.probabilities.shape == (3, *size)
    np.testing.assert_allclose(result.probabilities, expected, rtol=1e-5, atol=1e-6)
    # Where one class clearly leads, the mask is its argmax (ties within float rounding may go either way).
    ordered = np.sort(expected, axis=0)
    clear = ordered[-1] - ordered[-2] > 1e-4
    assert np.array_equal(result.mask[clear], expected.argmax(axis=0)[clear])


def test_host_and_gpu_paths_agree_bit_for_bit_below_the_profile(identity_plan: Path) -> None:
    """The padding is the one data path's: the host and the GPU path give the same bits for a small frame."""
    frame = np.random.default_rng(7).integers(0, 256, (17, 23, 3), dtype=np.uint8)
    answers = []
    for device_path in ("auto", "host"):
        with Segmenter(identity_plan, probabilities=True, device_path=device_path) as segmenter:
            result = segmenter.segment(frame)
            answers.append((result.mask.tobytes(), result.probabilities.tobytes()))  # type: ignore[union-attr]
    assert answers[0] == answers[1]


def test_a_tile_below_the_profile_is_refused_in_one_line(identity_plan: Path) -> None:
    frame = np.zeros((40, 60, 3), np.uint8)
    with Segmenter(identity_plan, tile=16, overlap=0) as segmenter, \
            pytest.raises(ValueError, match=r"^tile \(16, 16\) is smaller than the smallest input this backend "
                                            r"accepts, \(32, 48\): give a larger tile$"):
        segmenter.segment(frame)


def test_a_small_frame_of_the_tiny_model_runs_on_its_engine(gpu: FakeGpu, tiny_model_files: dict[str, Path],
                                                            tmp_path: Path) -> None:
    """A real network (the tiny U-Net) on an engine of min 32x48: a 24x24 frame runs, and its mask is the one the
    network gives for the frame mirror-padded to 32x48 (ONNX Runtime on the same padded image)."""
    plan = write_plan_from_onnx(tiny_model_files["onnx"], tmp_path / "tiny.plan", gpu, profile=PROFILE)
    frame = np.random.default_rng(3).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    with Segmenter(plan) as on_engine:
        mask = on_engine.segment(frame).mask
    padded = np.pad(frame, ((0, 8), (0, 24), (0, 0)), mode="reflect")
    with Segmenter(tiny_model_files["onnx"], backend="onnxruntime", device="cpu", precision="fp32") as reference:
        expected = reference.segment(padded).mask[:24, :24]
    assert np.array_equal(mask, expected)



def test_a_tile_below_the_profile_on_one_axis_is_refused_in_one_line(identity_plan: Path) -> None:
    """A tile tall enough but too narrow for the profile (64 x 40 against a 32 x 48 minimum) is refused as a tile
    below the minimum on both axes is, naming the minimum, before TensorRT sees the shape."""
    frame = np.zeros((70, 100, 3), np.uint8)
    with Segmenter(identity_plan, tile=(64, 40), overlap=0) as segmenter, \
            pytest.raises(ValueError, match=r"^tile \(64, 40\) is smaller than the smallest input this backend "
                                            r"accepts, \(32, 48\): give a larger tile$"):
        segmenter.segment(frame)


@pytest.mark.parametrize("device_path", ["auto", "host"])
def test_a_tile_of_exactly_the_profile_minimum_runs(identity_plan: Path, device_path: str) -> None:
    """The smallest tile the profile takes (32 x 48) is legal: a 40 x 60 frame is tiled with it and the identity
    network gives the frame back."""
    frame = np.random.default_rng(11).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    with Segmenter(identity_plan, tile=(32, 48), overlap=0, probabilities=True, blend="crop",
                   device_path=device_path) as segmenter:
        result = segmenter.segment(frame)
        assert segmenter.tile_grid(40, 60).tile_hw == (32, 48)
    assert result.probabilities is not None
    np.testing.assert_allclose(result.probabilities, _softmax_of_frame(frame), rtol=1e-5, atol=1e-6)
