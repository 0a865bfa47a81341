"""The runners of unet-bench's rows (unetrt.benchmarks.variants): the warm-up call whose output the NaN check reads
runs the network as the timed step does, once, and returns that call's own output."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest

from unetrt.benchmarks.variants import DeviceRunner, HandWrittenPipeline, HandWrittenRunner, TorchDeviceRunner


class _HostTensor:
    """A device tensor as the runners read it back (``.float().cpu().numpy()``), over a host array."""

    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    def float(self) -> _HostTensor:
        return self

    def cpu(self) -> _HostTensor:
        return self

    def numpy(self) -> np.ndarray:
        return self.values.copy()


def test_the_hand_written_rows_warm_up_segments_every_frame() -> None:
    """The hand-written row's warm-up runs its recipe on every frame as its timed step does: a warm-up that runs
    nothing leaves the first timed calls to pay for it."""
    segmented: list[np.ndarray] = []
    pipeline = cast(HandWrittenPipeline, type("Pipeline", (), {"device": "cpu", "threads": 1,
                                                               "segment": staticmethod(segmented.append)})())
    frames = [np.zeros((4, 4, 3), np.uint8), np.ones((4, 4, 3), np.uint8)]
    assert HandWrittenRunner(pipeline, frames).checked_step() is None
    assert len(segmented) == 2 and segmented[1] is frames[1]


def test_a_device_rows_checked_output_is_that_of_the_run_it_makes() -> None:
    """The device row's checked step runs the engine and returns what that run wrote: the output buffer read without
    a run holds the last run's values (none before the first), so a NaN engine would pass the check."""
    calls: list[str] = []

    class Resident:
        shape = (1, 3, 2, 2)
        out = np.zeros((1, 3, 2, 2), np.float32)

        def run(self) -> None:
            calls.append("run")
            self.out[:] = np.nan

        def logits(self) -> np.ndarray:
            calls.append("logits")
            return self.out.copy()

    backend = type("Backend", (), {"device": "cuda:0 (fake)", "threads": None,
                                   "resident": staticmethod(lambda batch: Resident())})()
    runner = DeviceRunner(cast(Any, backend), np.zeros((1, 3, 2, 2), np.float32))
    assert np.isnan(runner.checked_step()).all() and calls == ["run", "logits"]
    assert runner.device == "cuda:0 (fake)"


def test_a_cuda_graph_rows_step_replays_the_graph_alone() -> None:
    """A CUDA-graph row times the graph's replay; its checked step returns the replay's output: the eager model is
    not run beside it (a second forward pass would double the row's time)."""
    calls: list[str] = []

    class Graph:
        def run(self, shape: tuple[int, ...]) -> _HostTensor:
            calls.append("graph")
            return _HostTensor(np.full((1, 2, 2, 2), 7.0, np.float32))

    def eager(_: Any) -> _HostTensor:
        calls.append("eager")
        return _HostTensor(np.zeros((1, 2, 2, 2), np.float32))

    runner = TorchDeviceRunner.__new__(TorchDeviceRunner)
    runner._graph_backend = cast(Any, Graph())
    runner._shape, runner._model, runner._input = (1, 3, 2, 2), eager, None
    runner.step()
    assert (runner.checked_step() == 7.0).all() and calls == ["graph", "graph"]


class _Resident:
    """A resident batch that counts its runs."""

    shape = (1, 3, 2, 2)

    def __init__(self, calls: list[str]) -> None:
        self._calls = calls

    def run(self) -> None:
        self._calls.append("run")

    def logits(self) -> np.ndarray:
        self._calls.append("logits")
        return np.zeros((1, 3, 2, 2), np.float32)


def _backend(calls: list[str], resident: Any = None) -> Any:
    """A ResidentBackend on 2 threads whose resident() gives a counting batch (or raises ``resident``)."""

    def make(batch: np.ndarray) -> _Resident:
        if resident is not None:
            raise resident
        return _Resident(calls)

    return type("Backend", (), {"device": "cpu", "threads": 2, "resident": staticmethod(make),
                                "close": staticmethod(lambda: calls.append("close"))})()


def test_a_device_rows_step_runs_once_and_after_close_is_refused() -> None:
    """The timed step is one run (no copy), the row reports the backend's threads, and once closed (the backend
    closed with it) the runner refuses in one line instead of running a batch whose memory is gone."""
    calls: list[str] = []
    runner = DeviceRunner(_backend(calls), np.zeros((1, 3, 2, 2), np.float32))
    runner.step()
    assert calls == ["run"] and (runner.device, runner.threads) == ("cpu", 2)
    runner.close()
    assert calls == ["run", "close"]
    with pytest.raises(ValueError, match=r"^this runner is closed; open a new one$"):
        runner.step()


def test_a_device_row_whose_batch_cannot_be_made_closes_its_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """resident() refusing the batch (a shape outside a plan's profile, no device memory left): the row is skipped
    and the backend it opened is closed, not left holding its engine."""
    from unetrt.benchmarks import variants
    from unetrt.benchmarks.variants import Variant, Workload, open_runner

    calls: list[str] = []
    backend = _backend(calls, ValueError("outside the engine's optimisation profile"))
    monkeypatch.setattr(variants, "open_variant_backend", lambda *args: backend)
    info = cast(Any, type("Info", (), {})())
    monkeypatch.setattr(Workload, "network_batch", lambda self, info: np.zeros((1, 3, 2, 2), np.float32))
    with pytest.raises(ValueError, match="optimisation profile"):
        open_runner(Variant("tensorrt", "TensorRT", "tensorrt"), Path("unet.plan"), "cuda", None,
                    Workload("device", (2, 2), 1), info)
    assert calls == ["close"]
