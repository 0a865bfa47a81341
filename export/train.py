"""``unet-train``: train a U-Net with Adam and early stopping, keep the best checkpoint.

Losses by name (``--loss``, see :mod:`unetrt.export.losses`), the paper's weight maps
and elastic deformation, random crops of large images, a learning-rate schedule,
resuming (``--resume runs/x/last.pt``), AMP and channels_last on CUDA, and
data-parallel training across processes with ``torchrun`` (gloo on CPU, NCCL on GPU;
``--batch-size`` is per process). Every run writes ``log.csv``, ``history.json``,
``curves.png`` (loss and validation metrics), ``best.pt``, ``last.pt`` and ``run.json``.

Example:
    unet-train --dataset camvid --data ../shared/data/camvid --base 16 \
        --size 256x192 -o runs/camvid
    unet-train --dataset isbi --data ../shared/data/isbi2012-em --base 16 --loss weighted-ce \
        --augment hflip,vflip,rot90,elastic,jitter --crop 256x256 --monitor metric -o runs/isbi --name isbi
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from unetrt.cli import run_cli
from unetrt.geometry import check_input_size, nearest_legal_sizes
from unetrt.heldout import HeldOutSplit, split_file
from unetrt.metrics import ConfusionMatrix, IsbiChallengeScorer, rand_error
from unetrt.model_file import checkpoint_description
from unetrt.model_info import ModelInfo
from unetrt.paths import read_json, write_whole
from unetrt.plot_png import plot_png
from unetrt.postprocess import BinaryCleanup, statement_cleanup
from unetrt.stream.output_path import check_writable_file

from .augment import AugmentConfig
from .checkpoint import build_model, load_checkpoint, save_checkpoint
from .data import (
    SegmentationDataset,
    SplitFiles,
    camvid_split,
    class_frequencies,
    isbi_split,
    median_frequency_weights,
)
from .distributed import (
    DistributedContext,
    all_reduce_sum,
    broadcast_value,
    gather_digests,
    init_distributed,
    shutdown,
    wrap_model,
)
from .losses import SegmentationLoss
from .prior import undo_class_prior
from .train_options import DEFAULT_DROPOUT, build_parser, parse_dropout
from .weights import precompute_weight_maps
from .width import narrow_unet, widen_unet

GRAY_MEAN, GRAY_STD = (0.5,), (0.25,)
# The activation of the bundled model of each layout (engine/models/NAME.pt), so that their recorded
# training commands, which leave it out, rebuild them.
DEFAULT_ACTIVATIONS = {"camvid": "relu", "isbi": "elu"}
# The validation figure --monitor metric selects on: (name, lower is better). Binary models are
# selected on the ISBI 2012 challenge's Rand error, the figure the U-Net paper reports.
BINARY_MONITOR = ("challenge_rand_error", True)
MULTICLASS_MONITOR = ("mean_iou", False)


@dataclass
class EpochResult:
    """Losses, pixel accuracy and validation metrics of one epoch."""

    epoch: int
    train_loss: float
    val_loss: float
    val_accuracy: float
    seconds: float
    lr: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)


def _fit_to_output(logits: torch.Tensor, *maps: torch.Tensor) -> list[torch.Tensor]:
    """Centre-crop targets/weights to the logits' size ('valid' padding shrinks the output)."""
    height, width = logits.shape[-2:]
    fitted = []
    for item in maps:
        top, left = (item.shape[-2] - height) // 2, (item.shape[-1] - width) // 2
        fitted.append(item[..., top:top + height, left:left + width])
    return fitted


def _to_label_grid(logits: torch.Tensor, label_scale: int) -> torch.Tensor:
    """Logits resized bilinearly (half-pixel centres, as the runtime's finish step) to labels ``label_scale`` finer."""
    logits = logits.float()
    if label_scale == 1:
        return logits
    return F.interpolate(logits, scale_factor=label_scale, mode="bilinear", align_corners=False)


def _predict(logits: torch.Tensor, binary: bool) -> torch.Tensor:
    return (logits[:, 0] > 0).long() if binary else logits.argmax(1)


def run_epoch(
    model: torch.nn.Module,
    loader: DataLoader[Any],
    loss_fn: SegmentationLoss,
    optimizer: torch.optim.Optimizer,
    context: DistributedContext,
    description: str,
    max_steps: int | None = None,
    scaler: torch.amp.GradScaler | None = None,
    amp_dtype: torch.dtype | None = None,
    ema: WeightAverage | None = None,
    label_scale: int = 1,
) -> float:
    """One training pass over ``loader``.

    Args:
        amp_dtype: autocast dtype (float16 on CUDA, bfloat16 on CPU), None for full precision.
        ema: weight average updated after every optimizer step.
        label_scale: the loader's labels are this multiple of the network's input size (the logits are resized to
            them before the loss).

    Returns:
        Mean loss per sample over all ranks.
    """
    model.train()
    total_loss, samples = 0.0, 0
    steps = len(loader) if max_steps is None else min(len(loader), max_steps)
    bar = progress_bar(loader, description, steps, context.is_main)
    for step, batch in enumerate(bar):
        if step >= steps:
            break
        images, targets, weights = _to_device(batch, context.device, amp_dtype is not None)
        with _autocast(context.device, amp_dtype):
            logits = model(images)
        logits = _to_label_grid(logits, label_scale)
        targets, *rest = _fit_to_output(logits, targets, *([] if weights is None else [weights]))
        loss = loss_fn(logits, targets, rest[0] if rest else None)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        if ema is not None:
            ema.update(model)
        total_loss += loss.item() * images.shape[0]
        samples += images.shape[0]
        bar.set_postfix(loss=f"{total_loss / samples:.4f}", refresh=False)
    total_loss, samples_sum = all_reduce_sum([total_loss, float(samples)], context)
    return total_loss / max(samples_sum, 1.0)


# A bar in a log file (stderr not a terminal) is redrawn at most this often, so a long epoch leaves a few lines.
LOG_BAR_INTERVAL_S = 30.0


def progress_bar(loader: DataLoader[Any], description: str, steps: int, shown: bool) -> tqdm[Any]:
    """The bar of an epoch: batches done of ``steps``, the running loss (set by the caller), elapsed time and ETA.

    On a terminal it is redrawn live and cleared at the end; into a log (stderr redirected) it writes a line
    every ``LOG_BAR_INTERVAL_S`` seconds and keeps the last one, so a long epoch is never silent.
    """
    terminal = sys.stderr.isatty()
    return tqdm(loader, desc=description, total=steps, unit="batch", leave=not terminal, disable=not shown,
                mininterval=0.1 if terminal else LOG_BAR_INTERVAL_S, dynamic_ncols=terminal)


def cpu_supports_bf16() -> bool:
    """Whether this CPU runs bfloat16 convolutions natively (AVX-512 BF16 or AMX), through oneDNN."""
    return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())


def amp_dtype_for(device: torch.device, amp: str) -> torch.dtype | None:
    """The autocast dtype ``--amp`` asks for on ``device``: float16 on CUDA, bfloat16 on a BF16 CPU, else None.

    Raises:
        ValueError: for ``amp == "on"`` on a CPU without native bfloat16.

    Example:
        >>> amp_dtype_for(torch.device("cpu"), "off") is None
        True
    """
    if amp == "off":
        return None
    if device.type == "cuda":
        return torch.float16
    if cpu_supports_bf16():
        return torch.bfloat16
    if amp == "on":
        raise ValueError("--amp on needs a CUDA device or a CPU with native bfloat16 (AVX-512 BF16 or AMX); "
                         "use --amp auto or off here")
    return None


def _autocast(device: torch.device, dtype: torch.dtype | None) -> torch.autocast:
    return torch.autocast(device_type=device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


class WeightAverage:
    """Exponential moving average of a model's weights (buffers such as batch-norm statistics are copied).

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates (the ``num_updates`` rule of
    TensorFlow's ExponentialMovingAverage): from random weights, a fixed 0.995 would keep half of the random
    initialisation in the average for 140 steps while the copied batch-norm statistics follow the trained
    weights, and the averaged model would score near zero for several epochs.

    Args:
        model: the model being trained.
        decay: weight of the old average per step, in [0, 1).
        updates: updates made before (a resumed run's count).

    Example:
        >>> average = WeightAverage(torch.nn.Linear(2, 2), 0.99)
        >>> average.model.weight.requires_grad
        False
    """

    def __init__(self, model: torch.nn.Module, decay: float, updates: int = 0) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"--ema must be in [0, 1), got {decay}")
        self.decay = decay
        self.updates = updates
        self.model = copy.deepcopy(model).eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Move the average towards ``model``'s current weights."""
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        self.updates += 1
        for average, current in zip(self.model.parameters(), model.parameters(), strict=True):
            average.lerp_(current.detach(), 1.0 - decay)
        for average_buffer, buffer in zip(self.model.buffers(), model.buffers(), strict=True):
            average_buffer.copy_(buffer)


def _to_device(batch: Sequence[torch.Tensor], device: torch.device,
               channels_last: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    channels_last = channels_last or device.type == "cuda"
    images = batch[0].to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    targets = batch[1].to(device, non_blocking=True)
    weights = batch[2].to(device, non_blocking=True) if len(batch) > 2 else None
    return images, targets, weights


@torch.no_grad()
def validate(
    model: torch.nn.Module,
    loader: DataLoader[Any],
    loss_fn: SegmentationLoss,
    info: ModelInfo,
    device: torch.device,
    max_steps: int | None = None,
    amp_dtype: torch.dtype | None = None,
    label_scale: int = 1,
    cleanup: BinaryCleanup | None = None,
) -> dict[str, float]:
    """Validation loss, pixel accuracy and metrics (unetrt.metrics) over ``loader``.

    With ``label_scale`` above 1 the logits are resized bilinearly to the loader's finer labels and scored there.
    With a binary model and a ``cleanup``, the challenge figures of the cleaned masks are added as
    ``cleaned_challenge_pixel_error`` and ``cleaned_challenge_rand_error``.

    Returns:
        ``loss`` and ``accuracy``, plus ``pixel_error``, ``rand_error`` (mean over images),
        ``challenge_pixel_error``, ``challenge_rand_error`` (ISBI 2012 protocol, see
        unetrt.metrics.IsbiChallengeScorer) and ``iou`` (foreground) for a binary model,
        ``mean_iou`` for a multi-class one.
    """
    model.eval()
    binary = info.binary
    matrix = ConfusionMatrix(2 if binary else info.num_classes, None if binary else info.ignore_index)
    challenge = IsbiChallengeScorer()
    cleaned = IsbiChallengeScorer(binarize=cleanup.apply) if binary and cleanup is not None else None
    total_loss, samples, rand_errors = 0.0, 0, []
    for step, batch in enumerate(tqdm(loader, desc="validation", leave=False, unit="batch", disable=None)):
        if max_steps is not None and step >= max_steps:
            break
        images, targets, weights = _to_device(batch, device, amp_dtype is not None)
        with _autocast(device, amp_dtype):
            logits = model(images)
        logits = _to_label_grid(logits, label_scale)
        targets, *rest = _fit_to_output(logits, targets, *([] if weights is None else [weights]))
        loss = loss_fn(logits, targets, rest[0] if rest else None)
        total_loss += loss.item() * images.shape[0]
        samples += images.shape[0]
        predictions = _predict(logits, binary).cpu().numpy()
        truths = targets.cpu().numpy()
        probabilities = torch.sigmoid(logits.float())[:, 0].cpu().numpy() if binary else None
        for index, (prediction, truth) in enumerate(zip(predictions, truths, strict=True)):
            matrix.update(prediction, truth)
            if probabilities is not None:
                rand_errors.append(rand_error(prediction, truth))
                challenge.update(probabilities[index], truth)
                if cleaned is not None:
                    cleaned.update(probabilities[index], truth)
    figures = {"loss": total_loss / max(samples, 1), "accuracy": matrix.pixel_accuracy()}
    if binary:
        scores = challenge.scores()
        figures.update({"pixel_error": 1.0 - matrix.pixel_accuracy(), "rand_error": float(np.mean(rand_errors)),
                        "challenge_pixel_error": scores.pixel_error, "challenge_rand_error": scores.rand_error,
                        "iou": float(matrix.iou()[1])})
        if cleaned is not None:
            cleaned_scores = cleaned.scores()
            figures.update({"cleaned_challenge_pixel_error": cleaned_scores.pixel_error,
                            "cleaned_challenge_rand_error": cleaned_scores.rand_error})
    else:
        figures["mean_iou"] = matrix.mean_iou()
    return figures


def _split(args: argparse.Namespace) -> SplitFiles:
    if args.dataset == "camvid":
        return camvid_split(args.data, None if args.split is None else HeldOutSplit.read(split_file(args.split)))
    test = () if args.test_slices is None else _slice_block("--test-slices", args.test_slices)
    return isbi_split(args.data, _slice_block("--val-slices", args.val_slices), test)


def _slice_block(option: str, text: str) -> range:
    first, _, last = text.partition("-")
    try:
        return range(int(first), int(last or first) + 1)
    except ValueError as exc:
        raise ValueError(f"{option} must look like 20-23, got {text!r}") from exc


def _zoom_range(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError as exc:
        raise ValueError(f"--zoom must look like 0.5,2, got {text!r}") from exc
    return low, high


def _model_info(args: argparse.Namespace, split: SplitFiles) -> ModelInfo:
    gray = split.in_channels == 1
    return ModelInfo(
        class_names=split.class_names,
        colors=split.colors,
        in_channels=split.in_channels,
        mean=GRAY_MEAN if gray else (0.485, 0.456, 0.406),
        std=GRAY_STD if gray else (0.229, 0.224, 0.225),
        padding=args.padding,
        depth=args.depth,
        base=args.base,
        activation=args.activation or DEFAULT_ACTIVATIONS[args.dataset],
        working_size=args.working_size,
        ignore_index=split.ignore_index,
        name=args.name or args.dataset,
        extra={"dropout": list(args.dropout), "batch_norm": args.batch_norm},
    )


def _attach_weight_maps(datasets: Sequence[SegmentationDataset], loss_fn: SegmentationLoss, info: ModelInfo,
                        class_weights: np.ndarray | None, args: argparse.Namespace) -> None:
    kind = loss_fn.weight_map
    if kind is None:
        return
    cache = Path(args.weight_cache) if args.weight_cache else Path(args.output) / "weight_cache"
    options: dict[str, Any] = {}
    if kind == "distance":
        # sigma is in the network's input pixels; finer labels measure it in theirs.
        options = {"w0": args.w0, "sigma": args.sigma * args.label_scale}
        if not info.binary:
            # Multi-class: w_c comes from the data set (median-frequency or uniform), not per image.
            options["class_weights"] = class_weights if class_weights is not None else np.ones(info.num_classes)
    for dataset in datasets:
        maps = precompute_weight_maps(dataset.labels, kind, info.binary, 2 if info.binary else info.num_classes,
                                      info.ignore_index, cache, **options)
        dataset.set_weight_maps(maps)


def _scheduler(optimizer: torch.optim.Optimizer, args: argparse.Namespace) -> Any:
    if args.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(args.epochs, 1), eta_min=args.lr / 100)
    if args.lr_schedule == "plateau":
        # threshold 0: an epoch is stale for the rate exactly when early stopping counts it stale (the default
        # relative threshold counts a slightly worse negative score, -mean IoU, as an improvement).
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=max(args.patience // 2, 1),
                                                          threshold=0.0)
    return None


def _check_args(args: argparse.Namespace) -> None:
    """Refuse, before the data set loads, options that would fail only after it or train on nonsense.

    Raises:
        ValueError: naming the option, what it takes and what was given.
    """
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output {args.output!r} is a file; give a folder for the run's checkpoints and logs")
    if (out / "best.pt").exists() and not (args.resume or args.overwrite):
        raise ValueError(f"--output {args.output!r} holds an earlier run's best.pt; give another folder, continue "
                         f"that run with --resume {str(out / 'last.pt')!r}, or add --overwrite to replace it")
    check_writable_file(out / "best.pt", f"--output {args.output!r}")
    if args.weight_cache is not None:
        # The cache folder is made when the first weight maps are written, after the data set has loaded.
        check_writable_file(Path(args.weight_cache) / "weights.npz", f"--weight-cache {args.weight_cache!r}")
    if args.epochs < 1 or args.batch_size < 1 or args.patience < 1:
        raise ValueError("--epochs, --batch-size and --patience must be at least 1")
    # inf or NaN trains to NaN weights and still saves them as the best checkpoint.
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise ValueError(f"--lr must be a positive finite learning rate, e.g. 1e-3, got {args.lr}")
    for option, weight in (("--dice-weight", args.dice_weight), ("--ce-weight", args.ce_weight),
                           ("--lovasz-weight", args.lovasz_weight), ("--cldice-weight", args.cldice_weight),
                           ("--w0", args.w0)):
        if not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"{option} must be a finite number of at least 0, got {weight}")
    if not (math.isfinite(args.sigma) and args.sigma > 0):
        raise ValueError(f"--sigma must be a positive finite width in pixels, got {args.sigma}")
    if not 0.0 <= args.ema < 1.0:
        raise ValueError(f"--ema must be a decay in [0, 1), e.g. 0.999, or 0 for no weight average; got {args.ema}")
    if args.max_minutes is not None and not args.max_minutes > 0:
        raise ValueError(f"--max-minutes must be a positive number of minutes, got {args.max_minutes}")
    if len(args.dropout) != args.depth:
        # The default's 5 rates fit only the default depth: a --depth alone was refused for a --dropout never given.
        default = parse_dropout(DEFAULT_DROPOUT)
        example = ",".join(f"{rate:g}" for rate in (default + default[-1:] * args.depth)[:args.depth])
        raise ValueError(f"--dropout gives {len(args.dropout)} rates for --depth {args.depth}; give one per level"
                         + (f" (its default {DEFAULT_DROPOUT} is for --depth 5)" if args.dropout == default else "")
                         + f", e.g. --dropout {example}")
    if not 0.0 <= args.class_weight_power <= 1.0:
        raise ValueError(f"--class-weight-power must be between 0 (no balancing) and 1 (median-frequency "
                         f"weights), got {args.class_weight_power}")
    if args.label_scale < 1:
        raise ValueError(f"--label-scale must be a positive integer, got {args.label_scale}; 1 keeps the labels at "
                         "the frames' size")
    if args.monitor_cleanup is not None and args.monitor != "metric":
        raise ValueError("--monitor-cleanup chooses the figure --monitor metric selects on; add --monitor metric")
    if args.split is not None and args.dataset != "camvid":
        raise ValueError(f"--split holds out time spans of the camvid layout; for --dataset {args.dataset} use "
                         "--val-slices and --test-slices")
    for option, size in (("--crop", args.crop), ("--size", args.working_size)):
        if size is not None:
            try:
                check_input_size(size[1], size[0], args.padding, args.depth)
            except ValueError as exc:
                raise ValueError(f"{option}: {exc}") from exc


def _check_sample_sizes(train_set: SegmentationDataset, val_set: SegmentationDataset,
                        args: argparse.Namespace) -> None:
    """The network takes only some sizes: say so before the first step, with the sizes to ask for.

    Raises:
        ValueError: when the training crops or the samples are not a size the network accepts.
    """
    for name, dataset, crop in (("training", train_set, args.crop), ("validation", val_set, None)):
        height, width = dataset.images[0].shape[:2]
        if crop is not None:
            width, height = crop
        try:
            check_input_size(height, width, args.padding, args.depth)
        except ValueError as exc:
            legal = [nearest_legal_sizes(side, args.padding, args.depth)[1] for side in (width, height)]
            raise ValueError(f"the {name} samples are {width}x{height}: {exc}; resize them with --size "
                             f"{legal[0]}x{legal[1]} (or another legal size)") from exc


def train(args: argparse.Namespace) -> Path:
    """Train as ``args`` says and return the path of the best checkpoint."""
    context = init_distributed(args.device)
    try:
        best = _train(args, context)
    except BaseException:
        shutdown(context, completed=False)
        raise
    shutdown(context)
    return best


def _train(args: argparse.Namespace, context: DistributedContext) -> Path:
    _check_args(args)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    split = _split(args)
    info = _model_info(args, split)
    binary = info.binary
    augment = AugmentConfig.parse(args.augment, scale=args.scale, shift=args.shift,
                                  elastic_sigma=args.elastic_sigma, elastic_grid=args.elastic_grid,
                                  zoom=_zoom_range(args.zoom))
    num_classes = None if binary else info.num_classes
    train_set = SegmentationDataset(split.train, info.in_channels, info.mean, info.std, binary, args.working_size,
                                    augment, args.crop, info.ignore_index, num_classes, args.label_scale)
    val_set = SegmentationDataset(split.val, info.in_channels, info.mean, info.std, binary, args.working_size,
                                  ignore_index=info.ignore_index, num_classes=num_classes,
                                  label_scale=args.label_scale)
    _check_sample_sizes(train_set, val_set, args)
    if len(train_set) < context.world_size:
        # The sampler deals each process an equal whole share: floor(n / processes) = 0 samples, no step ever.
        count = len(train_set)
        raise ValueError(f"{count} training sample{'s' if count != 1 else ''} for {context.world_size} processes: "
                         f"each process needs at least one; run --nproc-per-node {max(count, 1)} or fewer, or add "
                         "training samples")
    class_weights_np = None
    if args.class_weights == "median-freq" and not binary:
        class_weights_np = median_frequency_weights(class_frequencies(train_set, info.num_classes))
        class_weights_np = class_weights_np ** args.class_weight_power
        info = replace(info, extra={**info.extra, "class_weights": class_weights_np.tolist()})
    class_weights = None if class_weights_np is None else torch.tensor(class_weights_np, dtype=torch.float32)
    loss_name = "bce" if binary and args.loss == "ce" else args.loss
    loss_fn = SegmentationLoss(loss_name, binary, info.ignore_index, class_weights, args.dice_weight, args.ce_weight,
                               args.lovasz_weight, args.cldice_weight, args.thin_class, args.cldice_iterations,
                               info.num_classes)
    if context.is_main:
        _attach_weight_maps((train_set, val_set), loss_fn, info, class_weights_np, args)
    if context.distributed:
        broadcast_value(None, context)  # rank 0 has filled the cache; the others read it
    if not context.is_main:
        _attach_weight_maps((train_set, val_set), loss_fn, info, class_weights_np, args)

    device = context.device
    amp_dtype = amp_dtype_for(device, args.amp)
    model = build_model(info).to(device)
    if amp_dtype is not None:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    scheduler = _scheduler(optimizer, args)
    # bfloat16 has float32's range, so only float16 needs loss scaling.
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None

    out = Path(args.output)
    state: dict[str, Any] = {"epoch": 0, "best": math.inf, "stale": 0, "history": []}
    if args.resume:
        state = _resume(Path(args.resume), model, optimizer, scheduler, scaler, info)
    elif args.init:
        _init_weights(Path(args.init), model, info)
    ema_updates = 0
    if state.get("ema") is not None:
        # A run saved before the update count was kept resumes with the decay warmed up.
        ema_updates = state.get("ema_updates") or 10**6
    ema = WeightAverage(model, args.ema, ema_updates) if args.ema > 0 else None
    if ema is not None and state.get("ema") is not None:
        ema.model.load_state_dict(state["ema"])
    # The averaged weights are the ones validated, selected and shipped.
    evaluated = model if ema is None else ema.model
    # After the weights exist: different augmentation draws per rank, the same start weights everywhere. A resumed
    # run of one process continues the saved CPU draws (shuffling, augmentation, dropout on the CPU), so that it
    # trains on as the uninterrupted run would; last.pt holds rank 0's state alone, so distributed ranks reseed.
    torch.manual_seed(args.seed + 1000 * context.rank + int(state["epoch"]))
    if state.get("torch_rng") is not None and not context.distributed:
        torch.set_rng_state(state["torch_rng"])
    ddp_model = wrap_model(model, context)

    sampler: DistributedSampler[Any] | None = None
    if context.distributed:
        sampler = DistributedSampler(train_set, context.world_size, context.rank, shuffle=True, seed=args.seed,
                                     drop_last=True)
    drop_last = len(train_set) > args.batch_size * context.world_size
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=sampler is None, sampler=sampler,
                              drop_last=drop_last, num_workers=args.workers, pin_memory=device.type == "cuda",
                              persistent_workers=args.workers > 0)
    val_loader = DataLoader(val_set, batch_size=args.batch_size, num_workers=args.workers)

    monitor_name, lower_better = ("loss", True) if args.monitor == "loss" else (
        BINARY_MONITOR if binary else MULTICLASS_MONITOR)
    cleanup = None
    if args.monitor_cleanup is not None:
        cleanup = _stated_cleanup(args.monitor_cleanup, binary)
        monitor_name = f"cleaned_{BINARY_MONITOR[0]}"
    best_path = out / "best.pt"
    history = [EpochResult(**row) for row in state["history"]]
    if context.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "command.json").write_text(json.dumps({"argv": sys.argv, "args": vars(args),
                                                      "world_size": context.world_size}, indent=2, default=str))
    best, stale = float(state["best"]), int(state["stale"])
    run_start = time.perf_counter()
    for epoch in range(int(state["epoch"]) + 1, args.epochs + 1):
        start = time.perf_counter()
        if sampler is not None:
            sampler.set_epoch(epoch)
        train_loss = run_epoch(ddp_model, train_loader, loss_fn, optimizer, context, f"epoch {epoch} train",
                               args.max_steps, scaler, amp_dtype, ema, args.label_scale)
        figures = validate(evaluated, val_loader, loss_fn, info, device, args.max_steps, amp_dtype,
                           args.label_scale, cleanup)
        figures = broadcast_value(figures, context)
        lr = optimizer.param_groups[0]["lr"]
        result = EpochResult(epoch, train_loss, figures["loss"], figures["accuracy"], time.perf_counter() - start,
                             lr, {k: v for k, v in figures.items() if k not in ("loss", "accuracy")})
        history.append(result)
        value = figures[monitor_name]
        score = value if lower_better else -value
        improved = score < best
        if improved:
            best, stale = score, 0
        else:
            stale += 1
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(score)
        elif scheduler is not None:
            scheduler.step()
        if context.is_main:
            if improved:
                save_checkpoint(best_path, evaluated, info, epoch=epoch, val_loss=figures["loss"],
                                val_accuracy=figures["accuracy"], val_metrics=result.metrics)
            save_checkpoint(out / "last.pt", model, info, epoch=epoch, optimizer=optimizer.state_dict(),
                            ema=None if ema is None else ema.model.state_dict(),
                            ema_updates=None if ema is None else ema.updates,
                            scheduler=None if scheduler is None else scheduler.state_dict(),
                            scaler=None if scaler is None else scaler.state_dict(), best=best, stale=stale,
                            history=[asdict(row) for row in history], torch_rng=torch.get_rng_state())
            write_logs(out, history)
            extra = "  ".join(f"{k} {v:.4f}" for k, v in result.metrics.items())
            print(f"epoch {epoch:3d}  train loss {train_loss:.4f}  val loss {result.val_loss:.4f}  "
                  f"val acc {result.val_accuracy:.4f}  {extra}  lr {lr:.2e}  {result.seconds:.0f}s"
                  f"{'  *best*' if improved else ''}", flush=True)
        if stale >= args.patience:
            if context.is_main:
                print(f"early stop: validation {monitor_name} has not improved for {args.patience} epochs",
                      flush=True)
            break
        out_of_time = args.max_minutes is not None and time.perf_counter() - run_start > 60 * args.max_minutes
        if broadcast_value(out_of_time, context):
            if context.is_main:
                print(f"stop: the --max-minutes budget of {args.max_minutes:g} minutes is spent", flush=True)
            break
    digests = gather_digests(ddp_model, context)
    if context.is_main:
        best_row = _best_row(history, monitor_name, lower_better)
        summary = {"best_epoch": None if best_row is None else best_row.epoch,
                   "best": None if best_row is None else asdict(best_row), "monitor": monitor_name,
                   "world_size": context.world_size, "rank_weight_digests": digests,
                   "epochs_run": len(history), "split": args.split,
                   "samples": {"train": len(train_set), "select": len(val_set)}}
        (out / "run.json").write_text(json.dumps(summary, indent=2))
    if math.isinf(best):
        # No epoch scored a number (NaN is never an improvement), so best.pt was never written.
        raise ValueError(f"the validation {monitor_name} was NaN or infinite in every epoch (the weights diverged), "
                         f"so there is no best.pt in {str(out)!r}; lower --lr (this run's: {args.lr:g}) and train "
                         "again")
    if context.is_main:
        print(f"best checkpoint: {best_path} (val {monitor_name} {abs(best):.4f})")
    return best_path


def _stated_cleanup(statement: Path, binary: bool) -> BinaryCleanup:
    """The clean-up a model statement (``engine/models/NAME.json``) states, for --monitor-cleanup.

    Raises:
        ValueError: for a multi-class run, or a statement that is unreadable or states no clean-up.
    """
    if not binary:
        raise ValueError("--monitor-cleanup is for binary models (a clean-up of cell masks); this run is multi-class")
    not_a_statement = (f"--monitor-cleanup {str(statement)!r} is not a model statement with a 'cleanup' (like "
                       "engine/models/isbi.json)")
    try:
        stated = read_json(statement, "file")
    except (OSError, ValueError) as exc:
        raise ValueError(f"{not_a_statement}: {exc}") from exc
    cleanup = statement_cleanup(stated, f"--monitor-cleanup {str(statement)!r}") if isinstance(stated, dict) else None
    if cleanup is None:
        raise ValueError(not_a_statement)
    return cleanup


def _best_row(history: Sequence[EpochResult], monitor: str, lower_better: bool) -> EpochResult | None:
    def value(row: EpochResult) -> float:
        raw = row.val_loss if monitor == "loss" else row.metrics[monitor]
        return raw if lower_better else -raw

    # Epochs of a resumed run may have been scored before its monitor was asked for; a NaN score is never the best.
    scored = [row for row in history if (monitor == "loss" or monitor in row.metrics) and not math.isnan(value(row))]
    return min(scored, key=value) if scored else None


def _init_weights(path: Path, model: torch.nn.Module, info: ModelInfo) -> None:
    """Load the weights of another checkpoint of the same architecture, or of one of the same family at another
    ``--base``: a narrower one is widened into this run's network computing the same function
    (:func:`unetrt.export.width.widen_unet`), a wider one narrowed to its largest channels
    (:func:`unetrt.export.width.narrow_unet`).

    Raises:
        ValueError: when its architecture differs from this run's other than by the base.
    """
    data = load_checkpoint(path, map_location="cpu")
    theirs = checkpoint_description(data)
    ours_arch = (info.in_channels, info.num_classes, info.depth, info.padding, info.activation,
                 bool(info.extra.get("batch_norm")))
    theirs_arch = (theirs.in_channels, theirs.num_classes, theirs.depth, theirs.padding, theirs.activation,
                   bool(theirs.extra.get("batch_norm")))
    if theirs.num_classes != info.num_classes:
        # No flag sets the class count: "match the flags" sent the user looking for one.
        raise ValueError(f"--init {str(path)!r} has {theirs.num_classes} classes ({', '.join(theirs.class_names)}), "
                         f"this data set {info.num_classes} ({', '.join(info.class_names)}); --init needs the same "
                         "classes: give classes.json that run's classes, or train without --init")
    if ours_arch != theirs_arch:
        raise ValueError(f"--init {str(path)!r} has architecture {theirs_arch}, this run builds {ours_arch} (in, "
                         "classes, depth, padding, activation, batch norm; only the base may differ); match the flags")
    source = model if theirs.base == info.base else build_model(
        replace(theirs, extra={**theirs.extra, "dropout": info.extra.get("dropout")}))
    source.load_state_dict(data["model"])
    if "prior_correction" in theirs.extra:
        _undo_prior_correction(path, source, theirs)
    if theirs.base < info.base:
        widen_unet(source, model)  # type: ignore[arg-type]  # build_model made both UNets
        print(f"--init: widened base {theirs.base} to base {info.base}: the new channels repeat trained ones, so "
              "training starts from the narrow network's function")
    elif theirs.base > info.base:
        narrow_unet(source, model)  # type: ignore[arg-type]
        print(f"--init: narrowed base {theirs.base} to base {info.base}: every layer keeps its channels of largest "
              "activation; training recovers what the dropped ones carried")


def _undo_prior_correction(path: Path, model: torch.nn.Module, info: ModelInfo) -> None:
    # The correction was chosen for the weights as trained; training on from the corrected head would teach the
    # network to cancel it, and the next run's own correction would then be chosen against a moving target.
    undo_class_prior(model, info)  # type: ignore[arg-type]  # build_model made it a UNet
    print(f"--init: {str(path)!r} carries a class-prior correction (tau {info.extra['prior_correction']['tau']}); "
          "training starts from the weights as trained, without it")


RESUME_KEYS = ("in_channels", "base", "depth", "padding", "activation", "class_names", "working_size")


def _resume(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
            scaler: torch.amp.GradScaler | None, info: ModelInfo) -> dict[str, Any]:
    """Load weights and training state from a ``last.pt``; returns epoch, best, stale, history, the weight average
    with its update count, and the random state the run was saved with.

    Raises:
        ValueError: when the checkpoint lacks training state or describes another architecture.
    """
    data = load_checkpoint(path)
    if "optimizer" not in data or "epoch" not in data:
        raise ValueError(f"{str(path)!r} holds no training state (optimizer, epoch); resume from a last.pt")
    saved = checkpoint_description(data)
    # The working size is what the model states: a resume that forgot --size would train on at the samples' own
    # size and ship a model stating none. Without batch norm the saved weights do not even load.
    theirs = {key: getattr(saved, key) for key in RESUME_KEYS} | {"batch_norm": bool(saved.extra.get("batch_norm"))}
    ours = {key: getattr(info, key) for key in RESUME_KEYS} | {"batch_norm": bool(info.extra.get("batch_norm"))}
    for key, value in theirs.items():
        if value != ours[key]:
            raise ValueError(f"cannot resume from {str(path)!r}: its {key} is {value!r}, this run's is "
                             f"{ours[key]!r}; resume with that run's options (its command.json lists them)")
    model.load_state_dict(data["model"])
    optimizer.load_state_dict(data["optimizer"])
    if scheduler is not None and data.get("scheduler") is not None:
        # Loading puts back the saved cycle's length, and a cosine schedule run past it climbs back up.
        saved_length, length = data["scheduler"].get("T_max"), getattr(scheduler, "T_max", None)
        if None not in (saved_length, length) and saved_length != length:
            raise ValueError(f"cannot resume {str(path)!r} with --epochs {length}: its cosine schedule runs over "
                             f"{saved_length} epochs; resume with --epochs {saved_length}, or start a new cycle "
                             f"from its weights with --init {str(path)!r}")
        scheduler.load_state_dict(data["scheduler"])
    if scaler is not None and data.get("scaler") is not None:
        scaler.load_state_dict(data["scaler"])
    return {"epoch": int(data["epoch"]), "best": float(data.get("best", math.inf)),
            "stale": int(data.get("stale", 0)), "history": list(data.get("history", [])), "ema": data.get("ema"),
            "ema_updates": data.get("ema_updates"), "torch_rng": data.get("torch_rng")}


def write_logs(out: Path, history: Sequence[EpochResult]) -> None:
    """``log.csv`` and ``history.json`` of all epochs so far, and ``curves.png`` of loss and metrics."""
    metric_names = sorted({name for row in history for name in row.metrics})
    with (out / "log.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", "train_loss", "val_loss", "val_accuracy", "seconds", "lr", *metric_names])
        for row in history:
            writer.writerow([row.epoch, f"{row.train_loss:.6f}", f"{row.val_loss:.6f}", f"{row.val_accuracy:.6f}",
                             f"{row.seconds:.1f}", f"{row.lr:.3g}",
                             *(f"{row.metrics.get(name, float('nan')):.6f}" for name in metric_names)])
    (out / "history.json").write_text(json.dumps([asdict(row) for row in history], indent=2))
    plot_curves(history, out / "curves.png")


def plot_curves(history: Sequence[EpochResult], path: Path) -> None:
    """Loss (train and validation) and validation metrics per epoch, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row.epoch for row in history]
    fig, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=(11, 4))
    loss_ax.plot(epochs, [row.train_loss for row in history], label="train")
    loss_ax.plot(epochs, [row.val_loss for row in history], label="validation")
    loss_ax.set(xlabel="epoch", ylabel="loss", title="loss")
    loss_ax.legend()
    for name in sorted({name for row in history for name in row.metrics}):
        metric_ax.plot(epochs, [row.metrics.get(name, float("nan")) for row in history], label=name)
    metric_ax.plot(epochs, [row.val_accuracy for row in history], label="pixel accuracy", linestyle=":")
    metric_ax.set(xlabel="epoch", title="validation metrics", ylim=(0, 1))
    metric_ax.legend()
    fig.tight_layout()
    write_whole(path, plot_png(fig, dpi=80))
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``unet-train``; returns the exit code."""
    args = build_parser().parse_args(argv)
    return run_cli(lambda: train(args))


if __name__ == "__main__":
    sys.exit(main())
