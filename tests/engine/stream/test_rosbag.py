"""ROS 2 bags in and out: every message segmented once, headers kept, masks equal the Segmenter's."""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

pytest.importorskip("rosbags")

from bag_helpers import (
    FRAME_ID,
    TYPESTORE,
    compressed_message,
    image_message,
    log_time_of,
    mask_of,
    read_topic,
    stamp_of,
    write_bag,
)
from stream_helpers import FakeSegmenter, frame_with_index, write_video

from unetrt.bundled import bundled_model_names
from unetrt.segmenter import Segmenter
from unetrt.stream import Stream, rosbag
from unetrt.stream.cli import main
from unetrt.stream.rosbag import MASK_TOPIC, OVERLAY_TOPIC, RosbagSink, RosbagSource, decode_image
from unetrt.stream.sources import CorruptFrameError, SourceError
from unetrt.stream.uri import parse_sink, parse_source

ENGINE = ["--backend", "onnxruntime", "--threads", "1", "--workers", "1"]
RAW_ENCODINGS = ("bgr8", "rgb8", "mono8", "mono16")


def synthetic_frames(count: int, size: tuple[int, int] = (64, 48)) -> list[np.ndarray]:
    """BGR frames with a bright square moving over noise, so the tiny model's masks differ between frames."""
    rng = np.random.default_rng(7)
    frames = []
    for index in range(count):
        frame = rng.integers(0, 120, (size[1], size[0], 3), dtype=np.uint8)
        x = 4 * index % (size[0] - 16)
        frame[8:24, x:x + 16] = (40 * index % 256, 200, 255)
        frames.append(frame)
    return frames


def as_decoded(frame: np.ndarray, encoding: str) -> np.ndarray:
    """The frame as the bag source hands it over for ``encoding``."""
    if encoding in ("mono8", "mono16"):
        gray = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        return cv2.convertScaleAbs(gray.astype(np.uint16) * 257, alpha=1 / 256) if encoding == "mono16" else gray
    return frame


def encoded(frame: np.ndarray, encoding: str, index: int) -> Any:
    if encoding == "mono16":
        gray16 = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257
        return _mono16_message(gray16, index)
    pixels = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if encoding == "mono8" else frame
    return image_message(pixels, encoding, index)


def _mono16_message(gray16: np.ndarray, index: int) -> Any:
    message = image_message(np.zeros(gray16.shape, np.uint8), "mono8", index)
    big_endian = gray16.astype(">u2").view(np.uint8).reshape(gray16.shape[0], -1)
    message.encoding, message.is_bigendian, message.step = "mono16", 1, big_endian.shape[1]
    message.data = big_endian.ravel()
    return message


def check_output(out: Path, expected_frames: list[np.ndarray], model: Path | str) -> None:
    """One mask and one overlay per input message, with its stamp, frame_id and log time; masks as Segmenter's."""
    masks, overlays = read_topic(out, MASK_TOPIC), read_topic(out, OVERLAY_TOPIC)
    assert len(masks) == len(overlays) == len(expected_frames)
    with Segmenter(model, backend="onnxruntime", threads=1) as segmenter:
        for index, ((log_time, mask), (overlay_time, overlay), frame) in enumerate(
                zip(masks, overlays, expected_frames)):
            assert log_time == overlay_time == log_time_of(index)
            for message in (mask, overlay):
                assert (message.header.stamp.sec, message.header.stamp.nanosec) == stamp_of(index)
                assert message.header.frame_id == FRAME_ID
            np.testing.assert_array_equal(mask_of(mask), segmenter.segment(frame).mask)
            assert overlay.format == "jpeg"
            picture = cv2.imdecode(np.asarray(overlay.data, np.uint8), cv2.IMREAD_COLOR)
            assert picture.shape[:2] == frame.shape[:2]


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_raw_images_of_every_encoding_are_segmented_once_each(storage: str, tmp_path: Path,
                                                              tiny_model_files: dict[str, Path]) -> None:
    frames = synthetic_frames(8)
    encodings = [RAW_ENCODINGS[i % len(RAW_ENCODINGS)] for i in range(len(frames))]
    messages = [encoded(frame, encoding, i) for i, (frame, encoding) in enumerate(zip(frames, encodings))]
    # A second image topic and a non-image topic: --topic picks, the others are not read.
    bag = write_bag(tmp_path / ("in.mcap" if storage == "mcap" else "in_bag"), {
        "/camera/image_raw": messages,
        "/camera/compressed": [compressed_message(frame, i) for i, frame in enumerate(frames[:3])],
        "/status": [TYPESTORE.types["std_msgs/msg/String"](data="ok")],
    }, storage)
    out = tmp_path / "out.mcap"
    model = tiny_model_files["onnx"]
    assert main([str(bag), str(out), "--topic", "/camera/image_raw", "--model", str(model), *ENGINE]) == 0
    check_output(out, [as_decoded(f, e) for f, e in zip(frames, encodings)], model)


def test_compressed_images_and_the_only_image_topic_is_picked(tmp_path: Path,
                                                              tiny_model_files: dict[str, Path]) -> None:
    frames = synthetic_frames(5)
    bag = write_bag(tmp_path / "in_bag", {
        "/camera/compressed": [compressed_message(frame, i) for i, frame in enumerate(frames)],
        "/status": [TYPESTORE.types["std_msgs/msg/String"](data="ok")],
    }, "mcap")
    out = tmp_path / "nested" / "out.mcap"
    assert main([str(bag), str(out), "--model", str(tiny_model_files["onnx"]), *ENGINE]) == 0
    check_output(out, frames, tiny_model_files["onnx"])


@pytest.mark.data
@pytest.mark.skipif("camvid" not in bundled_model_names(), reason="the bundled camvid model is not in this checkout")
def test_camvid_frames_through_an_mcap_bag_and_a_sqlite_rosbag2(tmp_path: Path, shared_data: Path) -> None:
    files = sorted((shared_data / "camvid" / "val").glob("*.png"))[:4]
    frames = [cv2.imread(str(path), cv2.IMREAD_COLOR) for path in files]
    assert len(frames) == 4 and all(frame is not None for frame in frames)
    jpegs = [compressed_message(frame, i, ".jpg") for i, frame in enumerate(frames)]
    bags = {
        "mcap": (write_bag(tmp_path / "camvid.mcap", {"/camera/image_raw": [
            image_message(frame, "bgr8", i) for i, frame in enumerate(frames)]}, "mcap"), frames),
        "sqlite3": (write_bag(tmp_path / "camvid_bag", {"/camera/image_raw/compressed": jpegs}, "sqlite3"),
                    [cv2.imdecode(np.asarray(m.data), cv2.IMREAD_COLOR) for m in jpegs]),
    }
    for storage, (bag, expected) in bags.items():
        out = tmp_path / f"out_{storage}.mcap"
        assert main([str(bag), str(out), "--model", "camvid", *ENGINE]) == 0
        check_output(out, expected, "camvid")
        # The bundled model finds the road in these road scenes: the masks are real segmentations.
        road = mask_of(read_topic(out, MASK_TOPIC)[0][1]) == 3
        assert road.mean() > 0.1


@pytest.fixture
def image_bag(tmp_path: Path) -> Path:
    return write_bag(tmp_path / "in.mcap", {
        "/camera/image_raw": [image_message(f, "bgr8", i) for i, f in enumerate(synthetic_frames(3))]}, "mcap")


def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:"), err
    return err[0]


def test_bag_without_image_topic_unknown_topic_and_truncated_bag_exit_2(
        tmp_path: Path, image_bag: Path, tiny_model_files: dict[str, Path],
        capsys: pytest.CaptureFixture[str]) -> None:
    model = ["--model", str(tiny_model_files["onnx"])]
    no_images = write_bag(tmp_path / "status.mcap", {"/status": [TYPESTORE.types["std_msgs/msg/String"](data="a")]},
                          "mcap")
    assert main([str(no_images), str(tmp_path / "a.mcap"), *model]) == 2
    line = _one_line_error(capsys)
    assert "no image topic" in line and "/status (std_msgs/msg/String)" in line
    assert main([str(image_bag), str(tmp_path / "b.mcap"), "--topic", "/camera/depth", *model]) == 2
    line = _one_line_error(capsys)
    assert "'/camera/depth' is not in" in line and "/camera/image_raw" in line
    data = image_bag.read_bytes()
    truncated = tmp_path / "cut.mcap"
    truncated.write_bytes(data[:len(data) * 2 // 3])
    assert main([str(truncated), str(tmp_path / "c.mcap"), *model]) == 2
    assert "truncated" in _one_line_error(capsys)
    sqlite_bag = write_bag(tmp_path / "sq_bag", {"/camera/image_raw": [
        image_message(f, "bgr8", i) for i, f in enumerate(synthetic_frames(3))]}, "sqlite3")
    storage = next(sqlite_bag.glob("*.db3"))
    storage.write_bytes(storage.read_bytes()[:storage.stat().st_size // 2])
    assert main([str(sqlite_bag), str(tmp_path / "d.mcap"), *model]) == 2
    assert "truncated" in _one_line_error(capsys)
    assert not any(tmp_path.glob("[abcd].mcap")) and not any(tmp_path.glob(".unetrt-bag-*"))


@pytest.mark.parametrize(("topics", "argv", "words"), [
    ({"/a": "image", "/b": "compressed"}, [], "several image topics: /a, /b; choose one with --topic"),
    ({"/a": "image", "/status": "string"}, ["--topic", "/status"], "carries std_msgs/msg/String, not images"),
])
def test_ambiguous_or_wrong_topic_exits_2(topics: dict[str, str], argv: list[str], words: str, tmp_path: Path,
                                         tiny_model_files: dict[str, Path],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    frame = synthetic_frames(1)[0]
    makers = {"image": lambda: image_message(frame, "bgr8", 0), "compressed": lambda: compressed_message(frame, 0),
              "string": lambda: TYPESTORE.types["std_msgs/msg/String"](data="a")}
    bag = write_bag(tmp_path / "in.mcap", {topic: [makers[kind]()] for topic, kind in topics.items()}, "mcap")
    assert main([str(bag), str(tmp_path / "out.mcap"), *argv, "--model", str(tiny_model_files["onnx"])]) == 2
    assert words in _one_line_error(capsys)


def test_topic_on_a_video_and_unsupported_encoding_exit_2(tmp_path: Path, tiny_model_files: dict[str, Path],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    model = ["--model", str(tiny_model_files["onnx"]), *ENGINE]
    video = write_video(tmp_path / "in.mp4", 2)
    assert main([str(video), str(tmp_path / "out.mcap"), "--topic", "/camera/image_raw", *model]) == 2
    assert "is not one (a rosbag2 folder, .mcap or .db3)" in _one_line_error(capsys)
    message = image_message(synthetic_frames(1)[0], "bgr8", 0)
    message.encoding = "yuv422"
    bag = write_bag(tmp_path / "yuv.mcap", {"/camera/image_raw": [message]}, "mcap")
    assert main([str(bag), str(tmp_path / "yuv_out.mcap"), *model]) == 2
    assert "image encoding 'yuv422' is not supported" in _one_line_error(capsys)


def test_without_rosbags_one_line_says_how_to_install(image_bag: Path, monkeypatch: pytest.MonkeyPatch,
                                                      tiny_model_files: dict[str, Path],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "rosbags.rosbag2", None)  # makes the import fail as when not installed
    assert main([str(image_bag), "--headless", "--model", str(tiny_model_files["onnx"])]) == 2
    assert "pip install 'unetrt[ros]'" in _one_line_error(capsys)


def test_python_api_carries_headers_to_results_and_bag(image_bag: Path, tmp_path: Path) -> None:
    segmenter = FakeSegmenter()
    out = tmp_path / "out.mcap"
    with Stream(str(image_bag), segmenter, str(out), topic="/camera/image_raw") as stream:
        results = list(stream)
    assert [(r.header.stamp_sec, r.header.stamp_nanosec) for r in results if r.header] == [stamp_of(i)
                                                                                          for i in range(3)]
    assert [r.header.log_time_ns for r in results if r.header] == [log_time_of(i) for i in range(3)]
    assert {r.header.frame_id for r in results if r.header} == {FRAME_ID}
    masks = read_topic(out, MASK_TOPIC)
    assert [log_time for log_time, _ in masks] == [log_time_of(i) for i in range(3)]
    for (_, message), result in zip(masks, results):
        np.testing.assert_array_equal(mask_of(message), result.mask)


def test_a_looped_bag_into_a_bag_keeps_its_stamps_increasing(image_bag: Path, tmp_path: Path) -> None:
    # --loop 2 wrote the bag's three stamps three times over: every replay went back to the first stamp, and ROS
    # tools (rosbag2 players, tf buffers) refuse stamps that go back. Each replay continues a frame interval on.
    out = tmp_path / "out.mcap"
    with Stream(str(image_bag), FakeSegmenter(), str(out), loop=2) as stream:
        results = list(stream)
    period = 100_000_000  # the bag's 10 Hz
    span = 2 * period + period  # three frames: two intervals, then one more to the replay's first
    expected_stamps = [sec * 10**9 + nanosec + replay * span for replay in range(3)
                       for sec, nanosec in (stamp_of(i) for i in range(3))]
    assert [r.header.stamp_sec * 10**9 + r.header.stamp_nanosec for r in results if r.header] == expected_stamps
    assert [r.header.log_time_ns for r in results if r.header] == [stamp + 5_000_000 for stamp in expected_stamps]
    masks = read_topic(out, MASK_TOPIC)
    assert [message.header.stamp.sec * 10**9 + message.header.stamp.nanosec for _, message in masks] == \
        expected_stamps
    assert [log_time for log_time, _ in masks] == [stamp + 5_000_000 for stamp in expected_stamps]


def test_a_one_frame_bag_replays_a_second_apart(tmp_path: Path) -> None:
    # A bag of one message has no frame rate to continue by: each replay is stamped a second after the last.
    bag = write_bag(tmp_path / "one.mcap", {"/camera/image_raw": [image_message(synthetic_frames(1)[0], "bgr8", 0)]},
                    "mcap")
    with Stream(str(bag), FakeSegmenter(), loop=2) as stream:
        stamps = [(r.header.stamp_sec, r.header.stamp_nanosec) for r in stream if r.header]
    sec, nanosec = stamp_of(0)
    assert stamps == [(sec + replay, nanosec) for replay in range(3)]


def test_video_to_bag_stamps_capture_times(tmp_path: Path) -> None:
    out = tmp_path / "out.mcap"
    summary = Stream(str(write_video(tmp_path / "in.mp4", 4)), FakeSegmenter(), str(out)).run()
    assert summary["written"] == 4
    masks = read_topic(out, MASK_TOPIC)
    stamps = [message.header.stamp.sec * 10**9 + message.header.stamp.nanosec for _, message in masks]
    assert len(masks) == 4 and stamps == sorted(stamps) and stamps[0] > 1_600_000_000 * 10**9
    assert [log_time for log_time, _ in masks] == stamps and masks[0][1].header.frame_id == ""


def test_bag_sink_without_results_writes_an_empty_bag_and_replaces_an_old_file(tmp_path: Path) -> None:
    out = tmp_path / "out.mcap"
    out.write_bytes(b"old")
    sink = RosbagSink(out)
    sink.close()
    sink.close()
    assert read_topic(out, MASK_TOPIC) == [] and not any(tmp_path.glob(".unetrt-bag-*"))


def test_a_bag_that_cannot_be_moved_into_place_leaves_no_claimed_file(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # Without overwrite the sink creates the target empty before moving the bag over it; a move that fails (a full
    # disk, another file system) must not leave that empty .mcap behind, which the next run refuses as existing.
    out = tmp_path / "out.mcap"
    real_replace = os.replace

    def no_room_at_the_target(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
        if Path(target) == out:
            raise OSError(errno.ENOSPC, "No space left on device", str(target))
        real_replace(source, target)

    monkeypatch.setattr("unetrt.stream.rosbag.os.replace", no_room_at_the_target)
    sink = RosbagSink(out, overwrite=False)
    with pytest.raises(OSError, match="No space left"):
        sink.close()
    assert sorted(tmp_path.iterdir()) == []


def test_uris_name_bags(image_bag: Path, tmp_path: Path) -> None:
    folder = write_bag(tmp_path / "folder_bag", {"/c": [image_message(synthetic_frames(1)[0], "bgr8", 0)]},
                       "sqlite3")
    assert parse_source(str(image_bag)).kind == parse_source(str(folder)).kind == "rosbag"
    assert parse_source(str(next(folder.glob("*.db3")))).kind == "rosbag"
    assert parse_source(str(tmp_path)).kind == "images"
    assert parse_sink("out/seg.mcap").kind == "rosbag"
    source = RosbagSource(folder)
    assert (source.topic, source.frame_count, source.live) == ("/c", 1, False)


def test_a_bag_that_breaks_off_while_read_is_a_source_error(image_bag: Path) -> None:
    from rosbags.rosbag2 import ReaderError

    source = RosbagSource(image_bag)
    source.open()
    assert source._messages is not None
    first = next(source._messages)

    def breaking_off() -> Iterator[tuple[Any, int, bytes]]:
        yield first
        raise ReaderError("chunk CRC mismatch")  # what a damaged chunk in the middle of a bag gives

    source._messages = breaking_off()
    assert source.read() is not None
    with pytest.raises(SourceError, match=r"breaks off after 1 messages of /camera/image_raw \(chunk CRC mismatch\); "
                                          r"is it truncated\?"):
        source.read()
    source.close()


def test_bare_db3_is_read_and_a_bag_output_path_is_checked(tmp_path: Path, tiny_model_files: dict[str, Path],
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    folder = write_bag(tmp_path / "sq_bag", {"/c": [image_message(f, "mono8", i) for i, f in enumerate(
        [cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) for frame in synthetic_frames(2)])]}, "sqlite3")
    source = RosbagSource(next(folder.glob("*.db3")))
    source.open()
    assert [source.read() is not None for _ in range(3)] == [True, True, False]
    source.close()
    (tmp_path / "file").write_text("")
    assert main([str(folder), str(tmp_path / "file" / "out.mcap"), "--model", str(tiny_model_files["onnx"])]) == 2
    assert "is a file, not a folder" in _one_line_error(capsys)


def test_the_bag_rate_counts_the_intervals_between_messages(image_bag: Path) -> None:
    # 3 messages logged 100 ms apart (log_time_of): 2 intervals in 0.2 s is 10 frames per second, the rate an
    # output video of this bag is written at.
    assert RosbagSource(image_bag).fps == pytest.approx(10.0, rel=1e-6)


def test_an_image_whose_rows_are_shorter_than_its_pixels_is_a_corrupt_frame() -> None:
    # Skipped and counted like any frame that does not decode, not a crash of the whole stream.
    message = image_message(synthetic_frames(1)[0], "bgr8", 0)
    message.step = message.width * 3 - 1
    with pytest.raises(CorruptFrameError, match="image with step"):
        decode_image(message, "sensor_msgs/msg/Image")


def test_every_bag_reader_opened_is_closed(image_bag: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rosbags.rosbag2 import Reader

    opened: list[Reader] = []
    closed: list[Reader] = []
    real_open, real_close = Reader.open, Reader.close

    def recording_open(reader: Reader) -> None:
        opened.append(reader)
        real_open(reader)

    def recording_close(reader: Reader) -> None:
        closed.append(reader)
        real_close(reader)

    monkeypatch.setattr(Reader, "open", recording_open)
    monkeypatch.setattr(Reader, "close", recording_close)
    source = RosbagSource(image_bag)  # the topic is picked from a reader of its own
    source.open()
    assert source.read() is not None
    source.close()
    assert len(opened) == 2 and closed == opened


def test_unfinished_bag_folders_of_killed_runs_are_removed_by_the_next_in_one_line(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # A run killed by SIGKILL left its .unetrt-bag-* folder (a half-written bag, possibly gigabytes) beside the output
    # for ever. The next bag written there removes those of processes that are gone; a running one's, another
    # machine's on shared storage, and any other folder stay.
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host = socket.gethostname()
    out = tmp_path / "out"
    stale = out / f".unetrt-bag-{gone.pid}@{host}-k2j4x9qa"
    running = out / f".unetrt-bag-{os.getpid()}@{host}-abcd1234"
    elsewhere = out / f".unetrt-bag-{gone.pid}@not-{host}-abcd1234"
    mine = out / ".unetrt-bag-notes"
    for folder in (stale, running, elsewhere, mine):
        (folder / "bag").mkdir(parents=True)
        (folder / "bag" / "bag.mcap").write_bytes(b"half a bag")
    with caplog.at_level(logging.WARNING, logger="unetrt.stream.rosbag"):
        assert Stream(str(write_video(tmp_path / "in.mp4", 2)), FakeSegmenter(), str(out / "s.mcap")).run()[
            "written"] == 2
    assert [record.getMessage() for record in caplog.records] == [
        f"removed 1 unfinished bag folder of runs that were killed ({stale})"]
    assert sorted(path.name for path in out.iterdir()) == sorted(["s.mcap", running.name, elsewhere.name, mine.name])
    assert len(read_topic(out / "s.mcap", MASK_TOPIC)) == 2


def test_a_bag_sink_closed_again_keeps_what_it_wrote(tmp_path: Path) -> None:
    # The stream closes its output; a caller's own close (a finally, a with) must not replace the bag by an empty one.
    out = tmp_path / "out.mcap"
    sink = RosbagSink(out)
    assert Stream([frame_with_index(i) for i in range(2)], FakeSegmenter(), sink).run()["written"] == 2
    sink.close()
    assert len(read_topic(out, MASK_TOPIC)) == 2


def test_the_bag_rate_is_the_image_topics_not_the_whole_bags(tmp_path: Path) -> None:
    # A recording of every topic (ros2 bag record -a) whose other topics run on for 2 s after the camera stopped:
    # the rate was the image count over the whole bag's duration (2 frames per second, not 10), and a video of it
    # was written at that rate, 5 times too slow.
    from rosbags.rosbag2 import StoragePlugin, Writer

    folder = tmp_path / "recording"
    writer = Writer(folder, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    camera = writer.add_connection("/camera/image_raw", "sensor_msgs/msg/Image", typestore=TYPESTORE)
    status = writer.add_connection("/status", "std_msgs/msg/String", typestore=TYPESTORE)
    for index, frame in enumerate(synthetic_frames(3)):
        writer.write(camera, log_time_of(index), TYPESTORE.serialize_cdr(image_message(frame, "bgr8", index),
                                                                        "sensor_msgs/msg/Image"))
    text = TYPESTORE.serialize_cdr(TYPESTORE.types["std_msgs/msg/String"](data="ok"), "std_msgs/msg/String")
    for tenth in range(21):
        writer.write(status, log_time_of(2) + tenth * 100_000_000, text)
    writer.close()
    assert RosbagSource(folder).fps == pytest.approx(10.0, rel=1e-6)


def test_an_unsupported_encoding_is_refused_before_the_model_loads(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    # ros.md promises the one line before the model loads; it came at the first frame, after the model had loaded
    # (minutes on a Jetson's first TensorRT build), and left an empty output bag that the next run refused as
    # existing. A model that does not load shows which came first.
    model = tmp_path / "broken.onnx"
    model.write_bytes(b"not onnx")
    messages = [image_message(frame, "bgr8", index) for index, frame in enumerate(synthetic_frames(2))]
    for message in messages:
        message.encoding = "yuv422"  # usb_cam's default
    bag = write_bag(tmp_path / "yuv.mcap", {"/camera/image_raw": messages}, "mcap")
    assert main([str(bag), str(tmp_path / "out.mcap"), "--model", str(model)]) == 2
    line = _one_line_error(capsys)
    assert "image encoding 'yuv422' is not supported" in line and "/camera/image_raw" in line, line
    assert not (tmp_path / "out.mcap").exists()


def test_an_input_without_a_decodable_frame_leaves_no_output_bag(tmp_path: Path, tiny_model_files: dict[str, Path],
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    # Exit 2 ("has no frame that decodes") left an empty out.mcap, where a video output leaves no file, and the run
    # after the input was fixed stopped at "output 'out.mcap' exists; add --overwrite".
    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / "a.png").write_bytes(b"not a png")
    out = tmp_path / "out.mcap"
    model = ["--model", str(tiny_model_files["onnx"]), *ENGINE]
    assert main([str(frames), str(out), *model]) == 2
    assert "has no frame that decodes" in _one_line_error(capsys)
    assert not out.exists() and not any(tmp_path.glob(".unetrt-bag-*"))
    cv2.imwrite(str(frames / "a.png"), synthetic_frames(1)[0])
    assert main([str(frames), str(out), *model]) == 0
    assert len(read_topic(out, MASK_TOPIC)) == 1


@pytest.mark.parametrize(("settings", "flags"), [({"input_flip": "rotate-180"}, "--input-flip"),
                                                  ({"input_size": (32, 24)}, "--input-width/--input-height")])
def test_masks_that_do_not_line_up_with_the_camera_are_warned_of(settings: dict[str, Any], flags: str, image_bag: Path,
                                                                 tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    # ros.md: the masks carry the camera's stamp and frame_id "so [they] line up with the camera"; turned or resized
    # at capture they silently did not, pixel for pixel, and a robot projecting them with the camera_info was off.
    with caplog.at_level("WARNING", logger="unetrt.stream.pipeline"):
        Stream(str(image_bag), FakeSegmenter(), str(tmp_path / "plain.mcap")).close()
        assert not caplog.records
        Stream(str(image_bag), FakeSegmenter(), str(tmp_path / "out.mcap"), **settings).close()
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 1 and f"as {flags} changed them" in lines[0] and "/camera/image_raw" in lines[0], lines
    assert "do not line up pixel for pixel with the camera" in lines[0]


def test_the_bag_rate_averages_the_jitter_of_the_first_messages(tmp_path: Path) -> None:
    # A camera's messages are logged late by a varying amount: the first interval alone (150 ms here) gave 6.7
    # frames per second for a 10 Hz camera, and an output video of it played too slowly.
    from rosbags.rosbag2 import StoragePlugin, Writer

    folder = tmp_path / "jittery"
    writer = Writer(folder, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    camera = writer.add_connection("/camera/image_raw", "sensor_msgs/msg/Image", typestore=TYPESTORE)
    for index, (frame, late_ms) in enumerate(zip(synthetic_frames(5), (0, 50, 0, 0, 0), strict=True)):
        writer.write(camera, log_time_of(index) + late_ms * 1_000_000,
                     TYPESTORE.serialize_cdr(image_message(frame, "bgr8", index), "sensor_msgs/msg/Image"))
    writer.close()
    assert RosbagSource(folder).fps == pytest.approx(10.0, rel=1e-6)


def test_an_encoding_in_upper_case_is_read_as_the_frames_are(tmp_path: Path) -> None:
    # The frames' decoder reads encodings whatever their case (a driver that writes BGR8); the check made when the
    # topic is picked must not refuse what the decoder then reads.
    messages = [image_message(frame, "bgr8", index) for index, frame in enumerate(synthetic_frames(2))]
    for message in messages:
        message.encoding = "BGR8"
    source = RosbagSource(write_bag(tmp_path / "upper.mcap", {"/camera/image_raw": messages}, "mcap"))
    source.open()
    assert source.read() is not None
    source.close()


def test_a_bag_turned_at_capture_into_a_video_is_not_warned_of(image_bag: Path, tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    # The warning is about masks written back to a bag under the camera's stamps: a video of the turned frames
    # (unet-stream rec.mcap out.mp4 --input-flip rotate-180) is what was asked, and nothing in it claims otherwise.
    with caplog.at_level("WARNING", logger="unetrt.stream.pipeline"):
        Stream(str(image_bag), FakeSegmenter(), str(tmp_path / "out.mp4"), input_flip="rotate-180").close()
    assert not caplog.records


def test_replayed_log_times_move_past_the_last_pass_when_they_span_more_than_the_stamps(tmp_path: Path) -> None:
    # A camera whose stamps stand still (a driver stamping with a frozen clock) still logs at 10 Hz: the replay must
    # move past the longer of the two spans, or its log times go back into the last pass's.
    frames = synthetic_frames(3)
    bag = write_bag(tmp_path / "frozen.mcap",
                    {"/camera/image_raw": [image_message(frame, "bgr8", 0) for frame in frames]}, "mcap")
    with Stream(str(bag), FakeSegmenter(), loop=1) as stream:
        headers = [r.header for r in stream if r.header]
    log_times = [header.log_time_ns for header in headers]
    stamps = [header.stamp_sec * 10**9 + header.stamp_nanosec for header in headers]
    assert log_times == [log_time_of(i) + replay * 300_000_000 for replay in range(2) for i in range(3)]
    assert stamps == [stamps[0]] * 3 + [stamps[0] + 300_000_000] * 3


def test_a_process_of_another_user_is_running_not_gone(monkeypatch: pytest.MonkeyPatch) -> None:
    # os.kill(pid, 0) on another user's process fails with EPERM: it runs, and its bag folder must stay.
    def not_permitted(pid: int, sig: int) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(rosbag.os, "kill", not_permitted)
    assert not rosbag._process_is_gone(12345)


def test_the_folder_of_a_bag_run_killed_while_writing_is_removed_by_the_next(tmp_path: Path) -> None:
    # A real SIGKILL in the middle of a bag: the folder it leaves must be one the next run knows for a killed run's.
    out = tmp_path / "out"
    killed = subprocess.run(
        [sys.executable, "-c", "import os, signal, sys\nfrom unetrt.stream.rosbag import RosbagSink\n"
         "sink = RosbagSink(sys.argv[1])\nsink._open()\nos.kill(os.getpid(), signal.SIGKILL)",
         str(out / "k.mcap")], timeout=120)
    assert killed.returncode == -signal.SIGKILL
    assert [path.name.startswith(".unetrt-bag-") for path in out.iterdir()] == [True]
    assert Stream(str(write_video(tmp_path / "in.mp4", 2)), FakeSegmenter(), str(out / "s.mcap")).run()["written"] == 2
    assert [path.name for path in out.iterdir()] == ["s.mcap"]


def test_a_replay_moves_past_the_last_pass_when_the_stamps_span_more_than_the_log_times(tmp_path: Path) -> None:
    # Stamps half a second apart logged at 10 Hz (a recorder that fell behind the camera, then caught up): the replay
    # must start past the last stamp, not merely past the last log time.
    frames = synthetic_frames(3)
    bag = write_bag(tmp_path / "sparse.mcap", {"/camera/image_raw": [
        image_message(frame, "bgr8", 5 * i) for i, frame in enumerate(frames)]}, "mcap")
    with Stream(str(bag), FakeSegmenter(), loop=1) as stream:
        stamps = [r.header.stamp_sec * 10**9 + r.header.stamp_nanosec for r in stream if r.header]
    recorded = [sec * 10**9 + nanosec for sec, nanosec in (stamp_of(5 * i) for i in range(3))]
    # The longer span (the stamps' second) and one frame interval of the 10 Hz log times.
    assert stamps == [*recorded, *(stamp + 1_100_000_000 for stamp in recorded)]
