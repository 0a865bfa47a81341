"""How many segmenters a stream runs side by side, and opening them.

On a CPU, one network run spread over every core leaves cores idle at each layer's
barrier, while one run per core keeps them all busy: on an idle 2-core Xeon the main job
runs at 190.0 frames per second on two single-threaded OpenVINO INT8 segmenters against
157.9 on one two-threaded one (``benchmarks/results/main_job_cpu_mpeg4.md``), and the gap
grows when other processes share the cores, whose threads stall a layer's barrier. A GPU
keeps one segmenter busy on its own, so there the stream runs one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import cpu

MAX_AUTO_WORKERS = 4


def auto_worker_count(cores: int, threads: int | None) -> int:
    """Workers for CPU inference: one per ``threads`` cores, or one per core up to ``MAX_AUTO_WORKERS``.

    Args:
        cores: usable CPU cores.
        threads: inference threads per worker the caller asked for (None: not asked).

    Example:
        >>> auto_worker_count(2, None), auto_worker_count(16, None), auto_worker_count(8, 4)
        (2, 4, 2)
    """
    if threads is not None:
        return max(1, cores // threads)
    return max(1, min(MAX_AUTO_WORKERS, cores))


def max_workers() -> int:
    """The most segmenters a stream opens side by side: 4 per usable CPU core.

    Example:
        >>> max_workers() >= 4
        True
    """
    return 4 * max(1, cpu.usable_cores())


def open_segmenters(model: str | Path, options: dict[str, Any], workers: int | None) -> list[Any]:
    """Open the segmenters of a stream's inference workers, all alike.

    Args:
        model: a model path or bundled name.
        options: keyword arguments of :class:`unetrt.segmenter.Segmenter` (``threads`` among them or not).
        workers: how many (None: one per core for CPU inference, see :func:`auto_worker_count`; one on a GPU).

    Returns:
        The segmenters; without ``threads`` in ``options`` the cores are shared out among them.

    Raises:
        ValueError: when ``workers`` is below 1 or above :func:`max_workers`, or above 1 for a model that runs on a
            GPU; as
            :class:`~unetrt.segmenter.Segmenter` otherwise.

    Example:
        >>> segmenters = open_segmenters("camvid", {}, 2)  # doctest: +SKIP
        >>> [s.backend.threads for s in segmenters]  # doctest: +SKIP
        [1, 1]
    """
    from ..segmenter import Segmenter

    if workers is not None and workers < 1:
        raise ValueError(f"workers must be at least 1 (or None: one per CPU core), got {workers}")
    most = max_workers()
    if workers is not None and workers > most:
        # Each worker holds a network in memory; a thousand ran this machine out of memory while opening.
        raise ValueError(f"workers={workers} is more than {most} (4 per usable CPU core) segmenters; more than one "
                         "per core gains nothing: use at most that many, or leave it out for one per core")
    warm_up = options.get("warm_up", True)
    # Opened cold: it tells the device, and may be opened again with fewer threads; warmed once it is kept.
    segmenters = [Segmenter(model, **{**options, "warm_up": False})]
    try:
        first = segmenters[0]
        device = first.backend.device
        threads = options.get("threads")
        cores = cpu.usable_cores()
        if workers is not None:
            count = workers
        elif device != "cpu":
            count = 1
        else:
            count = auto_worker_count(cores, threads)
        if count > 1 and device != "cpu":
            raise ValueError(f"workers={workers} shares CPU cores among segmenters, but {str(model)!r} runs on "
                             f"{device}, which one worker keeps busy: use workers=1 (--workers 1)")
        if count > 1 and options.get("backend", "auto") == "auto":
            # The others open on the backend the first one runs on: where the automatic first choice gave way (a
            # TensorRT engine that failed to build, minutes on a Jetson), each would try it again before falling back.
            options = {**options, "backend": first.backend.name}
        if count > 1 and threads is None:
            # The first one holds every core's threads; open them all again with an equal share.
            first.close()  # idempotent: closed again below should an interrupt land before the list is emptied
            segmenters = []
            options = {**options, "threads": max(1, cores // count)}
        if segmenters and warm_up:
            first.warm_up()
        while len(segmenters) < count:
            segmenters.append(Segmenter(model, **options))
    except BaseException:
        for segmenter in segmenters:
            segmenter.close()
        raise
    return segmenters
