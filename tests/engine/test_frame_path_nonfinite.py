"""A network whose scores are NaN or infinite never gives a mask in silence: every backend the tests run (ONNX Runtime,
OpenVINO and torch on the CPU; the fake TensorRT with the emulated CUDA kernels and the fake GPU's CUDA graphs) ends
in :class:`unetrt.NonFiniteScoresError`, naming exactly how many pixels of the frame the finish kernels counted.

The networks produce NaN and infinities for real, per pixel: Log of a negative input (NaN), Exp of a large one (+inf,
an FP16 overflow's first symptom) and its negation (-inf) (tests/nonfinite_models.py); and one finite at FP32 whose
activations pass 65504 between two layers, which overflows only on an FP16 engine (the fake TensorRT computes FP16
engines in FP16)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import tiny_info
from fakes.cuda import FakeGpu, install_fake_gpu
from fakes.kernels import FakeKernels
from fakes.tensorrt import install_fake_tensorrt, write_plan_from_onnx
from nonfinite_models import (
    BAD,
    GOOD,
    GOOD_FP16,
    KINDS,
    frame_with_bad_pixels,
    write_fp16_overflow_onnx,
    write_nonfinite_onnx,
)

import unetrt
from unetrt import _tiling, _tiling_emu
from unetrt.cuda_device import CudaDevice
from unetrt.frame_path import FramePath, NonFiniteScoresError
from unetrt.segmenter import Segmenter
from unetrt.tiling import plan_tiles, plan_whole

OPENVINO = pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="OpenVINO is not installed")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, int], Path]:
    pytest.importorskip("onnx")
    folder = tmp_path_factory.mktemp("nonfinite")
    return {(kind, classes): write_nonfinite_onnx(folder / f"{kind.replace('+', 'pos').replace('-', 'neg')}"
                                                  f"_{classes}.onnx", kind, classes)
            for kind in KINDS for classes in (1, 3)}


def test_error_is_a_value_error_exported_from_unetrt() -> None:
    assert unetrt.NonFiniteScoresError is NonFiniteScoresError and issubclass(NonFiniteScoresError, ValueError)
    assert "NonFiniteScoresError" in unetrt.__all__
    message = str(NonFiniteScoresError([0, 7, 0], 100))
    assert message.startswith("the network gave NaN or infinite scores at 7 of 100 pixels of frame 1 of this call's 3")
    assert "65504" in message and "--precision fp32" in message and "precision='fp32'" in message
    assert "\n" not in message


@pytest.mark.parametrize(("precision", "says", "not_said"), [
    ("fp16", ["ran at FP16", "65504", "--precision fp32"], []),
    ("bf16", ["ran at BF16", "--precision fp32"], ["65504"]),
    ("int8", ["ran at INT8", "calibration", "--precision fp16 or fp32"], ["65504"]),
    ("fp32", ["ran at FP32", "check the model"], ["65504", "--precision fp32"]),
])
def test_the_line_names_the_cause_and_fix_of_the_precision_the_network_ran_at(precision: str, says: list[str],
                                                                              not_said: list[str]) -> None:
    message = str(NonFiniteScoresError([3], 100, precision))
    assert message.startswith("the network gave NaN or infinite scores at 3 of 100 pixels of this frame (")
    assert all(words in message for words in says) and not any(words in message for words in not_said)
    assert "\n" not in message


def test_segment_names_the_precision_its_backend_ran_at(models: dict[tuple[str, int], Path]) -> None:
    # An FP32 network that gives NaN: running it "at FP32" is no fix, which the line must not send the user to.
    frame, bad = frame_with_bad_pixels("nan", (20, 24), seed=5)
    with Segmenter(models["nan", 3], backend="onnxruntime") as seg:
        with pytest.raises(NonFiniteScoresError, match=r"\(the network ran at FP32, so no reduced precision") as error:
            seg.segment(frame)
        assert error.value.precision == "fp32"
        with pytest.raises(NonFiniteScoresError, match=r"ran at FP32") as error:
            seg.segment_batch([frame, np.full((10, 12, 3), GOOD, np.uint8), frame])
        assert error.value.counts == [bad, 0, bad]


@pytest.mark.parametrize("backend", ["onnxruntime", pytest.param("openvino", marks=OPENVINO)])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("classes", [3, 1], ids=["multi-class", "binary"])
@pytest.mark.parametrize("probabilities", [False, True], ids=["mask", "probabilities"])
def test_segment_refuses_a_frame_with_nonfinite_scores(models: dict[tuple[str, int], Path], backend: str,
                                                       kind: str, classes: int, probabilities: bool) -> None:
    frame, bad = frame_with_bad_pixels(kind, (37, 53), seed=classes)
    with Segmenter(models[kind, classes], backend=backend, probabilities=probabilities, cleanup=None) as seg:
        with pytest.raises(NonFiniteScoresError, match=rf"at {bad} of {37 * 53} pixels of this frame \(") as error:
            seg.segment(frame)
        assert error.value.counts == [bad]
        # The next good frame goes through: nothing of the refused one stays behind.
        clean = seg.segment(np.full((37, 53, 3), GOOD, np.uint8))
    assert clean.mask.shape == (37, 53)


def test_minus_infinity_in_a_losing_class_is_no_error(models: dict[tuple[str, int], Path]) -> None:
    """A head that rules a class out with -inf gives a mask, the class never chosen there, its probability 0."""
    frame = np.full((24, 32, 3), GOOD, np.uint8)
    frame[5:9, 5:9, 0] = BAD["-inf"]  # blue: the model's class 2 is -inf there (BGR frame, RGB model)
    with Segmenter(models["-inf", 3], backend="onnxruntime", probabilities=True) as seg:
        result = seg.segment(frame)
    assert result.probabilities is not None and np.isfinite(result.probabilities).all()
    assert (result.mask[5:9, 5:9] != 2).all() and (result.probabilities[2, 5:9, 5:9] == 0).all()


@pytest.mark.parametrize("kind", KINDS)
def test_segment_batch_names_the_frames_and_their_counts(models: dict[tuple[str, int], Path], kind: str) -> None:
    first, bad_first = frame_with_bad_pixels(kind, (40, 48), seed=1)
    third, bad_third = frame_with_bad_pixels(kind, (40, 48), seed=3, share=0.1)
    good = np.full((40, 48, 3), GOOD, np.uint8)
    with Segmenter(models[kind, 3], backend="onnxruntime", probabilities=True) as seg:
        with pytest.raises(NonFiniteScoresError, match=r"of frames 0, 2 of this call's 4") as error:
            seg.segment_batch([first, good, third, good])
        assert error.value.counts == [bad_first, 0, bad_third, 0]
        with pytest.raises(NonFiniteScoresError, match=rf"at {bad_third} of {40 * 48} pixels of frame 1 of this "
                                                       r"call's 2"):
            seg.segment_batch([good, third])


def test_segment_batch_of_several_sizes_names_the_frame_by_its_place_in_the_call(
        models: dict[tuple[str, int], Path]) -> None:
    """Frames of several sizes go through the network in size groups; the error names the caller's index."""
    bad, count = frame_with_bad_pixels("nan", (30, 20), seed=4)
    good = np.full((40, 48, 3), GOOD, np.uint8)
    with Segmenter(models["nan", 3], backend="onnxruntime") as seg:
        with pytest.raises(NonFiniteScoresError, match=rf"at {count} of 600 pixels of frame 2 of this call's 3") \
                as error:
            seg.segment_batch([good, good, bad])
        assert error.value.counts == [0, 0, count]


def test_warm_up_on_a_blank_frame_that_gives_nan_does_not_refuse_the_model(
        models: dict[tuple[str, int], Path]) -> None:
    """The warm-up's blank frame (Log of its normalised -2 is NaN) only compiles the working size's shape: the
    segmenter opens, and real frames are checked."""
    with Segmenter(models["nan", 3], backend="onnxruntime", working_size=(32, 24)) as seg:
        assert seg.segment(np.full((48, 64, 3), GOOD, np.uint8)).mask.shape == (48, 64)
        with pytest.raises(NonFiniteScoresError, match=r"of 3072 pixels of this frame"):
            seg.segment(frame_with_bad_pixels("nan", (48, 64), seed=2)[0])


@pytest.mark.parametrize("blend", ["gaussian", "crop"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("classes", [3, 1], ids=["multi-class", "binary"])
def test_tiled_frames_count_after_stitching(models: dict[tuple[str, int], Path], blend: str, kind: str,
                                            classes: int) -> None:
    frame, bad = frame_with_bad_pixels(kind, (70, 90), seed=5)
    with Segmenter(models[kind, classes], backend="onnxruntime", tile=32, blend=blend, cleanup=None) as seg:
        assert seg.tile_grid(70, 90).count > 1
        with pytest.raises(NonFiniteScoresError, match=rf"at {bad} of {70 * 90} pixels"):
            seg.segment(frame)


def test_tiled_frames_of_a_batch_are_each_counted_as_their_own(models: dict[tuple[str, int], Path]) -> None:
    """A batch of tiled frames is stitched and finished frame by frame: each frame's count is its own, so the error
    names the bad frame of the call (here the second and the fourth), not the first."""
    bad_second, count_second = frame_with_bad_pixels("nan", (70, 90), seed=6)
    bad_fourth, count_fourth = frame_with_bad_pixels("nan", (70, 90), seed=7, share=0.05)
    good = np.full((70, 90, 3), GOOD, np.uint8)
    with Segmenter(models["nan", 3], backend="onnxruntime", tile=32, cleanup=None) as seg:
        assert seg.tile_grid(70, 90).count > 1
        with pytest.raises(NonFiniteScoresError, match=r"of frames 1, 3 of this call's 4") as error:
            seg.segment_batch([good, bad_second, good, bad_fourth])
    assert error.value.counts == [0, count_second, 0, count_fourth]
    assert f"up to {max(count_second, count_fourth)} of {70 * 90} pixels" in str(error.value)


@pytest.mark.parametrize("classes", [3, 1], ids=["multi-class", "binary"])
def test_probabilities_at_the_working_size_do_not_skip_the_count(models: dict[tuple[str, int], Path],
                                                                 classes: int) -> None:
    """probabilities_size='working' finishes the mask and the probabilities in two passes (they differ in size): the
    mask's pass still counts, as many pixels as with the probabilities at the frame's size."""
    frame = np.full((48, 64, 3), GOOD, np.uint8)
    frame[10:30, 20:44, 1] = BAD["nan"]
    counts: dict[str, list[int]] = {}
    with Segmenter(models["nan", classes], backend="onnxruntime", working_size=(32, 24), cleanup=None) as seg:
        for size in ("frame", "working"):
            with pytest.raises(NonFiniteScoresError, match=r"of 3072 pixels of this frame") as error:
                seg.segment(frame, probabilities=True, probabilities_size=size)
            counts[size] = error.value.counts
    assert counts["working"] == counts["frame"] and counts["frame"][0] > 0


def test_torch_backend_refuses_a_network_with_a_nan_bias(tmp_path: Path) -> None:
    """A torch network broken for real: its last convolution's bias of class 1 is NaN, so every pixel is."""
    torch = pytest.importorskip("torch")

    from unetrt.export.checkpoint import build_model, save_checkpoint

    info = tiny_info()
    model = build_model(info).eval()
    last = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.out_channels == info.num_classes][-1]
    with torch.no_grad():
        last.bias[1] = float("nan")
    save_checkpoint(tmp_path / "broken.pt", model, info)
    with Segmenter(tmp_path / "broken.pt", backend="torch") as seg, \
            pytest.raises(NonFiniteScoresError, match=rf"at {24 * 32} of {24 * 32} pixels of this frame"):
        seg.segment(np.full((24, 32, 3), GOOD, np.uint8))


@pytest.fixture(params=["emulated", "cpu"])
def fake_trt(models: dict[tuple[str, int], Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
             request: pytest.FixtureRequest) -> Iterator[tuple[Any, FakeGpu, CudaDevice]]:
    """The fake TensorRT FP16 engine of the '+inf' network (whose Exp overflows as an FP16 engine does) on the fake
    GPU, its CudaDevice running the emulated CUDA kernels (or the CPU ones) on the fake device memory. Its good frames
    are of GOOD_FP16, which FP16 holds."""
    from unetrt.backends.tensorrt import TensorRTBackend

    gpu = install_fake_gpu(monkeypatch, FakeGpu(integrated=False))
    install_fake_tensorrt(monkeypatch, gpu)
    plan = write_plan_from_onnx(models["+inf", 3], tmp_path / "overflow.plan", gpu)
    backend = TensorRTBackend(plan)
    kernels = _tiling_emu if request.param == "emulated" else _tiling
    yield backend, gpu, CudaDevice(backend, kernels=FakeKernels(gpu, kernels))
    backend.close()


@pytest.mark.parametrize("tiled", [False, True], ids=["whole", "tiled"])
def test_gpu_path_counts_on_the_device_through_graph_replays(fake_trt: tuple[Any, FakeGpu, CudaDevice],
                                                              tiled: bool) -> None:
    """The counter is zeroed on the stream inside the recorded work: the replayed graph counts each frame afresh
    (a good frame after a bad one passes), and it comes back with the mask before the one host wait."""
    backend, gpu, device = fake_trt
    path = FramePath(device, backend.info)
    grid = plan_tiles((48, 64), 32, 8, "same", 3) if tiled else plan_whole(48, 64, "same", 3)
    good = np.full((48, 64, 3), GOOD_FP16, np.uint8)
    for seed in range(4):  # the first call runs, the second captures a graph, later ones replay it
        frame, bad = frame_with_bad_pixels("+inf", (48, 64), seed, good=GOOD_FP16)
        with pytest.raises(NonFiniteScoresError, match=rf"at {bad} of {48 * 64} pixels") as error:
            path.run([frame], grid, probabilities=seed % 2 == 1, batch_size=4)
        assert error.value.counts == [bad]
        assert path.run([good], grid, probabilities=seed % 2 == 1, batch_size=4)[0].mask.shape == (48, 64)
    assert "graph" in [entry[0] for entry in gpu.log]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_frame_with_nan_or_inf_pixels_is_refused_naming_the_count(models: dict[tuple[str, int], Path],
                                                                       dtype: Any) -> None:
    """The caller's bad input is not the network's: a float frame with NaN or infinite pixels is refused before it
    reaches the network, with the count of such pixels."""
    frame = np.full((20, 24, 3), 0.5, dtype)
    frame[3, 4, 1] = np.nan
    frame[5, 6] = np.inf
    frame[7, 8, 2] = -np.inf
    with Segmenter(models["nan", 3], backend="onnxruntime") as seg, \
            pytest.raises(ValueError, match=r"3 of 480 pixels are NaN or infinite; .*np\.nan_to_num") as error:
        seg.segment(frame)
    assert not isinstance(error.value, NonFiniteScoresError)


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_a_tensorrt_engine_on_the_gpu_path_names_its_precision_and_fix(models: dict[tuple[str, int], Path],
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path, precision: str) -> None:
    """A Jetson's default: a Segmenter on an FP16 engine whose scores overflow, frames on the GPU path. The line
    names FP16's overflow and FP32 as the fix (an INT8 engine: its calibration), which the plan's own precision
    decides, not a guess."""
    from plan_fixtures import install_fake_tensorrt_gpu, route_cuda_kernels_to

    gpu = FakeGpu()
    install_fake_tensorrt_gpu(monkeypatch, gpu)
    route_cuda_kernels_to(monkeypatch, gpu, _tiling_emu)
    plan = write_plan_from_onnx(models["+inf", 3], tmp_path / f"overflow_{precision}.plan", gpu, precision=precision)
    frame, bad = frame_with_bad_pixels("+inf", (48, 64), seed=2, good=GOOD_FP16)
    with Segmenter(plan) as seg:
        assert isinstance(seg.device, CudaDevice)
        with pytest.raises(NonFiniteScoresError, match=rf"at {bad} of {48 * 64} pixels of this frame") as error:
            seg.segment(frame)
    message = str(error.value)
    if precision == "fp16":
        assert "(the network ran at FP16, which overflows" in message and "--precision fp32" in message
    else:
        assert "(the network ran at INT8, whose calibration" in message


@pytest.mark.parametrize("on_gpu", [False, True], ids=["host", "gpu"])
def test_threads_sharing_a_segmenter_each_get_their_own_answer(models: dict[tuple[str, int], Path],
                                                              monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                              on_gpu: bool) -> None:
    """Robot code calling one Segmenter from several threads: only the thread whose frame gives +inf gets the error,
    with its own count, from segment and segment_batch alike; the others get their masks (host path, and the GPU
    path of an FP16 engine, whose counter and graphs the calls share)."""
    import threading

    if on_gpu:
        from plan_fixtures import install_fake_tensorrt_gpu, route_cuda_kernels_to

        gpu = FakeGpu()
        install_fake_tensorrt_gpu(monkeypatch, gpu)
        route_cuda_kernels_to(monkeypatch, gpu, _tiling_emu)
        model: Path = write_plan_from_onnx(models["+inf", 3], tmp_path / "overflow.plan", gpu, precision="fp16")
    else:
        model = models["+inf", 3]
    good = np.full((48, 64, 3), GOOD_FP16, np.uint8)
    frame, bad = frame_with_bad_pixels("+inf", (48, 64), seed=3, good=GOOD_FP16)
    answers: dict[int, list[Any]] = {}

    def work(thread: int) -> None:
        got: list[Any] = []
        for call in range(6):
            mine = frame if thread == 0 and call % 2 == 0 else good
            for frames in ([mine], [good, mine]):
                try:
                    results = seg.segment_batch(frames) if len(frames) > 1 else [seg.segment(mine)]
                    got.append([r.mask.shape for r in results])
                except NonFiniteScoresError as error:
                    got.append(error.counts)
        answers[thread] = got

    with Segmenter(model) as seg:
        assert isinstance(seg.device, CudaDevice) == on_gpu
        threads = [threading.Thread(target=work, args=(t,)) for t in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    masks = [[(48, 64)], [(48, 64), (48, 64)]]
    for thread in range(3):
        expected = [[bad] if thread == 0 and call % 2 == 0 and len(batch) == 1 else
                    [0, bad] if thread == 0 and call % 2 == 0 else batch
                    for call in range(6) for batch in masks]
        assert answers[thread] == expected, thread


@pytest.mark.parametrize("version", ["10.3.0", "11.4.0"])
def test_an_fp16_engine_that_overflows_between_layers_is_refused_and_fp32_gives_the_mask(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, version: str) -> None:
    """The documented case end to end on a Jetson: a network of one's own, finite at FP32, whose activations pass
    65504 only between its two layers. The FP16 engine a Segmenter builds by default refuses a frame that overflows
    it, naming FP16's overflow and --precision fp32 (frames in FP16's range still get their mask); the fix the line
    names, Segmenter(..., precision='fp32'), builds an FP32 engine whose mask is the CPU's FP32 mask. Frames on the
    GPU path (the emulated CUDA kernels and the fake TensorRT's FP16 kernels). TensorRT 10 builds FP16 with its
    FP16 flag, TensorRT 11 from the graph converted to FP16 (unetrt.export.fp16): both overflow."""
    from plan_fixtures import install_fake_gpu_machine

    if version.startswith("11."):
        pytest.importorskip("onnxconverter_common")
    install_fake_gpu_machine(monkeypatch, _tiling_emu, tmp_path / "engines", version=version)
    model = write_fp16_overflow_onnx(tmp_path / "mine.onnx")
    frame, bad = frame_with_bad_pixels("+inf", (48, 64), seed=4)
    # Channels 1/64 of the range apart (each class wins somewhere) and inside FP16's range after the scaling.
    clean = np.random.default_rng(4).integers(30, 225, (48, 64, 3)).astype(np.uint8)
    with Segmenter(model, backend="onnxruntime", precision="fp32", device="cpu") as reference:
        expected = {"frame": reference.segment(frame).mask, "clean": reference.segment(clean).mask}
    with Segmenter(model) as seg:
        assert (seg.backend.name, seg.backend.precision) == ("tensorrt", "fp16")
        assert isinstance(seg.device, CudaDevice)
        with pytest.raises(NonFiniteScoresError, match=rf"at {bad} of {48 * 64} pixels of this frame") as error:
            seg.segment(frame)
        np.testing.assert_array_equal(seg.segment(clean).mask, expected["clean"])
    assert error.value.precision == "fp16" and error.value.counts == [bad]
    assert "(the network ran at FP16, which overflows" in str(error.value) and "--precision fp32" in str(error.value)
    with Segmenter(model, precision="fp32") as seg:
        assert (seg.backend.name, seg.backend.precision) == ("tensorrt", "fp32")
        assert isinstance(seg.device, CudaDevice)
        np.testing.assert_array_equal(seg.segment(frame).mask, expected["frame"])
        np.testing.assert_array_equal(seg.segment(clean).mask, expected["clean"])
    assert len(list((tmp_path / "engines").glob("*.plan"))) == 2  # the FP32 engine is cached beside the FP16 one
