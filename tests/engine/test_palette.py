"""unetrt.palette.Palette: one owner of class names and colours, used by colorize, overlay and the stream legend,
and overridable on a Segmenter."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_info

from unetrt.palette import Palette
from unetrt.segmenter import SegmentationResult, Segmenter

ROAD_CAR = Palette(("road", "car"), ((128, 64, 128), (64, 0, 128)))


def test_the_lookup_tables_colour_classes_and_draw_every_other_id_in_the_ignore_colour() -> None:
    palette = dataclasses.replace(ROAD_CAR, ignore_color=(1, 2, 3))
    assert palette.lut_rgb[:3].tolist() == [[128, 64, 128], [64, 0, 128], [1, 2, 3]]
    assert palette.lut_bgr[:3].tolist() == [[128, 64, 128], [128, 0, 64], [3, 2, 1]]
    assert palette.lut_rgb.shape == (256, 3) and (palette.lut_rgb[255] == (1, 2, 3)).all()
    assert not palette.lut_bgr.flags.writeable  # shared by every call: nobody may paint into it


def test_a_binary_palette_colours_id_1_and_leaves_the_background_to_the_ignore_colour() -> None:
    palette = Palette(("cell",), ((255, 0, 0),), binary=True)
    assert palette.ids == (1,) and palette.lut_bgr[:2].tolist() == [[0, 0, 0], [0, 0, 255]]
    assert palette.legend() == (["cell"], [(0, 0, 255)])
    with pytest.raises(ValueError, match="binary palette has one class"):
        Palette(("a", "b"), ((0, 0, 0), (1, 1, 1)), binary=True)


def test_the_models_palette_is_its_names_and_colours() -> None:
    info = tiny_info(num_classes=3)
    palette = Palette.of(info)
    assert palette.names == info.class_names and palette.colors == info.colors and not palette.binary
    assert Palette.of(tiny_info(num_classes=1)).binary


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"names": ("road", "car"), "colors": ((1, 2, 3),)},
     r"palette has 1 colours \(\(1, 2, 3\),\) for 2 classes \('road', 'car'\); give one \(r, g, b\) per class"),
    ({"names": ("road",), "colors": ((1, 2, 300),)}, r"colour 0 \('road'\) must be .* got \(1, 2, 300\)"),
    ({"names": ("road",), "colors": ("red",)}, r"colour 0 \('road'\) must be .* got 'red'"),
    ({"names": "road", "colors": ((1, 2, 3),)}, "names must be a sequence of class names, got 'road'"),
    ({"names": ("road",), "colors": ((1, 2, 3),), "ignore_color": (0, 0)}, r"ignore_color must be .* \(0, 0\)"),
    ({"names": (), "colors": ()}, "1 to 256 classes"),
])
def test_bad_palettes_say_what_is_wrong_and_echo_it(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Palette(**kwargs)


def test_equal_palettes_compare_equal_whatever_sequences_made_them() -> None:
    assert Palette(["road", "car"], [[128, 64, 128], [64, 0, 128]]) == ROAD_CAR  # type: ignore[arg-type]


@pytest.fixture()
def tiny_segmenter(tmp_path: Path) -> Segmenter:
    pytest.importorskip("torch")
    from unetrt.export.checkpoint import build_model
    from unetrt.export.onnx_export import export_onnx

    info = tiny_info(num_classes=2)
    model = export_onnx(build_model(info).eval(), info, tmp_path / "tiny.onnx")
    return Segmenter(model, warm_up=False, palette=ROAD_CAR)


def test_a_segmenters_palette_colours_its_masks_and_can_be_replaced(tiny_segmenter: Segmenter) -> None:
    mask = np.array([[0, 1, 2]], np.uint8)
    result = SegmentationResult(mask, None, 0.0)
    with tiny_segmenter as seg:
        assert seg.palette == ROAD_CAR
        assert seg.colorize(result)[0].tolist() == [[128, 64, 128], [128, 0, 64], [0, 0, 0]]
        seg.palette = dataclasses.replace(seg.palette, colors=((255, 0, 0), (0, 0, 255)))
        assert seg.colorize(result)[0].tolist() == [[0, 0, 255], [255, 0, 0], [0, 0, 0]]
        overlay = seg.overlay(np.zeros((1, 3, 3), np.uint8), result, alpha=1.0)
        assert overlay[0, :2].tolist() == [[0, 0, 255], [255, 0, 0]]


def test_a_palette_that_does_not_fit_the_model_is_refused_with_both_shown(tiny_segmenter: Segmenter) -> None:
    with tiny_segmenter as seg:
        with pytest.raises(ValueError, match=r"palette \('sky',\) with colours \(\(1, 2, 3\),\) has 1 classes; "
                                             r"the model has 2: \('class0', 'class1'\)"):
            seg.palette = Palette(("sky",), ((1, 2, 3),))
        with pytest.raises(ValueError, match=r"palette must be a unetrt\.palette\.Palette, got"):
            seg.palette = [(1, 2, 3), (4, 5, 6)]  # type: ignore[assignment]
        assert seg.palette == ROAD_CAR


def test_a_palette_that_does_not_fit_is_refused_at_open(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from unetrt.export.checkpoint import build_model
    from unetrt.export.onnx_export import export_onnx

    info = tiny_info(num_classes=1)
    model = export_onnx(build_model(info).eval(), info, tmp_path / "binary.onnx")
    with pytest.raises(ValueError, match="is not binary and the model is; pass binary=True"):
        Segmenter(model, warm_up=False, palette=Palette(("cell",), ((0, 255, 0),)))


def test_a_model_palette_needs_a_model_info() -> None:
    with pytest.raises(ValueError, match=r"info must be a unetrt\.model_info\.ModelInfo .*got None"):
        Palette.of(None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"info must be a unetrt\.model_info\.ModelInfo .*got None"):
        ROAD_CAR.check_fits(None)  # type: ignore[arg-type]
    assert ROAD_CAR.check_fits(tiny_info(num_classes=2)) is ROAD_CAR


def test_ids_of_takes_a_list_of_names_not_one_string() -> None:
    with pytest.raises(ValueError, match=r"such as \['car'\], got the single string 'car'"):
        ROAD_CAR.ids_of("car")
    with pytest.raises(ValueError, match=r"ids_of takes a list of class names, such as \['road'\], got None"):
        ROAD_CAR.ids_of(None)  # type: ignore[arg-type]
    assert ROAD_CAR.ids_of(name for name in ("car", "road")) == (1, 0)  # type: ignore[arg-type]
    assert ROAD_CAR.ids_of(["car"]) == (1,)


@pytest.mark.parametrize("color", [(True, 0, 0), (1, 2, 3, 4), (1, 2)])
def test_a_colour_is_exactly_three_ints_and_not_bools(color: tuple[object, ...]) -> None:
    message = r"colour 0 \('road'\) must be an \(r, g, b\) triple of ints from 0 to 255, got " + re.escape(repr(color))
    with pytest.raises(ValueError, match=message):
        Palette(("road",), (color,))  # type: ignore[arg-type]


def test_a_palette_holds_up_to_256_classes() -> None:
    # A uint8 mask has ids 0..255: 256 classes fit, 257 do not.
    names = tuple(f"c{index}" for index in range(256))
    palette = Palette(names, ((1, 2, 3),) * 256)
    assert palette.lut_rgb[255].tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="a palette needs 1 to 256 classes, got 257"):
        Palette((*names, "c256"), ((1, 2, 3),) * 257)


def test_the_legend_leaves_out_hidden_classes() -> None:
    assert ROAD_CAR.legend(hidden=["road"]) == (["car"], [(128, 0, 64)])


def test_a_binary_palettes_class_is_id_1() -> None:
    assert Palette(("cell",), ((255, 0, 0),), binary=True).ids_of(["cell"]) == (1,)
