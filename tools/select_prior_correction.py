"""Choose how much of a model's class balancing to undo (``unetrt.export.prior``) on selection data.

Scores the checkpoint with its head's biases shifted by ``tau * log(class weight)`` for each tau given, on one
part of a held-out split (the 'select' part: the report part must stay unseen), and writes the table and the
best tau (ties: the smaller). ``tools/state_bundled_model.py --prior-correction OUT.json`` ships the checkpoint
with that tau folded in.

Example:
    python tools/select_prior_correction.py runs/camvid_h14/best.pt --split engine/models/camvid.split.json \\
        --data ../shared/data/camvid --taus 0,0.25,0.5,0.75,1 --out runs/camvid_h14/prior.json
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from unetrt.cli import format_size, parse_size, run_cli
from unetrt.cli_options import CommandParser
from unetrt.evaluate import evaluate_pairs
from unetrt.export.checkpoint import load_model, save_checkpoint
from unetrt.export.prior import class_weights_of, correct_class_prior
from unetrt.heldout import HeldOutSplit
from unetrt.segmenter import Segmenter


def parse_taus(text: str) -> list[float]:
    """``"0,0.5,1"`` -> [0.0, 0.5, 1.0], each in [0, 1].

    Raises:
        ValueError: for a value that is no number or outside [0, 1], or an empty list.

    Example:
        >>> parse_taus("0, 0.25,1")
        [0.0, 0.25, 1.0]
    """
    try:
        taus = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--taus must be numbers between 0 and 1 separated by commas, got {text!r}") from None
    if not taus or not all(0.0 <= tau <= 1.0 for tau in taus):
        raise ValueError(f"--taus must be numbers between 0 and 1 separated by commas, got {text!r}")
    return sorted(set(taus))


def score_taus(checkpoint: Path, taus: Sequence[float], split: HeldOutSplit, data: Path, part: str,
               working_size: tuple[int, int] | None) -> dict[str, Any]:
    """Mean and per-class IoU of the checkpoint corrected by each tau on ``part`` of the split (PyTorch, FP32).

    Returns:
        ``{"rows": [{"tau", "mean_iou", "per_class_iou"}, ...], "chosen": tau}`` (the best mean IoU, ties to
        the smaller tau).
    """
    pairs = split.pairs(data, part)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for tau in taus:
            model, info = correct_class_prior(*load_model(checkpoint), tau)
            corrected = Path(folder) / f"tau_{tau}.pt"
            save_checkpoint(corrected, model, info)
            with Segmenter(corrected, backend="torch", device="cpu", working_size=working_size) as segmenter:
                figures = evaluate_pairs(segmenter, pairs)
            rows.append({"tau": tau, "mean_iou": figures["mean_iou"], "per_class_iou": figures["per_class_iou"]})
            print(f"tau {tau:.2f}: mean IoU {100 * figures['mean_iou']:.2f}", flush=True)
    best = max(rows, key=lambda row: (row["mean_iou"], -row["tau"]))
    return {"rows": rows, "chosen": best["tau"]}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = CommandParser(prog="select_prior_correction.py", description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a multi-class checkpoint trained with class weights")
    parser.add_argument("--split", required=True, type=Path, help="a held-out split (engine/heldout.py)")
    parser.add_argument("--data", required=True, type=Path, help="the split's data root")
    parser.add_argument("--part", default="select", help="the part to choose on (default: select)")
    parser.add_argument("--taus", default="0,0.25,0.5,0.75,1", help="the taus to score, comma separated")
    parser.add_argument("--size", type=parse_size, default=None, metavar="WxH",
                        help="working size (default: the checkpoint's)")
    parser.add_argument("--out", required=True, type=Path, help="writes the table and the chosen tau (JSON)")

    def action() -> None:
        args = parser.parse_args(argv)
        if args.part == "report":
            raise ValueError("--part report would choose on the figures that must stay unseen; choose on 'select'")
        taus = parse_taus(args.taus)
        if not args.out.parent.is_dir():
            raise FileNotFoundError(f"folder of --out {str(args.out)!r} does not exist")
        _, info = load_model(args.checkpoint)
        weights = class_weights_of(info)
        split = HeldOutSplit.read(args.split)
        result = score_taus(args.checkpoint, taus, split, args.data, args.part, args.size)
        record = {"checkpoint": str(args.checkpoint.resolve()), "split": str(args.split), "part": args.part,
                  "working_size": None if args.size is None else format_size(args.size),
                  "class_weights": weights, **result}
        args.out.write_text(json.dumps(record, indent=2) + "\n")
        print(f"chosen tau {result['chosen']} on part {args.part!r}; wrote {args.out}")
    return run_cli(action)


if __name__ == "__main__":
    sys.exit(main())
