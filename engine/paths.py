"""The files and folders a user names: checks with a message that says what is there instead, and writing a file
whole or not at all, and their digests.

"does not exist" for a path that does exist, as a folder where a file was meant (or the other way round), sends a
user looking for a typo that is not there.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any


def check_file(path: str | Path, what: str) -> Path:
    """The path, when it is a file.

    Args:
        path: the path given.
        what: what it should be, for the message (``"model file"``).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        FileNotFoundError: when nothing is there.
        ValueError: when a folder (or a device, a pipe) is there.

    Example:
        >>> check_file("engine/models", "model file")  # doctest: +SKIP
        ValueError: model file 'engine/models' is a folder; give the file itself
    """
    path = Path(path)
    if probe_path(path, what, Path.is_file):
        return path
    if not path.exists():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    kind = "a folder" if path.is_dir() else "not a regular file"
    raise ValueError(f"{what} {str(path)!r} is {kind}; give the file itself")


def check_folder(path: str | Path, what: str) -> Path:
    """The path, when it is a folder.

    Args:
        path: the path given.
        what: what it should be, for the message (``"image folder"``).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        FileNotFoundError: when nothing is there.
        NotADirectoryError: when a file is there.

    Example:
        >>> check_folder("README.md", "image folder")  # doctest: +SKIP
        NotADirectoryError: image folder 'README.md' is a file; give the folder that holds the files
    """
    path = Path(path)
    if probe_path(path, what, Path.is_dir):
        return path
    if not path.exists():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    raise NotADirectoryError(f"{what} {str(path)!r} is a file; give the folder that holds the files")


def probe_path(path: Path, what: str, test: Callable[[Path], bool]) -> bool:
    """``test(path)`` (``Path.is_file``, ``Path.is_dir``), with a name the file system refuses as too long as one
    line.

    Raises:
        ValueError: naming ``what`` and the name's length, when the name is longer than the file system takes.

    Example:
        >>> probe_path(Path("engine"), "input", Path.is_dir)  # doctest: +SKIP
        True
    """
    try:
        return bool(test(path))
    except OSError as exc:
        # Python 3.11's is_file/is_dir re-raise ENAMETOOLONG instead of answering False.
        if exc.errno == errno.ENAMETOOLONG:
            raise ValueError(f"{what} {str(path)[:60]!r}... is a name longer than this file system takes "
                             f"({len(str(path).encode(errors='surrogateescape'))} bytes); use a shorter one") from None
        raise


def check_utf8_name(path: str | Path, what: str) -> str:
    """The path as a str that OpenCV, ONNX Runtime and PyTorch can take: valid UTF-8.

    A file name that is not valid UTF-8 reaches Python with lone surrogates (PEP 383); handed to OpenCV such a
    string crashes the process (a segmentation fault), and other libraries raise deep TypeErrors.

    Args:
        path: the path given (or found in a folder).
        what: what it is, for the message (``"video"``).

    Returns:
        ``str(path)``.

    Raises:
        ValueError: naming the file (its undecodable bytes escaped) and the fix.

    Example:
        >>> check_utf8_name("frames/0001.png", "image")
        'frames/0001.png'
    """
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # The name's bytes as the file system holds them. Under an ASCII file-name encoding (a C or POSIX locale
        # with PYTHONUTF8=0) a valid UTF-8 name arrives escaped too: the locale is to change, not the name (convmv
        # would encode it twice).
        raw = text.encode(sys.getfilesystemencoding(), errors="surrogateescape")
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            shown = raw.decode("utf-8", errors="backslashreplace")
            raise ValueError(f"{what} '{shown}' has a name that is not valid UTF-8, which the libraries unetrt reads "
                             "and writes files with cannot open; use a UTF-8 name (an existing file can be renamed "
                             "with convmv -f latin1 -t utf8)") from None
        raise ValueError(f"{what} '{name}' is a UTF-8 name, but Python reads file names as "
                         f"{sys.getfilesystemencoding()} here (a C or POSIX locale with PYTHONUTF8=0): run with "
                         "PYTHONUTF8=1 or a UTF-8 locale (LC_ALL=C.UTF-8)") from None
    return text


def read_json(path: str | Path, what: str) -> Any:
    """The JSON a user's file holds.

    Args:
        path: the file.
        what: what it is, for the message (``"split file"``).

    Returns:
        The parsed value.

    Raises:
        FileNotFoundError, ValueError: as :func:`check_file`; ValueError also when the file is not UTF-8 JSON
            (or nests too deep to parse), naming the file.

    Example:
        >>> read_json("engine/models/camvid.split.json", "split file")["dataset"]  # doctest: +SKIP
        'camvid'
    """
    path = check_file(path, what)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(f"{what} {str(path)!r} is not UTF-8 text (byte {exc.start}); give a JSON file") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} {str(path)!r} is not valid JSON: {exc}") from None
    except RecursionError:
        raise ValueError(f"{what} {str(path)!r} nests its JSON deeper than can be read; is it the right file?") \
            from None


def replace_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one, never a part.

    The bytes go to a temporary file in the same folder (named after this process, so that concurrent
    writers never share one), are flushed to disk, and the file is renamed over ``path``.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_whole(path: Path, text: str | bytes) -> None:
    """Write ``text`` (or bytes, such as a PNG's) at ``path`` so that an existing file is replaced whole or not at
    all: a disk that fills halfway leaves the earlier file as it was (:func:`replace_file`). A link or a device such
    as ``/dev/stdout`` is written through, as named.

    Raises:
        OSError: when the file cannot be written.

    Example:
        >>> write_whole(Path("figures.json"), "{}\\n")  # doctest: +SKIP
    """
    data = text.encode("utf-8") if isinstance(text, str) else text
    if path.is_symlink() or (path.exists() and not path.is_file()):
        path.write_bytes(data)
        return
    replace_file(path, data)


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, as hex.

    Example:
        >>> len(file_sha256(__file__))
        64
    """
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
