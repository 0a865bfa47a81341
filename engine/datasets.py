"""Reading image/label folder pairs, with the CamVid and ISBI 2012 conventions.

Numpy and OpenCV only, so evaluation works in the runtime without torch.
Label maps are single-channel uint8 class ids (CamVid) or 0/255 binary masks (ISBI); the layout and
``classes.json`` of a data set of your own are described in docs/own-data.md.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from .paths import check_folder, check_utf8_name, read_json

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# IHDR's colour type byte (offset 25 of the file) of an indexed-colour PNG (PNG specification, 11.2.2).
PNG_COLOUR_TYPE_AT, PNG_INDEXED = 25, 3


@dataclass(frozen=True)
class ClassTable:
    """Class names, display colours and the ignored id of a labelled data set."""

    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    ignore_index: int | None


def list_images(folder: str | Path, what: str = "image folder") -> list[Path]:
    """Image files of a folder, sorted by name; ``what`` names the folder in messages (``"label folder"``).

    Raises:
        FileNotFoundError: when the folder does not exist.
        ValueError: when it holds no image files, or one whose name is not valid UTF-8 (refused before any is
            read: OpenCV would crash on it).

    Example:
        >>> list_images("../shared/data/camvid/val")[:1]  # doctest: +SKIP
        [PosixPath('../shared/data/camvid/val/0016E5_07959.png')]
    """
    path = check_folder(folder, what)
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{what} {str(path)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    for file in files:
        check_utf8_name(file, "image")
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
    label_files = {p.stem: p for p in list_images(labels, "label folder")}
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


def _has_second_tiff_page(path: Path) -> bool:
    """Whether the TIFF at ``path`` links a second page from its first (False for anything else or unreadable:
    OpenCV then says what is wrong when it reads the file)."""
    try:
        with path.open("rb") as file:
            head = file.read(16)
            if len(head) < 8 or head[:2] not in (b"II", b"MM"):
                return False
            endian: Literal["little", "big"] = "little" if head[:2] == b"II" else "big"
            version = int.from_bytes(head[2:4], endian)
            # BigTIFF (43) has 8-byte counts and offsets and 20-byte entries; classic TIFF (42) 2, 4 and 12.
            count_size, offset_size, entry_size = (8, 8, 20) if version == 43 else (2, 4, 12)
            if version not in (42, 43) or len(head) < 8 + (offset_size if version == 43 else 0):
                return False
            first = int.from_bytes(head[8:16] if version == 43 else head[4:8], endian)
            file.seek(first)
            count = int.from_bytes(file.read(count_size), endian)
            file.seek(first + count_size + count * entry_size)
            link = file.read(offset_size)
            return len(link) == offset_size and int.from_bytes(link, endian) != 0
    except (OSError, ValueError):
        return False


def check_single_page(path: str | Path, what: str) -> None:
    """Refuse a TIFF of several pages: OpenCV reads its first page only, and the others would be left out in silence
    (an EM stack such as the ISBI 2012 challenge's train-volume.tif holds every slice in one file).

    Raises:
        ValueError: naming the page count and how to split the stack.

    Example:
        >>> check_single_page("frame.png", "image")
    """
    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff") or not _has_second_tiff_page(path):
        return
    pages = cv2.imcount(check_utf8_name(path, what))
    raise ValueError(f"{what} {str(path)!r} is a stack of {pages} pages, of which only the first would be read: "
                     "split it into one image per page first, e.g. for i, page in enumerate(cv2.imreadmulti(path, "
                     "flags=cv2.IMREAD_UNCHANGED)[1]): cv2.imwrite(f'slice_{i:03d}.tif', page)")


def read_image(path: str | Path, channels: int = 3) -> np.ndarray:
    """Read an image as HxWx3 BGR uint8 (channels=3) or HxW uint8 (channels=1).

    Raises:
        ValueError: when OpenCV cannot decode the file, its name is not valid UTF-8 (OpenCV would crash on it), or
            it is a TIFF of several pages (:func:`check_single_page`).
    """
    name = check_utf8_name(path, "image")
    check_single_page(path, "image")
    flag = cv2.IMREAD_COLOR if channels == 3 else cv2.IMREAD_GRAYSCALE
    image = cv2.imread(name, flag)
    if image is None:
        raise ValueError(f"cannot read image {str(path)!r}: missing, unreadable or not an image")
    return image


def read_label(path: str | Path, binary: bool) -> np.ndarray:
    """Read a label map as HxW uint8: class ids, or 0/1 for a binary mask (a 0/255 mask: pixels > 127 are 1; a map
    of ids 0 and 1 as it is).

    Raises:
        ValueError: when the file cannot be decoded, its name is not valid UTF-8 (OpenCV would crash on it), or it
            is a TIFF of several pages (:func:`check_single_page`).
    """
    if not binary and Path(path).suffix.lower() in (".jpg", ".jpeg"):
        # JPEG's compression invents ids at the edges between classes, and those that land inside the class table
        # would train and score as wrong labels without a word.
        raise ValueError(f"label {str(path)!r} is a JPEG: its compression changes class ids at edges; save labels "
                         "as PNG (docs/own-data.md)")
    name = check_utf8_name(path, "label")
    check_single_page(path, "label")
    label = _palette_indices(path)
    if label is None:
        label = cv2.imread(name, cv2.IMREAD_UNCHANGED)
    if label is None:
        raise ValueError(f"cannot read label {str(path)!r}: missing, unreadable or not an image")
    if label.ndim == 3:
        # A gray map saved as RGB is fine; a colour-coded one (one colour per class) is not a map of ids.
        if any(not np.array_equal(label[..., 0], label[..., c]) for c in range(1, min(label.shape[2], 3))):
            raise ValueError(f"label {str(path)!r} is a colour image; a label must hold one class id per pixel "
                             "(0, 1, 2, ... as in classes.json), saved as a single-channel PNG: convert colours "
                             "to ids (docs/own-data.md)")
        label = label[..., 0]
    if label.dtype != np.uint8:
        raise ValueError(f"label {str(path)!r} has dtype {label.dtype}; expected uint8 class ids")
    if binary and 1 < label.max() <= 127:
        # Split at half grey it would be background everywhere: class ids of a multi-class data set, say.
        raise ValueError(f"label {str(path)!r} holds values 0 to {int(label.max())}, which is neither a 0/255 mask nor "
                         "a map of ids 0 and 1: a binary model's label is 255 (or 1) on the foreground and 0 elsewhere")
    if binary and label.max() > 1:
        return (label > 127).astype(np.uint8)
    # Ids 0 and 1 (a binary label as a map of class ids) are the mask already: split at half grey, every 1 would
    # become background.
    return label


def _palette_indices(path: str | Path) -> np.ndarray | None:
    """The palette indices of an indexed-colour PNG as HxW uint8, or None for any other file.

    Such a label (PIL's mode 'P'; Pascal VOC's and LabelMe's masks) holds the class ids as palette indices and
    only draws them in colour. OpenCV expands the palette into those colours, so the file is decoded with its
    palette replaced by grey levels equal to the indices.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(PNG_COLOUR_TYPE_AT + 1)
            if len(head) <= PNG_COLOUR_TYPE_AT or not head.startswith(PNG_SIGNATURE) \
                    or head[PNG_COLOUR_TYPE_AT] != PNG_INDEXED:
                return None
            data = head + handle.read()
    except OSError:
        return None  # OpenCV's read then reports it
    offset = len(PNG_SIGNATURE)
    while offset + 8 <= len(data):
        length = int.from_bytes(data[offset:offset + 4], "big")
        kind = data[offset + 4:offset + 8]
        if kind == b"PLTE":
            grey = bytes(level for index in range(length // 3) for level in (index, index, index))
            chunk = len(grey).to_bytes(4, "big") + kind + grey + zlib.crc32(kind + grey).to_bytes(4, "big")
            data = data[:offset] + chunk + data[offset + 12 + length:]
            break
        offset += 12 + length  # length, type, data, CRC
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None:
        return None
    # A palette with transparency decodes with an alpha channel; every colour channel holds the index.
    return decoded if decoded.ndim == 2 else np.ascontiguousarray(decoded[..., 0])


def check_label_ids(label: np.ndarray, path: str | Path, num_classes: int, ignore_index: int | None) -> None:
    """Make sure a label map holds only the ids of the class table (0..num_classes-1) and ``ignore_index``.

    Raises:
        ValueError: naming the file, the ids outside the table and their pixel count, and the fix.

    Example:
        >>> check_label_ids(np.array([[0, 1], [1, 255]], np.uint8), "a.png", 2, 255)
    """
    counts = np.bincount(label.ravel(), minlength=256)
    allowed = np.zeros(counts.size, bool)
    allowed[:num_classes] = True
    if ignore_index is not None and 0 <= ignore_index < counts.size:
        allowed[ignore_index] = True
    outside = np.flatnonzero((counts > 0) & ~allowed)
    if outside.size:
        table = f"0..{num_classes - 1}" + (f" and ignore_index {ignore_index}" if ignore_index is not None else "")
        raise ValueError(f"label {str(path)!r} holds class ids {', '.join(map(str, outside[:8].tolist()))} "
                         f"({int(counts[outside].sum())} pixels) outside the class table ({table}): relabel them, "
                         "or add those classes to classes.json")


CLASS_TABLE_FORM = ('{"ignore_index": 255, "classes": [{"id": 0, "name": "background", "color": [0, 0, 0]}, '
                    '{"id": 1, "name": "person", "color": [220, 20, 60]}]}')


def read_class_table(path: str | Path) -> ClassTable:
    """Read a ``classes.json``: ids, names, RGB colours and an optional ``ignore_index`` (docs/own-data.md).

    The ignored class is left out of the returned names and colours; ids must
    be 0..K-1 for the K kept classes.

    Raises:
        FileNotFoundError: when the file does not exist.
        ValueError: when the file is not UTF-8 JSON (or nests too deep to read); when it lacks a field or its
            ids are not 0..K-1, the message shows the expected form.

    Example:
        >>> read_class_table("../shared/data/camvid/classes.json").names[:2]  # doctest: +SKIP
        ('sky', 'building')
    """
    data = read_json(path, "class table")
    try:
        ignore = data.get("ignore_index")
        # Before sorting by id: an id written as text ("1") stopped the sort with a TypeError that named no class.
        textual = next((c for c in data["classes"] if not _is_label_id(c["id"])), None)
        if textual is not None:
            raise _BadIdError(f"the id of class {textual.get('name')!r} in {str(path)!r} must be an integer label "
                              f"value from 0 to 255, e.g. 1, got {textual['id']!r}")
        classes = sorted((c for c in data["classes"] if c["id"] != ignore), key=lambda c: c["id"])
        names = tuple(str(c["name"]) for c in classes)
        raw_colors = [c["color"] for c in classes]
        ids = [c["id"] for c in classes]
    except _BadIdError:
        raise
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as exc:
        raise ValueError(f"{str(path)!r} is not a class table ({type(exc).__name__}: {exc}); expected the form "
                         f"{CLASS_TABLE_FORM}") from exc
    colors = tuple(_color(color, name, path) for color, name in zip(raw_colors, names))
    # Two classes of one name: class_names.index() and the legend would show only the first.
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"class names in {str(path)!r} must differ, got {', '.join(map(repr, repeated))} more than "
                         "once; give each class its own name")
    if ignore is not None and (not isinstance(ignore, int) or not 0 <= ignore <= 255):
        raise ValueError(f"ignore_index in {str(path)!r} must be a label id from 0 to 255 or absent, got {ignore!r}")
    if ids != list(range(len(classes))) or not classes:
        raise ValueError(f"class ids in {str(path)!r} must be 0..K-1 apart from ignore_index, got {ids}"
                         + _id_problems(ids, [c for c in data["classes"] if c["id"] == ignore], ignore))
    return ClassTable(names=names, colors=colors, ignore_index=ignore)


class _BadIdError(ValueError):
    """A class id that is no label value: reported as it is, not as a malformed table."""


def _is_label_id(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 255


def _id_problems(ids: list[int], ignored: list[dict[str, object]], ignore: int | None) -> str:
    """What is wrong with kept ids that are not 0..K-1, and the fix (empty for a table without classes)."""
    expected = range(len(ids))
    missing = [index for index in expected if index not in ids]
    repeated = sorted({index for index in ids if ids.count(index) > 1})
    if not missing and not repeated:
        return ""
    # The entry of ignore_index is left out by design; named only where it leaves the gap (a class's id given).
    ignored = ignored if ignore in missing else []
    note = f" (ignore_index {ignore} leaves out class {ignored[0].get('name')!r})" if ignored else ""
    problems = []
    if missing:
        problems.append(f"id{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))} "
                        f"{'are' if len(missing) > 1 else 'is'} missing")
    if repeated:
        problems.append(f"id{'s' if len(repeated) > 1 else ''} {', '.join(map(str, repeated))} "
                        "given to more than one class")
    fix = f"number the classes 0..{len(ids) - 1} without gaps"
    if ignored:
        fix += ", or set ignore_index to the id of the unlabelled pixels"
    return f"{note}: {' and '.join(problems)}; {fix}"


def _color(value: object, name: object, path: str | Path) -> tuple[int, int, int]:
    # int() of a string colour takes its characters ("255" -> 2, 5, 5) and of 0..1 floats gives black: both drew
    # every overlay in the wrong colour without a word.
    if (not isinstance(value, list) or len(value) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value)):
        raise ValueError(f"the color of class {name!r} in {str(path)!r} must be [R, G, B] with integers from 0 to "
                         f"255, e.g. [220, 20, 60], got {value!r}")
    return value[0], value[1], value[2]


def find_class_table(labels: str | Path) -> Path | None:
    """A ``classes.json`` beside or inside the label folder, if there is one."""
    folder = Path(labels)
    for candidate in (folder / "classes.json", folder.parent / "classes.json"):
        if candidate.is_file():
            return candidate
    return None
