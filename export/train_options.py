"""The command line of ``unet-train``, apart from the training so that it imports without torch: ``unet-train
--help`` answers on an install of the runtime alone (see :mod:`unetrt.commands`), where the help is what says
torch is needed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from unetrt.cli import parse_seed, parse_size
from unetrt.cli_options import (
    ALIASES_EPILOG,
    CommandParser,
    add_batch_size,
    add_device,
    add_output,
    add_size,
    add_threads,
    positive_int,
)

from .augment import AUGMENTATIONS

# The losses by name (unetrt.export.losses builds them): here, where the command line reads them without torch.
LOSS_NAMES = ("ce", "bce", "dice", "weighted-ce", "dice-ce", "size-ce", "lovasz-ce", "cldice-ce")
# One rate per level of the default --depth 5: the bundled models' dropout.
DEFAULT_DROPOUT = "0.1,0.1,0.2,0.2,0.3"


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface of ``unet-train``."""
    parser = CommandParser(
        prog="unet-train",
        description="Train a U-Net with Adam and early stopping and keep the best checkpoint. Every run writes "
                    "log.csv, history.json, curves.png, best.pt, last.pt and run.json into the --output folder.",
        epilog="examples: unet-train --dataset camvid --data ../shared/data/camvid --base 16 --size 256x192 "
               "-o runs/camvid; torchrun --nproc-per-node 2 -m unetrt.export.train ... (data-parallel; "
               "--batch-size is per process). Sizes are WxH in pixels, e.g. 256x192. " + ALIASES_EPILOG,
    )
    parser.add_argument("--dataset", choices=("camvid", "isbi"), required=True, help="data set layout")
    parser.add_argument("--data", required=True, help="data set root folder")
    add_output(parser, default="runs/unet", aliases=("--out",), metavar="DIR",
               help="output folder for checkpoints and logs")
    parser.add_argument("--name", default=None, help="model name stored in the checkpoint (default: dataset)")
    parser.add_argument("--base", type=int, default=16,
                        help="channels of the first level (16 to 64; the bundled camvid: 24, isbi: 16)")
    parser.add_argument("--depth", type=int, default=5, help="levels of the U-Net (the paper's has 5)")
    parser.add_argument("--activation", choices=("elu", "relu"), default=None,
                        help="activation after every convolution (default: the bundled model's of the layout: relu "
                             "for camvid and your own data, as the paper; elu for isbi, as the blog)")
    parser.add_argument("--padding", choices=("same", "valid"), default="same",
                        help="'valid' is the paper's unpadded network (572 -> 388); 'same' keeps the size")
    parser.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=True,
                        help="batch normalisation after every 3x3 conv, folded into the convolutions on export (the "
                             "bundled models have it; without it a base-16 network learns several times slower)")
    parser.add_argument("--dropout", type=parse_dropout, default=DEFAULT_DROPOUT, metavar="RATES",
                        help="rates per level, comma-separated, each in [0, 1)")
    add_size(parser, help="resize frames to this size for training and inference")
    parser.add_argument("--label-scale", type=int, default=1, metavar="K",
                        help="score the loss and validation on labels kept at K times --size, the logits resized "
                             "bilinearly to them as inference does (2 at 256x192: a pole thinner than an input pixel "
                             "still counts); 1: labels resized with the frames")
    parser.add_argument("--crop", type=parse_size, default=None, metavar="WxH",
                        help="train on random crops of this size (validation sees whole images)")
    parser.add_argument("--val-slices", default="20-23",
                        help="ISBI: contiguous block of slices held out for validation (model selection)")
    parser.add_argument("--split", default=None, metavar="SPLIT_JSON",
                        help="camvid layout: hold out time spans (engine/heldout.py): a split file, or a bundled "
                             "model's name for the split it was chosen on (camvid); train on every frame of train/ "
                             "and val/ outside them, select on their 'select' part")
    parser.add_argument("--test-slices", default=None,
                        help="ISBI: contiguous block of slices that neither training nor selection sees "
                             "(reported with unet-eval --stems)")
    parser.add_argument("--epochs", type=int, default=50, help="most epochs to train (early stopping may end sooner)")
    add_batch_size(parser, default=16, help="samples per step and process")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    parser.add_argument("--lr-schedule", choices=("none", "cosine", "plateau"), default="none",
                        help="cosine: anneal to lr/100 over --epochs; plateau: x0.5 after patience/2 stale epochs")
    parser.add_argument("--patience", type=int, default=5, help="early stopping patience in epochs")
    parser.add_argument("--monitor", choices=("loss", "metric"), default="loss",
                        help="select/stop on validation loss, or on Rand error (binary) / mean IoU (multi-class)")
    parser.add_argument("--monitor-cleanup", type=Path, default=None, metavar="NAME.json",
                        help="binary models, with --monitor metric: select/stop on the challenge Rand error of the "
                             "masks cleaned as this model statement's 'cleanup' says (e.g. engine/models/isbi.json)")
    parser.add_argument("--loss", choices=LOSS_NAMES, default="ce",
                        help="ce (BCE for binary models), bce, dice, weighted-ce (paper), dice-ce, size-ce, "
                             "lovasz-ce (per-class IoU surrogate), cldice-ce (thin structures kept connected)")
    parser.add_argument("--dice-weight", type=float, default=1.0,
                        help="dice-ce, cldice-ce: factor of the soft Dice term")
    parser.add_argument("--ce-weight", type=float, default=1.0,
                        help="dice-ce, lovasz-ce, cldice-ce: factor of the weighted CE term")
    parser.add_argument("--lovasz-weight", type=float, default=1.0, help="lovasz-ce: factor of the Lovász term")
    parser.add_argument("--cldice-weight", type=float, default=1.0, help="cldice-ce: factor of the clDice term")
    parser.add_argument("--thin-class", type=int, default=0,
                        help="cldice-ce: the class whose thin structures must stay connected (ISBI: 0, membranes)")
    parser.add_argument("--cldice-iterations", type=int, default=5,
                        help="cldice-ce: soft erosions of the skeleton, at least half the thickest structure (px)")
    parser.add_argument("--w0", type=float, default=10.0, help="distance weight maps: border weight")
    parser.add_argument("--sigma", type=float, default=5.0, help="distance weight maps: border width (px)")
    parser.add_argument("--class-weights", choices=("none", "median-freq"), default="median-freq",
                        help="class balancing of the cross-entropy (multi-class; median-freq: SegNet's median "
                             "frequency balancing, as the bundled camvid)")
    parser.add_argument("--class-weight-power", type=float, default=1.0, metavar="P",
                        help="median-freq: raise each class weight to this power (0.5: the square root, milder "
                             "balancing; 1: SegNet's)")
    parser.add_argument("--augment", default="hflip,jitter",
                        help=f"comma-separated, from {', '.join(AUGMENTATIONS)}; 'none' for nothing")
    parser.add_argument("--elastic-sigma", type=float, default=10.0, help="elastic: displacement std (px)")
    parser.add_argument("--elastic-grid", type=int, default=3, help="elastic: coarse grid points per side")
    parser.add_argument("--scale", type=float, default=0.1, help="scale: zoom range +-")
    parser.add_argument("--zoom", default=None, metavar="MIN,MAX",
                        help="scale: zoom factor drawn log-uniformly from [MIN, MAX] (e.g. 0.5,2), replaces --scale; "
                             "the shift grows with the zoom so that every part of the image can be seen")
    parser.add_argument("--shift", type=float, default=0.05, help="scale: shift range as a fraction of the size")
    parser.add_argument("--seed", type=parse_seed, default=0, help="seed of weights, shuffling and augmentation")
    add_threads(parser, help="torch CPU threads", default_text="torch's: one per core")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    add_device(parser, ordinals=False, help="where to train (auto: cuda when available)")
    parser.add_argument("--amp", choices=("auto", "on", "off"), default="auto",
                        help="mixed precision with channels_last: float16 autocast with loss scaling on CUDA, "
                             "bfloat16 autocast on CPUs with native BF16 (auto: on wherever supported)")
    parser.add_argument("--ema", type=float, default=0.0, metavar="DECAY",
                        help="validate, select and save an exponential moving average of the weights "
                             "(e.g. 0.999; 0: off)")
    parser.add_argument("--resume", default=None, metavar="LAST_PT", help="continue from a last.pt of this run")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an earlier run's checkpoints in --output (without it, a folder holding a "
                             "best.pt is refused unless --resume continues that run)")
    parser.add_argument("--init", default=None, metavar="CKPT",
                        help="start from the weights of this checkpoint (fine-tuning: fresh optimizer and schedule); "
                             "a checkpoint of a smaller --base is widened to this run's (Net2WiderNet), one of a "
                             "larger --base narrowed to it (each layer keeps its largest channels)")
    parser.add_argument("--weight-cache", default=None, metavar="DIR",
                        help="cache folder for weight maps (default: OUT/weight_cache)")
    parser.add_argument("--max-steps", type=positive_int, default=None,
                        help="stop each epoch after this many batches")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop after the epoch that passes this much training time (a compute budget)")
    return parser


def parse_dropout(text: str) -> tuple[float, ...]:
    """``--dropout 0.1,0.2,0.3`` -> (0.1, 0.2, 0.3): one rate per level for argparse, each in [0, 1).

    Raises:
        argparse.ArgumentTypeError: naming the expected form.

    Example:
        >>> parse_dropout("0,0.1,0.2")
        (0.0, 0.1, 0.2)
    """
    try:
        rates = tuple(float(value) for value in text.split(","))
    except ValueError:
        rates = ()
    # "not 0 <= rate < 1" also refuses NaN, which torch's Dropout takes and turns every output into NaN.
    if not rates or any(not 0.0 <= rate < 1.0 for rate in rates):
        raise argparse.ArgumentTypeError(f"expected one rate in [0, 1) per level, comma-separated, e.g. "
                                         f"0.1,0.1,0.2,0.2,0.3 for --depth 5, got {text!r}")
    return rates
