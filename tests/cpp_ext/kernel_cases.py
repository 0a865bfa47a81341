"""Hypothesis strategies for the kernel tests, shared by the CPU, emulated-CUDA and GPU tests."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st


@st.composite
def strided_images(draw: st.DrawFn) -> np.ndarray:
    """Images of 1..40 px a side, 1/3/4 channels (or 2-D), uint8, uint16 or float32, often not contiguous."""
    height, width = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    channels = draw(st.sampled_from([0, 1, 3, 4]))
    dtype = draw(st.sampled_from([np.uint8, np.uint16, np.float32]))
    layout = draw(st.sampled_from(["contiguous", "strided", "flipped", "fortran"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shape = (height, width) if channels == 0 else (height, width, channels)
    big = tuple(s * 2 for s in shape) if layout == "strided" else shape
    if dtype != np.float32:
        data = rng.integers(0, np.iinfo(dtype).max + 1, big, dtype=dtype)
    else:
        # Wide range: exercises half overflow, rounding and subnormals after normalisation.
        data = (rng.standard_normal(big) * 10.0 ** rng.integers(-6, 6, big)).astype(np.float32)
    if layout == "strided":
        data = data[tuple(slice(None, None, 2) for _ in shape)]
    elif layout == "flipped":
        data = data[::-1, ::-1]
    elif layout == "fortran":
        data = np.asfortranarray(data)
    return data


@st.composite
def extract_cases(draw: st.DrawFn) -> dict:
    """An image (:func:`strided_images`), an output dtype and shape (a gray image's 1, 3 or 4 channels, a colour
    image's own or 1) and the keyword arguments of an extract call.

    Origins may lie far outside the image (padding wider than the image); every tile still touches it.
    """
    image = draw(strided_images())
    height, width = image.shape[:2]
    channels = 1 if image.ndim == 2 else image.shape[2]
    th, tw = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    oy, ox = draw(st.integers(-(th - 1), height - 1)), draw(st.integers(-(tw - 1), width - 1))
    sy, sx = draw(st.integers(1, 30)), draw(st.integers(1, 30))
    rows = draw(st.integers(1, (height - 1 - oy) // sy + 1))
    cols = draw(st.integers(1, (width - 1 - ox) // sx + 1))
    first = draw(st.integers(0, rows * cols - 1))
    count = draw(st.integers(1, rows * cols - first))
    # A gray image may fill several channels (a gray frame for a colour model, replicated by the kernel), and a
    # colour image one (a colour frame for a 1-channel model, turned gray by the kernel).
    out_channels = draw(st.sampled_from([1, 3, 4] if channels == 1 else [channels, 1]))
    return {
        "image": image,
        "out_shape": (count, out_channels, th, tw),
        "dtype": draw(st.sampled_from([np.float32, np.float16])),
        "kwargs": {"origin": (oy, ox), "step": (sy, sx), "grid": (rows, cols), "first": first,
                   "swap_rb": channels >= 3 and draw(st.booleans()),
                   "scale": draw(st.sampled_from([1.0, 1.0 / 255.0, 1.0 / 65535.0, 3e-4])),
                   "mean": draw(st.lists(st.floats(-2, 2), min_size=out_channels, max_size=out_channels)),
                   "std": draw(st.lists(st.floats(0.01, 3), min_size=out_channels, max_size=out_channels))},
    }


@st.composite
def stitch_cases(draw: st.DrawFn) -> dict:
    height, width = draw(st.integers(1, 40)), draw(st.integers(1, 40))
    th, tw = draw(st.integers(1, 16)), draw(st.integers(1, 16))
    sy, sx = draw(st.integers(1, th)), draw(st.integers(1, tw))
    oy, ox = draw(st.integers(-(th - 1), 0)), draw(st.integers(-(tw - 1), 0))
    rows_min = max(1, -(-(height - oy - th) // sy) + 1)
    cols_min = max(1, -(-(width - ox - tw) // sx) + 1)
    rows = draw(st.integers(rows_min, max(rows_min, (height - 1 - oy) // sy + 1)))
    cols = draw(st.integers(cols_min, max(cols_min, (width - 1 - ox) // sx + 1)))
    return {"hw": (height, width), "tile": (th, tw), "origin": (oy, ox), "step": (sy, sx), "grid": (rows, cols),
            "classes": draw(st.integers(1, 4)), "mode": draw(st.sampled_from(["crop", "blend"])),
            "dtype": draw(st.sampled_from([np.float32, np.float16])), "seed": draw(st.integers(0, 2**32 - 1)),
            "batch": draw(st.integers(1, 5)), "threads": draw(st.sampled_from([0, 1, 2]))}


@st.composite
def finish_cases(draw: st.DrawFn) -> dict:
    """Score planes of 1..24 px a side, any rect inside, any output size; NaNs, infinities and ties sometimes."""
    binary = draw(st.booleans())
    classes = 1 if binary else draw(st.sampled_from([1, 2, 3, 5, 11, 255, 256]))
    src_h, src_w = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    rect_h, rect_w = draw(st.integers(1, src_h)), draw(st.integers(1, src_w))
    rect = (draw(st.integers(0, src_h - rect_h)), draw(st.integers(0, src_w - rect_w)), rect_h, rect_w)
    out_hw = (draw(st.integers(1, 40)), draw(st.integers(1, 40)))
    if draw(st.booleans()):
        out_hw = (rect_h, rect_w)  # identity resize
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    dtype = draw(st.sampled_from([np.float32, np.float16]))
    scores = (rng.standard_normal((classes, src_h, src_w)) * 4).astype(dtype)
    special = draw(st.sampled_from(["none", "nan", "inf", "ties"]))
    if special != "none":
        picks = rng.random(scores.shape) < 0.1
        scores[picks] = {"nan": np.nan, "inf": np.inf, "ties": 1.0}[special]
    weight = rng.uniform(0.1, 2, (src_h, src_w)).astype(np.float32) if draw(st.booleans()) else None
    return {"scores": scores, "rect": rect, "out_hw": out_hw, "weight": weight, "binary": binary,
            "threshold": draw(st.sampled_from([0.0, 0.3, -1.5])), "threads": draw(st.sampled_from([0, 1, 3])),
            "outputs": draw(st.sampled_from(["mask", "probabilities", "both"]))}
