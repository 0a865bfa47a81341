"""unetrt: real-time U-Net semantic segmentation (runtime; imports without torch)."""

__version__ = "0.1.0"
