"""The device layer of the frame-to-mask path: where buffers live and which kernels run on them.

:class:`unetrt.frame_path.FramePath` drives every frame through the same steps on any :class:`Device`:
prepare (upload and working-size resize), extract (the native tile kernel), run (the network), shift and
stitch (several tiles), finish (bilinear resize fused with argmax/threshold and probabilities) and download.
:class:`HostDevice` runs them on numpy arrays with the CPU kernels of :mod:`unetrt._tiling`;
:class:`unetrt.cuda_device.CudaDevice` enqueues the ``*_cuda`` kernels and the backend on one CUDA stream.
Only these thin calls differ, so the CPU tests exercise the orchestration the GPU runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol, TypeVar

import numpy as np
from numpy.typing import NDArray

from . import _tiling  # type: ignore[attr-defined,unused-ignore]  # the native extension has no stub
from .cpu import usable_cores
from .tiling import shift_tile_output

BufferT = TypeVar("BufferT")
# A kernel call on a camera frame (a 480x360 mask from 11 classes: 1.9 M values) takes about a millisecond on one
# thread; starting threads for it saves less than it costs, and on a loaded machine the started threads wait for a
# core (measured under load 12 on 2 cores: 2.5 ms per frame on one thread, 15.6 ms on two).
ELEMENTS_PER_THREAD = 1 << 22
Predictor = Callable[[NDArray[Any]], NDArray[Any]]


class Device(Protocol[BufferT]):
    """Buffers and kernels of one place the path runs (host memory, or one CUDA stream).

    Buffers are C-contiguous arrays of a shape and dtype. Every method may return before its work is done
    (the CUDA device enqueues on its stream); :meth:`synchronize` waits for all of it. Outputs of
    :meth:`download` are valid after :meth:`synchronize`.

    Attributes:
        name: where it runs, in words.
        reuses_outputs: whether :meth:`download` hands out the same host array on every call (copy what you keep).
        input_dtype: the network input's dtype (float32 or float16).

    A device may also set ``concurrent = True``: sessions of several threads may then overlap, each working on
    buffers of its own (:class:`HostDevice`). Without it :class:`unetrt.frame_path.FramePath` runs one call
    at a time on the device.
    """

    name: str
    reuses_outputs: bool
    input_dtype: np.dtype[Any]

    def session(self) -> AbstractContextManager[None]:
        """Hold the device for one call of the path (all other methods run inside a session)."""
        ...

    def prepare(self, frame: NDArray[Any], work_hw: tuple[int, int] | None, slot: int) -> BufferT:
        """The frame on the device at the working size (height, width), or as it is when ``work_hw`` is None.

        ``slot`` numbers the frames of one call; a device may reuse its buffers for the same slot and shape.
        """
        ...

    def shape(self, buffer: BufferT) -> tuple[int, ...]:
        """The buffer's shape."""
        ...

    def allocate(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> BufferT:
        """A new uninitialised buffer."""
        ...

    def output(self, shape: tuple[int, ...], dtype: np.dtype[Any], key: object) -> BufferT:
        """A buffer for a result (mask, probabilities); a device may hand out the same one for the same key."""
        ...

    def constant(self, array: NDArray[Any]) -> BufferT:
        """A buffer holding a copy of ``array``."""
        ...

    def free(self, buffer: BufferT) -> None:
        """Free a buffer from :meth:`allocate` or :meth:`constant` now (inside a session); a recorded launch that may
        use it is not replayed again."""
        ...

    def zero(self, buffer: BufferT) -> None:
        """Set every element of a float32 or uint64 buffer to 0."""
        ...

    def part(self, buffer: BufferT, start: int, stop: int) -> BufferT:
        """Rows ``start:stop`` of the first axis (no copy)."""
        ...

    def item(self, buffer: BufferT, index: int) -> BufferT:
        """Row ``index`` of the first axis, without that axis (no copy)."""
        ...

    def extract(self, image: BufferT, out: BufferT, *, origin: tuple[int, int], step: tuple[int, int],
                grid: tuple[int, int], first: int, swap_rb: bool, scale: float, mean: Sequence[float],
                std: Sequence[float]) -> None:
        """Cut normalised tiles of ``image`` into ``out`` (``unetrt._tiling.extract_tiles``)."""
        ...

    def run(self, batch: BufferT) -> BufferT:
        """The network's N x K x h x w outputs for an N x C x H x W batch."""
        ...

    def shift(self, tiles: BufferT, index: int, axis: int, pixels: int) -> None:
        """Move tile ``index``'s output ``pixels`` toward the start of ``axis`` (2 rows, 3 columns)."""
        ...

    def stitch(self, tiles: BufferT, acc: BufferT, weight: BufferT | None, *, origin: tuple[int, int],
               step: tuple[int, int], grid: tuple[int, int], first: int, mode: str,
               window_y: BufferT | None, window_x: BufferT | None) -> None:
        """Add tile outputs into a K x H x W accumulator (``unetrt._tiling.stitch_tiles``)."""
        ...

    def finish(self, scores: BufferT, mask: BufferT | None, probabilities: BufferT | None, *,
               rect: tuple[int, int, int, int], weight: BufferT | None, binary: bool,
               nonfinite: BufferT | None = None) -> None:
        """Resize ``rect`` of K x h x w scores bilinearly to the mask's size, fused with argmax (threshold 0 when
        binary) and optional softmax/sigmoid probabilities (``unetrt._tiling.finish_resized``); without a mask,
        the probabilities alone at their own size. The kernel adds the count of output pixels whose best resized score
        (the argmax's, a binary model's one) is NaN or infinite to ``nonfinite`` (one uint64, zeroed by the caller;
        None: not counted).

        With a ``weight`` (blended tiles), the scores are the float32 stitch accumulator and are divided by it in
        place first, once per source pixel (``unetrt._tiling.finish`` with ``write_logits``), not at every
        bilinear tap of every class."""
        ...

    def download(self, buffer: BufferT) -> NDArray[Any]:
        """The buffer's contents as a host array (valid after :meth:`synchronize`)."""
        ...

    def launch(self, key: object, enqueue: Callable[[], None]) -> None:
        """Run ``enqueue()``, which calls this device's methods on buffers that stay fixed for ``key``; a device
        may record it once and replay it for later calls with the same key (a CUDA graph)."""
        ...

    def synchronize(self) -> None:
        """Wait for all work given to this device."""
        ...

    def release(self) -> None:
        """Free the buffers and graphs the device keeps between calls (inside a session)."""
        ...


Freed = TypeVar("Freed")


def free_each(free: Callable[[Freed], None], items: Iterable[Freed]) -> None:
    """Call ``free`` on every item, then raise the first error any call raised.

    A Ctrl-C (or a failed free) between two frees would otherwise leave the rest to the error's traceback: freed
    only when the traceback goes, and only where its thread can make their context current ([FREE-REACH]).

    Args:
        free: what frees one item (a device's ``free``, a driver's).
        items: the items, each freed once.

    Raises:
        BaseException: the first error a ``free`` raised, once every item has been tried.

    Example:
        >>> freed = []
        >>> free_each(freed.append, [1, 2])
        >>> freed
        [1, 2]
    """
    first_error: BaseException | None = None
    for item in items:
        try:
            free(item)
        except BaseException as error:  # raised below, once the rest are freed
            first_error = first_error or error
    if first_error is not None:
        raise first_error


def resize_frame(frame: NDArray[Any], work_hw: tuple[int, int], threads: int = 1) -> NDArray[Any]:
    """A frame at the working size (height, width), bilinear (OpenCV INTER_LINEAR's half-pixel centres), as the
    kernels take it: float64 frames become float32 (before the resize), other dtypes keep theirs.

    Every frame dtype goes through the native ``resize_bilinear``, the GPU path's ``resize_bilinear_cuda`` on the CPU,
    so the host and GPU paths give the network the same image bit for bit (``cv2.resize`` rounds uint8 in fixed
    point, up to a level away, which changed about 0.1 % of camvid's mask pixels between the two paths; until
    2026-12-07 uint16 and float frames were resized by OpenCV, on the host on both paths). Bilinear, not the area
    average training used: it scored CamVid val mIoU 57.10 against 56.69 with INTER_AREA (pixel accuracy 85.17
    against 85.36).

    Args:
        frame: a checked frame (:func:`unetrt.preprocessing.check_frame`), any strides.
        work_hw: the working size.
        threads: CPU threads for the kernel.

    Example:
        >>> resize_frame(np.zeros((360, 480, 3), np.uint8), (192, 256)).shape
        (192, 256, 3)
    """
    if frame.dtype == np.float64:
        # The kernels compute in float32; [0, 1] pixel values lose nothing a network sees.
        frame = frame.astype(np.float32)
    if frame.shape[:2] == work_hw:
        return frame
    # The kernel takes no view with a channel stride (a BGRA frame without its alpha): copy those.
    frame = np.ascontiguousarray(frame)
    out = np.empty((*work_hw, *frame.shape[2:]), frame.dtype)
    _tiling.resize_bilinear(frame, out, threads=threads)
    return out


class HostDevice:
    """The path on the CPU: numpy buffers, the CPU kernels of :mod:`unetrt._tiling`, any predictor as network.

    Args:
        predictor: N x C x H x W float32 batch -> N x K x h x w outputs (e.g. ``backend.infer``).
        input_dtype: the network input's dtype (float32 or float16).
        threads: CPU threads for the kernels; 0 picks per call: one thread per :data:`ELEMENTS_PER_THREAD` the
            call writes, at most one per usable core.

    Calls from several threads may overlap (``concurrent``): the device keeps no state between calls, the
    kernels write only the buffers they are given, and the predictor must be safe from several threads (every
    backend's ``infer`` is: ONNX Runtime's ``run`` and torch's forward in inference mode are; OpenVINO and
    TensorRT hold a lock around their one request or execution context).

    Raises:
        ValueError: on a negative thread count.

    Example:
        >>> device = HostDevice(lambda batch: batch.copy())
        >>> device.run(np.zeros((1, 3, 8, 8), np.float32)).shape
        (1, 3, 8, 8)
    """

    name = "cpu"
    reuses_outputs = False
    concurrent = True

    def __init__(self, predictor: Predictor, input_dtype: Any = np.float32, threads: int = 0) -> None:
        if threads < 0:
            raise ValueError(f"threads must be >= 0 (0 = automatic), got {threads}")
        self.predictor = predictor
        self.input_dtype = np.dtype(input_dtype)
        self.threads = threads
        self._cores = usable_cores()

    def threads_for(self, elements: int) -> int:
        """Kernel threads for a call that writes ``elements`` values.

        Example:
            >>> HostDevice(lambda b: b).threads_for(1000)
            1
        """
        if self.threads:
            return self.threads
        return max(1, min(self._cores, elements // ELEMENTS_PER_THREAD))

    def session(self) -> AbstractContextManager[None]:
        """See :meth:`Device.session`: nothing to hold on the host."""
        return nullcontext()

    def prepare(self, frame: NDArray[Any], work_hw: tuple[int, int] | None, slot: int) -> NDArray[Any]:
        """See :meth:`Device.prepare`: :func:`resize_frame`; float64 frames become float32 for the kernels."""
        if work_hw is None:
            return frame.astype(np.float32) if frame.dtype == np.float64 else frame
        channels = frame.shape[2] if frame.ndim == 3 else 1
        return resize_frame(frame, work_hw, self.threads_for(work_hw[0] * work_hw[1] * channels))

    def shape(self, buffer: NDArray[Any]) -> tuple[int, ...]:
        """See :meth:`Device.shape`."""
        return tuple(buffer.shape)

    def allocate(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> NDArray[Any]:
        """See :meth:`Device.allocate`."""
        return np.empty(shape, dtype)

    def output(self, shape: tuple[int, ...], dtype: np.dtype[Any], key: object) -> NDArray[Any]:
        """See :meth:`Device.output`: a new array on every call, so results never share memory."""
        return np.empty(shape, dtype)

    def constant(self, array: NDArray[Any]) -> NDArray[Any]:
        """See :meth:`Device.constant`."""
        return np.array(array, order="C", copy=True)

    def free(self, buffer: NDArray[Any]) -> None:
        """See :meth:`Device.free`: host memory goes with its last reference (a call in flight may hold one)."""

    def zero(self, buffer: NDArray[Any]) -> None:
        """See :meth:`Device.zero`."""
        buffer.fill(0)

    def part(self, buffer: NDArray[Any], start: int, stop: int) -> NDArray[Any]:
        """See :meth:`Device.part`."""
        return buffer[start:stop]

    def item(self, buffer: NDArray[Any], index: int) -> NDArray[Any]:
        """See :meth:`Device.item`."""
        return buffer[index, ...]

    def extract(self, image: NDArray[Any], out: NDArray[Any], *, origin: tuple[int, int], step: tuple[int, int],
                grid: tuple[int, int], first: int, swap_rb: bool, scale: float, mean: Sequence[float],
                std: Sequence[float]) -> None:
        """See :meth:`Device.extract`."""
        _tiling.extract_tiles(image, out, origin=origin, step=step, grid=grid, first=first, swap_rb=swap_rb,
                              scale=scale, mean=list(mean), std=list(std), threads=self.threads_for(out.size))

    def run(self, batch: NDArray[Any]) -> NDArray[Any]:
        """See :meth:`Device.run`: the predictor's outputs as contiguous float32 or float16.

        Raises:
            ValueError: when the predictor returns no 4-D numpy array.
        """
        outputs = self.predictor(batch)
        if not isinstance(outputs, np.ndarray) or outputs.ndim != 4:
            raise ValueError(f"predictor must return an N x K x h x w numpy array, got "
                             f"{getattr(outputs, 'shape', type(outputs).__name__)}")
        if outputs.dtype not in (np.float32, np.float16):
            outputs = outputs.astype(np.float32)
        return np.ascontiguousarray(outputs)

    def shift(self, tiles: NDArray[Any], index: int, axis: int, pixels: int) -> None:
        """See :meth:`Device.shift`."""
        shift_tile_output(tiles[index], axis - 1, pixels)

    def stitch(self, tiles: NDArray[Any], acc: NDArray[Any], weight: NDArray[Any] | None, *, origin: tuple[int, int],
               step: tuple[int, int], grid: tuple[int, int], first: int, mode: str,
               window_y: NDArray[Any] | None, window_x: NDArray[Any] | None) -> None:
        """See :meth:`Device.stitch`."""
        _tiling.stitch_tiles(tiles, acc, weight, origin=origin, step=step, grid=grid, first=first, mode=mode,
                             window_y=window_y, window_x=window_x, threads=self.threads_for(acc.size))

    def finish(self, scores: NDArray[Any], mask: NDArray[Any] | None, probabilities: NDArray[Any] | None, *,
               rect: tuple[int, int, int, int], weight: NDArray[Any] | None, binary: bool,
               nonfinite: NDArray[Any] | None = None) -> None:
        """See :meth:`Device.finish`: the CPU kernel returns its count."""
        if weight is not None:
            _tiling.finish(scores, weight, write_logits=True, threads=self.threads_for(scores.size))
        out = mask if mask is not None else probabilities
        assert out is not None  # the frame path asks for a mask, probabilities or both
        pixels = out.shape[-2] * out.shape[-1]
        written = pixels * (scores.shape[0] if probabilities is None else 2 * scores.shape[0])
        count = _tiling.finish_resized(scores, mask, rect=rect, binary=binary, threshold=0.0,
                                       probabilities=probabilities, threads=self.threads_for(written))
        if nonfinite is not None:
            nonfinite += np.uint64(count)

    def download(self, buffer: NDArray[Any]) -> NDArray[Any]:
        """See :meth:`Device.download` (host buffers are returned as they are)."""
        return buffer

    def launch(self, key: object, enqueue: Callable[[], None]) -> None:
        """See :meth:`Device.launch`: runs ``enqueue()`` now."""
        enqueue()

    def synchronize(self) -> None:
        """See :meth:`Device.synchronize`: host work is done when its call returns."""

    def release(self) -> None:
        """See :meth:`Device.release`: the host device keeps nothing between calls."""
