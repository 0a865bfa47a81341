"""Build a TensorRT plan from a unetrt ONNX model: the builder core of ``unet-build`` and of the engine cache.

It needs TensorRT, pycuda and onnx, never torch, so a Jetson's runtime install
builds its own engines (:mod:`unetrt.plan_cache` does on first use).

FP16 differs between TensorRT versions:

* TensorRT 10 builds the FP32 graph with ``BuilderFlag.FP16`` and pins the
  layers that produce the network output to FP32 (weak typing). Given an FP16
  graph (``unet-export --fp16``) it builds it strongly typed instead.
* TensorRT 11 removed weak typing: every network is strongly typed and takes its
  precision from the graph, so FP16 converts the FP32 graph with
  :mod:`unetrt.export.fp16` (FP32 inputs, outputs and head; onnx and
  onnxconverter-common, no torch) before parsing.

INT8 takes the QDQ model of ``unet-export --int8 --int8-target tensorrt`` (explicit quantization: the
graph's QuantizeLinear/DequantizeLinear pairs fix the INT8 tensors and scales):

* TensorRT 10 builds it weakly typed with ``BuilderFlag.INT8`` and ``BuilderFlag.FP16``
  (layers outside the QDQ pairs may run in FP16), the logit head pinned to FP32;
* TensorRT 11 builds it strongly typed: INT8 where the graph says so, FP32 elsewhere.

In both, the INT32 bias dequantizations ONNX Runtime's quantizer writes are folded
into FP32 constants first (TensorRT's DequantizeLinear takes INT8/FP8/INT4 only;
it quantizes the bias itself).

A weakly typed FP16 or INT8 build takes its input in FP16 (the logits stay FP32):
the frame path's extract kernel writes half, and ``infer`` converts a float32 batch.

On an integrated GPU (Jetson: one memory for CPU and GPU) the builder's workspace
is capped by default (:func:`default_workspace_mib`), since TensorRT's default
limit there is the whole system memory. ``dla_core`` puts the layers a DLA can
run on that core, the rest on the GPU (``BuilderFlag.GPU_FALLBACK``).

The metadata (``PLAN.json``: TensorRT version, GPU, I/O, profile, DLA core,
hashes of the ONNX file and of the plan) is written before the plan is renamed
into place, so a crash never leaves a plan without its description.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .backends.tensorrt import (
    gpu_identity,
    require_tensorrt,
    start_tensorrt,
    tensorrt_logger,
    tensorrt_major,
    tensorrt_release,
)
from .build_watch import BuildStep, BuildWatcher, build_watchers, tell_step
from .caller_warning import warn_caller
from .cuda import GpuResourceError, PrimaryContext, allocation_refused, require_pycuda
from .interruptible import run_interruptible
from .model_file import file_precision, read_model_file
from .paths import check_file, file_sha256, replace_file
from .plan_metadata import (
    PlanMetadata,
    Shape,
    ShapeProfile,
    format_shape,
    metadata_path,
    resolve_profile,
    write_plan_metadata,
)

if TYPE_CHECKING:
    import onnx
    import tensorrt as trt

MAX_OPT_LEVEL = 5
# The workspace a failed build's message suggests where TensorRT's own limit (the whole device memory) was used.
DEFAULT_SMALLER_WORKSPACE_MIB = 1024
# The workspace cap on integrated GPUs: at most this, and at most this fraction of the device's memory.
INTEGRATED_WORKSPACE_CAP_MIB = 1024
INTEGRATED_WORKSPACE_FRACTION = 4
# Seconds between the progress lines of a build whose stderr is not a terminal.
PROGRESS_NOTE_S = 30.0
MISSING_ONNX = "building a TensorRT engine needs the onnx package: run `pip install onnx`"


@dataclass(frozen=True)
class BuildOptions:
    """Builder settings of ``unet-build`` and of the engine cache.

    Attributes:
        fp16: build FP16 kernels (see the module docstring for how per TensorRT version).
        int8: build the QDQ graph's INT8 kernels (with FP16 fallback on TensorRT 10).
        min_shape, opt_shape, max_shape: the input profile; missing ones come from the model's metadata.
        workspace_mib: builder workspace limit in MiB (None: :func:`default_workspace_mib`).
        timing_cache: file to read tactic timings from and write them back to (None: none).
        opt_level: builder optimisation level 0-5 (None: TensorRT's default, 3).
        dla_core: run the layers a DLA supports on this DLA core, the others on the GPU (None: GPU only).
        working_size: (width, height) in place of the model's own, for the default profile.
        verbose: TensorRT's verbose log.
        progress: a tqdm bar per build phase (TensorRT's IProgressMonitor; Ctrl-C and SIGTERM stop the build at
            its next step, bars or not).

    Raises:
        ValueError: on a non-positive workspace, an opt level outside 0-5 or a negative DLA core.

    Example:
        >>> BuildOptions(fp16=True, dla_core=0).dla_core
        0
    """

    fp16: bool = False
    int8: bool = False
    min_shape: Shape | None = None
    opt_shape: Shape | None = None
    max_shape: Shape | None = None
    workspace_mib: int | None = None
    timing_cache: Path | None = None
    opt_level: int | None = None
    dla_core: int | None = None
    working_size: tuple[int, int] | None = None
    verbose: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.workspace_mib is not None and self.workspace_mib <= 0:
            raise ValueError(f"workspace must be a positive number of MiB, got {self.workspace_mib}")
        if self.opt_level is not None and not 0 <= self.opt_level <= MAX_OPT_LEVEL:
            raise ValueError(f"opt level must be 0-{MAX_OPT_LEVEL}, got {self.opt_level}")
        if self.dla_core is not None and self.dla_core < 0:
            raise ValueError(f"DLA core must be 0 or more, got {self.dla_core}")


def default_workspace_mib(integrated: bool, total_memory_bytes: int) -> int | None:
    """The builder workspace limit when none is asked: capped on integrated GPUs, TensorRT's own elsewhere.

    TensorRT's default workspace limit is the device's whole memory; on an integrated GPU that is the system
    memory the build itself, the OS and the camera pipeline share, so an 8 GB Orin Nano can run out while
    building. There the cap is the smaller of 1 GiB and a quarter of the memory.

    Args:
        integrated: whether the GPU shares the system memory (CU_DEVICE_ATTRIBUTE_INTEGRATED).
        total_memory_bytes: the device's memory.

    Returns:
        The limit in MiB, or None to leave TensorRT's default.

    Example:
        >>> default_workspace_mib(True, 8 << 30), default_workspace_mib(True, 2 << 30), default_workspace_mib(False, 0)
        (1024, 512, None)
    """
    if not integrated:
        return None
    return max(1, min(INTEGRATED_WORKSPACE_CAP_MIB, (total_memory_bytes >> 20) // INTEGRATED_WORKSPACE_FRACTION))


def _device_memory(index: int) -> tuple[bool, int]:
    """(integrated, total memory in bytes) of CUDA device ``index``; reads attributes only, creates no context."""
    import pycuda.driver as cuda

    device = cuda.Device(index)
    integrated = bool(device.get_attribute(cuda.device_attribute.INTEGRATED))
    return integrated, int(device.total_memory())


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """Load an ONNX graph for building.

    Raises:
        ImportError: with :data:`MISSING_ONNX` when onnx is not installed.
        FileNotFoundError: when the file does not exist.
    """
    try:
        import onnx
    except ImportError as exc:
        raise ImportError(MISSING_ONNX) from exc
    check_file(path, "ONNX model")
    return onnx.load(str(path))


def describe_parser_errors(parser: trt.OnnxParser) -> str:
    """All errors the ONNX parser recorded, one per node: ``node 'name' (Op): description``."""
    parts = []
    for index in range(parser.num_errors):
        error = parser.get_error(index)
        node = error.node_name() or f"#{error.node()}"
        parts.append(f"node {node!r} ({error.node_operator() or 'unknown op'}): {error.desc()}")
    return "; ".join(parts) or "no error recorded"


def _progress_monitor(cancel: threading.Event, bars: bool, watchers: Sequence[BuildWatcher] = ()) -> Any:
    import tensorrt as trt
    from tqdm import tqdm

    # tqdm draws nothing where stderr is not a terminal (a systemd journal, ros2 launch, docker logs): a line every
    # PROGRESS_NOTE_S there, so that minutes of a first build do not look like a hang.
    notes = bars and not (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())

    class BuildMonitor(trt.IProgressMonitor):
        """Stops the build at its next step once ``cancel`` is set; one tqdm bar per phase when ``bars``; each step
        to the watchers of the thread that began the build (a live view's page)."""

        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._bars: dict[str, Any] = {}
            # TensorRT calls the monitor from several builder threads.
            self._lock = threading.Lock()
            # The clock is read once a step, for the lines and the watchers (unetrt.build_watch) alike.
            self._started = self._noted = self._now = time.monotonic()

        def _note(self, phase_name: str, step: int, now: float) -> None:
            if not notes or now - self._noted < PROGRESS_NOTE_S:
                return
            self._noted = now
            bar = self._bars.get(phase_name)
            total = f"/{bar.total}" if bar is not None and bar.total else ""
            # Nothing about where it goes: the build's first line says it (the cache, this run's own folder, or
            # unet-build's output), where 'it is cached once built' was wrong for two of them.
            print(f"unetrt: still building the TensorRT engine ({now - self._started:.0f} s so far; {phase_name} "
                  f"{step + 1}{total})", file=sys.stderr, flush=True)

        def phase_start(self, phase_name: str, parent_phase: str, num_steps: int) -> None:
            with self._lock:
                self._bars[phase_name] = tqdm(total=num_steps, desc=phase_name, position=len(self._bars),
                                              leave=not parent_phase, unit="step", disable=None if bars else True)
                tell_step(BuildStep(phase_name, 0, num_steps, self._now - self._started), watchers)

        def step_complete(self, phase_name: str, step: int) -> bool:
            with self._lock:
                now = self._now = time.monotonic()
                bar = self._bars.get(phase_name)
                if bar is not None:
                    bar.update(step + 1 - bar.n)
                    tell_step(BuildStep(phase_name, step + 1, bar.total, now - self._started), watchers)
                self._note(phase_name, step, now)
            # False asks TensorRT to stop the build (IProgressMonitor.stepComplete).
            return not cancel.is_set()

        def phase_finish(self, phase_name: str) -> None:
            with self._lock:
                bar = self._bars.pop(phase_name, None)
                if bar is not None:
                    bar.close()

    return BuildMonitor()


def _pin_outputs_fp32(network: trt.INetworkDefinition) -> int:
    """Keep the layers that write network outputs in FP32 (TensorRT 10 weak typing); returns how many."""
    import tensorrt as trt

    outputs = {network.get_output(i).name for i in range(network.num_outputs)}
    pinned = 0
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        written = [j for j in range(layer.num_outputs) if layer.get_output(j).name in outputs]
        if written:
            layer.precision = trt.float32
            for j in written:
                layer.set_output_type(j, trt.float32)
            pinned += 1
    return pinned


def asymmetric_quantizers(model: onnx.ModelProto) -> list[str]:
    """Names of QuantizeLinear nodes TensorRT cannot take: a uint8 type or a non-zero zero point.

    A QuantizeLinear without a zero point is uint8 (ONNX operator spec, QuantizeLinear: without ``y_zero_point``
    the output is uint8 with zero point 0), which ONNX Runtime computes, clipping negatives; TensorRT reads it as
    INT8, so the two would give other answers.
    """
    from onnx import TensorProto, numpy_helper

    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    found = []
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear":
            continue
        if len(node.input) < 3 or not node.input[2]:
            found.append(node.name or node.output[0])
            continue
        zero = initializers.get(node.input[2])
        if zero is not None and (zero.data_type != TensorProto.INT8 or numpy_helper.to_array(zero).any()):
            found.append(node.name or node.output[0])
    return found


def has_qdq(model: onnx.ModelProto) -> bool:
    """Whether a graph carries explicit quantization (QuantizeLinear / DequantizeLinear nodes)."""
    return any(node.op_type in ("QuantizeLinear", "DequantizeLinear") for node in model.graph.node)


def fold_int32_dequantize(model: onnx.ModelProto) -> int:
    """Replace every DequantizeLinear of an INT32 initializer (a quantized bias) by its FP32 value, in place.

    Returns:
        How many were folded.

    Example:
        >>> fold_int32_dequantize(onnx.load("camvid.int8.onnx"))  # doctest: +SKIP
        23
    """
    import numpy as np
    from onnx import TensorProto, numpy_helper

    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    folded: list[onnx.NodeProto] = []
    for node in model.graph.node:
        source = initializers.get(node.input[0]) if node.op_type == "DequantizeLinear" else None
        if source is None or source.data_type != TensorProto.INT32:
            continue
        values = numpy_helper.to_array(source).astype(np.float64)
        scale = numpy_helper.to_array(initializers[node.input[1]]).astype(np.float64)
        zero = (numpy_helper.to_array(initializers[node.input[2]]).astype(np.float64)
                if len(node.input) > 2 and node.input[2] else 0.0)
        model.graph.initializer.append(
            numpy_helper.from_array(((values - zero) * scale).astype(np.float32), node.output[0]))
        folded.append(node)
    for node in folded:
        model.graph.node.remove(node)
    used = {name for node in model.graph.node for name in node.input}
    unused = [t for t in model.graph.initializer if t.name not in used and t.name not in {o.name for o in
                                                                                         model.graph.output}]
    for tensor in unused:
        model.graph.initializer.remove(tensor)
    return len(folded)


def configure_precision(config: trt.IBuilderConfig, network: trt.INetworkDefinition, options: BuildOptions,
                        strongly_typed: bool) -> list[str]:
    """Set the builder's precision flags for a weakly typed network (TensorRT 10); returns the flags set.

    Strongly typed networks take their precision from the graph: nothing is set.
    """
    import tensorrt as trt

    if strongly_typed or not (options.fp16 or options.int8):
        return []
    flags: list[str] = []
    if options.int8:
        # Explicit quantization: the QDQ pairs give the scales, no calibrator is attached.
        config.set_flag(trt.BuilderFlag.INT8)
        flags.append("INT8")
    # FP16 kernels wherever the graph leaves the choice open (for INT8: the layers outside QDQ pairs).
    config.set_flag(trt.BuilderFlag.FP16)
    config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    _pin_outputs_fp32(network)
    return [*flags, "FP16", "OBEY_PRECISION_CONSTRAINTS"]


def tensorrt_has_dla(version: str) -> bool:
    """Whether this TensorRT release builds DLA engines at all (whether the device has DLA cores is another question).

    NVIDIA, "Working with DLA" (TensorRT 11.4.1): "TensorRT 10.7 was the last 10.x release that supported DLA. DLA
    was unavailable in TensorRT 11.0 through 11.3 ... TensorRT 11.4.0 supported DLA only on Windows on ARM"; 11.4.1
    supports it on Jetson AGX Orin under JetPack 7.2.2 or later.

    Example:
        >>> tensorrt_has_dla("10.3.0"), tensorrt_has_dla("10.13.3"), tensorrt_has_dla("11.4.1")
        (True, False, True)
    """
    release = tensorrt_release(version)
    return release < (10, 8, 0) or release >= (11, 4, 1)


def configure_dla(config: trt.IBuilderConfig, builder: trt.Builder, dla_core: int | None,
                  precision: str) -> list[str]:
    """Put the layers a DLA can run on ``dla_core``, the rest on the GPU; returns the flags set.

    Raises:
        ValueError: when this device has no such DLA core, or the precision is FP32 (DLAs run FP16 and INT8).
    """
    import tensorrt as trt

    if dla_core is None:
        return []
    available = int(builder.num_DLA_cores)
    if dla_core >= available:
        raise ValueError(f"--dla-core {dla_core}: this device has {available} DLA core(s)"
                         + (f"; use 0-{available - 1}" if available else "; drop --dla-core"))
    if precision == "fp32":
        # TensorRT 10's DLA takes no Q/DQ graph (refused in build_plan): offer --int8 where it runs on the DLA.
        int8 = " (or --int8 with a QDQ model)" if tensorrt_major(trt.__version__) >= 11 else ""
        raise ValueError(f"a DLA runs FP16 and INT8 layers only; add --fp16{int8} to --dla-core")
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = dla_core
    # Layers the DLA cannot run (or more than it can hold) go to the GPU instead of failing the build.
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    return ["GPU_FALLBACK"]


def fixed_for_dla(profile: ShapeProfile, ranged: bool) -> ShapeProfile:
    """The one input shape a DLA build takes: the profile's opt shape (batch 1 at the working size by default).

    "DLA does not support dynamic dimensions, so the profile's min, max, and opt values must be equal"
    (TensorRT Developer Guide, "DLA Supported Layers and Restrictions"): with a range, GPU fallback runs every
    layer on the GPU, and the engine holds nothing for the DLA.

    Args:
        profile: the profile resolved from the model and the shapes asked for.
        ranged: whether a min or max shape was asked for (a range is then refused rather than narrowed).

    Raises:
        ValueError: when the shapes asked for make a range.

    Example:
        >>> fixed_for_dla(ShapeProfile((1, 3, 16, 16), (1, 3, 192, 256), (4, 3, 192, 256)), ranged=False).max
        (1, 3, 192, 256)
    """
    if profile.min == profile.opt == profile.max:
        return profile
    if ranged:
        raise ValueError(f"a DLA runs one fixed input shape, not {format_shape(profile.min)} .. "
                         f"{format_shape(profile.max)}: give --min-shape, --opt-shape and --max-shape equal, or "
                         "--opt-shape alone")
    return ShapeProfile(profile.opt, profile.opt, profile.opt)


def attach_timing_cache(config: trt.IBuilderConfig, path: Path | None) -> Any:
    """Attach the timing cache stored at ``path`` (an empty one when absent); returns the cache or None.

    A cache written on another device or TensorRT version is refused by ``set_timing_cache`` (it returns
    False), and bytes that are no timing cache at all (a file cut short by a full disk, another file at that
    path) make ``create_timing_cache`` return None, as trtexec checks: either way one warning line, and the build
    starts from a fresh cache that replaces the file afterwards.
    """
    if path is None:
        return None
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    if cache is not None and config.set_timing_cache(cache, ignore_mismatch=False):
        return cache
    why = "cannot be read (damaged, or not a timing cache)" if cache is None else \
        "was written on another GPU or TensorRT version"
    warn_caller(f"timing cache {str(path)!r} {why}; building with a fresh one, which replaces it")
    cache = config.create_timing_cache(b"")
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
        raise RuntimeError("TensorRT refused an empty timing cache")
    return cache


def _precision_of(options: BuildOptions, quantized: bool, graph_fp16: bool) -> str:
    return "int8" if quantized else "fp16" if options.fp16 or graph_fp16 else "fp32"


class BuildCancelledError(Exception):
    """An engine build stopped by :func:`cancel_builds` (a caller interrupted by Ctrl-C or SIGTERM raises that
    instead); nothing was cached."""


# The cancel events of the builds in progress, and of the starts waiting for one, for cancel_builds.
_builds_lock = threading.Lock()
_builds_in_progress: set[threading.Event] = set()


@contextmanager
def cancellable() -> Iterator[threading.Event]:
    """An event that :func:`cancel_builds` sets while the block runs: an engine build, or a start waiting for
    another thread's or process's build of the same engine (:mod:`unetrt.plan_cache`), which must end with it."""
    cancel = threading.Event()
    with _builds_lock:
        _builds_in_progress.add(cancel)
    try:
        yield cancel
    finally:
        with _builds_lock:
            _builds_in_progress.discard(cancel)


def cancel_builds() -> int:
    """Stop every TensorRT engine build in progress in this process at its next step.

    Ctrl-C and SIGTERM reach Python's main thread only: a build a Segmenter started on another thread (a robot's
    callback, an executor's worker) goes on, minutes on a Jetson's first run, and the process waits for it before it
    exits. Call this from the program's shutdown path (a signal handler, rclpy's on-shutdown callback): each such
    build raises :class:`BuildCancelledError` in the thread that asked for it, nothing is cached, and the next
    start builds afresh. So does each start waiting for a build of the same engine (a second camera's Segmenter),
    which would otherwise begin a build of its own, minutes more, once the cancelled one let go. A build on the
    main thread stops by itself on Ctrl-C.

    Returns:
        How many builds, and starts waiting for one, were asked to stop.

    Example:
        >>> cancel_builds()
        0
    """
    with _builds_lock:
        events = list(_builds_in_progress)
    for event in events:
        event.set()
    return len(events)


@contextmanager
def _verbose_logging(verbose: bool) -> Iterator[None]:
    """TensorRT's verbose messages for the block: the process has one logger (:func:`tensorrt_logger`), so a
    verbose build makes what runs beside it verbose too while it lasts."""
    if not verbose:
        yield
        return
    import tensorrt as trt

    logger = tensorrt_logger()
    before, logger.min_severity = logger.min_severity, trt.Logger.VERBOSE
    try:
        yield
    finally:
        logger.min_severity = before


def _say_stopping() -> None:
    print("unetrt: stopping the TensorRT build at its next step", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class BuiltPlan:
    """A plan TensorRT built and nothing has written yet.

    Attributes:
        plan: the serialized engine.
        metadata: its description (``PLAN.json``).
        timing_cache: the builder's timing cache to write back to ``BuildOptions.timing_cache`` (None: none asked).
    """

    plan: bytes
    metadata: PlanMetadata
    timing_cache: bytes | None


def build_engine(onnx_path: str | Path, plan_path: str | Path, options: BuildOptions,
                 device_index: int = 0) -> PlanMetadata:
    """Parse an ONNX U-Net, build a TensorRT plan and write it with its metadata.

    Args:
        onnx_path: a graph written by ``unet-export`` (FP32, FP16 from ``--fp16``, or QDQ INT8).
        plan_path: the ``.plan`` file to write; ``PLAN.json`` is written beside it, first.
        options: builder settings; ``int8`` needs a QDQ graph in TensorRT's layout
            (``unet-export --int8 --int8-target tensorrt``).
        device_index: the CUDA device to build for.

    Returns:
        The metadata written beside the plan.

    Raises:
        ImportError, FileNotFoundError, KeyboardInterrupt, BuildCancelledError: as :func:`build_plan`.
        ValueError: as :func:`build_plan`, or when the plan cannot be written (a full disk); a timing cache that
            cannot be written is said in a line, not raised.

    Example:
        >>> build_engine("camvid.onnx", "camvid.plan", BuildOptions(fp16=True))  # doctest: +SKIP
    """
    built = build_plan(onnx_path, options, device_index)
    plan_path = Path(plan_path)
    described = metadata_path(plan_path)
    # The plan being replaced keeps its own description should the new plan fail to land beside the new one (a full
    # disk): new metadata over the old plan would make the old engine pass for the new build.
    earlier = described.read_bytes() if plan_path.is_file() and described.is_file() else None
    try:
        write_plan(plan_path, built.plan, built.metadata)
    except OSError as exc:
        if plan_path.is_file():
            _restore_description(described, earlier)
        raise ValueError(f"the TensorRT engine was built but could not be written to {plan_path} "
                         f"({exc.strerror or exc}); free space there or write it elsewhere") from exc
    save_timing_cache(options.timing_cache, built.timing_cache)
    return built.metadata


def _restore_description(described: Path, earlier: bytes | None) -> None:
    """Put a plan's earlier metadata back, or, where it cannot be written (or there was none), remove the new one:
    a plan without metadata is refused in one line that names the rebuild, never run as another build."""
    try:
        if earlier is not None:
            if described.is_file() and described.read_bytes() == earlier:
                # Never replaced (the disk refused the new metadata too): putting it back would fail alike on a full
                # disk, and the earlier plan's own description was then removed.
                return
            replace_file(described, earlier)
            return
    except OSError:
        pass
    described.unlink(missing_ok=True)


def save_timing_cache(path: Path | None, data: bytes | None) -> None:
    """Write a build's timing cache back; one that cannot be written (a full disk) costs the next build time, so
    it is said in a line and not raised."""
    if path is None or data is None:
        return
    try:
        replace_file(path, data)
    except OSError as exc:
        print(f"unetrt: cannot save the TensorRT timing cache {path} ({exc.strerror or exc}); the next build "
              "times its layers again", file=sys.stderr, flush=True)


def build_plan(onnx_path: str | Path, options: BuildOptions, device_index: int = 0) -> BuiltPlan:
    """Parse an ONNX U-Net and build a TensorRT plan, written nowhere (:func:`build_engine` writes it).

    Args:
        onnx_path: a graph written by ``unet-export`` (FP32, FP16 from ``--fp16``, or QDQ INT8).
        options: builder settings; ``int8`` needs a QDQ graph in TensorRT's layout
            (``unet-export --int8 --int8-target tensorrt``).
        device_index: the CUDA device to build for.

    Returns:
        The plan's bytes, its metadata and the timing cache to save.

    Raises:
        ImportError: when TensorRT, pycuda or onnx is not installed.
        FileNotFoundError: when the ONNX file does not exist.
        ValueError: on parse errors (listed per node), a bad profile, a failed build, a DLA core this device
            lacks, or ``int8`` on a graph without QDQ nodes, or together with ``fp16``.
        KeyboardInterrupt: on Ctrl-C during the build (as what a SIGTERM handler raises, such as
            :class:`~unetrt.cli.TerminatedError`), once the builder has stopped at its next step.
        BuildCancelledError: when :func:`cancel_builds` stopped it.

    Example:
        >>> built = build_plan("camvid.onnx", BuildOptions(fp16=True))  # doctest: +SKIP
    """
    require_tensorrt()
    require_pycuda()
    import tensorrt as trt

    onnx_path = Path(onnx_path)
    if onnx_path.suffix.lower() != ".onnx":
        raise ValueError(f"{str(onnx_path)!r} is not an ONNX model: an engine is built from the .onnx file "
                         "unet-export writes")
    # unetrt's reader first: a damaged file is one line naming it, where onnx.load raised protobuf's DecodeError.
    check_file(onnx_path, "ONNX model")
    info = read_model_file(onnx_path).info
    model = load_onnx(onnx_path)
    if options.working_size is not None:
        info = dataclasses.replace(info, working_size=options.working_size)
    quantized = has_qdq(model)
    check_int8_request(options, quantized, onnx_path, asymmetric_quantizers(model))
    if quantized:
        fold_int32_dequantize(model)
    profile = resolve_profile(info, options.min_shape, options.opt_shape, options.max_shape)
    if options.dla_core is not None:
        profile = fixed_for_dla(profile, ranged=options.min_shape is not None or options.max_shape is not None)
    gpu = gpu_identity(device_index)
    major = tensorrt_major(trt.__version__)
    if options.dla_core is not None and not tensorrt_has_dla(trt.__version__):
        raise ValueError(f"--dla-core: TensorRT {trt.__version__} has no DLA support (TensorRT 10.7 was the last 10.x "
                         "release with DLA; 11.4.1 brought it back for AGX Orin under JetPack 7.2.2 or later); "
                         "drop --dla-core to build for the GPU")
    if options.dla_core is not None and quantized and major < 11:
        # TensorRT 10's DLA quantizes implicitly (calibration scales) and does not take a graph's Q/DQ layers: with
        # GPU fallback they, and the INT8 layers between them, go to the GPU under the DLA's name (NVIDIA/TensorRT
        # issue 2222: "Currently, DLA doesn't support QAT yet"; NVIDIA/Model-Optimizer PR 1661: "DLA still only
        # supports IQ").
        raise ValueError(f"--dla-core with a Q/DQ INT8 graph: TensorRT {trt.__version__}'s DLA runs no explicitly "
                         f"quantized (Q/DQ) layer, so {str(onnx_path)!r} would run on the GPU under the DLA's name; "
                         "build the FP32 model with --precision fp16 for the DLA, or drop --dla-core")
    from .export.fp16 import convert_to_fp16, expand_stored_weights, is_fp16_model

    # An FP32 graph that stores its weights as float16 (the bundled models) reaches TensorRT with its float32
    # weights: no Cast layers in front of the convolutions, none for a DLA to hand back to the GPU.
    model = expand_stored_weights(model)
    graph_fp16 = is_fp16_model(model)
    if options.fp16 and major >= 11 and not graph_fp16:
        # TensorRT 11 has no BuilderFlag.FP16: the precision must be in the graph itself.
        model = convert_to_fp16(model)
        graph_fp16 = True
    # TensorRT 11 networks are always strongly typed (the flag is accepted and ignored); TensorRT 10 builds
    # strongly typed only when the graph carries its own FP16 types, and weakly typed with FP16 flags otherwise.
    strongly_typed = major >= 11 or graph_fp16
    precision = _precision_of(options, quantized, graph_fp16)
    # Taken here, on the thread that asked for the engine: the build and TensorRT's calls of its monitor run on
    # threads of their own, and a stream's live view watches the builds of the thread that opens its model.
    watchers = build_watchers()

    def build() -> BuiltPlan:
        logger = tensorrt_logger()
        builder = start_tensorrt(trt.Builder)
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(model.SerializeToString(), str(onnx_path)):
            raise ValueError(f"TensorRT could not parse {str(onnx_path)!r}: {describe_parser_errors(parser)}")
        if network.num_inputs != 1 or network.num_outputs != 1:
            raise ValueError(f"{str(onnx_path)!r} has {network.num_inputs} inputs and {network.num_outputs} outputs; "
                             "a unetrt U-Net has one of each")
        image, logits = network.get_input(0), network.get_output(0)

        config = builder.create_builder_config()
        workspace_mib = options.workspace_mib
        if workspace_mib is None:
            workspace_mib = default_workspace_mib(*_device_memory(device_index))
        if workspace_mib is not None:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
        if options.opt_level is not None:
            config.builder_optimization_level = options.opt_level
        # TensorRT 10 weak typing (removed in 11): allow FP16 (and INT8) kernels, but keep the logit head in FP32.
        builder_flags = configure_precision(config, network, options, strongly_typed)
        if builder_flags and not strongly_typed:
            # The first layers run in FP16 anyway: an FP16 input spares TensorRT a reformat layer, and the frame path's
            # extract kernel writes half directly (a strongly typed network takes its input type from the graph).
            image.dtype = trt.float16
        # TensorRT allows every format at network I/O by default (ITensor::setAllowedFormats: "By default all formats
        # are allowed") and may build an FP16 input as kHWC8 or kCHW2; infer's copy and the frame path's extract
        # kernel write linear NCHW and read the logits so: pin both tensors to it, as trtexec does by default.
        for tensor in (image, logits):
            tensor.allowed_formats = 1 << int(trt.TensorFormat.LINEAR)
        builder_flags += configure_dla(config, builder, options.dla_core, precision)
        # Kept in a local too, so that it outlives the build whatever reference the bindings keep ("The lifetime of
        # the IProgressMonitor must exceed the lifetime of all TensorRT objects that use it").
        monitor = _progress_monitor(cancel, options.progress, watchers)
        config.progress_monitor = monitor
        shape_profile = builder.create_optimization_profile()
        shape_profile.set_shape(image.name, trt.Dims4(*profile.min), trt.Dims4(*profile.opt), trt.Dims4(*profile.max))
        config.add_optimization_profile(shape_profile)
        cache = attach_timing_cache(config, options.timing_cache)

        serialized = builder.build_serialized_network(network, config)
        if cancel.is_set():
            # Stopped by the monitor, or interrupted after the last step: the caller re-raises its interrupt and
            # nothing is written.
            raise BuildCancelledError(f"the TensorRT engine build of {str(onnx_path)!r} was stopped "
                                      f"(unetrt.cancel_builds); nothing was cached")
        if serialized is None:
            refused = allocation_refused()
            if refused is not None:
                # Not memory: a smaller workspace changes nothing while a CUDA graph capture refuses cudaMalloc.
                raise GpuResourceError(f"TensorRT could not build an engine from {str(onnx_path)!r}: {refused}")
            # TensorRT's logger has printed why just above; the likeliest cause on a Jetson, memory the build shares
            # with everything else (NVIDIA/TensorRT issue 4258: "Cuda Runtime (out of memory)" on an Orin), is named
            # with its fix, which a user otherwise learns only from the troubleshooting page.
            smaller = DEFAULT_SMALLER_WORKSPACE_MIB if workspace_mib is None else max(1, workspace_mib // 4)
            had = "" if workspace_mib is None else f"; this build had {workspace_mib} MiB"
            raise ValueError(
                f"TensorRT failed to build an engine from {str(onnx_path)!r} for profile "
                f"{format_shape(profile.min)} .. {format_shape(profile.max)}; where TensorRT's errors above say out "
                f"of memory, close the programs using the GPU or build with a smaller workspace (unet-build ... "
                f"--workspace {smaller}{had}), else rerun with --verbose to see why"
            )
        plan_bytes = bytes(serialized)
        metadata = PlanMetadata(
            tensorrt_version=trt.__version__,
            gpu=gpu,
            input_name=image.name,
            output_name=logits.name,
            input_dtype=_numpy_name(image.dtype),
            output_dtype=_numpy_name(logits.dtype),
            profile=profile,
            precision=precision,
            strongly_typed=strongly_typed,
            # Absolute: a relative path names a file of the folder the build ran in, which no later reader knows.
            source=str(Path(onnx_path).absolute()),
            info=info,
            build_options={"workspace_mib": workspace_mib, "opt_level": options.opt_level,
                           "builder_flags": builder_flags},
            dla_core=options.dla_core,
            source_sha256=file_sha256(onnx_path),
            plan_sha256=hashlib.sha256(plan_bytes).hexdigest(),
        )
        timing = bytes(config.get_timing_cache().serialize()) if cache is not None else None
        return BuiltPlan(plan_bytes, metadata, timing)

    def build_on_device() -> BuiltPlan:
        # The builder works on the CUDA device current on this thread (TensorRT FAQ: "use cudaSetDevice() before
        # calling the builder"): make device_index's primary context current for it, as the runtime does; the
        # TensorRT objects are locals of build(), so they are freed while the context is still current.
        device_context = PrimaryContext(device_index)
        try:
            with device_context.active(), _verbose_logging(options.verbose):
                try:
                    return build()
                except BaseException as exc:
                    # The traceback would keep build()'s TensorRT objects alive past the context's release, to be
                    # destroyed on another thread with no context current: free them here.
                    traceback.clear_frames(exc.__traceback__)
                    raise
        finally:
            device_context.release()

    # On a thread of its own, so that Ctrl-C or SIGTERM (minutes into a Jetson's first build) stops the builder
    # at its next step, through the monitor, instead of waiting for it.
    with cancellable() as cancel:
        return run_interruptible(build_on_device, cancel, "tensorrt-build", on_cancel=_say_stopping)


def write_plan(plan_path: Path, plan_bytes: bytes, metadata: PlanMetadata) -> None:
    """Write the metadata, then the plan, each renamed into place whole; Ctrl-C or SIGTERM during the write is
    raised once both are written.

    In this order a crash leaves either the old pair, or new metadata whose ``plan_sha256`` the old (or
    missing) plan does not match, which the engine cache detects; never a new plan without its description.

    Raises:
        OSError: when either cannot be written (a full disk).
    """
    def write() -> None:
        write_plan_metadata(plan_path, metadata)
        replace_file(plan_path, plan_bytes)

    # On a thread of its own, which the interrupt does not stop: raised in the caller's thread, it came between the
    # metadata and the plan (writing and syncing tens of MB to a Jetson's SD card takes a second or more), and the
    # build of minutes was lost, the next start building it again.
    run_interruptible(write, threading.Event(), "tensorrt-plan-write")


def check_int8_request(options: BuildOptions, quantized: bool, onnx_path: str | Path,
                       asymmetric: Sequence[str] = ()) -> None:
    """``--int8`` goes with a symmetric INT8 QDQ graph and alone; a QDQ graph needs ``--int8``.

    Args:
        options: the build settings.
        quantized: whether the graph has QDQ nodes.
        onnx_path: the graph's file, for the message.
        asymmetric: its quantizers TensorRT cannot take (see :func:`asymmetric_quantizers`).

    Raises:
        ValueError: naming the file and the fix.
    """
    if options.int8 and options.fp16:
        raise ValueError("give --int8 or --fp16, not both: --int8 already lets layers outside the QDQ pairs run "
                         "in FP16")
    if options.int8 and not quantized:
        raise ValueError(f"--int8 needs a QDQ model and {str(onnx_path)!r} has no QuantizeLinear/DequantizeLinear "
                         f"node: {int8_source_advice(onnx_path, 'build')}")
    if quantized and not options.int8:
        raise ValueError(f"{str(onnx_path)!r} is a QDQ INT8 model; build it with --int8")
    if asymmetric:
        raise ValueError(f"{str(onnx_path)!r} quantizes activations to uint8 with zero points ({len(asymmetric)} "
                         "nodes, the CPU layout); TensorRT takes symmetric int8 only: export it with "
                         "unet-export --int8 --int8-target tensorrt")


def int8_source_advice(onnx_path: str | Path, verb: str = "run") -> str:
    """What to ``verb`` for an INT8 engine in place of the float model ``onnx_path``: the QDQ file beside it that
    ``unet-export --precision int8`` wrote (``NAME.int8.onnx``), or the export that writes one TensorRT takes.

    TensorRT builds INT8 here only from a graph whose QDQ nodes carry the calibration (explicit quantization), in
    its symmetric layout; the export's default layout is the CPU's, which TensorRT refuses, so the advice names
    ``--int8-target tensorrt`` and what the calibration needs.

    Example:
        >>> int8_source_advice("mine.onnx")  # doctest: +ELLIPSIS
        'export one with unet-export CHECKPOINT -o mine.onnx --precision int8 --int8-target tensorrt ...'
    """
    path = Path(onnx_path)
    stem = path.name.removesuffix(".onnx").removesuffix(".fp16")
    sibling = path.with_name(f"{stem}.int8.onnx")
    export = (f"unet-export CHECKPOINT -o {stem}.onnx --precision int8 --int8-target tensorrt --calibration FRAMES "
              "--check-labels LABELS")
    try:
        # unetrt's reader first: a damaged file is a ValueError there, a protobuf error in onnx.load.
        quantized = sibling.is_file() and file_precision(sibling) == "int8"
    except (OSError, ValueError):  # not a model: no file to point at
        quantized = False
    if quantized:
        if not asymmetric_quantizers(load_onnx(sibling)):
            return f"{verb} {sibling.name}, beside it"
        return (f"{sibling.name} beside it is in the CPU layout (uint8 with zero points), which TensorRT refuses: "
                f"export it again with --int8-target tensorrt ({export}), then {verb} {sibling.name}")
    return (f"export one with {export} (FRAMES: frames of the scenes the camera sees, to calibrate on; LABELS: "
            f"labelled frames the INT8 model is checked on against FP32), then {verb} {stem}.int8.onnx")


def _numpy_name(dtype: trt.DataType) -> str:
    import numpy as np
    import tensorrt as trt

    return str(np.dtype(trt.nptype(dtype)).name)
