"""A fake ``onnxruntime`` as onnxruntime-gpu is one: its CUDA execution provider runs the model through IO binding on
:class:`fakes.cuda.FakeGpu` memory, the logits computed by a real CPU ``onnxruntime.InferenceSession`` of the same
model file (so they are the true ones).

Install it with :func:`install_fake_onnxruntime_cuda` after :func:`fakes.cuda.install_fake_gpu`: ``sys.modules``
then maps ``onnxruntime`` to the fake module, whose names other than the faked ones (``SessionOptions``,
``RunOptions``, ``GraphOptimizationLevel``, ``capi`` with its error types...) are the real package's.

The fake refuses what ONNX Runtime or CUDA would refuse or get wrong; each rule names its document (ORT: ONNX
Runtime; "api_summary" is https://onnxruntime.ai/docs/api/python/api_summary.html; "CUDA EP" is
https://onnxruntime.ai/docs/execution-providers/CUDA-ExecutionProvider.html). Where a document is silent the fake
picks the stricter behaviour and says so.

* [PROVIDERS] ``get_available_providers()`` is ``['CUDAExecutionProvider', 'CPUExecutionProvider']``, and a session
  asked for ``CUDAExecutionProvider`` first reports both from ``get_providers()`` (api_summary, "Load and run a
  model": ``providers=['CUDAExecutionProvider', 'CPUExecutionProvider']``, "Kernels from different execution
  providers are chosen in the priority order given in the list of providers"). A provider name this build does not
  have is refused with ValueError (ORT's handling differs by version: warning or error; stricter). So are the
  arguments ``check_and_normalize_provider_args`` refuses with ValueError (``onnxruntime_inference_collection.py``: an
  entry other than a name or a (name, dict) *tuple*, ``provider_options`` beside tuples or of another length), which
  ORT then answers with its fallback to the CPU ([FALLBACK]; stricter). The real list of a GPU build also names
  ``TensorrtExecutionProvider`` (microsoft/onnxruntime issue 17801); unetrt asks only whether the CUDA one is there.
* [PROVIDER-LIBS] onnxruntime-gpu loads its CUDA provider's library, and with it CUDA's and cuDNN's, when a session
  asks for it; without them (``pip install onnxruntime-gpu`` alone, or libraries of another CUDA major version)
  the session is still made, on the CPU: ORT logs "Failed to create CUDAExecutionProvider. Require cuDNN 9.* and
  CUDA 12.* ... ONNX Runtime is using the CPU (CPUExecutionProvider)" and ``get_providers()`` is
  ``['CPUExecutionProvider']`` (microsoft/onnxruntime issue 21825; ``get_available_providers()`` still lists the
  CUDA provider: it names what the build has, not what loads). ``FakeCudaProvider.libraries = False`` fakes it.
  Before 1.19, with ``CUDA_PATH`` set, the same is an error instead: ``CreateExecutionProviderInstance`` throws
  "CUDA_PATH is set but CUDA wasnt able to be loaded. Please install the correct version of CUDA andcuDNN as
  mentioned in the GPU requirements page ..." (``onnxruntime/python/onnxruntime_pybind_state.cc`` of 1.17 and
  1.18; microsoft/onnxruntime issue 21424, which PR #21425 fixed for 1.19 by logging it alone), a ``RuntimeError``
  that [FALLBACK] answers; the warning of those versions names no CUDA or cuDNN version ("Failed to create
  CUDAExecutionProvider. Please reference https://onnxruntime.ai/docs/execution-providers/CUDA-ExecutionProvider.html
  #requirements to ensure all dependencies are met.").
* [DRIVER] onnxruntime-gpu's CUDA provider runs on the CUDA runtime it was built for (``FakeCudaProvider.cuda_major``,
  12 as the 1.19+ wheels on PyPI; CUDA EP, "Requirements"), which needs a driver of that CUDA major version or newer
  (any driver of the major serves: minor version compatibility, CUDA Compatibility guide): with an older one
  (:attr:`fakes.cuda.FakeGpu.driver_version`) the provider's first runtime call, ``cudaGetDeviceCount`` of the
  ``device_id`` option's parser ([DEVICE-ID]), fails with ``cudaErrorInsufficientDriver`` (35, "the installed NVIDIA
  CUDA driver is older than the CUDA runtime library", CUDA Runtime API, ``cudaError``), reported as ORT's
  ``CudaCall`` formats it ("CUDA failure 35: CUDA driver version is insufficient for CUDA runtime version ; GPU=...
  ; hostname=... ; file=... ; line=... ; expr=...; ", ``onnxruntime/core/providers/cuda/cuda_call.cc``) behind the
  throwing function's location, and thrown: a ``RuntimeError`` that [FALLBACK] answers.
* [PROVIDER-OPTIONS] The CUDA provider's options are parsed as ORT parses them: an unknown key is refused
  (``onnxruntime/core/framework/provider_options_utils.h``, ``ProviderOptionsParser::Parse``: "Unknown provider
  option"); the fake knows ``device_id`` (default 0), ``user_compute_stream`` and ``do_copy_in_default_stream``
  (CUDA EP, "Configuration Options"), and refuses the other real ones as not modelled.
* [DEVICE-ID] A ``device_id`` the machine does not have fails when the provider is made: the option's parser
  asks ``cudaGetDeviceCount`` and returns "Invalid device ID: N, must be between 0 (inclusive) and COUNT
  (exclusive)." (``onnxruntime/core/providers/cuda/cuda_execution_provider_info.cc``,
  ``CUDAExecutionProviderInfo::FromProviderOptions``; on a machine with no GPU ``cudaGetDeviceCount`` itself fails,
  ``cudaErrorNoDevice``), thrown with ``ORT_THROW_IF_ERROR``: a C++ exception, which reaches Python as a plain
  ``RuntimeError`` (pybind11's translation of ``std::exception``; ORT's typed errors are raised only from a
  returned status, ``onnxruntime/python/onnxruntime_pybind_exceptions.cc``).
* [FALLBACK] ``InferenceSession.__init__`` catches the ``ValueError`` or ``RuntimeError`` of making the session
  and, unless ``enable_fallback=0`` was passed, prints "EP Error ... when using [...]" and "Falling back to
  ['CPUExecutionProvider'] and retrying." *on stdout* and makes the session on the CPU
  (``onnxruntime/python/onnxruntime_inference_collection.py``, ``InferenceSession.__init__`` and
  ``_create_inference_session``). So a bad ``device_id`` gives a session on the CPU, not an error. The fake's own
  refusals of provider names and options ([PROVIDERS], [PROVIDER-OPTIONS]) are raised before, without the
  fallback (stricter). A session's ``disable_fallback()`` turns off the same fallback of its ``run`` ([RUN-FAILS]).
* [RUN-FAILS] The provider can also fail inside a Run, after the session opened (``FakeCudaProvider.run_failure``,
  a :class:`RunFailure`: every later Run of a CUDA session fails so). A kernel's failing status names the node
  ("Non-zero status code returned while running Conv node. Name:'...' Status Message: ...") and keeps the kernel's
  status code (``onnxruntime/core/framework/sequential_executor.cc``, ``ExecuteKernel``). The code is the
  provider's: ``EP_FAIL`` (11) where cuDNN's frontend cannot plan a convolution ("Failed to initialize CUDNN
  Frontend", ``onnxruntime/core/providers/cuda/nn/conv.cc``, ``CreateCudnnFeExecutionPlan``: cuDNN's engine
  libraries missing or of another version, or too little memory for its workspace; microsoft/onnxruntime issue
  23301), ``RUNTIME_EXCEPTION`` (6) where the device arena throws on an allocation it cannot make ("Failed to
  allocate memory for requested buffer of size N", ``onnxruntime/core/framework/bfc_arena.cc``; microsoft/
  onnxruntime issue 16307), ``FAIL`` (1) for a CUDA or cuDNN call's error returned as a status ("CUDA failure 2:
  out of memory", ``cuda_call.cc``). ``run`` raises the typed error of that code with the message
  "[ONNXRuntimeError] : CODE : NAME : ..." (``OrtPybindThrowIfError``, ``onnxruntime_pybind_exceptions.cc``), except
  that an ``EPFail`` with the session's fallback on prints "EP Error: ... using [...]" and "Falling back to
  ['CPUExecutionProvider'] and retrying." on stdout and runs again on the CPU, once
  (``onnxruntime_inference_collection.py``, ``Session.run``); ``run_with_iobinding``, which has no such fallback,
  raises ``RuntimeError("Error in execution: " + the message)``, the code left out
  (``onnxruntime_pybind_state.cc``; [ERRORS]).
* [VERSIONS] ``FakeCudaProvider.version`` is the onnxruntime release modelled (default: the installed one), which
  the fake module's ``__version__`` reports; read in the wheels' ``onnxruntime_inference_collection.py``:
  ``enable_fallback`` is read from ``InferenceSession``'s keywords from 1.23 on (1.17 to 1.22 set
  ``self._enable_fallback = True`` and ignore the keyword, so they print the banner whatever is passed); before
  1.19 the fallback of a session asking for ``CUDAExecutionProvider`` is ``['CUDAExecutionProvider',
  'CPUExecutionProvider']`` without options (a GPU build lists ``TensorrtExecutionProvider``,
  ``_create_inference_session``; PR #21425 made it the CPU), so the retry makes the CUDA provider again, on
  device 0, and where that fails too raises its error ``from`` the first (``raise fallback_error from e``): after
  the banner, a traceback.
* [FP16] The CUDA provider has FP16 kernels for the network's operators (``Conv``, ``ConvTranspose``, ``Relu``,
  ``Concat``, ``MaxPool``, ``Resize``... registered for ``MLFloat16`` beside ``float`` in
  ``onnxruntime/core/providers/cuda/cuda_execution_provider.cc``), so an FP16 graph (``unet-export --fp16``) computes
  in half there: a value past 65504 is inf. The CPU provider runs such a graph in FP32 between casts, which it
  removes between nodes, so the fake computes a CUDA session's FP16 graph with each FLOAT16 tensor kept a half
  (:func:`fakes.tensorrt.halves_kept`); a session that fell back to the CPU computes as the CPU does.
* [RUNTIME-CONTEXT] The provider works in the device's *primary* context through the CUDA runtime: creating it and
  every Run start with ``cudaSetDevice(device_id)`` (``onnxruntime/core/providers/cuda/cuda_execution_provider.cc``,
  ``CUDAExecutionProvider::OnRunStart``: "always set CUDA device when session::Run() in case it runs in a worker
  thread"), which "makes the primary context for the specified device current to the calling thread by calling
  cuCtxSetCurrent()" (CUDA Runtime API, "Interactions with the CUDA Driver API"): the fake replaces the top of the
  thread's driver context stack with it and leaves it there, as the runtime does; pycuda does not see that. The
  runtime retains the primary context once, for good ("Primary contexts will remain active until they are
  explicitly deinitialized using cudaDeviceReset()", same section): :attr:`FakeCudaProvider.runtime_contexts`.
  A Run whose primary context was destroyed all the same (someone released a retain that was not theirs, so the
  driver destroyed it: CUDA Driver API, ``cuDevicePrimaryCtxRelease``) is refused ([ERRORS]): the provider's
  stream and memory belonged to that context (``cudaErrorContextIsDestroyed``; CUDA Runtime API,
  ``cudaErrorIncompatibleDriverContext``: "... or because the Driver context has been destroyed").
* [INITIALIZERS] A session on the CUDA provider keeps the model's initializers (its weights) in device memory while
  it lives: ORT allocates each initializer of a node placed on a non-CPU provider with that provider's allocator and
  copies it there when the session is made ("deserialize to CPU first for non-CPU allocator, then copy to device",
  ``onnxruntime/core/framework/session_state_utils.cc``, ``DeserializeTensorProto`` under
  ``SaveInitializedTensors``). The fake holds their bytes in the primary context (:meth:`fakes.cuda.FakeGpu.hold`,
  freed with the session), so the device's free memory ([MEM-INFO] of :mod:`fakes.cuda`) shrinks by them; the
  arena's activations and cuDNN's workspace are not modelled. A GPU without room for them is not modelled either
  (NotImplementedError).
* [OWN-STREAM] The provider queues its kernels on a compute stream of its own, created with the provider, unless
  ``user_compute_stream`` names one (CUDA EP, ``user_compute_stream``: "Defines the compute stream for the inference
  to run on"; microsoft/onnxruntime PR #19229 "support user_compute_stream in python API": passing the caller's
  stream is how to "avoid synchronization"). Work other code queued on other streams is not waited for: the bound
  input is read as device memory is when the provider's kernel runs, without running what is still pending
  elsewhere (CUDA C++ Programming Guide, "Asynchronous Concurrent Execution"; the rule :mod:`fakes.cuda` keeps). So
  a caller that queued the input on its stream and did not synchronise it gets logits of stale memory.
  ``do_copy_in_default_stream`` (default 1, copies on the compute stream) concerns copies ORT makes itself; with
  both ends bound to device memory of the session's device there are none, and the fake models none.
* [RUN-SYNC] At the end of a Run the provider synchronises its compute stream, so the bound output is written when
  ``run_with_iobinding`` returns, unless the RunOptions config entry ``disable_synchronize_execution_providers`` is
  "1" (``include/onnxruntime/core/session/onnxruntime_run_options_config_keys.h``: "Set to '1' to not synchronize
  execution providers with CPU at the end of session run. Per default it will be set to '0'. Taking CUDA EP as an
  example, it omit triggering cudaStreamSynchronize on the compute stream"; ``CUDAExecutionProvider::OnRunEnd``).
  With it set, the output is written only once something waits for the provider's stream. Synchronising a stream
  that is capturing a CUDA graph is refused and invalidates the capture (CUDA Programming Guide, "CUDA Graphs:
  Prohibited and Unhandled Operations").
* [DEVICE-TYPE] ``bind_input``/``bind_output`` take a device name ORT knows ("cuda", "cpu", "cann", "dml",
  "webgpu", "gpu", "npu") or raise ``Exception("Unsupported device type: ...")``
  (``onnxruntime/python/onnxruntime_inference_collection.py``, ``get_ort_device_type``, used by
  ``OrtDevice.make``). A known name other than "cuda" with a pointer into fake device memory is refused
  ([ERRORS]): ORT would treat device memory as that device's (a host copy at bind time for "cpu": the
  docs are silent on what happens to a device pointer; stricter).
* [BIND-DEVICE] "cuda" memory is refused ([ERRORS]) in a session without the CUDA provider, and on a
  ``device_id`` other than the session's: ORT copies such an input across devices when it is bound ("Data copy will
  still be made, if your pre-allocated memory location does not match the one expected by the model. However,
  copies with OrtIoBindings are only done once, at the time of the binding, not at run time. This means, that if
  your input data required a copy, your further input modifications would not be seen by onnxruntime unless you
  rebind it", ORT C# API, ``OrtIoBinding``), so a later write to the buffer would be silently ignored; a device
  that does not exist at all fails in CUDA (``cudaErrorInvalidDevice``).
* [BUFFER] A bound ``buffer_ptr`` must lie in a live device allocation (``cuMemAlloc``, not page-locked host
  memory) whose ``shape`` x itemsize bytes from the pointer stay inside it, made in the session's primary context:
  "Each context has its own distinct address space. As a result, CUdeviceptr values from different contexts
  reference different memory locations" (CUDA C++ Programming Guide, Driver API, "Context"). ORT does not check a
  raw pointer (api_summary, "Data on device": ``bind_input(..., buffer_ptr=...)`` takes any integer); the GPU
  would read out of bounds or fault with ``cudaErrorIllegalAddress`` at run time. The fake refuses at bind time
  and again at run time ([ERRORS]), the allocation may have been freed in between.
* [DTYPE] The bound element type must be the one the model declares (``NodeArg.type``): ORT refuses an input of
  another type when the Run starts (``InferenceSession::ValidateInputs``: "Unexpected input data type. Actual: ...
  , expected: ..."; [ERRORS]). ORT does not validate a pre-allocated output's type the same way
  (silent on it); the fake refuses it too (stricter). ``element_type`` is a numpy type or an ONNX
  ``TensorProto`` integer (``IOBinding.bind_input`` docstring).
* [SHAPE] A bound input must have the declared rank and fixed dimensions (``ValidateInputs``: "Invalid rank for
  input", "Got invalid dimensions for input"; [ERRORS]); a bound output must have exactly the shape the
  model produces for that input ("Got invalid dimensions for output", ``InferenceSession::ValidateOutputs``, as
  onnxruntime 1.32 answers a pre-allocated output of a fixed-shape model, checked on the CPU build; ORT
  ``execution_frame.cc``: "Shape mismatch attempting to re-use buffer" for a dynamic one; a larger buffer ORT would
  use with a warning: refused here, stricter; api_summary Scenario 3: "Change the shape to the actual shape of the
  output being bound"). Both ends must be bound before a Run (ORT: a missing input is
  "Missing Input"; an unbound output ORT would allocate itself: refused, since the caller's buffer would then
  never be written).
* [ORTVALUE] ``OrtValue.ortvalue_from_numpy(array, device_type, device_id)`` (api_summary, "OrtValue";
  ``onnxruntime/python/onnxruntime_pybind_ortvalue.cc``) takes a device name ``OrtDevice.make`` knows ([DEVICE-TYPE]:
  ``Exception("Unsupported device type: ...")``) and place the tensor on the CPU or, "cuda", on the GPU; another known
  name raises ``RuntimeError("Unsupported device: Cannot place the OrtValue on this device")``, and an array of
  strings or objects ``RuntimeError("Creation of OrtValues is currently only supported from non-string numpy
  arrays")``. A "cuda" value needs the CUDA provider's library (``GetProviderInfo_CUDA``,
  ``onnxruntime/core/session/provider_bridge_ort.cc``: "CUDA Provider not available, can't get interface for it" where
  it does not load, [PROVIDER-LIBS]) and a device id the machine has (``IsCudaDeviceIdValid``,
  ``onnxruntime_pybind_state.cc``: ``cudaGetDeviceCount`` throws through ``CUDA_CALL_THROW`` under an old driver
  ([DRIVER]); a count of 0 or an id out of range is "The provided device id doesn't match any available GPUs on the
  machine."). Its memory is device memory of that device's primary context (``GetCudaAllocator``:
  ``CUDAAllocator::Alloc`` sets the device, then ``cudaMalloc``), written from the array by a synchronous
  ``cudaMemcpy`` (``CpuToCudaMemCpy``); the fake holds it while the value (or a binding of it) lives, and host code
  reads it only by copying (``numpy()``, ``copy_outputs_to_cpu()``: ``cudaMemcpy`` device to host). Where ORT's stream
  does not order with the legacy stream those copies use, the docs are silent: the fake's copies read device memory as
  it is now, without running work still queued on the provider's stream (stricter). A "cpu" value of
  ``ortvalue_from_numpy`` is backed by the array itself ("A copy of the data in the Numpy object is held by the
  OrtValue only if the device is NOT cpu", ``OrtValue.ortvalue_from_numpy``).
* [BIND-VALUE] ``IOBinding.bind_ortvalue_input`` binds a value as ``bind_input`` binds its pointer: a "cuda" value
  obeys [BIND-DEVICE] (a session without the CUDA provider, another device: refused) and [BUFFER], and is read when
  the provider's kernel runs ([OWN-STREAM]); its element type and shape meet [DTYPE] and [SHAPE] at the Run. A "cpu"
  value binds in a CPU session; in a CUDA session ORT would copy it to the device once, at binding ([BIND-DEVICE]),
  which the fake does not model (NotImplementedError). ``bind_output(name, device_type, device_id)`` without a
  buffer lets ORT allocate the output on that device at each Run (``IOBinding.bind_output``: "ORT will allocate the
  memory for the user"), under [DEVICE-TYPE] and [BIND-DEVICE]; ``get_outputs()`` returns the values of the last Run
  and ``copy_outputs_to_cpu()`` host copies of them (onnxruntime_inference_collection.py, ``IOBinding``); before any
  Run the fake refuses both (ORT returns values without data: stricter). ``synchronize_inputs`` and
  ``synchronize_outputs`` wait for the device (``IExecutionProvider::Sync``, the CUDA provider's
  ``cudaDeviceSynchronize``).
* [ERRORS] What each call raises is the type ORT's bindings raise, not ORT's typed errors alone: ``bind_input`` and
  ``bind_output`` raise ``RuntimeError("Error when binding input: ...")`` / ``("Error when binding output:
  ...")`` (``onnxruntime/python/onnxruntime_pybind_iobinding.cc``: ``throw std::runtime_error(...)``);
  ``run_with_iobinding`` raises ``RuntimeError("Error in execution: ...")`` for every failed Run (onnxruntime
  1.32's ``run_with_iobinding``, checked on the CPU build: a wrong input dimension, input type or output dimension
  all raise it); an IOBinding of another session is a ``ValueError`` ("IOBinding must be used with the session that
  created it.", ``Session.run_with_iobinding``); only ``run`` raises the typed ``Fail``/``InvalidArgument``
  (``OrtPybindThrowIfError``, ``onnxruntime/python/onnxruntime_pybind_exceptions.cc``), none of which is a
  ``RuntimeError``.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.machinery
import os
import re
import sys
import threading
import types
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .cuda import FakeContext, FakeCudaError, FakeGpu, FakeOp
from .tensorrt import halves_kept

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
PROVIDERS = [CUDA, CPU]
# onnxruntime_inference_collection.get_ort_device_type's names.
KNOWN_DEVICE_TYPES = ("cuda", "cann", "cpu", "dml", "webgpu", "gpu", "npu")
MODELLED_CUDA_OPTIONS = ("device_id", "user_compute_stream", "do_copy_in_default_stream")
# CUDA EP "Configuration Options" that exist but this fake does not model (refused rather than silently ignored).
UNMODELLED_CUDA_OPTIONS = ("has_user_compute_stream", "gpu_mem_limit", "arena_extend_strategy",
                           "cudnn_conv_algo_search", "cudnn_conv_use_max_workspace", "cudnn_conv1d_pad_to_nc1d",
                           "enable_cuda_graph", "enable_skip_layer_norm_strict_mode", "use_tf32",
                           "gpu_external_alloc", "gpu_external_free", "gpu_external_empty_cache",
                           "tunable_op_enable", "tunable_op_tuning_enable", "tunable_op_max_tuning_duration_ms",
                           "prefer_nhwc", "use_ep_level_unified_stream", "sdpa_kernel", "fuse_conv_bias",
                           "default_memory_arena_cfg")
_ONNX_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
               "tensor(uint8)": np.uint8, "tensor(int8)": np.int8, "tensor(uint16)": np.uint16,
               "tensor(int16)": np.int16, "tensor(int32)": np.int32, "tensor(int64)": np.int64,
               "tensor(bool)": np.bool_}


def real_onnxruntime() -> types.ModuleType:
    """The installed onnxruntime package (the CPU build), whatever ``sys.modules`` holds now."""
    module = sys.modules.get("onnxruntime")
    if module is not None and getattr(module, "_fake_cuda_provider", None) is not None:
        return module._real  # type: ignore[no-any-return,unused-ignore]
    return importlib.import_module("onnxruntime")


def installed_version() -> tuple[int, int]:
    """The (major, minor) release of the installed onnxruntime."""
    match = re.match(r"(\d+)\.(\d+)", str(real_onnxruntime().__version__))
    assert match is not None
    return int(match[1]), int(match[2])


def _errors() -> types.ModuleType:
    """ONNX Runtime's Python error types (``onnxruntime.capi.onnxruntime_pybind11_state``)."""
    return importlib.import_module("onnxruntime.capi.onnxruntime_pybind11_state")


def _element_dtype(element_type: Any) -> np.dtype[Any]:
    """A numpy dtype from a numpy type or an ONNX TensorProto integer, as ``IOBinding.bind_input`` takes it."""
    if isinstance(element_type, (int, np.integer)) and not isinstance(element_type, bool):
        from onnx import helper

        return np.dtype(helper.tensor_dtype_to_np_dtype(int(element_type)))
    return np.dtype(element_type)


# ONNX Runtime's status codes of the failures [RUN-FAILS] models (include/onnxruntime/core/common/status.h), each
# with the name of the Python error ``run`` raises for it.
_STATUS_CODES = {"FAIL": (1, "Fail"), "RUNTIME_EXCEPTION": (6, "RuntimeException"), "EP_FAIL": (11, "EPFail")}


@dataclass(frozen=True)
class RunFailure:
    """The CUDA provider failing inside a Run ([RUN-FAILS]): ONNX Runtime's status code name and the executor's
    message of the failing node."""

    code: str
    message: str

    def raised(self) -> Exception:
        """The typed error ``run`` raises for it (``[ONNXRuntimeError] : CODE : NAME : message``)."""
        number, error = _STATUS_CODES[self.code]
        return getattr(_errors(), error)(f"[ONNXRuntimeError] : {number} : {self.code} : {self.message}")


# [RUN-FAILS]: the two failures of a first Run seen in the issues cited there, on a Conv node of the tiny model.
CUDNN_FRONTEND_FAILED = RunFailure(
    "EP_FAIL", "Non-zero status code returned while running Conv node. Name:'/enc0/conv/Conv' Status Message: Failed "
    "to initialize CUDNN Frontend/onnxruntime_src/onnxruntime/core/providers/cuda/cudnn_fe_call.cc:99 "
    "std::conditional_t<THRW, void, onnxruntime::common::Status> onnxruntime::CudaCall(ERRTYPE, const char*, const "
    "char*, SUCCTYPE, const char*, const char*, int) [with ERRTYPE = cudnn_frontend::error_object; bool THRW = true; "
    "SUCCTYPE = cudnn_frontend::error_code_t] CUDNN_FE failure 11: CUDNN_BACKEND_API_FAILED ; GPU=0 ; "
    "hostname=desktop ; file=/onnxruntime_src/onnxruntime/core/providers/cuda/nn/conv.cc ; line=224 ; "
    "expr=s_.cudnn_fe_graph->build_operation_graph(handle); with the cudnn frontend json:\n{\"context\": {}}")
ARENA_OUT_OF_MEMORY = RunFailure(
    "RUNTIME_EXCEPTION", "Non-zero status code returned while running Conv node. Name:'/enc0/conv/Conv' Status "
    "Message: /onnxruntime_src/onnxruntime/core/framework/bfc_arena.cc:376 void* "
    "onnxruntime::BFCArena::AllocateRawInternal(size_t, bool, onnxruntime::Stream*, bool, "
    "onnxruntime::WaitNotificationFn) Failed to allocate memory for requested buffer of size 19327352832")


@dataclass
class RunRecord:
    """One ``run_with_iobinding``: what was bound and on which stream the provider queued its kernel."""

    stream: int
    input_ptr: int
    input_shape: tuple[int, ...]
    output_ptr: int
    output_shape: tuple[int, ...]
    synchronized: bool
    thread: int


@dataclass
class FakeCudaProvider:
    """The state the fake onnxruntime-gpu shares: the GPU, the runtime's contexts and what ran.

    Attributes:
        gpu: the fake GPU (pycuda and the driver library see the same one).
        libraries: whether the CUDA provider's libraries load ([PROVIDER-LIBS]; False: sessions run on the CPU).
        version: the onnxruntime release modelled, (major, minor) ([VERSIONS]).
        cuda_major: the CUDA major version the provider's runtime was built for ([DRIVER]).
        runtime_contexts: the primary context the CUDA runtime retained, per device ordinal ([RUNTIME-CONTEXT]).
        run_failure: how every Run of a CUDA session fails from now on ([RUN-FAILS]); None: Runs succeed.
        runs: every ``run_with_iobinding`` that queued work.
        refused: why each refused call was refused (also raised).
    """

    gpu: FakeGpu
    libraries: bool = True  # whether CUDA's and cuDNN's libraries load [PROVIDER-LIBS]
    version: tuple[int, int] = field(default_factory=installed_version)  # [VERSIONS]
    cuda_major: int = 12  # [DRIVER]
    runtime_contexts: dict[int, FakeContext] = field(default_factory=dict)
    run_failure: RunFailure | None = None  # [RUN-FAILS]
    runs: list[RunRecord] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    def refuse(self, error: type[BaseException], message: str) -> BaseException:
        """Record why a call is refused and return the error to raise."""
        self.refused.append(message)
        return error(message)

    def runtime_primary(self, ordinal: int) -> FakeContext:
        """The primary context the runtime uses on ``ordinal``, initialised and retained on first use (once, as
        the CUDA runtime keeps it until cudaDeviceReset)."""
        context = self.runtime_contexts.get(ordinal)
        if context is None or not context.alive:
            self.gpu.initialized = True  # the runtime initialises the driver itself
            context = self.gpu.primary(ordinal)
            context.retains += 1
            self.runtime_contexts[ordinal] = context
        return context

    def set_device(self, context: FakeContext) -> None:
        """``cudaSetDevice``: the primary context becomes current on this thread (cuCtxSetCurrent replaces the top
        of the driver's stack) and stays current; pycuda's own stack does not see it."""
        stack = self.gpu.driver_stack()
        if stack:
            stack[-1] = context
        else:
            stack.append(context)

    def device_memory(self, ptr: int, nbytes: int, context: FakeContext, error: type[BaseException],
                      what: str) -> None:
        """[BUFFER]: ``nbytes`` at ``ptr`` lie in one live device allocation made in ``context``.

        Raises:
            error: when they do not (recorded in :attr:`refused`).
        """
        try:
            _, owner, _, kind = self.gpu._find(int(ptr), nbytes)
        except FakeCudaError as exc:
            raise self.refuse(error, f"{what}: {nbytes} bytes at {int(ptr):#x} are not inside a live device "
                                     f"allocation ({exc})") from None
        if kind != "device":
            raise self.refuse(error, f"{what}: {int(ptr):#x} is {kind} host memory, not device memory from "
                                     "cuMemAlloc")
        if owner is None or not owner.alive:
            raise self.refuse(error, f"{what}: the memory at {int(ptr):#x} belongs to a destroyed context")
        if owner is not context:
            raise self.refuse(error, f"{what}: the memory at {int(ptr):#x} was allocated in another context "
                                     f"(device {owner.ordinal}, {'primary' if owner.primary else 'not primary'}) "
                                     f"than the provider's primary context of device {context.ordinal}: contexts "
                                     "have distinct address spaces")


@dataclass
class _Bound:
    """One ``bind_input`` or ``bind_output`` of device memory."""

    device_type: str
    device_id: int
    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    ptr: int


def _release_to_arena(gpu: FakeGpu, ptr: int) -> None:
    """Give an allocation of ORT's CUDA allocator back: its arena keeps the memory for later allocations, without a
    ``cudaFree`` and so without the device synchronisation a free makes (``onnxruntime/core/framework/bfc_arena.cc``,
    ``BFCArena::Free``); to the fake GPU it is gone."""
    with gpu.lock:
        if ptr in gpu._blocks:
            del gpu._blocks[ptr]
            gpu._starts.remove(ptr)


@dataclass(frozen=True)
class _Tensor:
    """What the fake's OrtValue holds (ORT's C++ ``OrtValue``): where the tensor lies, and its host array on the
    CPU."""

    device_type: str
    device_id: int
    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    ptr: int
    host: np.ndarray | None = None


class FakeOrtValue:
    """``onnxruntime.OrtValue`` of onnxruntime-gpu: a tensor on the CPU or in fake device memory ([ORTVALUE])."""

    provider: FakeCudaProvider  # set on the subclass that make_onnxruntime builds

    # No __init__ of ORT's: its parameters differ between the onnxruntime of JetPack 6 (1.23: ortvalue, numpy_obj)
    # and a desktop's (1.32 adds session), and only ORT's own factories call it, as only _of makes the fake's.

    @classmethod
    def _of(cls, tensor: _Tensor, owned: bool = False) -> FakeOrtValue:
        """The value of ``tensor``; ``owned``: device memory ORT's allocator made for it, held while it lives."""
        value = cls.__new__(cls)
        value._device_type, value._device_id, value._dtype = tensor.device_type, tensor.device_id, tensor.dtype
        value._shape, value._ptr, value._host = tensor.shape, tensor.ptr, tensor.host
        if owned:
            weakref.finalize(value, _release_to_arena, cls.provider.gpu, tensor.ptr)
        return value

    @classmethod
    def _place(cls, dtype: np.dtype[Any], shape: tuple[int, ...], device_type: str,
               device_id: int) -> tuple[int, FakeContext | None]:
        """[ORTVALUE]: device memory for a "cuda" value ((0, None) for "cpu"), made as ORT makes it.

        Raises:
            Exception, RuntimeError: as ORT raises them.
        """
        provider, gpu = cls.provider, cls.provider.gpu
        if device_type not in KNOWN_DEVICE_TYPES:
            raise provider.refuse(Exception, "Unsupported device type: " + str(device_type))
        if dtype.kind not in "biufc":
            raise provider.refuse(RuntimeError, "Creation of OrtValues is currently only supported from non-string "
                                                "numpy arrays")
        if device_type == "cpu":
            return 0, None
        if device_type != "cuda":
            raise provider.refuse(RuntimeError, "Unsupported device: Cannot place the OrtValue on this device")
        if not provider.libraries:  # [PROVIDER-LIBS]
            raise provider.refuse(RuntimeError, "CUDA Provider not available, can't get interface for it")
        if gpu.driver_version // 1000 < provider.cuda_major:  # [DRIVER]: cudaGetDeviceCount in IsCudaDeviceIdValid
            raise provider.refuse(RuntimeError, "CUDA failure 35: CUDA driver version is insufficient for CUDA "
                                                "runtime version ; GPU=0 ; hostname=desktop ; "
                                                "expr=cudaGetDeviceCount(&num_devices); ")
        if not 0 <= int(device_id) < gpu.count:
            raise provider.refuse(RuntimeError, "The provided device id doesn't match any available GPUs on the "
                                                "machine.")
        context = provider.runtime_primary(int(device_id))
        provider.set_device(context)  # CUDAAllocator::Alloc: cudaSetDevice, then cudaMalloc in its primary context
        ptr, _ = gpu.allocate(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
        return ptr, context

    @classmethod
    def ortvalue_from_numpy(cls, numpy_obj: Any, /, device_type: str = "cpu", device_id: int = 0,
                            vendor_id: int = -1) -> FakeOrtValue:
        """See ``onnxruntime.OrtValue.ortvalue_from_numpy`` ([ORTVALUE])."""
        if vendor_id != -1:
            raise NotImplementedError("the fake places values by device name; vendor ids are not modelled")
        if not isinstance(numpy_obj, np.ndarray):  # IsNumericNumpyArray: a list or a scalar is no array either
            raise cls.provider.refuse(RuntimeError, "Creation of OrtValues is currently only supported from "
                                                    "non-string numpy arrays")
        array = numpy_obj
        shape = tuple(int(d) for d in array.shape)
        ptr, _ = cls._place(array.dtype, shape, device_type, device_id)
        if device_type == "cpu":
            return cls._of(_Tensor("cpu", int(device_id), array.dtype, shape, int(array.ctypes.data), array))
        # CpuToCudaMemCpy: a synchronous cudaMemcpy, done when the call returns.
        cls.provider.gpu.view(ptr, shape, array.dtype)[...] = array
        return cls._of(_Tensor("cuda", int(device_id), array.dtype, shape, ptr), owned=True)

    def data_ptr(self) -> int:
        """See ``onnxruntime.OrtValue.data_ptr``: a device pointer for a "cuda" value."""
        return self._ptr

    def device_name(self) -> str:
        return self._device_type

    def shape(self) -> list[int]:
        return list(self._shape)

    def data_type(self) -> str:
        return next(name for name, dtype in _ONNX_TYPES.items() if np.dtype(dtype) == self._dtype)

    def element_type(self) -> int:
        from onnx import helper

        return int(helper.np_dtype_to_tensor_dtype(self._dtype))

    def is_tensor(self) -> bool:
        return True

    def has_value(self) -> bool:
        return True

    def numpy(self) -> np.ndarray:
        """See ``onnxruntime.OrtValue.numpy``: a host copy (of device memory as it is now, [ORTVALUE])."""
        if self._host is not None:
            return np.array(self._host)
        return np.array(self.provider.gpu.view(self._ptr, self._shape, self._dtype))


class FakeIOBinding:
    """``onnxruntime.IOBinding`` of a fake session: device pointers (``bind_input``, pre-allocated ``bind_output``),
    OrtValues (``bind_ortvalue_input``) and outputs ORT allocates on a device ([BIND-VALUE])."""

    def __init__(self, session: FakeInferenceSession) -> None:
        self._session = session
        self.inputs: dict[str, _Bound] = {}
        self.outputs: dict[str, _Bound] = {}
        self.allocated: dict[str, _Bound] = {}  # outputs bound to a device alone: ORT allocates them at each Run
        self.values: dict[str, FakeOrtValue] = {}  # bound OrtValues, held as ORT's binding holds them
        self.results: list[FakeOrtValue] | None = None  # the outputs of the last Run

    def __getattr__(self, name: str) -> Any:
        raise AttributeError(f"the fake IOBinding has no {name}; fake it in tests/fakes/onnxruntime_cuda.py")

    def bind_input(self, name: str, device_type: str, device_id: int, element_type: Any, shape: Any,
                   buffer_ptr: int) -> None:
        """See ``onnxruntime.IOBinding.bind_input``."""
        self.inputs[name] = self._session._bind("input", name, device_type, device_id, element_type, shape,
                                                buffer_ptr)
        self.values.pop(name, None)

    def bind_ortvalue_input(self, name: str, ortvalue: Any) -> None:
        """See ``onnxruntime.IOBinding.bind_ortvalue_input`` ([BIND-VALUE])."""
        if not isinstance(ortvalue, FakeOrtValue):
            raise NotImplementedError("the fake binds the fake onnxruntime's OrtValues only")
        value, session = ortvalue, self._session
        if value._device_type == "cpu":
            if session._on_cuda:
                raise NotImplementedError("a host OrtValue bound in a CUDA session (ORT copies it to the device "
                                          "at binding) is not modelled")
            session._input_name("input", name)
            self.inputs[name] = _Bound("cpu", value._device_id, value._dtype, value._shape, value._ptr)
        else:
            self.inputs[name] = session._bind("input", name, "cuda", value._device_id, value._dtype,
                                              list(value._shape), value._ptr)
        self.values[name] = value

    def bind_output(self, name: str, device_type: str = "cpu", device_id: int = 0, element_type: Any = None,
                    shape: Any = None, buffer_ptr: int | None = None) -> None:
        """See ``onnxruntime.IOBinding.bind_output``: a pre-allocated buffer, or a device ORT allocates on."""
        if buffer_ptr is None:
            self.allocated[name] = self._session._bind_device("output", name, device_type, device_id)
            self.outputs.pop(name, None)
            return
        if element_type is None or shape is None:
            # onnxruntime_inference_collection.IOBinding.bind_output raises this ValueError itself.
            raise ValueError("`element_type` and `shape` are to be provided if pre-allocated memory is provided")
        self.outputs[name] = self._session._bind("output", name, device_type, device_id, element_type, shape,
                                                 buffer_ptr)
        self.allocated.pop(name, None)

    def get_outputs(self) -> list[FakeOrtValue]:
        """See ``onnxruntime.IOBinding.get_outputs``: the outputs of the last Run, where they lie ([BIND-VALUE])."""
        if self.results is None:
            raise self._session.provider.refuse(RuntimeError, "get_outputs() before any run_with_iobinding of this "
                                                              "binding: no output has data yet")
        return list(self.results)

    def copy_outputs_to_cpu(self) -> list[np.ndarray]:
        """See ``onnxruntime.IOBinding.copy_outputs_to_cpu``: host copies of the last Run's outputs."""
        return [value.numpy() for value in self.get_outputs()]

    def synchronize_inputs(self) -> None:
        """See ``onnxruntime.IOBinding.synchronize_inputs``: the provider's Sync, a device synchronisation."""
        self._session._sync_device()

    def synchronize_outputs(self) -> None:
        """See ``onnxruntime.IOBinding.synchronize_outputs``: the provider's Sync, a device synchronisation."""
        self._session._sync_device()

    def clear_binding_inputs(self) -> None:
        self.inputs.clear()
        self.values.clear()

    def clear_binding_outputs(self) -> None:
        self.outputs.clear()
        self.allocated.clear()


class FakeInferenceSession:
    """``onnxruntime.InferenceSession`` of onnxruntime-gpu: the CUDA provider over the fake GPU when asked for.

    Args:
        path_or_bytes: the model, as ORT takes it.
        sess_options: the session options (passed to the real CPU session that computes the logits).
        providers: provider names or (name, options) pairs, in order of preference.
        provider_options: options per provider, beside plain names.

    Raises:
        ValueError: [PROVIDERS], [PROVIDER-OPTIONS].
        RuntimeError: [DEVICE-ID] with ``enable_fallback=0``; otherwise the session falls back to the CPU
            ([FALLBACK]).
    """

    provider: FakeCudaProvider  # set on the subclass that make_onnxruntime builds
    ort_value: type[FakeOrtValue]  # the module's OrtValue, alike

    def __init__(self, path_or_bytes: Any, sess_options: Any = None, providers: Any = None,
                 provider_options: Any = None, **kwargs: Any) -> None:
        real = real_onnxruntime()
        names, options = self._providers(providers, provider_options)
        # The model loads (or fails to, with ORT's own errors) before any provider is set up, as in ORT.
        self._cpu = real.InferenceSession(path_or_bytes, sess_options, providers=[CPU], **kwargs)
        self._on_cuda = bool(names) and names[0] == CUDA
        self._options = options.get(CUDA, {})
        self._output_shapes: dict[tuple[int, ...], tuple[int, ...]] = {}
        self.device_id = 0
        self.context: FakeContext | None = None
        self.stream = 0
        self.fallback = True  # [FALLBACK] of run(), until disable_fallback()
        if self._on_cuda:
            try:
                self._on_cuda = self._start_cuda_provider()
            except RuntimeError as exc:  # [FALLBACK], [VERSIONS]
                self._fall_back(exc, providers, int(kwargs.get("enable_fallback", 1)) == 1)
        self._providers_in_use = [CUDA, CPU] if self._on_cuda else [CPU]
        if not self._on_cuda:
            self._options = {}
        # [FP16]: what the CUDA provider's kernels compute (the CPU session stays for what the session answers).
        self._cuda_compute = self._cpu
        if self._on_cuda:
            model = path_or_bytes if isinstance(path_or_bytes, bytes) else Path(path_or_bytes).read_bytes()
            if not self.provider.gpu.hold(self, _initializer_bytes(model)):  # [INITIALIZERS]
                raise NotImplementedError("a GPU without room for the model's initializers is not modelled")
            if _computes_in_half(model):
                self._cuda_compute = real.InferenceSession(halves_kept(model), sess_options, providers=[CPU],
                                                           **kwargs)

    # --- creation ---------------------------------------------------------------------------------------------

    def _providers(self, providers: Any, provider_options: Any) -> tuple[list[str], dict[str, dict[str, Any]]]:
        names: list[str] = []
        options: dict[str, dict[str, Any]] = {}
        entries = list(providers or [CPU])
        shapes_ok = all(isinstance(entry, str) or (isinstance(entry, tuple) and len(entry) == 2
                                                   and isinstance(entry[0], str) and isinstance(entry[1], dict))
                        for entry in entries)
        if provider_options is not None:
            shapes_ok = shapes_ok and len(provider_options) == len(entries) and all(
                isinstance(entry, str) for entry in entries) and all(isinstance(o, dict) for o in provider_options)
        if not shapes_ok:  # [PROVIDERS]: check_and_normalize_provider_args
            raise self.provider.refuse(ValueError, "'providers' values must be either strings or (string, dict) "
                                                   "tuples, and 'provider_options' dicts for provider names, one each")
        for index, entry in enumerate(entries):
            name, given = (entry[0], dict(entry[1])) if isinstance(entry, tuple) else (entry, {})
            if provider_options is not None:
                given.update(provider_options[index])
            if name not in PROVIDERS:
                raise self.provider.refuse(ValueError, f"provider {name!r} is not available in this build; "
                                                       f"available: {PROVIDERS}")
            names.append(name)
            options[name] = given
        for key in options.get(CUDA, {}):
            if key not in MODELLED_CUDA_OPTIONS:
                reason = ("is an option of the CUDA provider the fake does not model; fake it in "
                          "tests/fakes/onnxruntime_cuda.py") if key in UNMODELLED_CUDA_OPTIONS else "is unknown"
                raise self.provider.refuse(ValueError, f"Unknown provider option: {key!r} {reason}")
        return names, options

    def _start_cuda_provider(self) -> bool:
        """Load the CUDA provider's libraries and make it: whether it runs ([PROVIDER-LIBS]: False after ORT's
        warning on stderr where they do not load).

        Raises:
            RuntimeError: [PROVIDER-LIBS] with ``CUDA_PATH`` set before 1.19, [DRIVER], [DEVICE-ID].
        """
        provider = self.provider
        if not provider.libraries:  # [PROVIDER-LIBS]
            where = "/onnxruntime_src/onnxruntime/python/onnxruntime_pybind_state.cc"
            if provider.version < (1, 19):
                if os.environ.get("CUDA_PATH"):
                    raise provider.refuse(RuntimeError, f"{where}:857 std::unique_ptr<onnxruntime::IExecutionProvider>"
                                                        " onnxruntime::python::CreateExecutionProviderInstance(const "
                                                        "onnxruntime::SessionOptions&, const string&, const "
                                                        "ProviderOptionsMap&) CUDA_PATH is set but CUDA wasnt able to "
                                                        "be loaded. Please install the correct version of CUDA "
                                                        "andcuDNN as mentioned in the GPU requirements page  "
                                                        "(https://onnxruntime.ai/docs/execution-providers/CUDA-"
                                                        "ExecutionProvider.html#requirements),  make sure they're in "
                                                        "the PATH, and that your GPU is supported.")
                print("[W:onnxruntime:Default, onnxruntime_pybind_state.cc:866 CreateExecutionProviderInstance] Failed "
                      "to create CUDAExecutionProvider. Please reference https://onnxruntime.ai/docs/execution-"
                      "providers/CUDA-ExecutionProvider.html#requirements to ensure all dependencies are met.",
                      file=sys.stderr)
            else:
                print("[W:onnxruntime:Default, onnxruntime_pybind_state.cc:965 CreateExecutionProviderInstance] Failed "
                      "to create CUDAExecutionProvider. Require cuDNN 9.* and CUDA 12.*. Please install all "
                      "dependencies as mentioned in the GPU requirements page, make sure they're in the PATH, and "
                      "that your GPU is supported.\nONNX Runtime is using the CPU (CPUExecutionProvider).",
                      file=sys.stderr)
            return False
        self._make_cuda_provider()
        return True

    def _fall_back(self, error: RuntimeError, providers: Any, enabled: bool) -> None:
        """[FALLBACK] as the modelled release makes it ([VERSIONS]): the banner on stdout, then the CPU, or before
        1.19 the CUDA provider again without options.

        Raises:
            RuntimeError: ``error`` where the fallback is off, or the retry's own error.
        """
        version = self.provider.version
        if not enabled and version >= (1, 23):
            raise error
        retry = [CUDA, CPU] if version < (1, 19) else [CPU]
        print(f"*************** EP Error ***************\nEP Error {error} when using {providers}\n"
              f"Falling back to {retry} and retrying.\n****************************************")
        self._on_cuda, self._options = False, {}
        if retry[0] == CUDA:
            try:
                self._on_cuda = self._start_cuda_provider()
            except RuntimeError as again:
                raise again from error

    def _make_cuda_provider(self) -> None:
        provider, gpu = self.provider, self.provider.gpu
        device_id = int(self._options.get("device_id", 0))
        if gpu.driver_version // 1000 < provider.cuda_major:  # [DRIVER]
            where = "/onnxruntime_src/onnxruntime/core/providers/cuda/cuda_execution_provider_info.cc"
            raise provider.refuse(RuntimeError, f"{where}:185 static onnxruntime::CUDAExecutionProviderInfo "
                                                "onnxruntime::CUDAExecutionProviderInfo::FromProviderOptions(const "
                                                "onnxruntime::ProviderOptions&) CUDA failure 35: CUDA driver version "
                                                "is insufficient for CUDA runtime version ; GPU=0 ; hostname=desktop ; "
                                                f"file={where} ; line=75 ; expr=cudaGetDeviceCount(&num_devices); ")
        if gpu.count == 0:  # [DEVICE-ID]
            raise provider.refuse(RuntimeError, "CUDA failure 100: no CUDA-capable device is detected ; "
                                                "cudaGetDeviceCount() failed (cuda_execution_provider_info.cc)")
        if not 0 <= device_id < gpu.count:
            raise provider.refuse(RuntimeError, f"Invalid device ID: {device_id}, must be between 0 (inclusive) "
                                                f"and {gpu.count} (exclusive).")
        self.device_id = device_id
        self.context = provider.runtime_primary(device_id)
        provider.set_device(self.context)
        user_stream = int(self._options.get("user_compute_stream", 0) or 0)
        if user_stream:
            stream = gpu.streams.get(user_stream)
            if stream is None or stream.context is not self.context:
                raise provider.refuse(ValueError, f"user_compute_stream {user_stream:#x} is not a stream of the "
                                                  f"primary context of device {device_id}")
            self.stream = user_stream
        else:
            self.stream = gpu.new_stream().handle  # the provider's own compute stream, in the primary context

    # --- what the real session answers ----------------------------------------------------------------------

    def get_providers(self) -> list[str]:
        return list(self._providers_in_use)

    def disable_fallback(self) -> None:
        """See ``onnxruntime.InferenceSession.disable_fallback`` ([FALLBACK])."""
        self.fallback = False

    def enable_fallback(self) -> None:
        """See ``onnxruntime.InferenceSession.enable_fallback`` ([FALLBACK])."""
        self.fallback = True

    def get_provider_options(self) -> dict[str, dict[str, str]]:
        return {name: ({k: str(v) for k, v in self._options.items()} if name == CUDA else {})
                for name in self._providers_in_use}

    def get_inputs(self) -> Any:
        return self._cpu.get_inputs()

    def get_outputs(self) -> Any:
        return self._cpu.get_outputs()

    def get_modelmeta(self) -> Any:
        return self._cpu.get_modelmeta()

    def get_session_options(self) -> Any:
        return self._cpu.get_session_options()

    def run(self, output_names: Any, input_feed: Any, run_options: Any = None) -> Any:
        """Host arrays in and out: ORT copies them to the device and back inside the Run, which ends with the
        provider's stream synchronised, so the CPU session's answer is the answer."""
        if self._on_cuda:
            self._run_start()
            failure = self.provider.run_failure
            if failure is not None:  # [RUN-FAILS]
                error = failure.raised()
                self.provider.refused.append(str(error))
                if failure.code != "EP_FAIL" or not self.fallback:
                    raise error
                print(f"EP Error: {error} using {self.get_providers()}")
                print(f"Falling back to {[CPU]} and retrying.")
                self._on_cuda, self._options, self._providers_in_use, self.fallback = False, {}, [CPU], False
        session = self._cuda_compute if self._on_cuda else self._cpu
        return session.run(output_names, input_feed, run_options)

    def io_binding(self) -> FakeIOBinding:
        return FakeIOBinding(self)

    # --- IO binding -------------------------------------------------------------------------------------------

    def _input_name(self, end: str, name: str) -> None:
        """Refuse a name the model has no ``end`` ("input" or "output") of ([ERRORS])."""
        args = self._cpu.get_inputs() if end == "input" else self._cpu.get_outputs()
        if name not in [arg.name for arg in args]:
            raise self.provider.refuse(RuntimeError, f"Error when binding {end}: Failed to find {end} name in the "
                                                     f"mapping: {name}")

    def _device_of(self, end: str, name: str, device_type: str, device_id: int) -> None:
        """[DEVICE-TYPE], the name, and [BIND-DEVICE] for "cuda": what every binding of ``end`` ``name`` obeys."""
        provider, prefix = self.provider, f"Error when binding {end}: "
        if device_type not in KNOWN_DEVICE_TYPES:
            # onnxruntime_inference_collection.get_ort_device_type raises a plain Exception.
            raise provider.refuse(Exception, "Unsupported device type: " + str(device_type))
        self._input_name(end, name)
        if device_type != "cuda":
            return
        if not self._on_cuda or self.context is None:
            raise provider.refuse(RuntimeError, f"{prefix}There's no data transfer registered for copying "
                                                f"tensors from CUDA: {end} {name!r} bound to CUDA memory in a "
                                                "session without the CUDA provider")
        if not 0 <= int(device_id) < provider.gpu.count:
            raise provider.refuse(RuntimeError, f"{prefix}{end} {name!r} bound on CUDA device {device_id}, which "
                                                "does not exist (cudaErrorInvalidDevice)")
        if int(device_id) != self.device_id:
            raise provider.refuse(RuntimeError, f"{prefix}{end} {name!r} bound on CUDA device {device_id} but the "
                                                f"session runs on device {self.device_id}: ORT would copy it once, "
                                                "at binding, and miss later writes")

    def _bind(self, end: str, name: str, device_type: str, device_id: int, element_type: Any, shape: Any,
              buffer_ptr: int) -> _Bound:
        provider, prefix = self.provider, f"Error when binding {end}: "
        if device_type in KNOWN_DEVICE_TYPES and device_type != "cuda":
            self._input_name(end, name)
            raise provider.refuse(RuntimeError, f"{prefix}{end} {name!r} bound on device type {device_type!r} "
                                                f"with a pointer into CUDA device memory")
        self._device_of(end, name, device_type, device_id)
        bound = _Bound(device_type, int(device_id), _element_dtype(element_type),
                       tuple(int(d) for d in shape), int(buffer_ptr))
        if any(d <= 0 for d in bound.shape):
            raise provider.refuse(RuntimeError, f"{prefix}{end} {name!r} bound with shape {bound.shape}")
        assert self.context is not None  # _device_of refused a session without the CUDA provider
        provider.device_memory(bound.ptr, self._nbytes(bound), self.context, RuntimeError,
                               f"{prefix}bind_{end}({name!r})")
        return bound

    def _bind_device(self, end: str, name: str, device_type: str, device_id: int) -> _Bound:
        """An output bound to a device alone ([BIND-VALUE]): ORT allocates it there at each Run (shape and pointer
        are left empty until then)."""
        self._device_of(end, name, device_type, device_id)
        if device_type not in ("cpu", "cuda"):
            raise NotImplementedError(f"outputs ORT allocates on {device_type!r} are not modelled")
        if device_type == "cpu" and self._on_cuda:
            raise NotImplementedError("a CUDA session's output ORT copies to the host is not modelled")
        declared = self._cpu.get_outputs()[0]
        return _Bound(device_type, int(device_id), np.dtype(_ONNX_TYPES[declared.type]), (), 0)

    def _sync_device(self) -> None:
        """The CUDA provider's Sync (``cudaDeviceSynchronize``): all work queued on the device runs (nothing to
        wait for in a CPU session)."""
        if self._on_cuda:
            self.provider.gpu.run_pending()

    @staticmethod
    def _nbytes(bound: _Bound) -> int:
        return int(np.prod(bound.shape, dtype=np.int64)) * bound.dtype.itemsize

    def _run_start(self, error: type[BaseException] | None = None, prefix: str = "") -> FakeContext:
        """[RUNTIME-CONTEXT]: cudaSetDevice(device_id) at the start of every Run; a failure is ``error`` (ORT's
        ``Fail`` by default, as ``run`` raises it) with ``prefix`` before ORT's message ([ERRORS])."""
        context = self.context
        assert context is not None  # a CUDA session
        if not context.alive:
            raise self.provider.refuse(error or _errors().Fail,
                                       f"{prefix}CUDA failure 709: context is destroyed (the primary context of "
                                       f"device {self.device_id} the provider was created in was released by "
                                       "someone else)")
        self.provider.set_device(context)
        return context

    def _output_shape(self, input_shape: tuple[int, ...], dtype: np.dtype[Any],
                      run_options: Any = None) -> tuple[int, ...]:
        """The logits' shape for an input shape (computed once, on zeros: a shape never depends on values here), by a
        Run with ``run_options``: their log level decides, as in ORT, whether a failing node is logged on stderr."""
        if input_shape not in self._output_shapes:
            name = self._cpu.get_inputs()[0].name
            (out,) = self._cpu.run(None, {name: np.zeros(input_shape, dtype)}, run_options)
            self._output_shapes[input_shape] = tuple(int(d) for d in np.shape(out))
        return self._output_shapes[input_shape]

    def _value(self, bound: _Bound, host: np.ndarray | None = None, owned: bool = False) -> FakeOrtValue:
        """The OrtValue ``get_outputs`` returns for an output: over ``host`` on the CPU, else over the device memory
        (``owned``: memory ORT allocated, held by the value)."""
        ptr = bound.ptr if host is None else int(host.ctypes.data)
        return self.ort_value._of(_Tensor(bound.device_type, bound.device_id, bound.dtype, bound.shape, ptr, host),
                                  owned)

    def _validate(self, binding: FakeIOBinding, run_options: Any = None) -> tuple[str, _Bound, str, _Bound]:
        """[DTYPE], [SHAPE] and both ends bound: (input name, input, output name, output); an output ORT allocates
        comes with the shape it will have."""
        provider, failed, errors = self.provider, "Error in execution: ", _errors()
        declared_in, declared_out = self._cpu.get_inputs()[0], self._cpu.get_outputs()[0]
        if declared_in.name not in binding.inputs:
            raise provider.refuse(RuntimeError, f"{failed}Missing Input: {declared_in.name}")
        allocated = binding.allocated.get(declared_out.name)
        if declared_out.name not in binding.outputs and allocated is None:
            raise provider.refuse(RuntimeError, f"{failed}output {declared_out.name!r} is not bound to a buffer")
        bound_in, bound_out = binding.inputs[declared_in.name], binding.outputs.get(declared_out.name, allocated)
        assert bound_out is not None
        for end, arg, bound in (("input", declared_in, bound_in), ("output", declared_out, bound_out)):
            want = np.dtype(_ONNX_TYPES[arg.type])
            if bound.dtype != want:
                raise provider.refuse(RuntimeError, f"{failed}Unexpected {end} data type. Actual: "
                                                    f"({bound.dtype}) , expected: ({arg.type})")
        if len(bound_in.shape) != len(declared_in.shape):
            raise provider.refuse(RuntimeError, f"{failed}Invalid rank for input: {declared_in.name} Got: "
                                                f"{len(bound_in.shape)} Expected: {len(declared_in.shape)}")
        for axis, (got, want_dim) in enumerate(zip(bound_in.shape, declared_in.shape)):
            if isinstance(want_dim, int) and got != want_dim:
                raise provider.refuse(RuntimeError, f"{failed}Got invalid dimensions for input: "
                                                    f"{declared_in.name} index: {axis} Got: {got} "
                                                    f"Expected: {want_dim}")
        try:
            expected = self._output_shape(bound_in.shape, bound_in.dtype, run_options)
        except (errors.Fail, errors.RuntimeException, errors.InvalidArgument) as exc:
            # A node that cannot run the input's shape fails the Run: run_with_iobinding reports ORT's message
            # without its status prefix ("[ONNXRuntimeError] : 1 : FAIL : ") after its own ([ERRORS]).
            raise provider.refuse(RuntimeError, failed + str(exc).split(" : ", 3)[-1]) from None
        if allocated is not None:
            return declared_in.name, bound_in, declared_out.name, dataclasses.replace(allocated, shape=expected)
        if bound_out.shape != expected:
            raise provider.refuse(RuntimeError, f"{failed}Got invalid dimensions for output: {declared_out.name} "
                                                f"Got: {bound_out.shape} Expected: {expected}")
        return declared_in.name, bound_in, declared_out.name, bound_out

    def run_with_iobinding(self, iobinding: FakeIOBinding, run_options: Any = None) -> None:
        """See ``onnxruntime.InferenceSession.run_with_iobinding``: the network is queued on the provider's
        stream, reading the input when it runs there; the stream is synchronised at the end unless the run
        options say not to ([OWN-STREAM], [RUN-SYNC]). In a CPU session (host OrtValues, [BIND-VALUE]) the CPU
        session runs it."""
        provider, gpu, failed = self.provider, self.provider.gpu, "Error in execution: "
        if not isinstance(iobinding, FakeIOBinding) or iobinding._session is not self:
            # onnxruntime_inference_collection.Session.run_with_iobinding raises this ValueError itself.
            raise provider.refuse(ValueError, "IOBinding must be used with the session that created it.")
        if not self._on_cuda:  # only host memory binds here ([BIND-DEVICE])
            name_in, _, _, bound_out = self._validate(iobinding, run_options)
            (logits,) = self._cpu.run(None, {name_in: iobinding.values[name_in].numpy()})
            iobinding.results = [self._value(bound_out, np.asarray(logits, bound_out.dtype))]
            return
        context = self._run_start(RuntimeError, failed)
        if provider.run_failure is not None:  # [RUN-FAILS]
            raise provider.refuse(RuntimeError, failed + provider.run_failure.message)
        name_in, bound_in, name_out, bound_out = self._validate(iobinding, run_options)
        if name_out in iobinding.allocated:  # ORT allocates the output on the device, for this Run
            bound_out = dataclasses.replace(bound_out, ptr=gpu.allocate(self._nbytes(bound_out))[0])
        for bound, what in ((bound_in, "input"), (bound_out, "output")):
            # The allocation may have gone since it was bound: on the GPU an illegal address (sticky error).
            provider.device_memory(bound.ptr, self._nbytes(bound), context, RuntimeError,
                                   f"{failed}CUDA failure 700: an illegal memory access was encountered ({what})")
        sync = _run_config(run_options, "disable_synchronize_execution_providers") != "1"
        if sync and gpu.capturing(self.stream):
            gpu.invalidate_capture(self.stream)
            raise provider.refuse(RuntimeError, f"{failed}CUDA failure 900: operation not permitted when stream "
                                                "is capturing (cudaStreamSynchronize at the end of the Run)")
        cpu, shape_in, shape_out = self._cuda_compute, bound_in.shape, bound_out.shape
        dtype_in, dtype_out, ptr_in, ptr_out = bound_in.dtype, bound_out.dtype, bound_in.ptr, bound_out.ptr

        def run() -> None:
            # Device memory as it is now: work still queued on other streams has not run.
            images = np.array(gpu.view(ptr_in, shape_in, dtype_in))
            (logits,) = cpu.run(None, {name_in: images})
            gpu.view(ptr_out, shape_out, dtype_out)[...] = np.asarray(logits, dtype_out)

        gpu.enqueue(self.stream, FakeOp(run, kind="onnxruntime", entry=("onnxruntime", shape_in)))
        provider.runs.append(RunRecord(self.stream, ptr_in, shape_in, ptr_out, shape_out, sync,
                                       threading.get_ident()))
        iobinding.results = [self._value(bound_out, owned=name_out in iobinding.allocated)]
        if sync:
            gpu.run_pending(self.stream)  # OnRunEnd: cudaStreamSynchronize on the provider's stream only


@functools.lru_cache(maxsize=8)  # sessions of one model (tests open the bundled ones often) parse it once
def _computes_in_half(model: bytes) -> bool:
    """Whether the graph computes FLOAT16 tensors ([FP16]): a FLOAT16 input or output, or a cast to FLOAT16 (an
    FP16 export's, after its FLOAT inputs). Weights merely stored as FLOAT16 and cast to FLOAT (the bundled FP32
    models') compute in FP32."""
    import onnx
    from onnx import TensorProto

    graph = onnx.load_from_string(model).graph
    ends = [value.type.tensor_type.elem_type for value in (*graph.input, *graph.output)]
    casts = [attribute.i for node in graph.node if node.op_type == "Cast" for attribute in node.attribute
             if attribute.name == "to"]
    return TensorProto.FLOAT16 in ends or TensorProto.FLOAT16 in casts


@functools.lru_cache(maxsize=8)
def _initializer_bytes(model: bytes) -> int:
    """The bytes of the graph's initializers ([INITIALIZERS])."""
    import onnx

    itemsize = onnx.helper.tensor_dtype_to_np_dtype
    return sum(int(np.prod(tensor.dims, dtype=np.int64)) * itemsize(tensor.data_type).itemsize
               for tensor in onnx.load_from_string(model).graph.initializer)


def _run_config(run_options: Any, key: str) -> str:
    """A RunOptions config entry ("0", ORT's default, when absent or no run options were given)."""
    if run_options is None:
        return "0"
    try:
        return str(run_options.get_run_config_entry(key))
    except RuntimeError:  # "RunOptions does not have configuration with key: ..."
        return "0"


def make_onnxruntime(provider: FakeCudaProvider) -> types.ModuleType:
    """A fake ``onnxruntime`` module over the real one, with the CUDA provider on ``provider.gpu``."""
    real = real_onnxruntime()
    module = types.ModuleType("onnxruntime")
    module.__spec__ = importlib.machinery.ModuleSpec("onnxruntime", None, is_package=True)
    module.__path__ = list(real.__path__)  # submodules (onnxruntime.capi...) import as from the real package
    module._real = real  # type: ignore[attr-defined]
    module._fake_cuda_provider = provider  # type: ignore[attr-defined]
    value = type("OrtValue", (FakeOrtValue,), {"provider": provider})
    session = type("InferenceSession", (FakeInferenceSession,), {"provider": provider, "ort_value": value})
    module.InferenceSession = session  # type: ignore[attr-defined]
    module.OrtValue = value  # type: ignore[attr-defined]
    module.IOBinding = FakeIOBinding  # type: ignore[attr-defined]
    module.get_available_providers = lambda: list(PROVIDERS)  # type: ignore[attr-defined]
    module.get_all_providers = lambda: list(PROVIDERS)  # type: ignore[attr-defined]
    module.get_device = lambda: "GPU"  # type: ignore[attr-defined]

    def __getattr__(name: str) -> Any:  # noqa: N807 - a module's attribute hook (PEP 562)
        if name == "__version__":  # [VERSIONS]: read when asked, so a test may set the provider's after install
            return "{}.{}.0".format(*provider.version)
        return getattr(real, name)

    module.__dict__["__getattr__"] = __getattr__
    return module


def install_fake_onnxruntime_cuda(monkeypatch: pytest.MonkeyPatch, gpu: FakeGpu) -> FakeCudaProvider:
    """Put onnxruntime-gpu's fake into ``sys.modules`` (after :func:`fakes.cuda.install_fake_gpu` with ``gpu``).

    Example:
        >>> provider = install_fake_onnxruntime_cuda(monkeypatch, install_fake_gpu(monkeypatch))  # doctest: +SKIP
    """
    provider = FakeCudaProvider(gpu)
    monkeypatch.setitem(sys.modules, "onnxruntime", make_onnxruntime(provider))
    return provider
