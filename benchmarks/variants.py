"""What unet-bench compares: the backend variants and the runners that time one call of each.

A variant is one way of running the model (PyTorch eager FP32, FP16, channels-last,
CUDA graphs, ONNX Runtime FP32 and INT8, OpenVINO FP32, BF16 and INT8, TensorRT, and the pipeline a CPU user
writes by hand around OpenVINO INT8). A runner holds that variant open on a prepared input and does one timed call
per :meth:`Runner.step`, in one of three modes:

* ``bare``: a prepared, normalised host batch through ``backend.infer`` (host to host);
* ``device``: the bare network on an input already on the device, output left there
  (``--no-data-transfers``, like trtexec);
* ``end-to-end``: uint8 HWC frames on the host to masks on the host through
  ``Segmenter.segment_batch``, all pre- and post-processing included (the hand-written row: its own code,
  :class:`HandWrittenPipeline`).
"""

from __future__ import annotations

import dataclasses
import gc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, cast

import cv2
import numpy as np
from numpy.typing import NDArray

from unetrt.backends import Backend, open_backend
from unetrt.backends.registry import registered_backends
from unetrt.frame_path import network_input
from unetrt.model_info import ModelInfo
from unetrt.paths import check_utf8_name
from unetrt.segmenter import Segmenter

if TYPE_CHECKING:
    from unetrt.backends.base import ResidentBackend, ResidentBatch

MODES = ("bare", "device", "end-to-end")
BASELINE = "torch-fp32"
HAND_WRITTEN = "hand-written-openvino-int8"


@dataclass(frozen=True)
class Variant:
    """One way of running the model.

    Attributes:
        key: the name used on the command line and in results (e.g. 'torch-cuda-graphs').
        label: the name shown in tables.
        backend: the registered unetrt backend it runs on (:mod:`unetrt.backends.registry`).
        half: FP16 weights and activations (torch variants).
        quantized: runs the QDQ INT8 model (``NAME.int8.onnx``) instead of the FP32 one.
        bf16: OpenVINO's BF16 inference-precision hint on the FP32 model.
        channels_last: channels-last memory format (torch variants).
        cuda_graphs: replay a captured CUDA graph (torch variants).
        needs_cuda: skipped on a CPU device.
        hand_written: not unetrt at all, but :class:`HandWrittenPipeline` (end-to-end mode only).
    """

    key: str
    label: str
    backend: str
    half: bool = False
    channels_last: bool = False
    cuda_graphs: bool = False
    needs_cuda: bool = False
    quantized: bool = False
    bf16: bool = False
    hand_written: bool = False

    @property
    def precision(self) -> str:
        """'int8', 'bf16', 'fp16' or 'fp32'; TensorRT's precision is the one its plan was built with."""
        if self.backend == "tensorrt":
            return "plan"
        if self.quantized:
            return "int8"
        if self.bf16:
            return "bf16"
        return "fp16" if self.half else "fp32"

    @property
    def file_key(self) -> str:
        """Which of a model's files it runs: 'int8' (the QDQ model), else its backend's own file."""
        return "int8" if self.quantized else self.backend


def torch_variants(precision: str) -> list[Variant]:
    """The PyTorch variants; ``precision`` ('fp32' or 'fp16') applies to channels-last and CUDA graphs."""
    half = precision == "fp16"
    suffix = precision.upper()
    return [
        Variant(BASELINE, "PyTorch eager FP32", "torch"),
        Variant("torch-fp16", "PyTorch eager FP16", "torch", half=True, needs_cuda=True),
        Variant("torch-channels-last", f"PyTorch channels_last {suffix}", "torch", half=half, channels_last=True,
                needs_cuda=half),
        Variant("torch-cuda-graphs", f"PyTorch CUDA graphs {suffix}", "torch", half=half, cuda_graphs=True,
                needs_cuda=True),
    ]


def registered_variants() -> list[Variant]:
    """The rows every registered backend declares (:class:`unetrt.backends.registry.BenchRow`), in registration
    order."""
    return [Variant(row.key, row.label, spec.name, needs_cuda=row.needs_cuda, quantized=row.precision == "int8",
                    bf16=row.precision == "bf16")
            for spec in registered_backends() for row in spec.bench_rows]


def all_variants(precision: str) -> dict[str, Variant]:
    """Every variant by key: the PyTorch ones (eager, channels-last and CUDA-graph runs of the checkpoint, which
    only a benchmark needs), the registered backends' rows, and the hand-written OpenVINO pipeline."""
    variants = [*torch_variants(precision), *registered_variants(),
                Variant(HAND_WRITTEN, "Hand-written OpenVINO INT8 (cv2 + numpy)", "openvino", quantized=True,
                        hand_written=True)]
    return {v.key: v for v in variants}


class Runner(Protocol):
    """An open variant on a prepared input: :meth:`step` is one timed call."""

    device: str
    threads: int | None

    def step(self) -> None:
        """Run once. Work on torch's current stream may be only enqueued (the timer's CUDA events synchronise it);
        work on a stream of the runner's own is waited for here, as no timer sees that stream."""
        ...

    def checked_step(self) -> NDArray[Any] | None:
        """Run once as :meth:`step` does, untimed (a warm-up call), and return the network's output copied to the
        host (N x K x H x W) for the check of its values; None where the call checks them itself (end-to-end:
        ``Segmenter`` refuses NaN or infinite scores) or makes no network output of unetrt's (hand-written)."""
        ...

    def close(self) -> None:
        """Release everything the runner holds."""
        ...


@dataclass(frozen=True)
class Workload:
    """The input one run measures.

    Attributes:
        mode: 'bare', 'device' or 'end-to-end'.
        frame_hw: (height, width) of the camera frames (end-to-end) or of the image the batch is prepared from.
        batch: images per call.
        seed: seed of the random frame content.
        images: image files to take the frames from (the first ``batch``, again from the first when fewer),
            resized to ``frame_hw`` where they differ; empty: random frames. Photographs give a network's
            scores the class regions of a scene, random pixels do not.
    """

    mode: str
    frame_hw: tuple[int, int]
    batch: int
    seed: int = 0
    images: tuple[Path, ...] = ()

    def frames(self, info: ModelInfo) -> list[np.ndarray]:
        """``batch`` uint8 frames (BGR, or gray for 1-channel models): random, or read from ``images``.

        Raises:
            ValueError: when an image file cannot be read, or its name is not valid UTF-8 (OpenCV would crash
                on it).
        """
        if not self.images:
            rng = np.random.default_rng(self.seed)
            shape = self.frame_hw if info.in_channels == 1 else (*self.frame_hw, 3)
            return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(self.batch)]
        flag = cv2.IMREAD_GRAYSCALE if info.in_channels == 1 else cv2.IMREAD_COLOR
        frames = []
        for index in range(self.batch):
            path = self.images[index % len(self.images)]
            frame = cv2.imread(check_utf8_name(path, "image"), flag)
            if frame is None:
                raise ValueError(f"cannot read {str(path)!r} as an image")
            if frame.shape[:2] != self.frame_hw:
                frame = cv2.resize(frame, (self.frame_hw[1], self.frame_hw[0]), interpolation=cv2.INTER_AREA)
            frames.append(frame)
        return frames

    def network_batch(self, info: ModelInfo) -> np.ndarray:
        """The normalised, mirror-padded N x C x H x W batch the bare modes feed the network."""
        # The bare modes feed the network the frame itself: no working-size resize.
        return network_input(self.frames(info), dataclasses.replace(info, working_size=None))


def _torch() -> Any:
    import torch

    return torch


class _TorchGraph:
    """A torch CUDA graph as :class:`unetrt.cuda.Graph` (torch replays on its current stream)."""

    def __init__(self, graph: Any) -> None:
        self._graph = graph

    @classmethod
    def capture(cls, torch: Any, enqueue: Callable[[], None]) -> _TorchGraph | None:
        """Capture ``enqueue()``; None when torch refuses the capture."""
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                enqueue()
        except RuntimeError:
            return None
        return cls(graph)

    def launch(self, stream_handle: int) -> None:
        """Replay (torch uses its current stream)."""
        self._graph.replay()

    def destroy(self) -> None:
        """Free the graph's memory pool."""
        self._graph.reset()


class CudaGraphBackend:
    """A PyTorch checkpoint replayed as a captured CUDA graph, under unetrt's one graph policy
    (:class:`unetrt.cuda.GraphCache`: the first call of a shape is the eager warm-up, the second is captured,
    later calls replay; a new shape drops the graph; a failed capture runs that shape eagerly, with a warning).

    Implements the :class:`unetrt.backends.Backend` protocol, so ``Segmenter`` can use it.

    Args:
        path: the ``.pt`` checkpoint.
        half: FP16 weights and activations.

    Raises:
        ValueError: when torch sees no CUDA GPU.

    Example:
        >>> with CudaGraphBackend("best.pt", half=True) as net:  # doctest: +SKIP
        ...     logits = net.infer(batch)
    """

    name = "torch"
    max_input_hw: tuple[int, int] | None = None
    max_batch: int | None = None
    threads: int | None = None

    def __init__(self, path: str | Path, half: bool = False) -> None:
        torch = _torch()
        from unetrt.cuda import GraphCache
        from unetrt.export.checkpoint import load_model

        if not torch.cuda.is_available():
            raise ValueError("CUDA graphs need a CUDA GPU; torch sees none")
        self._torch = torch
        self._dtype = torch.float16 if half else torch.float32
        self.path = Path(path)
        self.precision = "fp16" if half else "fp32"
        model, self.info = load_model(path, map_location="cuda")
        self._model: Any = model.to("cuda", self._dtype)
        self.device = f"cuda ({torch.cuda.get_device_name()})"
        self._graphs = GraphCache(lambda enqueue: _TorchGraph.capture(torch, enqueue), "the PyTorch model")
        self._static_in: Any = None
        self._static_out: Any = None

    def run(self, shape: tuple[int, ...]) -> Any:
        """Run the model on the static input of ``shape`` (:meth:`static_input`) under the graph policy; the
        output tensor (valid once the stream reaches it)."""
        if self._model is None:
            raise ValueError("this backend is closed; open a new one")
        torch = self._torch

        def enqueue() -> None:
            with torch.inference_mode():
                if torch.cuda.is_current_stream_capturing():
                    self._static_out = self._model(self._static_in)
                    return
                # Eager runs go on a side stream, as torch.cuda.graphs requires of the warm-up before capture.
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    self._static_out = self._model(self._static_in)
                torch.cuda.current_stream().wait_stream(side)

        self._graphs.run(shape, torch.cuda.current_stream().cuda_stream, enqueue)
        return self._static_out

    def static_input(self, shape: tuple[int, ...]) -> Any:
        """The device tensor that :meth:`run` reads for ``shape`` (made anew when the shape changes)."""
        if self._static_in is None or tuple(self._static_in.shape) != shape:
            self._graphs.invalidate()
            self._static_in = self._torch.zeros(shape, device="cuda", dtype=self._dtype)
        return self._static_in

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """N x C x H x W float32 -> N x K x h x w float32 logits (host to host)."""
        from unetrt.backends import check_batch

        batch = check_batch(batch, self.info)
        shape = tuple(int(d) for d in batch.shape)
        self.static_input(shape).copy_(self._torch.from_numpy(batch))
        return self.run(shape).float().cpu().numpy()  # type: ignore[no-any-return,unused-ignore]

    def close(self) -> None:
        """Drop graphs and model and return cached GPU memory (idempotent)."""
        self._graphs.clear()
        self._model = self._static_in = self._static_out = None
        self._torch.cuda.empty_cache()

    def __enter__(self) -> CudaGraphBackend:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def open_variant_backend(variant: Variant, model: Path, device: str, threads: int | None) -> Backend:
    """The unetrt backend of a variant on ``device`` ('cpu' or 'cuda').

    Raises:
        ValueError, ImportError, FileNotFoundError: from the backend (unavailable library, device or file).
    """
    if variant.cuda_graphs:
        return CudaGraphBackend(model, half=variant.half)
    if variant.backend == "torch":
        return open_backend(model, "torch", device, threads=threads, half=variant.half,
                            channels_last=variant.channels_last)
    return open_backend(model, variant.backend, device, _asked_precision(variant), threads=threads)


def _asked_precision(variant: Variant) -> str:
    """A registered row's precision request: its hint ('bf16'), else the file's own."""
    return "bf16" if variant.bf16 else "auto"


class BackendRunner:
    """Bare mode: a prepared host batch through ``backend.infer``."""

    def __init__(self, backend: Backend, batch: np.ndarray) -> None:
        self._backend = backend
        self._batch = batch
        self.device = backend.device
        self.threads = backend.threads

    def step(self) -> None:
        """One host-to-host inference."""
        self._backend.infer(self._batch)

    def checked_step(self) -> NDArray[Any]:
        """One host-to-host inference, its logits returned."""
        return np.asarray(self._backend.infer(self._batch))

    def close(self) -> None:
        """Close the backend."""
        self._backend.close()


class SegmenterRunner:
    """End-to-end mode: uint8 frames to masks through ``Segmenter.segment_batch``."""

    def __init__(self, segmenter: Segmenter, frames: list[np.ndarray]) -> None:
        self._segmenter = segmenter
        self._frames = frames
        self.device = segmenter.backend.device
        self.threads = segmenter.backend.threads

    def step(self) -> None:
        """Frames in, masks out, all processing included."""
        self._segmenter.segment_batch(self._frames)

    def checked_step(self) -> None:
        """As :meth:`step`: ``segment_batch`` refuses NaN or infinite scores itself."""
        self.step()

    def close(self) -> None:
        """Close the segmenter and its backend."""
        self._segmenter.close()


def open_variant_segmenter(variant: Variant, model: Path, device: str, threads: int | None) -> Segmenter:
    """A ``Segmenter`` running the variant, for the end-to-end mode.

    Raises:
        ValueError, ImportError, FileNotFoundError: from the backend (unavailable library, device or file).
    """
    if variant.backend != "torch":
        return Segmenter(model, variant.backend, device, precision=_asked_precision(variant), threads=threads)
    segmenter = Segmenter(model, "torch", device, threads=threads, half=variant.half,
                          channels_last=variant.channels_last)
    if variant.cuda_graphs:
        # CUDA graphs are no open_backend option: swap the eager backend for the graph replayer.
        segmenter.backend.close()
        segmenter.backend = CudaGraphBackend(model, half=variant.half)
    return segmenter


class HandWrittenPipeline:
    """The frame-to-mask pipeline a CPU user writes by hand around OpenVINO, as a yardstick for unetrt.

    The recipe, written plainly: the QDQ INT8 ONNX model (``NAME.int8.onnx``, ONNX Runtime's static
    quantization of the FP32 model) compiled by OpenVINO for the one input shape; per frame an OpenCV bilinear
    resize to that shape, BGR -> RGB, scaling and normalisation in numpy, HWC -> NCHW, the infer request, a
    numpy argmax over the classes (a threshold at 0 for a binary model) and an OpenCV nearest-neighbour resize of
    the labels back to the frame's size.
    Its masks are unetrt's up to where the two resizes differ (nearest labels against bilinear scores).

    Args:
        model: the INT8 (or any) ONNX file.
        info: the model's description (working size, mean, std, channels).
        frame_hw: (height, width) of the frames, for a model without a working size.
        threads: OpenVINO inference threads (None: OpenVINO's default).

    Raises:
        ValueError: for a 'valid'-padding model (it needs the mirror-padded context this recipe does not cut).
        ImportError: without OpenVINO or OpenCV.

    Example:
        >>> pipeline = HandWrittenPipeline(Path("camvid.int8.onnx"), info, (360, 480), threads=2)  # doctest: +SKIP
        >>> pipeline.segment(frame).shape  # doctest: +SKIP
        (360, 480)
    """

    def __init__(self, model: Path, info: ModelInfo, frame_hw: tuple[int, int], threads: int | None) -> None:
        if info.padding != "same":
            raise ValueError("the hand-written pipeline resizes frames straight to the network input: it serves "
                             "'same'-padding models only")
        from unetrt.backends.openvino import shared_core

        # The process's one Core (a second Core in one process breaks OpenVINO's signal handling on release).
        core = shared_core()
        height, width = frame_hw if info.working_size is None else (info.working_size[1], info.working_size[0])
        # The nearest size the network takes, as a user would pick it.
        multiple = info.size_multiple
        self.input_hw = (-(-height // multiple) * multiple, -(-width // multiple) * multiple)
        network = core.read_model(str(model))
        network.reshape([1, info.in_channels, *self.input_hw])
        # OpenVINO's defaults (latency hint, its own inference precision), only the thread count every row shares.
        config = {} if threads is None else {"INFERENCE_NUM_THREADS": threads}
        self._request = core.compile_model(network, "CPU", config).create_infer_request()
        self._mean = np.asarray(info.mean, np.float32)
        self._std = np.asarray(info.std, np.float32)
        self._gray = info.in_channels == 1
        self._binary = info.binary
        self.device = "cpu"
        self.threads = threads

    def segment(self, frame: np.ndarray) -> np.ndarray:
        """A uint8 BGR (or gray) frame -> its H x W uint8 class-id mask."""
        height, width = frame.shape[:2]
        small = cv2.resize(frame, (self.input_hw[1], self.input_hw[0]), interpolation=cv2.INTER_LINEAR)
        image = small[..., None] if self._gray else cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
        normalised = (image.astype(np.float32) / 255.0 - self._mean) / self._std
        batch = np.ascontiguousarray(normalised.transpose(2, 0, 1)[None])
        logits = self._request.infer({0: batch})[0]
        labels = (logits[0, 0] > 0 if self._binary else logits[0].argmax(axis=0)).astype(np.uint8)
        return cv2.resize(labels, (width, height), interpolation=cv2.INTER_NEAREST)

    def close(self) -> None:
        """Drop the compiled model."""
        self._request = None


class HandWrittenRunner:
    """End-to-end mode of the hand-written row: each frame through :meth:`HandWrittenPipeline.segment`."""

    def __init__(self, pipeline: HandWrittenPipeline, frames: list[np.ndarray]) -> None:
        self._pipeline = pipeline
        self._frames = frames
        self.device = pipeline.device
        self.threads = pipeline.threads

    def step(self) -> None:
        """Frames in, masks out, frame by frame."""
        for frame in self._frames:
            self._pipeline.segment(frame)

    def checked_step(self) -> None:
        """As :meth:`step`: the hand-written recipe checks nothing, as its user's code would not."""
        self.step()

    def close(self) -> None:
        """Close the pipeline."""
        self._pipeline.close()


def _dtype_of(torch: Any, name: str) -> Any:
    return {"fp16": torch.float16, "fp32": torch.float32}[name]


class TorchDeviceRunner:
    """Device mode for the PyTorch variants: the input lives on the device, the output stays there."""

    def __init__(self, variant: Variant, model_path: Path, device: str, threads: int | None,
                 batch: np.ndarray) -> None:
        torch = _torch()
        self._torch = torch
        if variant.cuda_graphs:
            self._graph_backend: CudaGraphBackend | None = CudaGraphBackend(model_path, half=variant.half)
            self._shape = tuple(int(d) for d in batch.shape)
            self._graph_backend.static_input(self._shape).copy_(torch.from_numpy(batch))
            self.device = self._graph_backend.device
            self.threads = None
            return
        from unetrt.export.checkpoint import load_model

        self._graph_backend = None
        if device == "cuda" and not torch.cuda.is_available():
            # The bare mode's line (TorchBackend's); loading onto 'cuda' would fail as a "damaged" checkpoint.
            raise ValueError("device 'cuda' asked, but torch sees no CUDA GPU; use device 'cpu' or 'auto'")
        if threads is not None:
            torch.set_num_threads(threads)
        dtype = _dtype_of(torch, variant.precision)
        memory_format = torch.channels_last if variant.channels_last else torch.contiguous_format
        model, _ = load_model(model_path, map_location=device)
        # cast: torch's stubs omit the memory_format keyword that Module.to accepts
        self._model: Any = cast(Any, model).to(device, dtype, memory_format=memory_format)
        self._input = torch.from_numpy(batch).to(device, dtype, memory_format=memory_format)
        self.device = f"cuda ({torch.cuda.get_device_name()})" if device == "cuda" else "cpu"
        self.threads = torch.get_num_threads() if device == "cpu" else None

    def step(self) -> None:
        """One forward pass (enqueued, on a GPU)."""
        self._forward()

    def checked_step(self) -> NDArray[Any]:
        """One forward pass, its output copied to the host."""
        return self._forward().float().cpu().numpy()  # type: ignore[no-any-return,unused-ignore]

    def _forward(self) -> Any:
        """One forward pass (enqueued, on a GPU); its output tensor."""
        if self._graph_backend is not None:
            # Step 1 is the eager warm-up, step 2 captures, later steps replay (the runner's warm-up steps).
            return self._graph_backend.run(self._shape)
        with self._torch.inference_mode():
            return self._model(self._input)

    def close(self) -> None:
        """Drop the model, graphs and tensors."""
        if self._graph_backend is not None:
            self._graph_backend.close()
        self._model = self._input = None


class DeviceRunner:
    """Device mode for ONNX Runtime and TensorRT: the batch copied once into the backend's device memory and the
    output left there (``backend.resident``), on the backend the bare mode times, with its checks and its device's
    name; no torch (a Jetson has no CUDA build of it)."""

    def __init__(self, backend: ResidentBackend, batch: np.ndarray) -> None:
        self._backend = backend
        self._batch: ResidentBatch | None = backend.resident(batch)
        self.device = backend.device
        self.threads = backend.threads

    def step(self) -> None:
        """One run on the resident buffers (it returns when the run is done)."""
        self._resident().run()

    def checked_step(self) -> NDArray[Any]:
        """One run on the resident buffers, the output copied to the host."""
        resident = self._resident()
        resident.run()
        return resident.logits()

    def _resident(self) -> ResidentBatch:
        if self._batch is None:
            raise ValueError("this runner is closed; open a new one")
        return self._batch

    def close(self) -> None:
        """Close the backend (which frees the buffers) and drop the batch."""
        self._batch = None
        self._backend.close()


def open_runner(variant: Variant, model: Path, device: str, threads: int | None, workload: Workload,
                info: ModelInfo) -> Runner:
    """Open ``variant`` on ``model`` ready to time ``workload``.

    Raises:
        ValueError, ImportError, FileNotFoundError: when the variant cannot run here (the message says why).
    """
    if variant.hand_written:
        if workload.mode != "end-to-end":
            raise ValueError(f"{variant.key} is a whole frame-to-mask pipeline: it runs with --end-to-end only")
        return HandWrittenRunner(HandWrittenPipeline(model, info, workload.frame_hw, threads),
                                 workload.frames(info))
    if workload.mode == "end-to-end":
        return SegmenterRunner(open_variant_segmenter(variant, model, device, threads), workload.frames(info))
    batch = workload.network_batch(info)
    # OpenVINO runs on the host only: its bare call is already device-resident.
    if workload.mode == "bare" or variant.backend == "openvino":
        return BackendRunner(open_variant_backend(variant, model, device, threads), batch)
    if variant.backend == "torch":
        return TorchDeviceRunner(variant, model, device, threads, batch)
    backend = open_variant_backend(variant, model, device, threads)
    try:
        return DeviceRunner(cast("ResidentBackend", backend), batch)
    except BaseException:  # the runner owns the backend only once it exists
        backend.close()
        raise


def release(runner: Runner | None) -> None:
    """Close a runner and collect its garbage, so the next variant starts from a quiet process."""
    if runner is not None:
        runner.close()
    gc.collect()
