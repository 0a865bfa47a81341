"""Ship a trained run as a bundled model: export it, score it, and write its stated figures.

Writes ``engine/models/NAME.onnx`` (``unet-export`` of the run's best checkpoint),
``engine/models/NAME.pt`` (weights and ModelInfo only, no optimiser state) and
``engine/models/NAME.json``: the validation figures ``unet-eval`` prints for the
exported model, the best epoch and the training commands that produced it (one per
stage when the run was started with ``--init``). ``tests/test_bundled_models.py``
re-runs the evaluation and checks the figures against that file.

Example:
    python tools/state_bundled_model.py camvid --run runs/camvid_ft2 --previous runs/camvid \\
        --images camvid/val --labels camvid/valannot
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from unetrt.bundled import MODELS_DIR
from unetrt.cli import run_cli
from unetrt.evaluate import evaluate, format_figures, parse_stems
from unetrt.export.checkpoint import load_model, save_checkpoint
from unetrt.export.onnx_export import main as export_main
from unetrt.segmenter import Segmenter

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def training_command(run: Path) -> str:
    """The ``unet-train`` command line a run recorded in its command.json."""
    argv = json.loads((run / "command.json").read_text())["argv"]
    return shlex.join(["unet-train", *argv[1:]])


def _run(args: argparse.Namespace) -> None:
    run = Path(args.run)
    best = run / "best.pt"
    if not best.is_file():
        raise FileNotFoundError(f"{best} does not exist: --run must be a unet-train output folder")
    onnx_path, pt_path = MODELS_DIR / f"{args.name}.onnx", MODELS_DIR / f"{args.name}.pt"
    if export_main([str(best), "-o", str(onnx_path)]) != 0:
        raise RuntimeError(f"unet-export of {best} failed")
    model, info = load_model(best)
    save_checkpoint(pt_path, model, info)
    with Segmenter(onnx_path) as segmenter:
        figures = evaluate(segmenter, SHARED_DATA / args.images, SHARED_DATA / args.labels, args.stems)
    print(format_figures(figures))
    summary = json.loads((run / "run.json").read_text())
    stages = [Path(p) for p in args.previous] + [run]
    stated = {
        "images": args.images,
        "labels": args.labels,
        "stems": args.stems,
        "validation": {k: v for k, v in figures.items() if isinstance(v, float)},
        "per_class_iou": figures.get("per_class_iou"),
        "best_epoch": summary["best_epoch"],
        "epochs_run": summary["epochs_run"],
        "monitor": summary["monitor"],
        "training_commands": [training_command(stage) for stage in stages],
    }
    (MODELS_DIR / f"{args.name}.json").write_text(json.dumps(stated, indent=2) + "\n")
    print(f"wrote {onnx_path}, {pt_path} and {MODELS_DIR / f'{args.name}.json'}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", help="bundled model name, e.g. camvid")
    parser.add_argument("--run", required=True, help="unet-train output folder holding best.pt")
    parser.add_argument("--previous", nargs="*", default=[],
                        help="earlier runs this one was initialised from (--init), oldest first")
    parser.add_argument("--images", required=True, help="validation images, relative to ../shared/data")
    parser.add_argument("--labels", required=True, help="validation labels, relative to ../shared/data")
    parser.add_argument("--stems", type=parse_stems, default=None, help="held-out stems, e.g. 20-23")
    args = parser.parse_args(argv)
    return run_cli(lambda: _run(args))


if __name__ == "__main__":
    sys.exit(main())
