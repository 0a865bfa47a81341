"""Importing OpenCV with one clear message when it is missing or was built for another NumPy.

unetrt does not pin an OpenCV wheel: on a Jetson the system OpenCV (JetPack's, with GStreamer for
``csi://``) must stay the one Python imports, so ``opencv-python-headless`` is only the ``opencv``
extra. When no ``cv2`` imports, or a system ``cv2`` built against NumPy 1.x meets NumPy 2, the user
gets one line that names the fix instead of NumPy's multi-line warning and a traceback.
"""

from __future__ import annotations

import contextlib
import io
import sys
from types import ModuleType

NO_OPENCV = (
    "unetrt needs OpenCV (the cv2 module) and none is installed: run pip install 'unetrt[opencv]', "
    "or on a Jetson keep JetPack's OpenCV (apt package nvidia-opencv) in a venv made with --system-site-packages"
)


class OpenCVImportError(ImportError):
    """OpenCV is missing, or the installed one cannot run with the installed NumPy."""


def import_cv2() -> ModuleType:
    """Import and return ``cv2``, or explain in one line why it cannot be imported.

    Returns:
        The ``cv2`` module.

    Raises:
        OpenCVImportError: when no OpenCV is installed, or it was compiled against NumPy 1.x while
            NumPy 2 is installed (the message names the ``numpy<2`` fix).

    Example:
        >>> import_cv2().__name__
        'cv2'
    """
    loaded = sys.modules.get("cv2")
    if loaded is not None:
        return loaded
    # NumPy 2 writes its "compiled using NumPy 1.x" warning and a stack to sys.stderr before the import fails;
    # it is captured so the user sees one line, and replayed when the import fails for another reason.
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            import cv2
    except ImportError as exc:
        raise _explain(exc, captured.getvalue()) from exc
    sys.stderr.write(captured.getvalue())
    return cv2


def _explain(exc: ImportError, stderr_text: str) -> OpenCVImportError:
    if isinstance(exc, ModuleNotFoundError) and exc.name == "cv2":
        return OpenCVImportError(NO_OPENCV)
    import numpy

    text = f"{stderr_text}\n{exc}"
    if "compiled using NumPy 1.x" in text or "numpy.core.multiarray failed to import" in text:
        return OpenCVImportError(
            f"the installed OpenCV was built for NumPy 1.x but NumPy {numpy.__version__} is installed: run "
            "pip install 'numpy<2' in this environment (Debian's python3-opencv and JetPack's OpenCV need NumPy 1.x)"
        )
    sys.stderr.write(stderr_text)
    return OpenCVImportError(f"OpenCV (cv2) failed to import: {exc}")
