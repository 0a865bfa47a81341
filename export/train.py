"""``unet-train``: train a U-Net with Adam and early stopping, keep the best checkpoint.

Example:
    unet-train --dataset camvid --data ../shared/data/camvid --base 16 \
        --working-size 256x192 --out runs/camvid
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch.utils.data import DataLoader
from tqdm import tqdm

from unetrt.cli import parse_size, run_cli
from unetrt.model_info import ModelInfo

from .checkpoint import build_model, save_checkpoint
from .data import (
    SegmentationDataset,
    SplitFiles,
    camvid_split,
    class_frequencies,
    isbi_split,
    median_frequency_weights,
)

GRAY_MEAN, GRAY_STD = (0.5,), (0.25,)


@dataclass
class EpochResult:
    """Losses and pixel accuracy of one epoch."""

    epoch: int
    train_loss: float
    val_loss: float
    val_accuracy: float
    seconds: float


def segmentation_loss(
    logits: torch.Tensor, target: torch.Tensor, info: ModelInfo, class_weights: torch.Tensor | None
) -> torch.Tensor:
    """BCE for a binary model, cross-entropy with the ignore index for a multi-class one."""
    if info.binary:
        return F.binary_cross_entropy_with_logits(logits[:, 0], target.float())
    ignore = -100 if info.ignore_index is None else info.ignore_index
    return F.cross_entropy(logits, target, weight=class_weights, ignore_index=ignore)


def _accuracy_counts(logits: torch.Tensor, target: torch.Tensor, info: ModelInfo) -> tuple[int, int]:
    pred = (logits[:, 0] > 0).long() if info.binary else logits.argmax(1)
    valid = torch.ones_like(target, dtype=torch.bool) if info.ignore_index is None else target != info.ignore_index
    return int(((pred == target) & valid).sum()), int(valid.sum())


def run_epoch(
    model: torch.nn.Module,
    loader: DataLoader,  # type: ignore[type-arg]
    info: ModelInfo,
    class_weights: torch.Tensor | None,
    optimizer: torch.optim.Optimizer | None,
    description: str,
    max_steps: int | None = None,
) -> tuple[float, float]:
    """One pass over ``loader``; trains when an optimizer is given.

    Returns:
        Mean loss over samples and pixel accuracy.
    """
    training = optimizer is not None
    model.train(training)
    total_loss, samples, correct, counted = 0.0, 0, 0, 0
    with torch.set_grad_enabled(training):
        bar = tqdm(loader, desc=description, leave=False, unit="batch", disable=None)
        for step, (images, targets) in enumerate(bar):
            if max_steps is not None and step >= max_steps:
                break
            logits = model(images)
            loss = segmentation_loss(logits, targets, info, class_weights)
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            total_loss += float(loss) * images.shape[0]
            samples += images.shape[0]
            hits, pixels = _accuracy_counts(logits.detach(), targets, info)
            correct, counted = correct + hits, counted + pixels
            bar.set_postfix(loss=f"{total_loss / samples:.4f}")
    return total_loss / max(samples, 1), correct / max(counted, 1)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``unet-train``."""
    parser = argparse.ArgumentParser(prog="unet-train", description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", choices=("camvid", "isbi"), required=True, help="data set layout")
    parser.add_argument("--data", required=True, help="data set root folder")
    parser.add_argument("--out", default="runs/unet", help="output folder for checkpoints and logs")
    parser.add_argument("--name", default=None, help="model name stored in the checkpoint (default: dataset)")
    parser.add_argument("--base", type=int, default=64, help="channels of the first level (16 to 64)")
    parser.add_argument("--depth", type=int, default=5)
    parser.add_argument("--activation", choices=("elu", "relu"), default="elu")
    parser.add_argument("--padding", choices=("same", "valid"), default="same")
    parser.add_argument("--dropout", default="0.1,0.1,0.2,0.2,0.3", help="rates per level, comma-separated")
    parser.add_argument("--working-size", type=parse_size, default=None, metavar="WxH",
                        help="resize frames to this size for training and inference")
    parser.add_argument("--val-slices", default="20-23", help="ISBI: contiguous block of held-out slices")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--patience", type=int, default=5, help="early stopping patience in epochs")
    parser.add_argument("--class-weights", choices=("none", "median-freq"), default="none",
                        help="class balancing of the cross-entropy (multi-class)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--max-steps", type=int, default=None, help="stop each epoch after this many batches")
    return parser


def _split(args: argparse.Namespace) -> SplitFiles:
    if args.dataset == "camvid":
        return camvid_split(args.data)
    first, _, last = args.val_slices.partition("-")
    block = range(int(first), int(last or first) + 1)
    return isbi_split(args.data, block)


def train(args: argparse.Namespace) -> Path:
    """Train as ``args`` says and return the path of the best checkpoint."""
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    split = _split(args)
    gray = split.in_channels == 1
    dropout = tuple(float(v) for v in args.dropout.split(","))
    info = ModelInfo(
        class_names=split.class_names,
        colors=split.colors,
        in_channels=split.in_channels,
        mean=GRAY_MEAN if gray else (0.485, 0.456, 0.406),
        std=GRAY_STD if gray else (0.229, 0.224, 0.225),
        padding=args.padding,
        depth=args.depth,
        base=args.base,
        activation=args.activation,
        working_size=args.working_size,
        ignore_index=split.ignore_index,
        name=args.name or args.dataset,
        extra={"dropout": list(dropout)},
    )
    binary = info.binary
    train_set = SegmentationDataset(split.train, info.in_channels, info.mean, info.std, binary, args.working_size, True)
    val_set = SegmentationDataset(split.val, info.in_channels, info.mean, info.std, binary, args.working_size)
    class_weights = None
    if args.class_weights == "median-freq" and not binary:
        weights = median_frequency_weights(class_frequencies(train_set, info.num_classes))
        class_weights = torch.tensor(weights, dtype=torch.float32)
        info = ModelInfo.from_dict({**info.to_dict(), "extra": {**info.extra, "class_weights": weights.tolist()}})
    model = build_model(info)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, drop_last=len(train_set) > args.batch_size)
    val_loader = DataLoader(val_set, batch_size=args.batch_size)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    best_path = out / "best.pt"
    best_loss, stale = float("inf"), 0
    history: list[EpochResult] = []
    (out / "command.json").write_text(json.dumps({"argv": sys.argv, "args": vars(args)}, indent=2, default=str))
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        train_loss, _ = run_epoch(model, train_loader, info, class_weights, optimizer, f"epoch {epoch} train",
                                  args.max_steps)
        val_loss, val_acc = run_epoch(model, val_loader, info, class_weights, None, f"epoch {epoch} val",
                                      args.max_steps)
        result = EpochResult(epoch, train_loss, val_loss, val_acc, time.perf_counter() - start)
        history.append(result)
        improved = val_loss < best_loss
        if improved:
            best_loss, stale = val_loss, 0
            save_checkpoint(best_path, model, info, epoch=epoch, val_loss=val_loss, val_accuracy=val_acc)
        else:
            stale += 1
        save_checkpoint(out / "last.pt", model, info, epoch=epoch, optimizer=optimizer.state_dict())
        _write_log(out / "log.csv", history)
        print(
            f"epoch {epoch:3d}  train loss {train_loss:.4f}  val loss {val_loss:.4f}  "
            f"val acc {val_acc:.4f}  {result.seconds:.0f}s{'  *best*' if improved else ''}",
            flush=True,
        )
        if stale >= args.patience:
            print(f"early stop: validation loss has not improved for {args.patience} epochs", flush=True)
            break
    print(f"best checkpoint: {best_path} (val loss {best_loss:.4f})")
    return best_path


def _write_log(path: Path, history: Sequence[EpochResult]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", "train_loss", "val_loss", "val_accuracy", "seconds"])
        for row in history:
            writer.writerow([row.epoch, f"{row.train_loss:.6f}", f"{row.val_loss:.6f}",
                             f"{row.val_accuracy:.6f}", f"{row.seconds:.1f}"])


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``unet-train``; returns the exit code."""
    args = build_parser().parse_args(argv)
    return run_cli(lambda: train(args))


if __name__ == "__main__":
    sys.exit(main())
