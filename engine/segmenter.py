"""``Segmenter``: camera frame in, class-id mask out, on any backend."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import cv2
import numpy as np

from .backends import Backend, open_backend
from .geometry import PaddedShape, legal_sizes, plan_padding
from .model_info import ModelInfo
from .preprocessing import check_frame, frame_to_model_channels, prepare_input
from .tiling import BLEND_MODES, TileGrid, plan_tiles, tiled_inference
from .visualize import blend, colorize_mask, palette_bgr


@dataclass
class SegmentationResult:
    """What :meth:`Segmenter.segment` returns for one frame.

    Attributes:
        mask: HxW uint8 class ids at the frame's size (binary models: 0 or 1).
        probabilities: KxHxW float32 class probabilities (binary: 1xHxW foreground), when asked for.
        latency_ms: wall time of the whole call.
        timings_ms: per stage: 'preprocess', 'inference', 'postprocess'.
    """

    mask: np.ndarray
    probabilities: np.ndarray | None
    latency_ms: float
    timings_ms: dict[str, float] = field(default_factory=dict)


def logits_to_mask(logits: np.ndarray, binary: bool) -> np.ndarray:
    """K x H x W logits -> H x W uint8 class ids (binary: logit > 0, i.e. probability > 0.5)."""
    if binary:
        return (logits[0] > 0).astype(np.uint8)
    return logits.argmax(axis=0).astype(np.uint8)


def logits_to_probabilities(logits: np.ndarray, binary: bool) -> np.ndarray:
    """K x H x W logits -> probabilities: sigmoid (binary) or softmax over K."""
    if binary:
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
    shifted = np.exp(logits - logits.max(axis=0, keepdims=True))
    return (shifted / shifted.sum(axis=0, keepdims=True)).astype(np.float32)


def _crop(logits: np.ndarray, rows: PaddedShape, cols: PaddedShape, height: int, width: int) -> np.ndarray:
    return logits[:, rows.crop_start : rows.crop_start + height, cols.crop_start : cols.crop_start + width]


class Segmenter:
    """Segments OpenCV frames of any size with a U-Net on any backend.

    Frames are converted to the model's colour order and normalisation, resized
    to the model's working size if it declares one, mirror-padded to a legal
    network size, and the result is cropped and brought back to the frame's size.

    An image (after the working-size resize) larger than the backend accepts
    (``backend.max_input_hw``), or any image when ``tile`` is given, goes through
    the network in mirror-padded overlapping tiles (:mod:`unetrt.tiling`),
    batched up to ``backend.max_batch``; 'valid' models get their context margin.

    Args:
        model: a .plan, .onnx or .pt file, or a bundled model name ('camvid').
        backend: 'auto' (from the file suffix), 'onnxruntime', 'openvino', 'torch' or 'tensorrt'.
        device: 'auto', 'cpu' or 'cuda'.
        probabilities: return per-class probabilities with every result.
        tile: network input tile side or (height, width) for tiled inference; None tiles only
            images larger than the backend accepts, with the largest tile it accepts.
        overlap: pixels neighbouring tile outputs share (None: tile / 8 for 'same' models,
            0 for 'valid' models, whose context margin already surrounds each tile).
        blend: how overlapping outputs combine: 'gaussian', 'linear' or 'crop'.
        precision: 'auto' (a bundled name: the fastest installed engine and precision that keeps the
            accuracy), 'fp32', 'fp16', 'int8', or 'bf16' (OpenVINO); see :func:`unetrt.backends.choose_model`.
        **backend_options: passed to the backend (e.g. ``threads=2``).

    Raises:
        ValueError: when the model or backend cannot be opened as asked.
        FileNotFoundError: when the model file does not exist.

    Example:
        >>> with Segmenter("camvid") as seg:  # doctest: +SKIP
        ...     result = seg.segment(cv2.imread("frame.png"))
        ...     cv2.imwrite("overlay.png", seg.overlay(frame, result))
    """

    def __init__(self, model: str | Path = "camvid", backend: str = "auto", device: str = "auto",
                 probabilities: bool = False, tile: int | tuple[int, int] | None = None, overlap: int | None = None,
                 blend: str = "gaussian", precision: str = "auto", **backend_options: Any) -> None:
        if blend not in BLEND_MODES:
            raise ValueError(f"blend must be one of {BLEND_MODES}, got {blend!r}")
        if overlap is not None and overlap < 0:
            raise ValueError(f"overlap must be >= 0, got {overlap}")
        self.backend: Backend = open_backend(model, backend, device, precision, **backend_options)
        self.info: ModelInfo = self.backend.info
        self.probabilities = probabilities
        self.tile, self.overlap, self.blend = tile, overlap, blend
        if tile is not None:
            try:
                plan_tiles((1, 1), tile, 0, self.info.padding, self.info.depth)
            except ValueError as exc:
                self.backend.close()
                raise ValueError(f"tile {tile!r} does not fit this model: {exc}") from None
        self._palette = palette_bgr(self.info.colors, self.info.binary)

    def segment(self, frame: np.ndarray, probabilities: bool | None = None) -> SegmentationResult:
        """Segment one frame.

        Args:
            frame: HxWx3 BGR uint8 or HxW gray uint8, any size.
            probabilities: override the constructor's choice for this call.

        Returns:
            The mask at the frame's size, optional probabilities and timings.

        Raises:
            ValueError: on a wrong dtype, channel count or an empty frame.
        """
        return self.segment_batch([frame], probabilities)[0]

    def segment_batch(
        self, frames: Sequence[np.ndarray], probabilities: bool | None = None
    ) -> list[SegmentationResult]:
        """Segment several frames; frames of equal size go through the network as one batch.

        Raises:
            ValueError: when any frame is malformed (the message names its index).
        """
        want_probs = self.probabilities if probabilities is None else probabilities
        checked = []
        for index, frame in enumerate(frames):
            try:
                checked.append(check_frame(frame))
            except ValueError as exc:
                raise ValueError(f"frame {index}: {exc}") from None
        groups: dict[tuple[int, int], list[int]] = {}
        for index, frame in enumerate(checked):
            groups.setdefault(frame.shape[:2], []).append(index)
        results: list[SegmentationResult | None] = [None] * len(checked)
        for indices in groups.values():
            for index, result in zip(indices, self._segment_same_size([checked[i] for i in indices], want_probs)):
                results[index] = result
        return [r for r in results if r is not None]

    def tile_grid(self, height: int, width: int) -> TileGrid | None:
        """The tile grid for a network image of ``height x width`` (after any working-size resize), or None
        when it goes through the network whole.

        Raises:
            ValueError: when the asked tile exceeds what the backend accepts.
        """
        info, limit = self.info, self.backend.max_input_hw
        if self.tile is None:
            if limit is None:
                return None
            padded = (plan_padding(height, info.padding, info.depth).network_input,
                      plan_padding(width, info.padding, info.depth).network_input)
            if padded[0] <= limit[0] and padded[1] <= limit[1]:
                return None
            tile = tuple(self._largest_legal(side) for side in limit)
        else:
            tile = (self.tile, self.tile) if isinstance(self.tile, int) else tuple(self.tile)
            if limit is not None and (tile[0] > limit[0] or tile[1] > limit[1]):
                raise ValueError(f"tile {tile} exceeds the largest input this backend accepts, {limit}")
        overlap = self.overlap
        if overlap is None:
            # Multiples of the pooling factor keep every tile on the untiled image's pooling grid.
            multiple = info.size_multiple
            overlap = 0 if info.padding == "valid" else min(tile) // 8 // multiple * multiple
        return plan_tiles((height, width), tile, overlap, info.padding, info.depth)

    def _largest_legal(self, side: int) -> int:
        sizes = legal_sizes(1, side, self.info.padding, self.info.depth)
        if not sizes:
            raise ValueError(f"backend accepts at most {side} px, less than any legal input of this model")
        return sizes[-1]

    def _segment_same_size(self, frames: list[np.ndarray], want_probs: bool) -> list[SegmentationResult]:
        start = time.perf_counter()
        height, width = frames[0].shape[:2]
        work = self.info.working_size
        net_h, net_w = (work[1], work[0]) if work is not None else (height, width)
        grid = self.tile_grid(net_h, net_w)
        if grid is not None:
            return [self._segment_tiled(frame, grid, want_probs) for frame in frames]
        inputs = []
        for frame in frames:
            batch, rows, cols = prepare_input(self._to_working_size(frame), self.info)
            inputs.append(batch)
        prepared = time.perf_counter()
        logits = self.backend.infer(np.concatenate(inputs))
        inferred = time.perf_counter()
        outputs = []
        for sample in logits:
            sample = _crop(sample, rows, cols, net_h, net_w)
            mask = logits_to_mask(sample, self.info.binary)
            probs = logits_to_probabilities(sample, self.info.binary) if want_probs else None
            outputs.append(_restore_size(mask, probs, height, width))
        done = time.perf_counter()
        share = len(frames)
        timings = {
            "preprocess": (prepared - start) * 1e3 / share,
            "inference": (inferred - prepared) * 1e3 / share,
            "postprocess": (done - inferred) * 1e3 / share,
        }
        latency = (done - start) * 1e3
        return [SegmentationResult(mask, probs, latency, dict(timings)) for mask, probs in outputs]

    def _segment_tiled(self, frame: np.ndarray, grid: TileGrid, want_probs: bool) -> SegmentationResult:
        start = time.perf_counter()
        height, width = frame.shape[:2]
        frame = self._to_working_size(frame)
        # BGR -> RGB is fused into the tile kernel; gray <-> colour conversions are rare and done here
        # (swapping R and B of a gray frame expanded to three channels changes nothing).
        if (frame.ndim == 3) != (self.info.in_channels == 3):
            frame = frame_to_model_channels(frame, self.info.in_channels)
        swap_rb = frame.ndim == 3
        prepared = time.perf_counter()
        tiled = tiled_inference(frame, self.backend.infer, grid, blend=self.blend,
                                batch_size=self.backend.max_batch or 4, swap_rb=swap_rb,
                                mean=self.info.mean, std=self.info.std, binary=self.info.binary)
        inferred = time.perf_counter()
        mask = tiled.mask
        assert mask is not None  # asked for with binary=...
        probs = logits_to_probabilities(tiled.logits, self.info.binary) if want_probs else None
        mask, probs = _restore_size(mask, probs, height, width)
        done = time.perf_counter()
        timings = {"preprocess": (prepared - start) * 1e3, "inference": (inferred - prepared) * 1e3,
                   "postprocess": (done - inferred) * 1e3}
        return SegmentationResult(mask, probs, (done - start) * 1e3, timings)

    def _to_working_size(self, frame: np.ndarray) -> np.ndarray:
        work = self.info.working_size
        if work is None or (frame.shape[1], frame.shape[0]) == work:
            return frame
        return cv2.resize(frame, work, interpolation=cv2.INTER_AREA)

    def colorize(self, result: SegmentationResult) -> np.ndarray:
        """The mask as an HxWx3 BGR image in the model's class colours."""
        return colorize_mask(result.mask, self._palette)

    def overlay(self, frame: np.ndarray, result: SegmentationResult, alpha: float = 0.5) -> np.ndarray:
        """The frame with the coloured mask blended over it.

        Raises:
            ValueError: when alpha is outside [0, 1] or the frame and mask sizes differ.
        """
        return blend(frame, self.colorize(result), alpha)

    def close(self) -> None:
        """Release the backend (idempotent)."""
        self.backend.close()

    def __enter__(self) -> Segmenter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _restore_size(mask: np.ndarray, probs: np.ndarray | None, height: int,
                  width: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Bring a network-sized mask (nearest) and probabilities (bilinear) back to the frame's size."""
    if mask.shape == (height, width):
        return mask, probs
    mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
    return mask, None if probs is None else _resize_channels(probs, width, height)


def _resize_channels(probs: np.ndarray, width: int, height: int) -> np.ndarray:
    # cv2.resize takes HxWxC with up to 512 channels; probabilities are CxHxW.
    resized = cv2.resize(np.ascontiguousarray(probs.transpose(1, 2, 0)), (width, height),
                         interpolation=cv2.INTER_LINEAR)
    if resized.ndim == 2:
        resized = resized[..., None]
    return np.ascontiguousarray(resized.transpose(2, 0, 1))
