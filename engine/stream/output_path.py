"""Checking that a stream's output file or folder can be written, before any frame is processed.

A video is opened by the writer thread on the first rendered frame; without this check a
path under an existing file or in a folder without write permission fails there, after the
model has loaded and frames have been segmented, with an ``OSError`` from deep in the writer.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from ..paths import check_utf8_name
from .uri import SinkSpec

OVERWRITE_HINT = "add --overwrite (overwrite=True in Python) to replace it"
# An image output's counter widens its file names as frames are written: they are checked at this index, the
# width a long run reaches (more than a month of frames at 30 fps).
WIDEST_FRAME_INDEX = 99_999_999
# The longest file name where the file system does not say (Linux file systems take 255 bytes).
DEFAULT_NAME_MAX = 255


def check_output_path(spec: SinkSpec) -> None:
    """Make sure a video file or image folder named by ``spec`` can be created; nothing is left behind.

    Windows and 'no output' need no check. Folders that do not exist yet are not created
    here (the sink creates them); the nearest existing one must let us write.

    Args:
        spec: the parsed output (:func:`unetrt.stream.uri.parse_sink`).

    Raises:
        ValueError: naming the output and the reason (a parent that is a file, a video path that is a
            folder, no write permission, a read-only file system, an image pattern without its counter or
            with it in a folder's name, a name longer than the file system takes or, for a video or images,
            not valid UTF-8) in one line.

    Example:
        >>> check_output_path(SinkSpec("none", ""))
    """
    if spec.kind not in ("video", "rosbag", "images"):
        return
    if spec.kind != "rosbag":
        # OpenCV writes videos and images, and crashes the process on a name that is not UTF-8.
        check_utf8_name(spec.location, "output")
    target = Path(spec.location)
    widest = Path(frame_name(spec.location, WIDEST_FRAME_INDEX)) if spec.kind == "images" else target
    check_name_lengths(widest, f"output {spec.location!r}")
    what = "ROS 2 bag" if spec.kind == "rosbag" else "video"
    if spec.kind in ("video", "rosbag") and target.is_dir():
        raise ValueError(f"cannot write {what} {spec.location!r}: it is an existing folder; give a file name")
    check_writable_file(target, f"output {spec.location!r}")
    if spec.kind in ("video", "rosbag") and target.exists() and not os.access(target, os.W_OK):
        raise ValueError(f"cannot write {what} {spec.location!r}: the existing file is read-only; "
                         "choose another output path or remove it")


def check_reads_nothing(output: Path, label: str, folders: Iterable[Path] = (),
                        files: Mapping[str, Path | None] | None = None) -> None:
    """Refuse an output file that is one of the files the command reads: one inside an input folder, or one of
    ``files``. A missing output passes.

    Args:
        output: the file the command will write.
        label: how the message names it, e.g. ``"--output 'figures.json'"``.
        folders: input folders (those that do not exist are passed over).
        files: input files by what they are, e.g. ``{"the model": Path("camvid.onnx")}`` (None values are
            passed over).

    Raises:
        ValueError: naming the output and the input it is, in one line.

    Example:
        >>> check_reads_nothing(Path("new.json"), "--output 'new.json'", [Path("labels")])
    """
    if not output.is_file():
        return
    for folder in folders:
        if folder.is_dir() and output.resolve().is_relative_to(folder.resolve()):
            raise ValueError(f"{label} is a file of the input folder {str(folder)!r}, which the output would "
                             "replace; give the output a file of its own")
    for role, given in (files or {}).items():
        if given is not None and given.is_file() and output.samefile(given):
            raise ValueError(f"{label} is {role} {str(given)!r}, which the output would replace; give the output a "
                             "file of its own")


def as_written(location: str | Path) -> Path:
    """The file ``location`` names once the folders it lacks are made, as the sinks make them: ``new/../in.mp4`` is
    ``in.mp4`` then, though the file system finds nothing at that path while ``new`` does not exist.

    Example:
        >>> as_written("new/../in.mp4") == Path("in.mp4").resolve()
        True
    """
    return Path(os.path.realpath(location))


def check_not_replacing(target: Path, label: str, overwrite: bool) -> None:
    """Refuse a file that exists unless ``overwrite``: it may be anything (a recording, an earlier result), and
    the summary or report written there would replace it.

    Raises:
        ValueError: naming ``label`` and the fix.

    Example:
        >>> check_not_replacing(Path("new.json"), "--stats 'new.json'", overwrite=False)
    """
    if (target.exists() or as_written(target).exists()) and not overwrite:
        raise ValueError(f"{label} exists; add --overwrite to replace it, or give another file")


def check_writable_file(target: Path, label: str) -> None:
    """Make sure a file can be created at ``target``: its nearest existing folder takes new files.

    Nothing is left behind; folders that do not exist yet are not created.

    Args:
        target: the file to be written.
        label: how the message names it, e.g. ``"--stats 'run/stats.json'"``.

    Raises:
        ValueError: naming ``label`` and the reason (a parent that is a file, the path is a folder, no write
            permission, a read-only file system, a name longer than the file system takes) in one line.

    Example:
        >>> check_writable_file(Path("stats.json"), "--stats 'stats.json'")  # doctest: +SKIP
    """
    check_name_lengths(target, label)
    if target.is_dir():
        raise ValueError(f"cannot write {label}: it is an existing folder; give a file name")
    existing = target.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"cannot write {label}: {str(existing)!r} is a file, not a folder; "
                         "choose another output path")
    try:
        handle, probe = tempfile.mkstemp(prefix=".unetrt-write-check-", dir=existing)
    except OSError as exc:
        raise ValueError(f"cannot write {label}: {_reason(exc, existing)}; "
                         "choose a folder you can write to") from exc
    os.close(handle)
    os.unlink(probe)


def check_name_lengths(target: Path, label: str) -> None:
    """Refuse a path that holds a file or folder name longer than the file system takes (255 bytes on Linux).

    Python 3.11's ``is_dir`` and ``exists`` raise ENAMETOOLONG on such a name, and one below a folder that does
    not exist yet fails only when the file is written, after the model has run.

    Raises:
        ValueError: naming ``label``, the name's length and the limit in one line.

    Example:
        >>> check_name_lengths(Path("runs/stats.json"), "--stats 'runs/stats.json'")
    """
    limit = _name_max(target)
    for name in target.parts:
        size = len(os.fsencode(name))
        if size > limit:
            raise ValueError(f"cannot write {label}: a name in it is {size} bytes ({name[:40]!r}...), longer than "
                             f"the {limit} bytes this file system takes; use a shorter one")


def _name_max(target: Path) -> int:
    """The longest name the file system of ``target``'s nearest existing folder takes."""
    folder = target.parent
    while not os.path.isdir(folder) and folder != folder.parent:
        folder = folder.parent
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except OSError:
        return DEFAULT_NAME_MAX


def frame_name(pattern: str, index: int) -> str:
    """The file an image-sequence output with this printf pattern writes frame ``index`` to.

    Raises:
        ValueError: when the pattern does not hold exactly one ``%d`` counter, or holds it in a folder's name.

    Example:
        >>> frame_name("out/frame_%04d.png", 12)
        'out/frame_0012.png'
    """
    try:
        name = pattern % index
    except (TypeError, ValueError):
        raise ValueError(f"image pattern {pattern!r} needs one %d counter and no other % (%% for a percent "
                         "sign), e.g. frame_%04d.png") from None
    if os.path.dirname(name) != os.path.dirname(pattern % (index + 1)):
        # Each frame would need a folder of its own, which nothing creates: the first write would fail.
        raise ValueError(f"image pattern {pattern!r}: the %d counter must be in the file name, not a folder; "
                         "use e.g. out/frame_%04d.png")
    return name


def check_not_input(spec: SinkSpec, inputs: Sequence[Path]) -> None:
    """Refuse an output that would overwrite the input: the same file, a hard or symbolic link to it, or (for
    images) the input's own folder.

    Args:
        spec: the parsed output.
        inputs: the files the source reads (a video, or every image of a folder or glob).

    Raises:
        ValueError: in one line naming both paths.

    Example:
        >>> check_not_input(SinkSpec("video", "out.mp4"), [])
    """
    if spec.kind not in ("video", "rosbag", "images") or not inputs:
        return
    target = as_written(spec.location)
    if spec.kind in ("video", "rosbag"):
        candidates, what = [target], "is the input"
    else:
        candidates, what = [target.parent], "is the input's folder"
        inputs = sorted({path.parent for path in inputs})
    for candidate in candidates:
        for source in inputs:
            if same_file(candidate, source):
                raise ValueError(f"output {spec.location!r} {what} {str(source)!r} (the same file or a link to "
                                 "it) and would destroy it; choose another output path")


def same_file(first: Path, second: Path) -> bool:
    """Whether two paths name one file: the same path once the folders are made (:func:`as_written`), or a hard or
    symbolic link to it.

    Example:
        >>> same_file(Path("new/../in.mp4"), Path("in.mp4"))
        True
    """
    if as_written(first) == as_written(second):
        return True
    try:
        return os.path.samefile(first, second)
    except OSError:  # one of them does not exist (yet)
        return False


def frame_files(pattern: str) -> list[Path]:
    """The files an image-sequence output with this printf pattern writes that exist now (an earlier run's).

    Only names the pattern itself produces count (``frame_%06d.png``: ``frame_000000.png``,
    ``frame_1234567.png``); other files in the folder are not ours and are never touched.

    Example:
        >>> frame_files("no-such-folder/frame_%06d.png")
        []
    """
    path = Path(pattern)
    if not path.parent.is_dir():
        return []
    name = _frame_file_name(path.name)
    return sorted(entry for entry in path.parent.iterdir() if name.match(entry.name) and not entry.is_dir())


def _frame_file_name(pattern_name: str) -> re.Pattern[str]:
    """The file names a printf pattern's name (``frame_%06d.png``) produces, and those of earlier runs."""
    prefix, _counter, suffix = re.split(r"(%0?\d*d)", pattern_name, maxsplit=1)
    return re.compile(re.escape(prefix) + r"\d+" + re.escape(suffix) + "$")


def is_frame_file(pattern: str, path: Path) -> bool:
    """Whether an image-sequence output with this printf pattern writes ``path`` (or deletes it with --overwrite).

    Example:
        >>> is_frame_file("out/frame_%06d.png", Path("out/frame_000001.png"))
        True
        >>> is_frame_file("out/frame_%06d.png", Path("out/stats.json"))
        False
    """
    where = as_written(pattern)
    return as_written(path).parent == where.parent and _frame_file_name(where.name).match(path.name) is not None


def check_existing_output(spec: SinkSpec, overwrite: bool) -> None:
    """Refuse an output that exists already unless ``overwrite``: a video file, or an earlier run's frames.

    Args:
        spec: the parsed output.
        overwrite: replace the video, or delete the earlier frames when the sink opens.

    Raises:
        ValueError: in one line naming the flag.

    Example:
        >>> check_existing_output(SinkSpec("none", ""), overwrite=False)
    """
    if overwrite:
        return
    if spec.kind in ("video", "rosbag") and (os.path.lexists(spec.location) or as_written(spec.location).exists()):
        raise ValueError(f"output {spec.location!r} exists; {OVERWRITE_HINT}")
    if spec.kind == "images":
        earlier = frame_files(str(as_written(spec.location)))
        if earlier:
            raise ValueError(f"output folder {str(Path(spec.location).parent)!r} holds {len(earlier)} frames of an "
                             f"earlier run ({earlier[0].name}, ...); add --overwrite (overwrite=True in Python) to "
                             "delete them first, or choose an empty folder")


def claim_new_file(path: Path) -> None:
    """Create ``path`` empty, failing if anything is there: the moment a run without --overwrite takes its output.

    The start's :func:`check_existing_output` sees the path free, but another run started at the same time saw it
    free too; the first to claim it writes it, the other stops before writing a byte over it.

    Raises:
        OSError: naming the path and the fixes when it exists now.

    Example:
        >>> claim_new_file(Path("out.mp4"))  # doctest: +SKIP
    """
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except FileExistsError:
        raise OSError(f"{str(path)!r} was created by another program after this run started (two runs writing one "
                      f"output?); nothing was written over it; choose another output path, or {OVERWRITE_HINT}"
                      ) from None


def _reason(error: OSError, folder: Path) -> str:
    if error.errno in (errno.EACCES, errno.EPERM):
        return f"no permission to write in {str(folder)!r}"
    if error.errno == errno.EROFS:
        return f"{str(folder)!r} is on a read-only file system"
    if error.errno == errno.ENOSPC:
        return f"no space left in {str(folder)!r}"
    return f"{str(folder)!r} does not accept new files ({error.strerror or error})"
