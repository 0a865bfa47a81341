"""Tiled frames through FramePath: identity networks prove that extract + stitch give back the frame (as MONAI's
sliding-window tests do), exactly for 'crop' and for 'valid' networks, to float rounding for the blends."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from conftest import tiny_info
from hypothesis import given, settings
from hypothesis import strategies as st

from unetrt.device import HostDevice
from unetrt.frame_path import FramePath
from unetrt.model_info import ModelInfo
from unetrt.tiling import TileGrid, legal_tile_sizes, plan_tiles, plan_whole


class StitchedScores(HostDevice):
    """The host device, keeping what the finish kernel turned into the mask: the stitched network outputs
    (divided by the blend weight) over the frame, one K x H x W array per frame."""

    def __init__(self, predictor: Any) -> None:
        super().__init__(predictor)
        self.scores: list[np.ndarray] = []

    def finish(self, scores: np.ndarray, mask: np.ndarray | None, probabilities: np.ndarray | None, *,
               rect: tuple[int, int, int, int], weight: np.ndarray | None, binary: bool,
               nonfinite: np.ndarray | None = None) -> None:
        super().finish(scores, mask, probabilities, rect=rect, weight=weight, binary=binary, nonfinite=nonfinite)
        y0, x0, height, width = rect  # the finish divided blended scores by their weight in place
        self.scores.append(scores[:, y0 : y0 + height, x0 : x0 + width].copy())


def stitched(frame: np.ndarray, info: ModelInfo, grid: TileGrid, predictor: Any, blend: str = "crop",
             batch_size: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """(stitched scores, mask) of one frame through FramePath on the recording host device."""
    device = StitchedScores(predictor)
    result = FramePath(device, info, blend).run([frame], grid, probabilities=False, batch_size=batch_size)[0]
    assert len(device.scores) == 1
    return device.scores[0], result.mask


def normalised(frame: np.ndarray) -> np.ndarray:
    """What the extract kernel makes of a uint8 frame for tiny_info (mean 0.5, std 0.25), RGB, C x H x W."""
    image = frame[..., ::-1] if frame.ndim == 3 else frame[..., None]
    return ((image.astype(np.float32) / 255 - 0.5) / 0.25).transpose(2, 0, 1)


def identity(batch: np.ndarray) -> np.ndarray:
    return batch.copy()


SIZES = st.tuples(st.integers(1, 90), st.integers(1, 90))


@settings(max_examples=40, deadline=None, derandomize=True)
@given(size=SIZES, tile=st.sampled_from([8, 16, 32]), overlap=st.integers(0, 7), batch=st.integers(1, 5),
       channels=st.sampled_from([1, 3]), blend=st.sampled_from(["crop", "gaussian", "linear"]))
def test_an_identity_network_gets_the_frame_back_through_any_tile_grid(size: tuple[int, int], tile: int,
                                                                       overlap: int, batch: int, channels: int,
                                                                       blend: str) -> None:
    rng = np.random.default_rng(size[0] * 97 + size[1])
    shape = size if channels == 1 else (*size, channels)
    frame = rng.integers(0, 256, shape, dtype=np.uint8)[:, ::-1]  # non-contiguous on purpose
    info = tiny_info(num_classes=channels, in_channels=channels)  # one class: a binary model
    scores, mask = stitched(frame, info, plan_tiles(size, tile, overlap, depth=3), identity, blend, batch)
    untiled, _ = stitched(frame, info, plan_whole(*size, "same", 3), identity)
    if blend == "crop":
        assert np.array_equal(scores, untiled)
        expected_mask = scores[0] > 0 if channels == 1 else scores.argmax(axis=0)
        assert np.array_equal(mask, expected_mask)
    else:
        np.testing.assert_allclose(scores, untiled, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(untiled, normalised(frame), rtol=1e-6, atol=1e-5)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(size=SIZES, tile_index=st.integers(0, 3), gray=st.booleans())
def test_an_identity_valid_network_gets_the_frame_back_exactly(size: tuple[int, int], tile_index: int,
                                                               gray: bool) -> None:
    """A 'valid' identity network drops its context margin; crop stitching gives back the frame exactly."""
    tile = legal_tile_sizes(30, 120, "valid", depth=3)[tile_index]
    grid = plan_tiles(size, tile, padding="valid", depth=3)
    my, mx = grid.margin

    def valid_identity(batch: np.ndarray) -> np.ndarray:
        return batch[:, :, my : batch.shape[2] - my, mx : batch.shape[3] - mx].copy()

    frame = np.random.default_rng(7).integers(0, 256, size if gray else (*size, 3), dtype=np.uint8)
    info = tiny_info(num_classes=1 if gray else 3, in_channels=1 if gray else 3, padding="valid")
    scores, _ = stitched(frame, info, grid, valid_identity)
    whole = plan_whole(*size, "valid", 3)
    wy, wx = whole.margin
    untiled, _ = stitched(frame, info, whole,
                          lambda batch: batch[:, :, wy : batch.shape[2] - wy, wx : batch.shape[3] - wx].copy())
    assert np.array_equal(scores, untiled)
    np.testing.assert_allclose(scores, normalised(frame), rtol=1e-6, atol=1e-5)


def test_a_shifted_last_tile_sees_only_real_pixels() -> None:
    frame = np.random.default_rng(8).integers(0, 256, (100, 70), dtype=np.uint8)
    grid = plan_tiles(frame.shape, 32, overlap=8, depth=3)
    assert grid.shift == (4, 10)
    seen: list[np.ndarray] = []

    def record(batch: np.ndarray) -> np.ndarray:
        seen.append(batch.copy())
        return batch.copy()

    info = tiny_info(num_classes=1, in_channels=1)
    scores, _ = stitched(frame, info, grid, record, "gaussian", batch_size=3)
    tiles, image = np.concatenate(seen)[:, 0], normalised(frame)[0]
    for tile in range(grid.count):
        y0, x0 = grid.tile_origin(*divmod(tile, grid.shape[1]))
        assert y0 >= 0 and x0 >= 0 and y0 + 32 <= 100 and x0 + 32 <= 70
        np.testing.assert_allclose(tiles[tile], image[y0 : y0 + 32, x0 : x0 + 32], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(scores[0], image, rtol=1e-6, atol=1e-5)


def test_a_network_that_returns_no_array_is_named() -> None:
    path = FramePath(HostDevice(lambda batch: batch.tolist()), tiny_info())
    with pytest.raises(ValueError, match="predictor must return an N x K x h x w numpy array"):
        path.run([np.zeros((20, 20, 3), np.uint8)], plan_tiles((20, 20), 8, depth=3), False)
