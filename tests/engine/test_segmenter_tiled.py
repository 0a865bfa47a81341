"""Tiled inference inside Segmenter: equal to the untiled result away from tile seams, bounded memory."""

from __future__ import annotations

import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import tiny_info

from unetrt import segmenter as segmenter_module
from unetrt.device import HostDevice
from unetrt.frame_path import FramePath
from unetrt.geometry import valid_output_size
from unetrt.model_info import METADATA_KEY, ModelInfo
from unetrt.preprocessing import check_frame
from unetrt.segmenter import Segmenter
from unetrt.tiling import TileGrid, legal_tile_sizes, plan_tiles

# Measured receptive-field radius of tiny_info()'s depth-3 U-Net is 22 px; of the two-level graph below, 4 px.
TINY_UNET_RADIUS = 24
SMALL_GRAPH_RADIUS = 8
# Stated tolerance away from seams: masks agree on >= 99.9 % of pixels (argmax ties may flip on float noise),
# probabilities within 1e-4.
MASK_AGREEMENT = 0.999
PROBABILITY_TOLERANCE = 1e-4


def away_from_seams(grid: TileGrid, radius: int) -> np.ndarray:
    """H x W: pixels every covering tile sees with at least ``radius`` px of real context on each side.

    A tile edge on the image's first row or column counts as real context (the untiled network pads there
    too); the image's last ``radius`` rows and columns are excluded (untiled and tiled pad them differently).
    """
    axes = []
    for axis in range(2):
        size, tile = grid.image_hw[axis], grid.tile_hw[axis]
        good = np.arange(size) < size - radius
        for output_start in grid.axis_starts(axis):
            start = output_start - grid.margin[axis]
            covered = np.zeros(size, bool)
            covered[max(start, 0) : max(min(start + tile, size), 0)] = True
            p = np.arange(size)
            near = ((start > 0) & (p - start < radius)) | (start + tile - p <= radius)
            good &= ~(covered & near)
        axes.append(good)
    return axes[0][:, None] & axes[1][None, :]


def record_batches(seg: Segmenter) -> list[tuple[int, ...]]:
    """Wrap the backend's infer to record every batch shape it is given."""
    calls: list[tuple[int, ...]] = []
    original = seg.backend.infer

    def infer(batch: np.ndarray) -> np.ndarray:
        calls.append(batch.shape)
        return original(batch)

    seg.backend.infer = infer
    return calls


def _compare(tiled: object, untiled: object, region: np.ndarray) -> None:
    agreement = (tiled.mask == untiled.mask)[region].mean()  # type: ignore[attr-defined]
    assert agreement >= MASK_AGREEMENT, f"masks agree on only {agreement:.4%} away from seams"
    if tiled.probabilities is not None:  # type: ignore[attr-defined]
        diff = np.abs(tiled.probabilities - untiled.probabilities)[:, region].max()  # type: ignore[attr-defined]
        assert diff < PROBABILITY_TOLERANCE


@pytest.mark.parametrize("blend", ["crop", "gaussian", "linear"])
def test_tiled_equals_untiled_away_from_seams(tiny_model_files: dict[str, Path], blend: str) -> None:
    frame = np.random.default_rng(0).integers(0, 256, (190, 250, 3), dtype=np.uint8)
    with Segmenter(tiny_model_files["onnx"], probabilities=True) as plain, \
            Segmenter(tiny_model_files["onnx"], probabilities=True, tile=96, overlap=32, blend=blend) as tiled:
        grid = tiled.tile_grid(190, 250)
        assert grid is not None and grid.shape == (3, 4)
        region = away_from_seams(grid, TINY_UNET_RADIUS)
        assert region.mean() > 0.2
        result = tiled.segment(frame)
        _compare(result, plain.segment(frame), region)
    assert result.mask.shape == (190, 250) and result.probabilities.shape == (3, 190, 250)


def test_valid_model_tiles_with_context_margin_match_untiled(tmp_path: Path) -> None:
    """'valid' tiles carry the context margin and abut exactly, so tiling changes nothing anywhere."""
    torch = pytest.importorskip("torch")
    from unetrt.export.checkpoint import build_model
    from unetrt.export.onnx_export import export_onnx

    info = tiny_info(padding="valid")
    torch.manual_seed(0)
    path = export_onnx(build_model(info).eval(), info, tmp_path / "valid.onnx")
    # An output size that is a multiple of the pooling factor keeps tiles on the untiled pooling grid.
    tile = next(t for t in legal_tile_sizes(60, 200, "valid", 3) if valid_output_size(t, 3) % 4 == 0)
    frame = np.random.default_rng(1).integers(0, 256, (97, 131, 3), dtype=np.uint8)
    with Segmenter(path, probabilities=True) as plain, Segmenter(path, probabilities=True, tile=tile,
                                                                 blend="crop") as tiled:
        grid = tiled.tile_grid(97, 131)
        assert grid is not None and grid.count > 1 and grid.margin[0] > 0 and grid.overlap == (0, 0)
        _compare(tiled.segment(frame), plain.segment(frame), np.ones((97, 131), bool))
    with pytest.raises(ValueError, match="not legal"):
        Segmenter(path, tile=tile + 2)


def test_frames_larger_than_the_backend_accepts_are_tiled(tiny_model_files: dict[str, Path]) -> None:
    frame = np.random.default_rng(2).integers(0, 256, (200, 150, 3), dtype=np.uint8)
    with Segmenter(tiny_model_files["onnx"]) as seg:
        untiled = seg.segment(frame)
        seg.backend.max_input_hw = (96, 80)  # as a TensorRT engine's optimisation profile would
        seg.backend.max_batch = 2
        calls = record_batches(seg)
        tiled = seg.segment(frame)
        grid = seg.tile_grid(200, 150)
        assert seg.tile_grid(40, 40).count == 1  # small frames still go through whole
    assert grid is not None and grid.tile_hw == (96, 80) and grid.overlap == (8, 8)
    assert sum(shape[0] for shape in calls) == grid.count
    assert all(shape[0] <= 2 and shape[2:] == (96, 80) for shape in calls)
    _compare(tiled, untiled, away_from_seams(grid, TINY_UNET_RADIUS))


def test_a_backend_without_a_limit_tiles_only_frames_too_large_to_take_whole(
        tiny_model_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    with Segmenter(tiny_model_files["onnx"]) as seg:
        assert seg.backend.max_input_hw is None
        assert seg.tile_grid(4096, 4096).count == 1  # 16.8 megapixels: whole, as before
        grid = seg.tile_grid(4104, 4096)  # one legal step more: whole it would take 4.8 GB and up on isbi
        assert grid.tile_hw == (1024, 1024) and grid.count == 25
        assert seg.tile_grid(3000, 9000).tile_hw == (1024, 1024)
        # Tiled as TensorRT's default engine profile tiles it, so the answer is the explicit tile=1024's.
        monkeypatch.setattr(segmenter_module, "MAX_WHOLE_PIXELS", 400 * 400)
        frame = np.random.default_rng(3).integers(0, 256, (1100, 1300, 3), dtype=np.uint8)
        calls = record_batches(seg)
        automatic = seg.segment(frame, probabilities=True)
        assert calls and all(shape[2:] == (1024, 1024) for shape in calls)
    with Segmenter(tiny_model_files["onnx"], tile=1024) as explicit:
        expected = explicit.segment(frame, probabilities=True)
    np.testing.assert_array_equal(automatic.mask, expected.mask)
    assert automatic.probabilities is not None and expected.probabilities is not None
    np.testing.assert_array_equal(automatic.probabilities, expected.probabilities)


def test_a_frame_too_large_to_take_whole_keeps_an_engines_own_larger_tiles(tiny_model_files: dict[str, Path]) -> None:
    # The 1024-pixel tiles stand in for a limit only where the backend has none: an engine whose profile takes
    # 2048x2048 tiles an 8192x8192 slice in tiles of that size, not of 1024x1024.
    with Segmenter(tiny_model_files["onnx"]) as seg:
        seg.backend.max_input_hw = (2048, 2048)  # as a TensorRT engine's optimisation profile would
        grid = seg.tile_grid(8192, 8192)
    assert grid.tile_hw == (2048, 2048)


def test_tiling_applies_to_the_working_size_image(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from unetrt.export.checkpoint import build_model
    from unetrt.export.onnx_export import export_onnx

    info = tiny_info(working_size=(64, 40))
    torch.manual_seed(0)
    path = export_onnx(build_model(info).eval(), info, tmp_path / "w.onnx")
    frame = np.random.default_rng(3).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    with Segmenter(path, tile=32, probabilities=True) as seg:
        calls = record_batches(seg)
        result = seg.segment(frame)
    grid = seg.tile_grid(40, 64)
    assert grid is not None and grid.shape == (2, 3)
    assert sum(shape[0] for shape in calls) == 6 and all(shape[2:] == (32, 32) for shape in calls)
    assert result.mask.shape == (300, 400) and result.probabilities.shape == (3, 300, 400)


def test_the_frame_path_recipe_of_the_tiling_doc_gives_the_segmenters_result(tiny_model_files: dict[str, Path]) -> None:
    # docs/tiling.md promises the recipe (plan_tiles with align=info.size_multiple) gives Segmenter(tile=...)'s
    # result bit for bit. 101 x 71 puts the last tiles off the pooling grid when they end at the edge (101 - 32 and
    # 71 - 32 are no multiples of 4), so a recipe without align would not.
    frame = np.random.default_rng(9).integers(0, 256, (101, 71, 3), dtype=np.uint8)
    with Segmenter(tiny_model_files["onnx"], tile=32, overlap=8, cleanup=None) as seg:
        expected = seg.segment(frame, probabilities=True)
        info = seg.info
        path = FramePath(HostDevice(seg.backend.infer), info, blend="gaussian")
        grid = plan_tiles(path.work_hw(frame.shape[:2]), 32, overlap=8, padding=info.padding, depth=info.depth,
                          align=info.size_multiple)
        result = path.run([check_frame(frame)], grid, probabilities=True)[0]
    assert grid == seg.tile_grid(101, 71) and grid.shift != (0, 0)
    assert np.array_equal(result.mask, expected.mask)
    assert np.array_equal(result.probabilities, expected.probabilities)


def test_bad_tiling_settings_raise(tiny_model_files: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="blend must be"):
        Segmenter(tiny_model_files["onnx"], tile=64, blend="average")
    with pytest.raises(ValueError, match=r"overlap must be a whole number of pixels >= 0 .*got -1"):
        Segmenter(tiny_model_files["onnx"], tile=64, overlap=-1)
    with pytest.raises(ValueError, match="nearest legal sides: 60 or 64"):
        Segmenter(tiny_model_files["onnx"], tile=62)
    with Segmenter(tiny_model_files["onnx"], tile=64) as seg:
        seg.backend.max_input_hw = (32, 32)
        with pytest.raises(ValueError, match="exceeds the largest input"):
            seg.segment(np.zeros((80, 80, 3), np.uint8))


def small_segmentation_graph(path: Path) -> Path:
    """A two-level U-Net-shaped ONNX graph (conv, pool, conv, upsample, skip, 1x1 conv) with unetrt metadata:
    a real network through ONNX Runtime that is cheap enough to run over 12 megapixels in a unit test."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(4)

    def weight(name: str, *shape: int) -> Any:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.5).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Resize", ["r2", "", "scales"], ["u2"], mode="nearest"),
        helper.make_node("Concat", ["r1", "u2"], ["cat"], axis=1),
        helper.make_node("Conv", ["cat", "w3", "b3"], ["logits"]),
    ]
    initializers = [weight("w1", 4, 3, 3, 3), weight("b1", 4), weight("w2", 4, 4, 3, 3), weight("b2", 4),
                    weight("w3", 3, 8, 1, 1), weight("b3", 3),
                    numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")]
    graph = helper.make_graph(
        nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 3, "h", "w"])], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    info = ModelInfo(class_names=("a", "b", "c"), colors=((0, 0, 0), (255, 0, 0), (0, 255, 0)), depth=2, base=4,
                     mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), name="small")
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, info.to_json()
    onnx.save(model, path)
    return path


def test_large_frame_segments_in_bounded_memory(tmp_path: Path) -> None:
    """A 4000 x 3000 frame through Segmenter(tile=512): numpy memory stays near the result's own size, and the
    mask equals the untiled network's away from seams (checked on an interior window with enough context)."""
    path = small_segmentation_graph(tmp_path / "small.onnx")
    height, width, classes = 3000, 4000, 3
    frame = np.random.default_rng(5).integers(0, 256, (height, width, 3), dtype=np.uint8)
    with Segmenter(path, tile=512, overlap=64, threads=2) as seg:
        tracemalloc.start()
        try:
            mask = seg.segment(frame).mask
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        grid = seg.tile_grid(height, width)
        # Window [1000, 1512) x [1500, 2012) with 32 px of context; sides and offsets keep the pooling grid.
        context = seg.segment(frame[968:1544, 1468:2044]).mask[32:-32, 32:-32]
    assert mask.shape == (height, width) and mask.max() < classes
    # The result (K x H x W logits + H x W weights + mask) plus one batch of tiles, not a padded float copy of
    # the frame, its logits and probabilities as a whole-frame pass would need.
    result_bytes = (classes + 1) * height * width * 4 + height * width
    assert peak < result_bytes + 64 * 2**20, f"peak numpy memory {peak / 2**20:.0f} MiB"
    assert grid is not None and grid.shape == (7, 9)
    region = away_from_seams(grid, SMALL_GRAPH_RADIUS)[1000:1512, 1500:2012]
    assert region.mean() > 0.8
    assert (mask[1000:1512, 1500:2012] == context)[region].mean() >= MASK_AGREEMENT
