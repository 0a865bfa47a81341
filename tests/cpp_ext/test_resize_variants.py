"""The working-size resize's CPU row loops: every variant this CPU runs (AVX2 where it has it) gives the portable
loops' image bit for bit, for every frame dtype, channel count and kind of size, and resize_bilinear runs the best.

The portable loops are the arithmetic the CPU tests compare with the numpy reference and the emulated CUDA kernel;
the AVX2 loops (picked at load time since 2026-12-07) read their samples and round their values otherwise, so they
are compared with the portable ones directly, by name (``resize_bilinear_variant``), on the machine the tests run
on."""

from __future__ import annotations

import ctypes
import mmap
import platform
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from forked import in_a_fork

from unetrt import _tiling

DTYPES = [np.uint8, np.uint16, np.float32]
# () is an H x W image; the others H x W x C.
CHANNELS = [(), (1,), (2,), (3,), (4,)]
# (source height, width) -> (output height, width): the camera frame to camvid's working size (a downscale of more
# than 2x, which the AVX2 loops do without gathers), stronger and milder downscales, upscales, odd sizes, one-pixel
# sides and the identity.
SIZES = {
    "camera frame to working size": ((360, 480), (168, 224)),
    "downscale 4x": ((37, 53), (9, 11)),
    "mild downscale": ((40, 40), (29, 33)),
    "upscale": ((7, 9), (31, 45)),
    "camera upscale": ((120, 160), (168, 224)),
    "odd sizes": ((13, 17), (9, 11)),
    "odd upscale": ((5, 3), (6, 7)),
    "one pixel up": ((1, 1), (5, 7)),
    "to one pixel": ((5, 7), (1, 1)),
    "one row": ((1, 9), (3, 4)),
    "one column": ((9, 1), (4, 3)),
    "one pixel": ((1, 1), (1, 1)),
    "identity": ((12, 10), (12, 10)),
    # Rows of 8k + 7 values: the AVX2 row conversion's last 8-value step would take one value too many.
    "upscale of 8k+7 wide rows": ((6, 23), (17, 31)),
    "downscale of 8k+7 wide rows": ((19, 15), (7, 9)),
}


def random_frame(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """Values over the dtype's range; a float32 frame also holds -0 and infinities (whose lerps give NaN), which the
    kernel keeps exactly."""
    if np.dtype(dtype).kind != "f":
        return rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)
    frame = (rng.random(shape, dtype=np.float32) * 4 - 2).astype(np.float32)
    special = rng.random(shape) < 0.05
    frame[special] = rng.choice(np.array([-0.0, np.inf, -np.inf], np.float32), int(special.sum()))
    return frame


def resized(image: np.ndarray, out_hw: tuple[int, int], variant: str | None, threads: int = 1) -> np.ndarray:
    """image resized by the named row loops (None: resize_bilinear's pick)."""
    out = np.full((*out_hw, *image.shape[2:]), 7, image.dtype)
    if variant is None:
        assert _tiling.resize_bilinear(image, out, threads=threads) is out
    else:
        assert _tiling.resize_bilinear_variant(image, out, variant, threads=threads) is out
    return out


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def cpu_flags() -> set[str]:
    """The x86 CPU's feature flags (Linux), empty elsewhere."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return set()
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def test_variants_are_portable_first_and_avx2_where_the_cpu_has_it() -> None:
    variants = _tiling.resize_variants()
    assert variants[0] == "portable"
    if platform.machine() in ("x86_64", "AMD64") and cpu_flags():
        assert ("avx2" in variants) == ("avx2" in cpu_flags())
    else:
        assert variants == ["portable"]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("channels", CHANNELS, ids=lambda c: f"{c[0] if c else 'no'} channel axis")
@pytest.mark.parametrize("size", SIZES.values(), ids=list(SIZES))
def test_every_variant_equals_the_portable_loops(size: tuple[tuple[int, int], tuple[int, int]],
                                                 channels: tuple[int, ...], dtype: Any) -> None:
    (height, width), out_hw = size
    rng = np.random.default_rng([height, width, *out_hw, len(channels) and channels[0], np.dtype(dtype).num])
    image = random_frame(rng, (height, width, *channels), dtype)
    portable = resized(image, out_hw, "portable")
    for variant in _tiling.resize_variants()[1:]:
        assert same_bits(resized(image, out_hw, variant), portable), variant
    assert same_bits(resized(image, out_hw, None), portable)


@pytest.mark.parametrize("threads", [2, 3])
def test_variants_agree_on_several_threads(threads: int) -> None:
    """Each thread keeps its own converted source rows and scratch: bands of rows give the one-thread image."""
    rng = np.random.default_rng(threads)
    image = random_frame(rng, (75, 101, 3), np.uint8)
    portable = resized(image, (31, 45), "portable")
    for variant in _tiling.resize_variants():
        assert same_bits(resized(image, (31, 45), variant, threads), portable), variant


def test_a_variant_this_cpu_does_not_run_is_refused_in_one_line() -> None:
    image = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match=r"^variant must be one this CPU runs \(portable.*\), got 'sse9'$"):
        _tiling.resize_bilinear_variant(image, np.empty((2, 2, 3), np.uint8), "sse9")
    with pytest.raises(ValueError, match="out dtype must be the image's"):
        _tiling.resize_bilinear_variant(image, np.empty((2, 2, 3), np.uint16), "portable")


PROT_NONE = 0  # mprotect(2): no access (the mmap module names only PROT_READ, PROT_WRITE and PROT_EXEC)


def frame_before_a_guard_page(image: np.ndarray) -> tuple[np.ndarray, mmap.mmap]:
    """A copy of ``image`` that ends where an unreadable page begins: a read past its last value is a SIGSEGV."""
    page = mmap.PAGESIZE
    size = -(-image.nbytes // page) * page
    memory = mmap.mmap(-1, size + page)
    start = size - image.nbytes
    guarded = np.frombuffer(memory, image.dtype, image.size, start).reshape(image.shape)
    guarded[...] = image
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    address = ctypes.addressof(ctypes.c_char.from_buffer(memory))
    assert libc.mprotect(address + size, page, PROT_NONE) == 0, ctypes.get_errno()
    return guarded, memory


def test_no_variant_reads_past_the_image() -> None:
    """The AVX2 loops load 8 bytes per source pair and 4 values per source pixel, and stop where such a load would
    pass the row's end: past the last row that is past the image, another allocation's memory or no memory at all
    (a frame in a buffer that ends at a page the process may not read: a crash). Run in a child, whose crash fails
    the test."""

    def every_case() -> list[str]:
        overreads: list[str] = []
        for name, ((height, width), out_hw) in SIZES.items():
            for channels in CHANNELS:
                for dtype in DTYPES:
                    rng = np.random.default_rng([height, width, len(channels) and channels[0]])
                    guarded, _memory = frame_before_a_guard_page(random_frame(rng, (height, width, *channels), dtype))
                    expected = resized(guarded.copy(), out_hw, "portable")
                    for variant in _tiling.resize_variants():
                        if not same_bits(resized(guarded, out_hw, variant), expected):
                            overreads.append(f"{variant} {name} {channels} {np.dtype(dtype).name}")
        return overreads

    assert in_a_fork(every_case, seconds=120) == []
