"""StreamOptions: one checked, frozen settings object; Stream's keyword arguments are its fields."""

from __future__ import annotations

import dataclasses

import pytest
from stream_helpers import FakeSegmenter, frame_with_index

from unetrt.stream import Stream, StreamOptions
from unetrt.stream.cli import build_parser, stream_options


def test_options_object_drives_the_stream_and_keywords_override_it() -> None:
    frames = [frame_with_index(i) for i in range(6)]
    assert len(list(Stream(frames, FakeSegmenter(), None, StreamOptions(max_frames=2)))) == 2
    overridden = Stream(frames, FakeSegmenter(), None, StreamOptions(max_frames=2, alpha=0.25), max_frames=3)
    assert overridden.options.max_frames == 3 and overridden.options.alpha == 0.25
    assert len(list(overridden)) == 3


def test_options_are_frozen_and_normalised() -> None:
    options = StreamOptions(visualize="overlay, mask", legend=True)
    assert options.visualize == ("overlay", "mask") and options.legend == "outside"
    assert StreamOptions(legend=False).legend == "off"
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.max_fps = 3.0  # type: ignore[misc]


@pytest.mark.parametrize(("settings", "words"), [
    ({"alpha": -0.1}, "alpha"), ({"wait": -1}, "wait"), ({"max_reconnects": -1}, "max_reconnects"),
    ({"input_size": (0, 10)}, "input_size"), ({"output_fps": 0}, "output_fps"), ({"queue_size": 0}, "queue_size"),
    ({"input_flip": "sideways"}, "rotate-180"), ({"legend": "corner"}, "outside, inside, off"),
])
def test_bad_settings_name_the_setting(settings: dict[str, object], words: str) -> None:
    with pytest.raises(ValueError, match=words):
        StreamOptions(**settings)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [(100_000, 100_000), (8193, 10), (8000, 8000)])
def test_an_input_size_too_large_to_allocate_is_refused_up_front(size: tuple[int, int]) -> None:
    # It reached cv2.resize in the capture thread, whose OutOfMemoryError came out as a traceback.
    with pytest.raises(ValueError, match=r"input_size .* is too large"):
        StreamOptions(input_size=size)


@pytest.mark.parametrize(("settings", "words"), [
    ({"wait": float("nan")}, "wait must be >= 0 seconds"),
    ({"wait": float("inf")}, "wait must be >= 0 seconds"),
    ({"output_fps": float("inf")}, "output_fps must be positive"),
    ({"reconnect_delay": (0.5, float("inf"))}, "reconnect_delay must be"),
])
def test_times_that_would_wait_forever_are_refused(settings: dict[str, object], words: str) -> None:
    # --wait nan was taken as "wait forever".
    with pytest.raises(ValueError, match=words):
        StreamOptions(**settings)  # type: ignore[arg-type]


def test_more_workers_than_the_cores_can_use_is_one_error_before_any_model_opens(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # --workers 1000 opened segmenters until the machine ran out of memory.
    from unetrt.stream import workers

    monkeypatch.setattr(workers.cpu, "usable_cores", lambda: 2)
    with pytest.raises(ValueError, match=r"workers=9 is more than 8 \(4 per usable CPU core\)"):
        workers.open_segmenters("no-such-model.onnx", {}, 9)


def test_unknown_keyword_names_the_settings() -> None:
    with pytest.raises(ValueError, match=r"unknown stream setting .max_fsp.; settings: .*max_fps"):
        Stream([frame_with_index(0)], FakeSegmenter(), max_fsp=3)


def test_the_command_builds_the_options_once_from_its_flags() -> None:
    args = build_parser().parse_args(["sample", "--max-fps", "5", "--legend", "--input-width", "64",
                                      "--input-height", "48", "--input-flip", "rotate-180", "--threads", "1"])
    options = stream_options(args)
    assert (options.max_fps, options.legend, options.input_size, options.input_flip) == (5.0, "outside", (64, 48),
                                                                                          "rotate-180")
    assert options.segmenter_options["threads"] == 1 and options.overwrite is False
    assert stream_options(build_parser().parse_args(["sample"])).legend == "off"
    assert stream_options(build_parser().parse_args(["sample", "--legend", "inside"])).legend == "inside"
    assert stream_options(build_parser().parse_args(["sample", "--ignore-class", "sky"])).ignore_classes == ("sky",)
    assert stream_options(build_parser().parse_args(["sample"])).ignore_classes == ()
