"""What a batch job reads: its inputs expanded into work units, and each unit decoded into frame rows.

An input is an image file, a video file, a folder or glob of them, or any other recording that
:func:`unetrt.stream.sources.open_source` can read from storage (ROS 2 bags, when the stream package reads
them, come in this way with no change here: every non-live source kind other than images is read as a
sequence of frames). Each image is a unit of its own; each video or recording is one unit, decoded in order
by one task (frames of a long file are decoded sequentially; many files decode in parallel).

A unit is decoded on a cluster node by :func:`read_unit` into rows of one frame each. A frame whose outputs
already exist becomes a 'skipped' row without its pixels; one that fails to decode becomes a 'failed' row
that names the problem, so nothing is dropped silently.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..paths import check_utf8_name
from ..stream.sources import (
    CorruptFrameError,
    ImageSequenceSource,
    SourceError,
    check_stream_frame,
    open_source,
    silence_video_library_logs,
)
from ..stream.uri import IMAGE_SUFFIXES, VIDEO_SUFFIXES, parse_source
from .outputs import frame_output, image_output, is_done, overlay_output

IMAGE = "image"
STREAM = "stream"
# A row's status: to be segmented, outputs already there, or unreadable.
TODO, SKIPPED, FAILED = "todo", "skipped", "failed"
# The frame index of a row that stands for a whole input (a file that cannot be opened) or an image.
WHOLE_INPUT = -1


@dataclass(frozen=True)
class WorkUnit:
    """One image, or one video or recording, to segment.

    Attributes:
        kind: 'image' or 'stream'.
        path: the file or folder.
        output: the mask's name relative to the output folder (an image) or the folder of its frames' masks.
        frames: the frame count the container announces (videos; 0 when unknown), for progress and resuming.
    """

    kind: str
    path: str
    output: str
    frames: int = 1

    def as_row(self) -> dict[str, Any]:
        """The unit as a Ray Data row."""
        return asdict(self)


def expand_inputs(inputs: Sequence[str]) -> list[WorkUnit]:
    """Turn command-line inputs into work units, in the order given (folders and globs in name order).

    A file named twice (a glob and the file itself, or two spellings of one path) is one unit, at its first place.

    Raises:
        FileNotFoundError: when an input names nothing that exists, or a folder or glob holds no image.
        ValueError: for a live source (a camera or network stream: use ``unet-stream``), an unknown file
            type, a file whose name is not valid UTF-8 (OpenCV would crash on it, on a cluster node that Ray
            then restarts for ever), or two inputs that would write the same output.

    Example:
        >>> [u.output for u in expand_inputs(["frames/*.png"])]  # doctest: +SKIP
        ['0001.png', '0002.png']
    """
    if not inputs:
        raise ValueError("no inputs: give image files, folders, globs or video files")
    units: list[WorkUnit] = []
    for text in inputs:
        spec = parse_source(text)
        if spec.live:
            raise ValueError(f"input {text!r} is a live {spec.kind} source; unet-batch reads recordings "
                             "from storage, use unet-stream for live sources")
        if spec.kind == "images":
            units += [_file_unit(path) for path in _listed_files(spec.location)]
        else:
            path = Path(spec.location)
            units.append(WorkUnit(STREAM, str(path), path.stem, announced_frames(path)))
    units = _first_of_each_file(units)
    check_distinct_outputs(units)
    return units


def unread_subfolders(inputs: Sequence[str], units: Sequence[WorkUnit]) -> list[str]:
    """The subfolders of input folders that hold images or videos no unit reads, in name order.

    A folder input stands for the files in it, not in its subfolders (outputs are named by file stem alone, and
    a folder per camera would repeat them); a job must still say which frames it left out.

    Example:
        >>> unread_subfolders(["/nonexistent"], [])
        []
    """
    read = {Path(unit.path).resolve() for unit in units}
    folders: set[str] = set()
    for text in inputs:
        top = Path(text)
        if not top.is_dir():
            continue
        for path in top.rglob("*"):
            if path.parent != top and path.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES and path.is_file() \
                    and path.resolve() not in read:
                folders.add(str(path.parent))
    return sorted(folders)


def _first_of_each_file(units: Sequence[WorkUnit]) -> list[WorkUnit]:
    """The units without repeats of one file: segmented twice it would be counted as two frames written."""
    seen: set[Path] = set()
    kept = []
    for unit in units:
        key = Path(unit.path).resolve()
        if key not in seen:
            seen.add(key)
            kept.append(unit)
    return kept


def _listed_files(location: str) -> list[Path]:
    """The images and videos of a folder or glob (or the one image file named), in name order.

    Raises:
        FileNotFoundError: when it holds neither.
        ValueError: when a file's name is not valid UTF-8.
    """
    path = Path(location)
    if path.is_file():
        return [path]
    candidates = path.iterdir() if path.is_dir() else (Path(name) for name in glob.glob(location))
    files = sorted(c for c in candidates if c.is_file() and c.suffix.lower() in IMAGE_SUFFIXES + VIDEO_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"no images or videos in {location!r} (suffixes: "
                                f"{', '.join(IMAGE_SUFFIXES + VIDEO_SUFFIXES)})")
    for file in files:
        check_utf8_name(file, "input")
    return files


def _file_unit(path: Path) -> WorkUnit:
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return WorkUnit(STREAM, str(path), path.stem, announced_frames(path))
    return WorkUnit(IMAGE, str(path), image_output(path.stem))


def check_distinct_outputs(units: Sequence[WorkUnit]) -> None:
    """Refuse units that would write the same mask, overlay or frame folder.

    Raises:
        ValueError: naming both inputs and the shared output.
    """
    owners: dict[str, str] = {}
    for unit in units:
        names = ([unit.output, overlay_output(unit.output)] if unit.kind == IMAGE else [unit.output + "/"])
        for name in names:
            # Case-folded: on macOS and Windows file systems 'A.png' and 'a.png' are one file.
            key = name.removesuffix(".png").removesuffix(".overlay").casefold()
            other = owners.setdefault(key, unit.path)
            if other != unit.path:
                raise ValueError(f"inputs {other!r} and {unit.path!r} would both write {name!r} in the output "
                                 "folder; rename one, or segment them in separate jobs with separate outputs")


def announced_frames(path: Path) -> int:
    """The frame count a video's container announces; 0 when it announces none or it is not a video.

    Raises:
        ValueError: when the name is not valid UTF-8 (OpenCV would crash on it).

    Example:
        >>> announced_frames(Path("/nonexistent.mp4"))
        0
    """
    name = check_utf8_name(path, "video")
    # As unet-stream does: a damaged video is a failure row of the summary, not FFmpeg's lines on the terminal.
    silence_video_library_logs()
    capture = cv2.VideoCapture(name)
    try:
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
    finally:
        capture.release()
    return max(count, 0)


def unit_is_done(unit: WorkUnit, out_dir: Path, overlay: bool) -> bool:
    """Whether every output of a unit exists, judged without decoding it.

    A video counts as done when the outputs of all its announced frames exist; a recording that announces
    no count is always decoded again (its written frames are then skipped one by one).
    """
    if unit.kind == IMAGE:
        return is_done(out_dir, unit.output, overlay)
    return unit.frames > 0 and all(is_done(out_dir, frame_output(unit.output, index), overlay)
                                   for index in range(unit.frames))


def read_unit(unit_row: dict[str, Any], out_dir: str, overlay: bool) -> Iterator[dict[str, Any]]:
    """Decode one unit into frame rows (a Ray Data ``flat_map`` function).

    Args:
        unit_row: a :meth:`WorkUnit.as_row` row.
        out_dir: the job's output folder, to skip frames already written.
        overlay: whether a frame is done only once its overlay exists too.

    Yields:
        Rows with 'input', 'index' (frame index; -1 for an image or a file that cannot be opened),
        'output' (the mask's relative name), the frame as 'pixels', 'shape' and 'dtype' (see
        :func:`frame_from_row`; empty for a row without a frame), 'status' (todo, skipped or failed) and 'error'.
    """
    unit = WorkUnit(**unit_row)
    folder = Path(out_dir)
    if unit.kind == IMAGE:
        yield _read_image(unit, folder, overlay)
        return
    source = open_source(unit.path)
    try:
        source.open()
    except SourceError as exc:
        yield _row(unit, WHOLE_INPUT, unit.output + "/", None, FAILED, str(exc))
        return
    index = 0
    try:
        while True:
            output = frame_output(unit.output, index)
            try:
                frame = source.read()
            except CorruptFrameError as exc:
                yield _row(unit, index, output, None, FAILED, str(exc))
                index += 1
                continue
            except SourceError as exc:
                yield _row(unit, index, output, None, FAILED, f"reading stopped: {exc}")
                return
            if frame is None:
                return
            yield _frame_row(unit, index, output, frame, folder, overlay)
            index += 1
    finally:
        source.close()


def _read_image(unit: WorkUnit, out_dir: Path, overlay: bool) -> dict[str, Any]:
    if is_done(out_dir, unit.output, overlay):
        return _row(unit, WHOLE_INPUT, unit.output, None, SKIPPED, "")
    try:
        source = ImageSequenceSource(unit.path)
    except ValueError as exc:  # a TIFF stack, of which one page alone would be segmented: a row that says so
        return _row(unit, WHOLE_INPUT, unit.output, None, FAILED, str(exc))
    source.open()
    try:
        frame = source.read()
    except CorruptFrameError as exc:
        return _row(unit, WHOLE_INPUT, unit.output, None, FAILED, str(exc))
    return _frame_row(unit, WHOLE_INPUT, unit.output, frame, out_dir, overlay)


def _frame_row(unit: WorkUnit, index: int, output: str, frame: Any, out_dir: Path, overlay: bool) -> dict[str, Any]:
    if is_done(out_dir, output, overlay):
        return _row(unit, index, output, None, SKIPPED, "")
    try:
        checked = check_stream_frame(frame)
    except CorruptFrameError as exc:
        return _row(unit, index, output, None, FAILED, str(exc))
    return _row(unit, index, output, checked, TODO, "")


def _row(unit: WorkUnit, index: int, output: str, frame: np.ndarray | None, status: str,
         error: str) -> dict[str, Any]:
    # Raw bytes, not a tensor column: Ray Data cannot join blocks of frames of different ranks (gray and colour)
    # or blocks without any frame into one tensor column.
    pixels, shape, dtype = (b"", "", "") if frame is None else (
        np.ascontiguousarray(frame).tobytes(), ",".join(map(str, frame.shape)), frame.dtype.str)
    return {"input": unit.path, "index": index, "output": output, "pixels": pixels, "shape": shape, "dtype": dtype,
            "status": status, "error": error}


def frame_from_row(pixels: bytes, shape: str, dtype: str) -> np.ndarray:
    """The frame a row carries (see :func:`read_unit`), without copying its bytes.

    Example:
        >>> frame_from_row(bytes(6), "2,3", "|u1").shape
        (2, 3)
    """
    return np.frombuffer(pixels, np.dtype(dtype)).reshape(tuple(int(side) for side in shape.split(",")))
