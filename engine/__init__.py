"""unetrt: real-time U-Net semantic segmentation (runtime; imports without torch).

``Segmenter`` and friends are loaded on first use, after OpenCV has been checked, so a missing
or incompatible OpenCV is reported in one line (see :mod:`unetrt.opencv`).

Example:
    >>> from unetrt import Segmenter
    >>> with Segmenter("camvid") as seg:  # doctest: +SKIP
    ...     mask = seg.segment(frame).mask
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import TYPE_CHECKING, Any

from .model_info import ModelInfo
from .palette import Palette

try:
    # The installed distribution's, which setup.py takes from git: the build that is installed, as pip shows it.
    __version__ = metadata.version("unetrt")
except metadata.PackageNotFoundError:  # a copy of the package that pip did not install
    __version__ = "0+unknown"

__all__ = ["ModelInfo", "NonFiniteScoresError", "Palette", "SegmentationResult", "Segmenter", "__version__",
           "cancel_builds"]

_NEEDS_OPENCV = {"Segmenter": ".segmenter", "SegmentationResult": ".segmenter"}

if TYPE_CHECKING:
    from .frame_path import NonFiniteScoresError
    from .plan_build import cancel_builds
    from .segmenter import SegmentationResult, Segmenter
else:
    # Hidden from type checkers, which would otherwise resolve every unknown attribute (unetrt._tiling) through it.
    def __getattr__(name: str) -> Any:
        if name == "cancel_builds":
            return importlib.import_module(".plan_build", __name__).cancel_builds
        if name == "NonFiniteScoresError":
            return importlib.import_module(".frame_path", __name__).NonFiniteScoresError
        if name not in _NEEDS_OPENCV:
            raise AttributeError(f"module 'unetrt' has no attribute {name!r}")
        from .opencv import import_cv2

        import_cv2()
        return getattr(importlib.import_module(_NEEDS_OPENCV[name], __name__), name)
