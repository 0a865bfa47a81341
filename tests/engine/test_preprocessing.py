"""Frame rules shared by Segmenter and Stream: dtypes, layouts, value ranges and the advice given."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from unetrt.preprocessing import MAX_FRAME_SIDE, check_frame, frame_scale, normalize
from unetrt.stream.sources import CorruptFrameError, check_stream_frame


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32, np.float64])
def test_supported_dtypes_pass_unchanged(dtype: type) -> None:
    frame = np.zeros((4, 5, 3), dtype)
    checked = check_frame(frame)
    assert checked.dtype == dtype and checked.shape == (4, 5, 3) and np.shares_memory(checked, frame)


def test_layouts_gray_single_channel_and_bgra() -> None:
    assert check_frame(np.zeros((4, 5), np.uint8)).shape == (4, 5)
    assert check_frame(np.zeros((4, 5, 1), np.uint16)).shape == (4, 5)
    bgra = np.arange(4 * 5 * 4, dtype=np.uint16).reshape(4, 5, 4)
    checked = check_frame(bgra)
    assert checked.shape == (4, 5, 3) and np.array_equal(checked, bgra[..., :3])


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_a_channels_first_frame_is_told_how_to_turn_it(channels: int) -> None:
    # A torch tensor's CxHxW layout: the line named the expected layouts but not the transpose that gives one.
    with pytest.raises(ValueError, match=rf"got shape \({channels}, 120, 160\), channels first \(CxHxW, as torch "
                                         r"keeps images\): pass frame.transpose\(1, 2, 0\)"):
        check_frame(np.zeros((channels, 120, 160), np.uint8))


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.uint32, np.float16, np.bool_])
def test_unsupported_dtypes_get_advice_that_keeps_the_values(dtype: type) -> None:
    with pytest.raises(ValueError, match=f"{np.dtype(dtype).name} is not supported") as error:
        check_frame(np.zeros((4, 5, 3), dtype))
    message = str(error.value)
    assert "uint16 full range" in message
    # The old advice wrapped 16-bit values; only bool frames (0/1) are safely scaled into uint8.
    assert ("convert with frame.astype(np.uint8)" in message) == (dtype is np.bool_)


@pytest.mark.parametrize("value", [-0.1, 1.5, 255.0, np.nan])
def test_float_frames_outside_the_unit_range_are_refused(value: float) -> None:
    frame = np.full((4, 5), 0.5, np.float32)
    frame[2, 3] = value
    with pytest.raises(ValueError, match=r"float frames must hold values in \[0, 1\]"):
        check_frame(frame)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_frames_with_nan_or_inf_pixels_name_their_count_and_the_fix(dtype: type) -> None:
    """NaN and infinities are no scaling mistake: the error counts the pixels (any channel) and says how to replace
    them, where the scaling advice would mislead."""
    frame = np.full((4, 5, 4), 0.5, dtype)
    frame[0, 0, 0] = np.nan
    frame[1, 2] = np.inf
    frame[3, 4, 2] = -np.inf
    frame[2, 2, 3] = np.nan  # alpha, which the path drops: not counted
    with pytest.raises(ValueError, match=r"got min nan and max nan: 3 of 20 pixels are NaN or infinite; .*"
                                         r"np\.nan_to_num") as error:
        check_frame(frame)
    assert "divide 8-bit" not in str(error.value)


@pytest.mark.parametrize("value", [np.inf, -np.inf], ids=["+inf", "-inf"])
@pytest.mark.parametrize("shape", [(4, 5, 3), (4, 5)], ids=["colour", "gray"])
def test_a_float_frame_whose_only_bad_values_are_infinities_names_their_count(value: float,
                                                                             shape: tuple[int, ...]) -> None:
    """An infinity with no NaN leaves one end of the range finite (min 0.5, max inf): the error still counts the
    pixels and names np.nan_to_num, where dividing by 255 would not help."""
    frame = np.full(shape, 0.5, np.float32)
    frame[1, 2] = value
    frame[3, 0] = value
    with pytest.raises(ValueError, match=r": 2 of 20 pixels are NaN or infinite; .*np\.nan_to_num") as error:
        check_frame(frame)
    assert "divide 8-bit" not in str(error.value)


def test_scale_brings_every_dtype_to_the_unit_range() -> None:
    assert frame_scale(np.dtype(np.uint8)) * 255 == pytest.approx(1.0)
    assert frame_scale(np.dtype(np.uint16)) * 65535 == pytest.approx(1.0)
    assert frame_scale(np.dtype(np.float32)) == frame_scale(np.dtype(np.float64)) == 1.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_frames_may_reach_both_ends_of_the_unit_range(dtype: type) -> None:
    frame = np.zeros((4, 5), dtype)
    frame[1, 2] = 1.0
    assert check_frame(frame) is frame


def test_the_longest_side_accepted_is_max_frame_side() -> None:
    assert check_frame(np.zeros((1, MAX_FRAME_SIDE), np.uint8)).shape == (1, MAX_FRAME_SIDE)
    with pytest.raises(ValueError, match=f"sides up to {MAX_FRAME_SIDE} px"):
        check_frame(np.zeros((MAX_FRAME_SIDE + 1, 1), np.uint8))


def test_stream_applies_the_same_rules() -> None:
    assert check_stream_frame(np.full((3, 4), 0.25, np.float32)).dtype == np.float32
    assert check_stream_frame(np.zeros((3, 4, 4), np.uint16)).shape == (3, 4, 3)
    with pytest.raises(CorruptFrameError, match="int16 is not supported"):
        check_stream_frame(np.zeros((3, 4), np.int16))


def test_none_names_the_likely_cause(tmp_path: Path) -> None:
    import cv2

    frame = cv2.imread(str(tmp_path / "missing.png"))  # what a mistyped path gives
    with pytest.raises(ValueError, match=r"frame is None, not an image: cv2.imread returns None"):
        check_frame(frame)


def test_normalize_scales_uint8_per_channel() -> None:
    image = np.full((2, 3, 3), 255, np.uint8)
    out = normalize(image, (0.0, 0.5, 1.0), (1.0, 0.5, 0.25))
    assert out.dtype == np.float32 and out.shape == (3, 2, 3)
    assert out[:, 0, 0].tolist() == [1.0, 1.0, 0.0]
    assert normalize(np.zeros((2, 2, 1), np.uint8), [0], [1]).shape == (1, 2, 2)


@pytest.mark.parametrize("image", [np.full((2, 2), 65535, np.uint16), np.full((2, 2), 0.5, np.float32)])
def test_normalize_refuses_images_that_are_not_8_bit(image: np.ndarray) -> None:
    with pytest.raises(ValueError, match=f"normalize takes uint8 images \\(0..255\\), got dtype {image.dtype}"):
        normalize(image, (0.5,), (0.5,))


@pytest.mark.parametrize(("image", "mean", "std", "message"), [
    (np.zeros((2, 2, 3), np.uint8), (0.5,), (0.5,), r"mean must hold 3 finite number\(s\), .*got \(0.5,\)"),
    (np.zeros((2, 2), np.uint8), (0.5,), (0.5, 0.5, 0.5), r"std must hold 1 finite number\(s\)"),
    (np.zeros((2, 2), np.uint8), (float("nan"),), (0.5,), "mean must hold 1 finite number"),
    (np.zeros((2, 2), np.uint8), None, (0.5,), "mean must hold 1 finite number.*got None"),
    (np.zeros((2, 2), np.uint8), ("0.5",), (0.5,), "mean must hold 1 finite number"),
    (np.zeros((2, 2), np.uint8), (0.5,), (0.0,), r"std must be above 0 for every channel, got \(0.0,\)"),
    (None, (0.5,), (0.5,), "normalize takes an HxW or HxWxC uint8 image, got NoneType"),
    (np.zeros((2, 2, 2, 2), np.uint8), (0.5,), (0.5,), r"HxW or HxWxC uint8 image, got \(2, 2, 2, 2\)"),
])
def test_normalize_refuses_bad_input_by_name(image: object, mean: object, std: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        normalize(image, mean, std)  # type: ignore[arg-type]


def test_a_frame_of_the_other_byte_order_is_refused_with_the_conversion() -> None:
    swapped = np.zeros((2, 3), np.dtype(np.uint16).newbyteorder())
    with pytest.raises(ValueError, match=r"has the other byte order than this machine's; convert with "
                                         r"frame\.astype\(frame\.dtype\.newbyteorder\('='\)\)"):
        check_frame(swapped)


@pytest.mark.parametrize("shape", [(0, 4), (4, 0, 3), (0, 0)])
def test_an_empty_frame_is_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"frame is empty \(shape"):
        check_frame(np.zeros(shape, np.uint8))


class _DeviceFrame:
    """A frame in GPU memory as CuPy, torch (CUDA) and pycuda's GPUArray show it: only ``__cuda_array_interface__``
    (https://numba.readthedocs.io/en/stable/cuda/cuda_array_interface.html)."""

    def __init__(self) -> None:
        self.__cuda_array_interface__ = {"data": (1 << 32, False), "shape": (360, 480, 3), "typestr": "|u1",
                                         "strides": None, "version": 3}


def test_a_frame_in_gpu_memory_is_told_to_come_to_the_host() -> None:
    """segment takes host frames only (the GPU path uploads them itself); a device array was refused as 'got
    _DeviceFrame', which named neither what it is nor the copy that makes it a frame."""
    with pytest.raises(ValueError, match=r"in GPU memory; .*\.cpu\(\)\.numpy\(\).*cupy\.asnumpy"):
        check_frame(_DeviceFrame())
