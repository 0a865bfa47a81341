"""Batch segmentation of recorded frames (images, videos) on a Ray cluster: ``unet-batch``.

Example:
    >>> from unetrt.batch.job import BatchSettings, run_batch
    >>> run_batch(["clips/"], "masks", BatchSettings("camvid"))  # doctest: +SKIP
"""
