"""Training data: image/label pairs held in memory as network-ready tensors.

The samples are decoded and resized once (to the model's working size when it
has one) so that an epoch on two CPU cores spends its time in the network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from unetrt.datasets import paired_files, read_class_table, read_image, read_label
from unetrt.preprocessing import normalize


@dataclass(frozen=True)
class SplitFiles:
    """Train and validation (image, label) pairs plus the class table of a data set."""

    train: list[tuple[Path, Path]]
    val: list[tuple[Path, Path]]
    class_names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    ignore_index: int | None
    in_channels: int


def camvid_split(root: str | Path) -> SplitFiles:
    """CamVid in the SegNet layout: train/, trainannot/, val/, valannot/, classes.json.

    Raises:
        FileNotFoundError: when a folder or classes.json is missing.
    """
    root = Path(root)
    table_path = root / "classes.json"
    if not table_path.is_file():
        raise FileNotFoundError(f"{str(table_path)!r} not found: is {str(root)!r} a CamVid folder?")
    table = read_class_table(table_path)
    return SplitFiles(
        train=paired_files(root / "train", root / "trainannot"),
        val=paired_files(root / "val", root / "valannot"),
        class_names=table.names,
        colors=table.colors,
        ignore_index=table.ignore_index,
        in_channels=3,
    )


def isbi_split(root: str | Path, val_slices: Sequence[int] = (20, 21, 22, 23)) -> SplitFiles:
    """ISBI 2012 EM: images/NN.png, labels/NN.png; a contiguous block of slices is held out.

    The binary target is the cell interior (label 255) against membrane (label 0).

    Raises:
        ValueError: when ``val_slices`` is not a contiguous block of existing slices.
    """
    root = Path(root)
    pairs = paired_files(root / "images", root / "labels")
    held = sorted(set(val_slices))
    if not held or held != list(range(held[0], held[-1] + 1)):
        raise ValueError(f"validation slices must be one contiguous block (adjacent slices correlate), got {held}")
    stems = {int(p.stem) for p, _ in pairs}
    if not set(held) <= stems:
        raise ValueError(f"validation slices {held} are not all in {sorted(stems)}")
    return SplitFiles(
        train=[pair for pair in pairs if int(pair[0].stem) not in held],
        val=[pair for pair in pairs if int(pair[0].stem) in held],
        class_names=("cell",),
        colors=((255, 255, 0),),
        ignore_index=None,
        in_channels=1,
    )


class SegmentationDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Preloaded (image, target) pairs with flips and brightness/contrast jitter.

    Args:
        pairs: (image path, label path) pairs.
        in_channels: 3 (BGR files, fed as RGB) or 1.
        mean: normalisation mean per channel (RGB order).
        std: normalisation std per channel.
        binary: labels are 0/255 masks rather than class ids.
        size: optional (width, height) every sample is resized to.
        augment: random flips and photometric jitter.

    Returns (per item):
        image (C, H, W) float32 and target (H, W) int64 class ids (binary: 0/1).
    """

    def __init__(
        self,
        pairs: Sequence[tuple[Path, Path]],
        in_channels: int,
        mean: Sequence[float],
        std: Sequence[float],
        binary: bool,
        size: tuple[int, int] | None = None,
        augment: bool = False,
    ) -> None:
        if not pairs:
            raise ValueError("a dataset needs at least one (image, label) pair")
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.augment = augment
        self.images: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        for image_path, label_path in pairs:
            image = read_image(image_path, in_channels)
            label = read_label(label_path, binary)
            if image.shape[:2] != label.shape[:2]:
                raise ValueError(
                    f"image {image_path.name} is {image.shape[1]}x{image.shape[0]} but its label is "
                    f"{label.shape[1]}x{label.shape[0]}"
                )
            if size is not None and (image.shape[1], image.shape[0]) != size:
                image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
                label = cv2.resize(label, size, interpolation=cv2.INTER_NEAREST)
            if in_channels == 3:
                image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
            self.images.append(image)
            self.labels.append(label)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.images[index], self.labels[index]
        if self.augment:
            image, label = _augment(image, label)
        tensor = normalize(image, self.mean, self.std)
        return torch.from_numpy(tensor), torch.from_numpy(label.astype(np.int64))


def _augment(image: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(torch.randint(0, 2**31 - 1, ()).item())
    if rng.random() < 0.5:
        image, label = image[:, ::-1], label[:, ::-1]
    gain = rng.uniform(0.8, 1.2)
    bias = rng.uniform(-20, 20)
    image = np.clip(image.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image), np.ascontiguousarray(label)


def class_frequencies(dataset: SegmentationDataset, num_classes: int) -> np.ndarray:
    """Pixel frequency of each class over the data set (ignored ids left out)."""
    counts = np.zeros(num_classes, dtype=np.float64)
    for label in dataset.labels:
        counts += np.bincount(label.ravel(), minlength=256)[:num_classes]
    return counts / max(counts.sum(), 1.0)


def median_frequency_weights(frequencies: np.ndarray) -> np.ndarray:
    """SegNet's median-frequency balancing: weight_c = median(freq) / freq_c (absent classes get 0)."""
    present = frequencies > 0
    weights = np.zeros_like(frequencies)
    weights[present] = np.median(frequencies[present]) / frequencies[present]
    return weights
