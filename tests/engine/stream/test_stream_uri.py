from __future__ import annotations

import os
from pathlib import Path

import pytest

from unetrt.bundled import sample_clip
from unetrt.stream.uri import SinkSpec, SourceSpec, parse_sink, parse_source


@pytest.mark.parametrize(("uri", "expected"), [
    ("0", SourceSpec("camera", "0", live=True)),
    ("/dev/video2", SourceSpec("camera", "/dev/video2", live=True)),
    ("v4l2:///dev/video1", SourceSpec("camera", "/dev/video1", live=True)),
    ("v4l2://3", SourceSpec("camera", "/dev/video3", live=True)),
    ("csi://0", SourceSpec("csi", "0", live=True)),
    ("CSI://1", SourceSpec("csi", "1", live=True)),  # a URI's scheme is case-insensitive (RFC 3986, 3.1)
    # udev's stable name of a USB camera, which keeps naming it when /dev/videoN numbers change on a replug.
    ("v4l2:///dev/v4l/by-id/usb-046d_C920-video-index0",
     SourceSpec("camera", "/dev/v4l/by-id/usb-046d_C920-video-index0", live=True)),
    ("rtsp://10.0.0.2:8554/cam", SourceSpec("rtsp", "rtsp://10.0.0.2:8554/cam", live=True)),
])
def test_live_sources(uri: str, expected: SourceSpec) -> None:
    assert parse_source(uri) == expected


def test_stored_sources(tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    video.write_bytes(b"x")
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "a.png").write_bytes(b"x")
    assert parse_source(str(video)) == SourceSpec("video", str(video), live=False)
    assert parse_source(f"file://{video}") == SourceSpec("video", str(video), live=False)
    assert parse_source(str(tmp_path / "frames")).kind == "images"
    assert parse_source(str(tmp_path / "frames" / "*.png")).kind == "images"
    assert parse_source("sample") == SourceSpec("video", str(sample_clip()), live=False)


@pytest.mark.parametrize(("uri", "error", "words"), [
    ("", ValueError, "empty"),
    ("webrtc://@:8554/in", ValueError, "unknown input protocol"),
    ("csi://front", ValueError, "sensor number, e.g. csi://0, got 'csi://front'"),
    ("v4l2://camera", ValueError, "v4l2:///dev/video0, got 'v4l2://camera'"),
    ("/nonexistent/clip.mp4", FileNotFoundError, "does not exist"),
    ("/nonexistent/*.png", FileNotFoundError, "no files match"),
])
def test_bad_sources_say_what_is_wrong(uri: str, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        parse_source(uri)


def test_an_input_whose_name_is_not_utf8_is_refused(tmp_path: Path) -> None:
    # OpenCV crashed the process (a segmentation fault) on such a name, after the model had loaded.
    video = tmp_path / os.fsdecode(b"v\xff.mp4")
    video.write_bytes(b"x")
    folder = tmp_path / os.fsdecode(b"fold\xfe")
    folder.mkdir()
    (folder / "a.png").write_bytes(b"x")
    for uri in (str(video), f"file://{video}", str(folder), str(folder / "*.png")):
        with pytest.raises(ValueError, match=r"input '.*\\x(ff|fe).*' has a name that is not valid UTF-8"):
            parse_source(uri)
    # A ROS 2 bag is read by Python, which takes any name.
    bag = tmp_path / os.fsdecode(b"drive\xff.mcap")
    bag.write_bytes(b"x")
    assert parse_source(str(bag)).kind == "rosbag"


def test_an_input_name_longer_than_the_file_system_takes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Python 3.11's is_dir raised OSError: [Errno 36] File name too long, a traceback. Relative names, so that the
    # message's first 60 characters are the name's whatever the length of tmp_path.
    monkeypatch.chdir(tmp_path)
    for name in ("a" * 300 + ".mp4", "a" * 300 + "/clip.mp4"):
        with pytest.raises(ValueError, match=r"input 'a{60}'\.\.\. is a name longer than this file system takes"):
            parse_source(name)


def test_unknown_suffix(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("x")
    with pytest.raises(ValueError, match="suffix"):
        parse_source(str(path))


@pytest.mark.parametrize(("uri", "expected"), [
    (None, SinkSpec("none", "")),
    ("display://0", SinkSpec("display", "0")),
    ("out.mp4", SinkSpec("video", "out.mp4")),
    ("file://out/run.avi", SinkSpec("video", "out/run.avi")),
    ("out/frame_%04d.png", SinkSpec("images", "out/frame_%04d.png")),
    ("out", SinkSpec("images", str(Path("out") / "frame_%06d.png"))),
    ("OUT.MP4", SinkSpec("video", "OUT.MP4")),  # a suffix in capitals is the same video suffix
    ("http://127.0.0.1:65535", SinkSpec("http", "127.0.0.1:65535", ("127.0.0.1", 65535))),  # the highest port
])
def test_sinks(uri: str | None, expected: SinkSpec) -> None:
    assert parse_sink(uri) == expected


@pytest.mark.parametrize(("uri", "words"), [
    ("rtp://host:1234", "unknown output protocol"),
    ("display://left", "window number"),
    ("frame.png", "single image"),
    ("frames_%04d.txt", "image suffix"),
    ("out.mkv", "cannot write"),
    # A port is given, but none that TCP has: the line said the URI had no port.
    ("http://127.0.0.1:99999", "needs a port from 0 to 65535"),
    ("http://127.0.0.1:65536", "needs a port from 0 to 65535"),
])
def test_bad_sinks(uri: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_sink(uri)


def test_sample_beside_a_folder_named_sample_says_which_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    # `unet-stream sample out/` in a project whose frames are in ./sample segmented the bundled clip without a word.
    monkeypatch.chdir(tmp_path)
    with caplog.at_level("WARNING", logger="unetrt.stream.uri"):
        assert parse_source("sample").location == str(sample_clip())
        assert caplog.messages == []
        (tmp_path / "sample").mkdir()
        assert parse_source("sample").location == str(sample_clip())
        assert parse_source("./sample") == SourceSpec("images", "sample", live=False)
    assert caplog.messages == ["'sample' is the bundled clip, which is what is read: give ./sample for the folder "
                               "of that name here"]


def test_sample_beside_a_file_named_sample_says_which_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    # A clip saved as ./sample (no suffix) is as unread as a folder of that name.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sample").write_bytes(b"a clip of the user's")
    with caplog.at_level("WARNING", logger="unetrt.stream.uri"):
        assert parse_source("sample").location == str(sample_clip())
    assert caplog.messages == ["'sample' is the bundled clip, which is what is read: give ./sample for the file of "
                               "that name here"]


@pytest.mark.parametrize("uri", ["https://data.example/runs/day1/clip.mp4", "http://10.0.0.5/CLIP.MKV#t=3"])
def test_a_video_file_on_a_web_server_is_a_stored_source(uri: str) -> None:
    # Read whole, as a local file: taken for a live stream it dropped frames and ended by reconnecting for ever.
    assert parse_source(uri) == SourceSpec("rtsp", uri, live=False)
