"""A fake ``tensorrt`` runtime for the CPU tests: the engine of a fake plan (:mod:`fakes.trt_plan`) computes its
output with ONNX Runtime on the ONNX model inside the plan, reading and writing :class:`fakes.cuda.FakeGpu` memory.

Install it with :func:`install_fake_tensorrt` (after :func:`fakes.cuda.install_fake_gpu`). The builder side lives
in its own file. The fake refuses what TensorRT refuses; each rule names its document:

* ``deserialize_cuda_engine`` returns None for a plan of another TensorRT version or another compute capability:
  "Serialized engines are not portable across platforms or TensorRT versions" (TensorRT Developer Guide,
  "Serialized Engine Compatibility"); the API returns null on failure (``IRuntime::deserializeCudaEngine``,
  NvInferRuntime.h), and TensorRT logs "The engine plan file is generated on an incompatible device, expecting
  compute 7.5 got compute 6.1, please rebuild" (onnx/onnx-tensorrt issue 421, NVIDIA/TensorRT issue 818).
* [DEVICE] The device a plan is checked against is the one of the CUDA context current on the calling thread
  (device 0 with none): "Each ICudaEngine object is bound to a specific GPU when it is instantiated, either by the
  builder or on deserialization. To select the GPU, use cudaSetDevice() before calling the builder or deserializing
  the engine" (TensorRT Developer Guide, FAQ "How do I use TensorRT on multiple GPUs?"). On a machine with two kinds
  of GPU (``FakeGpu.kinds``) a plan built for one does not load on the other: "Without this mode [hardware
  compatibility], engines are not portable across different GPU architectures" (TensorRT Support Matrix, "Engine
  Portability"); TensorRT logs "The engine plan file is generated on an incompatible device, expecting compute 8.6
  got compute 7.5, please rebuild." (NVIDIA/TensorRT issue 2176, a desktop with two GPUs).
* [GPU-MODEL] A plan of another GPU model of the same compute capability loads, with a warning, not a refusal: "Using
  an engine plan file across different models of devices is not recommended and is likely to affect performance or
  even cause errors" (TensorRT's warning, NVIDIA/TensorRT issue 2900: "Some models like resnet50 can still work";
  the maintainer: "I still recommend to build the engine with same hardware"). The engines are "specific to the exact
  GPU model they were built on" (Developer Guide, "Serialized Engine Compatibility") in speed, which unetrt's own
  check warns about.
* [MEMORY] ``deserialize_cuda_engine`` returns None when the device memory left is less than the plan plus what
  loading it takes besides (``FakeEngine.load_overhead``: the engine's kernels and runtime state; no document gives
  the amount, the fake takes 8 MiB), which the engine then holds while it lives: the runtime acquires GPU memory for
  the engine as it deserialises it ("All GPU memory acquired will use this allocator ... Default:
  cudaMalloc/cudaFree", ``tensorrt.Runtime.gpu_allocator``), and "Returns: The ICudaEngine, or None if it could not
  be deserialized" (``Runtime.deserialize_cuda_engine``, TensorRT Python API).
* [CAPTURE-ALLOC] The memory TensorRT takes while it deserialises an engine or creates an execution context comes from
  ``cudaMalloc`` ("All GPU memory acquired will use this allocator ... Default: cudaMalloc/cudaFree",
  ``tensorrt.Runtime.gpu_allocator``), which stream capture refuses on a thread with a capture of its own in
  progress, and on every thread while another thread captures in global mode (PyTorch's default), invalidating that
  capture (CUDA Driver API, ``cuThreadExchangeStreamCaptureMode``: "During stream capture ... some actions, such as a
  call to cudaMalloc, may be unsafe"; ``CU_STREAM_CAPTURE_MODE_GLOBAL``: a thread is "prohibited from potentially
  unsafe API calls" "if any other thread has a concurrent capture sequence initiated with
  CU_STREAM_CAPTURE_MODE_GLOBAL"): the fake then logs the allocator's error and ``deserialize_cuda_engine`` /
  ``create_execution_context`` return None, as TensorRT reports any failure there.
* [DLA-CORE] ``deserialize_cuda_engine`` returns None for a plan with DLA layers when the runtime's ``DLA_core`` is
  not a core this device has: "The DLA core that the engine executes on. Must be between 0 and N-1 where N is the
  number of available DLA cores" (``tensorrt.Runtime.DLA_core``, TensorRT Python API); ``num_DLA_cores`` is N
  (set by the builder fake's ``install_builder``; an Orin Nano has none). A runtime starts at -1, no core: "Sets
  the DLA core used by the network. Defaults to -1." (``IRuntime::setDLACore``, TensorRT 10 C++ API,
  https://docs.nvidia.com/deeplearning/tensorrt/api/c_api/classnvinfer1_1_1_i_runtime.html), so a DLA plan loads
  only once its caller has set the core.
* [ENGINE-CONTEXT] An engine belongs to the CUDA context current when it was deserialised (with none current, the
  runtime's device 0, whose primary context the CUDA runtime makes current), and ``execute_async_v3`` returns False,
  with an error logged, while another context, or none, is current, or once that context was destroyed: "Each
  ICudaEngine object is bound to a specific GPU when it is instantiated, either by the builder or on
  deserialization ... Each IExecutionContext is bound to the same GPU as the engine from which it was created. When
  calling execute() or enqueue(), ensure that the thread is associated with the correct device" (TensorRT Developer
  Guide, FAQ "How do I use TensorRT on multiple GPUs?"); "TensorRT requires that each engine be associated with the
  CUDA context in the active thread from which it is invoked" (Torch-TensorRT documentation, Runtime, "Multi Device
  Safe Mode": otherwise "a mismatch in the engine device and CUDA context device, which could lead the program to
  crash"). A real GPU fails such a launch on the device; the fake refuses it at once.
* [CONTEXT-STREAMS] ``execute_async_v3`` returns False while the same execution context still has work queued on
  another stream: "Do not call the APIs of the same IExecutionContext from multiple threads at any given time. Each
  concurrent execution must have its own instance of an IExecutionContext" (``IExecutionContext``, TensorRT C++ API),
  and "Calling enqueueV3() from the same IExecutionContext object with different CUDA streams concurrently results in
  undefined behavior. To perform inference concurrently in multiple streams, use one execution context per stream"
  (``IExecutionContext::enqueueV3``, NvInferRuntime.h, TensorRT 10). Work on one stream runs in order, so enqueues on
  one stream are never concurrent.
* ``set_tensor_address`` returns False for an address that is not 256-byte aligned: "The pointer must have at
  least 256-byte alignment" (``IExecutionContext::setTensorAddress``, NvInferRuntime.h, TensorRT 10).
* ``set_input_shape`` returns False for a shape outside the optimisation profile
  (``IExecutionContext::setInputShape``, NvInferRuntime.h).
* ``execute_async_v3`` under stream capture returns False when the context's input shape changed since its last
  enqueue, and the capture is invalidated: the TensorRT Developer Guide ("Working with CUDA Graphs") says to call
  enqueueV3 once outside capture after changing input shapes before capturing, because that first call may do
  work (allocation, synchronisation) a stream capture cannot hold.
* A graph replayed after its context ran another shape is refused: a graph holds the launches for the shapes and
  addresses current at capture and must be captured again when they change (same section). The real GPU would
  compute from stale state silently; the fake refuses the launch instead.
* ``execute_async_v3`` under capture returns False for an engine that cannot be captured (set
  ``FakeEngine.capturable = False``): the TensorRT Developer Guide ("Working with CUDA Graphs") lists engines that
  cannot be captured (e.g. with loops or conditionals, or ones that synchronise internally), and enqueueV3 fails
  under capture for them.
* ``create_execution_context`` returns None when the device memory left is less than the context's activation
  memory (``FakeEngine.context_memory``, held while the context lives): "IExecutionContext requires a block of
  device memory for internal activation tensors during inference", allocated at creation by default
  (``ExecutionContextAllocationStrategy``, NvInferRuntime.h: kSTATIC, "Default static allocation with the maximum
  size across all profiles"), and ``ICudaEngine::createExecutionContext`` returns null when it fails.
* [PROFILE-SHARING] ``execute_async_v3`` returns False when another execution context of the same engine, on the
  same optimisation profile, still has work queued on another stream: "Multiple execution contexts may exist for
  one ICudaEngine instance ... If the engine supports dynamic shapes, each execution context in concurrent use must
  use a separate optimization profile" (``IExecutionContext``, NvInferRuntime.h, TensorRT 10), and every context is
  created on profile 0 ("The newly created execution context will be assigned optimization profile 0",
  ``ICudaEngine::createExecutionContext``). Work queued on one stream runs in order, so contexts that share one
  stream are never in concurrent use. The fake tracks plain enqueues (not replayed graphs).
* ``execute_async_v3`` returns False when a tensor has no address (``IExecutionContext::enqueueV3``: "all input
  and output tensor addresses must be set").
* [IO-FORMAT] An engine reads and writes each I/O tensor in the format it was built with
  (``ICudaEngine.get_tensor_format``), which need not be linear: "these underlying data formats are exposed at
  network I/O boundaries" (Developer Guide, "I/O Formats"); ``kHWC8`` is "the array with dimensions
  [N][H][W][(C+7)/8*8]" and ``kCHW2`` "[N][(C+1)/2][H][W][2]" (``tensorrt.TensorFormat``). A caller that writes
  linear NCHW into a vectorized input gets wrong results (or reads past its buffer) with no error; the fake refuses
  the launch of an engine whose input or output format is not ``LINEAR`` instead (the plan's ``input_format`` /
  ``output_format``, set by the builder fake's [FORMATS] rule or by ``write_plan_from_onnx``).
* [TEARDOWN] An engine or execution context must be destroyed in the CUDA context it was created in, while that
  context lives and is current on the destroying thread: TensorRT frees the device memory it holds (weights,
  activations) through its GPU allocator ("All GPU memory acquired will use this allocator ... Default:
  cudaMalloc/cudaFree", ``tensorrt.Runtime.gpu_allocator``) as the object is destroyed. Freed with the context
  destroyed or not current, TensorRT logs ``[defaultAllocator.cpp::deallocate] Error Code 1: Cuda Runtime (invalid
  argument)`` and ``Cuda Driver (context is destroyed)``, "Sometimes there are core dump" (NVIDIA/TensorRT issue
  2052; torch2trt issue 854: a segmentation fault when "the engine ... outlives the CUDA context"). The fake logs
  that error to the runtime's logger and records ``("tensorrt freed outside its context", what)`` in the GPU's log.
* [DRIVER] ``Runtime`` and ``Builder`` fail to start where the NVIDIA driver supports an older CUDA major version
  than the one TensorRT's libraries were built for (the fake module's ``built_for_cuda``, a fake-only attribute:
  the real wheels carry it in their names, ``tensorrt-cu13-libs``; None: any driver): TensorRT logs "CUDA
  initialization failure with error: 35" (``cudaErrorInsufficientDriver``: "the installed NVIDIA CUDA driver is
  older than the CUDA runtime library", CUDA Runtime API, ``cudaError``) and the constructor returns null, which
  the Python bindings raise as ``TypeError: pybind11::init(): factory function returned nullptr`` (NVIDIA/TensorRT
  issues 635, 2913). The CUDA 13 wheels need an r580 driver or newer, the CUDA 12 ones r535 (TensorRT 11.4.0
  installation guide, "Prerequisites"); within a major version any driver of it serves (minor version
  compatibility).
* [FP16] An engine built with ``BuilderFlag.FP16`` on a weakly typed network ("Enable FP16 layer selection, with FP32
  fallback"; ``kINT8``: "Enable Int8 layer selection, with FP32 fallback with FP16 fallback if kFP16 also
  specified", ``BuilderFlag``, NvInfer.h, TensorRT 10) computes in FP16: "When TensorRT chooses a precision for a
  layer, it automatically converts weights as needed to run the layer" (Developer Guide, "Reduced Precision",
  "Network-Level Control of Precision"), and a layer's FP16 output is an IEEE half, whose largest finite value is
  65504 (``CUDART_MAX_NORMAL_FP16``, 0x7BFF; ``CUDART_INF_FP16``, CUDA Math API, "Half Arithmetic Constants"): a
  value past it is +-inf, and what follows from an infinity (inf - inf, 0 * inf) NaN. The fake runs such a plan
  (``FakePlan.fp16_layers``, set by the builder fake for the FP16 flag without strong typing) on the ONNX graph
  rewritten once per plan (:func:`computed_in_fp16`): every float weight rounded to half (round to nearest even),
  every float tensor a node writes rounded to half after the node (beyond 65504: +-inf; NaN stays NaN), the
  network's float input read as half, the node itself computing in FP32 on those halves (FP32 accumulation). The
  I/O bindings keep the types the engine declares, and the layer writing the output stays FP32 where the plan
  says so (``head_precision``: pinned, with OBEY_PRECISION_CONSTRAINTS). Not modelled: TensorRT "will still choose
  a higher-precision kernel if it results in overall lower runtime, or if no low-precision implementation exists"
  (same section), so a real engine may run some layers in FP32, and it fuses layers (a convolution with its bias
  and activation) whose intermediate values never leave the kernel as half; the fake takes the worst case, every
  ONNX node's float output stored as half. An INT8 engine's dequantized tensors (the values its INT8 kernels read)
  and the scales of its Q/DQ pairs are not rounded. A strongly typed network takes its types from the graph
  (Developer Guide, "Strong Typing vs Weak Typing": TensorRT "will statically infer intermediate tensor types ...
  and adhere strictly to those types"), so its FLOAT16 tensors are halves; ONNX Runtime's CPU provider would run
  such a graph in FP32 (it casts around FP16 nodes it has no kernel for and drops the casts between them), so the
  fake keeps each FLOAT16 tensor a half explicitly (:func:`halves_kept`).
"""

from __future__ import annotations

import enum
import functools
import sys
import types
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .cuda import FakeGpu, FakeOp
from .trt_plan import FakePlan, deserialize, serialize

DEFAULT_VERSION = "10.3.0"


class DataType(enum.Enum):
    """tensorrt.DataType."""

    FLOAT = "float32"
    HALF = "float16"
    INT8 = "int8"
    INT32 = "int32"


class TensorFormat(enum.IntEnum):
    """tensorrt.TensorFormat (NvInferRuntimeBase.h values; ``1 << int(member)`` is its bit in ``allowed_formats``)."""

    LINEAR = 0
    CHW2 = 1
    HWC8 = 2
    CHW4 = 3
    CHW16 = 4
    CHW32 = 5


class TensorIOMode(enum.Enum):
    """tensorrt.TensorIOMode."""

    NONE = 0
    INPUT = 1
    OUTPUT = 2


def nptype(dtype: DataType) -> type:
    """tensorrt.nptype."""
    return np.dtype(dtype.value).type


class Logger:
    """tensorrt.Logger: keeps what was logged."""

    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    INTERNAL_ERROR = Severity.INTERNAL_ERROR
    ERROR = Severity.ERROR
    WARNING = Severity.WARNING
    INFO = Severity.INFO
    VERBOSE = Severity.VERBOSE

    def __init__(self, min_severity: Any = Severity.WARNING) -> None:
        self.min_severity = min_severity
        self.messages: list[str] = []

    def log(self, severity: Any, message: str) -> None:
        self.messages.append(message)


def _free_in_context(owner: object, gpu: FakeGpu, what: str, logger: list[Any]) -> None:
    """[TEARDOWN]: when ``owner`` is garbage, check that the context current at its creation is alive and current.

    ``logger[0]`` is the logger to report to (a list the finalizer holds: it must not refer to ``owner``).
    """
    created_in = gpu.current()

    def check() -> None:
        current = gpu.current()
        if created_in is not None and current is created_in and created_in.alive:
            return
        gpu.log.append(("tensorrt freed outside its context", what))
        target = logger[0]
        if target is not None:
            target.log(Logger.ERROR, "1: [defaultAllocator.cpp::deallocate::42] Error Code 1: Cuda Runtime "
                                     f"(invalid argument) (the {what} was destroyed outside its CUDA context)")

    weakref.finalize(owner, check)


def _allocation_refused(gpu: FakeGpu, logger: Logger | None) -> bool:
    """[CAPTURE-ALLOC]: whether stream capture refuses TensorRT's cudaMalloc on this thread now (the refusal is
    logged, and invalidates the captures that refuse it)."""
    reason = gpu.refuse_unsafe_during_capture("cudaMalloc")
    if reason is None:
        return False
    if logger is not None:
        logger.log(Logger.ERROR, "1: [defaultAllocator.cpp::allocate::31] Error Code 1: Cuda Runtime (operation not "
                                 "permitted when stream is capturing)")
    return True


class FakeEngine:
    """tensorrt.ICudaEngine of a fake plan."""

    capturable = True
    context_memory = 1 << 20  # the activation memory each execution context allocates
    load_overhead = 8 << 20  # what loading a plan takes besides its bytes [MEMORY]

    def __init__(self, gpu: FakeGpu, plan: FakePlan) -> None:
        import onnxruntime as ort

        self.gpu, self.plan = gpu, plan
        # [FP16]: the network as FP16 kernels compute it, rewritten once per plan.
        network = computed_in_fp16(plan.onnx_model, plan.head_precision == "fp32") if plan.fp16_layers \
            else halves_kept(plan.onnx_model)
        self.session = ort.InferenceSession(network, providers=["CPUExecutionProvider"])
        self._onnx_input = self.session.get_inputs()[0].name
        self._output_shapes: dict[tuple[int, ...], tuple[int, ...]] = {}
        self.contexts: weakref.WeakSet[FakeExecutionContext] = weakref.WeakSet()
        # [ENGINE-CONTEXT]: the context the engine belongs to.
        self.cuda_context = gpu.current() or gpu.primary(0)
        # The runtime's logger, set by deserialize_cuda_engine; a list, so that the finalizer holds it, not the engine.
        self.logger_box: list[Logger | None] = [None]
        _free_in_context(self, gpu, "engine", self.logger_box)

    @property
    def dynamic(self) -> bool:
        """Whether the input has dynamic dimensions (its profile's min and max differ)."""
        return self.plan.profile[0] != self.plan.profile[2]

    @property
    def num_io_tensors(self) -> int:
        return 2

    def get_tensor_name(self, index: int) -> str:
        return (self.plan.input_name, self.plan.output_name)[index]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return {self.plan.input_name: TensorIOMode.INPUT, self.plan.output_name: TensorIOMode.OUTPUT}.get(
            name, TensorIOMode.NONE)

    def get_tensor_dtype(self, name: str) -> DataType:
        return DataType(self.plan.input_dtype if name == self.plan.input_name else self.plan.output_dtype)

    def get_tensor_format(self, name: str, profile_index: int = 0) -> TensorFormat:
        return TensorFormat[self.plan.input_format if name == self.plan.input_name else self.plan.output_format]

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> tuple[tuple[int, ...], ...]:
        if name != self.plan.input_name or profile_index != 0:
            raise ValueError("the fake engine has one input and one profile")
        return self.plan.profile

    def create_execution_context(self) -> FakeExecutionContext | None:
        if _allocation_refused(self.gpu, self.logger_box[0]):
            return None  # [CAPTURE-ALLOC]
        context = FakeExecutionContext(self)
        if not self.gpu.hold(context, self.context_memory):
            return None
        self.contexts.add(context)
        _free_in_context(context, self.gpu, "execution context", self.logger_box)
        return context

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        if shape not in self._output_shapes:
            inferred = _inferred_output_shape(self.plan.onnx_model, shape)
            if inferred is None:
                (out,) = self.session.run(None, {self._onnx_input: np.zeros(shape, np.float32)})
                inferred = tuple(int(d) for d in out.shape)
            self._output_shapes[shape] = inferred
        return self._output_shapes[shape]

    def compute(self, images: np.ndarray) -> np.ndarray:
        (out,) = self.session.run(None, {self._onnx_input: images.astype(np.float32)})
        return np.asarray(out)


# Q/DQ inputs that are scales and zero points, Resize's region and scales: not data a layer stores as half [FP16].
_NOT_HALF_INPUTS = {"QuantizeLinear": (1, 2), "DequantizeLinear": (1, 2), "Resize": (1, 2), "Upsample": (1,)}


@functools.lru_cache(maxsize=8)  # made once per plan: a test opens the engines of one model many times
def computed_in_fp16(onnx_model: bytes, head_in_fp32: bool) -> bytes:
    """The ONNX graph ``onnx_model`` rewritten to compute as TensorRT's FP16 kernels do [FP16].

    Each float weight (initializer) is rounded to half; each float tensor a node writes, and the network's float
    input, goes through ``Cast(FLOAT16)`` and back to ``FLOAT`` (IEEE round to nearest even, +-inf beyond 65504,
    NaN kept), so every node reads halves and computes in FP32. The node writing the network's output runs in FP32
    with its weights unrounded when ``head_in_fp32`` (TensorRT 10's pinned head). Dequantized tensors and Q/DQ
    scales (an INT8 engine's) are left as they are.

    Args:
        onnx_model: the serialized ONNX model (the plan's network).
        head_in_fp32: whether the layer writing the output computes in FP32.

    Returns:
        The serialized rewritten model, with the same inputs and outputs.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load_from_string(onnx_model)
    graph = model.graph
    inferred = onnx.shape_inference.infer_shapes(model).graph
    float_tensors = {value.name for value in (*inferred.input, *inferred.value_info, *inferred.output)
                     if value.type.tensor_type.elem_type == TensorProto.FLOAT}
    outputs = {value.name for value in graph.output}
    in_fp32 = [head_in_fp32 and bool(outputs.intersection(node.output)) for node in graph.node]
    not_half = {node.input[i] for node in graph.node for i in _NOT_HALF_INPUTS.get(node.op_type, ())
                if i < len(node.input)}
    read_by_fp32 = {name for node, fp32 in zip(graph.node, in_fp32) if fp32 for name in node.input}
    read_by_fp16 = {name for node, fp32 in zip(graph.node, in_fp32) if not fp32 for name in node.input}

    def round_trip(name: str, rounded: str) -> list[onnx.NodeProto]:
        half = f"{rounded}/half"
        return [helper.make_node("Cast", [name], [half], to=TensorProto.FLOAT16, name=f"{half}/cast"),
                helper.make_node("Cast", [half], [rounded], to=TensorProto.FLOAT, name=f"{rounded}/cast")]

    # Weights: FP16 layers read them as half; a weight the FP32 head reads too keeps its own FP32 copy.
    renamed: dict[str, str] = {}
    for tensor in list(graph.initializer):
        if tensor.data_type != TensorProto.FLOAT or tensor.name in not_half or tensor.name not in read_by_fp16:
            continue
        half = numpy_helper.to_array(tensor).astype(np.float16).astype(np.float32)
        if tensor.name in read_by_fp32:
            renamed[tensor.name] = f"{tensor.name}/fp16"
            graph.initializer.append(numpy_helper.from_array(half, renamed[tensor.name]))
        else:
            tensor.CopyFrom(numpy_helper.from_array(half, tensor.name))
    # The network's float input: FP32 bindings are reformatted to half for the first FP16 layer.
    initializers = {tensor.name for tensor in graph.initializer}
    nodes: list[onnx.NodeProto] = []
    for value in graph.input:
        if value.name not in initializers and value.name in float_tensors:
            renamed[value.name] = f"{value.name}/fp16"
            nodes += round_trip(value.name, renamed[value.name])
    for node, fp32 in zip(graph.node, in_fp32):
        if fp32:
            nodes.append(node)
            continue
        for index, name in enumerate(node.input):
            node.input[index] = renamed.get(name, name)
        nodes.append(node)
        if node.op_type == "DequantizeLinear":
            continue  # the values an INT8 kernel reads, exactly int8 times the scale
        for index, name in enumerate(node.output):
            if name in float_tensors and name not in not_half:
                node.output[index] = f"{name}/fp32"
                nodes += round_trip(node.output[index], name)
    del graph.node[:]
    graph.node.extend(nodes)
    return model.SerializeToString()


@functools.lru_cache(maxsize=8)  # made once per plan, as computed_in_fp16
def halves_kept(onnx_model: bytes) -> bytes:
    """The ONNX graph ``onnx_model`` rewritten so that its FLOAT16 tensors are halves when ONNX Runtime runs it, as
    a strongly typed network's are in TensorRT [FP16] (unchanged when it has none).

    ONNX Runtime's CPU provider runs an FP16 node it has no FP16 kernel for in FP32 between casts, and removes the
    casts between two such nodes, so an FP16 graph computes in FP32 there and never overflows. Here every tensor
    computes in FLOAT and each one the graph types FLOAT16 goes through ``Cast(FLOAT16)`` and back where it is
    written (FLOAT16 weights become FLOAT of the same values); the network's inputs and outputs keep their types.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load_from_string(onnx_model)
    graph = model.graph
    half, single = TensorProto.FLOAT16, TensorProto.FLOAT
    inferred = onnx.shape_inference.infer_shapes(model).graph
    types = {value.name: value.type.tensor_type.elem_type for value in (*inferred.input, *inferred.value_info,
                                                                         *inferred.output)}
    types.update({tensor.name: tensor.data_type for tensor in graph.initializer})
    if half not in types.values():
        return onnx_model
    for tensor in graph.initializer:
        if tensor.data_type == half:
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name))
    outputs = {value.name for value in graph.output}
    nodes: list[onnx.NodeProto] = []
    renamed: dict[str, str] = {}
    initializers = {tensor.name for tensor in graph.initializer}
    for value in graph.input:
        if value.name not in initializers and types.get(value.name) == half:
            renamed[value.name] = f"{value.name}/float"
            nodes.append(helper.make_node("Cast", [value.name], [renamed[value.name]], to=single,
                                          name=f"{value.name}/float/cast"))
    for node in graph.node:
        for index, name in enumerate(node.input):
            node.input[index] = renamed.get(name, name)
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR and attribute.t.data_type == half:
                attribute.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attribute.t).astype(np.float32),
                                                             attribute.t.name))
        nodes.append(node)
        for index, name in enumerate(node.output):
            if types.get(name) != half:
                continue
            if node.op_type == "Cast":
                node.attribute[[a.name for a in node.attribute].index("to")].i = single
            # Written as half: rounded to nearest even, +-inf past 65504; a network output stays FLOAT16.
            node.output[index] = f"{name}/float"
            rounded = f"{name}/half" if name not in outputs else name
            nodes.append(helper.make_node("Cast", [node.output[index]], [rounded], to=half, name=f"{name}/half/cast"))
            if name not in outputs:
                nodes.append(helper.make_node("Cast", [rounded], [name], to=single, name=f"{name}/back/cast"))
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.value_info[:]  # the FLOAT16 types of tensors now FLOAT
    return model.SerializeToString()


@functools.lru_cache(maxsize=8)  # engines of one model (a test opens the bundled one often) infer once per shape
def _inferred_output_shape(onnx_model: bytes, shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """The output shape ONNX shape inference gives the model for the input ``shape``, as TensorRT's shape
    calculation answers ``get_tensor_shape`` without running the network (running it on zeros took seconds at a
    profile's largest shape, on every engine open). None where inference refuses the shape or leaves a dimension
    open: the caller runs the network then, which raises where the shape is invalid."""
    import onnx
    from onnx import shape_inference

    model = onnx.load_from_string(onnx_model)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    if len(dims) != len(shape) or any(dim.HasField("dim_value") and dim.dim_value != size
                                      for dim, size in zip(dims, shape)):
        return None  # inference would not notice a fixed dimension changed (the channels): running refuses it
    for dim, size in zip(dims, shape):
        dim.Clear()
        dim.dim_value = size
    try:
        inferred = shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except onnx.shape_inference.InferenceError:
        return None
    out = inferred.graph.output[0].type.tensor_type.shape.dim
    if not out or not all(dim.HasField("dim_value") and dim.dim_value > 0 for dim in out):
        return None
    return tuple(int(dim.dim_value) for dim in out)


class FakeExecutionContext:
    """tensorrt.IExecutionContext."""

    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.shape: tuple[int, ...] | None = None
        self.shape_changes = 0
        self._enqueued_since_change = False
        self.addresses: dict[str, int] = {}
        self.refused: list[str] = []
        # (stream, [done]) of each plain enqueue not yet run, for [PROFILE-SHARING]; the flag, not the op, so that
        # the context is not kept alive by its own queued work.
        self.queued: list[tuple[int, list[bool]]] = []

    def in_flight_elsewhere(self, stream_handle: int) -> bool:
        """Whether this context has work queued on a stream other than ``stream_handle`` that has not run."""
        self.queued = [(handle, done) for handle, done in self.queued if not done[0]]
        return any(handle != stream_handle for handle, _ in self.queued)

    def set_input_shape(self, name: str, shape: Any) -> bool:
        shape = tuple(int(d) for d in shape)
        low, _, high = self.engine.plan.profile
        if name != self.engine.plan.input_name or len(shape) != len(low) or any(
                not lo <= s <= hi for s, lo, hi in zip(shape, low, high)):
            self.refused.append(f"shape {shape}")
            return False
        if shape != self.shape:
            self.shape = shape
            self.shape_changes += 1
            self._enqueued_since_change = False
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        if self.shape is None:
            raise ValueError("set the input shape first")
        return self.shape if name == self.engine.plan.input_name else self.engine.output_shape(self.shape)

    def set_tensor_address(self, name: str, memory: int) -> bool:
        if int(memory) % 256:
            self.refused.append(f"address {int(memory):#x} of {name}")
            return False
        self.addresses[name] = int(memory)
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        gpu, plan = self.engine.gpu, self.engine.plan
        if self.shape is None or set(self.addresses) != {plan.input_name, plan.output_name}:
            return False
        current = gpu.current()
        if current is not self.engine.cuda_context or not current.alive:
            # [ENGINE-CONTEXT]: the kernels would launch in another context (or none), where the engine's memory is not.
            self.refused.append("enqueue outside the engine's CUDA context")
            logger = self.engine.logger_box[0]
            if logger is not None:
                logger.log(Logger.ERROR, "1: [executionContext.cpp::enqueueV3] Error Code 1: Cuda Runtime (invalid "
                                         "resource handle) (the engine's CUDA context is not current)")
            return False
        if self.in_flight_elsewhere(stream_handle):
            # [CONTEXT-STREAMS]: this context's earlier work on another stream may still run.
            self.refused.append("enqueue while this context still runs on another stream")
            return False
        if gpu.capturing(stream_handle) and not (self._enqueued_since_change and self.engine.capturable):
            gpu.invalidate_capture(stream_handle)
            self.refused.append("enqueue under capture " + ("after a shape change" if self.engine.capturable
                                                            else "of an engine that cannot be captured"))
            return False
        if self.engine.dynamic and any(other is not self and other.in_flight_elsewhere(stream_handle)
                                       for other in list(self.engine.contexts)):
            # [PROFILE-SHARING]: another context on profile 0 is still running on another stream.
            self.refused.append("enqueue while another context on the same profile runs on another stream")
            return False
        shape, generation = self.shape, self.shape_changes
        out_shape = self.engine.output_shape(shape)
        source, target = self.addresses[plan.input_name], self.addresses[plan.output_name]

        formats = {name: self.engine.get_tensor_format(name) for name in (plan.input_name, plan.output_name)}

        def check() -> str | None:
            if self.shape_changes != generation:
                return "the execution context ran another shape since this work was captured"
            vectorized = [f"{name} in {fmt.name}" for name, fmt in formats.items() if fmt != TensorFormat.LINEAR]
            if vectorized:
                # [IO-FORMAT]: the real engine would read and write those buffers in that layout, silently.
                return f"the engine's I/O is not linear NCHW ({', '.join(vectorized)}): its results would be wrong"
            return None

        done = [False]

        def run() -> None:
            images = gpu.view(source, shape, plan.input_dtype)
            out = gpu.view(target, out_shape, plan.output_dtype)
            out[...] = self.engine.compute(images).astype(out.dtype)
            done[0] = True

        capturing = gpu.capturing(stream_handle)
        gpu.enqueue(stream_handle, FakeOp(run, check, kind="tensorrt"))
        if not capturing and not done[0]:
            self.queued.append((stream_handle, done))
        self._enqueued_since_change = True
        return True


class Runtime:
    """tensorrt.Runtime over the fake GPU."""

    gpu: FakeGpu
    version: str
    num_DLA_cores = 2  # noqa: N815 - the name TensorRT gives it

    module: types.ModuleType

    def __init__(self, logger: Logger) -> None:
        refuse_an_older_driver(self.gpu, self.module.built_for_cuda, logger)  # [DRIVER]
        self.logger = logger
        self.DLA_core = -1  # [DLA-CORE]: no core until the caller sets one

    def deserialize_cuda_engine(self, serialized_engine: bytes) -> FakeEngine | None:
        data = bytes(serialized_engine)
        plan = deserialize(data)
        if plan is None:
            self.logger.log(Logger.ERROR, "not a serialized engine")
            return None
        if plan.tensorrt_version != self.version:
            self.logger.log(Logger.ERROR, f"plan of TensorRT {plan.tensorrt_version}, this is {self.version}")
            return None
        name, capability, _ = self.gpu.current_identity()  # [DEVICE]
        if tuple(plan.compute_capability) != capability:
            self.logger.log(Logger.ERROR, "The engine plan file is generated on an incompatible device, expecting "
                                          f"compute {capability[0]}.{capability[1]} got compute "
                                          f"{plan.compute_capability[0]}.{plan.compute_capability[1]}, please rebuild.")
            return None
        if plan.device_name != name:
            # [GPU-MODEL]
            self.logger.log(Logger.WARNING, "Using an engine plan file across different models of devices is not "
                                            "recommended and is likely to affect performance or even cause errors.")
        if plan.dla_core is not None and not 0 <= self.DLA_core < self.num_DLA_cores:
            # [DLA-CORE]
            self.logger.log(Logger.ERROR, f"DLA core {self.DLA_core} requested; this device has "
                                          f"{self.num_DLA_cores}")
            return None
        if _allocation_refused(self.gpu, self.logger):
            return None  # [CAPTURE-ALLOC]
        engine = FakeEngine(self.gpu, plan)
        engine.logger_box[0] = self.logger
        if not self.gpu.hold(engine, len(data) + FakeEngine.load_overhead):
            # [MEMORY]: the weights go to device memory as the engine is deserialised; without room, None.
            self.logger.log(Logger.ERROR, "out of memory: cannot allocate the engine's weights")
            return None
        return engine


def refuse_an_older_driver(gpu: FakeGpu, built_for_cuda: int | None, logger: Any) -> None:
    """[DRIVER]: a TensorRT built for a newer CUDA major version than the driver's does not start.

    Raises:
        TypeError: as the Python bindings raise a constructor's null.
    """
    if built_for_cuda is not None and gpu.driver_version // 1000 < built_for_cuda:
        logger.log(Logger.ERROR, "CUDA initialization failure with error: 35. Please check your CUDA installation: "
                                 "http://docs.nvidia.com/cuda/cuda-installation-guide-linux/index.html")
        raise TypeError("pybind11::init(): factory function returned nullptr")


def make_tensorrt(gpu: FakeGpu, version: str = DEFAULT_VERSION, built_for_cuda: int | None = None) -> types.ModuleType:
    """A fake ``tensorrt`` module whose runtime runs on ``gpu``, its libraries built for CUDA ``built_for_cuda``
    ([DRIVER]; None: any driver runs them)."""
    module = types.ModuleType("tensorrt")
    module.__version__ = version  # type: ignore[attr-defined]
    module.built_for_cuda = built_for_cuda  # type: ignore[attr-defined]
    runtime = type("Runtime", (Runtime,), {"gpu": gpu, "version": version, "module": module})
    for name, value in {"Runtime": runtime, "Logger": Logger, "DataType": DataType, "TensorIOMode": TensorIOMode,
                        "nptype": nptype, "ICudaEngine": FakeEngine, "TensorFormat": TensorFormat,
                        "IExecutionContext": FakeExecutionContext}.items():
        setattr(module, name, value)
    return module


def install_fake_tensorrt(monkeypatch: pytest.MonkeyPatch, gpu: FakeGpu, version: str = DEFAULT_VERSION,
                          built_for_cuda: int | None = None) -> types.ModuleType:
    """Put a fake ``tensorrt`` over ``gpu`` into ``sys.modules`` (its libraries built for CUDA ``built_for_cuda``:
    [DRIVER]).

    Example:
        >>> trt = install_fake_tensorrt(monkeypatch, install_fake_gpu(monkeypatch))  # doctest: +SKIP
    """
    module = make_tensorrt(gpu, version, built_for_cuda)
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    return module


def write_plan_from_onnx(onnx_path: Path, plan_path: Path, gpu: FakeGpu, *, version: str = DEFAULT_VERSION,
                    input_dtype: str = "float32", precision: str = "fp16",
                    profile: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None = None,
                    input_format: str = "LINEAR", strongly_typed: bool = False) -> Path:
    """A fake plan of an exported ONNX model for ``gpu``, with the metadata JSON unet-build writes beside it.

    The plan is weakly typed with its head in FP32, as unet-build makes it on TensorRT 10: at ``precision`` fp16 or
    int8 (whose FP16 flag unet-build sets too) its layers compute in FP16 ([FP16]). A ``strongly_typed`` plan
    computes in the graph's own types.

    Example:
        >>> plan = write_plan_from_onnx(model_files["onnx"], tmp_path / "tiny.plan", gpu)  # doctest: +SKIP
    """
    from unetrt.model_file import read_model_file
    from unetrt.plan_metadata import GpuIdentity, PlanMetadata, ShapeProfile, write_plan_metadata

    info = read_model_file(onnx_path).info
    if profile is None:
        profile = ((1, info.in_channels, 16, 16), (1, info.in_channels, 64, 64), (4, info.in_channels, 96, 96))
    plan = FakePlan(tensorrt_version=version, device_name=gpu.name, compute_capability=gpu.compute_capability,
                    input_name="image", output_name="logits", input_dtype=input_dtype, output_dtype="float32",
                    profile=profile, precision=precision, dla_core=None, onnx_model=onnx_path.read_bytes(),
                    input_format=input_format,
                    fp16_layers=not strongly_typed and precision in ("fp16", "int8"))
    plan_path.write_bytes(serialize(plan))
    write_plan_metadata(plan_path, PlanMetadata(
        tensorrt_version=version, gpu=GpuIdentity(gpu.name, gpu.compute_capability, gpu.multiprocessors),
        input_name="image", output_name="logits", input_dtype=input_dtype, output_dtype="float32",
        profile=ShapeProfile(*profile), precision=precision, strongly_typed=strongly_typed, source=str(onnx_path),
        info=info))
    return plan_path
