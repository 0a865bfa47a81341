"""The ``*_cuda`` kernel entry points of ``unetrt._tiling`` on :class:`fakes.cuda.FakeGpu` memory.

Each call becomes one piece of work on its stream (recorded while the stream captures a graph). With
``unetrt._tiling_emu`` the work calls its ``*_cuda`` entry points with the same device pointers and stream: the
CUDA build's argument checks and launchers, with the CUDA kernels of ``tiling_kernels.cuh`` run by emulation
(every block and thread of the real launch), which records the stream of every launch
(``_tiling_emu.launched_streams()``). With ``unetrt._tiling`` (the CPU kernels) the work runs its numpy entry
points on views of the fake device memory.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .cuda import FakeGpu, FakeOp


class FakeKernels:
    """:class:`unetrt.cuda_device.CudaKernels` over a fake GPU and a kernel module with the numpy entry points."""

    def __init__(self, gpu: FakeGpu, kernels: Any) -> None:
        self.gpu, self.kernels = gpu, kernels
        self.streams: list[int] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.pointers = hasattr(kernels, "launched_streams")

    def _launch(self, stream: int, kind: str, name: str, *args: Any, **kwargs: Any) -> None:
        """Queue the module's pointer entry point ``name`` with the arguments as given; its pointer checks ask the
        fake GPU what each pointer is, as the CUDA build asks cudaPointerGetAttributes."""
        entry = getattr(self.kernels, name)

        def run() -> None:
            self.kernels.set_pointer_attributes(self.gpu.pointer_attributes)
            try:
                entry(*args, stream=stream, **kwargs)
            finally:
                self.kernels.set_pointer_attributes(None)

        self._queue(stream, kind, run)

    def _queue(self, stream: int, kind: str, work: Any) -> None:
        self.streams.append(stream)
        self.gpu.enqueue(stream, FakeOp(work, kind=kind))

    def _strided(self, ptr: int, shape: tuple[int, ...], dtype: Any, strides: tuple[int, ...]) -> np.ndarray:
        dtype = np.dtype(dtype)
        extent = sum((side - 1) * stride for side, stride in zip(shape, strides)) + dtype.itemsize
        return np.ndarray(shape, dtype, buffer=self.gpu.bytes_at(ptr, extent), strides=strides)

    def extract_tiles_cuda(self, image_ptr: int, image_hw: tuple[int, int], channels: int,
                           image_strides: tuple[int, int, int], image_dtype: str, out_ptr: int,
                           out_shape: tuple[int, ...], out_dtype: str, *, stream: int, **kwargs: Any) -> None:
        if self.pointers:
            self._launch(stream, "extract", "extract_tiles_cuda", image_ptr, image_hw, channels, image_strides,
                         image_dtype, out_ptr, out_shape, out_dtype, **kwargs)
            return
        image = self._strided(image_ptr, (*image_hw, channels), image_dtype, image_strides)
        out = self.gpu.view(out_ptr, tuple(out_shape), out_dtype)
        self._queue(stream, "extract", lambda: self.kernels.extract_tiles(image, out, **kwargs))

    def stitch_tiles_cuda(self, tiles_ptr: int, tiles_shape: tuple[int, ...], tiles_dtype: str, acc_ptr: int,
                          acc_shape: tuple[int, ...], weight_ptr: int, *, window_y_ptr: int, window_x_ptr: int,
                          stream: int, **kwargs: Any) -> None:
        if self.pointers:
            self._launch(stream, "stitch", "stitch_tiles_cuda", tiles_ptr, tiles_shape, tiles_dtype, acc_ptr,
                         acc_shape, weight_ptr, window_y_ptr=window_y_ptr, window_x_ptr=window_x_ptr, **kwargs)
            return
        view = self.gpu.view
        tiles, acc = view(tiles_ptr, tuple(tiles_shape), tiles_dtype), view(acc_ptr, tuple(acc_shape), np.float32)
        weight = view(weight_ptr, tuple(acc_shape[1:]), np.float32) if weight_ptr else None
        windows = {}
        if window_y_ptr:
            windows = {"window_y": view(window_y_ptr, (tiles_shape[2],), np.float32),
                       "window_x": view(window_x_ptr, (tiles_shape[3],), np.float32)}
        self._queue(stream, "stitch", lambda: self.kernels.stitch_tiles(tiles, acc, weight, **kwargs, **windows))

    def _counted(self, nonfinite_ptr: int, count: int) -> None:
        """What the CUDA build does with a count of non-finite pixels: add it to the device counter, if any."""
        if nonfinite_ptr:
            self.gpu.view(nonfinite_ptr, (1,), np.uint64)[0] += np.uint64(count)

    def finish_cuda(self, acc_ptr: int, acc_shape: tuple[int, ...], weight_ptr: int, mask_ptr: int, *,
                    binary: bool, threshold: float, write_logits: bool, nonfinite_ptr: int = 0, stream: int) -> None:
        self.calls.append(("finish", {"weight_ptr": weight_ptr, "mask_ptr": mask_ptr, "write_logits": write_logits,
                                      "nonfinite_ptr": nonfinite_ptr}))
        if self.pointers:
            self._launch(stream, "normalise", "finish_cuda", acc_ptr, acc_shape, weight_ptr, mask_ptr, binary=binary,
                         threshold=threshold, write_logits=write_logits, nonfinite_ptr=nonfinite_ptr)
            return
        view = self.gpu.view
        acc = view(acc_ptr, tuple(acc_shape), np.float32)
        weight = view(weight_ptr, tuple(acc_shape[1:]), np.float32) if weight_ptr else None
        mask = view(mask_ptr, tuple(acc_shape[1:]), np.uint8) if mask_ptr else None
        self._queue(stream, "normalise", lambda: self._counted(nonfinite_ptr, self.kernels.finish(
            acc, weight, mask, binary=binary, threshold=threshold, write_logits=write_logits)))

    def finish_resized_cuda(self, scores_ptr: int, scores_shape: tuple[int, ...], scores_dtype: str, mask_ptr: int,
                            mask_hw: tuple[int, int], *, rect: tuple[int, int, int, int], weight_ptr: int,
                            binary: bool, threshold: float, probabilities_ptr: int, nonfinite_ptr: int = 0,
                            stream: int) -> None:
        self.calls.append(("finish_resized", {"weight_ptr": weight_ptr, "nonfinite_ptr": nonfinite_ptr}))
        if self.pointers:
            self._launch(stream, "finish", "finish_resized_cuda", scores_ptr, scores_shape, scores_dtype, mask_ptr,
                         mask_hw, rect=rect, weight_ptr=weight_ptr, binary=binary, threshold=threshold,
                         probabilities_ptr=probabilities_ptr, nonfinite_ptr=nonfinite_ptr)
            return
        view = self.gpu.view
        scores = view(scores_ptr, tuple(scores_shape), scores_dtype)
        mask = view(mask_ptr, tuple(mask_hw), np.uint8) if mask_ptr else None
        weight = view(weight_ptr, tuple(scores_shape[1:]), np.float32) if weight_ptr else None
        probs = view(probabilities_ptr, (scores_shape[0], *mask_hw), np.float32) if probabilities_ptr else None
        self._queue(stream, "finish", lambda: self._counted(nonfinite_ptr, self.kernels.finish_resized(
            scores, mask, rect=rect, weight=weight, binary=binary, threshold=threshold, probabilities=probs)))

    def resize_bilinear_cuda(self, image_ptr: int, image_shape: tuple[int, int, int], image_dtype: str, out_ptr: int,
                             out_hw: tuple[int, int], *, stream: int) -> None:
        if self.pointers:
            self._launch(stream, "resize", "resize_bilinear_cuda", image_ptr, image_shape, image_dtype, out_ptr,
                         out_hw)
            return
        image = self.gpu.view(image_ptr, tuple(image_shape), image_dtype)
        out = self.gpu.view(out_ptr, (*out_hw, image_shape[2]), image_dtype)
        self._queue(stream, "resize", lambda: self.kernels.resize_bilinear(image, out))
