"""unetrt: real-time U-Net semantic segmentation (runtime; imports without torch).

Example:
    >>> from unetrt import Segmenter
    >>> with Segmenter("camvid") as seg:  # doctest: +SKIP
    ...     mask = seg.segment(frame).mask
"""

from .model_info import ModelInfo
from .segmenter import SegmentationResult, Segmenter

__version__ = "0.1.0"

__all__ = ["ModelInfo", "SegmentationResult", "Segmenter", "__version__"]
