"""One vocabulary of flags across the commands: every spelling of a concept parses to the same value, errors are
one line that lists the choices, and --help shows one name per concept with defaults that read right."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Any

import pytest

from unetrt.cli_options import (
    MAX_WORKSPACE_MIB,
    CommandParser,
    add_device,
    add_model,
    trtexec_pool_mib,
    trtexec_shape,
)
from unetrt.cpu import MAX_THREADS

STREAM = "unetrt.stream.cli"
EVAL = "unetrt.evaluate"
BENCH = "unetrt.benchmarks.bench"
EXPORT = "unetrt.export.onnx_export"
BUILD = "unetrt.export.tensorrt"
TRAIN = "unetrt.export.train"
BATCH = "unetrt.batch.cli"
WEIGHTS = "unetrt.export.weights_figure"
COMMANDS = {STREAM: "unet-stream", EVAL: "unet-eval", BENCH: "unet-bench", EXPORT: "unet-export",
            BUILD: "unet-build", TRAIN: "unet-train", BATCH: "unet-batch", WEIGHTS: "unet-weights"}
# The arguments each command needs besides the one under test.
BASE = {STREAM: ["in.mp4"], EVAL: ["--model", "camvid", "--images", "i", "--labels", "l"],
        BENCH: ["--model", "camvid"], EXPORT: ["c.pt", "-o", "m.onnx"], BUILD: ["m.onnx"],
        TRAIN: ["--dataset", "camvid", "--data", "d"], BATCH: ["in.mp4", "--model", "camvid", "-o", "masks"],
        WEIGHTS: ["--images", "i", "--labels", "l"]}


def parser_of(module: str) -> argparse.ArgumentParser:
    if module in (EXPORT, TRAIN, WEIGHTS):
        pytest.importorskip("torch")
    parser: argparse.ArgumentParser = importlib.import_module(module).build_parser()
    return parser


# (command, arguments besides the tested ones, attribute, value, every spelling that must give it).
SPELLINGS: list[tuple[str, list[str] | None, str, Any, list[list[str]]]] = [
    # model
    (STREAM, None, "model", "m.onnx", [["--model", "m.onnx"], ["--network", "m.onnx"]]),
    (EVAL, ["--images", "i", "--labels", "l"], "model", "m.onnx", [["--model", "m.onnx"]]),
    (BENCH, [], "model", "m.plan", [["--model", "m.plan"], ["--engine", "m.plan"], ["--loadEngine=m.plan"],
                                    ["--onnx", "m.plan"]]),
    (EXPORT, ["-o", "m.onnx"], "model", "c.pt", [["--model", "c.pt"], ["c.pt"]]),
    (BUILD, [], "model", "m.onnx", [["--model", "m.onnx"], ["m.onnx"], ["--onnx=m.onnx"]]),
    (BATCH, ["in.mp4", "-o", "masks"], "model", "camvid", [["--model", "camvid"]]),
    # output
    (STREAM, None, "output", "out.mp4", [["-o", "out.mp4"], ["--output", "out.mp4"], ["out.mp4"]]),
    (EVAL, None, "output", "f.json", [["-o", "f.json"], ["--output", "f.json"], ["--json", "f.json"]]),
    (BENCH, None, "output", Path("r.json"), [["-o", "r.json"], ["--output", "r.json"], ["--json", "r.json"]]),
    (EXPORT, ["c.pt"], "output", "m.onnx", [["-o", "m.onnx"], ["--output", "m.onnx"]]),
    (BUILD, None, "output", "m.plan", [["-o", "m.plan"], ["--output", "m.plan"], ["--saveEngine=m.plan"]]),
    (TRAIN, None, "output", "runs/x", [["-o", "runs/x"], ["--output", "runs/x"], ["--out", "runs/x"]]),
    (BATCH, ["in.mp4", "--model", "camvid"], "output", "masks", [["-o", "masks"], ["--output", "masks"]]),
    (WEIGHTS, None, "output", "w.png", [["-o", "w.png"], ["--output", "w.png"], ["--out", "w.png"]]),
    # device
    (STREAM, None, "device", "cuda:1", [["--device", "cuda:1"], ["--device", "CUDA:1"]]),
    (EVAL, None, "device", "cpu", [["--device", "cpu"]]),
    (BENCH, None, "device", "cuda", [["--device", "cuda"]]),
    (TRAIN, None, "device", "cpu", [["--device", "cpu"]]),
    # size: the working size, or the frame size of unet-bench
    (STREAM, None, "working_size", (256, 192), [["--size", "256x192"], ["--working-size", "256x192"]]),
    (EVAL, None, "working_size", (256, 192), [["--size", "256x192"], ["--working-size", "256x192"]]),
    (EXPORT, None, "working_size", (256, 192), [["--size", "256x192"], ["--working-size", "256x192"]]),
    (BUILD, None, "working_size", (256, 192), [["--size", "256x192"]]),
    (TRAIN, None, "working_size", (256, 192), [["--size", "256x192"], ["--working-size", "256x192"]]),
    (BATCH, None, "working_size", (256, 192), [["--size", "256x192"], ["--working-size", "256x192"]]),
    (WEIGHTS, None, "size", (256, 192), [["--size", "256x192"]]),
    (BENCH, None, "shape", [(480, 360)], [["--size", "480x360"], ["--shape", "480x360"],
                                         ["--shapes=image:1x3x360x480"]]),
    # precision
    (STREAM, None, "precision", "int8", [["--precision", "int8"]]),
    (EVAL, None, "precision", "bf16", [["--precision", "bf16"]]),
    (BATCH, None, "precision", "fp16", [["--precision", "fp16"]]),
    (BENCH, None, "precision", "fp16", [["--precision", "fp16"], ["--fp16"]]),
    (BENCH, None, "precision", "int8", [["--precision", "int8"], ["--int8"]]),
    (EXPORT, None, "fp16", True, [["--precision", "fp16"], ["--fp16"], ["--precision", "fp16,int8"]]),
    (EXPORT, None, "int8", True, [["--precision", "int8"], ["--int8"], ["--precision", "fp16,int8"]]),
    (BUILD, None, "fp16", True, [["--precision", "fp16"], ["--fp16"]]),
    (BUILD, None, "int8", True, [["--precision", "int8"], ["--int8"]]),
    # threads and batch size
    (STREAM, None, "threads", 2, [["--threads", "2"]]),
    (EVAL, None, "threads", 2, [["--threads", "2"]]),
    (BENCH, None, "threads", 2, [["--threads", "2"]]),
    (TRAIN, None, "threads", 2, [["--threads", "2"]]),
    (BATCH, None, "threads", 2, [["--threads", "2"]]),
    (BENCH, None, "batch_size", [1, 8], [["--batch-size", "1,8"], ["--batch", "1,8"]]),
    (BENCH, None, "batch_size", [8], [["--shapes=image:8x3x360x480"], ["--batch-size", "8"]]),
    (TRAIN, None, "batch_size", 4, [["--batch-size", "4"]]),
    (BATCH, None, "batch_size", 4, [["--batch-size", "4"]]),
    # trtexec's spellings in unet-build and unet-bench
    (BUILD, None, "opt_shape", (1, 3, 192, 256), [["--opt-shape", "1x3x192x256"],
                                                  ["--optShapes=image:1x3x192x256"]]),
    (BUILD, None, "min_shape", (1, 3, 96, 128), [["--min-shape", "1x3x96x128"], ["--minShapes=image:1x3x96x128"]]),
    (BUILD, None, "max_shape", (4, 3, 384, 512), [["--max-shape", "4x3x384x512"],
                                                  ["--maxShapes=image:4x3x384x512"]]),
    (BUILD, None, "timing_cache", Path("t.cache"), [["--timing-cache", "t.cache"], ["--timingCacheFile=t.cache"]]),
    (BUILD, None, "workspace", 1024, [["--workspace", "1024"], ["--memPoolSize=workspace:1G"],
                                      ["--memPoolSize=workspace:1024M"]]),
    (BUILD, None, "opt_level", 5, [["--opt-level", "5"], ["--builderOptimizationLevel=5"]]),
    (BUILD, None, "dla_core", 0, [["--dla-core", "0"], ["--useDLACore=0"]]),
    (BENCH, None, "no_data_transfers", True, [["--no-data-transfers"], ["--noDataTransfers"]]),
    # jetson-inference segnet's spellings in unet-stream
    (STREAM, None, "max_fps", 15.0, [["--max-fps", "15"], ["--input-rate", "15"], ["--framerate=15"]]),
    (STREAM, None, "loop", -1, [["--loop", "-1"], ["--input-loop=-1"]]),
    (STREAM, None, "input_width", 640, [["--input-width", "640"]]),
    (STREAM, None, "input_flip", "rotate-180", [["--input-flip", "rotate-180"]]),
    (STREAM, None, "visualize", "overlay,mask", [["--visualize", "overlay,mask"], ["--visualize=overlay,mask"]]),
    (STREAM, None, "alpha", 0.7, [["--alpha", "0.7"]]),
    (STREAM, None, "ignore_classes", ("sky", "road"), [["--ignore-class", "sky,road"], ["--ignore-class=sky, road"]]),
]


@pytest.mark.parametrize(("module", "base", "dest", "value", "spellings"), SPELLINGS,
                         ids=[f"{COMMANDS[c[0]]}-{c[2]}-{c[4][-1][0].split('=')[0]}" for c in SPELLINGS])
def test_every_spelling_of_a_concept_parses_to_the_same_value(module: str, base: list[str] | None, dest: str,
                                                               value: Any, spellings: list[list[str]]) -> None:
    parser = parser_of(module)
    for spelling in spellings:
        args = parser.parse_args([*(BASE[module] if base is None else base), *spelling])
        assert getattr(args, dest) == value, spelling


# Shown in --help: the one name of each concept the command has; never the aliases.
VISIBLE = {STREAM: ["--model", "--output", "--device", "--size", "--precision", "--threads"],
           EVAL: ["--model", "--output", "--device", "--size", "--precision", "--threads"],
           BENCH: ["--model", "--output", "--device", "--size", "--precision", "--threads", "--batch-size"],
           EXPORT: ["--model", "--output", "--size", "--precision"],
           BUILD: ["--model", "--output", "--size", "--precision"],
           TRAIN: ["--output", "--device", "--size", "--threads", "--batch-size"],
           BATCH: ["--model", "--output", "--size", "--precision", "--threads", "--batch-size"],
           WEIGHTS: ["--output", "--size"]}
HIDDEN = ["--engine", "--json", "--out ", "--working-size", "--shape ", "--batch ", "--network", "--onnx",
          "--saveEngine", "--loadEngine", "--input-rate", "--fp16", "--int8 ", "--optShapes", "--timingCacheFile"]


@pytest.mark.parametrize("module", list(COMMANDS))
def test_help_shows_one_name_per_concept_and_defaults_that_read_right(module: str) -> None:
    parser = parser_of(module)
    parser.epilog = None  # unet-build's epilog names trtexec's spellings on purpose
    text = " ".join(parser.format_help().split())
    for flag in VISIBLE[module]:
        assert flag in text, f"{COMMANDS[module]} --help lacks {flag}"
    for flag in HIDDEN:
        assert flag not in text + " ", f"{COMMANDS[module]} --help shows the alias {flag.strip()}"
    assert "(default: None)" not in text
    for action in parser._actions:
        shown = parser.formatter_class(parser.prog)._get_help_string(action) or ""
        if action.nargs == 0 and not isinstance(action, argparse.BooleanOptionalAction):
            assert "(default" not in shown, f"{action.option_strings} says {shown!r}"
        if "--threads" in action.option_strings:
            assert "(default: " in shown, f"{COMMANDS[module]} --threads does not state its default: {shown!r}"


def test_stream_help_of_switches_and_threads() -> None:
    text = " ".join(parser_of(STREAM).format_help().split())
    no_stats = text[text.index("--no-overlay-stats "):].split(" --", 1)[0]
    assert "do not draw FPS and latency" in no_stats and "(default: True)" not in no_stats
    assert "--threads N CPU inference threads per worker (ONNX Runtime, OpenVINO, torch) (default: the usable" in text


INVALID = [
    (STREAM, ["--precision", "fp64"], ["'auto', 'fp32', 'fp16', 'bf16', 'int8'"]),
    (STREAM, ["--backend", "tensorflow"], ["'auto', 'onnxruntime', 'openvino', 'torch', 'tensorrt'"]),
    (STREAM, ["--device", "tpu"], ["invalid device 'tpu' (choose from auto, cpu, cuda, cuda:N)"]),
    (EVAL, ["--device", "cuda:x"], ["choose from auto, cpu, cuda, cuda:N"]),
    (EVAL, ["--precision", "half"], ["'auto', 'fp32', 'fp16', 'bf16', 'int8'"]),
    (BENCH, ["--device", "cuda:0"], ["choose from auto, cpu, cuda)"]),
    (TRAIN, ["--device", "mps"], ["choose from auto, cpu, cuda)"]),
    (BATCH, ["--precision", "fp64"], ["'auto', 'fp32', 'fp16', 'bf16', 'int8'"]),
    (BATCH, ["--backend", "tflite"], ["'auto', 'onnxruntime', 'openvino', 'torch', 'tensorrt'"]),
    (BUILD, ["--precision", "bf16"], ["'fp32', 'fp16', 'int8'"]),
    (EXPORT, ["--precision", "fp16,bf16"], ["choose from fp32, fp16, int8"]),
    (BUILD, ["--optShapes=input0:1x3x64x64"], ["image:NxCxHxW", "'image'"]),
    (BUILD, ["--memPoolSize=dlaSRAM:1M"], ["workspace:SIZE"]),
    (BUILD, ["--memPoolSize=workspace:infG"], ["more than TensorRT can take", "workspace:1024"]),
    (BUILD, ["--workspace", "99999999999999999999"], ["whole number of MiB from 1 to", "TensorRT's limit"]),
    (BUILD, ["--workspace", "0"], ["whole number of MiB from 1 to"]),
    (TRAIN, ["--seed", "-1"], ["--seed", "from 0 to 4294967295"]),
    (EXPORT, ["--seed", "99999999999999999999"], ["--seed", "from 0 to 4294967295"]),
    (BENCH, ["--seed", "-1"], ["--seed", "from 0 to 4294967295"]),
    (BENCH, ["--shapes=image:1x3x64"], ["NxCxHxW"]),
    (BENCH, ["--shapes=image:8x3x64x64", "--batch-size", "1"], ["--shapes asks for batch 8", "give one"]),
    (BUILD, ["--onnx", "other.onnx"], ["the model is given twice ('m.onnx' and --model 'other.onnx')"]),
    (STREAM, ["out.mp4", "-o", "other.mp4"], ["the output is given twice"]),
    (STREAM, ["--threads", "0"], ["must be a positive integer, got '0'"]),
    (STREAM, ["--device", "cuda:1x"], ["invalid device 'cuda:1x' (choose from auto, cpu, cuda, cuda:N)"]),
    # The last spelling won silently: the run used a model the user did not mean.
    (STREAM, ["--model", "a.onnx", "--network", "b.onnx"],
     ["the model is given twice (--model 'a.onnx' and --network 'b.onnx'); give it once"]),
]


@pytest.mark.parametrize(("module", "argv", "words"), INVALID,
                         ids=[f"{COMMANDS[m]}-{a[0].split('=')[0]}" for m, a, _ in INVALID])
def test_a_bad_value_is_one_line_exit_2_naming_the_choices(module: str, argv: list[str], words: list[str],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        parser_of(module).parse_args([*BASE[module], *argv])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and err.count("\n") == 1 and err.startswith(f"{COMMANDS[module]}: error: "), err
    for word in words:
        assert word in err, err


@pytest.mark.parametrize(("module", "argv", "words"), [
    (BUILD, [], "give the model: unet-build ONNX or --model ONNX"),
    (EXPORT, ["-o", "m.onnx"], "give the model: unet-export CHECKPOINT or --model CHECKPOINT"),
    (BATCH, ["in.mp4", "--model", "camvid"], "give the output with --output"),
    (BATCH, ["in.mp4", "-o", "masks"], "give the model with --model"),
    (EVAL, ["--images", "i", "--labels", "l"], "give the model with --model"),
    (BENCH, [], "one of the arguments --model --unet-base is required"),
])
def test_a_missing_model_or_output_is_one_line(module: str, argv: list[str], words: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        parser_of(module).parse_args(argv)
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and err.count("\n") == 1 and words in err, err


def test_device_gpu_is_answered_with_the_choices(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parser_of(STREAM).parse_args(["in.mp4", "--backend", "openvino", "--device", "gpu"])
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "NVIDIA GPUs are 'cuda'" in err and "OpenVINO's GPU plugin" in err and "on the CPU" in err
    assert "choose from auto, cpu, cuda, cuda:N" in err
    try:
        import openvino
    except ImportError:
        return
    devices = ", ".join(openvino.Core().available_devices)
    assert f"OpenVINO finds these devices on this machine: {devices})" in err


def test_bench_shapes_channels_are_kept_for_the_model_check() -> None:
    args = parser_of(BENCH).parse_args(["--model", "camvid", "--shapes=image:2x1x64x96"])
    assert (args.shape, args.batch_size, args.channels) == ([(96, 64)], [2], [1])
    assert parser_of(BENCH).parse_args(["--model", "camvid"]).batch_size == [1]


def test_trtexec_spec_parsers() -> None:
    assert trtexec_shape("'image':1x1x512x512") == (1, 1, 512, 512)
    assert trtexec_pool_mib("workspace:2048K") == 2
    for bad in ("image:1x3x64x64,mask:1x1x64x64", "1x3x64x64"):
        with pytest.raises(argparse.ArgumentTypeError, match="image:NxCxHxW"):
            trtexec_shape(bad)
    with pytest.raises(argparse.ArgumentTypeError, match="workspace:SIZE"):
        trtexec_pool_mib("workspace:0")
    assert trtexec_pool_mib(f"workspace:{MAX_WORKSPACE_MIB}") == MAX_WORKSPACE_MIB


@pytest.mark.parametrize("size", ["infG", "1e400", "inf", "1e300", str(MAX_WORKSPACE_MIB + 1)])
def test_a_workspace_no_byte_count_holds_is_refused(size: str) -> None:
    # infG and 1e400 ended unet-build in OverflowError's traceback ("cannot convert float infinity to integer").
    with pytest.raises(argparse.ArgumentTypeError, match=f"at most {MAX_WORKSPACE_MIB} MiB"):
        trtexec_pool_mib(f"workspace:{size}")


def test_command_parser_merges_a_positional_with_its_flag() -> None:
    parser = CommandParser(prog="demo")
    add_model(parser, help="model", positional="MODEL", aliases=("--engine",))
    add_device(parser, help="device", ordinals=False)
    assert parser.parse_args(["a.onnx", "--model", "a.onnx"]).model == "a.onnx"
    assert parser.parse_args(["--engine", "b.onnx"]).model == "b.onnx"
    assert parser.parse_args(["c.onnx"]).device == "auto"


@pytest.mark.parametrize("module", ["unetrt.stream.cli", "unetrt.evaluate", "unetrt.benchmarks.bench"])
def test_a_thread_count_past_the_cap_is_one_line(module: str, capsys: pytest.CaptureFixture[str]) -> None:
    # torch.set_num_threads(100000) ended unet-stream --backend torch with SIGSEGV.
    parser = importlib.import_module(module).build_parser()
    argv = {"unetrt.stream.cli": ["sample"], "unetrt.evaluate": ["--model", "camvid"],
            "unetrt.benchmarks.bench": ["--model", "camvid"]}[module]
    with pytest.raises(SystemExit) as exc:
        parser.parse_args([*argv, "--threads", "100000"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(lines) == 1 and "must be at most 1024 threads" in lines[0]


def test_stream_defaults_of_the_shared_flags_and_the_thread_cap_itself() -> None:
    # auto everywhere: the fastest installed engine and precision on the best device; the help says so.
    args = parser_of(STREAM).parse_args(BASE[STREAM])
    assert (args.model, args.backend, args.device, args.precision, args.threads, args.working_size) == (
        "camvid", "auto", "auto", "auto", None, None)
    # The cap is inclusive: MAX_THREADS itself is a valid count.
    assert parser_of(STREAM).parse_args([*BASE[STREAM], "--threads", str(MAX_THREADS)]).threads == MAX_THREADS


@pytest.mark.parametrize("module", list(COMMANDS))
def test_every_command_says_its_version_even_without_its_required_arguments(
        module: str, capsys: pytest.CaptureFixture[str]) -> None:
    # `unet-weights --version` said "the following arguments are required: --images, --labels", exit 2.
    import unetrt

    with pytest.raises(SystemExit) as exit_info:
        parser_of(module).parse_args(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"{COMMANDS[module]} (unetrt {unetrt.__version__})\n"
