"""The runners of unet-bench's rows (unetrt.benchmarks.variants): the warm-up call whose output the NaN check reads
runs the network as the timed step does, once, and returns that call's own output."""

from __future__ import annotations

from typing import Any, cast

import numpy as np

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
