"""``unet-export``: a ``.pt`` checkpoint to an ONNX model the runtime can run on its own.

The graph takes ``image`` (N, C, H, W float32, already normalised) with dynamic
batch, height and width and returns ``logits``; the model description travels
in the file's metadata props, and the export is checked against PyTorch.

With ``--precision fp16`` (or ``--fp16``) the FP32 model is still written to ``-o`` and checked, and its
FP16 conversion (FP32 inputs, outputs and logit head) is written beside it as
``NAME.fp16.onnx`` and checked against it on ONNX Runtime.

With ``--precision int8`` (or ``--int8``) the FP32 model is calibrated on real frames into a QDQ INT8 model,
``NAME.int8.onnx`` (see :mod:`unetrt.export.quantize`); the command fails, and
removes it, when it scores worse than FP32 on the labelled check frames by more
than 1 point of mean IoU (binary models: 0.005 of the challenge pixel error).

Example:
    unet-export runs/camvid/best.pt -o camvid.onnx --precision fp16   # camvid.onnx and camvid.fp16.onnx
    unet-export runs/camvid/best.pt -o camvid.onnx --precision int8 --calibration camvid/train \
        --check-images camvid/val --check-labels camvid/valannot   # camvid.onnx and camvid.int8.onnx
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import onnx
import torch

from unetrt.bundled import bundled_model_path, is_bundled_name
from unetrt.cli import run_cli
from unetrt.datasets import paired_files
from unetrt.geometry import plan_padding
from unetrt.model_file import INPUT_NAME, OUTPUT_NAME, write_onnx_description
from unetrt.model_info import ModelInfo
from unetrt.paths import check_folder, check_utf8_name
from unetrt.stream.output_path import check_writable_file

from .checkpoint import load_model
from .export_options import build_parser
from .fp16 import compare_fp16, convert_file, fp16_path_for
from .model import UNet

OPSET = 17
TOLERANCE = 1e-4
# The FP16 graph must pick the FP32 graph's class on at least this share of pixels of the check batch.
FP16_MIN_AGREEMENT = 0.99


def export_onnx(model: UNet, info: ModelInfo, path: str | Path, sample_hw: tuple[int, int] | None = None,
                fold_batch_norm: bool = True) -> Path:
    """Write ``model`` as ONNX with dynamic N, H, W and ``info`` in the metadata props.

    Args:
        model: the network (put in eval mode here).
        info: its description.
        path: the .onnx file to write.
        sample_hw: the (height, width) traced; defaults to the working size or 64x64.
        fold_batch_norm: fold each batch norm into the convolution before it (the exporter's constant folding);
            False keeps them as BatchNormalization nodes, so the graph holds the checkpoint's own weights
            (what a graph that stores them as float16 needs, :func:`unetrt.export.compact.compact_onnx`).

    Returns:
        The written path.

    Raises:
        ValueError: when ``onnx.checker`` rejects the graph.
    """
    path = Path(path)
    model = model.eval()
    height, width = sample_hw or _sample_hw(info)
    sample = torch.randn(1, info.in_channels, height, width)
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of torch.export, but it
        # is the one that yields one portable graph with dynamic H and W for every
        # opset >= 17 consumer, TensorRT 10 on JetPack included.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        torch.onnx.export(
            model,
            (sample,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=OPSET,
            dynamic_axes={INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                          OUTPUT_NAME: {0: "batch", 2: "out_height", 3: "out_width"}},
            dynamo=False,
            do_constant_folding=fold_batch_norm,
        )
    proto = onnx.load(str(path))
    write_onnx_description(proto, info)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ValueError(f"onnx.checker rejected the exported graph: {exc}") from exc
    onnx.save(proto, str(path))
    return path


def _sample_hw(info: ModelInfo) -> tuple[int, int]:
    if info.working_size is not None:
        width, height = info.working_size
    else:
        height = width = 64
    return (plan_padding(height, info.padding, info.depth).network_input,
            plan_padding(width, info.padding, info.depth).network_input)


def max_abs_difference(model: UNet, info: ModelInfo, onnx_path: str | Path, batch: np.ndarray) -> float:
    """Largest absolute logit difference between PyTorch and ONNX Runtime on ``batch``."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (ort_logits,) = session.run([OUTPUT_NAME], {INPUT_NAME: batch.astype(np.float32)})
    with torch.inference_mode():
        torch_logits = model.eval()(torch.from_numpy(batch)).numpy()
    return float(np.abs(torch_logits - ort_logits).max())


def export_int8(output: Path, args: argparse.Namespace) -> tuple[Path, str]:
    """Calibrate, write ``NAME.int8.onnx`` and check it against the FP32 model; remove it and raise when worse.

    Args:
        output: the FP32 model; the INT8 one is written beside it.
        args: the command's arguments (the INT8 group).

    Returns:
        The INT8 model, and how it was made and checked (for the caller to report once the model is in place).

    Raises:
        ValueError: on missing INT8 arguments, a frame that cannot be read, or when the INT8 model loses more than
            the allowed accuracy.
        FileNotFoundError: when a folder does not exist.
    """
    from .quantize import (
        DEFAULT_METHOD,
        calibration_batches,
        calibration_frames,
        check_accuracy,
        int8_path,
        quantize_onnx,
    )

    frames = calibration_frames(args.calibration, args.calibration_count, args.calibration_stems)
    batches = calibration_batches(output, frames)
    method = args.calibration_method or DEFAULT_METHOD
    quantized = quantize_onnx(output, int8_path(output), batches, method, args.int8_target)
    checks = check_accuracy(output, quantized, args.check_images or args.calibration, args.check_labels,
                            args.check_stems)
    verdicts = "; ".join(check.describe() for check in checks)
    if not all(check.passed for check in checks):
        quantized.unlink()
        raise ValueError(f"the INT8 model loses too much accuracy: {verdicts}; nothing written (try another "
                         "--calibration-method or more --calibration-count, or export without --precision int8)")
    return quantized, f" ({method} calibration on {len(batches)} frames, for {args.int8_target}); {verdicts}"


def _check_int8_arguments(args: argparse.Namespace) -> None:
    """Refuse INT8 arguments that cannot work before the export, whose files they are read after.

    Raises:
        ValueError: on INT8 options without --precision int8, a missing or unknown one, a frame or label that is
            not a readable image, check folders that do not pair up, or check stems they lack.
        FileNotFoundError: when a folder does not exist.
    """
    if not args.int8:
        options = ("calibration", "calibration_count", "calibration_stems", "calibration_method", "int8_target",
                   "check_images", "check_labels", "check_stems")
        given = [f"--{name.replace('_', '-')}" for name in options if getattr(args, name) is not None]
        if given:
            raise ValueError(f"{', '.join(given)} only apply with --precision int8")
        return
    if args.calibration is None or args.check_labels is None:
        raise ValueError("--precision int8 needs --calibration DIR (frames to calibrate on) and --check-labels DIR "
                         "(labels of --check-images, default the calibration frames) to check the INT8 model's "
                         "accuracy")
    if args.calibration_count <= 0:
        raise ValueError(f"--calibration-count must be positive, got {args.calibration_count}")
    from .quantize import CALIBRATION_METHODS, TARGETS, calibration_frames

    if args.int8_target not in TARGETS:
        raise ValueError(f"--int8-target must be one of {', '.join(TARGETS)}, got {args.int8_target!r}")
    if args.calibration_method is not None and args.calibration_method not in CALIBRATION_METHODS:
        raise ValueError(f"--calibration-method must be one of {', '.join(CALIBRATION_METHODS)}, "
                         f"got {args.calibration_method!r}")
    # The files are read after the FP32 export and its check: refused now, in seconds rather than minutes.
    frames = calibration_frames(args.calibration, args.calibration_count, args.calibration_stems)
    for flag, folder in (("--check-images", args.check_images), ("--check-labels", args.check_labels)):
        if folder is not None and not Path(folder).is_dir():
            raise FileNotFoundError(f"{flag} folder {str(folder)!r} does not exist")
    images = args.check_images or args.calibration
    pairs = paired_files(images, args.check_labels)
    if args.check_stems is not None:
        missing = set(args.check_stems) - {image.stem for image, _ in pairs}
        if missing:
            raise ValueError(f"--check-stems names files that are not in {str(images)!r}: {', '.join(sorted(missing))}")
        pairs = [pair for pair in pairs if pair[0].stem in set(args.check_stems)]
    for what, files in (("calibration frame", frames), ("check image", [image for image, _ in pairs]),
                        ("check label", [label for _, label in pairs])):
        for path in files:
            _check_image_file(path, what)


def _check_image_file(path: Path, what: str) -> None:
    """Refuse a file whose header OpenCV cannot decode (a damaged file, another kind of file under an image name).

    Raises:
        ValueError: naming the file and the fix.
    """
    # The folders' files are listed by list_images, which has refused names that are not UTF-8 (OpenCV crashes).
    if not cv2.haveImageReader(str(path)):
        raise ValueError(f"cannot read {what} {str(path)!r}: it is not an image OpenCV can decode; replace it with a "
                         "readable image or remove it from the folder")


def _outputs(output: Path, args: argparse.Namespace) -> list[Path]:
    """The files the export writes: the FP32 model, and beside it the FP16 and INT8 models asked for."""
    outputs = [output]
    if args.fp16:
        outputs.append(fp16_path_for(output))
    if args.int8:
        from .quantize import int8_path

        outputs.append(int8_path(output))
    return outputs


def export_command(args: argparse.Namespace) -> None:
    """Export, then compare PyTorch and ONNX Runtime on a random batch; raise above the tolerance.

    Every file is written into a temporary folder beside ``--output`` and moved into place (a rename, atomic within a
    file system) only once all of them have passed their checks: a failed export leaves the files already there as
    they were, and no half-written one.

    Raises:
        ValueError: on an output that cannot be written, bad INT8 arguments, a checkpoint that cannot be read, or an
            export that fails its checks.
        FileNotFoundError: when the checkpoint or a folder does not exist.
    """
    output = Path(args.output)
    if output.suffix != ".onnx":
        raise ValueError(f"output must end in .onnx, got {str(output)!r}")
    check_utf8_name(output, "output")
    check_folder(output.parent, "output folder")
    outputs = _outputs(output, args)
    for target in outputs:
        check_writable_file(target, f"output {str(target)!r}")
    _check_int8_arguments(args)
    checkpoint = args.model
    if is_bundled_name(checkpoint) and not Path(checkpoint).exists():
        # A bundled model's name, as every other command takes it: the checkpoint its files were exported from.
        checkpoint = bundled_model_path(checkpoint, ".pt")
    model, info = load_model(checkpoint)
    if args.working_size is not None:
        info = dataclasses.replace(info, working_size=args.working_size)
    with tempfile.TemporaryDirectory(prefix=".unet-export-", dir=output.parent) as staging:
        reports = _export_checked(model, info, Path(staging) / output.name, args)
        for target in outputs:
            os.replace(Path(staging) / target.name, target)
    for written, report in reports:
        print(f"wrote {output.with_name(written.name)}{report}")


def _export_checked(model: UNet, info: ModelInfo, output: Path,
                    args: argparse.Namespace) -> list[tuple[Path, str]]:
    """Write the FP32 model to ``output`` and the other precisions asked for beside it, checking each.

    Returns:
        Each file written, with how it was checked.

    Raises:
        ValueError: when a model fails its check.
    """
    export_onnx(model, info, output)
    height, width = _sample_hw(info)
    rng = np.random.default_rng(args.seed)
    batch = rng.standard_normal((2, info.in_channels, height, width)).astype(np.float32)
    diff = max_abs_difference(model, info, output, batch)
    if diff > TOLERANCE:
        raise ValueError(f"ONNX Runtime differs from PyTorch by {diff:.2e} > {TOLERANCE:.0e}; the export is wrong")
    reports = [(output, f" (opset {OPSET}); max |PyTorch - ONNX Runtime| on a random 2x{info.in_channels}x"
                        f"{height}x{width} batch: {diff:.2e}")]
    if args.fp16:
        fp16_output = convert_file(output)
        agreement = compare_fp16(output, fp16_output, batch)
        if not agreement.pixel_agreement >= FP16_MIN_AGREEMENT:
            raise ValueError(
                f"the FP16 graph agrees with FP32 on only {100 * agreement.pixel_agreement:.2f}% of pixels "
                f"(< {100 * FP16_MIN_AGREEMENT:.0f}%); use the FP32 model"
            )
        reports.append((fp16_output, f"; on the same batch max |FP32 - FP16 logits|: "
                                     f"{agreement.max_abs_logit_diff:.2e} (largest |FP32 logit| "
                                     f"{agreement.max_abs_logit:.2f}), classes agree on "
                                     f"{100 * agreement.pixel_agreement:.2f}% of pixels"))
    if args.int8:
        reports.append(export_int8(output, args))
    return reports


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``unet-export``; returns the exit code."""
    args = build_parser().parse_args(argv)
    return run_cli(lambda: export_command(args))


if __name__ == "__main__":
    sys.exit(main())
