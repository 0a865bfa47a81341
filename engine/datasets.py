"""Reading image/label folder pairs, with the CamVid and ISBI 2012 conventions.

Numpy and OpenCV only, so evaluation works in the runtime without torch.
Label maps are single-channel uint8 class ids (CamVid) or 0/255 binary masks (ISBI).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


@dataclass(frozen=True)
class ClassTable:
    """Class names, display colours and the ignored id of a labelled data set."""

    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    ignore_index: int | None


def list_images(folder: str | Path) -> list[Path]:
    """Image files of a folder, sorted by name.

    Raises:
        FileNotFoundError: when the folder does not exist.
        ValueError: when it holds no image files.

    Example:
        >>> list_images("../shared/data/camvid/val")[:1]  # doctest: +SKIP
        [PosixPath('../shared/data/camvid/val/0016E5_07959.png')]
    """
    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(f"image folder {str(path)!r} does not exist")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"folder {str(path)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def paired_files(images: str | Path, labels: str | Path) -> list[tuple[Path, Path]]:
    """Pairs of (image, label) files matched by file stem.

    Raises:
        FileNotFoundError: when a folder does not exist.
        ValueError: when the stems of the two folders differ; the message lists some of each.

    Example:
        >>> pairs = paired_files("../shared/data/isbi2012-em/images",
        ...                      "../shared/data/isbi2012-em/labels")  # doctest: +SKIP
    """
    image_files = {p.stem: p for p in list_images(images)}
    label_files = {p.stem: p for p in list_images(labels)}
    only_images = sorted(image_files.keys() - label_files.keys())
    only_labels = sorted(label_files.keys() - image_files.keys())
    if only_images or only_labels:
        parts = []
        if only_images:
            parts.append(f"{len(only_images)} images have no label (e.g. {', '.join(only_images[:3])})")
        if only_labels:
            parts.append(f"{len(only_labels)} labels have no image (e.g. {', '.join(only_labels[:3])})")
        raise ValueError(
            f"image folder {str(images)!r} and label folder {str(labels)!r} do not match by file stem: "
            + "; ".join(parts)
        )
    return [(image_files[s], label_files[s]) for s in sorted(image_files)]


def read_image(path: str | Path, channels: int = 3) -> np.ndarray:
    """Read an image as HxWx3 BGR uint8 (channels=3) or HxW uint8 (channels=1).

    Raises:
        ValueError: when OpenCV cannot decode the file.
    """
    flag = cv2.IMREAD_COLOR if channels == 3 else cv2.IMREAD_GRAYSCALE
    image = cv2.imread(str(path), flag)
    if image is None:
        raise ValueError(f"cannot read image {str(path)!r}: missing, unreadable or not an image")
    return image


def read_label(path: str | Path, binary: bool) -> np.ndarray:
    """Read a label map as HxW uint8: class ids, or 0/1 for a binary mask (pixels > 127 are 1).

    Raises:
        ValueError: when the file cannot be decoded.
    """
    label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if label is None:
        raise ValueError(f"cannot read label {str(path)!r}: missing, unreadable or not an image")
    if label.ndim == 3:
        label = label[..., 0]
    if label.dtype != np.uint8:
        raise ValueError(f"label {str(path)!r} has dtype {label.dtype}; expected uint8 class ids")
    return (label > 127).astype(np.uint8) if binary else label


def read_class_table(path: str | Path) -> ClassTable:
    """Read a CamVid-style ``classes.json`` (ids, names, colours, ``ignore_index``).

    The ignored class is left out of the returned names and colours; ids must
    be 0..K-1 for the K kept classes.

    Raises:
        ValueError: when the file is malformed.
    """
    data = json.loads(Path(path).read_text())
    ignore = data.get("ignore_index")
    classes = sorted((c for c in data["classes"] if c["id"] != ignore), key=lambda c: c["id"])
    if [c["id"] for c in classes] != list(range(len(classes))):
        raise ValueError(f"class ids in {str(path)!r} must be 0..K-1 apart from ignore_index")
    return ClassTable(
        names=tuple(c["name"] for c in classes),
        colors=tuple(tuple(int(v) for v in c["color"]) for c in classes),  # type: ignore[misc]
        ignore_index=ignore,
    )


def find_class_table(labels: str | Path) -> Path | None:
    """A ``classes.json`` beside or inside the label folder, if there is one."""
    folder = Path(labels)
    for candidate in (folder / "classes.json", folder.parent / "classes.json"):
        if candidate.is_file():
            return candidate
    return None
