"""``Segmenter``: camera frame in, class-id mask out, on any backend."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from .backends import Backend, open_backend
from .backends.base import DeviceBackend
from .caller_warning import warn_caller
from .device import Device, HostDevice
from .dropped import release_when_dropped
from .frame_path import PROBABILITY_SIZES, FramePath, NonFiniteScoresError
from .geometry import legal_sizes
from .model_info import ModelInfo, check_working_size
from .palette import Palette
from .plan_metadata import DEFAULT_MAX_SIDE
from .postprocess import STATED, BinaryCleanup, resolve_cleanup
from .preprocessing import check_color_order, check_frame
from .tiling import TileGrid, check_blend, plan_tiles, plan_whole
from .values import is_whole_number
from .visualize import blend, colorize_mask

DEVICE_PATHS = ("auto", "host", "cuda")
# The largest network image a backend without an input limit (ONNX Runtime, OpenVINO, torch) takes whole.
MAX_WHOLE_PIXELS = 4096 * 4096


@dataclass
class SegmentationResult:
    """What :meth:`Segmenter.segment` returns for one frame.

    Attributes:
        mask: HxW uint8 class ids at the frame's size (binary models: 0 or 1).
        probabilities: KxHxW float32 class probabilities (binary: 1xHxW foreground), when asked for.
        latency_ms: wall time of the whole call (of a ``segment_batch``: the same for all its frames).
        timings_ms: per stage: 'preprocess' (resize, extract), 'inference' (network), 'postprocess' (stitch,
            finish, download, mask clean-up); frames that went through the network together share its stages
            evenly. On the GPU path the stages are queued, not waited for, so only ``latency_ms`` is exact there.

    Example:
        >>> with Segmenter("camvid") as seg:
        ...     result = seg.segment(np.zeros((360, 480, 3), np.uint8))
        >>> result.mask.shape, result.mask.dtype, result.probabilities is None
        ((360, 480), dtype('uint8'), True)
        >>> sorted(result.timings_ms)
        ['inference', 'postprocess', 'preprocess']
    """

    mask: np.ndarray
    probabilities: np.ndarray | None
    latency_ms: float
    timings_ms: dict[str, float] = field(default_factory=dict)


class Segmenter:
    """Segments camera frames of any size with a U-Net on any backend, through one path for every frame.

    A frame (uint8, uint16 or float in [0, 1]; gray, BGR or BGRA, or RGB or RGBA with ``color_order='rgb'``:
    :func:`unetrt.preprocessing.check_frame`) is
    resized to the model's working size if it declares one and becomes a tile grid: one mirror-padded tile when
    it fits the network, else overlapping tiles (any image when ``tile`` is given, or one larger than
    ``backend.max_input_hw``), batched up to ``backend.max_batch``; 'valid' models get their context margin. An
    image smaller than the backend's smallest input (``backend.min_input_hw``: a TensorRT profile's minimum) is
    mirror-padded up to it, and the scores cropped back.
    The native extract kernel writes the tiles into the network's input (channel order, scaling and
    normalisation fused), the network runs, tile outputs are stitched, and the native finish kernel resizes the
    scores bilinearly to the frame's size fused with the argmax (threshold for binary models) and probabilities
    (:mod:`unetrt.frame_path`). On the CPU this runs on numpy buffers; a backend with a device entry on CUDA
    keeps everything on the GPU (:mod:`unetrt.cuda_device`).

    Threads: :meth:`segment` and :meth:`segment_batch` may be called from any number of threads at once and
    give exactly the results of sequential calls. Each call works in buffers of its own, so on the CPU the
    resize, tile cutting and finish of several calls run side by side, and so does the network where the
    backend allows it: ONNX Runtime and torch run calls together, OpenVINO and TensorRT (on the host path) one
    network call at a time, and the GPU-resident path (one CUDA stream) one whole call at a time. What that buys
    on each backend is measured in ``docs/concurrency.md`` (``benchmarks/bench_concurrency.py``, 2 cores, one
    inference thread per segmenter): two threads on one ONNX Runtime or torch segmenter did 1.3-1.6x the frames
    of one thread (a segmenter per thread: 1.2-1.9x, at twice the memory); on OpenVINO they gain nothing (use a
    segmenter per thread there). :meth:`close` waits for calls in flight; calls after it raise ValueError. A
    segmenter dropped without :meth:`close` is closed on unetrt's release thread (its device memory and CUDA
    context are freed there, never on the thread the garbage collector happens to run on), and so is the
    backend it opened.

    Args:
        model: a .plan, .onnx or .pt file, or a bundled model name ('camvid').
        backend: 'auto' (from the file suffix) or a registered backend ('onnxruntime', 'openvino', 'torch',
            'tensorrt', ...: :mod:`unetrt.backends.registry`).
        device: 'auto', 'cpu' or 'cuda'.
        probabilities: return per-class probabilities with every result.
        tile: network input tile side or (height, width) for tiled inference; None tiles only
            images larger than the backend accepts, with the largest tile it accepts (on a backend without a
            limit: images over 4096x4096 pixels, in tiles of up to 1024x1024, whose memory stays bounded).
        overlap: pixels neighbouring tile outputs share (None: for 'same' models the smaller tile side / 8
            rounded down to a multiple of ``info.size_multiple``, which keeps tiles on the pooling grid: 16 px
            steps at depth 5, so tiles under 128 px get none; 0 for 'valid' models, whose context margin already
            surrounds each tile). Used only when a frame is tiled.
        blend: how overlapping outputs combine: 'gaussian', 'linear' or 'crop'.
        device_path: 'auto' (the GPU-resident path when the backend runs on CUDA and has a device entry),
            'host' (numpy buffers and ``backend.infer``) or 'cuda'.
        cleanup: binary models only: a clean-up of the mask from the probability map at the frame's size
            (hole filling, seeded watershed, cell lines: :class:`unetrt.postprocess.BinaryCleanup`; runs on the
            CPU). ``"stated"`` (the default): the clean-up a bundled model's statement names (``isbi``: seeded
            watershed and cell lines, chosen on its selection slices), none for a model file; None: none.
        precision: 'auto' (a bundled name: the fastest installed engine and precision that keeps the
            accuracy), 'fp32', 'fp16', 'int8', or 'bf16' (OpenVINO); see :func:`unetrt.backends.choose_model`.
        working_size: ``(width, height)`` every frame is resized to before inference, in place of the model's
            own (None: the model's). Smaller is faster and, for a model trained with scale augmentation, costs
            little accuracy (``tools/sweep_working_size.py`` measures it for a model).
        warm_up: for a model with a working size (every frame reaches the network at one shape), run a blank
            frame through the whole path now, so the first real frame does not pay for the engine's
            compilation of that shape (OpenVINO compiles on a shape's first run: about 0.3 s for ``camvid``).
        build: on a GPU with TensorRT, build (and cache) the model's TensorRT engine when none is cached
            (:mod:`unetrt.plan_cache`); False: use a cached engine or fall back to the next backend.
        palette: the class names and colours of :meth:`colorize`, :meth:`overlay` and the stream's legend (None:
            the model's own, :meth:`unetrt.palette.Palette.of`); settable later as ``seg.palette``.
        color_order: the channel order of the colour frames you pass: 'bgr' (OpenCV's ``imread`` and
            ``VideoCapture``; 4 channels: BGRA) or 'rgb' (PIL, imageio, torchvision, ROS ``rgb8``, a RealSense,
            jetson-inference's ``cudaToNumpy``; 4 channels: RGBA); gray frames are either. The extract kernel reads
            the channels in this order (no per-frame conversion), and :meth:`colorize` and :meth:`overlay` draw in
            it.
        **backend_options: passed to the backend (e.g. ``threads=2``).

    Raises:
        ValueError: when the model or backend cannot be opened as asked, the device path does not fit it, or on an
            unknown ``color_order`` (or any other bad setting).
        FileNotFoundError: when the model file does not exist.
        ImportError: when the backend asked for (or the model file's: a ``.plan`` TensorRT's, a ``.pt`` PyTorch's) is
            not installed, in one line saying how to install it (``backend='tensorrt'`` without TensorRT).

    Example:
        >>> with Segmenter("camvid") as seg:  # doctest: +SKIP
        ...     result = seg.segment(cv2.imread("frame.png"))
        ...     cv2.imwrite("overlay.png", seg.overlay(frame, result))
        >>> with Segmenter("camvid", color_order="rgb") as seg:  # doctest: +SKIP
        ...     mask = seg.segment(np.asarray(PIL.Image.open("frame.png").convert("RGB"))).mask
    """

    def __init__(self, model: str | Path = "camvid", backend: str = "auto", device: str = "auto",
                 probabilities: bool = False, tile: int | tuple[int, int] | None = None, overlap: int | None = None,
                 blend: str = "gaussian", device_path: str = "auto", cleanup: BinaryCleanup | str | None = STATED,
                 precision: str = "auto", working_size: tuple[int, int] | None = None, warm_up: bool = True,
                 build: bool = True, palette: Palette | None = None, color_order: str = "bgr",
                 **backend_options: Any) -> None:
        check_blend(blend)  # before a backend is opened (FramePath checks it with the same function)
        self._color_order = check_color_order(color_order)
        tile_hw = None if tile is None else _tile_pair(tile)
        if overlap is not None and not (is_whole_number(overlap) and overlap >= 0):
            raise ValueError(f"overlap must be a whole number of pixels >= 0 (or None for the default), got "
                             f"{overlap!r}")
        _check_probabilities(probabilities)
        if device_path not in DEVICE_PATHS:
            raise ValueError(f"device_path must be one of {DEVICE_PATHS}, got {device_path!r}")
        size = None if working_size is None else check_working_size(working_size)
        chosen_cleanup = resolve_cleanup(cleanup, model)
        self._process = os.getpid()  # a fork() child inherits neither its threads nor its CUDA context
        self._closed = False
        # Calls in flight, so that close() frees nothing a call on another thread still uses.
        self._calls = 0
        self._calls_done = threading.Condition()
        # Calls in flight per thread: a close() on a thread with a call of its own in flight (a signal handler
        # that interrupted it) cannot wait for that call, so the call's end releases instead (_deferred_close).
        self._thread_calls: dict[int, int] = {}
        self._deferred_close = False
        # Claimed (under _calls_done) by the one close() that releases, once no call is in flight; set when that
        # release is done; any other close() waits for it (close is idempotent).
        self._releasing = False
        self._released = threading.Event()
        self._network = _NetworkSlot(open_backend(model, backend, device, precision, build=build,
                                                  working_size=size, **backend_options))
        # Dropped without close() (a node torn down on an executor thread): released on unetrt's release thread.
        # Registered before the device path is opened, and everything after goes through close() when it fails or
        # is interrupted (Ctrl-C): nothing opened from here on is left without an owner that releases it.
        self._release_if_dropped = release_when_dropped(self, partial(_release, self._network),
                                                        f"a dropped Segmenter of {str(model)!r}")
        try:
            if size is not None:
                # The backend runs every frame at this size from now on: its description says so too, so that
                # seg.info and seg.backend.info are one record.
                self.backend.info = replace(self.backend.info, working_size=size)
            self.probabilities = probabilities
            self.cleanup = chosen_cleanup
            if self.cleanup is not None and not self.info.binary:
                raise ValueError(f"cleanup {self.cleanup.mode!r} is for binary models; {self.info.name!r} has "
                                 f"{self.info.num_classes} classes")
            self.tile, self.overlap, self.blend = tile_hw, None if overlap is None else int(overlap), blend
            if tile_hw is not None:
                try:
                    # An image of several tiles each way, so that the overlap is checked against the tile too.
                    plan_tiles((3 * tile_hw[0], 3 * tile_hw[1]), tile_hw, self.overlap or 0, self.info.padding,
                               self.info.depth)
                except ValueError as exc:
                    raise ValueError(f"tile {tile!r} with overlap {overlap!r} does not fit this model: {exc}") \
                        from None
            self.device: Device[Any] = self._open_device(device_path)
            self._path: FramePath[Any] = FramePath(self.device, self.info, blend, self._color_order)
            self._network.path = self._path  # from here close() frees the path's buffers too
            self.palette = Palette.of(self.info) if palette is None else palette
            if warm_up:
                self.warm_up()
        except BaseException:
            self.close()
            raise

    @property
    def backend(self) -> Backend:
        """The backend the network runs on (:mod:`unetrt.backends`); the segmenter owns it and closes it."""
        return self._network.backend

    @backend.setter
    def backend(self, backend: Backend) -> None:
        self._network.backend = backend

    @property
    def info(self) -> ModelInfo:
        """What runs: the backend's model description, with the ``working_size`` asked for at open.

        Example:
            >>> Segmenter("camvid", working_size=(320, 240)).info.working_size  # doctest: +SKIP
            (320, 240)
        """
        return self.backend.info

    @property
    def color_order(self) -> str:
        """The channel order of the colour frames this segmenter takes and draws: 'bgr' or 'rgb' (fixed at open:
        the frame path reads the channels in it).

        Example:
            >>> Segmenter("camvid", color_order="rgb").color_order  # doctest: +SKIP
            'rgb'
        """
        return self._color_order

    @property
    def palette(self) -> Palette:
        """The class names and colours masks are drawn with (the model's own unless set).

        Raises:
            ValueError: on setting one that is no :class:`~unetrt.palette.Palette` or does not fit the model's
                classes (the message shows the palette and the classes).

        Example:
            >>> seg.palette = dataclasses.replace(seg.palette, colors=my_colors)  # doctest: +SKIP
        """
        return self._palette

    @palette.setter
    def palette(self, palette: Palette) -> None:
        if not isinstance(palette, Palette):
            raise ValueError(f"palette must be a unetrt.palette.Palette, got {palette!r}; "
                             f"e.g. dataclasses.replace(seg.palette, colors=...)")
        self._palette = palette.check_fits(self.info)

    def _open_device(self, device_path: str) -> Device[Any]:
        backend = self.backend
        on_cuda = backend.device.startswith("cuda")
        if device_path == "host" or (device_path == "auto" and not (on_cuda and isinstance(backend, DeviceBackend))):
            return HostDevice(self._network.infer)
        if not isinstance(backend, DeviceBackend) or not on_cuda:
            raise ValueError(f"device_path 'cuda' needs a backend running on CUDA with a device entry; "
                             f"{backend.name} runs on {backend.device}: use device_path='host'")
        from .cuda import MISSING_PYCUDA, pycuda_available
        from .cuda_device import MISSING_CUDA_KERNELS, CudaDevice, cuda_kernels_built

        # The GPU-resident path allocates through pycuda and runs unetrt's CUDA kernels; without either the host
        # path still runs the network on the backend's GPU.
        missing = None
        if not pycuda_available():
            missing = MISSING_PYCUDA
        elif not cuda_kernels_built():
            missing = MISSING_CUDA_KERNELS
        if device_path == "auto" and missing is not None:
            warn_caller(f"{backend.name} runs on {backend.device} but frames go through host memory: {missing}")
            return HostDevice(self._network.infer)
        return CudaDevice(backend)

    def warm_up(self) -> None:
        """Run a blank frame through the whole path when every frame reaches the network at one shape.

        That is a model with a working size and no fixed ``tile``; other models meet a shape per frame size,
        and nothing is run.

        Raises:
            ValueError: after :meth:`close`.
        """
        if self.info.working_size is not None and self.tile is None:
            width, height = self.info.working_size
            # The blank frame only compiles the shape; a network may legitimately give NaN on it (a normalisation of
            # a constant input), and every real frame is still checked.
            with contextlib.suppress(NonFiniteScoresError):
                self.segment(np.zeros((height, width, 3), np.uint8))

    def segment(self, frame: np.ndarray, probabilities: bool | None = None,
                probabilities_size: str = "frame") -> SegmentationResult:
        """Segment one frame.

        Args:
            frame: HxW gray, HxWx3 BGR or HxWx4 BGRA (RGB, RGBA with ``color_order='rgb'``); uint8, uint16 (full
                range) or float32/float64 in [0, 1]; any size.
            probabilities: override the constructor's choice for this call.
            probabilities_size: 'frame' (default) or 'working': probabilities at the working size, where the
                network saw the frame (far less memory and transfer for large frames; the mask stays at the
                frame's size).

        Returns:
            The mask at the frame's size, optional probabilities and timings.

        Raises:
            ValueError: on a wrong dtype, value range, channel count or an empty frame; after :meth:`close`; in a
                process forked from the one that opened the segmenter.
            unetrt.cuda.GpuResourceError: (a ValueError) on the GPU path, when the GPU has no memory left for this
                frame's buffers; the segmenter keeps working for frames that fit.
            RuntimeError: on the GPU path, when the GPU refuses the call's work (a kernel launch, TensorRT's
                enqueue, a CUDA driver call), in one line naming the call; the next frame is tried afresh.
        """
        return self._segment_frames([check_frame(frame)], probabilities, probabilities_size, check=False)[0]

    def segment_batch(
        self, frames: Sequence[np.ndarray], probabilities: bool | None = None, probabilities_size: str = "frame"
    ) -> list[SegmentationResult]:
        """Segment several frames; frames of equal size go through the network as one batch.

        Safe from any thread (see the class description).

        Raises:
            ValueError: when any frame is malformed (the message names its index), or on an unknown
                ``probabilities_size`` ('frame' or 'working'; 'working' not with a cleanup, which needs them at the
                frame's size), after :meth:`close`, or in a process forked from the one that opened it.
            unetrt.cuda.GpuResourceError, RuntimeError: on the GPU path, as :meth:`segment`.
        """
        if isinstance(frames, np.ndarray):
            # Iterating one frame would segment each of its rows as a gray image.
            raise ValueError(f"segment_batch takes a list of frames, got one array of shape {frames.shape}; use "
                             "segment(frame) for one frame, or segment_batch([frame, ...])")
        try:
            listed = list(frames)
        except TypeError:
            raise ValueError(f"segment_batch takes a list of frames, got {type(frames).__name__}") from None
        return self._segment_frames(listed, probabilities, probabilities_size, check=True)

    def segment_checked(self, frame: np.ndarray) -> SegmentationResult:
        """:meth:`segment` for a frame that :func:`unetrt.preprocessing.check_frame` returned, without checking
        it again (a stream checks each frame once, at capture). Safe from any thread.

        Raises:
            ValueError: after :meth:`close`, or in a process forked from the one that opened it.
        """
        return self._segment_frames([frame], None, "frame", check=False)[0]

    def _segment_frames(self, frames: Sequence[np.ndarray], probabilities: bool | None, probabilities_size: str,
                        check: bool) -> list[SegmentationResult]:
        if probabilities is not None:
            _check_probabilities(probabilities)
        if probabilities_size not in PROBABILITY_SIZES:
            raise ValueError(f"probabilities_size must be one of {PROBABILITY_SIZES}, got {probabilities_size!r}")
        if probabilities_size == "working" and self.cleanup is not None:
            raise ValueError(f"probabilities_size='working' does not go with a cleanup ({self.cleanup.mode}, the "
                             "model's stated one unless you gave it), which needs the probabilities at the frame's "
                             "size; use 'frame', or Segmenter(..., cleanup=None)")
        if os.getpid() != self._process:
            # Before any lock: one held by a call in flight in the parent at the fork stays held here for ever.
            raise ValueError(f"this segmenter was opened in process {self._process}, and this process is a fork of "
                             "it, without its threads or GPU context; open a new Segmenter here (or start processes "
                             "with multiprocessing's 'spawn' method)")
        me = threading.get_ident()
        with self._calls_done:
            # This thread's count first: a signal handler that calls close() from here on finds the call in flight.
            self._thread_calls[me] = self._thread_calls.get(me, 0) + 1
            if self._closed:
                self._leave(me)
                raise ValueError("this segmenter is closed; open a new one")
            self._calls += 1
        try:
            return self._segment_grouped(frames if not check else _checked(frames), probabilities,
                                         probabilities_size)
        finally:
            with self._calls_done:
                self._calls -= 1
                self._leave(me)
                self._calls_done.notify_all()
                deferred = self._deferred_close and self._calls == 0
            if deferred:
                self.close()

    def _leave(self, thread: int) -> None:
        left = self._thread_calls[thread] - 1
        if left:
            self._thread_calls[thread] = left
        else:
            del self._thread_calls[thread]

    def _segment_grouped(self, checked: Sequence[np.ndarray], probabilities: bool | None,
                         probabilities_size: str) -> list[SegmentationResult]:
        start = time.perf_counter()
        want_probs = self.probabilities if probabilities is None else probabilities
        groups: dict[tuple[Any, ...], list[int]] = {}
        for index, frame in enumerate(checked):
            groups.setdefault((frame.shape, frame.dtype.str), []).append(index)
        results: list[SegmentationResult | None] = [None] * len(checked)
        for indices in groups.values():
            same_size = [checked[i] for i in indices]
            try:
                segmented = self._segment_same_size(same_size, want_probs, probabilities_size)
            except NonFiniteScoresError as error:
                if len(indices) == len(checked):
                    raise
                # The error names frames by their place in the caller's list, not in their size group (the groups
                # after this one are not segmented: 0).
                counts = [0] * len(checked)
                for index, count in zip(indices, error.counts):
                    counts[index] = count
                raise error.restated(counts=counts) from None
            for index, result in zip(indices, segmented):
                results[index] = result
        # Each result's latency is the whole call's, as documented, not only its own size group's network pass.
        latency = (time.perf_counter() - start) * 1e3
        done = [r for r in results if r is not None]
        for finished in done:
            finished.latency_ms = latency
        return done

    def tile_grid(self, height: int, width: int) -> TileGrid:
        """The tile grid for a network image of ``height x width`` (after any working-size resize): one
        mirror-padded tile of the smallest legal size when the image fits the backend (and no smaller than the
        backend's ``min_input_hw``, where it has one: a shorter image is mirror-padded up to it and its output
        cropped back), else overlapping tiles.
        A backend without an input limit takes images of up to ``MAX_WHOLE_PIXELS`` whole; larger ones get the
        tiles of TensorRT's default engine profile (sides up to ``DEFAULT_MAX_SIDE``).

        Raises:
            ValueError: when the asked tile exceeds what the backend accepts, or is below its smallest input.
        """
        info, limit = self.info, self.backend.max_input_hw
        # A frame smaller than the backend's smallest input (a TensorRT profile's minimum) is mirror-padded up to it
        # and its output cropped back, as any frame is padded to a legal size; it was refused.
        least = getattr(self.backend, "min_input_hw", None) or (1, 1)
        if self.tile is None:
            whole = plan_whole(height, width, info.padding, info.depth, min_tile=least)
            if limit is None and whole.tile_hw[0] * whole.tile_hw[1] > MAX_WHOLE_PIXELS:
                # A backend without an input limit would take it whole, and its activations grow with the frame
                # (isbi: 4.8 GB at 4096x4096, 19 GB at 8192x8192): the process would be killed for memory.
                limit = (DEFAULT_MAX_SIDE, DEFAULT_MAX_SIDE)
            if limit is None or (whole.tile_hw[0] <= limit[0] and whole.tile_hw[1] <= limit[1]):
                return whole
            tile = tuple(self._largest_legal(side) for side in limit)
        else:
            tile = self.tile
            if limit is not None and (tile[0] > limit[0] or tile[1] > limit[1]):
                raise ValueError(f"tile {tile} exceeds the largest input this backend accepts, {limit}")
            if tile[0] < least[0] or tile[1] < least[1]:
                raise ValueError(f"tile {tile} is smaller than the smallest input this backend accepts, {least}: "
                                 "give a larger tile")
        overlap = self.overlap
        if overlap is None:
            # Multiples of the pooling factor keep every tile on the untiled image's pooling grid.
            multiple = info.size_multiple
            overlap = 0 if info.padding == "valid" else min(tile) // 8 // multiple * multiple
        # The last tiles start on the pooling grid too, so each sees the image as the untiled network does.
        return plan_tiles((height, width), tile, overlap, info.padding, info.depth, align=info.size_multiple,
                          min_tile=least)

    def _largest_legal(self, side: int) -> int:
        sizes = legal_sizes(1, side, self.info.padding, self.info.depth)
        if not sizes:
            raise ValueError(f"backend accepts at most {side} px, less than any legal input of this model")
        return sizes[-1]

    def _segment_same_size(self, frames: list[np.ndarray], want_probs: bool,
                           probabilities_size: str) -> list[SegmentationResult]:
        grid = self.tile_grid(*self._path.work_hw((frames[0].shape[0], frames[0].shape[1])))
        # Without a batch limit equal whole frames share one network call; tiles go in batches of 4 so that a
        # large frame's tiles never sit in memory all at once.
        batch = len(frames) if grid.count == 1 and self.backend.max_batch is None else self.backend.max_batch or 4
        cleanup = self.cleanup
        try:
            results = self._path.run(frames, grid, want_probs or cleanup is not None, batch, probabilities_size)
        except NonFiniteScoresError as error:
            # The path does not know what the network ran at; the fix the line names depends on it.
            raise error.restated(precision=self.backend.precision) from None
        masks = [r.mask for r in results]
        if cleanup is not None:
            masks = []
            for r in results:
                cleaned_from = time.perf_counter()
                masks.append(cleanup.apply(r.probabilities[0]))  # type: ignore[index]
                # The clean-up (a watershed can take longer than the network) is post-processing: left out, the
                # stages would not add up to the latency and a stream's 'postprocess' would hide it.
                r.timings_ms["postprocess"] += (time.perf_counter() - cleaned_from) * 1e3
        # The latency is the whole call's: _segment_grouped sets it once every group is done.
        return [SegmentationResult(mask, r.probabilities if want_probs else None, 0.0, r.timings_ms)
                for mask, r in zip(masks, results, strict=True)]

    def colorize(self, result: SegmentationResult) -> np.ndarray:
        """The mask as an HxWx3 uint8 image in the colours of :attr:`palette`, in :attr:`color_order` (BGR or RGB).

        Args:
            result: what :meth:`segment` returned.

        Returns:
            The coloured mask at the mask's size.

        Raises:
            ValueError: when ``result`` is not what :meth:`segment` returned.

        Example:
            >>> cv2.imwrite("mask.png", seg.colorize(seg.segment(frame)))  # a 'bgr' segmenter  # doctest: +SKIP
        """
        if not isinstance(result, SegmentationResult):
            raise ValueError(f"colorize takes the SegmentationResult that segment() returned, got "
                             f"{type(result).__name__}; for a bare mask use SegmentationResult(mask, None, 0.0)")
        palette = self.palette
        return colorize_mask(result.mask, palette.lut_rgb if self._color_order == "rgb" else palette.lut_bgr)

    def overlay(self, frame: np.ndarray, result: SegmentationResult, alpha: float = 0.5) -> np.ndarray:
        """The frame with the coloured mask blended over it: HxWx3 uint8 in the frame's order (:attr:`color_order`:
        BGR or RGB), whatever the frame's dtype and layout (any frame :meth:`segment` takes).

        Args:
            frame: the frame ``result`` is of.
            result: what :meth:`segment` returned for it.
            alpha: the weight of the mask's colours, in [0, 1].

        Returns:
            The blended picture at the frame's size.

        Raises:
            ValueError: on a frame :meth:`segment` refuses, a result that is not a :class:`SegmentationResult`, an
                alpha that is not a number in [0, 1], or frame and mask sizes that differ.

        Example:
            >>> cv2.imwrite("overlay.png", seg.overlay(frame, seg.segment(frame)))  # doctest: +SKIP
        """
        checked, colored = check_frame(frame), self.colorize(result)
        if checked.shape[:2] != colored.shape[:2]:
            raise ValueError(f"frame is {checked.shape[1]}x{checked.shape[0]} but the result's mask is "
                             f"{colored.shape[1]}x{colored.shape[0]}: overlay the frame segment() took for this "
                             "result")
        return blend(checked, colored, alpha)

    def close(self) -> None:
        """Wait for calls in flight on other threads, free the path's buffers, then release the backend
        (idempotent). In a fork() child it only marks the segmenter closed: what it holds is the parent's. From a
        signal handler that interrupted a call on the same thread it refuses later calls and returns at once; the
        release follows when that call returns."""
        if os.getpid() != self._process:
            self._closed = True
            return
        while True:
            with self._calls_done:
                self._closed = True
                if threading.get_ident() in self._thread_calls:
                    # Called from a signal handler (Stream stop, Ctrl-C) that interrupted a call on this very
                    # thread: waiting for that call would wait for ever. Later calls are refused from now on, and
                    # the last call in flight releases when it returns.
                    self._deferred_close = True
                    return
                self._calls_done.wait_for(lambda: self._calls == 0)
                # Claimed only once the wait is over: a close() interrupted while it waits (Ctrl-C) has released
                # nothing, and the next close() must release rather than wait for it for ever.
                closing, self._releasing = not self._releasing, True
                # Taken under the lock: an interrupted release swaps in a new event, which nobody may ever set.
                released = self._released
            if closing:
                break
            # Another thread's close() is releasing: closing the backend here could pull its context from under
            # that release (which then fails, leaking the path's device memory and retained context).
            released.wait()
            with self._calls_done:
                if self._released is released:
                    return
            # That release was interrupted (Ctrl-C on its thread): this close() finishes it.
        try:
            _release(self._network)
        except Exception:
            self._release_if_dropped.detach()  # a release that failed is not tried again on the release thread
            raise
        except BaseException:
            # Interrupted (Ctrl-C): the next close() finishes the release, or the release thread does once the
            # segmenter is dropped (its finalizer stays registered until a release is done).
            with self._calls_done:
                self._releasing, self._released = False, threading.Event()
            raise
        finally:
            released.set()
        self._release_if_dropped.detach()

    def __reduce__(self) -> tuple[Any, ...]:
        # Without this, pickle (a ProcessPoolExecutor given seg.segment) fails on an internal lock, naming neither
        # the segmenter nor the fix, and copy.copy shares the backend, which the copy's close() then closes.
        raise TypeError("a Segmenter cannot be pickled or copied: it holds an open backend and its buffers; open "
                        "one in each process (e.g. ProcessPoolExecutor(initializer=...) calling Segmenter(model)) "
                        "and pass frames and results, which pickle")

    def __enter__(self) -> Segmenter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class _NetworkSlot:
    """Holds a segmenter's backend and, once it is open, its frame path, so that the host path's network call and
    the release of a dropped segmenter reach them without holding the segmenter (which would then never become
    garbage)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.path: FramePath[Any] | None = None

    def infer(self, batch: np.ndarray) -> np.ndarray:
        # Looked up per call: a backend swapped in (or an infer patched onto it) after open is the one that runs.
        return self.backend.infer(batch)


def _release(network: _NetworkSlot) -> None:
    """Free what a segmenter holds: the path's buffers while the backend's CUDA context still exists, then the
    backend. Resumable: one interrupted (Ctrl-C) while it frees the path keeps the backend open, and the next call
    frees what is left, then closes the backend."""
    path = network.path
    try:
        if path is not None:
            path.release()
            network.path = None
    except Exception:
        network.backend.close()  # a path that failed to release must not keep the backend open as well
        raise
    network.backend.close()


def _tile_pair(tile: object) -> tuple[int, int]:
    """The (height, width) of a ``tile`` option: one side or a pair of sides, whole numbers of pixels."""
    pair = (tile, tile) if is_whole_number(tile) else tuple(tile) if isinstance(tile, (tuple, list)) else ()
    if len(pair) != 2 or not all(is_whole_number(side) and side > 0 for side in pair):
        raise ValueError(f"tile must be a side in pixels or a (height, width) pair of them, e.g. 256 or (192, 256), "
                         f"got {tile!r}")
    return int(pair[0]), int(pair[1])


def _check_probabilities(probabilities: object) -> None:
    # A string such as "no" would otherwise count as True.
    if not isinstance(probabilities, (bool, np.bool_)):
        raise ValueError(f"probabilities must be True or False, got {probabilities!r}")


def _checked(frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Each frame through :func:`check_frame`, a failure naming the frame's index.

    Raises:
        ValueError: on the first malformed frame.
    """
    checked = []
    for index, frame in enumerate(frames):
        try:
            checked.append(check_frame(frame))
        except ValueError as exc:
            raise ValueError(f"frame {index}: {exc}") from None
    return checked
