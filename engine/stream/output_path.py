"""Checking that a stream's output file or folder can be written, before any frame is processed.

A video is opened by the writer thread on the first rendered frame; without this check a
path under an existing file or in a folder without write permission fails there, after the
model has loaded and frames have been segmented, with an ``OSError`` from deep in the writer.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

from .uri import SinkSpec


def check_output_path(spec: SinkSpec) -> None:
    """Make sure a video file or image folder named by ``spec`` can be created; nothing is left behind.

    Windows and 'no output' need no check. Folders that do not exist yet are not created
    here (the sink creates them); the nearest existing one must let us write.

    Args:
        spec: the parsed output (:func:`unetrt.stream.uri.parse_sink`).

    Raises:
        ValueError: naming the output and the reason (a parent that is a file, a video path that is a
            folder, no write permission, a read-only file system) in one line.

    Example:
        >>> check_output_path(SinkSpec("none", ""))
    """
    if spec.kind not in ("video", "rosbag", "images"):
        return
    target = Path(spec.location)
    folder = target.parent
    if spec.kind in ("video", "rosbag") and target.is_dir():
        raise ValueError(f"cannot write video {spec.location!r}: it is an existing folder; give a file name")
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"cannot write output {spec.location!r}: {str(existing)!r} is a file, not a folder; "
                         "choose another output path")
    if spec.kind in ("video", "rosbag") and target.exists() and not os.access(target, os.W_OK):
        raise ValueError(f"cannot write video {spec.location!r}: the existing file is read-only; "
                         "choose another output path or remove it")
    try:
        handle, probe = tempfile.mkstemp(prefix=".unetrt-write-check-", dir=existing)
    except OSError as exc:
        raise ValueError(f"cannot write output {spec.location!r}: {_reason(exc, existing)}; "
                         "choose a folder you can write to") from exc
    os.close(handle)
    os.unlink(probe)


def _reason(error: OSError, folder: Path) -> str:
    if error.errno in (errno.EACCES, errno.EPERM):
        return f"no permission to write in {str(folder)!r}"
    if error.errno == errno.EROFS:
        return f"{str(folder)!r} is on a read-only file system"
    if error.errno == errno.ENOSPC:
        return f"no space left in {str(folder)!r}"
    return f"{str(folder)!r} does not accept new files ({error.strerror or error})"
