"""bench_batch: the frames asked for, the loop's rate over its own segmenting time, Ray's cluster sized and shut
down (a stand-in Ray: the extra is not on the CI machines), the four settings with their thread splits."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest

from unetrt.benchmarks import bench_batch


def _clip(path: Path, frames: int) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (64, 48))
    for index in range(frames):
        writer.write(np.full((48, 64, 3), 40 * index, np.uint8))
    writer.release()
    return path


def test_the_frames_asked_for_are_written_and_a_short_clip_says_its_length(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_batch, "sample_clip", lambda: _clip(tmp_path / "clip.mp4", 3))
    (tmp_path / "two").mkdir()
    paths = bench_batch.write_frames(tmp_path / "two", 2)
    assert paths == [tmp_path / "two" / "frame_00000.png", tmp_path / "two" / "frame_00001.png"]
    assert sorted((tmp_path / "two").iterdir()) == paths
    (tmp_path / "many").mkdir()
    with pytest.raises(ValueError, match="the sample clip has only 3 frames"):
        bench_batch.write_frames(tmp_path / "many", 5)


def test_the_loop_rate_leaves_out_the_model_open_and_uses_the_threads_given(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model_files: dict[str, Path]) -> None:
    monkeypatch.setattr(bench_batch, "sample_clip", lambda: _clip(tmp_path / "clip.mp4", 2))
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    paths = bench_batch.write_frames(tmp_path / "in", 2)
    opened: list[dict[str, Any]] = []
    real = bench_batch.Segmenter

    def segmenter(model: str, **kwargs: Any) -> Any:
        opened.append(kwargs)
        return real(model, **kwargs)

    monkeypatch.setattr(bench_batch, "Segmenter", segmenter)
    # The clock reads 10 s at the start, 13 s once the model is open, 15 s after the frames.
    monkeypatch.setattr(bench_batch, "time", SimpleNamespace(perf_counter=iter([10.0, 13.0, 15.0]).__next__))
    row = bench_batch.run_loop(paths, tmp_path / "out", str(tiny_model_files["onnx"]), threads=1)
    assert opened == [{"threads": 1}]
    # 2 frames in the 2 s after the model opened (3 s).
    assert (row["model_open_s"], row["wall_s"], row["fps"]) == (3.0, 2.0, 1.0)
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["frame_00000.png", "frame_00001.png"]


class _Ray:
    """Stand-ins for ``ray`` and ``ray.cluster_utils``: what the benchmark asks of them, in order."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, Any]] = []
        ray = ModuleType("ray")
        ray.__version__ = "0-test"  # type: ignore[attr-defined]
        ray.init = lambda address, **kwargs: self.calls.append(("init", address))  # type: ignore[attr-defined]
        ray.shutdown = lambda: self.calls.append(("ray.shutdown", None))  # type: ignore[attr-defined]
        utils = ModuleType("ray.cluster_utils")
        utils.Cluster = self.cluster  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "ray", ray)
        monkeypatch.setitem(sys.modules, "ray.cluster_utils", utils)

    def cluster(self, initialize_head: bool, head_node_args: dict[str, Any]) -> Any:
        self.calls.append(("head", head_node_args["num_cpus"]))
        return SimpleNamespace(address="local:1",
                               add_node=lambda num_cpus: self.calls.append(("node", num_cpus)),
                               shutdown=lambda: self.calls.append(("cluster.shutdown", None)))


def _summary() -> dict[str, Any]:
    return {"workers": {"a": {"fps": 2.5}, "b": {"fps": None}}, "engines": ["onnxruntime on cpu"],
            "wall_time_s": 3.0, "fps": 4.0, "frames": 12}


def test_two_nodes_share_the_cores_and_the_actors_get_their_threads(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    ray = _Ray(monkeypatch)
    settings: list[Any] = []
    monkeypatch.setattr(bench_batch, "run_batch",
                        lambda inputs, out, batch_settings, workers, progress: settings.append(
                            (batch_settings, workers)) or _summary())
    row = bench_batch.run_ray([tmp_path / "a.png"], tmp_path, "camvid", workers=2, threads=3, nodes=2, cores=6)
    # 6 cores over 2 nodes: 3 each.
    assert ray.calls == [("head", 3), ("node", 3), ("init", "local:1"), ("ray.shutdown", None),
                         ("cluster.shutdown", None)]
    ((batch_settings, workers),) = settings
    assert (batch_settings.model, batch_settings.threads, workers) == ("camvid", 3, 2)
    # The busy rate sums the actors that report one: 2.5 + nothing.
    assert (row["setting"], row["busy_fps"], row["fps"]) == ("ray, 2 actors, 2 nodes", 2.5, 4.0)


def test_a_failed_job_still_shuts_ray_down(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ray = _Ray(monkeypatch)

    def failing(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("bad input")

    monkeypatch.setattr(bench_batch, "run_batch", failing)
    with pytest.raises(ValueError, match="bad input"):
        bench_batch.run_ray([tmp_path / "a.png"], tmp_path, "camvid", workers=1, threads=2, nodes=1, cores=2)
    assert ray.calls[-2:] == [("ray.shutdown", None), ("cluster.shutdown", None)]


def test_the_four_settings_split_the_cores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _Ray(monkeypatch)
    runs: list[tuple[Any, ...]] = []
    monkeypatch.setattr(bench_batch, "usable_cores", lambda: 4)
    monkeypatch.setattr(bench_batch, "write_frames", lambda folder, count: [folder / "frame_00000.png"] * count)
    monkeypatch.setattr(bench_batch, "run_loop", lambda paths, out, model, threads: runs.append(
        ("loop", len(paths), threads)) or {"setting": "loop", "workers": 1, "threads": threads, "engine": "e",
                                           "model_open_s": 1.0, "wall_s": 2.0, "fps": 3.0})
    monkeypatch.setattr(bench_batch, "run_ray", lambda paths, out, model, workers, threads, nodes, cores: runs.append(
        ("ray", workers, threads, nodes, cores)) or {"setting": "ray", "workers": workers, "threads": threads,
                                                     "engine": "e", "ray_start_s": 1.0, "wall_s": 2.0, "fps": 3.0,
                                                     "busy_fps": 4.0})
    written: list[dict[str, Any]] = []
    monkeypatch.setattr(bench_batch, "write_results", lambda folder, name, result, markdown: written.append(result))
    assert bench_batch.main(["--frames", "5", "--name", "x"]) == 0
    # 4 cores: the loop and one actor take all 4; two actors 2 each, on one node and then on two.
    assert runs == [("loop", 5, 4), ("ray", 1, 4, 1, 4), ("ray", 2, 2, 1, 4), ("ray", 2, 2, 2, 4)]
    assert written[0]["frames"] == 5 and len(written[0]["rows"]) == 4
