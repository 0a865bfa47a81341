"""Training data: image/label pairs held in memory, augmented and cropped per item.

The samples are decoded and resized once (to the model's working size when it
has one) so that an epoch on two CPU cores spends its time in the network;
optional per-pixel loss weight maps (:mod:`unetrt.export.weights`) travel with
them through the same augmentation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from unetrt.datasets import check_label_ids, paired_files, read_class_table, read_image, read_label
from unetrt.heldout import HeldOutSplit
from unetrt.preprocessing import normalize

from .augment import AugmentConfig, augment, label_scale_of


@dataclass(frozen=True)
class SplitFiles:
    """Train and validation (image, label) pairs plus the class table of a data set."""

    train: list[tuple[Path, Path]]
    val: list[tuple[Path, Path]]
    class_names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    ignore_index: int | None
    in_channels: int


def camvid_split(root: str | Path, held_out: HeldOutSplit | None = None) -> SplitFiles:
    """The SegNet layout of CamVid, and of any data set of your own (docs/own-data.md): train/, trainannot/,
    val/, valannot/ (labels named as their images, any image suffix) and classes.json.

    With ``held_out``, the folders are pooled and split by time span instead: training gets every frame outside
    the split's parts and guard bands, validation (model selection) its ``select`` part.

    Raises:
        FileNotFoundError: when a folder or classes.json is missing.
        ValueError: when classes.json is malformed or the images and labels do not pair up.
    """
    root = Path(root)
    table_path = root / "classes.json"
    if not table_path.is_file():
        raise FileNotFoundError(f"{str(table_path)!r} not found: a data set folder holds train/, trainannot/, val/, "
                                "valannot/ and classes.json (docs/own-data.md)")
    table = read_class_table(table_path)
    if len(table.names) < 2:
        # One class makes a binary model whose one name is the foreground's (label 1 or 255), while the table says
        # id 0: the model would be named for the wrong pixels, and labels holding other ids would not be checked.
        raise ValueError(f"{str(table_path)!r} lists one class ({table.names[0]!r}); a model needs at least two: "
                         "add background as id 0 and number your classes 1, 2, ... (docs/own-data.md)")
    if held_out is not None:
        train, val = held_out.train_pairs(root), held_out.pairs(root, "select")
    else:
        train, val = paired_files(root / "train", root / "trainannot"), paired_files(root / "val", root / "valannot")
    return SplitFiles(
        train=train,
        val=val,
        class_names=table.names,
        colors=table.colors,
        ignore_index=table.ignore_index,
        in_channels=3,
    )


def isbi_split(root: str | Path, val_slices: Sequence[int] = (20, 21, 22, 23),
               test_slices: Sequence[int] = ()) -> SplitFiles:
    """ISBI 2012 EM: images/NN.png, labels/NN.png; a contiguous block of slices is held out for validation.

    The binary target is the cell interior (label 255) against membrane (label 0). A second block,
    ``test_slices``, is left out of both training and validation, for figures selection never saw.

    Raises:
        FileNotFoundError: when a folder is missing.
        ValueError: when an image is not named by its slice number, the images and labels do not pair up, a block
            is not contiguous, names missing slices, or the two blocks overlap.
    """
    root = Path(root)
    pairs = paired_files(root / "images", root / "labels")
    numbers = {image: _slice_number(image) for image, _ in pairs}
    stems = set(numbers.values())
    blocks = {"validation": sorted(set(val_slices)), "test": sorted(set(test_slices))}
    for name, held in blocks.items():
        if name == "test" and not held:
            continue
        if not held or held != list(range(held[0], held[-1] + 1)):
            raise ValueError(f"{name} slices must be one contiguous block (adjacent slices correlate), got {held}")
        if not set(held) <= stems:
            raise ValueError(f"{name} slices {held} are not all in {sorted(stems)}")
    held = blocks["validation"]
    if set(held) & set(blocks["test"]):
        raise ValueError(f"validation slices {held} and test slices {blocks['test']} overlap")
    left_out = set(held) | set(blocks["test"])
    return SplitFiles(
        train=[pair for pair in pairs if numbers[pair[0]] not in left_out],
        val=[pair for pair in pairs if numbers[pair[0]] in held],
        class_names=("cell",),
        colors=((255, 255, 0),),
        ignore_index=None,
        in_channels=1,
    )


def _slice_number(image: Path) -> int:
    """The slice an ISBI image is, from its name (``07.png``: 7); the validation and test blocks name slices."""
    if not (image.stem.isascii() and image.stem.isdigit()):
        raise ValueError(f"ISBI image {str(image)!r} is not named by its slice number: the isbi layout's images/ and "
                         "labels/ hold NN.png (00.png, 01.png, ...); rename it and its label, or move both out")
    return int(image.stem)


class SegmentationDataset(Dataset[tuple[torch.Tensor, ...]]):
    """Preloaded (image, target[, weights]) samples with augmentation and random crops.

    Args:
        pairs: (image path, label path) pairs.
        in_channels: 3 (BGR files, fed as RGB) or 1.
        mean: normalisation mean per channel (RGB order).
        std: normalisation std per channel.
        binary: labels are 0/255 masks rather than class ids.
        size: optional (width, height) every sample is resized to.
        augment: an :class:`AugmentConfig`; ``True`` means the default (horizontal flip and
            brightness/contrast jitter), ``False`` none.
        crop: optional (width, height) of a random crop taken after augmentation (training on
            parts of large images).
        ignore_index: label id filled in where geometric augmentation exposes the border.
        num_classes: the class table's size; when given (multi-class), every label is checked to hold only the
            ids 0..num_classes-1 and ``ignore_index``.
        label_scale: labels are kept at this multiple of ``size`` (nearest neighbour from the file), so that a
            loss on logits resized to them sees structures thinner than a pixel of the network's input (a pole
            2 px wide in a 480x360 label is one pixel or none at 256x192); augmentation and crops move them with
            the image. 1: the labels are resized with the images.

    Returns (per item):
        image (C, H, W) float32 and target (k*H, k*W) int64 class ids (binary: 0/1), k = ``label_scale``, plus
        the weight map of the target's size (float32) once :meth:`set_weight_maps` has given the maps.

    Raises:
        ValueError: without pairs, when an image and its label differ in size, a label holds an id outside
            the class table, samples differ in size without ``size`` or ``crop`` (they could not be batched),
            a crop is larger than the samples, or ``label_scale`` is not a positive integer.

    Example:
        >>> data = SegmentationDataset(isbi_split("isbi").train, 1, (0.5,), (0.25,), True)  # doctest: +SKIP
    """

    def __init__(
        self,
        pairs: Sequence[tuple[Path, Path]],
        in_channels: int,
        mean: Sequence[float],
        std: Sequence[float],
        binary: bool,
        size: tuple[int, int] | None = None,
        augment: bool | AugmentConfig = False,
        crop: tuple[int, int] | None = None,
        ignore_index: int | None = None,
        num_classes: int | None = None,
        label_scale: int = 1,
    ) -> None:
        if not pairs:
            raise ValueError("a dataset needs at least one (image, label) pair")
        if label_scale < 1:
            raise ValueError(f"label_scale must be a positive integer, got {label_scale}")
        self.mean = tuple(mean)
        self.std = tuple(std)
        if isinstance(augment, AugmentConfig):
            self.augment: AugmentConfig | None = augment
        else:
            self.augment = AugmentConfig() if augment else None
        self.crop = crop
        self.ignore_index = ignore_index
        self.images: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.weight_maps: list[np.ndarray] | None = None
        for image_path, label_path in pairs:
            image = read_image(image_path, in_channels)
            label = read_label(label_path, binary)
            if image.shape[:2] != label.shape[:2]:
                raise ValueError(
                    f"image {str(image_path)!r} is {image.shape[1]}x{image.shape[0]} but its label "
                    f"{str(label_path)!r} is {label.shape[1]}x{label.shape[0]}: a label must be drawn on its image "
                    "at the same size"
                )
            if num_classes is not None and not binary:
                check_label_ids(label, label_path, num_classes, ignore_index)
            if size is not None and (image.shape[1], image.shape[0]) != size:
                image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            label_size = (image.shape[1] * label_scale, image.shape[0] * label_scale)
            if (label.shape[1], label.shape[0]) != label_size:
                label = cv2.resize(label, label_size, interpolation=cv2.INTER_NEAREST)
            if in_channels == 3:
                image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
            if crop is not None and (crop[0] > image.shape[1] or crop[1] > image.shape[0]):
                raise ValueError(f"crop {crop[0]}x{crop[1]} is larger than sample {image_path.name} "
                                 f"({image.shape[1]}x{image.shape[0]}); choose a smaller --crop")
            if crop is None and self.images and image.shape[:2] != self.images[0].shape[:2]:
                first = self.images[0]
                raise ValueError(f"samples differ in size ({pairs[0][0].name} is {first.shape[1]}x{first.shape[0]}, "
                                 f"{image_path.name} is {image.shape[1]}x{image.shape[0]}): give --size WxH "
                                 "to resize them all to one size")
            self.images.append(image)
            self.labels.append(label)

    def set_weight_maps(self, maps: Sequence[np.ndarray]) -> None:
        """Attach one per-pixel loss weight map per sample (then items carry a third tensor).

        Raises:
            ValueError: when the count or a shape does not match the labels.
        """
        if len(maps) != len(self.labels):
            raise ValueError(f"got {len(maps)} weight maps for {len(self.labels)} samples")
        for weights, label in zip(maps, self.labels, strict=True):
            if weights.shape != label.shape:
                raise ValueError(f"weight map of shape {weights.shape} for a label of shape {label.shape}")
        self.weight_maps = [np.asarray(m, dtype=np.float32) for m in maps]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        image, label = self.images[index], self.labels[index]
        weights = None if self.weight_maps is None else self.weight_maps[index]
        if self.augment is not None or self.crop is not None:
            # Seeded from torch so that torch.manual_seed fixes the augmentation too (and each
            # DataLoader worker, seeded differently by torch, draws differently).
            rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ()).item()))
            if self.augment is not None:
                image, label, weights = augment(image, label, weights, self.augment, rng, self.ignore_index)
            if self.crop is not None:
                image, label, weights = random_crop(image, label, weights, self.crop, rng)
        tensor = normalize(image, self.mean, self.std)
        items = (torch.from_numpy(tensor), torch.from_numpy(label.astype(np.int64)))
        if weights is None:
            return items
        return (*items, torch.from_numpy(np.ascontiguousarray(weights, dtype=np.float32)))


def random_crop(
    image: np.ndarray, label: np.ndarray, weights: np.ndarray | None, size: tuple[int, int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The same random (width, height) window of image, label and weight map.

    A label (and weight map) k times the image's size gets the window k times as large, at k times the offset.

    Example:
        >>> _, lab, _ = random_crop(np.zeros((8, 8)), np.zeros((8, 8)), None, (4, 2), np.random.default_rng(0))
        >>> lab.shape
        (2, 4)
    """
    width, height = size
    scale = label_scale_of(image, label)
    top = int(rng.integers(image.shape[0] - height + 1))
    left = int(rng.integers(image.shape[1] - width + 1))
    window = (slice(top, top + height), slice(left, left + width))
    fine = (slice(scale * top, scale * (top + height)), slice(scale * left, scale * (left + width)))
    cropped = None if weights is None else np.ascontiguousarray(weights[fine])
    return np.ascontiguousarray(image[window]), np.ascontiguousarray(label[fine]), cropped


def class_frequencies(dataset: SegmentationDataset, num_classes: int) -> np.ndarray:
    """Pixel frequency of each class over the data set (ignored ids left out)."""
    counts = np.zeros(num_classes, dtype=np.float64)
    for label in dataset.labels:
        counts += np.bincount(label.ravel(), minlength=256)[:num_classes]
    return counts / max(counts.sum(), 1.0)


def median_frequency_weights(frequencies: np.ndarray) -> np.ndarray:
    """Median-frequency balancing: weight_c = median(freq) / freq_c (absent classes get 0).

    ``freq_c`` is the class's share of all scored pixels (:func:`class_frequencies`), not SegNet's (Eigen and
    Fergus') share of the pixels of only the images the class appears in: a class seen in few frames weighs more here.
    """
    present = frequencies > 0
    weights = np.zeros_like(frequencies)
    weights[present] = np.median(frequencies[present]) / frequencies[present]
    return weights
