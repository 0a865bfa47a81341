"""OpenVINO backend: runs ``.onnx`` (FP32 and INT8 QDQ) and OpenVINO IR ``.xml`` on the CPU.

OpenVINO compiles a network for one static input shape much faster than for a
dynamic one, so the model is reshaped to each batch's shape and the compiled model
is cached per shape (a camera stream has one shape; the least recently used beyond
:data:`COMPILED_SHAPES` are dropped, so frames of ever new sizes do not hold a compiled
model each for good). Its CPU plugin runs a QDQ
model with INT8 (VNNI) kernels, and takes an inference-precision hint: 'f32', or
'bf16' on CPUs with native BF16 (AVX-512 BF16 or AMX).

One image runs on every thread at once (lowest latency). A batch of several images is
spread over lanes instead: up to one infer request per thread (never more than the
images), the threads shared out among them, each request taking the next image as it
finishes one. A small network run on several threads leaves them waiting at every
layer's barrier; lanes keep each core busy on an image of its own and return the same
logits, bit for bit (``docs/cpu.md`` has the figures).
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np

from ..bundled import TENSORRT_INT8_SUFFIX
from ..cpu import check_threads, usable_cores
from ..model_file import (
    IR_SUFFIXES,
    ModelFile,
    int8_weights_saturate_here,
    read_model_file,
    write_ir_description,
)
from ..model_file import PRECISIONS as FILE_PRECISIONS
from ..model_info import check_network_channels, check_network_layout
from ..paths import check_file
from .base import check_batch, check_one_input_and_output, network_run_error

if TYPE_CHECKING:
    from .registry import OpenRequest

MISSING_OPENVINO = "backend 'openvino' needs OpenVINO: pip install 'unetrt[openvino]' (or pip install openvino)"
PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16"}
# Compiled models kept, per kind (one request, lanes), least recently used dropped first: each holds its shape's
# activations (about 100 MB for isbi at 512x512), and a model without a working size meets a new shape with every
# new frame size (a folder of mixed sizes grew by that much per size, for good). Enough for two cameras' frames and
# the batches of a few sizes.
COMPILED_SHAPES = 4


def require_openvino() -> Any:
    """The ``openvino`` module.

    Raises:
        ImportError: in one line saying how to install it.

    Example:
        >>> ov = require_openvino()  # doctest: +SKIP
    """
    try:
        import openvino
    except ImportError:
        raise ImportError(MISSING_OPENVINO) from None
    return openvino


def openvino_available() -> bool:
    """Whether OpenVINO is installed (nothing is imported).

    Example:
        >>> isinstance(openvino_available(), bool)
        True
    """
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


_core_lock = threading.Lock()
_core: Any = None


def shared_core() -> Any:
    """The process's one ``openvino.Core``, made on first use.

    One Core serves every backend: each Core's CPU plugin puts an alternate signal stack (sized for AMX
    state) on the thread that first compiles with it and puts the previous one back when it goes. Two
    Cores alive on one thread and released in the order they were made leave that thread's signal stack
    pointing at freed memory, and the next Ctrl-C or SIGTERM delivered there kills the process with a
    segmentation fault. A Core that lives as long as the process never does that.

    Raises:
        ImportError: without OpenVINO.
    """
    global _core
    ov = require_openvino()
    with _core_lock:
        if _core is None:
            _core = ov.Core()
        return _core


def cpu_has_bf16() -> bool:
    """Whether OpenVINO's CPU plugin runs BF16 natively on this CPU.

    Raises:
        ImportError: without OpenVINO.
    """
    return "BF16" in shared_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def _read_model(core: Any, path: Path) -> Any:
    try:
        return core.read_model(str(path))
    except RuntimeError as exc:
        # OpenVINO nests its reports ("Exception from core.cpp:84:", "Check ... failed at ...:", the reason):
        # the last line is the reason.
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        raise ValueError(f"OpenVINO cannot read {str(path)!r} as a model: "
                         f"{lines[-1] if lines else type(exc).__name__}") from None


def _check_weight_range(described: ModelFile) -> None:
    """Refuse an INT8 file of full 8-bit weights where OpenVINO's kernels would saturate (:mod:`unetrt.cpu`).

    unet-export writes CPU INT8 weights in 7 bits (its record says so); a CPU file from before that, a file in
    TensorRT's layout (8-bit weights, made for TensorRT's kernels) or one quantized elsewhere with full-range
    weights, run here, would give masks that differ from every other CPU's without a word:
    ``camvid.int8.tensorrt.onnx`` scored 53.80 mean IoU on OpenVINO on a Zen 3 EPYC, against 62.41 at FP32 and 62.28
    on ONNX Runtime computing it unfused there.
    """
    if not int8_weights_saturate_here(described):
        return
    path, quantization = described.path, described.quantization
    # ONNX Runtime runs .onnx files alone: for an IR it is the file the IR was converted from.
    onnx_file = "its .onnx file" if path.suffix in IR_SUFFIXES else "it"
    unfused = "with backend 'onnxruntime', which computes it unfused at about FP32's speed"
    if quantization is None:
        # Quantized elsewhere: unet-export cannot make it again.
        read = described.int8_weight_peak is not None
        weights = ("8-bit INT8 weights," if read else
                   "INT8 weights of a range unetrt cannot read (no unetrt.quantization record), taken for 8-bit ones,")
        raise ValueError(f"{path.name} has {weights} which OpenVINO saturates on this CPU without VNNI (uint8 x int8 "
                         "products add in int16): quantize its weights to 7 bits (ONNX Runtime's quantize_static with "
                         f"reduce_range=True, as unet-export --int8 does), or run {onnx_file} {unfused}")
    if quantization.get("target", "cpu") == "tensorrt":
        cpu_file = (path.name.removesuffix(TENSORRT_INT8_SUFFIX) + ".int8.onnx"
                    if path.name.endswith(TENSORRT_INT8_SUFFIX) else "the CPU layout (unet-export --int8)")
        raise ValueError(f"{path.name} is INT8 in TensorRT's layout, whose 8-bit weights OpenVINO saturates on this "
                         f"CPU without VNNI (uint8 x int8 products add in int16): run {cpu_file} here (7-bit weights), "
                         f"or {'run ' + onnx_file if path.suffix in IR_SUFFIXES else 'this file'} {unfused}")
    raise ValueError(f"{path.name} has 8-bit INT8 weights, which OpenVINO saturates on this CPU without VNNI "
                     "(uint8 x int8 products add in int16): re-export it with this unetrt (unet-export --int8 "
                     f"writes 7-bit weights), or run {onnx_file} {unfused}")


def _keep_recent(cache: OrderedDict[Any, Any], key: Any) -> None:
    """Mark ``key`` as just used and drop the least recently used entries beyond :data:`COMPILED_SHAPES` (called
    under the backend's lock: no dropped request is running)."""
    cache.move_to_end(key)
    while len(cache) > COMPILED_SHAPES:
        cache.popitem(last=False)


def _static_channels(port: Any) -> int | None:
    """The channel dimension (axis 1) of a model input or output, or None when it is dynamic."""
    shape = port.get_partial_shape()
    if shape.rank.is_dynamic or len(shape) < 2 or shape[1].is_dynamic:
        return None
    return int(shape[1].get_length())


def write_ir(onnx_path: str | Path, xml_path: str | Path) -> Path:
    """Convert a unetrt ONNX model to OpenVINO IR (``.xml`` + ``.bin``), the description kept in rt_info.

    Raises:
        ImportError: without OpenVINO.
        ValueError: when the ONNX file cannot be read or carries no unetrt metadata.

    Example:
        >>> write_ir("camvid.int8.onnx", "camvid.int8.xml")  # doctest: +SKIP
    """
    ov = require_openvino()
    onnx_path, xml_path = Path(onnx_path), Path(xml_path)
    if xml_path.suffix not in IR_SUFFIXES:
        raise ValueError(f"an OpenVINO IR file ends in .xml, got {str(xml_path)!r}")
    info = read_model_file(onnx_path).info
    model = _read_model(shared_core(), onnx_path)
    write_ir_description(model, info)
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    return xml_path


class OpenVinoBackend:
    """Runs a unetrt model through OpenVINO's CPU plugin.

    Args:
        path: an ``.onnx`` file written by ``unet-export`` (FP32 or ``.int8.onnx``) or an IR ``.xml``.
        device: 'auto' or 'cpu' (OpenVINO's GPU plugins are not used).
        threads: inference threads (None: OpenVINO's default, one per core).
        precision: 'auto' or the file's own, or the inference-precision hint 'fp32' or 'bf16' (needs native BF16)
            for an FP32 file; an INT8 or FP16 file runs at its own precision, 'bf16' applying to the layers it
            keeps in FP32 (INT8 layers stay INT8), and 'fp32' is refused (that file cannot give it).
        lanes: at most this many infer requests a batch of several images is spread over, the threads shared
            out among them (None: one per thread; 1: a batch runs whole on one request with every thread).

    Attributes:
        lanes: at most this many infer requests a batch of several images is spread over (1: a batch runs
            whole on one request).

    Raises:
        ImportError: without OpenVINO (the message says how to install it).
        FileNotFoundError: when the file does not exist.
        ValueError: on a corrupt or foreign model file, a bad device, precision or thread count.

    Example:
        >>> with OpenVinoBackend("camvid.int8.onnx", threads=2) as backend:  # doctest: +SKIP
        ...     logits = backend.infer(batch)
    """

    name = "openvino"
    max_input_hw: tuple[int, int] | None = None
    max_batch: int | None = None

    def __init__(self, path: str | Path, device: str = "auto", threads: int | None = None,
                 precision: str = "auto", lanes: int | None = None) -> None:
        require_openvino()
        path = Path(path)
        if device not in ("auto", "cpu"):
            raise ValueError(f"backend 'openvino' runs on the CPU; device must be 'auto' or 'cpu', got {device!r}")
        if precision not in ("auto", *PRECISION_HINTS, *FILE_PRECISIONS):
            raise ValueError(f"OpenVINO precision must be 'auto' or one of {', '.join(PRECISION_HINTS)}, "
                             f"got {precision!r}")
        check_threads(threads)
        if lanes is not None and lanes < 1:
            raise ValueError(f"lanes must be >= 1 (1: a batch runs whole on one request), got {lanes}")
        check_file(path, "model file")
        self._ov = require_openvino()
        self._core = shared_core()
        if precision == "bf16" and "BF16" not in self._core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise ValueError("precision 'bf16' asked, but this CPU has no native BF16; use precision 'fp32'")
        # OpenVINO reads the file first: its report names what is wrong with a damaged one.
        self._model = _read_model(self._core, path)
        described = read_model_file(path)
        # The hint 'fp32' too: asked of an INT8 or FP16 file, which runs at its own precision whatever the hint, it
        # would answer another request than the one made (ONNX Runtime refuses it as well). 'bf16' stays a hint for
        # an INT8 file's FP32 layers.
        if precision in FILE_PRECISIONS and precision != described.precision:
            raise ValueError(f"{path.name} runs at {described.precision} on backend 'openvino', not {precision!r}: "
                             "pass precision 'auto', or the file of that precision")
        self.info = described.info
        _check_weight_range(described)
        check_one_input_and_output(len(self._model.inputs), len(self._model.outputs), path)
        input_shape = self._model.inputs[0].get_partial_shape()
        if input_shape.rank.is_static:
            check_network_layout(self.info, [None if d.is_dynamic else int(d.get_length()) for d in input_shape],
                                 str(path))
        # The logits are written straight into the caller's float32 arrays, whatever type the file's output has.
        float32_output = self._ov.preprocess.PrePostProcessor(self._model)
        float32_output.output(0).tensor().set_element_type(self._ov.Type.f32)
        self._model = float32_output.build()
        check_network_channels(self.info, _static_channels(self._model.inputs[0]),
                               _static_channels(self._model.outputs[0]), str(path))
        self.device = "cpu"
        self.threads = threads
        self.path = path
        hint = precision if precision in PRECISION_HINTS else "fp32"
        # What runs: an INT8 (or FP16) file keeps its precision whatever the hint; an FP32 one runs at the hint.
        self.precision = described.precision if described.precision != "fp32" else hint
        self._config: dict[str, Any] = {
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": "1",
            "INFERENCE_PRECISION_HINT": PRECISION_HINTS[hint],
            # Pinned threads cannot step aside for the capture, writer and other processes of a shared machine.
            "ENABLE_CPU_PINNING": False,
        }
        if threads is not None:
            self._config["INFERENCE_NUM_THREADS"] = threads
        self._thread_budget = threads if threads is not None else usable_cores()
        self.lanes = lanes if lanes is not None else self._thread_budget
        self._requests: OrderedDict[tuple[int, ...], tuple[Any, tuple[int, ...]]] = OrderedDict()
        self._lane_requests: OrderedDict[tuple[tuple[int, ...], int], tuple[list[Any], tuple[int, ...]]] = \
            OrderedDict()
        self._lock = threading.Lock()
        self._closed = False

    def _reshape(self, shape: tuple[int, ...]) -> None:
        """Reshape the model to an input ``shape``; a network whose nodes cannot take it (its shape inference fails)
        is one line naming the description's depth, not OpenVINO's many-line report."""
        try:
            self._model.reshape({self._model.inputs[0]: list(shape)})
        except RuntimeError as exc:
            # OpenVINO nests its report over many lines (where, which check); the last names the problem.
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            raise network_run_error("OpenVINO", self.path, shape, lines[-1] if lines else type(exc).__name__) from exc

    def _request(self, shape: tuple[int, ...]) -> tuple[Any, tuple[int, ...]]:
        """The infer request for input ``shape`` and the shape of its output."""
        entry = self._requests.get(shape)
        if entry is None:
            self._reshape(shape)
            compiled = self._core.compile_model(self._model, "CPU", self._config)
            entry = (compiled.create_infer_request(), tuple(compiled.outputs[0].get_shape()))
            self._requests[shape] = entry
        _keep_recent(self._requests, shape)
        return entry

    def profiled_request(self, shape: tuple[int, ...]) -> Any:
        """A new infer request of this model at ``shape``, compiled with this backend's settings and OpenVINO's
        per-layer profiling on (its ``profiling_info`` after each ``infer``); the backend's own requests stay
        unprofiled.

        Example:
            >>> request = backend.profiled_request((1, 3, 192, 256))  # doctest: +SKIP
            >>> request.infer({0: batch}); request.profiling_info[0].exec_type  # doctest: +SKIP
            'jit_avx512_I8'
        """
        with self._lock:
            self._model.reshape({self._model.inputs[0]: list(shape)})
            return self._core.compile_model(self._model, "CPU", {**self._config, "PERF_COUNT": True}) \
                .create_infer_request()

    def _lane_requests_for(self, image_shape: tuple[int, ...],
                           count: int) -> tuple[list[Any], tuple[int, ...]]:
        entry = self._lane_requests.get((image_shape, count))
        if entry is None:
            self._reshape((1, *image_shape))
            # One stream per lane: OpenVINO shares INFERENCE_NUM_THREADS out among the streams.
            config = {**self._config, "PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": str(count),
                      "INFERENCE_NUM_THREADS": max(count, self._thread_budget)}
            compiled = self._core.compile_model(self._model, "CPU", config)
            entry = ([compiled.create_infer_request() for _ in range(count)], tuple(compiled.outputs[0].get_shape()))
            self._lane_requests[(image_shape, count)] = entry
        _keep_recent(self._lane_requests, (image_shape, count))
        return entry

    def _infer_in_lanes(self, batch: np.ndarray) -> np.ndarray:
        requests, output_shape = self._lane_requests_for(tuple(batch.shape[1:]), min(self.lanes, len(batch)))
        outputs = np.empty((len(batch), *output_shape[1:]), np.float32)
        running: deque[Any] = deque()

        def start(request: Any, index: int) -> None:
            # Each image's logits are written straight into its place in the result.
            request.set_output_tensor(0, self._ov.Tensor(outputs[index : index + 1], shared_memory=True))
            request.start_async({0: batch[index : index + 1]}, share_inputs=True)
            running.append(request)

        for index, request in zip(range(len(batch)), requests):
            start(request, index)
        following = len(running)
        try:
            while running:
                # Lanes run at one speed: the oldest image finishes first.
                request = running.popleft()
                request.wait()
                if following < len(batch):
                    start(request, following)
                    following += 1
        finally:
            # The requests read the caller's batch and write the result in place: none may outlive this call.
            for request in running:
                request.wait()
        return outputs

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """N x C x H x W float32 -> N x K x h x w float32 logits; several images are spread over the lanes.

        Raises:
            ValueError: on a malformed batch, or after :meth:`close`.
        """
        batch = np.ascontiguousarray(check_batch(batch, self.info))
        with self._lock:
            # Checked under the lock close() takes, so no request is compiled again after close.
            if self._closed:
                raise ValueError("this backend is closed; open a new one")
            if len(batch) > 1 and self.lanes > 1:
                return self._infer_in_lanes(batch)
            request, output_shape = self._request(tuple(batch.shape))
            # OpenVINO reads the batch in place and writes the logits straight into a new array of the caller's:
            # by default it copies both ways, and the outputs once more into the dictionary infer returns.
            logits = np.empty(output_shape, np.float32)
            request.set_output_tensor(0, self._ov.Tensor(logits, shared_memory=True))
            request.infer({0: batch}, share_inputs=True)
            return logits

    def close(self) -> None:
        """Drop the compiled models (idempotent)."""
        with self._lock:
            self._requests.clear()
            self._lane_requests.clear()
            self._closed = True

    def __enter__(self) -> OpenVinoBackend:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def open_model(request: OpenRequest) -> OpenVinoBackend:
    """The registry's opener (:mod:`unetrt.backends.registry`): an :class:`OpenVinoBackend` for the request.

    Raises:
        ImportError, FileNotFoundError, ValueError: as :class:`OpenVinoBackend`.
    """
    return OpenVinoBackend(request.path, device=request.device, precision=request.precision, **request.options)
