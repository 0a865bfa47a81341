"""``unet-build``: an ONNX U-Net to a TensorRT engine (``.plan``) with its metadata, optionally for Triton.

FP16 differs between TensorRT versions:

* TensorRT 10 builds the FP32 graph with ``BuilderFlag.FP16`` and pins the
  layers that produce the network output to FP32 (weak typing). Given an FP16
  graph (``unet-export --fp16``) it builds it strongly typed instead.
* TensorRT 11 removed weak typing: every network is strongly typed and takes its
  precision from the graph, so ``--fp16`` converts the FP32 graph with
  :mod:`unetrt.export.fp16` (FP32 inputs, outputs and head) before parsing.

The plan is written with ``PLAN.json`` beside it (TensorRT version, GPU, I/O,
profile, model description); the TensorRT backend checks it before loading.

Example:
    unet-build camvid.onnx -o camvid.plan --fp16 --timing-cache trt.cache
    unet-build camvid.onnx --fp16 --triton-repo models --name camvid
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unetrt.backends.tensorrt import gpu_identity, require_pycuda, require_tensorrt, tensorrt_major
from unetrt.cli import HelpFormatter, run_cli
from unetrt.model_info import METADATA_KEY, ModelInfo
from unetrt.plan_metadata import (
    PlanMetadata,
    Shape,
    format_shape,
    parse_shape,
    resolve_profile,
    write_plan_metadata,
)

from .triton import check_model_name, model_plan_path, write_triton_repository

if TYPE_CHECKING:
    import onnx
    import tensorrt as trt

MAX_OPT_LEVEL = 5


@dataclass(frozen=True)
class BuildOptions:
    """Builder settings of ``unet-build``.

    Attributes:
        fp16: build FP16 kernels (see the module docstring for how per TensorRT version).
        min_shape, opt_shape, max_shape: the input profile; missing ones come from the model's metadata.
        workspace_mib: builder workspace limit in MiB (None: TensorRT's default, the whole GPU memory).
        timing_cache: file to read tactic timings from and write them back to (None: none).
        opt_level: builder optimisation level 0-5 (None: TensorRT's default, 3).
        verbose: TensorRT's verbose log.
        progress: a tqdm bar per build phase where TensorRT offers IProgressMonitor.
    """

    fp16: bool = False
    min_shape: Shape | None = None
    opt_shape: Shape | None = None
    max_shape: Shape | None = None
    workspace_mib: int | None = None
    timing_cache: Path | None = None
    opt_level: int | None = None
    verbose: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.workspace_mib is not None and self.workspace_mib <= 0:
            raise ValueError(f"workspace must be a positive number of MiB, got {self.workspace_mib}")
        if self.opt_level is not None and not 0 <= self.opt_level <= MAX_OPT_LEVEL:
            raise ValueError(f"opt level must be 0-{MAX_OPT_LEVEL}, got {self.opt_level}")


def read_model_info(model: onnx.ModelProto, path: str | Path) -> ModelInfo:
    """The unetrt description stored in an ONNX graph's metadata props.

    Raises:
        ValueError: when the graph has none.
    """
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return ModelInfo.from_json(prop.value)
    raise ValueError(f"ONNX file {str(path)!r} has no {METADATA_KEY!r} metadata; export it with unet-export")


def describe_parser_errors(parser: trt.OnnxParser) -> str:
    """All errors the ONNX parser recorded, one per node: ``node 'name' (Op): description``."""
    parts = []
    for index in range(parser.num_errors):
        error = parser.get_error(index)
        node = error.node_name() or f"#{error.node()}"
        parts.append(f"node {node!r} ({error.node_operator() or 'unknown op'}): {error.desc()}")
    return "; ".join(parts) or "no error recorded"


def _progress_monitor() -> Any:
    import tensorrt as trt
    from tqdm import tqdm

    class TqdmProgressMonitor(trt.IProgressMonitor):
        """One tqdm bar per builder phase, nested as TensorRT nests them."""

        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._bars: dict[str, Any] = {}
            # TensorRT calls the monitor from several builder threads.
            self._lock = threading.Lock()

        def phase_start(self, phase_name: str, parent_phase: str, num_steps: int) -> None:
            with self._lock:
                self._bars[phase_name] = tqdm(total=num_steps, desc=phase_name, position=len(self._bars),
                                              leave=not parent_phase, unit="step", disable=None)

        def step_complete(self, phase_name: str, step: int) -> bool:
            with self._lock:
                bar = self._bars.get(phase_name)
                if bar is not None:
                    bar.update(step + 1 - bar.n)
            return True

        def phase_finish(self, phase_name: str) -> None:
            with self._lock:
                bar = self._bars.pop(phase_name, None)
                if bar is not None:
                    bar.close()

    return TqdmProgressMonitor()


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


def build_engine(onnx_path: str | Path, plan_path: str | Path, options: BuildOptions) -> PlanMetadata:
    """Parse an ONNX U-Net, build a TensorRT plan and write it with its metadata.

    Args:
        onnx_path: a graph written by ``unet-export`` (FP32, or FP16 from ``--fp16``).
        plan_path: the ``.plan`` file to write; ``PLAN.json`` is written beside it.
        options: builder settings.

    Returns:
        The metadata written beside the plan.

    Raises:
        ImportError: when TensorRT or pycuda is not installed.
        FileNotFoundError: when the ONNX file does not exist.
        ValueError: on parse errors (listed per node), a bad profile, or a failed build.

    Example:
        >>> build_engine("camvid.onnx", "camvid.plan", BuildOptions(fp16=True))  # doctest: +SKIP
    """
    require_tensorrt()
    require_pycuda()
    import onnx
    import tensorrt as trt

    from .fp16 import convert_to_fp16, is_fp16_model

    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX model {str(onnx_path)!r} does not exist")
    model = onnx.load(str(onnx_path))
    info = read_model_info(model, onnx_path)
    profile = resolve_profile(info, options.min_shape, options.opt_shape, options.max_shape)
    gpu = gpu_identity(0)
    major = tensorrt_major(trt.__version__)
    graph_fp16 = is_fp16_model(model)
    if options.fp16 and major >= 11 and not graph_fp16:
        # TensorRT 11 has no BuilderFlag.FP16: the precision must be in the graph itself.
        model = convert_to_fp16(model)
        graph_fp16 = True
    # TensorRT 11 networks are always strongly typed (the flag is accepted and ignored); TensorRT 10 builds
    # strongly typed only when the graph carries its own FP16 types, and weakly typed with FP16 flags otherwise.
    strongly_typed = major >= 11 or graph_fp16
    precision = "fp16" if options.fp16 or graph_fp16 else "fp32"

    logger = trt.Logger(trt.Logger.VERBOSE if options.verbose else trt.Logger.WARNING)
    builder = trt.Builder(logger)
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
    if options.workspace_mib is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mib << 20)
    if options.opt_level is not None:
        config.builder_optimization_level = options.opt_level
    if options.fp16 and not strongly_typed:
        # TensorRT 10 weak typing (removed in 11): allow FP16 kernels, but keep the logit head in FP32.
        config.set_flag(trt.BuilderFlag.FP16)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        _pin_outputs_fp32(network)
    if options.progress and hasattr(trt, "IProgressMonitor"):
        # IProgressMonitor is missing from the Python bindings of early TensorRT 10 releases.
        # Kept in a local: TensorRT holds no reference and the monitor must outlive the build.
        monitor = _progress_monitor()
        config.progress_monitor = monitor
    shape_profile = builder.create_optimization_profile()
    shape_profile.set_shape(image.name, trt.Dims4(*profile.min), trt.Dims4(*profile.opt), trt.Dims4(*profile.max))
    config.add_optimization_profile(shape_profile)
    cache = None
    if options.timing_cache is not None:
        data = options.timing_cache.read_bytes() if options.timing_cache.is_file() else b""
        cache = config.create_timing_cache(data)
        config.set_timing_cache(cache, ignore_mismatch=False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ValueError(
            f"TensorRT failed to build an engine from {str(onnx_path)!r} for profile {format_shape(profile.min)} .. "
            f"{format_shape(profile.max)}; rerun with --verbose to see why"
        )
    plan_path.write_bytes(bytes(serialized))
    if cache is not None and options.timing_cache is not None:
        options.timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
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
        source=str(onnx_path),
        info=info,
        build_options={"workspace_mib": options.workspace_mib, "opt_level": options.opt_level},
    )
    write_plan_metadata(plan_path, metadata)
    return metadata


def _numpy_name(dtype: trt.DataType) -> str:
    import numpy as np
    import tensorrt as trt

    return str(np.dtype(trt.nptype(dtype)).name)


def shape_argument(text: str) -> Shape:
    """argparse type for ``NxCxHxW``."""
    try:
        return parse_shape(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``unet-build`` (trtexec-like flags)."""
    parser = argparse.ArgumentParser(prog="unet-build", description="Build a TensorRT engine from a unetrt ONNX model.",
                                     formatter_class=HelpFormatter,
                                     epilog="Shapes here are tensor shapes NxCxHxW (batch, channels, height, width, "
                                            "as ONNX and TensorRT order them), e.g. 1x3x192x256; the other unet "
                                            "commands take frame sizes as WxH, e.g. 256x192.")
    parser.add_argument("onnx", help=".onnx file written by unet-export (FP32, or NAME.fp16.onnx)")
    parser.add_argument("-o", "--output", help="the .plan file to write (PLAN.json is written beside it); "
                        "optional with --triton-repo")
    parser.add_argument("--fp16", action="store_true", help="build FP16 kernels (inputs, outputs and head stay FP32)")
    parser.add_argument("--min-shape", type=shape_argument, help="smallest input NxCxHxW (default: from the model)")
    parser.add_argument("--opt-shape", type=shape_argument, help="input NxCxHxW to tune for (default: working size)")
    parser.add_argument("--max-shape", type=shape_argument, help="largest input NxCxHxW (default: from the model)")
    parser.add_argument("--workspace", type=int, metavar="MIB", help="builder workspace limit in MiB")
    parser.add_argument("--timing-cache", type=Path, metavar="FILE", help="read and update this timing cache")
    parser.add_argument("--opt-level", type=int, choices=range(MAX_OPT_LEVEL + 1), metavar="0-5",
                        help="builder optimisation level (TensorRT default 3)")
    parser.add_argument("--verbose", action="store_true", help="TensorRT's verbose log")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--triton-repo", type=Path, metavar="DIR", help="also write a Triton model repository here")
    parser.add_argument("--name", help="Triton model name (default: the model's name)")
    parser.add_argument("--instances", type=int, default=1, help="Triton engine instances per GPU (default 1)")
    parser.add_argument("--max-queue-delay-us", type=int, default=100,
                        help="Triton dynamic-batching delay in microseconds (default 100)")
    return parser


def build_command(args: argparse.Namespace) -> None:
    """Check TensorRT first, then the arguments, then build and write the plan (and the Triton repository)."""
    require_tensorrt()
    require_pycuda()
    if args.output is None and args.triton_repo is None:
        raise ValueError("give -o PLAN, --triton-repo DIR, or both")
    options = BuildOptions(fp16=args.fp16, min_shape=args.min_shape, opt_shape=args.opt_shape,
                           max_shape=args.max_shape, workspace_mib=args.workspace, timing_cache=args.timing_cache,
                           opt_level=args.opt_level, verbose=args.verbose, progress=not args.no_progress)
    if args.instances < 1 or args.max_queue_delay_us < 0:
        raise ValueError(f"--instances must be >= 1 and --max-queue-delay-us >= 0, got {args.instances} and "
                         f"{args.max_queue_delay_us}")
    name = args.name
    if args.triton_repo is not None and name is not None:
        check_model_name(name)
    if args.output is not None:
        plan = Path(args.output)
    else:
        import onnx

        name = name or read_model_info(onnx.load(args.onnx, load_external_data=False), args.onnx).name
        plan = model_plan_path(args.triton_repo, name)
        plan.parent.mkdir(parents=True, exist_ok=True)
    if plan.suffix not in (".plan", ".engine"):
        raise ValueError(f"output must end in .plan or .engine, got {str(plan)!r}")
    if not plan.parent.is_dir():
        raise FileNotFoundError(f"output folder {str(plan.parent)!r} does not exist")
    metadata = build_engine(args.onnx, plan, options)
    print(f"wrote {plan} (TensorRT {metadata.tensorrt_version}, {metadata.gpu.describe()}, {metadata.precision}, "
          f"profile {format_shape(metadata.profile.min)} .. {format_shape(metadata.profile.max)})")
    if args.triton_repo is not None:
        config = write_triton_repository(args.triton_repo, name or metadata.info.name, plan, metadata,
                                         args.instances, args.max_queue_delay_us)
        print(f"wrote {config}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``unet-build``; returns the exit code (2 with one line when TensorRT is missing)."""
    args = build_parser().parse_args(argv)
    return run_cli(lambda: build_command(args))


if __name__ == "__main__":
    sys.exit(main())

