"""Plots stored as palette PNGs: the same picture, fewer bytes; a picture of few colours exactly."""

from __future__ import annotations

import io

import numpy as np
import pytest

from unetrt.plot_png import palette_png, plot_png

Image = pytest.importorskip("PIL.Image")
matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGBA")).astype(int)


def _line_plot() -> object:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 3))
    epochs = np.arange(1, 31)
    axes.plot(epochs, np.exp(-epochs / 9), label="train")
    axes.plot(epochs, 0.6 + 0.01 * np.sin(epochs), label="validation", linestyle=":")
    axes.set(xlabel="epoch", ylabel="loss", title="loss")
    axes.legend()
    figure.tight_layout()
    return figure


def test_a_line_plot_is_a_palette_png_that_looks_the_same_in_fewer_bytes() -> None:
    import matplotlib.pyplot as plt

    figure = _line_plot()
    full = io.BytesIO()
    figure.savefig(full, format="png", dpi=80)
    palette = plot_png(figure, dpi=80)
    plt.close(figure)
    image = Image.open(io.BytesIO(palette))
    assert image.format == "PNG" and image.mode == "P"
    before, after = _pixels(full.getvalue()), _pixels(palette)
    assert before.shape == after.shape
    # Antialiased edges move by a few levels; no pixel changes its colour's kind (white stays white, a line its hue).
    assert np.abs(before - after).max() <= 16
    assert np.abs(before - after).mean() < 0.5
    assert len(palette) < len(full.getvalue()) / 2


def test_a_plots_background_and_flat_areas_keep_their_colour_exactly() -> None:
    import matplotlib.pyplot as plt

    figure = _line_plot()
    full = io.BytesIO()
    figure.savefig(full, format="png", dpi=80)
    plt.close(figure)
    before, after = _pixels(full.getvalue()), _pixels(palette_png(full.getvalue()))
    white = (before == 255).all(axis=2)
    assert white.mean() > 0.5 and (after[white] == 255).all()
    # The next most common colours (axes, the lines' cores, the legend's frame) move by a level or two at most.
    colours, counts = np.unique(before.reshape(-1, 4), axis=0, return_counts=True)
    for colour in colours[np.argsort(counts)[-6:]]:
        where = (before == colour).all(axis=2)
        assert np.abs(after[where] - colour).max() <= 2, colour


@pytest.mark.parametrize("data", [b"", b"not an image", b"\x89PNG\r\n\x1a\n truncated"])
def test_bytes_that_are_no_png_are_refused_in_one_line(data: bytes) -> None:
    with pytest.raises(ValueError, match="not a PNG image Pillow can read"):
        palette_png(data)


def test_another_format_is_refused_naming_it() -> None:
    jpeg = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(jpeg, format="JPEG")
    with pytest.raises(ValueError, match="not a PNG image: Pillow reads it as JPEG"):
        palette_png(jpeg.getvalue())


def test_a_picture_with_transparency_keeps_it() -> None:
    pixels = np.zeros((20, 30, 4), np.uint8)
    pixels[:, :15] = (30, 120, 200, 255)
    pixels[:, 15:] = (0, 0, 0, 0)
    source = io.BytesIO()
    Image.fromarray(pixels, "RGBA").save(source, format="PNG")
    assert np.array_equal(_pixels(palette_png(source.getvalue())), pixels.astype(int))
