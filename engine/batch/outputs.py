"""Where a batch job's masks and overlays go, and writing them so that a file that exists is complete.

Names: ``OUT_DIR/<stem>.png`` for an image, ``OUT_DIR/<stem>/<frame index>.png`` for a frame of a video or
another recording (the index zero-padded to six digits, so that names sort in frame order); an overlay sits
beside its mask as ``<name>.overlay.png``. Every file is written under a temporary name in its final folder,
flushed to disk and renamed over the final name (:func:`write_png_atomically`), so a writer killed halfway
leaves only a ``.partial-`` file, which never counts as done and is removed by :func:`remove_partial_files`.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import cv2
import numpy as np

MASK_SUFFIX = ".png"
OVERLAY_SUFFIX = ".overlay.png"
PARTIAL_MARK = ".partial-"
FRAME_INDEX_DIGITS = 6


def image_output(stem: str) -> str:
    """The mask of an image, relative to the output folder.

    Example:
        >>> image_output("frame_0001")
        'frame_0001.png'
    """
    return stem + MASK_SUFFIX


def frame_output(stream_stem: str, index: int) -> str:
    """The mask of frame ``index`` of a video or recording, relative to the output folder.

    Example:
        >>> frame_output("drive_0042", 7)
        'drive_0042/000007.png'
    """
    return f"{stream_stem}/{index:0{FRAME_INDEX_DIGITS}d}{MASK_SUFFIX}"


def overlay_output(mask_output: str) -> str:
    """The overlay written beside a mask.

    Example:
        >>> overlay_output("drive_0042/000007.png")
        'drive_0042/000007.overlay.png'
    """
    return mask_output.removesuffix(MASK_SUFFIX) + OVERLAY_SUFFIX


def is_done(out_dir: Path, mask_output: str, overlay: bool) -> bool:
    """Whether a frame's outputs are all written (a file under its final name is always complete).

    Example:
        >>> is_done(Path("/nonexistent"), "a.png", overlay=False)
        False
    """
    if not (out_dir / mask_output).is_file():
        return False
    return not overlay or (out_dir / overlay_output(mask_output)).is_file()


def write_png_atomically(path: Path, image: np.ndarray) -> None:
    """Write ``image`` as a PNG at ``path`` so that the file either does not exist or is complete.

    The PNG goes to a uniquely named temporary file in the same folder, is flushed to disk, and is renamed
    over ``path`` (a rename within one file system is atomic, POSIX ``rename(2)``). Two writers of the same
    frame (a retried batch) each rename a complete file; the last one stays.

    Raises:
        ValueError: when OpenCV cannot encode the image.
        OSError: when the folder cannot be written.

    Example:
        >>> write_png_atomically(Path("out/a.png"), np.zeros((4, 4), np.uint8))  # doctest: +SKIP
    """
    ok, encoded = cv2.imencode(MASK_SUFFIX, image)
    if not ok:
        raise ValueError(f"OpenCV cannot encode a {image.dtype} image of shape {image.shape} as PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}{PARTIAL_MARK}{uuid.uuid4().hex}")
    try:
        with open(partial, "wb") as handle:
            handle.write(encoded.tobytes())
            handle.flush()
            # Without it a crash of the machine could keep the rename but lose the data.
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def remove_partial_files(out_dir: Path) -> int:
    """Remove the temporary files that killed writers left under ``out_dir``; returns how many.

    Run it when no job writes to ``out_dir``: a running writer's temporary file would go too.

    Example:
        >>> remove_partial_files(Path("/nonexistent"))
        0
    """
    if not out_dir.is_dir():
        return 0
    removed = 0
    for partial in out_dir.rglob(f".*{PARTIAL_MARK}*"):
        if partial.is_file():
            partial.unlink(missing_ok=True)
            removed += 1
    return removed
