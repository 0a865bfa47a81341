"""ONNX Runtime backend: CPU provider, CUDA provider when the installed build has it."""

from __future__ import annotations

import os
import re
import sys
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from ..caller_warning import warn_caller
from ..cuda import (
    PrimaryContext,
    check_device_exists,
    cuda_device_count,
    cuda_driver_version,
    cuda_ordinal,
    no_gpu_seen,
    synchronize_stream,
)
from ..dropped import release_when_dropped
from ..model_file import ONNX_EXPECTED, ModelFile, int8_weights_saturate_here, read_model_file
from ..model_info import check_network_channels, check_network_layout
from ..paths import check_file
from .base import (
    check_batch,
    check_one_input_and_output,
    check_precision,
    invalid_model_file,
    network_output_shape,
    network_run_error,
)

if TYPE_CHECKING:
    import onnxruntime as ort

    from .registry import OpenRequest


def open_session(path: str | Path, options: ort.SessionOptions, providers: list[Any], *,
                 fallback: bool = True) -> ort.InferenceSession:
    """An ONNX Runtime session for ``path``; a file ONNX Runtime cannot load is reported in one line.

    Args:
        path: the ONNX file (it must exist).
        options: the session options.
        providers: execution providers in order of preference (names, or (name, options) pairs).
        fallback: whether ONNX Runtime's own fallback may answer a provider that fails to start (its "EP Error"
            banner on stdout, then the session made again on the CPU); False passes ``enable_fallback=0``, which
            onnxruntime reads from 1.23 on (before, the keyword is ignored).

    Returns:
        The session.

    Raises:
        ValueError: when the file is not a loadable ONNX model (damaged, truncated, empty, another format),
            naming the file and what is wrong.
        RuntimeError: ONNX Runtime's, when a provider fails to start and its fallback does not answer it.

    Example:
        >>> session = open_session("model.onnx", session_options(2), ["CPUExecutionProvider"])  # doctest: +SKIP
    """
    import onnxruntime as ort
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

    try:
        return ort.InferenceSession(str(path), options, providers=providers,
                                    **({} if fallback else {"enable_fallback": 0}))
    except ort_errors.InvalidProtobuf as exc:
        raise invalid_model_file(path, ONNX_EXPECTED, "it is truncated, damaged or not ONNX at all "
                                 "(ONNX Runtime cannot parse it as a protobuf)") from exc
    except (ort_errors.InvalidArgument, ort_errors.InvalidGraph, ort_errors.NoModel, ort_errors.Fail) as exc:
        # Fail: e.g. an external-data path that escapes the model's folder, which ONNX Runtime refuses.
        raise invalid_model_file(path, ONNX_EXPECTED, _onnx_runtime_reason(exc)) from exc


# The first onnxruntime whose InferenceSession reads enable_fallback from its keywords (1.17 to 1.22 ignore it and
# print the fallback's banner whatever is passed: onnxruntime_inference_collection.py of each release's wheel).
_ENABLE_FALLBACK_READ_FROM = (1, 23)
_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"


def _onnxruntime_release() -> tuple[int, int] | None:
    """The installed onnxruntime's (major, minor); None where its version does not read as one."""
    import onnxruntime as ort

    match = re.match(r"(\d+)\.(\d+)", str(getattr(ort, "__version__", "")))
    return None if match is None else (int(match[1]), int(match[2]))


class _ThreadsStdout:
    """``sys.stdout`` while threads have their prints captured (:func:`prints_captured`): a capturing thread's
    writes go to its list, every other thread's to the stream this one replaced, as before."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        captured: list[str] | None = getattr(_capturing, "texts", None)
        if captured is None:
            return int(self.stream.write(text))
        captured.append(text)
        return len(text)

    def flush(self) -> None:
        if getattr(_capturing, "texts", None) is None:
            self.stream.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


_capturing = threading.local()
_stdout_lock = threading.Lock()
_stdout_users = [0]  # threads inside prints_captured, under _stdout_lock


@contextmanager
def prints_captured() -> Iterator[list[str]]:
    """What this thread prints on ``sys.stdout`` during the block, kept off it; other threads print as before.

    ONNX Runtime's Python prints where unetrt says what happened in its own line: the CUDA provider's "EP Error"
    banner, the static quantizer's calibration progress. ``sys.stdout`` is one for the process, so a plain redirect
    (``contextlib.redirect_stdout``) would also swallow what another thread prints meanwhile (a report or JSON on
    stdout, a notebook's cells): the stream is replaced by a :class:`_ThreadsStdout` that sends this thread's writes
    to the list it yields, and put back once the last thread inside leaves, unless someone replaced it meanwhile
    (theirs is kept).

    Returns:
        A context manager yielding the list this thread's writes go to, in order.

    Example:
        >>> with prints_captured() as printed:
        ...     print("Collecting tensor data and making histogram ...")
        >>> printed
        ['Collecting tensor data and making histogram ...', '\\n']
    """
    texts: list[str] = []
    with _stdout_lock:
        if not isinstance(sys.stdout, _ThreadsStdout) and sys.stdout is not None:
            sys.stdout = _ThreadsStdout(sys.stdout)
        _stdout_users[0] += 1
    _capturing.texts = texts
    try:
        yield texts
    finally:
        _capturing.texts = None
        with _stdout_lock:
            _stdout_users[0] -= 1
            if _stdout_users[0] == 0 and isinstance(sys.stdout, _ThreadsStdout):
                sys.stdout = sys.stdout.stream


def _open_cuda_session(path: Path, options: ort.SessionOptions,
                       providers: list[Any]) -> tuple[ort.InferenceSession | None, str | None]:
    """A session asking for the CUDA provider, with nothing of ONNX Runtime's fallback on stdout (where a command
    writes its data: a report, JSON): (the session, or None where the provider failed to start; ONNX Runtime's
    reason where it failed or fell back to the CPU, else None).

    Where the provider fails for a reason of its own (a driver older than its CUDA, ``CUDA_PATH`` set without CUDA's
    libraries before 1.19), ``InferenceSession`` prints an "EP Error" banner on stdout and makes the session on the
    CPU (1.19 and later), or asks for CUDA once more and raises (1.17, 1.18: the fallback's providers are CUDA's
    there, microsoft/onnxruntime PR #21425). ``enable_fallback=0`` turns it off from 1.23 on; before, its prints
    are captured on this thread (:func:`prints_captured`) and their reason kept. The session's own fallback of a
    Run is turned off too (``disable_fallback``): a provider failing in a Run raises, rather than print the same
    banner and go on on the CPU.
    """
    release = _onnxruntime_release()
    quiet = release is not None and release >= _ENABLE_FALLBACK_READ_FROM
    printed: list[str] = []
    try:
        if quiet:
            session = open_session(path, options, providers, fallback=False)
        else:
            with prints_captured() as printed:
                session = open_session(path, options, providers, fallback=False)
    except RuntimeError as exc:  # the provider's own failure (a C++ exception), the fallback's retry's on 1.17/1.18
        return None, str(exc)
    session.disable_fallback()
    banner = re.search(r"EP Error (.*) when using ", "".join(printed), re.DOTALL)
    return session, None if banner is None else banner[1]


def _cuda_provider_failure(failure: str | None) -> str:
    """Why ONNX Runtime's CUDA provider does not run, and the fix, from ONNX Runtime's reason (None: its libraries
    did not load, which it says in a warning of its own on stderr), in words for one line."""
    if failure is None:
        return ("ONNX Runtime's CUDA provider did not load (onnxruntime-gpu without CUDA's and cuDNN's libraries, or "
                "with ones of another CUDA: its warning above names the one missing); install them with "
                "pip install 'onnxruntime-gpu[cuda,cudnn]'")
    reason = _reason_in_one_line(failure)
    if "CUDA failure 35:" in reason:  # cudaErrorInsufficientDriver: the driver is older than the provider's CUDA
        driver = cuda_driver_version()
        # Named here: the doctor, which would show it, stops on this same line for --device cuda.
        supports = " (`nvidia-smi` shows it)" if driver is None else f" (it supports CUDA {driver[0]}.{driver[1]})"
        return (f"ONNX Runtime's CUDA provider did not start ({reason}): the NVIDIA driver{supports} is older than "
                "the CUDA onnxruntime-gpu was built for; update the NVIDIA driver")
    if "CUDA_PATH is set" in reason:
        # Its first sentence: the rest sends to the page named below.
        first, where = reason.split(". ", 1)[0], os.environ.get("CUDA_PATH", "")
        return (f"ONNX Runtime's CUDA provider did not load ({first}): CUDA_PATH={where!r} does not hold the CUDA "
                "and cuDNN onnxruntime-gpu was built for; install those "
                "(https://onnxruntime.ai/docs/execution-providers/CUDA-ExecutionProvider.html#requirements) or point "
                "CUDA_PATH at them")
    return f"ONNX Runtime's CUDA provider did not start ({reason})"


# ONNX Runtime's words for a failure of the CUDA libraries under its provider: CUDA's, cuDNN's, cuDNN's frontend's
# and cuBLAS's own (cuda_call.cc, cudnn_fe_call.cc), the device arena's (bfc_arena.cc).
_LIBRARY_FAILURES = ("CUDA failure ", "CUDNN failure ", "CUDNN_FE failure ", "CUBLAS failure ",
                     "Failed to allocate memory")
# Where ONNX Runtime's reason starts behind the throwing function's file, line and signature.
_REASON_STARTS = (*_LIBRARY_FAILURES, "CUDA_PATH is set", "Invalid device ID")
# Where a failing node's own reason starts in ONNX Runtime's report of a Run (sequential_executor.cc).
_NODE_REASON = "Status Message: "


def _reason_in_one_line(text: str) -> str:
    """ONNX Runtime's reason for a provider that failed, in one line: from its words on (the file, line and C++
    signature before them left out) to the first ' ; ' (CUDA's GPU, host, file and expression after it); else a
    failing node's message, or the whole text."""
    starts = [text.find(words) for words in _REASON_STARTS if words in text]
    reason = text[min(starts):].split(" ; ", 1)[0] if starts else text.split(_NODE_REASON, 1)[-1]
    return " ".join(reason.split()).rstrip(".")


# A Run that failed in the CUDA provider rather than on the network's shape: ONNX Runtime's words for the provider's
# own failures (run_with_iobinding's message drops the status code, so EP_FAIL alone cannot tell).
_PROVIDER_RUN_FAILED = (*_LIBRARY_FAILURES, "Failed to initialize CUDNN Frontend")
_NODE = re.compile(r"running (\w+) node\. Name:'([^']*)'")


def _provider_run_failure(error: Exception, path: Path, shape: tuple[int, ...]) -> ValueError | None:
    """The one line for ONNX Runtime's CUDA provider failing inside a Run after the session opened (cuDNN's
    libraries missing at the first convolution, the GPU's memory running out), naming the fix; None where ``error``
    is not such a failure (a node that cannot run the shape: :func:`network_run_error`).

    ONNX Runtime raises it as ``EPFail`` from ``run`` (status EP_FAIL, e.g. cuDNN's frontend failing to plan a
    convolution, ``onnxruntime/core/providers/cuda/nn/conv.cc``) or as the node's failure with CUDA's, cuDNN's or its
    arena's words (``RuntimeException`` for an allocation that throws, ``Fail`` for a CUDA call's status); from
    ``run_with_iobinding`` as ``RuntimeError("Error in execution: ...")`` with the code left out.
    """
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

    text = str(error)
    if not isinstance(error, ort_errors.EPFail) and not any(words in text for words in _PROVIDER_RUN_FAILED):
        return None
    reason = _reason_in_one_line(text)
    node = _NODE.search(text)
    where = "" if node is None else f" at its {node[1]} node {node[2]!r}"
    if any(words in reason for words in ("out of memory", "Failed to allocate memory", "ALLOC_FAILED")):
        fix = ("the GPU's memory ran out: free it (`nvidia-smi` lists what holds it) or run fewer or smaller images "
               "at once (a smaller batch, --size or tile)")
    elif "CUDNN" in reason.upper():
        fix = ("cuDNN could not run it (its libraries missing or of another version than onnxruntime-gpu's, or too "
               "little GPU memory for its workspace): install the cuDNN onnxruntime-gpu was built for with "
               "pip install 'onnxruntime-gpu[cuda,cudnn]' and free GPU memory")
    else:
        fix = "a failure of the GPU or its libraries, not of the network's shape: check the GPU with `nvidia-smi`"
    return ValueError(f"ONNX Runtime's CUDA provider failed running {path.name} on a "
                      f"{' x '.join(map(str, shape))} batch{where} ({reason}): {fix}, or use device 'cpu'")


# ONNX Runtime's words for a node whose kernel failed during a Run (the executor's report of it).
_NODE_FAILED = "Non-zero status code returned while running"
_RUN_WITH_IOBINDING_PREFIX = "Error in execution: "


def _onnx_runtime_reason(error: Exception) -> str:
    """ONNX Runtime's own reason, without its status prefix, the 'Load model from PATH failed:' preamble and IO
    binding's 'Error in execution:'."""
    text = str(error).removeprefix(_RUN_WITH_IOBINDING_PREFIX).split(" : ")[-1]
    return text.split("failed:", 1)[-1].strip() or type(error).__name__


def session_options(threads: int | None = None) -> ort.SessionOptions:
    """The session options of every unetrt ONNX Runtime session, tuned on the U-Net (see unet-bench).

    Full graph optimisation: Conv+ReLU fusion and the NCHWc blocked layout for
    convolutions on x86. Idle pool threads block instead of spinning: every U-Net
    operator runs for milliseconds, so a blocked thread's wake-up costs well under
    1 %, while spinning threads take cores from the work itself (and from the rest
    of a streaming pipeline) whenever anything else runs on the machine.

    Args:
        threads: intra-op threads (None: ONNX Runtime's default, one per physical core).

    Returns:
        Options for ``onnxruntime.InferenceSession``.

    Example:
        >>> session_options(2).intra_op_num_threads
        2
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads is not None:
        options.intra_op_num_threads = threads
    return options


class _DeviceResources:
    """What the device entry of an :class:`OnnxRuntimeBackend` holds on the GPU: the retained primary context and
    the stream made in it. Kept apart from the backend so that one dropped without ``close()`` is released on
    :mod:`unetrt.dropped`'s thread with the context current: pycuda destroys a stream, and releases a retained
    context, only with that context current or on the thread that retained it, and elsewhere leaks both without a
    word (pycuda ``src/cpp/cuda.hpp``, ``scoped_context_activation``, ``context::detach``).

    The ``InferenceSession`` is not among them: it may be destroyed on any thread, since ONNX Runtime's CUDA allocator
    makes the session's device current before each ``cudaFree`` (``onnxruntime/core/providers/cuda/
    cuda_allocator.cc``, ``CUDAAllocator::Free`` calls ``SetDevice``), and the session never sees this stream (it
    runs on its own)."""

    def __init__(self) -> None:
        self.cuda_context: PrimaryContext | None = None
        self.stream: Any = None

    def release(self) -> None:
        """Destroy the stream, then release the retained context (idempotent)."""
        context, self.cuda_context = self.cuda_context, None
        if context is None:
            return
        try:
            with context.active():
                self.stream = None  # destroyed with its context current
        finally:
            context.release()


class OnnxRuntimeBackend:
    """Runs an exported ``.onnx`` U-Net through ONNX Runtime.

    Args:
        path: the ONNX file written by ``unet-export``.
        device: 'cpu', 'cuda', 'cuda:N' or 'auto' (CUDA provider when the build has it and the machine a GPU;
            'cuda' and 'auto' use GPU 0).
        threads: intra-op threads for the CPU provider (None: ONNX Runtime's default, one per core).
        precision: the precision :func:`unetrt.backends.choose_model` chose ('auto': the file's own); ONNX
            Runtime runs the file as it is, so another one is refused.

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: when it is not a loadable ONNX model, lacks unetrt metadata, is of another precision than
            asked, or 'cuda' is asked of a CPU-only build or a machine without a GPU
            (:class:`unetrt.cuda.NoSuchDeviceError` for 'cuda:N' past the machine's last GPU).

    Example:
        >>> with OnnxRuntimeBackend("model.onnx") as backend:  # doctest: +SKIP
        ...     logits = backend.infer(batch)
    """

    name = "onnxruntime"
    max_input_hw: tuple[int, int] | None = None
    max_batch: int | None = None

    def __init__(self, path: str | Path, device: str = "auto", threads: int | None = None,
                 precision: str = "auto") -> None:
        import onnxruntime as ort

        path = Path(path)
        check_file(path, "ONNX model")
        described = read_model_file(path)
        self.info = described.info
        self.precision = check_precision(precision, described.precision, self.name, path)
        available = ort.get_available_providers()
        has_cuda = "CUDAExecutionProvider" in available
        if device != "cpu":
            try:
                self._ordinal = cuda_ordinal(device)
            except ValueError:
                raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
        else:
            self._ordinal = 0
        # Asked before the session: for a device_id the machine lacks (none at all included) onnxruntime-gpu prints
        # an "EP Error" banner on stdout and makes the session on the CPU (InferenceSession's fallback, ORT 1.19+),
        # which would read below as CUDA's libraries missing.
        gpus = cuda_device_count() if device.startswith("cuda") or (device == "auto" and has_cuda) else 0
        if device.startswith("cuda"):
            if gpus == 0:
                # onnxruntime-gpu would bring no GPU: the CPU is the way to run here.
                raise ValueError(f"device {device!r} asked, but {no_gpu_seen()}; use device 'cpu' or 'auto'")
            if not has_cuda:
                raise ValueError(
                    f"device {device!r} asked, but this onnxruntime has no CUDA provider; install onnxruntime-gpu"
                )
            check_device_exists(self._ordinal, gpus)
        # 'auto' is the CUDA provider where the build has it and a GPU is there to run it.
        use_cuda = has_cuda and device != "cpu" and gpus > 0
        if use_cuda:
            session = open_cuda_session(described, threads, device, self._ordinal)
        else:
            session = open_session(path, _cpu_session_options(described, threads), [_CPU])
        on_cuda = session.get_providers()[0] == _CUDA
        self._session: ort.InferenceSession | None = session
        inputs, outputs = session.get_inputs(), session.get_outputs()
        check_one_input_and_output(len(inputs), len(outputs), path)
        check_network_layout(self.info, inputs[0].shape, str(path))
        check_network_channels(self.info, inputs[0].shape[1], outputs[0].shape[1], str(path))
        # The network's own element types: a float16 graph takes its batch cast to float16 (as OpenVINO takes it).
        self.input_dtype = _element_type(inputs[0].type, path, "input")
        self.output_dtype = _element_type(outputs[0].type, path, "output")
        # Dimensions fixed in the file: the Segmenter batches and tiles within them, and infer names the fix for
        # any other shape (ONNX Runtime's own report is a multi-line INVALID_ARGUMENT).
        self._fixed: tuple[int | None, ...] = tuple(d if isinstance(d, int) else None for d in inputs[0].shape)
        fixed_batch, _, fixed_height, fixed_width = self._fixed
        self.max_batch = fixed_batch
        self.max_input_hw = None if fixed_height is None or fixed_width is None else (fixed_height, fixed_width)
        # A smaller image is mirror-padded up to a fixed size and its output cropped back, as on a TensorRT engine
        # whose profile minimum it is under: the same frame gets an answer on both backends.
        self.min_input_hw = self.max_input_hw
        self.device = f"cuda:{self._ordinal}" if on_cuda else "cpu"
        self.threads = threads
        self.path = path
        self._held = _DeviceResources()
        # Registered once the device entry retains a context: a backend that never uses it holds nothing of unetrt's.
        self._release_if_dropped: weakref.finalize[..., None] | None = None
        self._input = self._session.get_inputs()[0].name
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

        # A run that fails (a node's shapes do not meet, the CUDA provider fails) is raised as one line: ONNX
        # Runtime's own log line of it is left out.
        self._run_errors = (ort_errors.Fail, ort_errors.RuntimeException, ort_errors.InvalidArgument,
                            ort_errors.EPFail)
        self._quiet_run = ort.RunOptions()
        self._quiet_run.log_severity_level = 4
        self._output = self._session.get_outputs()[0].name

    def _open_session(self) -> ort.InferenceSession:
        """The session, read once (close() on another thread may drop the attribute meanwhile).

        Raises:
            ValueError: after :meth:`close`.
        """
        session = self._session
        if session is None:
            raise ValueError("this backend is closed; open a new one")
        return session

    def infer(self, batch: NDArray[Any]) -> NDArray[Any]:
        """N x C x H x W float32 -> N x K x h x w float32 logits.

        Raises:
            ValueError: on a malformed batch, a network that cannot run it, the CUDA provider failing in the Run
                (naming the fix), or after :meth:`close`.
        """
        session = self._open_session()
        batch = check_batch(batch, self.info)
        self._check_fixed(batch.shape)
        try:
            (logits,) = session.run([self._output], {self._input: batch.astype(self.input_dtype, copy=False)},
                                    self._quiet_run)
        except self._run_errors as exc:
            failed = _provider_run_failure(exc, self.path, batch.shape) if self.device != "cpu" else None
            if failed is not None:
                raise failed from exc
            raise network_run_error("ONNX Runtime", self.path, batch.shape, _onnx_runtime_reason(exc)) from exc
        return np.asarray(logits, dtype=np.float32)

    def _check_fixed(self, shape: tuple[int, ...]) -> None:
        """Refuse, in one line naming the fix, a batch shape that differs from a dimension fixed in the file."""
        if all(fixed is None or fixed == side for fixed, side in zip(self._fixed, shape, strict=True)):
            return
        wanted = " x ".join("any" if d is None else str(d) for d in self._fixed)
        batch, _, height, width = self._fixed
        fixes = []
        if height is not None and width is not None:
            fixes.append(f"open it with working_size=({width}, {height}) (--size {width}x{height}) so that every "
                         "frame is resized to it")
        if batch is not None:
            fixes.append(f"run batches of exactly {batch}")
        fixes.append("or export the network with dynamic batch, height and width")
        raise ValueError(f"{self.path.name} takes a fixed input of {wanted} (N x C x H x W), not "
                         f"{' x '.join(map(str, shape))}: {', '.join(fixes)}")

    # --- device entry (the GPU-resident frame path): the CUDA provider through IO binding ------------------

    capturable = False

    @contextmanager
    def device_session(self) -> Iterator[int]:
        """Make the GPU's primary context (the one ONNX Runtime's CUDA provider uses) current through pycuda and
        yield the handle of a stream this backend owns for the path's kernels (:class:`unetrt.cuda.PrimaryContext`).

        Raises:
            ValueError: when the session runs on the CPU provider, or after :meth:`close`.
            ImportError: when pycuda is missing.
        """
        self._open_session()
        if not self.device.startswith("cuda"):
            raise ValueError("the device entry needs ONNX Runtime's CUDA provider; install onnxruntime-gpu")
        import pycuda.driver as cuda  # PrimaryContext checked that it imports

        held = self._held
        if held.cuda_context is None:
            held.cuda_context = PrimaryContext(self._ordinal)
            self._release_if_dropped = release_when_dropped(self, held.release,
                                                            f"the CUDA stream and context of {self.path.name}")
        with held.cuda_context.active():
            if held.stream is None:
                held.stream = cuda.Stream()
            yield int(held.stream.handle)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The logits' shape for an input shape.

        Raises:
            ValueError: on a side the network does not take.
        """
        output_shape = network_output_shape(self.info, input_shape)
        self._check_fixed(tuple(input_shape))
        return output_shape

    def enqueue(self, input_ptr: int, input_shape: tuple[int, ...], output_ptr: int, stream: int) -> None:
        """Run the session on device buffers through IO binding. ONNX Runtime runs on its own stream, so this
        waits for ``stream`` first (the one host synchronisation of this backend's device path) and returns when
        the logits are written.

        Raises:
            ValueError: on a side the network does not take (a node of the network failing on it included), the
                CUDA provider failing in the Run (naming the fix), or after :meth:`close`.
            RuntimeError: outside :meth:`device_session`, when the driver refuses to wait for ``stream``, or when
                ONNX Runtime's Run fails otherwise.
        """
        session = self._open_session()
        output_shape = self.output_shape(input_shape)
        if self._held.stream is None:
            raise RuntimeError("enqueue runs inside 'with backend.device_session():'")
        # ONNX Runtime runs on its own stream: wait for the caller's, where the input was queued.
        synchronize_stream(stream, "the network's input")
        binding = session.io_binding()
        binding.bind_input(self._input, "cuda", self._ordinal, self.input_dtype, list(input_shape), input_ptr)
        binding.bind_output(self._output, "cuda", self._ordinal, self.output_dtype, list(output_shape), output_ptr)
        self._run_bound(session, binding, tuple(input_shape))

    def _run_bound(self, session: ort.InferenceSession, binding: Any, shape: tuple[int, ...]) -> None:
        """``run_with_iobinding`` of a batch of ``shape``, a failed Run raised as :meth:`infer` raises it.

        Raises:
            ValueError: on a node of the network failing on the shape, or the CUDA provider failing (naming the fix).
            RuntimeError: ONNX Runtime's, when its Run fails otherwise.
        """
        try:
            session.run_with_iobinding(binding, self._quiet_run)  # as infer(): ORT's own log of a failure left out
        except RuntimeError as exc:
            # IO binding reports a failed Run as RuntimeError("Error in execution: ..."), not as the typed errors
            # infer() catches: the provider failing and a node that cannot run the shape get infer()'s one lines,
            # the rest stays as it is.
            failed = _provider_run_failure(exc, self.path, shape)
            if failed is not None:
                raise failed from exc
            if _NODE_FAILED not in str(exc):
                raise
            raise network_run_error("ONNX Runtime", self.path, shape, _onnx_runtime_reason(exc)) from exc

    def resident(self, batch: NDArray[Any]) -> OnnxRuntimeResidentBatch:
        """``batch`` copied once into the session's device memory (the host's on the CPU provider), to be run there
        again and again with its logits left there: what unet-bench's device mode times (``--no-data-transfers``).

        Args:
            batch: N x C x H x W, as :meth:`infer` takes it (cast to the network's input type).

        Returns:
            The bound batch; its :meth:`~OnnxRuntimeResidentBatch.run` runs the network,
            :meth:`~OnnxRuntimeResidentBatch.logits` copies the last run's output to the host.

        Raises:
            ValueError: as :meth:`infer` for a malformed batch or a shape the network does not take, or after
                :meth:`close`.

        Example:
            >>> resident = backend.resident(np.zeros((1, 3, 192, 256), np.float32))  # doctest: +SKIP
            >>> resident.run(); resident.logits().shape  # doctest: +SKIP
            (1, 12, 192, 256)
        """
        import onnxruntime as ort

        session = self._open_session()
        batch = check_batch(batch, self.info)
        self.output_shape(batch.shape)  # a shape the network refuses is infer()'s one line, not ORT's at the Run
        device = "cpu" if self.device == "cpu" else "cuda"
        # The network's own element type, as infer() casts the batch (a float16 input takes float16).
        values = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(batch, self.input_dtype), device,
                                                  self._ordinal)
        binding = session.io_binding()
        binding.bind_ortvalue_input(self._input, values)
        binding.bind_output(self._output, device, self._ordinal)  # ONNX Runtime allocates it there at each Run
        return OnnxRuntimeResidentBatch(self, session, binding, tuple(int(d) for d in batch.shape))

    def close(self) -> None:
        """Drop the session and the stream; release the retained CUDA context (idempotent)."""
        self._session = None
        self._held.release()
        # After the release: one interrupted (Ctrl-C) is finished by the next close(), or on the release thread.
        if self._release_if_dropped is not None:
            self._release_if_dropped.detach()

    def __enter__(self) -> OnnxRuntimeBackend:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class OnnxRuntimeResidentBatch:
    """A batch bound in an :class:`OnnxRuntimeBackend`'s device memory (:meth:`OnnxRuntimeBackend.resident`; a
    :class:`~unetrt.backends.base.ResidentBatch`), its output allocated there by ONNX Runtime at each run. Safe from
    any thread: one binding holds one output, so its runs and copies take turns."""

    def __init__(self, backend: OnnxRuntimeBackend, session: ort.InferenceSession, binding: Any,
                 shape: tuple[int, ...]) -> None:
        self._backend, self._session, self._binding, self.shape = backend, session, binding, shape
        self._lock = threading.Lock()
        self._ran = False

    def run(self) -> None:
        """One run from the bound batch to the logits, both left on the device.

        Raises:
            ValueError: as :meth:`OnnxRuntimeBackend.infer` for a failed run (the CUDA provider failing included), or
                after the backend's :meth:`~OnnxRuntimeBackend.close`.
        """
        self._backend._open_session()  # the session itself lives on in this object: closed means closed
        with self._lock:
            self._backend._run_bound(self._session, self._binding, self.shape)
            self._ran = True

    def logits(self) -> NDArray[np.float32]:
        """The last run's logits, copied to the host as float32 (as :meth:`OnnxRuntimeBackend.infer` returns them).

        Raises:
            ValueError: before the first :meth:`run` (ONNX Runtime holds no output until then), or after the
                backend's :meth:`~OnnxRuntimeBackend.close`.
        """
        self._backend._open_session()
        with self._lock:
            if not self._ran:
                raise ValueError("this batch has not run yet; call run() before logits()")
            return np.asarray(self._binding.copy_outputs_to_cpu()[0], dtype=np.float32)


def _cpu_session_options(described: ModelFile, threads: int | None) -> ort.SessionOptions:
    """The options of a CPU session of the file ``described``: :func:`session_options`, left unfused
    (:func:`_leave_int8_unfused`) where its INT8 weights would saturate this CPU's fused kernels."""
    options = session_options(threads)
    if int8_weights_saturate_here(described):
        _leave_int8_unfused(options, described.path)
    return options


def _leave_int8_unfused(options: ort.SessionOptions, path: Path) -> None:
    """Keep ONNX Runtime from fusing an INT8 file of 8-bit weights into integer kernels that would saturate them,
    with one warning.

    The extended graph optimisations fold each QDQ convolution into one integer kernel, which on an x86 CPU without
    VNNI adds pairs of uint8 x int8 products in int16: 8-bit weights saturate it (ONNX Runtime's quantization
    guide: reduce-range weights "for the U8S8 format on AVX2 and AVX512 (non-VNNI) machines to mitigate
    saturation"); ``camvid.int8.tensorrt.onnx`` scored 61.29 mean IoU so on a Zen 3 EPYC, 62.28 unfused. The basic
    level leaves every QuantizeLinear/DequantizeLinear pair as written, computed in float: the graph's own answers.
    """
    import onnxruntime as ort

    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    warn_caller(f"{path.name} has 8-bit INT8 weights, which ONNX Runtime's fused INT8 kernels saturate on this CPU "
                "without VNNI: it runs unfused, with the file's own answers at about FP32's speed (a file exported "
                "by unet-export --int8 for the CPU has 7-bit weights and runs at INT8's)")


def open_cuda_session(described: ModelFile, threads: int | None = None, device: str = "cuda",
                      ordinal: int = 0) -> ort.InferenceSession:
    """A session (with :func:`session_options`) asking for ONNX Runtime's CUDA provider on GPU ``ordinal``: on it,
    or, for ``device`` 'auto' where the provider does not run, on the CPU after one warning saying why. Nothing of
    ONNX Runtime's own fallback reaches stdout.

    Args:
        described: the ONNX file, as :func:`unetrt.model_file.read_model_file` read it: a CPU session of 8-bit INT8
            weights on a CPU whose fused INT8 kernels saturate them runs unfused.
        threads: intra-op threads (None: ONNX Runtime's default).
        device: 'cuda', 'cuda:N' or 'auto' (what was asked: only 'auto' may end on the CPU).
        ordinal: the GPU's index (the provider's ``device_id``).

    Raises:
        ValueError: for a 'cuda' or 'cuda:N' ``device`` where the provider does not run, naming why and the fix; as
            :func:`open_session` for a file that is not a loadable ONNX model.

    Example:
        >>> session = open_cuda_session(read_model_file("model.onnx"))  # doctest: +SKIP
    """
    path = described.path
    session, failure = _open_cuda_session(path, session_options(threads), [(_CUDA, {"device_id": ordinal}), _CPU])
    if session is not None and session.get_providers()[0] == _CUDA:
        return session
    # onnxruntime-gpu without CUDA's and cuDNN's libraries (or with ones of another major version) makes the session on
    # the CPU after a warning of its own (microsoft/onnxruntime issue 21825), as it does after its banner for a
    # provider failing otherwise (a driver older than its CUDA): a GPU asked for ran on the CPU, and an automatic
    # choice ran the GPU's FP32 there, where OpenVINO INT8 is the CPU's path.
    reason = _cuda_provider_failure(failure)
    if device.startswith("cuda"):
        raise ValueError(f"device {device!r} asked, but {reason}, or use device 'cpu'")
    warn_caller(f"running ONNX Runtime on the CPU: {reason}; device='cpu' (--device cpu) runs the CPU's fastest "
                "engine instead")
    # Where the provider's failure was raised (onnxruntime from 1.23 on, 1.17 and 1.18) the CPU session is made here,
    # and where ORT's own CPU session would fuse INT8 weights that saturate (its options are the CUDA session's).
    if session is None or int8_weights_saturate_here(described):
        return open_session(path, _cpu_session_options(described, threads), [_CPU])
    return session


_ELEMENT_TYPES: dict[str, np.dtype[Any]] = {"tensor(float)": np.dtype(np.float32),
                                            "tensor(float16)": np.dtype(np.float16)}


def _element_type(declared: str, path: Path, what: str) -> np.dtype[Any]:
    """The numpy dtype of a network input or output ONNX Runtime declares: float32 or float16, else refused."""
    if declared not in _ELEMENT_TYPES:
        raise ValueError(f"model {str(path)!r} has a network {what} of type {declared}; unetrt runs networks of "
                         "float32 (or float16) input and output: export the network with a float input taking the "
                         "normalised image and a float output of logits")
    return _ELEMENT_TYPES[declared]


def open_model(request: OpenRequest) -> OnnxRuntimeBackend:
    """The registry's opener (:mod:`unetrt.backends.registry`): an :class:`OnnxRuntimeBackend` for the request.

    Raises:
        FileNotFoundError, ValueError: as :class:`OnnxRuntimeBackend`.
    """
    return OnnxRuntimeBackend(request.path, device=request.device, precision=request.precision, **request.options)
