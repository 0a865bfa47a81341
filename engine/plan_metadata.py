"""What a TensorRT plan was built from, for which GPU, and whether it can run here.

A serialised TensorRT engine only deserialises with the TensorRT version that
built it and runs only on GPUs of the compute capability it was built for.
``unet-build`` therefore writes ``unet.plan.json`` next to ``unet.plan``: the
TensorRT version, the GPU, the I/O tensors, the optimisation profile and the
model description (:class:`~unetrt.model_info.ModelInfo`). The TensorRT backend
reads it before touching the plan and explains a mismatch instead of crashing.

This module does not import TensorRT, so all of it runs and is tested anywhere.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Any

from .caller_warning import warn_caller
from .geometry import is_legal_size, nearest_legal_sizes
from .model_file import decode_description
from .model_info import ModelInfo
from .paths import file_sha256, read_json, replace_file

PLAN_FORMAT_VERSION = 1
METADATA_SUFFIX = ".json"
DEFAULT_MAX_BATCH = 4
# Without a working size, frames run at their own size: profile up to 1024x1024, tuned for 512x512.
DEFAULT_OPT_SIDE = 512
DEFAULT_MAX_SIDE = 1024

Shape = tuple[int, int, int, int]


class PlanCompatibilityError(ValueError):
    """The plan was built for another TensorRT version or GPU; the message says how to rebuild it."""


def parse_shape(text: str) -> Shape:
    """Parse ``NxCxHxW`` (e.g. ``1x3x192x256``) into a 4-tuple.

    Raises:
        ValueError: when the text is not four positive integers joined by 'x'.

    Example:
        >>> parse_shape("1x3x192x256")
        (1, 3, 192, 256)
    """
    parts = text.lower().split("x")
    if len(parts) != 4 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"shape must be NxCxHxW with four positive integers, e.g. 1x3x192x256, got {text!r}")
    n, c, h, w = (int(p) for p in parts)
    return n, c, h, w


def format_shape(shape: tuple[int, ...]) -> str:
    """``(1, 3, 192, 256)`` -> ``'1x3x192x256'``."""
    return "x".join(str(int(d)) for d in shape)


def _as_shape(value: Any, what: str) -> Shape:
    dims = tuple(int(d) for d in value)
    if len(dims) != 4:
        raise ValueError(f"{what} shape must have 4 dimensions (N, C, H, W), got {dims}")
    return dims[0], dims[1], dims[2], dims[3]


@dataclass(frozen=True)
class ShapeProfile:
    """A TensorRT optimisation profile of the image input: smallest, tuned-for and largest N x C x H x W.

    Raises:
        ValueError: on non-positive sizes, a channel count that varies, or min > opt > max in any dimension.

    Example:
        >>> profile = ShapeProfile((1, 3, 16, 16), (1, 3, 192, 256), (4, 3, 192, 256))
        >>> profile.max_batch, profile.max_input_hw
        (4, (192, 256))
    """

    min: Shape
    opt: Shape
    max: Shape

    def __post_init__(self) -> None:
        for name in ("min", "opt", "max"):
            shape = _as_shape(getattr(self, name), name)
            object.__setattr__(self, name, shape)
            if min(shape) <= 0:
                raise ValueError(f"{name} shape {format_shape(shape)} has a non-positive dimension")
        if not self.min[1] == self.opt[1] == self.max[1]:
            raise ValueError(
                f"the channel count must be the same in min, opt and max, got "
                f"{format_shape(self.min)}, {format_shape(self.opt)}, {format_shape(self.max)}"
            )
        for axis, label in enumerate("NCHW"):
            if not self.min[axis] <= self.opt[axis] <= self.max[axis]:
                raise ValueError(
                    f"profile needs min <= opt <= max in every dimension, but {label} is "
                    f"{self.min[axis]} / {self.opt[axis]} / {self.max[axis]} "
                    f"(min {format_shape(self.min)}, opt {format_shape(self.opt)}, max {format_shape(self.max)})"
                )

    @property
    def max_batch(self) -> int:
        """Largest batch the engine accepts."""
        return self.max[0]

    @property
    def max_input_hw(self) -> tuple[int, int]:
        """Largest (height, width) the engine accepts."""
        return self.max[2], self.max[3]

    @property
    def min_input_hw(self) -> tuple[int, int]:
        """Smallest (height, width) the engine accepts."""
        return self.min[2], self.min[3]

    def contains(self, shape: tuple[int, ...]) -> bool:
        """Whether an input of ``shape`` lies inside the profile."""
        return len(shape) == 4 and all(lo <= d <= hi for lo, d, hi in zip(self.min, shape, self.max))

    def check_shape(self, shape: tuple[int, ...]) -> None:
        """Raise unless an input of ``shape`` lies inside the profile.

        Raises:
            ValueError: naming the shape, the profile and the ways out (tile, or rebuild with the bound the shape
                passes: ``--max-shape`` for a shape above the profile, ``--min-shape`` below it).
        """
        if self.contains(shape):
            return
        if len(shape) != 4 or shape[1] != self.min[1]:
            raise ValueError(f"input shape {format_shape(shape)} is not N x {self.min[1]} x H x W, as the engine's "
                             f"optimisation profile (min {format_shape(self.min)}, max {format_shape(self.max)}) takes")
        ways = []
        if shape[0] < self.min[0]:
            # A fixed batch (trtexec --shapes=image:4x...): the Segmenter and unet-stream run one frame per call.
            ways.append(f"run batches of at least {self.min[0]} (Segmenter and unet-stream run one frame at a time)")
        if shape[0] > self.max[0]:
            ways.append("split the batch")
        if any(side > largest for side, largest in zip(shape[2:], self.max[2:])):
            ways.append("resize or tile the frames (Segmenter tiles frames larger than the profile)")
        if any(side < smallest for side, smallest in zip(shape[2:], self.min[2:])):
            ways.append(f"resize the frames to at least {self.min[3]}x{self.min[2]}")
        # The rebuild widens only the bound the shape passes: naming --max-shape for a shape below the profile
        # named the engine's own largest shape, a rebuild that changes nothing.
        bounds = []
        if any(side < smallest for side, smallest in zip(shape, self.min)):
            bounds.append(f"--min-shape {format_shape(tuple(min(a, b) for a, b in zip(shape, self.min)))}")
        if any(side > largest for side, largest in zip(shape, self.max)):
            bounds.append(f"--max-shape {format_shape(tuple(max(a, b) for a, b in zip(shape, self.max)))}")
        raise ValueError(
            f"input shape {format_shape(shape)} is outside the engine's optimisation profile "
            f"(min {format_shape(self.min)}, max {format_shape(self.max)}); {', '.join(ways)}, or rebuild the engine "
            f"with unet-build ... {' '.join(bounds)}"
        )

    def check_model(self, info: ModelInfo) -> None:
        """Raise unless the profile fits the model: its channel count and legal sides at min, opt and max.

        Raises:
            ValueError: naming the offending shape and the nearest legal sides.
        """
        if self.min[1] != info.in_channels:
            raise ValueError(
                f"profile has {self.min[1]} channels but the model takes {info.in_channels}; "
                f"use shapes like 1x{info.in_channels}xHxW"
            )
        for name, shape in (("min", self.min), ("opt", self.opt), ("max", self.max)):
            for side, label in ((shape[2], "height"), (shape[3], "width")):
                if not is_legal_size(side, info.padding, info.depth):
                    below, above = nearest_legal_sizes(side, info.padding, info.depth)
                    raise ValueError(
                        f"{name} shape {format_shape(shape)}: {label} {side} is not a legal input side of this "
                        f"{info.padding}-padded depth-{info.depth} U-Net; nearest legal sides: {below} and {above}"
                    )

    def to_dict(self) -> dict[str, list[int]]:
        """JSON-ready form."""
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ShapeProfile:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: when a key is missing or a shape is malformed.
        """
        try:
            return cls(_as_shape(data["min"], "min"), _as_shape(data["opt"], "opt"), _as_shape(data["max"], "max"))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"profile must have min, opt and max shapes, got {data!r}") from exc


def _legal_at_least(side: int, info: ModelInfo) -> int:
    return nearest_legal_sizes(side, info.padding, info.depth)[1]


def default_profile(info: ModelInfo, max_batch: int = DEFAULT_MAX_BATCH) -> ShapeProfile:
    """The profile ``unet-build`` uses when no shape is given.

    With a working size (frames are resized to it), the input's height and width are
    fixed at the legal network input of that size (min = opt = max); without one it
    is tuned for 512x512 and accepts the smallest legal side up to 1024x1024. Batches
    run from 1 to ``max_batch``, tuned for 1 (live video).

    Raises:
        ValueError: when ``max_batch`` is not positive.

    Example:
        >>> from unetrt.model_info import ModelInfo
        >>> info = ModelInfo(("a", "b"), ((0, 0, 0), (255, 255, 255)), depth=5, working_size=(256, 192))
        >>> format_shape(default_profile(info).max)
        '4x3x192x256'
    """
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    channels = info.in_channels
    if info.working_size is not None:
        # Every frame reaches the network at this one size: a profile fixed there lets TensorRT pick tactics for
        # exactly that shape (a range would make it keep kernels valid down to the smallest side).
        width, height = info.working_size
        side_h, side_w = _legal_at_least(height, info), _legal_at_least(width, info)
        return ShapeProfile((1, channels, side_h, side_w), (1, channels, side_h, side_w),
                            (max_batch, channels, side_h, side_w))
    smallest = _legal_at_least(1, info)
    opt = _legal_at_least(DEFAULT_OPT_SIDE, info)
    largest = _legal_at_least(DEFAULT_MAX_SIDE, info)
    return ShapeProfile((1, channels, smallest, smallest), (1, channels, opt, opt),
                        (max_batch, channels, largest, largest))


def resolve_profile(info: ModelInfo, min_shape: Shape | None = None, opt_shape: Shape | None = None,
                    max_shape: Shape | None = None) -> ShapeProfile:
    """Complete a partly given profile from :func:`default_profile` and check it against the model.

    A missing opt is the default opt clamped into [min, max]; a missing min or max
    widens the default to include the given shapes.

    Raises:
        ValueError: when the result is not a valid profile for the model.

    Example:
        >>> from unetrt.model_info import ModelInfo
        >>> info = ModelInfo(("a", "b"), ((0, 0, 0), (255, 255, 255)), depth=5, working_size=(256, 192))
        >>> format_shape(resolve_profile(info, max_shape=(8, 3, 384, 512)).max)
        '8x3x384x512'
    """
    for name, shape in (("min", min_shape), ("opt", opt_shape), ("max", max_shape)):
        # Each given shape alone: completed from the defaults first, one of another count read as a count that
        # varies among min, opt and max, which names no fix.
        if shape is not None and shape[1] != info.in_channels:
            raise ValueError(f"{name} shape {format_shape(shape)} has {shape[1]} channels but the model takes "
                             f"{info.in_channels}; use shapes like 1x{info.in_channels}xHxW")
    default = default_profile(info)
    low = min_shape or default.min
    high = max_shape or default.max
    if opt_shape is None:
        opt = _as_shape([min(max(d, lo), hi) for d, lo, hi in zip(default.opt, low, high)], "opt")
    else:
        opt = opt_shape
    if min_shape is None:
        low = _as_shape([min(a, b) for a, b in zip(default.min, opt)], "min")
    if max_shape is None:
        high = _as_shape([max(a, b) for a, b in zip(default.max, opt)], "max")
    profile = ShapeProfile(low, opt, high)
    profile.check_model(info)
    return profile


@dataclass(frozen=True)
class GpuIdentity:
    """A GPU as far as TensorRT engine compatibility is concerned.

    Every Jetson Orin module reports the name "Orin" and compute capability 8.7; the multiprocessor count tells an
    AGX Orin (16) from an Orin NX (8) or Nano (4 to 8), whose engines TensorRT times separately.

    Attributes:
        name: the device name the driver reports.
        compute_capability: (major, minor).
        multiprocessors: CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT; None in metadata written before it was recorded.

    Example:
        >>> GpuIdentity("Orin", (8, 7)).sm
        'sm_87'
    """

    name: str
    compute_capability: tuple[int, int]
    multiprocessors: int | None = None

    @property
    def sm(self) -> str:
        """The compute capability as CUDA writes it, e.g. 'sm_87'."""
        return f"sm_{self.compute_capability[0]}{self.compute_capability[1]}"

    def describe(self) -> str:
        """'Orin (sm_87, 8 SMs)'; without the count when it is not known.

        Example:
            >>> GpuIdentity("Orin", (8, 7), 8).describe()
            'Orin (sm_87, 8 SMs)'
        """
        count = "" if self.multiprocessors is None else f", {self.multiprocessors} SMs"
        return f"{self.name} ({self.sm}{count})"

    def same_model(self, other: GpuIdentity) -> bool:
        """Whether two GPUs are the same model (name, architecture and, where both are known, multiprocessors)."""
        known = self.multiprocessors is not None and other.multiprocessors is not None
        return ((self.name, self.compute_capability) == (other.name, other.compute_capability)
                and (not known or self.multiprocessors == other.multiprocessors))


@dataclass(frozen=True)
class PlanMetadata:
    """Everything recorded next to a plan (``unet.plan.json``).

    Attributes:
        tensorrt_version: ``tensorrt.__version__`` of the builder.
        gpu: the GPU it was built on.
        input_name, output_name: the engine's I/O tensor names.
        input_dtype, output_dtype: their numpy dtype names ('float32', 'float16').
        profile: the input's optimisation profile.
        precision: 'int8' (a QDQ graph; FP16 fallback), 'fp16' or 'fp32'.
        strongly_typed: whether the network was built strongly typed (types taken from the ONNX graph).
        source: the ONNX file it was built from, as given to unet-build.
        info: the model description.
        build_options: builder settings worth repeating on a rebuild (workspace, opt level).
        dla_core: the DLA core the engine's layers run on (GPU fallback for the rest), None: the GPU alone.
        source_sha256: SHA-256 of the ONNX file it was built from (the engine cache's key checks it).
        plan_sha256: SHA-256 of the plan's bytes, written before the plan: a plan that does not match is
            a torn or foreign file.
    """

    tensorrt_version: str
    gpu: GpuIdentity
    input_name: str
    output_name: str
    input_dtype: str
    output_dtype: str
    profile: ShapeProfile
    precision: str
    strongly_typed: bool
    source: str
    info: ModelInfo
    build_options: dict[str, Any] = field(default_factory=dict)
    dla_core: int | None = None
    source_sha256: str | None = None
    plan_sha256: str | None = None

    def __post_init__(self) -> None:
        if self.precision not in ("int8", "fp16", "fp32"):
            raise ValueError(f"precision must be 'int8', 'fp16' or 'fp32', got {self.precision!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with the format version."""
        return {
            "format_version": PLAN_FORMAT_VERSION,
            "tensorrt_version": self.tensorrt_version,
            "gpu": {"name": self.gpu.name, "compute_capability": list(self.gpu.compute_capability),
                    "multiprocessors": self.gpu.multiprocessors},
            "inputs": [{"name": self.input_name, "dtype": self.input_dtype}],
            "outputs": [{"name": self.output_name, "dtype": self.output_dtype}],
            "profile": self.profile.to_dict(),
            "precision": self.precision,
            "strongly_typed": self.strongly_typed,
            "source": self.source,
            "build_options": dict(self.build_options),
            "dla_core": self.dla_core,
            "source_sha256": self.source_sha256,
            "plan_sha256": self.plan_sha256,
            "model": self.info.to_dict(),
        }

    def to_json(self) -> str:
        """The document written next to the plan."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlanMetadata:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: when keys are missing or the format is newer than this unetrt.
        """
        version = data.get("format_version", PLAN_FORMAT_VERSION)
        if not isinstance(version, int) or version > PLAN_FORMAT_VERSION:
            raise ValueError(
                f"plan metadata format {version} is newer than this unetrt understands ({PLAN_FORMAT_VERSION}); "
                "upgrade unetrt"
            )
        try:
            gpu = data["gpu"]
            major, minor = (int(v) for v in gpu["compute_capability"])
            multiprocessors = gpu.get("multiprocessors")
            inputs, outputs = list(data["inputs"]), list(data["outputs"])
            if len(inputs) != 1 or len(outputs) != 1:
                raise ValueError(
                    f"plan metadata must list exactly one input and one output, got {len(inputs)} and {len(outputs)}"
                )
            inp, out = inputs[0], outputs[0]
            return cls(
                tensorrt_version=str(data["tensorrt_version"]),
                gpu=GpuIdentity(str(gpu["name"]), (major, minor),
                                None if multiprocessors is None else int(multiprocessors)),
                input_name=str(inp["name"]), output_name=str(out["name"]),
                input_dtype=str(inp["dtype"]), output_dtype=str(out["dtype"]),
                profile=ShapeProfile.from_dict(data["profile"]),
                precision=str(data["precision"]),
                strongly_typed=bool(data["strongly_typed"]),
                source=str(data["source"]),
                info=decode_description(data["model"]),
                build_options=dict(data.get("build_options", {})),
                dla_core=None if data.get("dla_core") is None else int(data["dla_core"]),
                source_sha256=_optional_text(data.get("source_sha256")),
                plan_sha256=_optional_text(data.get("plan_sha256")),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"plan metadata is incomplete ({exc!r}); rebuild the engine with unet-build") from exc

    def source_file(self, plan_path: str | Path) -> Path | None:
        """The model file this plan was built from as it is on this machine: the recorded one where it is recorded
        by its absolute path and is there (named by the plan's folder where it lies beside the plan), else the file
        of its name beside the plan (a plan copied from the machine that built it comes with its model); None:
        neither.

        ``unet-build`` records the model's absolute path. Plans built before 2026-12-07 record it as typed: a
        relative path names a file of the folder the build ran in, which cannot be told, and from another folder the
        file of that name there is another model (robot b's ``mine.onnx`` for robot a's plan), so such a path is
        only taken as a name to look for beside the plan.

        Example:
            >>> meta.source_file("jetson/mine.plan")  # doctest: +SKIP
            PosixPath('jetson/mine.onnx')
        """
        recorded = Path(self.source)
        # PureWindowsPath splits at both separators: the plan may come from a Windows desktop.
        beside = Path(plan_path).parent / PureWindowsPath(self.source).name
        if recorded.is_absolute() and recorded.is_file():
            # Named as the plan was, where it is that file: lines about 'mine.plan' name 'mine.onnx', not /home/...
            return beside if beside.is_file() and beside.samefile(recorded) else recorded
        return beside if beside.is_file() else None

    def rebuild_command(self, plan_path: str | Path) -> str:
        """The ``unet-build`` command line that builds this plan again on the current machine.

        A plan copied from the machine that built it (a desktop's, onto a Jetson) names that machine's path of its
        model: where no file is there, the command names the model of that name beside the plan, copied with it.

        Example:
            >>> meta.rebuild_command("jetson/mine.plan").split()[:4]  # doctest: +SKIP
            ['unet-build', 'jetson/mine.onnx', '-o', 'jetson/mine.plan']
        """
        found = self.source_file(plan_path)
        words = ["unet-build", self.source if found is None else str(found), "-o", str(plan_path),
                 "--min-shape", format_shape(self.profile.min), "--opt-shape", format_shape(self.profile.opt),
                 "--max-shape", format_shape(self.profile.max)]
        if self.precision in ("fp16", "int8"):
            words += ["--precision", self.precision]
        if self.build_options.get("workspace_mib") is not None:
            words += ["--workspace", str(self.build_options["workspace_mib"])]
        if self.build_options.get("opt_level") is not None:
            words += ["--opt-level", str(self.build_options["opt_level"])]
        if self.dla_core is not None:
            words += ["--dla-core", str(self.dla_core)]
        return shlex.join(words)


def _optional_text(value: Any) -> str | None:
    return None if value is None else str(value)


def metadata_path(plan_path: str | Path) -> Path:
    """``unet.plan`` -> ``unet.plan.json``."""
    plan_path = Path(plan_path)
    return plan_path.with_name(plan_path.name + METADATA_SUFFIX)


def write_plan_metadata(plan_path: str | Path, metadata: PlanMetadata) -> Path:
    """Write the metadata next to the plan, atomically (a temporary file renamed into place); returns its path."""
    path = metadata_path(plan_path)
    replace_file(path, (metadata.to_json() + "\n").encode("utf-8"))
    return path


def read_plan_metadata(plan_path: str | Path) -> PlanMetadata:
    """Read the metadata written next to a plan.

    Raises:
        FileNotFoundError: when the JSON file is missing (the message says how to recreate it).
        ValueError: when it is not valid plan metadata (not UTF-8 JSON, nested too deep to read, fields wrong).
    """
    path = metadata_path(plan_path)
    if not path.is_file():
        beside = Path(plan_path).with_suffix(".onnx")
        model = shlex.quote(str(beside)) if beside.is_file() else "MODEL.onnx"
        raise FileNotFoundError(
            f"{str(path)!r} is missing: a plan needs the metadata unet-build writes beside it; "
            f"rebuild with: unet-build {model} -o {shlex.quote(str(plan_path))}"
        )
    try:
        data = read_json(path, "plan metadata")
    except ValueError as exc:
        raise ValueError(f"{exc} (or rebuild the engine with unet-build, which writes it anew)") from None
    if not isinstance(data, dict):
        raise ValueError(f"{str(path)!r} must hold a JSON object; rebuild the engine with unet-build")
    return PlanMetadata.from_dict(data)


def check_compatibility(metadata: PlanMetadata, tensorrt_version: str, gpu: GpuIdentity,
                        plan_path: str | Path) -> None:
    """Raise unless this TensorRT and GPU can run the plan; warn when only the GPU model differs.

    TensorRT plans deserialise only with the exact TensorRT version that built
    them and contain kernels for one compute capability. GPUs of the same
    compute capability but a different model usually run the plan, but its
    tactics were timed on the other model, so that case is a warning.

    Raises:
        PlanCompatibilityError: naming what the plan was built with, what is here, and the rebuild command.

    Example:
        >>> check_compatibility(meta, "10.3.0", GpuIdentity("Orin", (8, 7)), "unet.plan")  # doctest: +SKIP
    """
    problems = []
    if metadata.tensorrt_version != tensorrt_version:
        problems.append(f"TensorRT {metadata.tensorrt_version} built it, this machine has TensorRT {tensorrt_version}")
    if metadata.gpu.compute_capability != gpu.compute_capability:
        problems.append(f"it was built for {metadata.gpu.describe()}, this GPU is {gpu.describe()}")
    if problems:
        raise PlanCompatibilityError(
            f"cannot run {str(plan_path)!r} here: {'; '.join(problems)}. TensorRT engines only run with the "
            f"TensorRT version and GPU architecture they were built for; rebuild it on this machine with: "
            f"{metadata.rebuild_command(plan_path)}"
        )
    if not metadata.gpu.same_model(gpu):
        warn_caller(
            f"{str(plan_path)!r} was built on {metadata.gpu.describe()} and runs on {gpu.describe()}: same "
            f"architecture, but its kernels were timed on the other GPU; for best speed rebuild with: "
            f"{metadata.rebuild_command(plan_path)}"
        )


def warn_if_model_changed(metadata: PlanMetadata, plan_path: str | Path) -> None:
    """Warn when the model file a plan was built from has changed since (retrained and copied over).

    The plan still runs the network it was built from, which is what was asked for, but a user who retrained and
    copied the new model over expects the new one. The engine cache needs no such check: its key holds the model's
    digest. A plan without a recorded digest (or whose model is nowhere to be found) is not checked.

    Args:
        metadata: the plan's metadata.
        plan_path: the plan, to find its model beside it.

    Example:
        >>> warn_if_model_changed(read_plan_metadata("mine.plan"), "mine.plan")  # doctest: +SKIP
        RuntimeWarning: 'mine.plan' runs the network mine.onnx held when the plan was built; ...
    """
    source = metadata.source_file(plan_path)
    if metadata.source_sha256 is None or source is None:
        return
    try:
        unchanged = file_sha256(source) == metadata.source_sha256
    except OSError:
        return  # a model this process cannot read says nothing about the plan, which runs without it
    if unchanged:
        return
    warn_caller(
        f"{str(plan_path)!r} runs the network {source.name} held when the plan was built; {str(source)!r} has "
        f"changed since (retrained or replaced), so its masks are the old model's; to run the new one rebuild with: "
        f"{metadata.rebuild_command(plan_path)}"
    )
