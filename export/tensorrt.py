"""``unet-build``: an ONNX U-Net to a TensorRT engine (``.plan``) with its metadata, optionally for Triton.

A thin command over :mod:`unetrt.plan_build` (the builder core, which the runtime's engine cache uses too and
which needs no torch); see there how FP16 and INT8 are built per TensorRT version, the workspace cap on
integrated GPUs and DLA.

The plan is written with ``PLAN.json`` beside it (TensorRT version, GPU, I/O,
profile, DLA core, model description); the TensorRT backend checks it before loading.

Example:
    unet-build camvid.onnx -o camvid.plan --precision fp16 --timing-cache trt.cache
    unet-build camvid.onnx --precision fp16 --triton-repo models --name camvid
    unet-build camvid.int8.onnx -o camvid.int8.plan --precision int8
    unet-build camvid.onnx -o camvid.dla.plan --precision fp16 --dla-core 0
    unet-build camvid -o camvid.dla.plan --precision fp16 --dla-core 0    # the bundled model
    unet-build --onnx=camvid.onnx --saveEngine=camvid.plan --fp16 --optShapes=image:1x3x192x256   # trtexec's flags
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from unetrt.backends import choose_model
from unetrt.backends.tensorrt import require_tensorrt
from unetrt.bundled import is_bundled_name
from unetrt.cli import StopOnSigterm, raise_terminated, run_cli
from unetrt.cli_options import (
    ALIASES_EPILOG,
    CommandParser,
    add_aliases,
    add_model,
    add_output,
    add_precision,
    add_size,
    trtexec_pool_mib,
    trtexec_shape,
    workspace_mib,
)
from unetrt.cuda import require_pycuda
from unetrt.model_file import read_model_file
from unetrt.paths import check_folder
from unetrt.plan_build import (
    MAX_OPT_LEVEL,
    BuildOptions,
    asymmetric_quantizers,
    build_engine,
    check_int8_request,
    configure_precision,
    describe_parser_errors,
    fold_int32_dequantize,
    has_qdq,
)
from unetrt.plan_metadata import Shape, format_shape, parse_shape

from .triton import check_model_name, model_plan_path, write_triton_repository

# The builder core lives in unetrt.plan_build; these names stay importable from here for unet-build's users.
__all__ = ["BuildOptions", "asymmetric_quantizers", "build_engine", "build_parser", "check_int8_request",
           "configure_precision", "describe_parser_errors", "fold_int32_dequantize", "has_qdq", "main",
           "shape_argument"]


def shape_argument(text: str) -> Shape:
    """argparse type for ``NxCxHxW``."""
    try:
        return parse_shape(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``unet-build`` (trtexec-like flags)."""
    parser = CommandParser(prog="unet-build", description="Build a TensorRT engine from a unetrt ONNX model.",
                           epilog="Shapes here are tensor shapes NxCxHxW (batch, channels, height, width, as ONNX "
                                  "and TensorRT order them), e.g. 1x3x192x256; --size, like the other unet "
                                  "commands, takes a frame size WxH, e.g. 256x192. trtexec's spellings work too: "
                                  "--onnx, --saveEngine, --minShapes/--optShapes/--maxShapes=image:NxCxHxW, "
                                  "--timingCacheFile, --fp16, --int8, --memPoolSize=workspace:SIZE, "
                                  "--builderOptimizationLevel, --useDLACore. " + ALIASES_EPILOG)
    add_model(parser, positional="ONNX", metavar="ONNX", aliases=("--onnx",),
              help=".onnx file written by unet-export (FP32, NAME.fp16.onnx or NAME.int8.onnx), or a bundled "
                   "model's name (camvid: its ONNX file for the precision asked)")
    add_output(parser, aliases=("--saveEngine",), metavar="PLAN",
               help="the .plan file to write (PLAN.json is written beside it); optional with --triton-repo")
    add_precision(parser, choices=BUILD_PRECISIONS, default="fp32",
                  help="fp16: FP16 kernels (inputs, outputs and head stay FP32); int8: INT8 kernels from a QDQ "
                       "model in TensorRT's layout (unet-export --precision int8 --int8-target tensorrt: "
                       "NAME.int8.onnx), FP16 fallback")
    add_aliases(parser, ["--fp16"], "fp16", action="store_true")
    add_aliases(parser, ["--int8"], "int8", action="store_true")
    add_size(parser, help="the working size the profile is tuned for, in place of the model's own (the "
                          "optimisation shape is 1xCxHxW at it)")
    parser.add_argument("--min-shape", type=shape_argument, help="smallest input NxCxHxW (default: from the model)")
    parser.add_argument("--opt-shape", type=shape_argument,
                        help="input NxCxHxW to tune for (default: 1xC at the working size)")
    parser.add_argument("--max-shape", type=shape_argument, help="largest input NxCxHxW (default: from the model)")
    for flag, dest in (("--minShapes", "min_shape"), ("--optShapes", "opt_shape"), ("--maxShapes", "max_shape")):
        add_aliases(parser, [flag], dest, type=trtexec_shape)
    parser.add_argument("--workspace", type=workspace_mib, metavar="MIB",
                        help="builder workspace limit in MiB (default: TensorRT's on a discrete GPU; on an "
                             "integrated one such as a Jetson, the smaller of 1024 and a quarter of its memory)")
    add_aliases(parser, ["--memPoolSize"], "workspace", type=trtexec_pool_mib)
    parser.add_argument("--timing-cache", type=Path, metavar="FILE", help="read and update this timing cache")
    add_aliases(parser, ["--timingCacheFile"], "timing_cache", type=Path)
    parser.add_argument("--opt-level", type=int, choices=range(MAX_OPT_LEVEL + 1), metavar="0-5",
                        help="builder optimisation level (TensorRT default 3)")
    add_aliases(parser, ["--builderOptimizationLevel"], "opt_level", type=int, choices=range(MAX_OPT_LEVEL + 1))
    parser.add_argument("--dla-core", type=int, metavar="N",
                        help="run the layers a DLA supports on DLA core N (Jetson Orin AGX/NX: 0 or 1), the rest on "
                             "the GPU; needs --precision fp16 or int8")
    add_aliases(parser, ["--useDLACore"], "dla_core", type=int)
    parser.add_finisher(_apply_precision)
    parser.add_argument("--verbose", action="store_true", help="TensorRT's verbose log")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--triton-repo", type=Path, metavar="DIR", help="also write a Triton model repository here")
    parser.add_argument("--name", help="Triton model name (default: the model's name)")
    parser.add_argument("--instances", type=int, default=1, help="Triton engine instances per GPU (default 1)")
    parser.add_argument("--max-queue-delay-us", type=int, default=100,
                        help="Triton dynamic-batching delay in microseconds (default 100)")
    return parser


BUILD_PRECISIONS = ("fp32", "fp16", "int8")


def _apply_precision(args: argparse.Namespace) -> None:
    """``--precision`` sets the switches trtexec's ``--fp16`` and ``--int8`` set (both may be given, as there)."""
    args.fp16 = bool(getattr(args, "fp16", False)) or args.precision == "fp16"
    args.int8 = bool(getattr(args, "int8", False)) or args.precision == "int8"
    # trtexec's --int8 --fp16 is INT8 with FP16 fallback, which an INT8 build here is (the API refuses both).
    args.fp16 = args.fp16 and not args.int8


def build_command(args: argparse.Namespace) -> None:
    """Check TensorRT first, then the arguments, then build and write the plan (and the Triton repository)."""
    require_tensorrt()
    require_pycuda()
    if args.output is None and args.triton_repo is None:
        raise ValueError("give -o PLAN, --triton-repo DIR, or both")
    if is_bundled_name(args.model):
        # As every other command takes it (the model a Jetson has without an export of its own): the bundled ONNX file
        # the engine cache builds that precision from. It was refused as "not an ONNX model".
        precision = "int8" if args.int8 else "fp16" if args.fp16 else "fp32"
        args.model = choose_model(args.model, "tensorrt", precision).path
    options = BuildOptions(fp16=args.fp16, int8=args.int8, min_shape=args.min_shape, opt_shape=args.opt_shape,
                           max_shape=args.max_shape, workspace_mib=args.workspace, timing_cache=args.timing_cache,
                           opt_level=args.opt_level, dla_core=args.dla_core, working_size=args.working_size,
                           verbose=args.verbose,
                           progress=not args.no_progress)
    if args.instances < 1 or args.max_queue_delay_us < 0:
        raise ValueError(f"--instances must be >= 1 and --max-queue-delay-us >= 0, got {args.instances} and "
                         f"{args.max_queue_delay_us}")
    name = args.name
    if args.triton_repo is not None and name is not None:
        check_model_name(name)
    if args.output is not None:
        plan = Path(args.output)
    else:
        name = name or read_model_file(args.model).info.name
        plan = model_plan_path(args.triton_repo, name)
        plan.parent.mkdir(parents=True, exist_ok=True)
    if plan.suffix not in (".plan", ".engine"):
        raise ValueError(f"output must end in .plan or .engine, got {str(plan)!r}")
    check_folder(plan.parent, "output folder")
    if plan.is_dir():
        raise ValueError(f"output {str(plan)!r} is a folder; give a file name, e.g. {plan / 'model.plan'}")
    if args.timing_cache is not None:
        # Before the build (minutes on a Jetson), as the output's folder: after it, its timings would be lost.
        check_folder(args.timing_cache.parent, "--timing-cache folder")
        if args.timing_cache.is_dir():
            raise ValueError(f"--timing-cache {str(args.timing_cache)!r} is a folder; give a file in it, e.g. "
                             f"{args.timing_cache / 'trt.cache'}")
    metadata = build_engine(args.model, plan, options)
    dla = "" if metadata.dla_core is None else f", DLA core {metadata.dla_core} with GPU fallback"
    print(f"wrote {plan} (TensorRT {metadata.tensorrt_version}, {metadata.gpu.describe()}, {metadata.precision}{dla}, "
          f"profile {format_shape(metadata.profile.min)} .. {format_shape(metadata.profile.max)})")
    if args.triton_repo is not None:
        config = write_triton_repository(args.triton_repo, name or metadata.info.name, plan, metadata,
                                         args.instances, args.max_queue_delay_us)
        print(f"wrote {config}")


def _build_until_sigterm(args: argparse.Namespace) -> None:
    # SIGTERM (a CI job cancelled, systemd) stops the builder at its next step, as Ctrl-C does, leaving no
    # half-written plan behind; by default it would kill the process and leave the plan's temporary file.
    with StopOnSigterm() as sigterm:
        sigterm.stop = raise_terminated
        build_command(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``unet-build``.

    Returns:
        0 on success, 2 with one line on a user error (TensorRT missing, a bad model or option), 130 on Ctrl-C
        and 143 on SIGTERM (the builder stopped, nothing written).
    """
    args = build_parser().parse_args(argv)
    return run_cli(lambda: _build_until_sigterm(args))


if __name__ == "__main__":
    sys.exit(main())

