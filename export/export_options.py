"""The command line of ``unet-export``, apart from the export so that it imports without torch and onnx:
``unet-export --help`` answers on an install of the runtime alone (see :mod:`unetrt.commands`), where the help is
what says torch is needed.
"""

from __future__ import annotations

import argparse

from unetrt.cli import parse_seed
from unetrt.cli_options import ALIASES_EPILOG, CommandParser, add_aliases, add_model, add_output, add_size
from unetrt.evaluate import parse_stems

DEFAULT_CALIBRATION_COUNT = 32  # frames; --calibration-count's help says when fewer do
DEFAULT_INT8_TARGET = "cpu"


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``unet-export``."""
    parser = CommandParser(prog="unet-export", description="Export a unetrt checkpoint to ONNX.",
                           epilog=ALIASES_EPILOG)
    add_model(parser, positional="CHECKPOINT", metavar="CHECKPOINT",
              help=".pt checkpoint written by unet-train, or a bundled model's name (camvid, isbi)")
    add_output(parser, required=True, metavar="MODEL.onnx", help="the .onnx file to write")
    add_size(parser, help="the working size the model states (frames are resized to it before inference), in "
                          "place of the checkpoint's training size; INT8 calibration and checks run at it")
    parser.add_argument("--seed", type=parse_seed, default=0, help="seed of the random check batch")
    parser.add_argument("--precision", type=parse_export_precisions, default=(), metavar="fp16[,int8]",
                        help="precisions written beside the FP32 model (always written): fp16 (NAME.fp16.onnx: FP16 "
                             "body, FP32 inputs/outputs/head), int8 (NAME.int8.onnx, see INT8 below); "
                             "comma-separated (default: FP32 only)")
    add_aliases(parser, ["--fp16"], "fp16", action="store_true")
    int8 = parser.add_argument_group("INT8 (--precision int8: QDQ, calibrated; needs --calibration and "
                                     "--check-labels)")
    add_aliases(int8, ["--int8"], "int8", action="store_true")
    int8.add_argument("--calibration", metavar="DIR", help="folder of real frames to calibrate on")
    int8.add_argument("--calibration-count", type=int, default=None, metavar="N",
                      help="frames taken evenly from the folder (default 32; about 2 million network pixels in "
                           "all is enough: 8 for 512x512 frames, whose histograms take ~300 MB each)")
    int8.add_argument("--calibration-stems", type=parse_stems, default=None,
                      help="calibrate only on these file stems, e.g. 00-19 (keeps held-out frames unseen)")
    int8.add_argument("--calibration-method", default=None, help="percentile (default), entropy or minmax")
    int8.add_argument("--int8-target", default=None,
                      help="cpu (default: uint8 activations, for OpenVINO and ONNX Runtime) or tensorrt (symmetric "
                           "int8 activations, for unet-build --precision int8)")
    int8.add_argument("--check-images", metavar="DIR",
                      help="labelled frames the INT8 model is scored on against FP32 (default: --calibration)")
    int8.add_argument("--check-labels", metavar="DIR", help="their labels")
    int8.add_argument("--check-stems", type=parse_stems, default=None, help="score only these stems, e.g. 20-23")
    parser.add_finisher(_apply_precisions)
    return parser


EXPORT_PRECISIONS = ("fp32", "fp16", "int8")


def parse_export_precisions(text: str) -> tuple[str, ...]:
    """``--precision fp16,int8`` -> ('fp16', 'int8'): the models written besides FP32.

    Raises:
        argparse.ArgumentTypeError: on a precision that unet-export does not write.

    Example:
        >>> parse_export_precisions("fp16,int8")
        ('fp16', 'int8')
    """
    names = tuple(name.strip().lower() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in EXPORT_PRECISIONS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"invalid precision {text!r} (choose from {', '.join(EXPORT_PRECISIONS)}, "
                                         "comma-separated)")
    return names


def _apply_precisions(args: argparse.Namespace) -> None:
    """``--precision`` sets the same switches as the older ``--fp16`` and ``--int8``. The INT8 options take their
    defaults only with INT8, so that one given without it is refused rather than ignored."""
    args.fp16 = bool(getattr(args, "fp16", False)) or "fp16" in args.precision
    args.int8 = bool(getattr(args, "int8", False)) or "int8" in args.precision
    if args.int8:
        args.calibration_count = DEFAULT_CALIBRATION_COUNT if args.calibration_count is None else args.calibration_count
        args.int8_target = args.int8_target or DEFAULT_INT8_TARGET
