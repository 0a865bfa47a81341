"""Ship a trained model as a bundled model: export every variant, score each, and write its stated figures.

From a run's best checkpoint (``--run``) or any unetrt checkpoint (``--checkpoint``,
e.g. the bundled ``engine/models/NAME.pt`` itself) it writes, in ``engine/models/``:

* ``NAME.onnx``: FP32 (``unet-export``, checked against PyTorch);
* ``NAME.pt``: weights and ModelInfo only, no optimiser state;
* with ``--prior-correction JSON`` (from ``tools/select_prior_correction.py``): every file made from the
  checkpoint with part of its class balancing divided out of the head's biases (``unetrt.export.prior``);
* with ``--weights float16`` (automatic when float32 weights would not fit 10 MB): ``NAME.onnx`` and ``NAME.pt``
  store the weights as float16, computed in float32, and every file is made from those rounded weights
  (``unetrt.export.compact``);
* ``NAME.fp16.onnx``: the FP16 graph (``unet-export --fp16``);
* ``NAME.int8.onnx``: QDQ INT8 calibrated on ``--calibration`` frames (``unet-export --int8``),
  refused when it loses more than 1 mIoU point (binary: 0.005 challenge pixel error);
* ``NAME.int8.tensorrt.onnx``: the same INT8 calibration in TensorRT's layout (symmetric int8 activations:
  ``unet-export --int8 --int8-target tensorrt``), the file a TensorRT engine of precision 'int8' is built from;
  refused on the same bound; not written for a model stated FP32 on CPUs (``--cpu-precision fp32``: its INT8
  costs what the statement says), whose TensorRT INT8 builds are then refused with the export that makes one;
  every shipped file also counts against the 64 MiB a GPU check carries (``tools/gpu_check_bundle.sh``);
* ``NAME.json``: the figures ``unet-eval`` prints for the FP32 model on ONNX Runtime
  (``validation``), the same for every precision on every installed CPU engine that
  runs it (``variants``), the best epoch, the training commands (one per stage) and the
  working size every variant states beside the one it was trained at, and with ``--cpu-precision fp32``
  the precision the model runs at on a CPU when none is asked (``cpu_precision``; INT8 otherwise), with why.

``--working-size WxH`` states another working size than the training one in every
variant (``unet-export --working-size``): measure what it costs first with
``tools/sweep_working_size.py``.

``--add-tensorrt-int8`` writes only ``NAME.int8.tensorrt.onnx`` into an existing statement: from the bundled
``NAME.pt``, calibrated as the statement's ``calibration`` says (the same frames, count and method that made
``NAME.int8.onnx``), checked as ``unet-export`` checks INT8, and scored on the statement's reported data by ONNX
Runtime on the CPU (``variants.int8_tensorrt``); every other file and figure stays as it is. ONNX Runtime computes
the same symmetric QDQ graph TensorRT builds from, a stand-in for TensorRT's INT8 kernels where there is no GPU.

``tests/test_bundled_models.py`` re-runs the evaluations and checks them against that file.

Example:
    python tools/state_bundled_model.py camvid --run runs/camvid_ft2 --previous runs/camvid \\
        --selected-on "camvid/val" --images camvid/val --labels camvid/valannot --calibration camvid/train
    python tools/state_bundled_model.py isbi --checkpoint engine/models/isbi.pt --selected-on "slices 20-23" \\
        --images isbi2012-em/images \\
        --labels isbi2012-em/labels --stems 20-23 --calibration isbi2012-em/images --calibration-stems 00-19 \\
        --calibration-count 8
    python tools/state_bundled_model.py camvid --add-tensorrt-int8
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from unetrt.backends.openvino import cpu_has_bf16, openvino_available
from unetrt.bundled import (
    CPU_PRECISIONS,
    MODELS_DIR,
    PRECISION_SUFFIXES,
    TENSORRT_INT8_SUFFIX,
    TENSORRT_INT8_VARIANT,
)
from unetrt.cli import format_size, parse_size, run_cli
from unetrt.evaluate import evaluate_stated, format_figures, parse_stems
from unetrt.export.checkpoint import load_checkpoint, load_model, save_checkpoint
from unetrt.export.compact import compact_checkpoint, compact_onnx
from unetrt.export.onnx_export import export_onnx
from unetrt.export.onnx_export import main as export_main
from unetrt.export.prior import correct_class_prior
from unetrt.export.quantize import (
    CALIBRATION_METHODS,
    DEFAULT_METHOD,
    MAX_MEAN_IOU_LOSS,
    MAX_PIXEL_ERROR_GAIN,
    int8_path,
)
from unetrt.heldout import HeldOutSplit
from unetrt.model_file import read_model_file
from unetrt.segmenter import Segmenter

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# Said of the TensorRT-layout INT8 figures in NAME.json: what computed them.
TENSORRT_INT8_COMPUTED_BY = (
    "ONNX Runtime on the CPU, running this same symmetric QDQ graph: a stand-in for TensorRT's INT8 kernels, which "
    "could not run where it was stated (no GPU); a TensorRT engine fuses and rounds differently, so its masks may "
    "differ in a few pixels")
# Each shipped file stays within 10 MiB (tests/test_packaging.py); float32 weights past this many bytes are
# stored as float16 (the ONNX graph's metadata and structure need the rest).
FLOAT32_WEIGHT_LIMIT = 9_500_000


def store_float16(choice: str, model: Any) -> bool:
    """Whether the weights ship as float16: asked, or 'auto' and their float32 bytes pass the limit."""
    if choice != "auto":
        return choice == "float16"
    return sum(4 * p.numel() for p in model.state_dict().values() if p.is_floating_point()) > FLOAT32_WEIGHT_LIMIT


def training_command(run: Path) -> str:
    """The ``unet-train`` command line a run recorded in its command.json."""
    argv = json.loads((run / "command.json").read_text())["argv"]
    return shlex.join(["unet-train", *argv[1:]])


def engines_for(precision: str) -> list[str]:
    """The installed CPU engines that run a bundled precision."""
    openvino = ["openvino"] if openvino_available() else []
    if precision == "bf16":
        return openvino if openvino and cpu_has_bf16() else []
    return ["onnxruntime", *openvino]


def score_variants(name: str, report: dict[str, Any]) -> dict[str, Any]:
    """``unet-eval`` figures of every precision on every installed CPU engine, by precision then engine, on the
    reported data (:func:`unetrt.evaluate.evaluate_stated`)."""
    variants: dict[str, Any] = {}
    for precision in ("fp32", "bf16", "fp16", "int8"):
        file = MODELS_DIR / f"{name}{PRECISION_SUFFIXES['fp32' if precision == 'bf16' else precision]}"
        engines = engines_for(precision)
        if not file.is_file() or not engines:
            continue
        entry: dict[str, Any] = {"file": file.name}
        if precision == "int8":
            entry["quantization"] = read_model_file(file).quantization
        for engine in engines:
            # The plain masks: the statement's clean-up has its own record ('cleanup').
            with Segmenter(name, backend=engine, precision=precision, device="cpu", cleanup=None) as segmenter:
                figures = evaluate_stated(segmenter, report, SHARED_DATA)
            print(f"{precision} on {engine}:\n{format_figures(figures)}")
            entry[engine] = {k: v for k, v in figures.items() if isinstance(v, float) or k == "per_class_iou"}
        variants[precision] = entry
    return variants


def export_args_for_int8(calibration: dict[str, Any], report: dict[str, Any], working_size: Any) -> list[str]:
    """``unet-export`` INT8 options: calibrate as ``calibration`` (a statement's entry) says and check on the
    statement's INT8 check data (``images``, ``labels``, ``stems``) at the working size."""
    export_args = ["--int8", "--calibration", str(SHARED_DATA / calibration["images"]),
                   "--calibration-count", str(calibration["count"]), "--calibration-method", calibration["method"],
                   "--check-images", str(SHARED_DATA / report["images"]),
                   "--check-labels", str(SHARED_DATA / report["labels"])]
    if report.get("stems"):
        export_args += ["--check-stems", ",".join(report["stems"])]
    if working_size is not None:
        export_args += ["--working-size", format_size(tuple(working_size))]
    if calibration.get("stems"):
        export_args += ["--calibration-stems", ",".join(calibration["stems"])]
    return export_args


def export_tensorrt_int8(name: str, checkpoint: Path, calibration: dict[str, Any], report: dict[str, Any],
                         working_size: Any) -> Path:
    """Write ``NAME.int8.tensorrt.onnx`` from ``checkpoint``: ``unet-export --int8 --int8-target tensorrt`` with
    the statement's calibration, refused (nothing written) when it fails unet-export's INT8 check."""
    with tempfile.TemporaryDirectory(prefix=f"{name}-int8-tensorrt-") as scratch:
        # unet-export writes the FP32 graph beside the INT8 one: in scratch, so the shipped NAME.onnx stays as it is.
        fp32 = Path(scratch) / f"{name}.onnx"
        argv = [str(checkpoint), "-o", str(fp32), "--int8-target", "tensorrt",
                *export_args_for_int8(calibration, report, working_size)]
        if export_main(argv) != 0:
            raise RuntimeError(f"unet-export --int8-target tensorrt of {checkpoint} failed (see the line above)")
        target = MODELS_DIR / f"{name}{TENSORRT_INT8_SUFFIX}"
        shutil.move(str(int8_path(fp32)), target)
    return target


def score_tensorrt_int8(name: str, report: dict[str, Any], fp32: dict[str, Any]) -> dict[str, Any]:
    """The ``variants`` entry of ``NAME.int8.tensorrt.onnx``: its quantization and ``unet-eval`` figures on the
    reported data by ONNX Runtime on the CPU (see ``TENSORRT_INT8_COMPUTED_BY``).

    Raises:
        ValueError: when it loses more than the INT8 bound against ``fp32`` (the FP32 figures on the same data);
            the file is removed.
    """
    file = MODELS_DIR / f"{name}{TENSORRT_INT8_SUFFIX}"
    with Segmenter(file, backend="onnxruntime", device="cpu", cleanup=None) as segmenter:
        figures = evaluate_stated(segmenter, report, SHARED_DATA)
    print(f"int8 (TensorRT layout) on onnxruntime:\n{format_figures(figures)}")
    if "mean_iou" in fp32:
        loss, limit = fp32["mean_iou"] - figures["mean_iou"], MAX_MEAN_IOU_LOSS
    else:
        loss, limit = figures["challenge_pixel_error"] - fp32["challenge_pixel_error"], MAX_PIXEL_ERROR_GAIN
    if loss > limit:
        file.unlink()
        raise ValueError(f"{file.name} loses {loss:.4f} against FP32 on the reported data, more than {limit}: not "
                         "shipped; try another --calibration-method or more --calibration-count")
    return {"file": file.name, "quantization": read_model_file(file).quantization, "runs_on": "tensorrt",
            "computed_by": TENSORRT_INT8_COMPUTED_BY,
            "onnxruntime": {k: v for k, v in figures.items() if isinstance(v, float) or k == "per_class_iou"}}


def _add_tensorrt_int8(name: str) -> None:
    """``--add-tensorrt-int8``: the TensorRT-layout INT8 variant alone, added to the existing statement."""
    stated = _stated(name)
    if not stated:
        raise ValueError(f"{name!r} has no statement ({MODELS_DIR / f'{name}.json'}): state the model first")
    cpu_precision = stated.get("cpu_precision", {}).get("precision", CPU_PRECISIONS[0])
    if cpu_precision != CPU_PRECISIONS[0]:
        raise ValueError(f"{name!r} is stated {cpu_precision} on CPUs (its INT8 costs what cpu_precision.why says): "
                         "it ships no TensorRT INT8 file; export one with unet-export --int8 --int8-target tensorrt")
    checkpoint = MODELS_DIR / f"{name}.pt"
    # NAME.pt carries what every shipped file was made from: the float16 weights, a folded prior correction and
    # the stated working size (re-exported so, NAME.int8.onnx comes out byte for byte).
    export_tensorrt_int8(name, checkpoint, stated["calibration"], stated, load_model(checkpoint)[1].working_size)
    entry = score_tensorrt_int8(name, stated, stated["validation"])
    stated["variants"][TENSORRT_INT8_VARIANT] = entry
    (MODELS_DIR / f"{name}.json").write_text(json.dumps(stated, indent=2) + "\n")
    print(f"wrote {entry['file']} and its figures into {MODELS_DIR / f'{name}.json'}")


def _source(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """The checkpoint to ship and what is known of its training (best epoch, monitor, commands)."""
    if args.run is not None:
        run = Path(args.run)
        best = run / "best.pt"
        if not best.is_file():
            raise FileNotFoundError(f"{best} does not exist: --run must be a unet-train output folder")
        summary = json.loads((run / "run.json").read_text())
        stages = [Path(p) for p in args.previous] + [run]
        commands = [training_command(stage) for stage in stages]
        if args.previous_stated:
            # The first stage started from the bundled weights: their stages come first.
            commands = _stated(args.name).get("training_commands", []) + commands
        return best, {"best_epoch": summary["best_epoch"], "epochs_run": summary["epochs_run"],
                      "monitor": summary["monitor"], "training_commands": commands}
    checkpoint = Path(args.checkpoint)
    data = load_checkpoint(checkpoint)  # a clear error for a file that is not a unetrt checkpoint
    # A checkpoint carries no run history: keep what the model's earlier statement recorded, and the size it was
    # trained at (a re-stated bundled checkpoint carries the size stated last).
    previous = _stated(args.name)
    keys = ("best_epoch", "epochs_run", "monitor", "training_commands")
    history = {**{key: previous.get(key) for key in keys},
               "trained_working_size": previous.get("working_size", {}).get("trained")}
    if "prior_correction" in data["info"].get("extra", {}) and "prior_correction" in previous:
        # A re-stated bundled checkpoint carries the correction folded in already: keep how it was chosen.
        history["prior_correction"] = previous["prior_correction"]
    return checkpoint, history


def _prior_selection(path: Path, checkpoint: Path) -> dict[str, Any]:
    """The choice tools/select_prior_correction.py wrote, checked to be of this checkpoint and not of the report."""
    selection = dict(json.loads(path.read_text()))
    if Path(selection["checkpoint"]).resolve() != checkpoint.resolve():
        raise ValueError(f"--prior-correction {str(path)!r} chose tau for {selection['checkpoint']}, not for "
                         f"{checkpoint}: run tools/select_prior_correction.py on the checkpoint you ship")
    if selection["part"] == "report":
        raise ValueError(f"--prior-correction {str(path)!r} chose tau on the report part, which must stay unseen")
    return selection


def _stated(name: str) -> dict[str, Any]:
    """The model's current engine/models/NAME.json, or nothing."""
    stated = MODELS_DIR / f"{name}.json"
    return dict(json.loads(stated.read_text())) if stated.is_file() else {}


def _run(args: argparse.Namespace) -> None:
    checkpoint, history = _source(args)
    onnx_path, pt_path = MODELS_DIR / f"{args.name}.onnx", MODELS_DIR / f"{args.name}.pt"
    # Read before anything is written: the checkpoint may be the bundled NAME.pt itself.
    model, info = load_model(checkpoint)
    prior = None if args.prior_correction is None else _prior_selection(Path(args.prior_correction), checkpoint)
    scratch: list[Path] = []
    if prior is not None:
        # The correction lives in the head's biases: every file below is made from the corrected weights.
        model, info = correct_class_prior(model, info, prior["chosen"])
        checkpoint = MODELS_DIR / f".{args.name}.prior.pt"
        save_checkpoint(checkpoint, model, info)
        scratch.append(checkpoint)
    float16 = store_float16(args.weights, model)
    if float16:
        # Every file is made from the weights rounded to float16 once, so all of them agree as float32 ones do.
        checkpoint = compact_checkpoint(checkpoint, MODELS_DIR / f".{args.name}.float16.pt")
        scratch.append(checkpoint)
        model, _ = load_model(checkpoint)
    trained = history.pop("trained_working_size", None) or info.working_size
    if args.working_size is not None:
        info = dataclasses.replace(info, working_size=args.working_size)
    report: dict[str, Any] = {"images": args.images, "labels": args.labels, "stems": args.stems}
    reported_on = f"{args.images}" + (f", stems {','.join(args.stems)}" if args.stems else ", every frame")
    calibration_stems = args.calibration_stems
    if args.split is not None:
        split_file = Path(args.split).resolve()
        if split_file.parent != MODELS_DIR:
            raise ValueError(f"--split must be a split file in {MODELS_DIR} (it ships with the model), "
                             f"got {args.split!r}")
        split = HeldOutSplit.read(split_file)
        report = {"split": {"file": split_file.name, "data": args.split_data, "part": "report"}}
        reported_on = (f"{args.split_data}, part 'report' of {split_file.name} (time spans no training frame comes "
                       f"within {split.guard_frames} frames of)")
        if calibration_stems is None:
            # Calibration fits activation ranges: only frames training saw, none of a held-out part.
            folder = (SHARED_DATA / args.calibration).resolve()
            train = split.train_pairs(SHARED_DATA / args.split_data)
            calibration_stems = [image.stem for image, _ in train if image.parent.resolve() == folder]
    calibration = {"images": args.calibration, "stems": calibration_stems, "count": args.calibration_count,
                   "method": args.calibration_method}
    # The INT8 check's data (unet-export --check-images); also the reported data when there is no split.
    check = {"images": args.images, "labels": args.labels, "stems": args.stems}
    # A model whose INT8 the statement advises against on CPUs gets no TensorRT INT8 file either (see above).
    tensorrt_int8 = args.cpu_precision == CPU_PRECISIONS[0]
    (MODELS_DIR / f"{args.name}{TENSORRT_INT8_SUFFIX}").unlink(missing_ok=True)
    export_args = [str(checkpoint), "-o", str(onnx_path), "--fp16",
                   *export_args_for_int8(calibration, check, info.working_size)]
    try:
        if export_main(export_args) != 0:
            raise RuntimeError(f"unet-export of {checkpoint} failed (see the line above)")
        if tensorrt_int8:
            export_tensorrt_int8(args.name, checkpoint, calibration, check, info.working_size)
    finally:
        for path in scratch:
            path.unlink()
    save_checkpoint(pt_path, model, info)
    if float16:
        # unet-export folded each batch norm into its convolution, and the folded weights would be rounded to
        # float16 a second time; kept apart, the graph stores exactly the checkpoint's float16 values, and every
        # backend computes what PyTorch computes from NAME.pt.
        export_onnx(model, info, onnx_path, fold_batch_norm=False)
        compact_onnx(onnx_path, onnx_path)
        compact_checkpoint(pt_path, pt_path)
    with Segmenter(onnx_path, backend="onnxruntime") as segmenter:
        figures = evaluate_stated(segmenter, report, SHARED_DATA)
    print(format_figures(figures))
    variants = score_variants(args.name, report)
    if tensorrt_int8:
        variants[TENSORRT_INT8_VARIANT] = score_tensorrt_int8(args.name, report, figures)
    stated = {
        **check,
        **({"split": report["split"]} if args.split is not None else {}),
        "selected_on": args.selected_on,
        "reported_on": reported_on,
        "validation": {k: v for k, v in figures.items() if isinstance(v, float)},
        "per_class_iou": figures.get("per_class_iou"),
        "calibration": calibration,
        "variants": variants,
        "weights_stored_as": "float16" if float16 else "float32",
        "working_size": {"stated": None if info.working_size is None else list(info.working_size),
                         "trained": None if trained is None else list(trained)},
        **history,
    }
    if prior is not None:
        stated["prior_correction"] = {"tau": prior["chosen"], "selected_on_part": prior["part"],
                                      "mean_iou_by_tau": {str(row["tau"]): row["mean_iou"] for row in prior["rows"]}}
    stated["cpu_precision"] = {"precision": args.cpu_precision,
                               **({"why": args.cpu_precision_why} if args.cpu_precision_why else {})}
    if args.cleanup_tuning:
        # Chosen by tools/tune_postprocess.py on the selection block; reported on this model's report block.
        tuning = json.loads(Path(args.cleanup_tuning).read_text())
        if tuning["report_stems"] != args.stems:
            raise ValueError(f"--cleanup-tuning reports on stems {tuning['report_stems']}, this model on {args.stems}")
        stated["cleanup"] = {"settings": tuning["chosen"], "selected_on_stems": tuning["selection_stems"],
                             "report": tuning["report"]}
    (MODELS_DIR / f"{args.name}.json").write_text(json.dumps(stated, indent=2) + "\n")
    print(f"wrote every variant of {args.name} and {MODELS_DIR / f'{args.name}.json'}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", help="bundled model name, e.g. camvid")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--run", help="unet-train output folder holding best.pt")
    source.add_argument("--checkpoint", help="a unetrt .pt checkpoint, e.g. the bundled engine/models/NAME.pt")
    source.add_argument("--add-tensorrt-int8", action="store_true",
                        help="add only NAME.int8.tensorrt.onnx (INT8 in TensorRT's layout) to the existing statement: "
                             "from the bundled NAME.pt, calibrated as the statement says, scored by ONNX Runtime on "
                             "its reported data; no other option applies")
    parser.add_argument("--previous", nargs="*", default=[],
                        help="earlier runs this one was initialised from (--init), oldest first (with --run)")
    parser.add_argument("--previous-stated", action="store_true",
                        help="the run started from the bundled weights (--init engine/models/NAME.pt): take the "
                             "earlier stages' commands from the current NAME.json (with --run)")
    parser.add_argument("--selected-on",
                        help="the data that selected the model (best epoch, thresholds), in words, e.g. "
                             "'isbi2012-em slices 18-20'; stated in NAME.json next to the reported data")
    parser.add_argument("--prior-correction", default=None, metavar="JSON",
                        help="fold the class-prior correction tools/select_prior_correction.py chose into the head "
                             "(unetrt.export.prior)")
    parser.add_argument("--cleanup-tuning", default=None, metavar="JSON",
                        help="binary models: the results of tools/tune_postprocess.py, stated as the model's "
                             "recommended mask clean-up with its figures on the report stems")
    parser.add_argument("--images", help="validation images, relative to ../shared/data")
    parser.add_argument("--labels", help="validation labels, relative to ../shared/data")
    parser.add_argument("--stems", type=parse_stems, default=None, help="held-out stems, e.g. 20-23")
    parser.add_argument("--split", default=None, metavar="FILE",
                        help="a held-out split in engine/models (e.g. engine/models/camvid.split.json): the figures "
                             "are reported on its 'report' part, the INT8 model calibrated on its training frames; "
                             "--images/--labels then only feed unet-export's INT8 check")
    parser.add_argument("--split-data", default=None, help="with --split: its data set, relative to ../shared/data")
    parser.add_argument("--calibration",
                        help="INT8 calibration frames, relative to ../shared/data (e.g. camvid/train)")
    parser.add_argument("--calibration-stems", type=parse_stems, default=None,
                        help="calibrate only on these stems, e.g. 00-19 (the training slices)")
    parser.add_argument("--calibration-count", type=int, default=32, help="calibration frames (default 32)")
    parser.add_argument("--working-size", type=parse_size, default=None, metavar="WxH",
                        help="the working size every variant states, in place of the checkpoint's")
    parser.add_argument("--calibration-method", choices=CALIBRATION_METHODS, default=DEFAULT_METHOD,
                        help=f"INT8 calibration (default {DEFAULT_METHOD})")
    parser.add_argument("--weights", choices=("auto", "float32", "float16"), default="auto",
                        help="how NAME.onnx and NAME.pt store the weights (computed in float32 either way); auto: "
                             "float16 when float32 would pass the 10 MB per file (unetrt.export.compact)")
    parser.add_argument("--cpu-precision", choices=CPU_PRECISIONS, default=CPU_PRECISIONS[0],
                        help="what the model runs at on a CPU when no precision is asked (default int8); fp32 "
                             "for a model whose INT8 variant loses a figure its users rely on")
    parser.add_argument("--cpu-precision-why", default=None, metavar="TEXT",
                        help="--cpu-precision fp32: the figures that decided it, and where they were measured")
    args = parser.parse_args(argv)
    if args.add_tensorrt_int8:
        given = [f"--{k.replace('_', '-')}" for k, v in vars(args).items()
                 if k not in ("name", "add_tensorrt_int8") and v != parser.get_default(k)]
        if given:
            parser.error(f"--add-tensorrt-int8 takes everything from the statement; drop {', '.join(given)}")
        return run_cli(lambda: _add_tensorrt_int8(args.name))
    missing = [flag for flag in ("--selected-on", "--images", "--labels", "--calibration")
               if getattr(args, flag[2:].replace("-", "_")) is None]
    if args.run is None and args.checkpoint is None:
        missing.insert(0, "--run or --checkpoint")
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")
    if args.cpu_precision != CPU_PRECISIONS[0] and not args.cpu_precision_why:
        parser.error(f"--cpu-precision {args.cpu_precision} needs --cpu-precision-why: the figures that decided it")
    if (args.split is None) != (args.split_data is None):
        parser.error("--split and --split-data go together")
    if (args.previous or args.previous_stated) and args.run is None:
        parser.error("--previous and --previous-stated go with --run")
    return run_cli(lambda: _run(args))


if __name__ == "__main__":
    sys.exit(main())
