"""``unet-bench``: every backend side by side on the same model, in one process.

Times PyTorch (eager FP32, eager FP16, channels_last, CUDA graphs), ONNX Runtime
(FP32 and the INT8 QDQ model ``NAME.int8.onnx`` beside it), OpenVINO (FP32, BF16, INT8)
and TensorRT on the same input, after warm-up, in several trials, and reports the
median of the trial medians with its spread, latency percentiles, throughput,
achieved TFLOP/s (convolution FLOPs counted from the ONNX graph), peak host and
device memory and each variant's speed-up over PyTorch eager FP32 and over ONNX
Runtime FP32 on the same device; ``--matmul`` adds this CPU's dense INT8/BF16/FP32
matmul rate (:mod:`unetrt.benchmarks.bench_matmul`) and each row's share of it.
GPU work is timed with CUDA events where torch sees the GPU, else (and CPU work) with ``time.perf_counter_ns``,
each GPU row's call returning once its work is done (:class:`Clock`); device memory is read through torch where it
sees the GPU, else through the CUDA driver (:class:`DeviceMemory`).

Example:
    unet-bench --model camvid --backend onnxruntime --backend torch --size 480x360 -o out.json
    unet-bench --model camvid --size 480x360 --end-to-end --threads 2 --matmul   # every CPU row
    unet-bench --model unet.plan --batch-size 1,8 --no-data-transfers
    unet-bench --loadEngine=unet.plan --shapes=image:8x3x360x480 --noDataTransfers   # trtexec's spellings
    unet-bench --unet-base 32 --size 512x512 --device cuda
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from unetrt.backends import choose_model
from unetrt.backends.registry import backend_names, native_backend, registered_backends
from unetrt.bundled import bundled_model_path
from unetrt.cli import install_hint, parse_seed, print_out, run_cli
from unetrt.cli_options import (
    ALIASES_EPILOG,
    CommandParser,
    add_aliases,
    add_batch_size,
    add_device,
    add_model,
    add_output,
    add_precision,
    add_size,
    add_threads,
    trtexec_shape,
)
from unetrt.cpu import usable_cores
from unetrt.cuda import DeviceMemoryGauge
from unetrt.datasets import list_images
from unetrt.frame_path import NONFINITE_ADVICE, NonFiniteScoresError
from unetrt.geometry import plan_padding
from unetrt.jetson import jetson_state
from unetrt.model_file import file_precision, read_model_file
from unetrt.model_info import ModelInfo
from unetrt.paths import check_file, check_folder, write_whole
from unetrt.plan_metadata import ShapeProfile, format_shape
from unetrt.plot_png import plot_png
from unetrt.stream.output_path import check_not_replacing, check_reads_nothing, check_writable_file, same_file

from .flops import flops_per_image
from .stats import (
    current_rss_bytes,
    describe_cpu,
    machine_description,
    peak_rss_bytes,
    reset_peak_rss,
    summarize,
)
from .variants import BASELINE, HAND_WRITTEN, Runner, Variant, Workload, all_variants, open_runner, release

SCHEMA = "unetrt-bench-1"


def backend_choices() -> tuple[str, ...]:
    """The registered backends, PyTorch (the baseline) first."""
    return tuple(sorted(backend_names(), key=lambda name: name != "torch"))
DEFAULT_SHAPE = (512, 512)
MIB = 1024 * 1024
LIBRARIES = {
    "numpy": ("numpy",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "onnx": ("onnx",),
    "torch": ("torch",),
    "tensorrt": ("tensorrt", "tensorrt-cu13", "tensorrt-cu12"),
    "pycuda": ("pycuda",),
    "openvino": ("openvino",),
    "opencv": ("opencv-python-headless", "opencv-python"),
    "unetrt": ("unetrt",),
}
MATMUL_SIZE = 8192


def parse_batches(text: str) -> list[int]:
    """``1,8`` -> [1, 8] for argparse.

    Raises:
        argparse.ArgumentTypeError: when an entry is not a positive integer.

    Example:
        >>> parse_batches("1,8")
        [1, 8]
    """
    parts = [p.strip() for p in text.split(",")]
    if not parts or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"batch must be positive integers separated by commas, e.g. 1,8, got {text!r}")
    return [int(p) for p in parts]


def _positive(kind: type[int] | type[float]) -> Callable[[str], Any]:
    def convert(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive {kind.__name__}, got {text!r}") from None
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"expected a positive finite {kind.__name__}, got {text!r}")
        return value

    return convert


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``unet-bench``."""
    parser = CommandParser(prog="unet-bench", description="Benchmark every unetrt backend side by side.",
                           epilog=ALIASES_EPILOG)
    source = parser.add_mutually_exclusive_group(required=True)
    # --engine is this command's old spelling; trtexec loads an engine with --loadEngine, an ONNX model with --onnx.
    add_model(parser, container=source, required=False, aliases=("--engine", "--loadEngine", "--onnx"),
              help="a .plan, .onnx or .pt model, or a bundled model name (camvid)")
    source.add_argument("--unet-base", type=_positive(int), metavar="N",
                        help="benchmark an untrained U-Net with N base channels (depth 5, 11 classes), built here")
    backends = backend_choices()
    keys = ", ".join(key for key in all_variants("fp32") if key not in backends)
    parser.add_argument("--backend", action="append", default=None,
                        help=f"a backend ({', '.join(backends)}: all its variants whose files exist) or one "
                             f"variant key ({keys}; {HAND_WRITTEN} is the pipeline a user writes by hand around "
                             "OpenVINO INT8, --end-to-end only); repeat for several. Default: every backend whose "
                             "model file exists")
    add_batch_size(parser, type=parse_batches, default=None, aliases=("--batch",), metavar="N[,N...]",
                   help="batch sizes, comma-separated (default: 1, or the N of --shapes)")
    add_size(parser, dest="shape", aliases=("--shape",), action="append",
             help="frame size, width x height like every unetrt command (repeatable; default: the "
                  "model's working size, else 512x512)")
    # trtexec's --shapes=image:NxCxHxW gives a batch size and a frame size at once.
    add_aliases(parser, ["--shapes"], "trtexec_shapes", type=trtexec_shape, action="append")
    add_precision(parser, help="fp32/fp16: precision of the channels_last and CUDA-graph variants (auto: fp16 on "
                               "GPU, fp32 on CPU); fp16 on a CPU: the FP16 ONNX file unet-stream runs there "
                               "(NAME.fp16.onnx) on ONNX Runtime and OpenVINO, next to PyTorch eager FP32; "
                               "int8/bf16: run only the variants of that precision, next to the PyTorch eager FP32 "
                               "and ONNX Runtime FP32 references")
    add_aliases(parser, ["--fp16"], "precision", action="store_const", const="fp16")
    add_aliases(parser, ["--int8"], "precision", action="store_const", const="int8")
    add_device(parser, ordinals=False,
               help="where the PyTorch and ONNX Runtime rows run (auto: cuda when torch, or TensorRT with pycuda, "
                    "sees a GPU); the TensorRT rows need cuda")
    parser.add_argument("--no-build", dest="build", action="store_false",
                        help="the TensorRT rows of a bundled model or .onnx file use a cached engine only (by "
                             "default one is built and cached on first use, as Segmenter does)")
    parser.add_argument("--warmup", type=_positive(int), default=5, help="untimed iterations first (default 5)")
    parser.add_argument("--iterations", type=_positive(int), default=20, help="timed iterations per trial (default 20)")
    parser.add_argument("--duration", type=_positive(float), default=None, metavar="SECONDS",
                        help="time each trial for this long instead of a fixed number of iterations")
    parser.add_argument("--trials", type=_positive(int), default=5, help="repeats of the timed loop (default 5)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--end-to-end", action="store_true",
                      help="uint8 frames on the host to masks on the host through Segmenter.segment_batch")
    mode.add_argument("--no-data-transfers", action="store_true",
                      help="bare network on device-resident buffers, like trtexec")
    add_aliases(mode, ["--noDataTransfers"], "no_data_transfers", action="store_true")
    add_threads(parser, help="intra-op threads of every CPU backend", default_text="the cores this process may use")
    add_output(parser, type=Path, aliases=("--json",), metavar="FILE.json", help="write every figure as JSON")
    parser.add_argument("--markdown", type=Path, default=None, metavar="FILE",
                        help="write the table with the machine's description as Markdown")
    parser.add_argument("--plot", type=Path, default=None, metavar="FILE.png",
                        help="latency distribution per variant (matplotlib)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace report files (--output, --markdown, --plot) that exist; without it an existing "
                             "one is refused before the run, so that an earlier result is not lost")
    parser.add_argument("--matmul", action="store_true",
                        help="on a CPU, also measure the dense INT8/BF16/FP32 matmul rate (bench_matmul) and give "
                             "each row's share of the rate of its precision")
    parser.add_argument("--seed", type=parse_seed, default=0, help="seed of the random input frames")
    parser.add_argument("--frames", type=Path, default=None, metavar="DIR",
                        help="take the frames from the images of this folder (resized to --size where they differ) "
                             "instead of random pixels, e.g. ../shared/data/camvid/val: a photograph's scores have "
                             "a scene's class regions")
    parser.add_argument("--note", action="append", default=[], help="a remark kept with the results (repeatable)")
    parser.add_finisher(_apply_trtexec_shapes)
    return parser


def _apply_trtexec_shapes(args: argparse.Namespace) -> None:
    """Turn trtexec's ``--shapes=image:NxCxHxW`` into frame sizes and batch sizes; default the batch to 1.

    Raises:
        ValueError: when ``--shapes`` and ``--batch-size`` give different batch sizes.
    """
    specs = getattr(args, "trtexec_shapes", None) or []
    if hasattr(args, "trtexec_shapes"):
        del args.trtexec_shapes
    args.channels = sorted({spec[1] for spec in specs})
    batches = sorted({spec[0] for spec in specs})
    if specs:
        args.shape = [*(args.shape or []), *[(spec[3], spec[2]) for spec in specs]]
        if args.batch_size is not None and sorted(args.batch_size) != batches:
            raise ValueError(f"--shapes asks for batch {','.join(map(str, batches))} and --batch-size for "
                             f"{','.join(map(str, args.batch_size))}; give one")
    args.batch_size = args.batch_size or batches or [1]


@dataclass
class ModelFiles:
    """The files of one model in every format found, and what the missing ones mean.

    Attributes:
        name: how the model was given (path, bundled name or synthetic).
        files: backend name -> model file it runs.
        missing: backend name -> why it has no file.
        info: the model's description.
        onnx_for_flops: an ONNX file of the model, for counting FLOPs, or None.
        plan_precision: the precision the TensorRT plan was built with, when there is a plan.
        plan_dla_core: the DLA core the plan runs its layers on (None: the GPU alone).
        plan_profile: the plan's optimisation profile (the input shapes it takes), when there is a plan.
    """

    name: str
    files: dict[str, Path]
    missing: dict[str, str]
    info: ModelInfo
    onnx_for_flops: Path | None = None
    plan_precision: str | None = None
    plan_dla_core: int | None = None
    plan_profile: ShapeProfile | None = None
    scratch: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)


def _read_info(files: dict[str, Path]) -> ModelInfo:
    return read_model_file(files.get("onnxruntime") or files.get("int8") or files.get("torch")
                           or files["tensorrt"]).info


def _add_onnx_variants(files: dict[str, Path], missing: dict[str, str], int8: Path) -> None:
    """The registered backends that also run ONNX (OpenVINO, when installed) run the FP32 .onnx (TensorRT runs the
    engine cache's plan of it: :func:`_cached_engine`); the INT8 variants run ``int8`` when it exists."""
    from unetrt.backends.openvino import MISSING_OPENVINO, openvino_available

    if "onnxruntime" in files:
        if not openvino_available():
            missing["openvino"] = MISSING_OPENVINO
        for spec in registered_backends():
            if ".onnx" in spec.also_runs and spec.name != "tensorrt" and spec.name not in missing:
                files[spec.name] = files["onnxruntime"]
    if int8.is_file():
        files["int8"] = int8
    else:
        missing["int8"] = f"{int8.name} does not exist (write it with unet-export --int8)"


def _cached_engine(files: dict[str, Path], missing: dict[str, str], build: bool,
                   sizes: Sequence[tuple[int, int]] | None, batches: Sequence[int] | None, precision: str) -> None:
    """Without a ``.plan``, on a GPU with TensorRT: the engine cache's plan of the FP32 ONNX model at ``precision``
    ('fp16' or 'fp32'), at the frame size timed (``sizes``: one (width, height) asked, or None for the model's
    working size)."""
    from unetrt.backends import tensorrt_gpu_available
    from unetrt.plan_cache import cached_plan
    from unetrt.plan_metadata import DEFAULT_MAX_BATCH

    onnx_file = files.get("onnxruntime")
    if "tensorrt" in files or onnx_file is None or not tensorrt_gpu_available():
        return
    # A cached engine takes one frame size, batches 1 to DEFAULT_MAX_BATCH: built at the model's working size for
    # --size 480x360, it was built (minutes on a Jetson) and then refused every frame as outside its profile.
    asked = list(dict.fromkeys(sizes or ()))
    if len(asked) > 1:
        missing["tensorrt"] = (f"an engine of the engine cache takes one frame size, and {len(asked)} are asked; "
                               "time the TensorRT rows one --size at a time, or build a plan that takes them all "
                               "with unet-build --min-shape/--max-shape and pass --model FILE.plan")
        return
    if batches and max(batches) > DEFAULT_MAX_BATCH:
        missing["tensorrt"] = (f"an engine of the engine cache takes batches of up to {DEFAULT_MAX_BATCH}, and "
                               f"--batch-size asks for {max(batches)}; build a plan with unet-build --max-shape "
                               f"{max(batches)}xCxHxW and pass --model FILE.plan")
        return
    try:
        files["tensorrt"] = cached_plan(onnx_file, precision, working_size=asked[0] if asked else None, build=build)
    except (ImportError, LookupError, ValueError) as exc:
        missing["tensorrt"] = str(exc)
        return
    missing.pop("tensorrt", None)


def locate_model(engine: str, build: bool = True, sizes: Sequence[tuple[int, int]] | None = None,
                 batches: Sequence[int] | None = None, precision: str = "fp16") -> ModelFiles:
    """Find a model's files: the given one plus siblings with the same stem (or a bundled model's files).

    ``NAME.onnx`` (or ``NAME.fp16.onnx``), ``NAME.int8.onnx``, ``NAME.pt`` and ``NAME.plan`` belong together.
    Without a ``NAME.plan``, on a GPU with TensorRT, the TensorRT rows run the engine cache's engine at
    ``precision`` ('fp16', or 'fp32' when every row is asked to run at FP32; built here when ``build``) for the
    frame size timed: the one of ``sizes`` ((width, height) as ``--size`` gives them;
    None: the model's working size); several sizes, or a batch of ``batches`` larger than such an engine takes,
    leave the TensorRT rows out with the reason.

    Raises:
        ValueError: on an unknown suffix or bundled name, or a folder where the file should be.
        FileNotFoundError: when the given file does not exist.
    """
    path = Path(engine)
    files: dict[str, Path] = {}
    missing: dict[str, str] = {}
    if native_backend(path.suffix) is not None and path.suffix != ".xml":
        check_file(path, "model file")
        # unet-export writes NAME.onnx, NAME.fp16.onnx and NAME.int8.onnx: each of them names the same NAME.
        stem = path.name.removesuffix(path.suffix).removesuffix(".int8").removesuffix(".fp16")
        wanted = {"torch": ".pt", "onnxruntime": ".onnx", "tensorrt": ".plan"}
        given = native_backend(path.suffix)
        if given is not None and given.name in wanted and not path.name.endswith(".int8.onnx"):
            # The file named runs its backend's rows: unet.engine beside a unet.plan, or an INT8 NAME.int8.plan
            # beside NAME.plan, is the one timed. (NAME.int8.onnx runs the INT8 rows, found below.)
            files[given.name] = path
        for suffix, backend in ((s, spec.name) for spec in registered_backends() for s in spec.suffixes):
            sibling = path.with_name(stem + suffix)
            if backend in wanted and sibling.is_file() and backend not in files:
                files[backend] = sibling
        for backend, suffix in wanted.items():
            if backend not in files:
                missing[backend] = f"{stem}{suffix} (same stem, beside {path.name}) does not exist"
        _add_onnx_variants(files, missing, path.with_name(f"{stem}.int8.onnx"))
    elif path.suffix or len(path.parts) > 1:
        raise ValueError(f"cannot tell the format of {engine!r}: use a .plan, .onnx or .pt file or a bundled "
                         "model name")
    else:
        for backend, suffix in (("onnxruntime", ".onnx"), ("torch", ".pt")):
            try:
                files[backend] = bundled_model_path(engine, suffix)
            except ValueError as exc:
                missing[backend] = str(exc)
        if not files:
            raise ValueError(missing["onnxruntime"])
        _add_onnx_variants(files, missing, files.get("onnxruntime", Path(f"{engine}.onnx")).with_name(
            f"{engine}.int8.onnx"))
        missing["tensorrt"] = (f"bundled model {engine!r} has no TensorRT plan (plans are built per GPU); "
                               f"build one with unet-build and pass --model FILE.plan")
    _cached_engine(files, missing, build, sizes, batches, precision)
    model = ModelFiles(engine, files, missing, _read_info(files), files.get("onnxruntime", files.get("int8")))
    if "tensorrt" in files:
        from unetrt.plan_metadata import read_plan_metadata

        plan = read_plan_metadata(files["tensorrt"])
        model.plan_precision = plan.precision
        model.plan_dla_core = plan.dla_core
        model.plan_profile = plan.profile
        source = plan.source_file(files["tensorrt"])
        if model.onnx_for_flops is None and source is not None and source.suffix == ".onnx":
            model.onnx_for_flops = source
    return model


def cpu_fp16_files(model: ModelFiles, given: str) -> ModelFiles:
    """``model`` with the ONNX rows on the file that ``unet-stream --precision fp16`` runs on a CPU (``given``'s
    FP16 file, NAME.fp16.onnx for a bundled name), so that ``unet-bench --precision fp16`` times it there.

    Raises:
        ValueError: the line unet-stream refuses that precision with (a file exported at another precision, a
            checkpoint), or when the FP16 file is no ONNX file.
    """
    fp16 = choose_model(given, "auto", "fp16", "cpu").path
    if fp16.suffix != ".onnx":
        raise ValueError(f"--precision fp16 on the CPU runs an FP16 ONNX file, and {model.name} has none here")
    onnx = model.files.get("onnxruntime")
    return replace(model, files={key: fp16 if path == onnx else path for key, path in model.files.items()})


def synthetic_model(base: int) -> ModelFiles:
    """An untrained U-Net of ``base`` channels (depth 5, 11 classes, ELU) as .pt and .onnx in a scratch folder.

    Raises:
        ImportError: without torch.
    """
    try:
        import torch

        from unetrt.export.checkpoint import build_model, save_checkpoint
        from unetrt.export.onnx_export import export_onnx
    except ImportError as exc:
        absent = exc.name or "torch"
        raise ImportError(f"--unet-base builds the model with PyTorch and onnx, and {absent!r} is not installed: "
                          f"{install_hint(absent)}") from exc
    names = tuple(f"class{i}" for i in range(11))
    colors = tuple((23 * i % 256, 71 * i % 256, 137 * i % 256) for i in range(11))
    info = ModelInfo(class_names=names, colors=colors, base=base, depth=5, name=f"synthetic-base{base}",
                     extra={"dropout": [0.0] * 5})
    scratch = tempfile.TemporaryDirectory(prefix="unet-bench-")
    folder = Path(scratch.name)
    torch.manual_seed(0)
    model = build_model(info).eval()
    save_checkpoint(folder / "unet.pt", model, info)
    export_onnx(model, info, folder / "unet.onnx")
    files = {"torch": folder / "unet.pt", "onnxruntime": folder / "unet.onnx"}
    missing = {"tensorrt": "--unet-base builds no TensorRT plan; build one with unet-build and pass --model FILE.plan",
               "int8": "--unet-base builds no INT8 model; export one with unet-export --precision int8, pass "
                       "--model FILE.onnx",
               "openvino": "--unet-base runs no OpenVINO rows; pass --model FILE.onnx"}
    return ModelFiles(info.name, files, missing, info, files["onnxruntime"], scratch=scratch)


def frame_shapes(sizes: Sequence[tuple[int, int]] | None,
                 model: ModelFiles) -> tuple[list[tuple[int, int]], str | None]:
    """The (height, width) frame sizes to time and, for a TensorRT plan that takes a range of shapes, a note saying
    which were timed.

    Without ``--size``/``--shapes``: the model's working size; else, for a plan, the height and width of its
    profile's opt shape (the shape TensorRT tuned its kernels for; any other size could lie outside the profile);
    else 512x512.

    Args:
        sizes: the (width, height) sizes asked for (``--size``/``--shapes``), or None.
        model: the model's files, with its plan's profile when there is a plan.

    Returns:
        The (height, width) sizes, and the note (None unless the plan takes a range of shapes).

    Example:
        >>> frame_shapes([(480, 360)], locate_model("camvid"))  # doctest: +SKIP
        ([(360, 480)], None)
    """
    profile = model.plan_profile
    if sizes:
        chosen, why = [(h, w) for w, h in sizes], "as asked"
    elif model.info.working_size is not None:
        chosen, why = [(model.info.working_size[1], model.info.working_size[0])], "the model's working size"
    elif profile is not None:
        chosen = [(profile.opt[2], profile.opt[3])]
        why = "the height and width of the profile's opt shape (choose with --size)"
    else:
        chosen, why = [DEFAULT_SHAPE], "the default"
    if profile is None or profile.min == profile.max:
        return chosen, None
    timed = ", ".join(f"{w}x{h}" for h, w in chosen)
    return chosen, (f"the TensorRT plan takes a range of shapes (min {format_shape(profile.min)}, opt "
                    f"{format_shape(profile.opt)}, max {format_shape(profile.max)}); frames timed at {timed} (WxH): "
                    f"{why}")


def _onnx_for_flops(model: ModelFiles) -> Path | None:
    if model.onnx_for_flops is not None or "torch" not in model.files:
        return model.onnx_for_flops
    # Only a checkpoint: export it once to count its FLOPs from the same kind of graph.
    from unetrt.export.checkpoint import load_model
    from unetrt.export.onnx_export import export_onnx

    if model.scratch is None:
        model.scratch = tempfile.TemporaryDirectory(prefix="unet-bench-")
    net, info = load_model(model.files["torch"])
    model.onnx_for_flops = export_onnx(net, info, Path(model.scratch.name) / "flops.onnx")
    return model.onnx_for_flops


def _why_missing(model: ModelFiles, key: str) -> str:
    """Why ``model`` has no file for a backend or the INT8 variants."""
    return model.missing.get(key, f"none of its files (the one given and those beside it) runs on {key!r}")


def select_variants(requested: Sequence[str] | None, model: ModelFiles,
                    precision: str) -> tuple[list[Variant], list[str]]:
    """The variants to run, baseline first, and notes on what was left out.

    A backend name stands for all its variants whose model file exists (ONNX Runtime
    FP32 and INT8, ...); a variant key asks for that variant alone.

    Raises:
        ValueError: on an unknown backend, or a requested variant whose model file is missing.
    """
    catalogue = all_variants(precision)
    choices = backend_choices()
    notes: list[str] = []
    if requested is None:
        keys = [v.key for v in catalogue.values() if v.file_key in model.files]
        notes += [f"{key} not run: {model.missing[key]}" for key in (*choices, "int8") if key in model.missing]
    else:
        keys = []
        for name in requested:
            if name in choices:
                family = [v for v in catalogue.values() if v.backend == name]
                if name not in model.files:
                    raise ValueError(f"backend {name!r} cannot run {model.name}: {_why_missing(model, name)}")
                expanded = [v.key for v in family if v.file_key in model.files]
                notes += [f"{v.key} not run: {_why_missing(model, v.file_key)}" for v in family
                          if v.file_key not in model.files]
            elif name in catalogue:
                variant = catalogue[name]
                if variant.file_key not in model.files:
                    why = _why_missing(model, variant.file_key)
                    raise ValueError(f"variant {name!r} cannot run {model.name}: {why}")
                expanded = [name]
            else:
                listed = ", ".join([*choices, *(k for k in catalogue if k not in choices)])
                raise ValueError(f"unknown backend {name!r}; choose from {listed}")
            keys += [k for k in expanded if k not in keys]
    ordered = sorted(keys, key=lambda k: k != BASELINE)
    if BASELINE not in ordered:
        notes.append("no PyTorch eager FP32 baseline in this run: ratios are left empty")
    return [catalogue[k] for k in ordered], notes


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries results depend on, read from package metadata (nothing is imported)."""
    versions = {}
    for label, distributions in LIBRARIES.items():
        for distribution in distributions:
            try:
                versions[label] = metadata.version(distribution)
            except metadata.PackageNotFoundError:
                continue
            break
    tensorrt = sys.modules.get("tensorrt")
    if getattr(tensorrt, "__version__", None) is not None:
        # The bindings that ran, whatever installed them (JetPack's come from the Debian package python3-libnvinfer).
        versions["tensorrt"] = str(tensorrt.__version__)  # type: ignore[union-attr]
    torch = sys.modules.get("torch")
    if torch is not None and torch.version.cuda is not None:
        versions["cuda (torch)"] = str(torch.version.cuda)
        versions["cudnn (torch)"] = str(torch.backends.cudnn.version())
    return versions


def _torch_cuda() -> Any | None:
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def _not_on_the_chosen_gpu(variant: Variant) -> str | None:
    """Why a row cannot run on the GPU that ``--device auto`` chose, or None where it can.

    The backends' own refusals answer a device asked for ("device 'cuda' asked, but torch sees no CUDA GPU; use
    device 'cpu' or 'auto'"), which told the user of the default, on a Jetson's TensorRT, to use the default.
    """
    from unetrt.backends import onnxruntime_gpu_available

    if variant.hand_written:
        return None  # the yardstick of --end-to-end, OpenVINO on the CPU beside any device's rows
    if variant.backend == "openvino":
        why = "OpenVINO runs on the CPU alone"
    elif variant.backend == "torch" and _torch_cuda() is None:
        why = "this torch sees no CUDA GPU"
    elif variant.backend == "onnxruntime" and not onnxruntime_gpu_available():
        why = "this onnxruntime has no CUDA provider (onnxruntime-gpu has)"
    else:
        return None
    if variant.needs_cuda:
        return why
    return f"{why}; --device auto chose the GPU here, and --device cpu times this row on the CPU"


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a CUDA GPU can run here, else 'cpu'.

    A GPU counts when torch sees one, when TensorRT can run on it (its bindings and pycuda import, the driver
    sees a GPU), or when onnxruntime-gpu's CUDA provider can (:func:`unetrt.backends.onnxruntime_gpu_available`):
    a Jetson set up with JetPack's TensorRT has no torch, or a CPU build of it, and its TensorRT rows must still
    run; a desktop with onnxruntime-gpu and a CPU build of torch was told that no GPU was visible.

    Raises:
        ValueError: when 'cuda' is asked and none sees a GPU.
    """
    from unetrt.backends import onnxruntime_gpu_available, tensorrt_gpu_available
    from unetrt.cuda import pycuda_available

    has_cuda = (_torch_cuda() is not None or (tensorrt_gpu_available() and pycuda_available())
                or onnxruntime_gpu_available())
    if device == "cuda" and not has_cuda:
        raise ValueError("--device cuda asked, but no CUDA GPU is visible (neither to torch, nor to TensorRT with "
                         "pycuda, nor to onnxruntime-gpu); use --device cpu")
    if device == "auto":
        return "cuda" if has_cuda else "cpu"
    return device


class Clock:
    """Times one call: CUDA events where torch sees the GPU (synchronised per call), ``perf_counter_ns`` elsewhere.

    The host clock also times the GPU rows of a machine without a CUDA torch (a Jetson's TensorRT rows,
    onnxruntime-gpu beside a CPU build of torch), which is right because each of their steps returns only once its
    GPU work is done: a bare row's ``infer`` returns the logits on the host (TensorRT waits for its stream; ONNX
    Runtime's ``run`` returns host arrays), a device row's ``ResidentBatch.run`` waits (TensorRT synchronises its
    stream; ONNX Runtime's CUDA provider synchronises its own at the end of each Run unless the run option
    ``disable_synchronize_execution_providers`` is "1", which unetrt never sets), and an end-to-end row returns host
    masks. Only the PyTorch device rows leave work queued, and they run on a GPU only where torch sees it, under
    CUDA events.
    """

    def __init__(self, cuda: bool) -> None:
        self._torch = _torch_cuda() if cuda else None
        self.kind = "cuda-events" if self._torch is not None else "perf_counter_ns"

    def time_ms(self, step: Callable[[], None]) -> float:
        """Run ``step`` once and return its latency in milliseconds."""
        if self._torch is None:
            start = time.perf_counter_ns()
            step()
            return (time.perf_counter_ns() - start) / 1e6
        begin = self._torch.cuda.Event(enable_timing=True)
        end = self._torch.cuda.Event(enable_timing=True)
        begin.record()
        step()
        end.record()
        end.synchronize()
        return float(begin.elapsed_time(end))


def time_trial(runner: Runner, clock: Clock, iterations: int, duration: float | None) -> tuple[list[float], float]:
    """One untimed call (to re-warm caches after another variant ran), then one timed loop.

    Returns:
        Per-iteration latencies (ms) and the loop's wall time (s).
    """
    clock.time_ms(runner.step)
    samples: list[float] = []
    start = time.perf_counter()
    while True:
        samples.append(clock.time_ms(runner.step))
        elapsed = time.perf_counter() - start
        if (elapsed >= duration) if duration is not None else (len(samples) >= iterations):
            return samples, elapsed


def matmul_fp16_tflops(size: int = MATMUL_SIZE, trials: int = 5, repeats: int = 10) -> float | None:
    """The GPU's measured dense FP16 matmul rate (TFLOP/s, median of trials), or None without CUDA."""
    torch = _torch_cuda()
    if torch is None:
        return None
    a = torch.randn(size, size, device="cuda", dtype=torch.float16)
    b = torch.randn(size, size, device="cuda", dtype=torch.float16)
    for _ in range(3):
        torch.matmul(a, b)
    rates = []
    for _ in range(trials):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        for _ in range(repeats):
            torch.matmul(a, b)
        end.record()
        end.synchronize()
        rates.append(2 * size**3 * repeats / (begin.elapsed_time(end) / 1e3) / 1e12)
    del a, b
    torch.cuda.empty_cache()
    return float(np.median(rates))


class DeviceMemory:
    """Device memory a variant adds, from just before its open to the end of its warm-up (the context manager's
    block): torch's allocator peak for the PyTorch rows; for the other libraries the growth of the memory in use on
    the device, read through torch (``cudaMemGetInfo``) where torch sees the GPU, else through the CUDA driver
    (:class:`unetrt.cuda.DeviceMemoryGauge`: a Jetson's TensorRT rows, where JetPack has no CUDA torch; the ONNX
    Runtime rows of onnxruntime-gpu beside a CPU build of torch). A row that ran on the CPU gets none: on an
    integrated GPU its host memory would read as device memory."""

    def __init__(self, cuda: bool) -> None:
        self._torch = _torch_cuda() if cuda else None
        self._gauge: DeviceMemoryGauge | None = None
        self._in_use = self._allocated = 0
        if self._torch is not None:
            self._torch.cuda.synchronize()
            self._torch.cuda.reset_peak_memory_stats()
            free, total = self._torch.cuda.mem_get_info()
            self._in_use, self._allocated = total - free, self._torch.cuda.memory_allocated()
        elif cuda:
            # Held to the end of the block: the context it retains is in place before the row opens, so its own
            # memory is in neither reading.
            self._gauge = DeviceMemoryGauge(0)
            self._in_use = self._gauge.in_use()

    def __enter__(self) -> DeviceMemory:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._gauge is not None:
            self._gauge.release()

    def peak_mib(self, variant: Variant, ran_on: str) -> tuple[float | None, str | None]:
        """(MiB, how it was measured) since construction, or (None, None) for a row that ran on the CPU (``ran_on``,
        the runner's device, names no CUDA device) or in a run on the CPU."""
        if not ran_on.startswith("cuda"):
            return None, None
        if self._gauge is not None:
            note = ("device memory in use after warm-up minus before (cuMemGetInfo through the CUDA driver, in the "
                    "device's primary context, retained before the row opened so that the context itself is in "
                    "neither reading; torch sees no GPU here)")
            if self._gauge.integrated:
                note += ("; this integrated GPU's memory is the system memory it shares with the CPU, so other "
                         "processes' allocations and frees in between move the figure")
            return (self._gauge.in_use() - self._in_use) / MIB, note
        if self._torch is None:
            return None, None
        self._torch.cuda.synchronize()
        if variant.backend == "torch":
            peak = self._torch.cuda.max_memory_allocated() - self._allocated
            return peak / MIB, "torch.cuda.max_memory_allocated over load and warm-up, above what was allocated before"
        free, total = self._torch.cuda.mem_get_info()
        return (total - free - self._in_use) / MIB, "device memory in use after warm-up minus before (cudaMemGetInfo)"


def _network_hw(info: ModelInfo, frame_hw: tuple[int, int], mode: str) -> tuple[int, int]:
    height, width = frame_hw
    if mode == "end-to-end" and info.working_size is not None:
        width, height = info.working_size
    return (plan_padding(height, info.padding, info.depth).network_input,
            plan_padding(width, info.padding, info.depth).network_input)


@dataclass
class _Measured:
    """A variant held open during a group's interleaved trials."""

    variant: Variant
    runner: Runner
    rss_before: int | None
    peak_rss: int
    device_mib: float | None
    device_note: str | None
    latencies: list[list[float]] = field(default_factory=list)
    walls: list[float] = field(default_factory=list)


def measure_group(variants: Sequence[Variant], model: ModelFiles, device: str, threads: int, workload: Workload,
                  args: argparse.Namespace, flops: int | None) -> list[dict[str, Any]]:
    """Open and warm up every variant, then time them in interleaved trials; one JSON dictionary each.

    Interleaving (trial 1 of every variant, then trial 2, ...) in a rotating order
    spreads slow drifts of a shared machine's load over all variants alike.
    """
    net_h, net_w = _network_hw(model.info, workload.frame_hw, workload.mode)
    clock = Clock(device == "cuda")
    rss_resettable = reset_peak_rss()
    results: dict[str, dict[str, Any]] = {}
    measured: list[_Measured] = []
    try:
        for variant in variants:
            results[variant.key] = {
                "variant": variant.key, "label": _label(variant, model), "backend": variant.backend,
                "precision": _precision(variant, model),
                "mode": workload.mode, "frame_hw": list(workload.frame_hw),
                "network_input_hw": [net_h, net_w], "batch": workload.batch,
                "model_file": str(model.files[variant.file_key]), "versions": library_versions(), "device": device,
            }
            if variant.needs_cuda and device != "cuda":
                results[variant.key].update(status="skipped", reason="needs a CUDA GPU (this run is on the CPU)")
                continue
            off_the_gpu = _not_on_the_chosen_gpu(variant) if device == "cuda" and args.device == "auto" else None
            if off_the_gpu is not None:
                results[variant.key].update(status="skipped", reason=off_the_gpu)
                continue
            reset_peak_rss()
            rss_before = current_rss_bytes()
            runner: Runner | None = None
            with DeviceMemory(device == "cuda") as memory:
                try:
                    runner = open_runner(variant, model.files[variant.file_key], device, threads, workload,
                                         model.info)
                    for _ in range(args.warmup):
                        # The warm-up's outputs, not the timed ones: the check costs the timed calls nothing.
                        check_scores(runner.checked_step(), results[variant.key]["precision"])
                except (ValueError, ImportError, FileNotFoundError) as exc:
                    release(runner)
                    results[variant.key].update(status="skipped", reason=str(exc))
                    if isinstance(exc, NonFiniteScoresError):
                        results[variant.key]["nonfinite"] = {"precision": exc.precision, "pixels": exc.pixels,
                                                             "worst": max(exc.counts)}
                    continue
                except BaseException:  # Ctrl-C during the warm-up: the engine and its GPU memory go too
                    release(runner)
                    raise
                device_memory = memory.peak_mib(variant, runner.device)
            measured.append(_Measured(variant, runner, rss_before, peak_rss_bytes(), *device_memory))
        for trial in range(args.trials):
            shift = trial % max(len(measured), 1)
            for entry in measured[shift:] + measured[:shift]:
                reset_peak_rss()
                samples, wall = time_trial(entry.runner, clock, args.iterations, args.duration)
                entry.latencies.append(samples)
                entry.walls.append(wall)
                entry.peak_rss = max(entry.peak_rss, peak_rss_bytes())
    finally:
        for entry in measured:
            release(entry.runner)
    for entry in measured:
        results[entry.variant.key].update(_figures(entry, workload.batch, flops, clock.kind, device, rss_resettable))
    return [results[v.key] for v in variants]


def check_scores(logits: np.ndarray | None, precision: str | None) -> None:
    """Refuse a network-only row's output (N x K x H x W logits) whose scores are NaN or infinite, as
    ``Segmenter`` refuses an end-to-end row's: a row timing a broken engine (an FP16 overflow) would read as a fast
    result. A pixel counts as the finish counts it: its best score (the argmax's, a binary model's one) is not
    finite, so a NaN or +inf in any class counts and a -inf that loses does not.

    Args:
        logits: the output of one warm-up call, or None where the call checked its own (end-to-end).
        precision: what the row ran at, whose cause and fix the error names (None: not known).

    Raises:
        NonFiniteScoresError: naming the pixels per image and the fix for ``precision``.

    Example:
        >>> check_scores(np.zeros((1, 3, 4, 4), np.float32), "fp16")  # finite: nothing happens
    """
    if logits is None:
        return
    with np.errstate(invalid="ignore"):
        # np.max keeps a NaN of any class, as the argmax's best value does.
        best = np.asarray(logits, np.float32).max(axis=1)
    counts = (~np.isfinite(best)).reshape(len(best), -1).sum(axis=1)
    if counts.any():
        raise NonFiniteScoresError(counts.tolist(), best[0].size, precision, frame="the network's output")


def _precision(variant: Variant, model: ModelFiles) -> str | None:
    """What the row runs at: a TensorRT row its plan's precision; an ONNX row of the FP32 model the precision of the
    file given, read from its content (an FP16 graph, such as NAME.fp16.onnx or one made elsewhere, runs FP16)."""
    if variant.backend == "tensorrt":
        return model.plan_precision
    if variant.precision == "fp32" and variant.backend != "torch" and not variant.hand_written:
        return file_precision(model.files[variant.file_key])
    return variant.precision


def _label(variant: Variant, model: ModelFiles) -> str:
    """The row's name; a TensorRT row says how its plan was built (the same row runs FP32, FP16, INT8 or DLA), an
    FP32 row of an ONNX file of another precision says that precision."""
    ran = _precision(variant, model)
    if variant.backend != "tensorrt" and ran is not None and ran != variant.precision \
            and variant.label.endswith(" FP32"):
        return f"{variant.label.removesuffix(' FP32')} {ran.upper()}"
    if variant.backend != "tensorrt" or model.plan_precision is None:
        return variant.label
    dla = "" if model.plan_dla_core is None else f", DLA core {model.plan_dla_core}"
    return f"{variant.label} {model.plan_precision.upper()}{dla}"


def _figures(entry: _Measured, batch: int, flops: int | None, timer: str, device: str,
             rss_resettable: bool) -> dict[str, Any]:
    stats = summarize(entry.latencies)
    throughput = float(np.median([len(s) * batch / wall for s, wall in zip(entry.latencies, entry.walls)]))
    return {
        "status": "ok",
        "device": entry.runner.device,
        "cpu_threads": entry.runner.threads if device == "cpu" else None,
        "timer": timer,
        "latency_ms": stats.to_dict(),
        "samples_ms": [round(v, 4) for trial in entry.latencies for v in trial],
        "throughput_images_per_s": throughput,
        "flops_per_image": flops,
        "achieved_tflops": flops * throughput / 1e12 if flops is not None else None,
        "peak_rss_mib": entry.peak_rss / MIB,
        "rss_before_open_mib": entry.rss_before / MIB if entry.rss_before is not None else None,
        "rss_note": ("process-wide RSS high-water mark over this variant's load, warm-up and trials (reset before "
                     "each); it includes the interpreter and every variant of this group held open at the time"
                     if rss_resettable else
                     "process-wide RSS high-water mark since the process started (the kernel refused a reset)"),
        "peak_device_mib": entry.device_mib,
        "device_memory_note": entry.device_note,
    }


def add_ratios(results: list[dict[str, Any]]) -> None:
    """Set each result's ``speedup_vs_torch_fp32``, ``speedup_vs_onnxruntime_fp32`` and ``speedup_vs_hand_written``:
    that variant's median latency / the result's median latency, on the same workload (None when it did not run, or
    ran at another precision than the reference's: the ONNX Runtime row of an FP16 file is no FP32 reference)."""
    for key, reference, precision in (("speedup_vs_torch_fp32", BASELINE, "fp32"),
                                      ("speedup_vs_onnxruntime_fp32", "onnxruntime", "fp32"),
                                      ("speedup_vs_hand_written", HAND_WRITTEN, "int8")):
        baselines = {_group(r): r for r in results
                     if r["variant"] == reference and r["status"] == "ok" and r["precision"] == precision}
        for result in results:
            base = baselines.get(_group(result))
            ok = result["status"] == "ok" and base is not None
            result[key] = base["latency_ms"]["median"] / result["latency_ms"]["median"] if ok and base else None


def add_matmul_fractions(results: list[dict[str, Any]], rates: dict[str, Any]) -> None:
    """Set each CPU row's ``fraction_of_matmul_rate``: its convolution GFLOP/s over the measured dense matmul
    rate of its precision (INT8, BF16 or FP32; the best engine's)."""
    for result in results:
        best = rates["best"].get(result["precision"])
        achieved = result.get("achieved_tflops")
        result["fraction_of_matmul_rate"] = achieved * 1e3 / best[1] if best and achieved is not None else None


def _group(result: dict[str, Any]) -> tuple[Any, ...]:
    return result["mode"], tuple(result["frame_hw"]), result["batch"]


TABLE_COLUMNS = ("Variant", "Device", "Input (NxHxW)", "Median ms", "±%", "Mean", "p50", "p90", "p99", "Min", "Max",
                 "img/s", "× eager FP32", "× ORT FP32", "× hand-written", "TFLOP/s", "% matmul", "Peak RSS MiB",
                 "Peak dev MiB")


def _cell(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def format_table(results: Sequence[dict[str, Any]]) -> str:
    """The results as one Markdown table; skipped variants keep a row with their reason."""
    rows = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    for r in results:
        shape = f"{r['batch']}x{r['network_input_hw'][0]}x{r['network_input_hw'][1]}"
        if r.get("mode") == "end-to-end":
            # The frames are what an end-to-end row times: rows of two --size values share the network's input.
            shape = f"{r['batch']}x{r['frame_hw'][0]}x{r['frame_hw'][1]} frames (network {shape})"
        if r["status"] != "ok":
            cells = [r["label"], r["device"], shape, f"skipped: {r['reason']}", *[""] * (len(TABLE_COLUMNS) - 4)]
        else:
            lat = r["latency_ms"]
            speedup, over_ort, over_hand = (r["speedup_vs_torch_fp32"], r["speedup_vs_onnxruntime_fp32"],
                                            r["speedup_vs_hand_written"])
            share = r.get("fraction_of_matmul_rate")
            cells = [f"{r['label']}", r["device"], shape, _cell(lat["median"]), _cell(lat["spread_pct"], 1),
                     *(_cell(lat[k]) for k in ("mean", "p50", "p90", "p99", "min", "max")),
                     _cell(r["throughput_images_per_s"], 1), "–" if speedup is None else f"{speedup:.2f}×",
                     "–" if over_ort is None else f"{over_ort:.2f}×",
                     "–" if over_hand is None else f"{over_hand:.2f}×", _cell(r["achieved_tflops"], 3),
                     "–" if share is None else f"{100 * share:.0f}%", _cell(r["peak_rss_mib"], 0),
                     _cell(r["peak_device_mib"], 0)]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def format_report(report: dict[str, Any]) -> str:
    """Header lines (model, machine, settings) and the table, as Markdown."""
    machine = report["machine"]
    load = machine["load_average_before"]
    settings = report["settings"]
    lines = [
        f"**unet-bench** {report['created']} — model `{report['model']['name']}` "
        f"(base {report['model']['base']}, depth {report['model']['depth']}, "
        f"{report['model']['num_classes']} classes), mode **{settings['mode']}**",
        "",
        f"Machine: {describe_cpu(machine)}, {machine['usable_cores']} usable cores, "
        f"load average before {_load(load)} / after {_load(machine['load_average_after'])}; "
        f"GPU: {machine['gpu'] or 'none'}{_tensorrt_version(report)}; CPU threads per backend: {settings['threads']} "
        f"(ONNX Runtime spinning off, torch OMP_WAIT_POLICY={settings['omp_wait_policy'] or 'unset'}); "
        f"{settings['trials']} trials x {settings['iterations_per_trial']} after {settings['warmup']} warm-up.",
    ]
    if machine.get("jetson"):
        lines.append(machine["jetson"]["description"])
    lines += [f"**Warning:** {warning}" for warning in report.get("warnings", [])]
    if report["matmul_fp16_tflops"] is not None:
        lines.append(f"Measured dense FP16 matmul rate: {report['matmul_fp16_tflops']:.1f} TFLOP/s")
    if report.get("matmul_cpu_gflops") is not None:
        from .bench_matmul import format_rates

        lines += ["", format_rates(report["matmul_cpu_gflops"]), ""]
    if report.get("default_path") is not None:
        lines.append(f"Default path of Segmenter({report['model']['name']!r}) here: {report['default_path']}")
    lines += [f"Note: {note}" for note in report["notes"]]
    lines += ["", format_table(report["results"]), "",
              "Median = median of trial medians; ±% = range of the trial medians; × eager FP32 = speed-up over "
              "PyTorch eager FP32 on the same device and input; × ORT FP32 = the same over ONNX Runtime FP32; "
              "× hand-written = the same over the hand-written OpenVINO INT8 pipeline (--end-to-end); TFLOP/s "
              "counts Conv/ConvTranspose FLOPs only; % matmul = that rate over the measured dense matmul rate of the "
              "row's precision (--matmul)."]
    return "\n".join(lines)


def _tensorrt_version(report: dict[str, Any]) -> str:
    """', TensorRT X' when a TensorRT row ran: a plan's speed depends on the TensorRT release that built and runs it."""
    version = report["versions"].get("tensorrt")
    ran = any(r["backend"] == "tensorrt" and r["status"] == "ok" for r in report["results"])
    return f", TensorRT {version}" if ran and version else ""


def _load(load: Sequence[float] | None) -> str:
    return "n/a" if load is None else "/".join(f"{v:.2f}" for v in load)


def write_plot(results: Sequence[dict[str, Any]], path: Path) -> Path:
    """Box plots of per-iteration latency, one panel per workload, one box per variant.

    Raises:
        ImportError: without matplotlib.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("--plot needs matplotlib: pip install matplotlib") from exc
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in results:
        if r["status"] == "ok":
            groups.setdefault(_group(r), []).append(r)
    if not groups:
        raise ValueError("nothing to plot: no variant ran")
    widest = max(len(rows) for rows in groups.values())
    fig, axes = plt.subplots(1, len(groups), figsize=(2 + 1.6 * widest * len(groups), 5), squeeze=False)
    for ax, ((mode, frame_hw, batch), rows) in zip(axes[0], groups.items()):
        ax.boxplot([r["samples_ms"] for r in rows], showfliers=True)
        ax.set_xticks(range(1, len(rows) + 1), [f"{r['label']}\n{r['device']}" for r in rows], fontsize=7,
                      rotation=30, ha="right")
        ax.set_yscale("log")
        ax.set_ylabel("latency per call (ms, log scale)")
        ax.set_title(f"{mode}, frame {frame_hw[1]}x{frame_hw[0]} (WxH), batch {batch}", fontsize=9)
        ax.grid(True, axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    png = plot_png(fig, dpi=120)
    plt.close(fig)
    write_whole(path, png)
    return path


def _tune_torch_for_gpu(torch: Any | None) -> dict[str, bool] | None:
    # The baseline gets what a careful PyTorch user sets for fixed input shapes: cuDNN autotuning.
    if torch is None:
        return None
    torch.backends.cudnn.benchmark = True
    return {"cudnn.benchmark": True, "cudnn.allow_tf32 (FP32 convolutions on tensor cores)":
            bool(torch.backends.cudnn.allow_tf32)}


def require_tensorrt() -> None:
    """Fail early, in one line, when the TensorRT backend cannot run here (no tensorrt or no pycuda).

    Raises:
        ImportError: naming what to install.
    """
    from unetrt.backends.tensorrt import require_pycuda
    from unetrt.backends.tensorrt import require_tensorrt as require_bindings

    require_bindings()
    require_pycuda()


def _check_report_file(path: Path | None, flag: str, overwrite: bool) -> None:
    """The report files are written at the end of the run: refuse one that cannot be written, or that would
    replace an earlier file without ``--overwrite``, before the first trial."""
    if path is None:
        return
    check_folder(path.parent, "output folder")
    check_writable_file(path, f"{flag} {str(path)!r}")
    check_not_replacing(path, f"{flag} {str(path)!r}", overwrite)


def _model_files_and_metadata(model: ModelFiles) -> dict[str, Path]:
    """What a report file must not replace: the model's files, and a plan's metadata (without it the plan will not
    load)."""
    from unetrt.plan_metadata import metadata_path

    files = {f"the model file ({kind})": path for kind, path in model.files.items()}
    if "tensorrt" in model.files:
        files["the TensorRT plan's metadata"] = metadata_path(model.files["tensorrt"])
    return files


def run_benchmark(args: argparse.Namespace, command: Sequence[str] = ()) -> dict[str, Any]:
    """Run the benchmark ``args`` describe; print and write the report; return it.

    Args:
        args: the parsed command line.
        command: the arguments as given, recorded in the report.

    Raises:
        ValueError, FileNotFoundError, ImportError: on a request that cannot be served (the CLI turns them
        into one line and exit code 2).
    """
    reports = ((args.output, "--output"), (args.markdown, "--markdown"), (args.plot, "--plot"))
    for output, flag in reports:
        _check_report_file(output, flag, args.overwrite)
    given = [(output, flag) for output, flag in reports if output is not None]
    for index, (output, flag) in enumerate(given):
        for other, other_flag in given[:index]:
            if same_file(output, other):
                # Written one after the other at the end: the JSON would be lost under the Markdown without a word.
                raise ValueError(f"{other_flag} and {flag} both name {str(output)!r}; give each report a file of its "
                                 "own")
    if args.plot is not None:
        if args.plot.suffix.lower() != ".png":
            raise ValueError(f"--plot writes a PNG; give a file ending in .png, got {str(args.plot)!r}")
        if importlib.util.find_spec("matplotlib") is None:  # before the run, not after it
            raise ImportError("--plot needs matplotlib: pip install matplotlib")
    if "tensorrt" in (args.backend or []) or Path(args.model or "").suffix in (".plan", ".engine"):
        require_tensorrt()
    if args.unet_base is not None:
        model = synthetic_model(args.unet_base)
    else:
        # --precision fp32 times every row at FP32, the engine cache's TensorRT engine too (it timed the FP16 one).
        engine_precision = "fp32" if args.precision == "fp32" else "fp16"
        model = locate_model(args.model, args.build, args.shape, args.batch_size, engine_precision)
    for output, flag in reports:
        if output is not None:
            check_reads_nothing(output, f"{flag} {str(output)!r}", files=_model_files_and_metadata(model))
    channels = getattr(args, "channels", [])
    if channels and channels != [model.info.in_channels]:
        raise ValueError(f"--shapes gives {','.join(map(str, channels))} channels, but {model.name} takes "
                         f"{model.info.in_channels}")
    device = resolve_device(args.device)
    default_precision = "fp16" if device == "cuda" else "fp32"
    precision = args.precision if args.precision in ("fp32", "fp16") else default_precision
    # On a CPU, FP16 is what unet-stream runs there at FP16: the FP16 ONNX file on ONNX Runtime and OpenVINO; the
    # PyTorch rows at FP16 need a GPU. (This refused the CPU while unet-stream ran the file on it.)
    cpu_fp16 = precision == "fp16" and device != "cuda"
    if cpu_fp16:
        model = cpu_fp16_files(model, args.model or str(model.files["onnxruntime"]))
    variants, notes = select_variants(args.backend, model, "fp32" if cpu_fp16 else precision)
    if cpu_fp16:
        variants = [v for v in variants
                    if v.key == BASELINE or (_precision(v, model) == "fp16" and not v.needs_cuda)]
        if not any(v.key != BASELINE for v in variants):
            raise ValueError(f"no fp16 variant can run {model.name} on the CPU (the FP16 ONNX file runs on "
                             "onnxruntime and openvino; name one with --backend, or leave --backend out)")
    if args.precision in ("int8", "bf16"):
        def runs_at(variant: Variant) -> bool:
            precision = model.plan_precision if variant.backend == "tensorrt" else variant.precision
            return precision == args.precision

        variants = [v for v in variants if runs_at(v) or v.key in (BASELINE, "onnxruntime")]
        if not any(runs_at(v) for v in variants):
            # Name the rows that do run at that precision: the notes alone say what else was left out.
            able = [v.key for v in all_variants(precision).values()
                    if v.file_key in model.files and runs_at(v) and not v.hand_written]
            fix = (f"{args.precision} rows here: {', '.join(able)}; name one with --backend, or leave --backend out"
                   if able else '; '.join(notes) or f"{model.name} has no {args.precision} model file here")
            raise ValueError(f"no {args.precision} variant can run {model.name} here ({fix})")
    notes = [*args.note, *notes]
    if any(v.backend == "tensorrt" for v in variants):
        require_tensorrt()
    mode = "end-to-end" if args.end_to_end else "device" if args.no_data_transfers else "bare"
    if mode != "end-to-end":
        if HAND_WRITTEN in (args.backend or []):
            raise ValueError(f"{HAND_WRITTEN} is a whole frame-to-mask pipeline: add --end-to-end")
        # A pipeline, not a way of running the network: it has no bare or device-resident form.
        variants = [v for v in variants if not v.hand_written]
    shapes, shape_note = frame_shapes(args.shape, model)
    # A size or batch given twice (--size and the same --shapes, --batch-size 1,1) is one workload, timed once: two
    # groups of it were timed apart and every ratio taken against the other group's reference row.
    shapes = list(dict.fromkeys(shapes))
    batches = list(dict.fromkeys(args.batch_size))
    if shape_note is not None:
        notes.append(shape_note)
    threads = args.threads or usable_cores()
    if importlib.util.find_spec("onnx") is None:  # the runtime alone: the network is timed, its FLOPs uncounted
        onnx_path = None
        notes.append("onnx is not installed (pip install onnx): FLOPs and TFLOP/s are not counted")
    else:
        onnx_path = _onnx_for_flops(model)
        if onnx_path is None:
            notes.append("no ONNX file of this model: FLOPs and TFLOP/s are not counted")
    machine = machine_description()
    machine["load_average_before"] = machine.pop("load_average")
    jetson = jetson_state()
    machine["jetson"] = None if jetson is None else jetson.to_dict()
    warning = None if jetson is None else jetson.warning()
    warnings = [] if warning is None else [warning]
    if warning is not None:  # before the run, so that it can be stopped and the clocks locked
        print(f"unet-bench: warning: {warning}", file=sys.stderr)
    torch_cuda = _torch_cuda() if device == "cuda" else None
    machine["gpu"] = _gpu_name(torch_cuda) if device == "cuda" else None
    matmul = matmul_fp16_tflops() if device == "cuda" else None
    torch_flags = _tune_torch_for_gpu(torch_cuda)
    images = () if args.frames is None else tuple(list_images(args.frames, "--frames folder"))
    if images:
        notes.append(f"frames: the first images of {args.frames} (not random pixels)")
    groups = [(shape, batch) for shape in shapes for batch in batches]
    results = []
    for frame_hw, batch in tqdm(groups, desc="unet-bench", unit="workload", disable=None, file=sys.stderr):
        net_hw = _network_hw(model.info, frame_hw, mode)
        flops = flops_per_image(onnx_path, model.info.in_channels, *net_hw) if onnx_path is not None else None
        workload = Workload(mode, frame_hw, batch, args.seed, images)
        results += measure_group(variants, model, device, threads, workload, args, flops)
    if not any(r["status"] == "ok" for r in results):
        raise ValueError(f"no variant could run here: {_skip_reasons(results)}")
    add_ratios(results)
    matmul_cpu = None
    if args.matmul and device == "cpu":
        from .bench_matmul import measure_matmul_rates

        matmul_cpu = measure_matmul_rates(threads)
        add_matmul_fractions(results, matmul_cpu)
    for r in results:
        if matmul is not None and r.get("achieved_tflops") is not None:
            r["fraction_of_matmul_peak"] = r["achieved_tflops"] / matmul
    machine["load_average_after"] = machine_description()["load_average"]
    report = {
        "schema": SCHEMA,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": ["unet-bench", *command],
        "machine": machine,
        "versions": library_versions(),
        "model": {"name": model.name, "files": {k: str(v) for k, v in model.files.items()},
                  "base": model.info.base, "depth": model.info.depth, "num_classes": model.info.num_classes,
                  "working_size": model.info.working_size, "activation": model.info.activation},
        "settings": {"mode": mode, "device": device, "precision": precision, "threads": threads,
                     "warmup": args.warmup, "iterations_per_trial": args.iterations if args.duration is None
                     else f"{args.duration}s", "trials": args.trials, "batches": batches,
                     "frame_shapes_hw": [list(s) for s in shapes], "seed": args.seed,
                     "frames": None if args.frames is None else str(args.frames), "torch_gpu_flags": torch_flags,
                     "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                     "onnxruntime_session": "ORT_ENABLE_ALL, sequential, intra-op spinning off"},
        "matmul_fp16_tflops": matmul,
        "matmul_cpu_gflops": matmul_cpu,
        "default_path": _default_path(args.model),
        "notes": notes,
        "warnings": warnings,
        "results": results,
    }
    text = format_report(report)
    print_out(text)
    # Each report replaces a file given with --overwrite whole or not at all: never a half-written earlier result.
    if args.output is not None:
        import json

        write_whole(args.output, json.dumps(report, indent=2) + "\n")
    if args.markdown is not None:
        write_whole(args.markdown, text + "\n")
    if args.plot is not None:
        write_plot(results, args.plot)
    if model.scratch is not None:
        model.scratch.cleanup()
    unserved = unserved_requests(_named_rows(args), variants, results)
    if unserved:
        # The report is out; the exit code still says that the row the user asked for is not in it.
        raise ValueError(f"{'; '.join(unserved)} (the rows that ran are in the report above)")
    return report


def _named_rows(args: argparse.Namespace) -> list[str]:
    """The backends and variants the user named: ``--backend`` values, and TensorRT for a plan given as the model."""
    named = list(args.backend or [])
    if Path(args.model or "").suffix in (".plan", ".engine") and "tensorrt" not in named:
        named.append("tensorrt")
    return named


def unserved_requests(named: Sequence[str], variants: Sequence[Variant],
                      results: Sequence[dict[str, Any]]) -> list[str]:
    """One line for each backend or variant the user named of which no row ran, with the rows' reasons.

    A named row that was skipped (a plan this GPU or TensorRT release cannot load, a CUDA row on the CPU) would
    otherwise leave exit code 0 behind whenever another row ran.
    """
    lines = []
    for name in named:
        keys = {v.key for v in variants if name in (v.key, v.backend)}
        rows = [r for r in results if r["variant"] in keys]
        if rows and not any(r["status"] == "ok" for r in rows):
            lines.append(f"{name} did not run: {_skip_reasons(rows)}")
    return lines


def _skip_reasons(rows: Sequence[dict[str, Any]]) -> str:
    """Why skipped rows did not run, in one line: the reason alone where all share it, else each reason after the
    rows it stopped (a network giving NaN names FP32 as the fix on its BF16 row and the model on its FP32 rows).

    Example:
        >>> _skip_reasons([{"label": "OpenVINO BF16", "reason": "a"}, {"label": "ONNX Runtime FP32", "reason": "b"}])
        'ONNX Runtime FP32: b; OpenVINO BF16: a'
    """
    by_reason: dict[str, list[str]] = {}
    for row in rows:
        labels = by_reason.setdefault(_summary_reason(row, rows), [])
        if row["label"] not in labels:
            labels.append(row["label"])
    if len(by_reason) == 1:
        return next(iter(by_reason))
    return "; ".join(sorted(f"{', '.join(labels)}: {reason}" for reason, labels in by_reason.items()))


def _summary_reason(row: dict[str, Any], rows: Sequence[dict[str, Any]]) -> str:
    """A skipped row's reason as the one-line summary tells it. NaN or infinite scores are told once per precision
    ran at (its cause and fix): each row's own line counts other pixels (a batch of 4 frames, the network's output
    alone), so the summary gives the largest share of an image's pixels that any row of that precision met."""
    found = row.get("nonfinite")
    if found is None:
        return str(row["reason"])
    share = max(other["nonfinite"]["worst"] / other["nonfinite"]["pixels"] for other in rows
                if other.get("nonfinite") is not None and other["nonfinite"]["precision"] == found["precision"])
    percent = f"{100 * share:.0f}%" if share >= 0.01 else f"{100 * share:.2g}%"
    advice = NONFINITE_ADVICE.get(found["precision"], NONFINITE_ADVICE[None])
    return f"the network gave NaN or infinite scores at up to {percent} of an image's pixels {advice}"


def _gpu_name(torch_cuda: Any | None) -> str:
    """The GPU's name, from torch when it sees the GPU, else from pycuda (a Jetson without a CUDA torch), else from
    the driver (onnxruntime-gpu alone: "pycuda is not installed ... to run TensorRT engines" stopped its run)."""
    if torch_cuda is not None:
        return str(torch_cuda.cuda.get_device_name())
    from unetrt.backends.tensorrt import gpu_identity
    from unetrt.cuda import cuda_device_name, pycuda_available

    return gpu_identity(0).name if pycuda_available() else cuda_device_name(0)


def _default_path(engine: str | None) -> str | None:
    """What ``Segmenter(engine)`` runs here, in words, for a bundled model name (None otherwise)."""
    if engine is None or Path(engine).suffix or len(Path(engine).parts) > 1:
        return None
    from unetrt.backends import choose_model

    choice = choose_model(engine)  # the device Segmenter(engine) takes by default, whatever --device says
    return f"{choice.backend} {choice.precision.upper()} ({choice.path.name})"


def quiet_openmp() -> str | None:
    """Make PyTorch's OpenMP threads block when idle, as ONNX Runtime's do (``allow_spinning=0``).

    libgomp threads spin-wait between operators by default; on a machine with any
    other load they then take the cores the working threads need, and PyTorch with
    as many threads as cores runs several times slower than with one. Setting
    ``OMP_WAIT_POLICY=PASSIVE`` before torch is imported gives the baseline the same
    treatment as ONNX Runtime. A value the user set is kept.

    Returns:
        The policy torch will run with, or None when torch was imported before (too late to change).
    """
    if "torch" in sys.modules:
        return None
    return os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``unet-bench``; returns the exit code."""
    quiet_openmp()
    command = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(command)
    return run_cli(lambda: run_benchmark(args, command))


if __name__ == "__main__":
    sys.exit(main())
