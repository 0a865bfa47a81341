"""Plots stored as PNG files of at most 256 colours.

A line plot has a few hundred colours, most of them the antialiased edges of its lines and text, so a palette PNG
looks the same (no edge moves; a colour moves by a few levels at most) at about a third of the bytes. Every training
run's curves and every benchmark's figure is kept in the checkout, and the checkout travels whole to a lent GPU
machine with a size limit (tests/test_packaging.py), so the plots are written this way. Maps of continuous values
(the weight-map figure) are not plots in this sense and keep their full colours.
"""

from __future__ import annotations

import io
from typing import Any


def palette_png(png: bytes) -> bytes:
    """A PNG image re-encoded with at most 256 colours: an opaque one (matplotlib's figures) by Pillow's maximum
    coverage quantizer, under which a line plot's white background stays exact, its flat areas move by a level or
    two and its antialiased edges by a few more; one with transparency by the fast octree, the one that keeps it.

    Args:
        png: the bytes of a PNG file.

    Returns:
        The bytes of the palette PNG.

    Raises:
        ValueError: when ``png`` is not a PNG image Pillow can read.

    Example:
        >>> smaller = palette_png(Path("curves.png").read_bytes())  # doctest: +SKIP
    """
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(png))
        image.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"not a PNG image Pillow can read ({exc})") from None
    if image.format != "PNG":
        raise ValueError(f"not a PNG image: Pillow reads it as {image.format}")
    rgba = image.convert("RGBA")
    if rgba.getchannel("A").getextrema()[0] == 255:
        quantized = rgba.convert("RGB").quantize(colors=256, method=Image.Quantize.MAXCOVERAGE)
    else:
        quantized = rgba.quantize(colors=256, method=Image.Quantize.FASTOCTREE)
    out = io.BytesIO()
    quantized.save(out, format="PNG", optimize=True)
    return out.getvalue()


def plot_png(figure: Any, dpi: int) -> bytes:
    """A matplotlib figure rendered at ``dpi`` as a PNG of at most 256 colours (:func:`palette_png`).

    Args:
        figure: a ``matplotlib.figure.Figure``.
        dpi: the resolution it is rendered at.

    Returns:
        The bytes of the PNG file.

    Example:
        >>> write_whole(Path("curves.png"), plot_png(figure, dpi=80))  # doctest: +SKIP
    """
    rendered = io.BytesIO()
    figure.savefig(rendered, format="png", dpi=dpi)
    return palette_png(rendered.getvalue())
