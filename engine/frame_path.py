"""The one frame-to-mask path, the same on every device.

frame as the camera gave it (a gray one as one channel) -> native working-size resize (every dtype) -> tile grid
(one tile when the image fits) -> native extract into the network's input buffer (mirror padding, gray replicated
into a colour model's channels or colour turned gray for a 1-channel model, the frame's colour order -> the
model's RGB, scaling, normalisation, layout and dtype in one kernel) -> network
-> stitch (several tiles) -> native finish: bilinear resize of the scores to the frame's size fused with
argmax (or threshold) and optional probabilities, counting the output pixels whose scores are NaN or infinite (a
counter that comes back with the mask; a frame with any is refused: :class:`NonFiniteScoresError`).
:class:`FramePath` drives a :class:`unetrt.device.Device` through these steps; the device decides where the buffers
live.

Threads: a :class:`FramePath` may be called from any number of threads. Each call takes its own set of
working buffers (tile batch, accumulator, weights) from a small pool, so calls on a device that declares
``concurrent = True`` (:class:`unetrt.device.HostDevice`) run side by side and never see each other's tiles;
on any other device (one CUDA stream, whose outputs and graphs are reused) the path serialises its calls.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Generic

import numpy as np
from numpy.typing import NDArray

from .device import BufferT, Device, HostDevice, free_each
from .model_info import ModelInfo
from .preprocessing import check_color_order, check_frame, frame_scale
from .tiling import TileGrid, blend_window, check_blend, extract_call, plan_whole, tile_runs
from .values import is_whole_number

PROBABILITY_SIZES = ("frame", "working")
# What the error of a frame with NaN or infinite scores says of its cause and fix, by the precision the network ran
# at (None: not known, as for a FramePath driven directly).
NONFINITE_ADVICE = {
    None: "(an FP16 engine overflows this way when activations pass 65504): rebuild the engine at FP32 "
          "(`unet-build ... --precision fp32`, or Segmenter(..., precision='fp32')) or check the model (its export, "
          "an INT8 calibration)",
    "fp16": "(the network ran at FP16, which overflows this way when activations pass 65504): run it at FP32 "
            "(--precision fp32, or Segmenter(..., precision='fp32'); `unet-build ... --precision fp32` for an engine)",
    "bf16": "(the network ran at BF16, whose 8-bit significand is too coarse for some networks): run it at FP32 "
            "(--precision fp32, or Segmenter(..., precision='fp32'))",
    "int8": "(the network ran at INT8, whose calibration may not fit these frames): run it at FP16 or FP32 "
            "(--precision fp16 or fp32, or Segmenter(..., precision=...)), or export the INT8 model again with "
            "calibration frames like these",
    "fp32": "(the network ran at FP32, so no reduced precision overflowed): check the model (its export, its "
            "weights) and that the frames are what it was trained on",
}
# Idle buffer sets kept per geometry: enough for the threads that usually share a segmenter; a burst of more
# callers allocates extra sets that are dropped when returned.
POOL_SIZE = 4


class NonFiniteScoresError(ValueError):
    """The network gave NaN or infinite scores for a frame: its mask would mean nothing, so none is returned.

    The usual cause is an FP16 engine (the default on a Jetson) whose activations pass 65504 and overflow to
    infinity, then NaN; also an INT8 engine with a bad calibration, a damaged engine file or a model exported with a
    bug. A ``ValueError``, so that the commands end in its one line with exit code 2 like every other refused input.

    Attributes:
        counts: per frame of the call, how many of its output pixels have a best score (the argmax's, a binary
            model's one) that is NaN or infinite; 0 also for a frame not segmented (a call of several frame sizes
            stops at the first size group with such a frame).
        pixels: the output pixels of one such frame.
        precision: what the network ran at ('fp32', 'fp16', 'bf16', 'int8'), whose usual cause and fix the message
            names; None where it is not known.
        frame: what the message calls the one frame of its call ('image f1.png' where a command read it from a
            file); None: 'this frame'.

    Example:
        >>> try:  # doctest: +SKIP
        ...     result = seg.segment(frame)
        ... except NonFiniteScoresError as error:
        ...     print(error.counts)
    """

    def __init__(self, counts: Sequence[int], pixels: int, precision: str | None = None,
                 frame: str | None = None) -> None:
        self.counts, self.pixels, self.precision = [int(c) for c in counts], int(pixels), precision
        self.frame = frame
        bad = [i for i, c in enumerate(self.counts) if c]
        worst, frames = max(self.counts), len(self.counts)
        if frames == 1:
            where = f"{worst} of {self.pixels} pixels of {frame or 'this frame'}"
        elif len(bad) == 1:
            where = f"{worst} of {self.pixels} pixels of frame {bad[0]} of this call's {frames}"
        else:
            listed = ", ".join(map(str, bad))
            where = f"up to {worst} of {self.pixels} pixels of frames {listed} of this call's {frames}"
        advice = NONFINITE_ADVICE.get(precision, NONFINITE_ADVICE[None])
        super().__init__(f"the network gave NaN or infinite scores at {where} {advice}")

    def restated(self, *, counts: Sequence[int] | None = None, precision: str | None = None,
                 frame: str | None = None) -> NonFiniteScoresError:
        """The same error told by a caller that knows more (the counts in its own call's order, the precision the
        network ran at, the frame's name), its message made again; what is not given is kept.

        Example:
            >>> NonFiniteScoresError([3], 100).restated(precision="fp16").precision
            'fp16'
        """
        return NonFiniteScoresError(self.counts if counts is None else counts, self.pixels,
                                    precision or self.precision, frame or self.frame)


@dataclass
class PathResult:
    """One frame's way through the path.

    Attributes:
        mask: H x W uint8 class ids at the frame's size.
        probabilities: K x H x W float32 at the frame's size (or the working size, when asked so), when asked for.
        timings_ms: 'preprocess' (resize and extract), 'inference' (network), 'postprocess' (stitch, finish,
            download), shared evenly by the frames of one call.
    """

    mask: NDArray[Any]
    probabilities: NDArray[Any] | None
    timings_ms: dict[str, float]


@dataclass
class _Buffers(Generic[BufferT]):
    batch: BufferT
    acc: BufferT | None
    weight: BufferT | None
    window_y: BufferT | None
    window_x: BufferT | None


def extract_normalisation(image: NDArray[Any], info: ModelInfo, color_order: str = "bgr") -> dict[str, Any]:
    """The extract kernel's channel order and normalisation for a frame: a colour frame's ``color_order`` ('bgr' or
    'rgb') -> the model's RGB (or, for a 1-channel model, the R, G and B of its gray value), values scaled to [0, 1]
    by dtype, then the model's mean and std.

    Example:
        >>> extract_normalisation(np.zeros((2, 2), np.uint16), info)["scale"] * 65535  # doctest: +SKIP
        1.0
    """
    # The kernel reads the channels in the order asked: an RGB frame costs no more than a BGR one.
    return {"swap_rb": image.ndim == 3 and color_order == "bgr", "scale": frame_scale(image.dtype),
            "mean": info.mean, "std": info.std}


def network_input(frames: Sequence[NDArray[Any]], info: ModelInfo, dtype: Any = np.float32,
                  color_order: str = "bgr") -> NDArray[Any]:
    """The N x C x H x W batch the network sees for equal-size frames taken whole (one mirror-padded tile of
    the working-size image), cut as the path cuts it: for benchmarks and checks of the bare network.

    Args:
        frames: frames as :meth:`unetrt.Segmenter.segment` takes them, of one size.
        info: the model.
        dtype: the network input's dtype.
        color_order: the colour frames' channel order, 'bgr' or 'rgb'.

    Returns:
        The batch, one item per frame.

    Raises:
        ValueError: on a malformed frame, frames of different sizes or an unknown colour order.

    Example:
        >>> network_input([np.zeros((360, 480, 3), np.uint8)], camvid_info).shape  # doctest: +SKIP
        (1, 3, 192, 256)
    """
    check_color_order(color_order)
    checked = [check_frame(frame) for frame in frames]
    if any(frame.shape[:2] != checked[0].shape[:2] for frame in checked):
        raise ValueError("network_input takes frames of one size")
    work = info.working_size
    work_hw = None if work is None else (work[1], work[0])
    height, width = work_hw or checked[0].shape[:2]
    grid = plan_whole(height, width, info.padding, info.depth)
    device = HostDevice(lambda batch: batch, dtype)
    batch = np.empty((len(checked), info.in_channels, *grid.tile_hw), device.input_dtype)
    for slot, frame in enumerate(checked):
        device.extract(device.prepare(frame, work_hw, slot), batch[slot : slot + 1], origin=grid.origin,
                       step=grid.step, grid=grid.shape, first=0,
                       **extract_normalisation(frame, info, color_order))
    return batch


class FramePath(Generic[BufferT]):
    """Segments equal-size frames on one device.

    Args:
        device: where the buffers live and the kernels run.
        info: the model (channels, normalisation, classes, working size).
        blend: how overlapping tile outputs combine: 'gaussian', 'linear' or 'crop'.
        color_order: the channel order of colour frames: 'bgr' (OpenCV's; BGRA with alpha) or 'rgb' (RGBA).

    Safe to call from any number of threads, with the results of sequential calls: every call works in
    buffers of its own (borrowed from a pool of at most :data:`POOL_SIZE` idle sets per geometry). On a device
    with ``concurrent = True`` (:class:`~unetrt.device.HostDevice`, whose predictor must then be safe from
    several threads, as every backend's ``infer`` is) calls run side by side; on any other device they take
    turns.

    Raises:
        ValueError: on an unknown blend or colour order.

    Example:
        >>> path = FramePath(HostDevice(backend.infer), backend.info)  # doctest: +SKIP
        >>> result = path.run([frame], grid, probabilities=False)[0]  # doctest: +SKIP
    """

    def __init__(self, device: Device[BufferT], info: ModelInfo, blend: str = "gaussian",
                 color_order: str = "bgr") -> None:
        self.device = device
        self.info = info
        self.blend = check_blend(blend)
        self.color_order = check_color_order(color_order)
        # Idle working buffers of the latest geometry; a call borrows a set and gives it back.
        self._pool_key: tuple[Any, ...] | None = None
        self._pool: list[_Buffers[BufferT]] = []
        self._pool_lock = threading.Lock()
        # Calls overlap only on a device that says they may (host buffers, kernels on the caller's arrays); one
        # CUDA stream with reused outputs and recorded graphs takes one call at a time.
        self._call_lock = None if getattr(device, "concurrent", False) else threading.Lock()

    def work_hw(self, frame_hw: tuple[int, int]) -> tuple[int, int]:
        """(height, width) of the image the network sees for a frame of ``frame_hw``.

        Example:
            >>> path.work_hw((360, 480))  # camvid works at 256 x 192  # doctest: +SKIP
            (192, 256)
        """
        work = self.info.working_size
        return frame_hw if work is None else (work[1], work[0])

    def run(self, frames: Sequence[NDArray[Any]], grid: TileGrid, probabilities: bool,
            batch_size: int = 4, probabilities_size: str = "frame") -> list[PathResult]:
        """Masks (and probabilities) at the frames' size.

        Args:
            frames: checked frames (:func:`unetrt.preprocessing.check_frame`) of one size, dtype and layout, colour
                frames in the path's ``color_order``.
            grid: the tile grid for the working-size image (:meth:`work_hw`).
            probabilities: also return per-class probabilities.
            probabilities_size: 'frame' (the mask's size) or 'working' (the working size: 11 classes of a 1080p
                frame are 91 MB at the frame's size, 2 MB at 256 x 192).
            batch_size: tiles per network call (the backend's ``max_batch``); frames taken whole go through
                together when it allows.

        Returns:
            One result per frame, in order.

        Raises:
            ValueError: when there are no frames or they are no arrays or differ, the grid is no TileGrid or does
                not fit them, the batch size is no int >= 1, ``probabilities`` is no bool or the network returns
                another shape.
            NonFiniteScoresError: when the network gave NaN or infinite scores for any of the frames.
        """
        # This is public (docs/tiling.md): a mistake here gets a line that says so, not an AttributeError.
        if isinstance(frames, np.ndarray) or not frames or not all(isinstance(f, np.ndarray) for f in frames):
            raise ValueError("frames must be a non-empty list of frames (numpy arrays through "
                             f"unetrt.preprocessing.check_frame), got {_described(frames)}")
        if not isinstance(grid, TileGrid):
            raise ValueError(f"grid must be a unetrt.tiling.TileGrid (plan_tiles or plan_whole of work_hw), got "
                             f"{_described(grid)}")
        if not isinstance(probabilities, (bool, np.bool_)):
            raise ValueError(f"probabilities must be True or False, got {probabilities!r}")
        if not is_whole_number(batch_size) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        batch_size = int(batch_size)
        if probabilities_size not in PROBABILITY_SIZES:
            raise ValueError(f"probabilities_size must be one of {PROBABILITY_SIZES}, got {probabilities_size!r}")
        first = frames[0]
        if any(f.shape != first.shape or f.dtype != first.dtype for f in frames):
            raise ValueError("frames of one call must share size, layout and dtype")
        frame_hw = (int(first.shape[0]), int(first.shape[1]))
        work_hw = self.work_hw(frame_hw)
        if grid.image_hw != work_hw:
            raise ValueError(f"grid was planned for a {grid.image_hw} image, the frames give {work_hw}; re-plan it")
        device, info = self.device, self.info
        count, classes = len(frames), info.num_classes
        with self._turn(), device.session(), self._borrowed_buffers(grid, count, batch_size) as buffers:
            begun = time.perf_counter()  # after any wait for the device: that wait is no stage's time
            # Every frame goes to the device as the camera gave it: the extract kernel replicates a gray frame into
            # a colour model's channels and turns a colour frame gray for a 1-channel model.
            prepared = [device.prepare(frame, None if work_hw == frame_hw else work_hw, slot)
                        for slot, frame in enumerate(frames)]
            masks = device.output((count, *frame_hw), np.dtype(np.uint8), ("mask", count, frame_hw))
            probs_hw = work_hw if probabilities_size == "working" else frame_hw
            probs = (device.output((count, classes, *probs_hw), np.dtype(np.float32), ("probs", count, probs_hw))
                     if probabilities else None)
            # Per frame, the finish kernels' count of output pixels with NaN or infinite scores: zeroed on the device
            # with the rest of the call's work and downloaded with the masks, so it costs no wait of its own.
            nonfinite = device.output((count,), np.dtype(np.uint64), ("nonfinite", count))
            normalisation = extract_normalisation(first, info, self.color_order)
            marks: dict[str, float] = {}

            def enqueue() -> None:
                self._enqueue(prepared, grid, buffers, masks, probs, nonfinite, normalisation, marks)

            device.launch(("frames", first.shape, first.dtype.str, grid, count, probabilities, probs_hw), enqueue)
            host_masks = device.download(masks)
            host_probs = None if probs is None else device.download(probs)
            host_nonfinite = device.download(nonfinite)
            device.synchronize()
            if host_nonfinite.any():
                # A mask of NaN scores is class 0 (or whatever NaN's place in the argmax gives) on every frame: never
                # handed out in silence.
                raise NonFiniteScoresError(host_nonfinite.tolist(), frame_hw[0] * frame_hw[1])
            if device.reuses_outputs:
                host_masks = host_masks.copy()
                host_probs = None if host_probs is None else host_probs.copy()
        done = time.perf_counter()
        # A large frame goes through the network in several chunks of tiles, each extracted, run and stitched in
        # turn: the stages are the sums over the chunks, not the spans from the first extraction to the last run
        # (which counted later chunks' extraction and earlier ones' stitching as inference). Without marks (a
        # replayed graph) the whole call is inference.
        preprocess = marks["enqueued"] - begun + marks["extract"] if "network" in marks else 0.0
        inference = marks.get("network", done - begun)
        timings = {"preprocess": preprocess * 1e3 / count, "inference": inference * 1e3 / count,
                   "postprocess": (done - begun - preprocess - inference) * 1e3 / count}
        return [PathResult(host_masks[i], None if host_probs is None else host_probs[i], dict(timings))
                for i in range(count)]

    def release(self) -> None:
        """Free the buffers this path and its device hold (they are made again when needed).

        Calls in flight on a concurrent device keep the buffers they borrowed until they return.
        """
        with self._turn(), self.device.session():
            with self._pool_lock:
                idle, self._pool_key, self._pool = self._pool, None, []
            try:
                self._free(idle)
            finally:
                self.device.release()

    def _turn(self) -> AbstractContextManager[Any]:
        """Held for the whole of one call: nothing on a concurrent device, else the path's one lock."""
        return nullcontext() if self._call_lock is None else self._call_lock

    @contextmanager
    def _borrowed_buffers(self, grid: TileGrid, count: int, batch_size: int) -> Iterator[_Buffers[BufferT]]:
        """A set of working buffers for one call (inside its session), returned to the pool afterwards."""
        key = (grid, count, batch_size)
        idle: list[_Buffers[BufferT]] = []
        with self._pool_lock:
            if key != self._pool_key:
                # Only the latest geometry's buffers stay: a stream's frames share one size, and a large frame's
                # accumulator should not outlive the frames that need it.
                idle, self._pool_key, self._pool = self._pool, key, []
            buffers = self._pool.pop() if self._pool else None
        # Through the device, which drops a CUDA graph recorded with them: left to the garbage collector, a call
        # that failed before its launch (no memory for this geometry's buffers) left the graph of the geometry
        # before to be replayed next on freed memory, beside the new buffers made in their place.
        self._free(idle)
        if buffers is None:
            buffers = self._allocate_buffers(grid, count, batch_size)
        try:
            yield buffers
        finally:
            with self._pool_lock:
                kept = key == self._pool_key and len(self._pool) < POOL_SIZE
                if kept:
                    self._pool.append(buffers)
            if not kept:
                self._free([buffers])

    def _free(self, sets: Sequence[_Buffers[BufferT]]) -> None:
        """Free working buffer sets no call holds (inside a session): every buffer, then the first error raised
        (:func:`unetrt.device.free_each`)."""
        free_each(self.device.free, (buffer for buffers in sets for buffer in (
            buffers.batch, buffers.acc, buffers.weight, buffers.window_y, buffers.window_x) if buffer is not None))

    def _allocate_buffers(self, grid: TileGrid, count: int, batch_size: int) -> _Buffers[BufferT]:
        device = self.device
        tiles = min(batch_size, grid.count * count)
        batch = device.allocate((tiles, self.info.in_channels, *grid.tile_hw), device.input_dtype)
        made: _Buffers[BufferT] = _Buffers(batch, None, None, None, None)
        try:
            if grid.count > 1:
                float32 = np.dtype(np.float32)
                made.acc = device.allocate((count, self.info.num_classes, *grid.image_hw), float32)
                if self.blend != "crop":
                    made.weight = device.allocate((count, *grid.image_hw), float32)
                    made.window_y = device.constant(blend_window(self.blend, grid.output_hw[0]))
                    made.window_x = device.constant(blend_window(self.blend, grid.output_hw[1]))
        except BaseException:
            # Those made so far, now: the error's traceback holds them, and its owner may drop it on a thread where
            # their CUDA context cannot be made current, which leaks them ([FREE-REACH]).
            self._free([made])
            raise
        return made

    def _enqueue(self, images: Sequence[BufferT], grid: TileGrid, buffers: _Buffers[BufferT], masks: BufferT,
                 probs: BufferT | None, nonfinite: BufferT, normalisation: dict[str, Any],
                 marks: dict[str, float]) -> None:
        device = self.device
        jobs = [(frame, tile) for frame in range(len(images)) for tile in range(grid.count)]
        whole = grid.count == 1
        device.zero(nonfinite)
        if not whole:
            assert buffers.acc is not None  # allocated for every grid of several tiles
            device.zero(buffers.acc)
            if buffers.weight is not None:
                device.zero(buffers.weight)
        rows, cols = grid.shape
        capacity = device.shape(buffers.batch)[0]
        marks.update(enqueued=time.perf_counter(), extract=0.0, network=0.0)
        for chunk_start in range(0, len(jobs), capacity):
            chunk_begun = time.perf_counter()
            chunk = jobs[chunk_start : chunk_start + capacity]
            batch = device.part(buffers.batch, 0, len(chunk))
            for start, count, frame in tile_runs(grid, chunk, regular=False):
                origin, shape, first_tile = extract_call(grid, chunk[start][1])
                device.extract(images[frame], device.part(batch, start, start + count), origin=origin,
                               step=grid.step, grid=shape, first=first_tile, **normalisation)
            extracted = time.perf_counter()
            outputs = device.run(batch)
            marks["extract"] += extracted - chunk_begun
            marks["network"] += time.perf_counter() - extracted
            self._check_outputs(device.shape(outputs), len(chunk), grid)
            if whole:
                margin_y, margin_x = grid.output_origin
                rect = (-margin_y, -margin_x, *grid.image_hw)
                for index, (frame, _) in enumerate(chunk):
                    self._finish(device.item(outputs, index), device.item(masks, frame),
                                 None if probs is None else device.item(probs, frame), rect, None,
                                 device.part(nonfinite, frame, frame + 1))
                continue
            for index, (_, tile) in enumerate(chunk):
                row, col = divmod(tile, cols)
                if row == rows - 1 and grid.shift[0]:
                    device.shift(outputs, index, 2, grid.shift[0])
                if col == cols - 1 and grid.shift[1]:
                    device.shift(outputs, index, 3, grid.shift[1])
            assert buffers.acc is not None
            for start, count, frame in tile_runs(grid, chunk, regular=True):
                device.stitch(device.part(outputs, start, start + count), device.item(buffers.acc, frame),
                              None if buffers.weight is None else device.item(buffers.weight, frame),
                              origin=grid.output_origin, step=grid.step, grid=grid.shape, first=chunk[start][1],
                              mode="crop" if self.blend == "crop" else "blend", window_y=buffers.window_y,
                              window_x=buffers.window_x)
        if whole:
            return
        assert buffers.acc is not None
        for frame in range(len(images)):
            self._finish(device.item(buffers.acc, frame), device.item(masks, frame),
                         None if probs is None else device.item(probs, frame), (0, 0, *grid.image_hw),
                         None if buffers.weight is None else device.item(buffers.weight, frame),
                         device.part(nonfinite, frame, frame + 1))

    def _finish(self, scores: BufferT, mask: BufferT, probs: BufferT | None, rect: tuple[int, int, int, int],
                weight: BufferT | None, nonfinite: BufferT) -> None:
        """The mask, and the probabilities in the same pass when they share its size, else in a second one; the
        mask's pass counts the non-finite pixels (of the frame's size, as the error names them)."""
        device, binary = self.device, self.info.binary
        if probs is None or device.shape(probs)[1:] == device.shape(mask):
            device.finish(scores, mask, probs, rect=rect, weight=weight, binary=binary, nonfinite=nonfinite)
            return
        device.finish(scores, mask, None, rect=rect, weight=weight, binary=binary, nonfinite=nonfinite)
        # The first pass divided the scores by the weight in place.
        device.finish(scores, None, probs, rect=rect, weight=None, binary=binary)

    def _check_outputs(self, shape: tuple[int, ...], count: int, grid: TileGrid) -> None:
        expected = (count, self.info.num_classes, *grid.output_hw)
        if tuple(shape) != expected:
            hint = ""
            if len(shape) == 4 and shape[1] != self.info.num_classes:
                # A dynamic channel count is not checked at open: the description names another number of classes.
                hint = (f": the network returns {shape[1]} channels but its description names "
                        f"{self.info.num_classes} classes; describe it with one class name per output channel "
                        "(docs/models.md#a-network-from-elsewhere)")
            elif len(shape) == 4 and tuple(shape[2:]) != tuple(grid.output_hw):
                # A network of another geometry than its description says: an output smaller than the input (valid
                # convolutions) described as 'same', or the other way round, or another depth.
                (height, width), (out_h, out_w) = grid.tile_hw, grid.output_hw
                hint = (f": for {height}x{width} inputs its description (padding {self.info.padding!r}, depth "
                        f"{self.info.depth}) gives {out_h}x{out_w} logits; describe the network with the padding and "
                        "depth it has (docs/models.md#a-network-from-elsewhere)")
            raise ValueError(f"the network returned shape {tuple(shape)} for {count} tile(s); "
                             f"expected {expected}{hint}")


def _described(value: object) -> str:
    """``value`` for an error message: an array by its shape, anything else by its type."""
    if isinstance(value, np.ndarray):
        return f"one array of shape {value.shape}"
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)}: {', '.join(type(v).__name__ for v in value[:3])}" \
            if value else f"an empty {type(value).__name__}"
    return type(value).__name__
