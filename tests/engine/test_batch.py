"""unet-batch without a cluster: inputs, output names, atomic writes, options, Ray missing, and whole jobs on
LocalRay, a stand-in for one Ray node."""

from __future__ import annotations

import argparse
import builtins
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest

from unetrt.batch import cli as batch_cli
from unetrt.batch import inputs as inputs_module
from unetrt.batch import job
from unetrt.batch.cli import build_parser, main, parse_address
from unetrt.batch.inputs import (
    FAILED,
    SKIPPED,
    TODO,
    WorkUnit,
    announced_frames,
    expand_inputs,
    frame_from_row,
    read_unit,
    unit_is_done,
)
from unetrt.batch.job import (
    INSTALL_HINT,
    BatchSettings,
    SegmentWorker,
    actor_resources,
    check_output_apart,
    check_pool_fits,
    default_workers,
    import_ray,
    ray_connection,
)
from unetrt.batch.outputs import (
    frame_output,
    is_done,
    overlay_output,
    remove_partial_files,
    write_png_atomically,
)
from unetrt.cli import TerminatedError
from unetrt.stream.sources import CorruptFrameError


def write_video(path: Path, frames: int, size: tuple[int, int] = (64, 48)) -> list[np.ndarray]:
    """An MJPEG .avi of ``frames`` frames; returns the frames as OpenCV decodes them."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, size)
    rng = np.random.default_rng(len(path.name))
    for _ in range(frames):
        writer.write(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    writer.release()
    capture = cv2.VideoCapture(str(path))
    decoded = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        decoded.append(frame)
    capture.release()
    return decoded


def write_images(folder: Path, count: int, size: tuple[int, int] = (40, 30), prefix: str = "img") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(count)
    paths = []
    for index in range(count):
        path = folder / f"{prefix}_{index:02d}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
        paths.append(path)
    return paths


def test_inputs_expand_to_one_unit_per_image_and_per_video(tmp_path: Path) -> None:
    images = write_images(tmp_path / "frames", 3)
    write_video(tmp_path / "drive.avi", 5)
    (tmp_path / "loose.png").write_bytes(images[0].read_bytes())
    units = expand_inputs([str(tmp_path / "frames"), str(tmp_path / "drive.avi"), str(tmp_path / "lo*.png")])
    assert [(u.kind, u.output) for u in units] == [
        ("image", "img_00.png"), ("image", "img_01.png"), ("image", "img_02.png"), ("stream", "drive"),
        ("image", "loose.png")]
    assert units[3].frames == 5
    # A folder (or glob) of a fleet's videos and images gives both.
    write_video(tmp_path / "frames" / "clip.avi", 2)
    units = expand_inputs([str(tmp_path / "frames")])
    assert [(u.kind, u.output) for u in units] == [
        ("stream", "clip"), ("image", "img_00.png"), ("image", "img_01.png"), ("image", "img_02.png")]
    assert [u.output for u in expand_inputs([str(tmp_path / "frames" / "*.avi")])] == ["clip"]


@pytest.mark.parametrize("inputs, error, message", [
    (["missing.png"], FileNotFoundError, "does not exist"),
    (["empty"], FileNotFoundError, "no images or videos in 'empty'"),
    (["none_*.png"], FileNotFoundError, "no files match"),
    (["0"], ValueError, "live camera source; unet-batch reads recordings"),
    (["notes.txt"], ValueError, "cannot tell what"),
    ([], ValueError, "no inputs"),
])
def test_bad_inputs_are_refused_with_the_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                inputs: list[str], error: type[Exception], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(error, match=message):
        expand_inputs(inputs)


def test_a_name_that_is_not_utf8_is_refused_before_opencv_or_a_worker_sees_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # OpenCV crashed the driver (a video's frame count) or a Ray worker, which Ray then restarted for ever, on
    # such a name (a segmentation fault).
    def opencv(*args: object) -> None:
        raise AssertionError("OpenCV was handed the name")

    video = tmp_path / os.fsdecode(b"v\xff.avi")
    write_video(tmp_path / "clip.avi", 2)
    video.write_bytes((tmp_path / "clip.avi").read_bytes())
    folder = tmp_path / "frames"
    image = write_images(folder, 1)[0]
    (folder / os.fsdecode(b"a\xff.png")).write_bytes(image.read_bytes())
    monkeypatch.setattr(cv2, "VideoCapture", opencv)
    for inputs in ([str(video)], [str(folder)], [str(folder / "*.png")]):
        with pytest.raises(ValueError, match=r"input '.*\\xff\.(avi|png)' has a name that is not valid UTF-8"):
            expand_inputs(inputs)
    with pytest.raises(ValueError, match="not valid UTF-8"):
        announced_frames(video)


def test_names_longer_than_the_file_system_takes_are_one_line(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    # Python 3.11's is_dir and exists raised OSError: [Errno 36] File name too long, a traceback.
    image = write_images(tmp_path / "frames", 1)[0]
    long = str(tmp_path / ("a" * 300))
    for argv in ([long + ".png", "-o", str(tmp_path / "out")], [str(image), "-o", long]):
        assert main([*argv, "--model", "camvid"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "longer than" in err[0] and "file system takes" in err[0]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["frames"]


def test_no_cluster_at_the_address_is_one_line_and_makes_no_output_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # It was a ConnectionError traceback, after the output folder had been made.
    def init(**options: Any) -> None:
        raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr(job, "import_ray", lambda: SimpleNamespace(is_initialized=lambda: False, init=init))
    with pytest.raises(ConnectionError, match="no Ray cluster at 'auto'"), ray_connection("auto"):
        pass
    image = write_images(tmp_path / "frames", 1)[0]
    out = tmp_path / "masks"
    assert main([str(image), "-o", str(out), "--model", "camvid", "--address", "auto"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no Ray cluster at 'auto'") and "ray start --head" in err[0]
    assert not out.exists()


def test_a_damaged_video_leaves_no_ffmpeg_lines_on_stderr(tmp_path: Path) -> None:
    # unet-batch printed FFmpeg's own lines ('[mov,mp4,...] moov atom not found') while counting a damaged video's
    # frames; unet-stream keeps them off. A child process: FFmpeg reads its log level once, when it first starts.
    video = tmp_path / "empty.mp4"
    video.write_bytes(b"")
    script = f"from unetrt.batch.inputs import expand_inputs\nprint(expand_inputs([{str(video)!r}])[0].frames)"
    env = {key: value for key, value in os.environ.items()
           if key not in ("OPENCV_LOG_LEVEL", "OPENCV_FFMPEG_LOGLEVEL")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env,
                            check=False)
    assert (result.stdout, result.stderr) == ("0\n", "")


def test_two_inputs_that_would_write_one_output_are_refused(tmp_path: Path) -> None:
    first = write_images(tmp_path / "a", 1)[0]
    second = write_images(tmp_path / "b", 1)[0]
    with pytest.raises(ValueError, match=r"would both write 'img_00\.png'"):
        expand_inputs([str(first), str(second)])
    write_video(tmp_path / "img_00.avi", 2)
    # A video's frame folder and an image's mask do not collide; two videos of one stem do.
    expand_inputs([str(first), str(tmp_path / "img_00.avi")])
    (tmp_path / "c").mkdir()
    write_video(tmp_path / "c" / "img_00.avi", 2)
    with pytest.raises(ValueError, match=r"would both write 'img_00/'"):
        expand_inputs([str(tmp_path / "img_00.avi"), str(tmp_path / "c" / "img_00.avi")])


def test_a_file_named_twice_is_one_unit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # 'frames/*.png' frames/img_00.png segmented img_00 twice and the summary counted 3 frames written for 2 masks.
    monkeypatch.chdir(tmp_path)
    write_images(tmp_path / "frames", 2)
    write_video(tmp_path / "drive.avi", 2)
    units = expand_inputs(["frames/*.png", "frames/img_00.png", str(tmp_path / "frames" / "img_01.png"),
                           "drive.avi", "./drive.avi", "frames"])
    assert [(u.kind, u.output) for u in units] == [("image", "img_00.png"), ("image", "img_01.png"),
                                                   ("stream", "drive")]


def test_an_output_folder_that_overlaps_an_input_is_refused(tmp_path: Path) -> None:
    # unet-batch frames -o frames took the PNGs for finished masks, wrote nothing and reported them done.
    write_images(tmp_path / "frames", 2)
    inputs = [str(tmp_path / "frames")]
    units = expand_inputs(inputs)
    for out in (tmp_path / "frames", tmp_path / "frames" / "masks", tmp_path):
        with pytest.raises(ValueError, match="overlap: masks would pass for frames"):
            check_output_apart(inputs, units, out)
    check_output_apart(inputs, units, tmp_path / "masks")


def test_output_names() -> None:
    assert frame_output("drive", 12) == "drive/000012.png"
    assert overlay_output("drive/000012.png") == "drive/000012.overlay.png"


def test_atomic_write_leaves_a_complete_file_and_no_partial(tmp_path: Path) -> None:
    mask = np.arange(12, dtype=np.uint8).reshape(3, 4)
    write_png_atomically(tmp_path / "sub" / "a.png", mask)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "sub" / "a.png"), cv2.IMREAD_UNCHANGED), mask)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["a.png"]


def test_a_write_killed_halfway_leaves_nothing_that_counts_as_done(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    def fail_rename(source: Any, target: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail_rename)
    with pytest.raises(OSError, match="No space left"):
        write_png_atomically(tmp_path / "a.png", np.zeros((2, 2), np.uint8))
    assert list(tmp_path.iterdir()) == []
    assert not is_done(tmp_path, "a.png", overlay=False)


def test_partial_files_never_count_and_are_removed(tmp_path: Path) -> None:
    (tmp_path / "drive").mkdir()
    (tmp_path / "drive" / ".000001.png.partial-deadbeef").write_bytes(b"\x89PNG half")
    (tmp_path / "drive" / "000000.png").write_bytes(b"done")
    assert is_done(tmp_path, "drive/000000.png", overlay=False)
    assert not is_done(tmp_path, "drive/000001.png", overlay=False)
    assert not is_done(tmp_path, "drive/000000.png", overlay=True)
    assert remove_partial_files(tmp_path) == 1
    assert sorted(p.name for p in (tmp_path / "drive").iterdir()) == ["000000.png"]


def test_a_mask_is_written_losslessly_as_png(tmp_path: Path) -> None:
    # Every pixel is a class id: a lossy format would change ids along every class edge.
    mask = np.random.default_rng(0).integers(0, 12, (32, 48), dtype=np.uint8)
    write_png_atomically(tmp_path / "a.png", mask)
    assert (tmp_path / "a.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "a.png"), cv2.IMREAD_UNCHANGED), mask)


def test_the_data_is_on_disk_before_the_file_gets_its_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Renamed before it is flushed, a file under its final name could be empty after a power cut, and count as done.
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync")
        real_fsync(fd)

    def replace(source: Any, target: Any) -> None:
        events.append("rename")
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_png_atomically(tmp_path / "a.png", np.zeros((2, 2), np.uint8))
    assert events == ["fsync", "rename"]


def test_an_interrupted_write_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(source: Any, target: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_png_atomically(tmp_path / "a.png", np.zeros((2, 2), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_a_killed_writers_partial_file_is_found_and_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A writer killed before its rename cleans nothing up: its temporary file stays, under a name that never
    # counts as done, until remove_partial_files finds it.
    def killed(source: Any, target: Any) -> None:
        raise OSError("the writer was killed here")

    monkeypatch.setattr(os, "replace", killed)
    monkeypatch.setattr(Path, "unlink", lambda self, missing_ok=False: None)  # no clean-up in a killed process
    with pytest.raises(OSError):
        write_png_atomically(tmp_path / "drive" / "000000.png", np.zeros((2, 2), np.uint8))
    monkeypatch.undo()
    assert not is_done(tmp_path, "drive/000000.png", overlay=False)
    assert remove_partial_files(tmp_path) == 1
    assert list((tmp_path / "drive").iterdir()) == []


def test_two_writers_of_one_frame_never_share_a_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A retried batch can write a frame twice at once: each writer renames a complete file of its own.
    sources: list[str] = []
    real_replace = os.replace

    def replace(source: Any, target: Any) -> None:
        sources.append(str(source))
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    for _ in range(2):
        write_png_atomically(tmp_path / "a.png", np.zeros((2, 2), np.uint8))
    assert len(set(sources)) == 2


def test_read_unit_skips_written_frames_and_reports_corrupt_ones(tmp_path: Path) -> None:
    frames = write_video(tmp_path / "drive.avi", 4)
    out = tmp_path / "out"
    (out / "drive").mkdir(parents=True)
    (out / "drive" / "000001.png").write_bytes(b"done")
    unit = expand_inputs([str(tmp_path / "drive.avi")])[0]
    rows = list(read_unit(unit.as_row(), str(out), overlay=False))
    assert [(r["index"], r["status"]) for r in rows] == [(0, TODO), (1, SKIPPED), (2, TODO), (3, TODO)]
    np.testing.assert_array_equal(frame_from_row(rows[2]["pixels"], rows[2]["shape"], rows[2]["dtype"]), frames[2])
    assert rows[1]["pixels"] == b""
    assert not unit_is_done(unit, out, overlay=False)
    for index in (0, 2, 3):
        (out / frame_output("drive", index)).write_bytes(b"done")
    assert unit_is_done(unit, out, overlay=False)

    (tmp_path / "broken.png").write_bytes(b"not a png")
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    broken = [WorkUnit("image", str(tmp_path / "broken.png"), "broken.png"),
              WorkUnit("stream", str(tmp_path / "broken.mp4"), "broken", 0)]
    rows = [row for unit in broken for row in read_unit(unit.as_row(), str(out), overlay=False)]
    assert [(r["index"], r["status"]) for r in rows] == [(-1, FAILED), (-1, FAILED)]
    assert "cannot decode image" in rows[0]["error"] and "cannot open video" in rows[1]["error"]


def test_a_tiff_stack_is_a_failed_row_not_its_first_page_alone(tmp_path: Path) -> None:
    # An EM stack in one TIFF: segmenting its first page as the whole file would lose every other slice unsaid.
    assert cv2.imwritemulti(str(tmp_path / "stack.tif"), [np.full((6, 8), i, np.uint8) for i in range(3)])
    (row,) = read_unit(WorkUnit("image", str(tmp_path / "stack.tif"), "stack.png").as_row(), str(tmp_path / "out"),
                       overlay=False)
    assert (row["index"], row["status"]) == (-1, FAILED) and "is a stack of 3 pages" in row["error"]


@pytest.mark.parametrize("text, expected", [("auto", "auto"), ("none", None), ("ray://head:10001", "ray://head:10001"),
                                            ("10.0.0.5:6379", "10.0.0.5:6379")])
def test_address_forms(text: str, expected: str | None) -> None:
    assert parse_address(text) == expected


def test_bad_address_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["x.png", "-o", "out", "--model", "camvid", "--address", "ray://head"])
    assert stop.value.code == 2
    assert "--address must be auto, ray://HOST:PORT" in capsys.readouterr().err


def test_default_workers_follow_the_cluster() -> None:
    assert default_workers({"CPU": 2.0}, BatchSettings()) == 1
    assert default_workers({"CPU": 16.0, "GPU": 4.0}, BatchSettings()) == 4
    assert default_workers({"CPU": 16.0, "GPU": 2.0}, BatchSettings(gpus_per_worker=0.5)) == 4


def test_actors_reserve_gpus_on_a_gpu_cluster_and_threads_on_a_cpu_one() -> None:
    assert actor_resources(BatchSettings(threads=3), on_gpu=False) == {"num_cpus": 3}
    assert actor_resources(BatchSettings(threads=3, gpus_per_worker=0.5), on_gpu=True) == {"num_gpus": 0.5,
                                                                                           "num_cpus": 1}


def test_a_pool_larger_than_the_cluster_is_refused() -> None:
    check_pool_fits(2, {"CPU": 4.0}, BatchSettings(threads=2))
    with pytest.raises(ValueError, match="3 workers need 6 CPUs but the Ray cluster has 4; lower --workers"):
        check_pool_fits(3, {"CPU": 4.0}, BatchSettings(threads=2))
    with pytest.raises(ValueError, match="need 3 GPUs but the Ray cluster has 2"):
        check_pool_fits(3, {"CPU": 64.0, "GPU": 2.0}, BatchSettings())


def test_help_states_every_default() -> None:
    parser = build_parser()
    for action in parser._actions:
        if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
            shown = parser.formatter_class(parser.prog)._get_help_string(action) or ""
            assert "(default" in shown, action.option_strings[0]


def test_without_ray_the_command_says_how_to_install_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    real_import = builtins.__import__

    def no_ray(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "ray" or name.startswith("ray."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ImportError, match="pip install 'unetrt\\[ray\\]'"):
        import_ray()
    image = write_images(tmp_path, 1)[0]
    assert main([str(image), "-o", str(tmp_path / "out"), "--model", "camvid"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {INSTALL_HINT}"


def test_a_worker_refuses_and_closes_a_segmenter_that_takes_rgb_frames(tiny_model_files: dict[str, Path],
                                                                       tmp_path: Path) -> None:
    """Frames are read with OpenCV (BGR): a segmenter_factory's RGB segmenter would segment every frame worse."""
    from unetrt.segmenter import Segmenter

    opened: list[Segmenter] = []

    def open_rgb() -> Segmenter:
        opened.append(Segmenter(tiny_model_files["onnx"], color_order="rgb"))
        return opened[-1]

    with pytest.raises(ValueError, match=r"reads frames with OpenCV \(BGR\).*color_order='rgb'.*color_order='bgr'"):
        SegmentWorker(BatchSettings(), str(tmp_path), "cpu", segmenter_factory=open_rgb)
    with pytest.raises(ValueError, match="closed"):
        opened[0].segment(np.zeros((8, 8, 3), np.uint8))


class LocalRay:
    """The calls run_batch and SegmentWorker make of Ray, answered for one local node: the job's bookkeeping
    (resuming, counting, the summary) runs here without a cluster, on 2-core CI machines without the ray extra."""

    NODE_ID = "f" * 56

    CPUS = 4.0

    def __init__(self) -> None:
        self.shut_down = False
        self.jobs: list[dict[str, Any]] = []  # what each job handed to its dataset

    def is_initialized(self) -> bool:
        return False

    def init(self, **options: Any) -> None:
        pass

    def shutdown(self) -> None:
        self.shut_down = True

    def nodes(self) -> list[dict[str, Any]]:
        return [{"NodeID": self.NODE_ID, "NodeManagerAddress": "127.0.0.1", "Resources": {"CPU": self.CPUS},
                 "Alive": True}]

    def cluster_resources(self) -> dict[str, float]:
        return {"CPU": self.CPUS}

    def get_runtime_context(self) -> SimpleNamespace:
        return SimpleNamespace(get_node_id=lambda: self.NODE_ID)


@pytest.fixture()
def local_ray(monkeypatch: pytest.MonkeyPatch) -> LocalRay:
    """run_batch on LocalRay: units decoded by read_unit and segmented by one SegmentWorker in this process, in
    batches of the settings' size."""
    local = LocalRay()
    monkeypatch.setattr(job, "import_ray", lambda: local)
    monkeypatch.setitem(sys.modules, "ray", local)  # SegmentWorker imports it for its node id

    def dataset(ray: Any, units: list[WorkUnit], out_dir: Path, settings: BatchSettings, pool: int, on_gpu: bool,
                node_count: int, segmenter_factory: Any) -> Any:
        local.jobs.append({"units": [unit.output for unit in units], "settings": settings, "pool": pool})

        def batches(batch_size: None, batch_format: str) -> Iterator[dict[str, np.ndarray]]:
            worker = SegmentWorker(settings, str(out_dir), "cpu", segmenter_factory)
            rows = [row for unit in units for row in read_unit(unit.as_row(), str(out_dir), settings.overlay)]
            for start in range(0, len(rows), settings.batch_size):
                chunk = rows[start:start + settings.batch_size]
                # Object columns, as Ray Data hands bytes of different lengths.
                yield worker({key: np.array([row[key] for row in chunk], dtype=object) for key in chunk[0]})

        return SimpleNamespace(iter_batches=batches)

    monkeypatch.setattr(job, "_dataset", dataset)
    return local


def test_a_rerun_writes_only_the_missing_masks_and_overlays_and_counts_each_frame_once(
        local_ray: LocalRay, tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    write_images(tmp_path / "in", 2)
    (tmp_path / "in" / "broken.png").write_bytes(b"not a png")
    write_video(tmp_path / "drive.avi", 3)
    inputs = [str(tmp_path / "in"), str(tmp_path / "drive.avi")]
    out = tmp_path / "out"
    settings = BatchSettings(model=str(tiny_model_files["onnx"]), batch_size=2, overlay=True)
    summary = job.run_batch(inputs, out, settings, workers=1, progress=False)
    # 2 images and 3 frames written, the broken image failed as a whole input (no frame index).
    assert summary["frames"] == {"total": 6, "written": 5, "skipped": 0, "failed": 1}
    assert [(f["output"], f["frame"]) for f in summary["failures"]] == [("broken.png", None)]
    masks = ["img_00.png", "img_01.png", "drive/000000.png", "drive/000001.png", "drive/000002.png"]
    written = sorted(path.relative_to(out).as_posix() for path in out.rglob("*.png"))
    assert written == sorted(masks + [overlay_output(name) for name in masks])
    assert [worker["frames"] for worker in summary["workers"].values()] == [5]  # skipped and failed not counted

    # Interrupted: an image's overlay, a frame's overlay and the video's last mask lost, a write left half-done.
    for name in ("img_01.overlay.png", "drive/000000.overlay.png", "drive/000002.png"):
        (out / name).unlink()
    (out / "drive" / ".000002.png.partial-0123").write_bytes(b"\x89PNG half")
    # A frame missing its mask or its overlay is written again whole; every other output must stay as it is.
    kept = {path: path.stat().st_mtime_ns for path in out.rglob("*.png")
            if path.relative_to(out).as_posix() not in ("img_01.png", "drive/000000.png", "drive/000002.overlay.png")}
    summary = job.run_batch(inputs, out, settings, workers=1, progress=False)
    # Written again: img_01 and drive/000000 (their overlays) and drive/000002; the other two frames were done.
    assert summary["frames"] == {"total": 6, "written": 3, "skipped": 2, "failed": 1}
    assert sorted(path.relative_to(out).as_posix() for path in out.rglob("*.png")) == written
    assert {path: path.stat().st_mtime_ns for path in kept} == kept, "an existing output was overwritten"
    assert not list(out.rglob("*.partial-*"))
    assert local_ray.jobs[-1]["units"] == ["broken.png", "img_01.png", "drive"]  # img_00 was done: not decoded again
    # fps is the frames written (not skipped) per second of the job.
    assert summary["fps"] * summary["wall_time_s"] == pytest.approx(3, abs=0.25)


@pytest.mark.parametrize("swallowed", [False, True], ids=["raised", "swallowed"])
def test_sigterm_stops_the_job_with_exit_143_keeping_what_was_written(
        local_ray: LocalRay, tiny_model_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], swallowed: bool) -> None:
    from unetrt.segmenter import Segmenter

    if swallowed:  # the handler's raise lost inside a library: the job still stops after that batch
        monkeypatch.setattr(job, "raise_terminated", lambda: None)

    class StoppedSegmenter(Segmenter):
        """Gets SIGTERM (docker stop) while it segments its second batch."""

        calls = 0

        def segment_batch(self, frames: Sequence[np.ndarray], probabilities: bool | None = None) -> Any:
            StoppedSegmenter.calls += 1
            if StoppedSegmenter.calls == 2:
                os.kill(os.getpid(), signal.SIGTERM)
            return super().segment_batch(frames, probabilities)

    monkeypatch.setattr(job, "Segmenter", StoppedSegmenter)
    write_images(tmp_path / "in", 6)
    out = tmp_path / "out"
    handler = signal.getsignal(signal.SIGTERM)
    assert main([str(tmp_path / "in"), "-o", str(out), "--model", str(tiny_model_files["onnx"]), "--batch-size", "2",
                 "--workers", "1"]) == 143
    assert capsys.readouterr().err == "terminated\n"
    assert signal.getsignal(signal.SIGTERM) == handler and local_ray.shut_down
    # Batches of 2 frames: the first is written, the second only when the signal's raise was swallowed inside it;
    # no summary (the job's identity is in job.json, written first), and a re-run resumes.
    assert sorted(path.name for path in out.iterdir()) == [
        *(f"img_{i:02d}.png" for i in range(4 if swallowed else 2)), "job.json"]


def test_the_job_refuses_bad_workers_and_an_output_inside_an_input_before_connecting(
        local_ray: LocalRay, tmp_path: Path) -> None:
    write_images(tmp_path / "frames", 1)
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        job.run_batch([str(tmp_path / "frames")], tmp_path / "out", BatchSettings(), workers=0)
    with pytest.raises(ValueError, match="overlap"):
        job.run_batch([str(tmp_path / "frames")], tmp_path / "frames" / "masks", BatchSettings())
    assert local_ray.jobs == [] and not (tmp_path / "frames" / "masks").exists()


def test_a_pool_the_cluster_cannot_hold_leaves_no_output_folder(local_ray: LocalRay, tmp_path: Path) -> None:
    # The folder was made before the pool was checked: the refused job left an empty one behind.
    write_images(tmp_path / "frames", 1)
    out = tmp_path / "masks"
    with pytest.raises(ValueError, match="5 workers need 5 CPUs but the Ray cluster has 4"):
        job.run_batch([str(tmp_path / "frames")], out, BatchSettings(), workers=int(LocalRay.CPUS) + 1)
    assert local_ray.jobs == [] and not out.exists()


def test_tensorrt_on_a_cluster_without_gpus_is_one_line_before_any_actor(
        local_ray: LocalRay, tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    # Every actor's Segmenter refused the CPU, and the job ended in Ray's tracebacks (ActorDiedError, exit 1).
    write_images(tmp_path / "frames", 1)
    out = tmp_path / "masks"
    settings = BatchSettings(model=str(tiny_model_files["onnx"]), backend="tensorrt")
    refusal = r"runs on TensorRT here \(backend 'tensorrt'\), which needs an NVIDIA GPU, and the Ray cluster has none"
    with pytest.raises(ValueError, match=refusal):
        job.run_batch([str(tmp_path / "frames")], out, settings, workers=1)
    assert local_ray.jobs == [] and not out.exists()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"threads": 0}, "threads must be >= 1, got 0"),
    ({"gpus_per_worker": 8.5}, r"GPUs per worker must be in \(0, 8\], got 8.5"),
    ({"gpus_per_worker": 0.0}, r"GPUs per worker must be in \(0, 8\], got 0.0"),
    ({"batch_size": 0}, "batch size must be >= 1, got 0"),
])
def test_settings_out_of_range_are_refused_with_the_value(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BatchSettings(**kwargs)
    BatchSettings(threads=1, gpus_per_worker=8, batch_size=1)  # the bounds themselves are allowed


def test_each_actor_opens_its_segmenter_with_the_jobs_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(job, "Segmenter", lambda model, **options: (model, options))
    settings = BatchSettings(model="m.onnx", backend="onnxruntime", precision="fp16", working_size=(64, 48), threads=3)
    common = {"backend": "onnxruntime", "precision": "fp16", "working_size": (64, 48)}
    assert settings.open_segmenter("cpu") == ("m.onnx", {**common, "device": "cpu", "threads": 3})
    # On a GPU the CPU threads are not the actor's to set.
    assert settings.open_segmenter("cuda") == ("m.onnx", {**common, "device": "cuda"})


def summary_with(failed: int, frames: Sequence[int | None]) -> dict[str, Any]:
    """A run_batch summary of 5 frames written, 2 skipped and ``failed`` failed, the failures at ``frames``."""
    return {"frames": {"total": 7 + failed, "written": 5, "skipped": 2, "failed": failed},
            "failures": [{"input": f"v{index}.mp4", "frame": frame, "output": "x", "error": "bad"}
                         for index, frame in enumerate(frames)],
            "wall_time_s": 2.0, "fps": 2.5, "pool_size": 3, "cluster": {"nodes": [{}, {}]},
            "backend": "onnxruntime", "precision": "fp32"}


def test_every_option_reaches_the_job_and_failed_frames_exit_1(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[dict[str, Any]] = []

    def run_batch(inputs: list[str], output: str, settings: BatchSettings, **kwargs: Any) -> dict[str, Any]:
        calls.append({"inputs": inputs, "output": output, "settings": settings, **kwargs})
        return summary_with(12, [0] + [None] * 11)

    monkeypatch.setattr(batch_cli, "run_batch", run_batch)
    assert main(["a.png", "b/", "-o", "masks", "--model", "m.onnx", "--backend", "onnxruntime", "--precision", "fp16",
                 "--size", "64x48", "--threads", "3", "--gpus-per-worker", "0.5", "--batch-size", "8",
                 "--overlay", "--workers", "2", "--address", "head:6379"]) == 1
    assert calls == [{"inputs": ["a.png", "b/"], "output": "masks", "address": "head:6379", "workers": 2,
                      "settings": BatchSettings("m.onnx", "onnxruntime", "fp16", (64, 48), 3, 0.5, 8, True)}]
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == ("5 frames written, 2 already done, 12 failed in 2.0 s (2.5 frames/s) by 3 workers on 2 nodes "
                        "(onnxruntime, fp32)")
    # The first 10 failures by name, frame 0 of a video included; the other 2 counted.
    assert lines[1] == "failed: v0.mp4 frame 0: bad" and lines[2] == "failed: v1.mp4: bad"
    assert len(lines) == 12 and lines[-1] == "... and 2 more failures"
    assert err == "error: 12 frames failed; masks/summary.json lists them\n"


def test_ten_failures_are_all_listed_and_none_exits_0(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    summaries = [summary_with(10, [None] * 10), summary_with(0, [])]
    monkeypatch.setattr(batch_cli, "run_batch", lambda *args, **kwargs: summaries.pop(0))
    assert main(["a.png", "-o", "masks", "--model", "m.onnx"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 11 and "more failures" not in lines[-1]
    assert main(["a.png", "-o", "masks", "--model", "m.onnx"]) == 0
    out, err = capsys.readouterr()
    assert out.count("\n") == 1 and err == ""


@pytest.mark.parametrize("text", ["head:0", "head:65536", ":6379", "ray://:10001", "head:port"])
def test_an_address_without_a_host_or_a_valid_port_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=f"got {text!r}"):
        parse_address(text)
    assert parse_address("head:65535") == "head:65535" and parse_address("head:1") == "head:1"


def test_upper_case_suffixes_are_images_and_videos_too(tmp_path: Path) -> None:
    # Cameras and Windows tools write IMG_0001.JPG and CLIP.AVI: skipping them would drop them without a word.
    folder = tmp_path / "in"
    image = write_images(folder, 1)[0]
    image.rename(folder / "SHOT.PNG")
    write_video(folder / "CLIP.AVI", 2)
    assert [(u.kind, u.output, u.frames) for u in expand_inputs([str(folder)])] == [
        ("stream", "CLIP", 2), ("image", "SHOT.png", 1)]


def test_names_that_differ_only_in_case_are_one_output(tmp_path: Path) -> None:
    # On macOS and Windows file systems A.png and a.png are one file: one mask would overwrite the other.
    first = write_images(tmp_path / "x", 1, prefix="Road")[0]
    second = write_images(tmp_path / "y", 1, prefix="road")[0]
    with pytest.raises(ValueError, match=rf"inputs {str(first)!r} and {str(second)!r} would both write"):
        expand_inputs([str(first), str(second)])


def test_a_negative_frame_count_from_the_container_counts_as_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    # Some containers make OpenCV answer -1 frames.
    class Capture:
        def __init__(self, name: str) -> None:
            pass

        def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
            return True

        def get(self, prop: int) -> float:
            return -1.0

        def release(self) -> None:
            pass

    monkeypatch.setattr(cv2, "VideoCapture", Capture)
    assert announced_frames(Path("clip.mp4")) == 0


def test_a_video_is_done_only_with_every_announced_frames_outputs(tmp_path: Path) -> None:
    (tmp_path / "drive").mkdir()
    for index in range(2):
        (tmp_path / frame_output("drive", index)).write_bytes(b"done")
        (tmp_path / overlay_output(frame_output("drive", index))).write_bytes(b"done")
    assert not unit_is_done(WorkUnit("stream", "drive.mp4", "drive", 3), tmp_path, overlay=False)  # the last is not
    (tmp_path / frame_output("drive", 2)).write_bytes(b"done")
    assert unit_is_done(WorkUnit("stream", "drive.mp4", "drive", 3), tmp_path, overlay=False)
    assert not unit_is_done(WorkUnit("stream", "drive.mp4", "drive", 3), tmp_path, overlay=True)  # its overlay is not
    # A recording that announces no frame count is read to find out which frames are missing.
    assert not unit_is_done(WorkUnit("stream", "drive.bag", "drive", 0), tmp_path, overlay=False)


def test_a_corrupt_frame_keeps_its_own_index_and_the_video_is_read_on_and_closed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frame = np.zeros((4, 6, 3), np.uint8)

    class Source:
        """Frame 1 of 4 cannot be decoded."""

        def __init__(self) -> None:
            self.frames: list[np.ndarray | None] = [frame, None, frame, frame]
            self.closed = False

        def open(self) -> None:
            pass

        def read(self) -> np.ndarray | None:
            if not self.frames:
                return None
            if self.frames[0] is None:
                self.frames.pop(0)
                raise CorruptFrameError("frame 1 is damaged")
            return self.frames.pop(0)

        def close(self) -> None:
            self.closed = True

    source = Source()
    monkeypatch.setattr(inputs_module, "open_source", lambda path: source)
    rows = list(read_unit(WorkUnit("stream", "drive.mp4", "drive", 4).as_row(), str(tmp_path), overlay=False))
    assert [(r["index"], r["output"], r["status"]) for r in rows] == [
        (0, "drive/000000.png", TODO), (1, "drive/000001.png", FAILED), (2, "drive/000002.png", TODO),
        (3, "drive/000003.png", TODO)]
    assert rows[1]["error"] == "frame 1 is damaged" and source.closed


def _retrained(model: Path) -> None:
    """The model file replaced by another one at the same path (as a retrained model is exported over it)."""
    onnx = pytest.importorskip("onnx")
    graph = onnx.load(str(model))
    graph.doc_string = "retrained"
    onnx.save(graph, str(model))


@pytest.mark.parametrize("change", ["same path, new model", "another model file", "another size"])
def test_a_rerun_with_another_model_or_size_is_refused_not_reported_done(
        change: str, local_ray: LocalRay, tiny_model_files: dict[str, Path], tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    # The second job reported every frame "already done" and wrote a summary naming its own model, while every mask
    # on disk was the first model's: the masks of an improved model were never made, without a word.
    write_images(tmp_path / "in", 2)
    model = tmp_path / "mine.onnx"
    model.write_bytes(tiny_model_files["onnx"].read_bytes())
    out = tmp_path / "masks"
    assert main([str(tmp_path / "in"), "-o", str(out), "--model", str(model), "--workers", "1"]) == 0
    before = {path: path.read_bytes() for path in out.iterdir()}
    rerun = [str(tmp_path / "in"), "-o", str(out), "--model", str(model), "--workers", "1"]
    if change == "same path, new model":
        _retrained(model)
    elif change == "another model file":
        rerun[rerun.index(str(model))] = str(tiny_model_files["pt"])
    else:
        rerun += ["--size", "32x24"]
    capsys.readouterr()
    assert main(rerun) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: the output folder {str(out)!r} holds the masks of another job") and \
        "give this job another output folder, or delete those masks to segment again" in err
    assert err.count("\n") == 1
    assert {path: path.read_bytes() for path in out.iterdir()} == before
    # The same job again still resumes (here: finds everything done).
    if change == "same path, new model":
        return
    capsys.readouterr()
    assert main([str(tmp_path / "in"), "-o", str(out), "--model", str(model), "--workers", "1"]) == 0
    assert "0 frames written, 2 already done" in capsys.readouterr().out


@pytest.mark.parametrize("stop", [KeyboardInterrupt, TerminatedError])
def test_a_job_stopped_before_its_summary_still_refuses_another_models_rerun(
        stop: type[BaseException], local_ray: LocalRay, tiny_model_files: dict[str, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Ctrl-C or SIGTERM after the first masks: no summary.json, so the job's identity was nowhere and a re-run at
    # another size counted the first job's masks as its own work done.
    write_images(tmp_path / "in", 3)
    out = tmp_path / "masks"
    tally = job._tally

    def stopped_after_one_batch(*args: Any) -> None:
        tally(*args)
        raise stop()

    monkeypatch.setattr(job, "_tally", stopped_after_one_batch)
    with pytest.raises(stop):
        job.run_batch([str(tmp_path / "in")], out, BatchSettings(model=str(tiny_model_files["onnx"]), batch_size=1),
                      workers=1)
    monkeypatch.setattr(job, "_tally", tally)
    assert not (out / "summary.json").exists() and len(list(out.glob("*.png"))) == 1
    with pytest.raises(ValueError, match="holds the masks of another job"):
        job.run_batch([str(tmp_path / "in")], out, BatchSettings(model=str(tiny_model_files["onnx"]),
                                                                  working_size=(32, 24)), workers=1)
    # The same job resumes: the mask written stays, the two missing are written.
    summary = job.run_batch([str(tmp_path / "in")], out, BatchSettings(model=str(tiny_model_files["onnx"])), workers=1)
    assert (summary["frames"]["written"], summary["frames"]["skipped"]) == (2, 1)


def test_an_empty_output_folder_of_an_earlier_job_takes_another_model(
        local_ray: LocalRay, tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    # Its masks deleted, the folder holds nothing of the earlier model: segmenting into it again is no mix.
    write_images(tmp_path / "in", 1)
    out = tmp_path / "masks"
    job.run_batch([str(tmp_path / "in")], out, BatchSettings(model=str(tiny_model_files["onnx"])), workers=1)
    (out / "img_00.png").unlink()
    summary = job.run_batch([str(tmp_path / "in")], out, BatchSettings(model=str(tiny_model_files["onnx"]),
                                                                      working_size=(32, 24)), workers=1)
    assert summary["frames"]["written"] == 1


def test_subfolders_of_an_input_folder_are_named_as_not_read(
        local_ray: LocalRay, tiny_model_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # A fleet's day folder with a folder per camera: only the files beside the camera folders were segmented, and
    # the job reported success without a word about the frames in them.
    day = tmp_path / "day"
    write_images(day, 1)
    write_images(day / "cam1", 1, prefix="c1")
    write_images(day / "cam2" / "front", 1, prefix="c2")
    (day / "empty").mkdir()
    (day / "notes").mkdir()
    (day / "notes" / "readme.txt").write_text("no frames here")
    monkeypatch.chdir(tmp_path)
    assert main(["day", "-o", "masks", "--model", str(tiny_model_files["onnx"]), "--workers", "1"]) == 0
    summary = json.loads((tmp_path / "masks" / "summary.json").read_text())
    assert summary["frames"]["written"] == 1 and summary["not_read"] == ["day/cam1", "day/cam2/front"]
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == ("not read: the files in the subfolders day/cam1, day/cam2/front of an input folder "
                                    "(unet-batch reads the files of a folder, not its subfolders): give each subfolder "
                                    "as an input of its own")
    # Named as inputs, they are read; nothing is left unread, and nothing said.
    assert main(["day", "day/cam1", "day/cam2/front", "-o", "masks2", "--model", str(tiny_model_files["onnx"]),
                 "--workers", "1"]) == 0
    summary = json.loads((tmp_path / "masks2" / "summary.json").read_text())
    assert summary["frames"]["written"] == 3 and summary["not_read"] == []
    assert "not read" not in capsys.readouterr().out


def test_the_report_names_five_unread_subfolders_and_counts_the_rest() -> None:
    summary = {**summary_with(0, []), "not_read": [f"day/cam{index}" for index in range(7)]}
    assert batch_cli.report(summary).splitlines()[-1].startswith(
        "not read: the files in the subfolders day/cam0, day/cam1, day/cam2, day/cam3, day/cam4 and 2 more of an")


def test_the_report_of_exactly_five_unread_subfolders_names_them_all_and_no_more() -> None:
    summary = {**summary_with(0, []), "not_read": [f"day/cam{index}" for index in range(5)]}
    assert batch_cli.report(summary).splitlines()[-1].startswith(
        "not read: the files in the subfolders day/cam0, day/cam1, day/cam2, day/cam3, day/cam4 of an input folder")


def test_unread_subfolders_count_videos_and_upper_case_suffixes_after_a_file_input(tmp_path: Path) -> None:
    # A camera's clips (.mp4) and a Windows tool's .PNG frames are what a job leaves out as much as .png images; a
    # file given before the folder is no reason to look at the folder less.
    first = write_images(tmp_path, 1, prefix="single")[0]
    day = tmp_path / "day"
    write_images(day, 1)
    for name in ("cam1/000001.PNG", "cam2/clip.mp4"):
        (day / name).parent.mkdir()
        (day / name).write_bytes(b"x")
    units = [WorkUnit("image", str(path), path.name) for path in (first, *sorted(day.glob("*.png")))]
    assert inputs_module.unread_subfolders([str(first), str(day)], units) == [str(day / "cam1"), str(day / "cam2")]


def _earlier_job(out: Path, mask: str, precision: str = "fp32", working_size: list[int] | None = None) -> None:
    """An output folder as a finished job leaves it: its summary and one mask at ``mask``."""
    (out / mask).parent.mkdir(parents=True, exist_ok=True)
    (out / mask).write_bytes(b"png")
    (out / "summary.json").write_text(json.dumps({
        "model": "/models/a.onnx", "model_sha256": "0123456789abcdef", "precision": precision,
        "settings": {"working_size": working_size}}))


IDENTITY = {"model": "/models/a.onnx", "model_sha256": "0123456789abcdef", "precision": "fp32", "working_size": None}


def test_a_job_of_another_precision_is_refused_naming_each_job_in_its_place(tmp_path: Path) -> None:
    # The fp16 job's masks would pass for this fp32 job's own; the line says which job made them and which is new.
    _earlier_job(tmp_path, "img_00.png", precision="fp16")
    with pytest.raises(ValueError) as error:
        job.check_same_job(tmp_path, IDENTITY)
    assert str(error.value) == (
        f"the output folder {str(tmp_path)!r} holds the masks of another job (model /models/a.onnx (SHA-256 "
        "0123456789ab), fp16, the model's working size; this job: model /models/a.onnx (SHA-256 0123456789ab), "
        "fp32, the model's working size), which this job would count as already done: give this job another "
        "output folder, or delete those masks to segment again")
    job.check_same_job(tmp_path, {**IDENTITY, "precision": "fp16"})  # the same job resumes


def test_a_job_whose_masks_are_a_videos_frames_is_refused_too(tmp_path: Path) -> None:
    # A video's frame masks lie in a folder of its own: they are the earlier job's masks as much as an image's.
    _earlier_job(tmp_path, "clip/000000.png", working_size=[32, 24])
    with pytest.raises(ValueError, match="holds the masks of another job"):
        job.check_same_job(tmp_path, IDENTITY)


def test_a_rerun_at_the_same_working_size_resumes(local_ray: LocalRay, tiny_model_files: dict[str, Path],
                                                  tmp_path: Path) -> None:
    # The size read back from summary.json is a list; the job's own was a tuple, so it never matched.
    write_images(tmp_path / "in", 2)
    settings = BatchSettings(model=str(tiny_model_files["onnx"]), working_size=(32, 24))
    job.run_batch([str(tmp_path / "in")], tmp_path / "out", settings, workers=1)
    summary = job.run_batch([str(tmp_path / "in")], tmp_path / "out", settings, workers=1)
    assert summary["frames"]["written"] == 0 and summary["frames"]["skipped"] == 2


def test_a_folder_of_a_unetrt_before_job_json_still_refuses_another_models_rerun(
        local_ray: LocalRay, tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    # A folder finished by a unetrt that wrote no job.json has the job's identity in its summary.json alone: a re-run
    # at another size must be refused there as before, not count those masks as its own.
    write_images(tmp_path / "in", 2)
    out = tmp_path / "masks"
    settings = BatchSettings(model=str(tiny_model_files["onnx"]))
    job.run_batch([str(tmp_path / "in")], out, settings, workers=1)
    (out / "job.json").unlink()
    with pytest.raises(ValueError, match="holds the masks of another job"):
        job.run_batch([str(tmp_path / "in")], out, BatchSettings(model=str(tiny_model_files["onnx"]),
                                                                  working_size=(32, 24)), workers=1)
    (out / "job.json").write_text("{")  # damaged (edited by hand, a file system's crash): the summary still tells
    with pytest.raises(ValueError, match="holds the masks of another job"):
        job.run_batch([str(tmp_path / "in")], out, BatchSettings(model=str(tiny_model_files["onnx"]),
                                                                  working_size=(32, 24)), workers=1)


def test_frames_whose_scores_are_nan_fail_alone_with_the_reason(local_ray: LocalRay, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """A network that gives NaN on some frames only (an FP16 overflow on bright scenes): the batch still writes the
    good frames' masks, each NaN frame is a failure whose row names the error and its fix, and the command ends in
    the one line that points to the summary, exit 1 (some frames failed)."""
    from nonfinite_models import write_nonfinite_onnx

    model = write_nonfinite_onnx(tmp_path / "nan.onnx", "nan")
    folder = tmp_path / "in"
    folder.mkdir()
    for index in range(4):
        frame = np.full((30, 40, 3), 150, np.uint8)
        if index % 2:
            frame[:5, :4, 0] = 0  # 20 pixels whose Log is NaN
        cv2.imwrite(str(folder / f"img_{index:02d}.png"), frame)
    out = tmp_path / "out"
    assert main([str(folder), "-o", str(out), "--model", str(model), "--batch-size", "4", "--workers", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: 2 frames failed; {out}/summary.json lists them"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"]["written"] == 2 and summary["frames"]["failed"] == 2
    assert sorted(f["output"] for f in summary["failures"]) == ["img_01.png", "img_03.png"]
    assert all(f["error"].startswith("cannot segment: the network gave NaN or infinite scores at 20 of 1200 pixels "
                                     "of this frame") for f in summary["failures"])
    assert sorted(path.name for path in out.glob("img_*.png")) == ["img_00.png", "img_02.png"]
