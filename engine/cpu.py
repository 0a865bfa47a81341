"""What this process may use of the host's CPU."""

from __future__ import annotations

import numbers
import os
import sys
from pathlib import Path


def usable_cores() -> int:
    """CPU cores this process may run on: its affinity mask where the OS has one (a container's or
    ``taskset``'s limit), else every core.

    Example:
        >>> usable_cores() >= 1
        True
    """
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


# The most inference threads a backend is asked for: far above any core count, below what crashes PyTorch's
# set_num_threads (100000 ends the process with SIGSEGV) or makes ONNX Runtime spawn threads for minutes.
MAX_THREADS = 1024


def check_threads(threads: object) -> None:
    """Refuse a thread count no backend can take: not an int, below 1 or above :data:`MAX_THREADS`.

    None (the backend's default) passes.

    Raises:
        ValueError: naming the value and the range.

    Example:
        >>> check_threads(2)
    """
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or not 1 <= int(threads) <= MAX_THREADS:
        raise ValueError(f"threads must be an integer from 1 to {MAX_THREADS} (or None: the backend's default), "
                         f"got {threads!r}")


# Whether this process is a fork() child of one that had imported torch. fork() copies only the forking thread: the
# OpenMP threads that ran torch's CPU kernels in the parent are gone, and GNU libgomp (in torch's Linux wheels) waits
# for them for ever in the child's first parallel region, so a network call there hung for good. PyTorch's
# DataLoader sets one thread in its forked workers for the same reason. Registered here, which every Segmenter
# imports, so that the fork is seen even when the parent ran torch before it opened a torch model.
_forked_after_torch = False


def _note_fork() -> None:
    global _forked_after_torch
    _forked_after_torch = _forked_after_torch or "torch" in sys.modules


os.register_at_fork(after_in_child=_note_fork)


def forked_after_torch() -> bool:
    """Whether this process was forked (``os.fork``, ``multiprocessing``'s 'fork') from one that had imported torch,
    whose OpenMP thread pool does not survive the fork: torch may use one CPU thread here.

    Example:
        >>> forked_after_torch()  # the interpreter running this example was not forked
        False
    """
    return _forked_after_torch


# x86 flags of an instruction that multiplies uint8 by int8 and adds into int32 without an int16 step.
_VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


def int8_products_saturate(cpuinfo: str | None = None) -> bool:
    """Whether this CPU's INT8 convolution kernels add pairs of uint8 x int8 products in int16 (and saturate).

    An x86 CPU without VNNI (AVX2, or AVX-512 alone) multiplies with ``vpmaddubsw``, which adds two products
    into int16: 255 x 127 x 2 > 32767, so a model with full 8-bit weights loses accuracy there on OpenVINO
    (ONNX Runtime's quantization guide: reduce-range weights "for the U8S8 format on AVX2 and AVX512
    (non-VNNI) machines to mitigate saturation"). False where it cannot tell (no ``/proc/cpuinfo``) or on
    another architecture.

    Args:
        cpuinfo: the text of ``/proc/cpuinfo`` (read from the system when None).

    Returns:
        True on an x86 CPU whose flags show no VNNI and no AMX.

    Example:
        >>> int8_products_saturate("flags\\t: sse2 avx2 fma\\n")
        True
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags = set(value.split())
            return "sse2" in flags and not flags & _VNNI_FLAGS
    return False
