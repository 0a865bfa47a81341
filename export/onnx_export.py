"""``unet-export``: a ``.pt`` checkpoint to an ONNX model the runtime can run on its own.

The graph takes ``image`` (N, C, H, W float32, already normalised) with dynamic
batch, height and width and returns ``logits``; the model description travels
in the file's metadata props, and the export is checked against PyTorch.

With ``--fp16`` the FP32 model is still written to ``-o`` and checked, and its
FP16 conversion (FP32 inputs, outputs and logit head) is written beside it as
``NAME.fp16.onnx`` and checked against it on ONNX Runtime.

Example:
    unet-export runs/camvid/best.pt -o camvid.onnx --fp16   # camvid.onnx and camvid.fp16.onnx
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import torch

from unetrt.cli import HelpFormatter, run_cli
from unetrt.geometry import plan_padding
from unetrt.model_info import METADATA_KEY, ModelInfo

from .checkpoint import load_model
from .fp16 import compare_fp16, convert_file
from .model import UNet

OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
TOLERANCE = 1e-4
# The FP16 graph must pick the FP32 graph's class on at least this share of pixels of the check batch.
FP16_MIN_AGREEMENT = 0.99


def export_onnx(model: UNet, info: ModelInfo, path: str | Path, sample_hw: tuple[int, int] | None = None) -> Path:
    """Write ``model`` as ONNX with dynamic N, H, W and ``info`` in the metadata props.

    Args:
        model: the network (put in eval mode here).
        info: its description.
        path: the .onnx file to write.
        sample_hw: the (height, width) traced; defaults to the working size or 64x64.

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
        )
    proto = onnx.load(str(path))
    write_metadata(proto, info)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ValueError(f"onnx.checker rejected the exported graph: {exc}") from exc
    onnx.save(proto, str(path))
    return path


def write_metadata(proto: onnx.ModelProto, info: ModelInfo) -> None:
    """Store ``info`` under the ``unetrt`` metadata key (replacing an older entry)."""
    kept = [p for p in proto.metadata_props if p.key != METADATA_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, info.to_json()
    proto.producer_name = "unetrt"


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


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``unet-export``."""
    parser = argparse.ArgumentParser(prog="unet-export", description="Export a unetrt checkpoint to ONNX.",
                                     formatter_class=HelpFormatter)
    parser.add_argument("checkpoint", help=".pt checkpoint written by unet-train")
    parser.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random check batch")
    parser.add_argument("--fp16", action="store_true",
                        help="also write NAME.fp16.onnx (FP16 body, FP32 inputs/outputs/head) beside the output")
    return parser


def export_command(args: argparse.Namespace) -> None:
    """Export, then compare PyTorch and ONNX Runtime on a random batch; raise above the tolerance."""
    output = Path(args.output)
    if output.suffix != ".onnx":
        raise ValueError(f"output must end in .onnx, got {str(output)!r}")
    if not output.parent.is_dir():
        raise FileNotFoundError(f"output folder {str(output.parent)!r} does not exist")
    model, info = load_model(args.checkpoint)
    export_onnx(model, info, output)
    height, width = _sample_hw(info)
    rng = np.random.default_rng(args.seed)
    batch = rng.standard_normal((2, info.in_channels, height, width)).astype(np.float32)
    diff = max_abs_difference(model, info, output, batch)
    print(f"wrote {output} (opset {OPSET}); max |PyTorch - ONNX Runtime| on a random 2x{info.in_channels}x"
          f"{height}x{width} batch: {diff:.2e}")
    if diff > TOLERANCE:
        raise ValueError(f"ONNX Runtime differs from PyTorch by {diff:.2e} > {TOLERANCE:.0e}; the export is wrong")
    if args.fp16:
        fp16_output = convert_file(output)
        agreement = compare_fp16(output, fp16_output, batch)
        print(f"wrote {fp16_output}; on the same batch max |FP32 - FP16 logits|: {agreement.max_abs_logit_diff:.2e}, "
              f"classes agree on {100 * agreement.pixel_agreement:.2f}% of pixels")
        if not agreement.pixel_agreement >= FP16_MIN_AGREEMENT:
            raise ValueError(
                f"the FP16 graph agrees with FP32 on only {100 * agreement.pixel_agreement:.2f}% of pixels "
                f"(< {100 * FP16_MIN_AGREEMENT:.0f}%); use the FP32 model"
            )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``unet-export``; returns the exit code."""
    args = build_parser().parse_args(argv)
    return run_cli(lambda: export_command(args))


if __name__ == "__main__":
    sys.exit(main())
