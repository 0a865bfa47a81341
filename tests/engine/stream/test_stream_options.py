"""StreamOptions: one checked, frozen settings object; Stream's keyword arguments are its fields."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from stream_helpers import FakeSegmenter, count_video_frames, frame_with_index

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
    ({"open_timeout": 0}, "open_timeout must be a positive number"),
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


@pytest.mark.parametrize("given", [",", " ", ", ,"])
def test_an_ignore_class_naming_no_class_is_refused(given: str, capsys: pytest.CaptureFixture[str]) -> None:
    # It parsed as no class at all: every class stayed drawn while the user had asked to hide one.
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["sample", "--ignore-class", given])
    assert exit_info.value.code == 2
    assert f"--ignore-class: names no class, got {given!r}" in capsys.readouterr().err


def test_ignore_class_names_are_taken_without_the_spaces_around_them() -> None:
    # "sky, road" as typed after a comma: " road" names no class, and road would stay drawn.
    args = build_parser().parse_args(["sample", "--ignore-class", " sky, road "])
    assert stream_options(args).ignore_classes == ("sky", "road")


def test_a_fractional_loop_is_refused_rather_than_looping_forever() -> None:
    # loop=1.5 counted 1.5 -> 0.5 -> -0.5 and never reached 0: the stream replayed its source for ever.
    with pytest.raises(ValueError, match=r"loop must be .* got 1\.5"):
        Stream(lambda: [frame_with_index(0)], FakeSegmenter(), loop=1.5)
    with pytest.raises(ValueError, match=r"loop must be .* got True"):
        StreamOptions(loop=True)


@pytest.mark.parametrize(("settings", "words"), [
    ({"input_size": (64.5, 48.5)}, r"input_size must be .* got \(64\.5, 48\.5\)"),
    ({"input_size": (True, True)}, r"input_size must be .* got \(True, True\)"),
    ({"input_size": 64}, "input_size must be .* got 64"),
    ({"input_size": "64x48"}, "input_size must be .* got '64x48'"),
    ({"alpha": "0.5"}, "alpha must be .* got '0.5'"), ({"alpha": None}, "alpha must be .* got None"),
    ({"max_fps": "10"}, "max_fps must be .* got '10'"),
    ({"loop": "2"}, "loop must be .* got '2'"), ({"loop": None}, "loop must be .* got None"),
    ({"max_frames": "3"}, "max_frames must be .* got '3'"), ({"max_frames": 2.5}, r"max_frames must be .* got 2\.5"),
    ({"queue_size": None}, "queue_size must be .* got None"), ({"queue_size": 2.5}, r"queue_size must be .* got 2\.5"),
    ({"wait": "1"}, "wait must be .* got '1'"),
    ({"output_fps": "x"}, "output_fps must be .* got 'x'"),
    ({"max_reconnects": "x"}, "max_reconnects must be .* got 'x'"),
    ({"max_reconnects": 1.5}, r"max_reconnects must be .* got 1\.5"),
    ({"visualize": None}, "visualize must be .* got None"), ({"visualize": 3}, "visualize must be .* got 3"),
    ({"ignore_classes": None}, "ignore_classes must be .* got None"),
    ({"ignore_classes": 3}, "ignore_classes must be .* got 3"),
    ({"ignore_classes": "road"}, r"ignore_classes must be a list .*\['road'\].* got 'road'"),
    ({"ignore_classes": ["road", 3]}, r"ignore_classes must be .* got \['road', 3\]"),
    ({"reconnect_delay": 1.0}, r"reconnect_delay must be .* got 1\.0"),
    ({"reconnect_delay": (1, 2, 3)}, r"reconnect_delay must be .* got \(1, 2, 3\)"),
    ({"reconnect_delay": ("1", "2")}, r"reconnect_delay must be .* got \('1', '2'\)"),
    ({"open_timeout": -1}, "open_timeout must be .* got -1"),
    ({"open_timeout": float("nan")}, "open_timeout must be .* got nan"),
    ({"open_timeout": "x"}, "open_timeout must be .* got 'x'"),
    ({"workers": 1.5}, r"workers must be .* got 1\.5"), ({"workers": "2"}, "workers must be .* got '2'"),
    ({"workers": 0}, "workers must be .* got 0"),
    ({"segmenter_options": None}, "segmenter_options must be .* got None"),
    ({"segmenter_options": "x"}, "segmenter_options must be .* got 'x'"),
    ({"topic": 3}, "topic must be .* got 3"),
    ({"draw_stats": "no"}, "draw_stats must be .* got 'no'"), ({"live": "no"}, "live must be .* got 'no'"),
    ({"overwrite": 1}, "overwrite must be .* got 1"), ({"video_library_logs": None}, "video_library_logs must be"),
    ({"input_flip": ["none"]}, r"unknown input flip \['none'\]; use one of"),
])
def test_a_setting_of_the_wrong_type_is_one_error_naming_it_and_the_value(settings: dict[str, object],
                                                                          words: str) -> None:
    # These failed late (a cv2.error once frames arrived, a TypeError from a comparison) or were taken as they came.
    with pytest.raises(ValueError, match=words):
        StreamOptions(**settings)  # type: ignore[arg-type]


def test_every_kind_of_valid_setting_is_still_accepted() -> None:
    options = StreamOptions(live=False, visualize=["mask", "overlay"], alpha=1, draw_stats=False, legend="inside",
                            ignore_classes=["sky", "road"], input_size=[64, 48], max_fps=15, loop=-1, max_frames=3,
                            output_fps=12.5, queue_size=1, reconnect_delay=[0, 2], max_reconnects=0, wait=0,
                            open_timeout=2, segmenter_options={"threads": 1}, workers=2, overwrite=False,
                            video_library_logs=True, topic="/camera/image")
    assert options.ignore_classes == ("sky", "road") and options.visualize == ("mask", "overlay")
    assert options.input_size == (64, 48) and options.reconnect_delay == (0, 2)
    assert StreamOptions(input_size=(np.int64(64), np.int64(48)), loop=np.int64(2), alpha=np.float32(0.5)).loop == 2


def test_every_flag_of_the_command_reaches_the_options() -> None:
    # Each flag is given a value other than its default, so one dropped on the way shows up as the default.
    args = build_parser().parse_args([
        "sample", "--no-overlay-stats", "--alpha", "0.25", "--loop", "3", "--max-frames", "7", "--max-reconnects", "4",
        "--wait", "1.5", "--open-timeout", "2.5", "--workers", "2", "--topic", "/cam", "--verbose", "--overwrite",
        "--backend", "onnxruntime", "--device", "cpu", "--precision", "fp16", "--no-build", "--threads", "3",
        "--tile", "64", "--overlap", "8", "--blend", "linear", "--size", "96x64"])
    options = stream_options(args)
    assert (options.draw_stats, options.alpha, options.loop, options.max_frames, options.max_reconnects,
            options.wait, options.open_timeout, options.workers, options.topic, options.video_library_logs,
            options.overwrite) == (False, 0.25, 3, 7, 4, 1.5, 2.5, 2, "/cam", True, True)
    assert dict(options.segmenter_options) == {"backend": "onnxruntime", "device": "cpu", "precision": "fp16",
                                               "build": False, "threads": 3, "tile": 64, "overlap": 8,
                                               "blend": "linear", "working_size": (96, 64)}


def test_the_command_defaults_are_the_ones_its_help_states() -> None:
    options = stream_options(build_parser().parse_args(["sample"]))
    assert (options.draw_stats, options.alpha, options.loop, options.max_frames, options.max_reconnects,
            options.wait, options.open_timeout, options.workers, options.topic) == (True, 0.5, 0, None, None, None,
                                                                                     10.0, None, None)
    # Without --threads, --tile, ... the Segmenter's own defaults apply: those keys are left out.
    assert dict(options.segmenter_options) == {"backend": "auto", "device": "auto", "precision": "auto",
                                               "build": True}


def test_the_largest_input_size_is_accepted() -> None:
    # 8192 x 4096 is exactly MAX_WORKING_SIDE a side and MAX_WORKING_PIXELS (1 << 25) in all: the limits are inclusive.
    assert StreamOptions(input_size=(8192, 4096)).input_size == (8192, 4096)


def test_the_python_api_replaces_an_existing_output_unless_told_not_to(tmp_path: Path) -> None:
    # The documented default (overwrite=True) differs from the command's --overwrite, which is off by default.
    out = tmp_path / "out.avi"
    out.write_bytes(b"an earlier video")
    assert Stream([frame_with_index(0)], FakeSegmenter(), str(out)).run()["written"] == 1
    assert count_video_frames(out) == 1
    with pytest.raises(ValueError, match="exists; add --overwrite"):
        Stream([frame_with_index(0)], FakeSegmenter(), str(out), overwrite=False)
