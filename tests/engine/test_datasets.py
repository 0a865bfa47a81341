from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from unetrt.datasets import (
    ClassTable,
    check_label_ids,
    find_class_table,
    list_images,
    paired_files,
    read_class_table,
    read_image,
    read_label,
)


def write(folder: Path, names: list[str], value: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        cv2.imwrite(str(folder / name), np.full((4, 5), value, np.uint8))


def test_pairs_by_stem(tmp_path: Path) -> None:
    write(tmp_path / "img", ["a.png", "b.png"])
    write(tmp_path / "lab", ["b.png", "a.png"])
    pairs = paired_files(tmp_path / "img", tmp_path / "lab")
    assert [(i.name, lab.name) for i, lab in pairs] == [("a.png", "a.png"), ("b.png", "b.png")]


def test_mismatched_stems_listed(tmp_path: Path) -> None:
    write(tmp_path / "img", ["a.png", "b.png", "c.png"])
    write(tmp_path / "lab", ["a.png", "z.png"])
    with pytest.raises(ValueError, match=r"2 images have no label \(e.g. b, c\); 1 labels have no image \(e.g. z\)"):
        paired_files(tmp_path / "img", tmp_path / "lab")


def test_missing_and_empty_folders(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        paired_files(tmp_path / "nope", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        paired_files(tmp_path / "empty", tmp_path / "empty")


def test_a_missing_or_empty_label_folder_is_named_as_the_label_folder(tmp_path: Path) -> None:
    # unet-eval --labels nothere said "image folder 'nothere' does not exist": the user looked at --images.
    write(tmp_path / "img", ["a.png"])
    with pytest.raises(FileNotFoundError, match=r"^label folder '.*nope' does not exist"):
        paired_files(tmp_path / "img", tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"^label folder '.*empty' holds no images"):
        paired_files(tmp_path / "img", tmp_path / "empty")


def test_read_binary_label_and_errors(tmp_path: Path) -> None:
    write(tmp_path, ["m.png"], value=255)
    assert read_label(tmp_path / "m.png", binary=True).max() == 1
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="cannot read"):
        read_image(tmp_path / "bad.png")
    with pytest.raises(ValueError, match="cannot read label"):
        read_label(tmp_path / "bad.png", binary=False)


def test_camvid_class_table(shared_data: Path) -> None:
    table = read_class_table(find_class_table(shared_data / "camvid" / "valannot"))
    assert len(table.names) == 11 and table.ignore_index == 11 and table.names[0] == "sky"


def test_a_file_whose_name_is_not_utf8_is_refused_before_opencv_sees_it(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # OpenCV crashed the process (a segmentation fault) in unet-eval, unet-train and unet-weights on such a name.
    write(tmp_path / "img", ["a.png"])
    bad = tmp_path / "img" / os.fsdecode(b"b\xff.png")
    bad.write_bytes((tmp_path / "img" / "a.png").read_bytes())
    with pytest.raises(ValueError, match=r"image '.*b\\xff\.png' has a name that is not valid UTF-8"):
        list_images(tmp_path / "img")

    def opencv(*args: object) -> None:
        raise AssertionError("OpenCV was handed the name")

    monkeypatch.setattr(cv2, "imread", opencv)
    with pytest.raises(ValueError, match="not valid UTF-8"):
        read_image(bad)
    with pytest.raises(ValueError, match=r"label .* not valid UTF-8"):
        read_label(bad, binary=True)


@pytest.mark.parametrize("content, message", [
    (b"[" * 100_000 + b"]" * 100_000, "nests its JSON deeper than can be read"),
    (b'{"classes": "\xe9"}', r"is not UTF-8 text \(byte 13\)"),
])
def test_a_class_table_that_cannot_be_read_is_named(tmp_path: Path, content: bytes, message: str) -> None:
    # Deep nesting was a RecursionError, Latin-1 text a UnicodeDecodeError that named no file.
    (tmp_path / "classes.json").write_bytes(content)
    with pytest.raises(ValueError, match=f"class table '.*classes.json' {message}"):
        read_class_table(tmp_path / "classes.json")


def test_a_binary_mask_splits_at_half_grey(tmp_path: Path) -> None:
    # Anti-aliased mask edges: grey up to 127 is background, from 128 foreground.
    cv2.imwrite(str(tmp_path / "m.png"), np.array([[0, 127, 128, 255]], np.uint8))
    assert read_label(tmp_path / "m.png", binary=True).tolist() == [[0, 0, 1, 1]]


def test_a_binary_label_of_class_ids_keeps_its_foreground(tmp_path: Path) -> None:
    # A label of ids 0 and 1, as docs/own-data.md asks labels to be, was split at half grey: every 1 became
    # background, and unet-eval scored (and unet-train trained on) empty masks without a word.
    cv2.imwrite(str(tmp_path / "m.png"), np.array([[0, 1, 1, 0]], np.uint8))
    assert read_label(tmp_path / "m.png", binary=True).tolist() == [[0, 1, 1, 0]]


def test_a_binary_label_of_other_ids_is_refused_not_read_as_empty(tmp_path: Path) -> None:
    # Ids 0-10 (a multi-class data set's labels given to a binary model) have no pixel above half grey: read as
    # all background, unet-export's INT8 check scored FP32 and INT8 alike against empty masks and passed.
    cv2.imwrite(str(tmp_path / "m.png"), np.array([[0, 3, 10, 0]], np.uint8))
    with pytest.raises(ValueError, match=r"holds values 0 to 10, which is neither a 0/255 mask nor a map of ids 0"):
        read_label(tmp_path / "m.png", binary=True)
    # The same file is a valid label of a multi-class model.
    assert read_label(tmp_path / "m.png", binary=False).tolist() == [[0, 3, 10, 0]]


@pytest.mark.parametrize("top", [2, 127])
def test_a_binary_label_of_ids_up_to_half_grey_is_refused(top: int, tmp_path: Path) -> None:
    # Every id from 2 to 127 lies at or below half grey (127), where a 0/255 mask is split: all background.
    cv2.imwrite(str(tmp_path / "m.png"), np.array([[0, top]], np.uint8))
    with pytest.raises(ValueError, match=f"holds values 0 to {top}, which is neither a 0/255 mask"):
        read_label(tmp_path / "m.png", binary=True)
    # Above half grey a grey mask is a mask: 128 is foreground.
    cv2.imwrite(str(tmp_path / "m.png"), np.array([[0, 128]], np.uint8))
    assert read_label(tmp_path / "m.png", binary=True).tolist() == [[0, 1]]


def test_a_16_bit_label_is_refused_with_its_dtype(tmp_path: Path) -> None:
    # Ids above 255 would wrap around if cast to the uint8 the training and metrics use.
    cv2.imwrite(str(tmp_path / "deep.png"), np.array([[0, 300]], np.uint16))
    with pytest.raises(ValueError, match="has dtype uint16; expected uint8 class ids"):
        read_label(tmp_path / "deep.png", binary=False)


def test_label_ids_are_checked_against_the_table_and_its_ignore_index() -> None:
    # The last class (2) and the ignore index (255) are allowed; 3 and 7 are not.
    check_label_ids(np.array([[0, 1, 2, 255]], np.uint8), "ok.png", 3, 255)
    bad = np.array([[0, 2, 3, 3, 7, 255]], np.uint8)
    with pytest.raises(ValueError, match=r"'bad.png' holds class ids 3, 7 \(3 pixels\) outside the class table "
                                         r"\(0..2 and ignore_index 255\)"):
        check_label_ids(bad, "bad.png", 3, 255)


def test_class_table_orders_classes_by_id_and_leaves_out_the_ignored_one(tmp_path: Path) -> None:
    classes = [{"id": 1, "name": "road", "color": [1, 2, 3]}, {"id": 255, "name": "void", "color": [0, 0, 0]},
               {"id": 0, "name": "sky", "color": [4, 5, 6]}]
    (tmp_path / "classes.json").write_text(json.dumps({"ignore_index": 255, "classes": classes}))
    table = read_class_table(tmp_path / "classes.json")
    assert table == ClassTable(("sky", "road"), ((4, 5, 6), (1, 2, 3)), 255)
    (tmp_path / "classes.json").write_text(json.dumps({"ignore_index": 256, "classes": classes}))
    with pytest.raises(ValueError, match="must be a label id from 0 to 255 or absent, got 256"):
        read_class_table(tmp_path / "classes.json")


def test_image_suffixes_match_in_any_case(tmp_path: Path) -> None:
    write(tmp_path / "img", ["a.PNG", "b.JPG"])
    assert [p.name for p in list_images(tmp_path / "img")] == ["a.PNG", "b.JPG"]


def _table_with(tmp_path: Path, **second: object) -> Path:
    """A valid two-class table whose second class takes the given fields."""
    classes = [{"id": 0, "name": "background", "color": [0, 0, 0]},
               {"id": 1, "name": "person", "color": [220, 20, 60], **second}]
    (tmp_path / "classes.json").write_text(json.dumps({"ignore_index": 255, "classes": classes}))
    return tmp_path / "classes.json"


def test_two_classes_of_one_name_are_refused(tmp_path: Path) -> None:
    # Both trained; class_names.index("background") then found only the first, the legend showed two alike.
    with pytest.raises(ValueError, match=r"class names in '.*classes\.json' must differ, got 'background' more "
                                         r"than once; give each class its own name"):
        read_class_table(_table_with(tmp_path, name="background"))


@pytest.mark.parametrize("color", ["255", "#dc143c", [0.86, 0.08, 0.24], [220, 20, 300], [220, 20], [True, 0, 0]])
def test_a_colour_not_of_three_bytes_is_refused(tmp_path: Path, color: object) -> None:
    # "255" was read character by character as (2, 5, 5), 0..1 floats as black, 300 past a byte: overlays drew
    # the class in a colour nobody chose, without an error.
    with pytest.raises(ValueError, match=r"the color of class 'person' in '.*classes\.json' must be \[R, G, B\] "
                                         r"with integers from 0 to 255, e\.g\. \[220, 20, 60\], got "):
        read_class_table(_table_with(tmp_path, color=color))


def test_a_jpeg_label_of_class_ids_is_refused(tmp_path: Path) -> None:
    # OpenCV's JPEG of a 0|4 edge reads back with 1s and 3s beside it: ids inside a 5-class table, which trained
    # and scored as labels in silence.
    label = np.zeros((16, 16), np.uint8)
    label[:, 5:] = 4
    cv2.imwrite(str(tmp_path / "l.jpg"), label)
    with pytest.raises(ValueError, match=r"label '.*l\.jpg' is a JPEG: .* save labels as PNG"):
        read_label(tmp_path / "l.jpg", binary=False)
    # A binary 0/255 mask splits at half grey, which JPEG's small errors do not cross: columns 5 on are foreground.
    cv2.imwrite(str(tmp_path / "m.jpg"), label * 63)
    assert (read_label(tmp_path / "m.jpg", binary=True) == (label > 0)).all()


def test_a_tiff_stack_is_refused_not_read_as_its_first_page(tmp_path: Path) -> None:
    # An EM stack (the ISBI 2012 challenge's train-volume.tif) holds every slice in one TIFF; cv2.imread gave the
    # first slice alone and unet-eval scored it as the whole file without a word.
    pages = [np.full((6, 8), 40 * i, np.uint8) for i in range(3)]
    assert cv2.imwritemulti(str(tmp_path / "stack.tif"), pages)
    with pytest.raises(ValueError, match=r"image '.*stack\.tif' is a stack of 3 pages.*split it into one image per"):
        read_image(tmp_path / "stack.tif", channels=1)
    with pytest.raises(ValueError, match=r"label '.*stack\.tif' is a stack of 3 pages"):
        read_label(tmp_path / "stack.tif", binary=True)
    # One page is an image as any other, whatever its suffix says.
    assert cv2.imwritemulti(str(tmp_path / "one.tiff"), pages[2:])
    assert read_image(tmp_path / "one.tiff", channels=1).tolist() == pages[2].tolist()


def test_a_tiff_stack_is_refused_whatever_the_case_of_its_suffix(tmp_path: Path) -> None:
    # Cameras and Windows tools write STACK.TIF.
    assert cv2.imwritemulti(str(tmp_path / "STACK.TIF"), [np.full((6, 8), 40 * i, np.uint8) for i in range(2)])
    with pytest.raises(ValueError, match=r"STACK\.TIF' is a stack of 2 pages"):
        read_image(tmp_path / "STACK.TIF", channels=1)


def _big_endian_tiff(path: Path, pages: list[np.ndarray]) -> None:
    """A baseline TIFF in Motorola byte order (b"MM", as ImageJ saves stacks) of uncompressed uint8 pages."""
    data = bytearray(b"MM" + struct.pack(">HI", 42, 0))  # the first page's offset is filled in below
    link = 4  # where the offset of the next page goes: the header's, then each page's
    for page in pages:
        height, width = page.shape
        pixels = len(data)
        data += page.tobytes()
        struct.pack_into(">I", data, link, len(data))
        shorts = [(256, width), (257, height), (258, 8), (259, 1), (262, 1)]
        entries = [struct.pack(">HHIHH", tag, 3, 1, value, 0) for tag, value in shorts]
        entries.append(struct.pack(">HHII", 273, 4, 1, pixels))
        entries += [struct.pack(">HHIHH", tag, 3, 1, value, 0) for tag, value in ((277, 1), (278, height))]
        entries.append(struct.pack(">HHII", 279, 4, 1, height * width))
        data += struct.pack(">H", len(entries)) + b"".join(entries)
        link = len(data)
        data += struct.pack(">I", 0)
    path.write_bytes(bytes(data))


def test_a_big_endian_tiff_stack_is_refused_too(tmp_path: Path) -> None:
    # ImageJ saves stacks big-endian by default: the page count is read in the file's own byte order.
    pages = [np.full((6, 8), 40 * i, np.uint8) for i in range(3)]
    _big_endian_tiff(tmp_path / "stack.tif", pages)
    with pytest.raises(ValueError, match=r"stack\.tif' is a stack of 3 pages"):
        read_image(tmp_path / "stack.tif", channels=1)
    # The same file of one page is an image as any other.
    _big_endian_tiff(tmp_path / "one.tif", pages[2:])
    assert read_image(tmp_path / "one.tif", channels=1).tolist() == pages[2].tolist()


def write_indexed_png(path: Path, indices: np.ndarray, palette: list[tuple[int, int, int]], bit_depth: int = 8,
                      transparent: bool = False) -> None:
    """An indexed-colour PNG (colour type 3), as PIL's mode 'P', Pascal VOC's and LabelMe's masks are saved."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    per_byte = 8 // bit_depth
    rows = b""
    for row in indices.astype(np.uint8):
        packed = bytearray()
        for start in range(0, len(row), per_byte):
            value = 0
            for offset, index in enumerate(row[start:start + per_byte]):
                value |= int(index) << (8 - bit_depth * (offset + 1))
            packed.append(value)
        rows += b"\0" + bytes(packed)
    header = struct.pack(">IIBBBBB", indices.shape[1], indices.shape[0], bit_depth, 3, 0, 0, 0)
    parts = [chunk(b"IHDR", header), chunk(b"PLTE", bytes(v for colour in palette for v in colour))]
    if transparent:
        parts.append(chunk(b"tRNS", bytes([0] + [255] * (len(palette) - 1))))
    parts += [chunk(b"IDAT", zlib.compress(rows)), chunk(b"IEND", b"")]
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"".join(parts))


# Pascal VOC's palette: index 1 is drawn dark red, 2 green, 3 olive; the file holds the indices, the class ids.
VOC_COLOURS = [(0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0)]


@pytest.mark.parametrize(("bit_depth", "transparent"), [(8, False), (8, True), (4, False)])
def test_an_indexed_colour_label_is_read_as_its_class_ids(bit_depth: int, transparent: bool, tmp_path: Path) -> None:
    # OpenCV expands the palette into colours, which read as a colour label and were refused, though the file holds
    # exactly the ids (LabelMe's and Pascal VOC's masks; PIL's mode 'P').
    ids = np.array([[0, 1, 2, 3], [3, 2, 1, 0], [1, 1, 0, 0]], np.uint8)
    write_indexed_png(tmp_path / "voc.png", ids, VOC_COLOURS, bit_depth, transparent)
    label = read_label(tmp_path / "voc.png", binary=False)
    assert label.dtype == np.uint8 and label.tolist() == ids.tolist()


def test_an_indexed_label_holding_the_ignore_id_keeps_it(tmp_path: Path) -> None:
    # VOC draws object borders with index 255 (its "void", a white palette entry).
    ids = np.array([[0, 255, 1]], np.uint8)
    write_indexed_png(tmp_path / "voc.png", ids, [*VOC_COLOURS, *[(0, 0, 0)] * 251, (224, 224, 192)])
    assert read_label(tmp_path / "voc.png", binary=False).tolist() == [[0, 255, 1]]


def test_a_colour_label_is_still_refused(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "rgb.png"), np.array([[[0, 0, 128], [0, 128, 0]]], np.uint8))
    with pytest.raises(ValueError, match="is a colour image"):
        read_label(tmp_path / "rgb.png", binary=False)


TABLE = [{"id": 0, "name": "background", "color": [0, 0, 0]}, {"id": 1, "name": "ground", "color": [128, 64, 128]},
         {"id": 2, "name": "person", "color": [220, 20, 60]}]


def test_an_id_written_as_text_is_named_with_its_class(tmp_path: Path) -> None:
    # It was "is not a class table (TypeError: '<' not supported between instances of 'str' and 'int')".
    table = [dict(entry, id=str(entry["id"])) if entry["id"] == 1 else entry for entry in TABLE]
    (tmp_path / "classes.json").write_text(json.dumps({"classes": table}))
    with pytest.raises(ValueError, match=r"the id of class 'ground' in .* must be an integer label value from 0 to "
                                         r"255, e.g. 1, got '1'$"):
        read_class_table(tmp_path / "classes.json")


@pytest.mark.parametrize(("ignore", "ids", "message"), [
    # An id left out: the kept ids have a gap.
    (None, [0, 2], r"got \[0, 2\]: id 1 is missing; number the classes 0\.\.1 without gaps$"),
    # ignore_index set to a class's id: that class is what left the gap's 255 in, and is named.
    (2, [0, 1, 2, 255], r"got \[0, 1, 255\] \(ignore_index 2 leaves out class 'person'\): id 2 is missing; number the "
                        r"classes 0\.\.2 without gaps, or set ignore_index to the id of the unlabelled pixels$"),
])
def test_ids_that_are_not_0_to_k_minus_1_are_named_with_the_fix(ignore: int | None, ids: list[int], message: str,
                                                                 tmp_path: Path) -> None:
    entries = [*TABLE, {"id": 255, "name": "unlabelled", "color": [255, 255, 255]}]
    table: dict[str, object] = {"classes": [entry for entry in entries if entry["id"] in ids]}
    if ignore is not None:
        table["ignore_index"] = ignore
    (tmp_path / "classes.json").write_text(json.dumps(table))
    with pytest.raises(ValueError, match=message):
        read_class_table(tmp_path / "classes.json")


def test_a_png_label_cut_short_before_its_colour_type_is_refused_in_one_line(tmp_path: Path) -> None:
    # 25 bytes: the signature and IHDR's start, up to the byte before the colour type (a copy that was cut off).
    (tmp_path / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + bytes(9))
    with pytest.raises(ValueError, match=r"cannot read label .*cut\.png': missing, unreadable or not an image"):
        read_label(tmp_path / "cut.png", binary=False)


def test_an_id_written_as_true_is_named_with_its_class(tmp_path: Path) -> None:
    # JSON's true is a Python bool, which is an int 1 and would pass for class id 1.
    table = [dict(entry, id=True) if entry["id"] == 1 else entry for entry in TABLE]
    (tmp_path / "classes.json").write_text(json.dumps({"classes": table}))
    with pytest.raises(ValueError, match=r"the id of class 'ground' .* from 0 to 255, e.g. 1, got True$"):
        read_class_table(tmp_path / "classes.json")


UNLABELLED = {"id": 255, "name": "unlabelled", "color": [255, 255, 255]}


@pytest.mark.parametrize(("ignore", "classes", "message"), [
    # Two classes given one id: both the repeat and the gap it leaves are named.
    (None, [TABLE[0], TABLE[1], dict(TABLE[2], id=1)],
     r"got \[0, 1, 1\]: id 2 is missing and id 1 given to more than one class; number the classes 0\.\.2 "
     r"without gaps$"),
    # ignore_index's own entry (255) is left out by design: it is no cause of the gap, and not named as one.
    (255, [TABLE[0], TABLE[2], UNLABELLED], r"got \[0, 2\]: id 1 is missing; number the classes 0\.\.1 without gaps$"),
])
def test_repeated_ids_and_a_gap_beside_the_ignored_entry_are_named_as_they_are(
        ignore: int | None, classes: list[dict[str, object]], message: str, tmp_path: Path) -> None:
    table: dict[str, object] = {"classes": classes}
    if ignore is not None:
        table["ignore_index"] = ignore
    (tmp_path / "classes.json").write_text(json.dumps(table))
    with pytest.raises(ValueError, match=message):
        read_class_table(tmp_path / "classes.json")
