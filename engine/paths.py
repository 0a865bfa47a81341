"""Checks of the files and folders a user names, with a message that says what is there instead.

"does not exist" for a path that does exist, as a folder where a file was meant (or the other way round), sends a
user looking for a typo that is not there.
"""

from __future__ import annotations

from pathlib import Path


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
    if path.is_file():
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
    if path.is_dir():
        return path
    if not path.exists():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    raise NotADirectoryError(f"{what} {str(path)!r} is a file; give the folder that holds the files")
