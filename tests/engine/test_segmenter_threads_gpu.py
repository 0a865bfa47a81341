"""A Segmenter on TensorRT with the CUDA frame path, called from several threads: on the fake Orin, TensorRT and
pycuda (their per-thread context rules enforced), with the CPU kernels run on the fake GPU's memory."""

from __future__ import annotations

import json
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from fakes.cuda import ArrayOnStream, FakeGpu
from fakes.tensorrt import write_plan_from_onnx
from plan_fixtures import install_fake_tensorrt_gpu, route_cuda_kernels_to

from unetrt.cuda_device import CudaDevice
from unetrt.segmenter import Segmenter

pytestmark = pytest.mark.gpu_contract
SIZES = [(48, 64), (60, 80), (32, 90), (75, 50)]  # height, width


@pytest.fixture
def gpu_plan(monkeypatch: pytest.MonkeyPatch, tiny_model_files: dict[str, Path], tmp_path: Path
             ) -> tuple[FakeGpu, Path]:
    from unetrt import _tiling  # type: ignore[attr-defined]

    gpu = FakeGpu()
    install_fake_tensorrt_gpu(monkeypatch, gpu)
    route_cuda_kernels_to(monkeypatch, gpu, _tiling)
    return gpu, write_plan_from_onnx(tiny_model_files["onnx"], tmp_path / "tiny.plan", gpu)


def _frames() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), np.uint8), (0, 0), 3) for h, w in SIZES]


def _on_another_thread(work: Callable[[], object]) -> None:
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()


def _hold_inside_a_capture(gpu: FakeGpu, monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """Make every enqueue under capture set the first event and wait (30 s at most) for the second: another
    thread's work then lands while a graph is being captured."""
    from fakes.tensorrt import FakeExecutionContext

    in_capture, go_on = threading.Event(), threading.Event()
    execute = FakeExecutionContext.execute_async_v3

    def held_inside_the_capture(context: FakeExecutionContext, stream: int) -> bool:
        if gpu.capturing(stream):
            in_capture.set()
            go_on.wait(30)
        return execute(context, stream)

    monkeypatch.setattr(FakeExecutionContext, "execute_async_v3", held_inside_the_capture)
    return in_capture, go_on


def test_threads_get_the_answers_they_would_get_alone_and_close_elsewhere(gpu_plan: tuple[FakeGpu, Path]) -> None:
    gpu, plan = gpu_plan
    segmenter = Segmenter(plan)
    assert isinstance(segmenter.device, CudaDevice)
    frames = _frames()
    calls = [(index, probabilities) for index in range(len(frames)) for probabilities in (False, True)]

    def answer(call: tuple[int, bool]) -> tuple[bytes, bytes | None]:
        result = segmenter.segment(frames[call[0]], probabilities=call[1])
        return result.mask.tobytes(), None if result.probabilities is None else result.probabilities.tobytes()

    alone: dict[tuple[int, bool], tuple[bytes, bytes | None]] = {}
    for call in calls:  # twice each: the second call of a frame geometry is captured into a CUDA graph and run
        alone[call] = answer(call)
        gpu.log.clear()
        assert answer(call) == alone[call]
        assert any(entry[0] == "graph" for entry in gpu.log), "no CUDA graph ran"
    together = threading.Barrier(4)

    def work(seed: int) -> int:
        order = np.random.default_rng(seed).permutation(len(calls))
        together.wait()
        wrong = sum(answer(calls[k]) != alone[calls[k]] for k in order)
        assert gpu.driver_stack() == [] and gpu.pycuda_stack() == [], "a context left current on a worker thread"
        return wrong

    with ThreadPoolExecutor(4) as pool:
        assert sum(pool.map(work, range(4))) == 0
    _on_another_thread(segmenter.close)
    assert gpu.primary(0).retains == 0 and gpu.driver_stack() == []


def test_two_cameras_of_two_sizes_reuse_or_replace_buffers_and_graphs(gpu_plan: tuple[FakeGpu, Path]) -> None:
    """A robot's front and rear cameras (a tiled and a whole frame on the tiny plan) on one segmenter, in turn from
    one thread and from two: each call's mask is the one a fresh segmenter gives, device memory stays at what one
    round of both sizes holds, and a size run again and again is captured and replayed after each change (the fake
    TensorRT refuses an enqueue under capture right after a shape change)."""
    gpu, plan = gpu_plan
    rng = np.random.default_rng(5)
    front, rear = (cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), np.uint8), (0, 0), 3) for h, w in ((72, 128),
                                                                                                     (48, 64)))
    alone = []
    for frame in (front, rear):
        with Segmenter(plan) as fresh:
            alone.append(fresh.segment(frame).mask)
    with Segmenter(plan) as segmenter, warnings.catch_warnings():
        warnings.simplefilter("error")  # a capture refused three times warns
        assert segmenter.tile_grid(72, 128).count > 1 and segmenter.tile_grid(48, 64).count == 1
        for frame, mask in ((front, alone[0]), (rear, alone[1])):
            assert np.array_equal(segmenter.segment(frame).mask, mask)
        held = gpu.live("device"), gpu.live("pinned")
        for turn in range(24):
            assert np.array_equal(segmenter.segment((front, rear)[turn % 2]).mask, alone[turn % 2])
        assert (gpu.live("device"), gpu.live("pinned")) == held
        wrong: list[int] = []

        def camera(index: int) -> None:
            wrong.extend(index for _ in range(12) if not np.array_equal(segmenter.segment((front, rear)[index]).mask,
                                                                         alone[index]))

        threads = [threading.Thread(target=camera, args=(index,)) for index in (0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert wrong == [] and not any(thread.is_alive() for thread in threads)
        for index in (0, 1, 0, 1):  # ending on the rear camera, as the rounds above did
            gpu.log.clear()
            masks = [segmenter.segment((front, rear)[index]).mask for _ in range(4)]  # warm-up, capture, replays
            assert all(np.array_equal(mask, alone[index]) for mask in masks)
            assert sum(entry[0] == "graph" for entry in gpu.log) >= 2, "no CUDA graph replayed after the change"
        assert (gpu.live("device"), gpu.live("pinned")) == held


def test_output_shape_from_another_thread_leaves_the_captured_graphs_alone(gpu_plan: tuple[FakeGpu, Path]) -> None:
    """It was answered by setting the shape of the execution context the frame path's graphs were captured with,
    outside its lock: the next replay computed from stale state (the fake refuses it)."""
    _, plan = gpu_plan
    frame = _frames()[0]
    with Segmenter(plan) as segmenter:
        alone = [segmenter.segment(frame).mask for _ in range(3)]  # warm-up, capture, replay
        shapes: list[tuple[int, ...]] = []
        _on_another_thread(lambda: shapes.append(segmenter.backend.output_shape((2, 3, 32, 32))))
        assert shapes == [(2, segmenter.info.num_classes, 32, 32)]
        assert np.array_equal(segmenter.segment(frame).mask, alone[0])


def test_enqueue_outside_a_device_session_is_refused(gpu_plan: tuple[FakeGpu, Path]) -> None:
    _, plan = gpu_plan
    with Segmenter(plan) as segmenter, pytest.raises(RuntimeError, match=r"inside 'with backend.device_session\(\):'"):
        segmenter.backend.enqueue(0, (1, 3, 32, 32), 0, 0)  # type: ignore[attr-defined]


def test_a_plan_whose_logits_disagree_with_its_description_is_refused(gpu_plan: tuple[FakeGpu, Path]) -> None:
    """output_shape answers from the model's description, so the engine must agree with it."""
    from unetrt.backends.tensorrt import TensorRTBackend
    from unetrt.plan_metadata import metadata_path

    _, plan = gpu_plan
    description = json.loads(metadata_path(plan).read_text())
    description["model"]["padding"] = "valid"
    metadata_path(plan).write_text(json.dumps(description))
    with pytest.raises(ValueError, match=r"returns logits of shape .* where its model description says .*; rebuild"):
        TensorRTBackend(plan)


def test_device_input_on_one_thread_leaves_a_capture_on_another_intact(gpu_plan: tuple[FakeGpu, Path],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Waiting for a caller's stream with a context-wide synchronize broke the CUDA graph another Segmenter was
    capturing at that moment (CUDA Programming Guide, "Prohibited and Unhandled Operations"): that size then ran
    without graphs for good, and this call failed."""
    import pycuda.driver as cuda
    gpu, plan = gpu_plan
    frame = _frames()[0]
    with Segmenter(plan) as capturing, Segmenter(plan) as other:
        alone = capturing.segment(frame).mask  # the first call of this size runs plainly; the next one captures
        in_capture, go_on = _hold_inside_a_capture(gpu, monkeypatch)
        masks: list[np.ndarray] = []
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            thread = threading.Thread(target=lambda: masks.append(capturing.segment(frame).mask))
            thread.start()
            try:
                assert in_capture.wait(30)
                with other.backend.device_session():  # type: ignore[attr-defined]
                    producer = cuda.Stream()
                    images = cuda.mem_alloc(3 * 32 * 32 * 4)
                logits = other.backend.infer_device(ArrayOnStream(int(images), (1, 3, 32, 32), producer.handle))
            finally:
                go_on.set()
                thread.join()
        assert logits.shape == (1, other.info.num_classes, 32, 32)
        assert [str(warning.message) for warning in caught] == []
        assert np.array_equal(masks[0], alone) and np.array_equal(capturing.segment(frame).mask, alone)
        with other.backend.device_session():  # type: ignore[attr-defined]
            images.free()


def test_legacy_stream_work_on_another_thread_during_a_capture_is_not_refused(gpu_plan: tuple[FakeGpu, Path],
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The backend captured its graphs on a blocking stream: while it did, any legacy-stream work in the primary
    context on any other thread (torch's default stream, a synchronous copy) was refused and broke the capture
    (CUDA Programming Guide, "Prohibited and Unhandled Operations": "When any stream in the same context is being
    captured, and it was not created with cudaStreamNonBlocking, any attempted use of the legacy stream is
    invalid")."""
    from fakes.cuda import primary_context_pushed

    gpu, plan = gpu_plan
    frame = _frames()[0]
    with Segmenter(plan) as capturing:
        alone = capturing.segment(frame).mask  # the first call of this size runs plainly; the next one captures
        in_capture, go_on = _hold_inside_a_capture(gpu, monkeypatch)
        masks: list[np.ndarray] = []
        thread = threading.Thread(target=lambda: masks.append(capturing.segment(frame).mask))
        gpu.log.clear()
        thread.start()
        try:
            assert in_capture.wait(30)
            with primary_context_pushed() as cuda:  # another library's work on the same GPU, on this thread
                memory = cuda.mem_alloc(64)
                cuda.memcpy_htod(memory, np.arange(64, dtype=np.uint8))
                memory.free()
        finally:
            go_on.set()
            thread.join()
        assert [entry for entry in gpu.log if entry[0] == "refused during capture"] == []
        assert any(entry[0] == "graph" for entry in gpu.log), "the capture was broken: no CUDA graph ran"
        assert np.array_equal(masks[0], alone)


def test_every_runtime_and_builder_shares_one_logger(gpu_plan: tuple[FakeGpu, Path], tiny_model_files: dict[str, Path],
                                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TensorRT's Logger documentation: "the logger is internally considered a singleton, and thus multiple
    instances of Runtime and/or Builder must all use the same logger" (Segmenters on several threads, a build
    beside them); a verbose build raises its verbosity while it lasts."""
    from fakes.tensorrt_builder import Builder

    from unetrt.backends.tensorrt import tensorrt_logger
    from unetrt.plan_build import BuildOptions, build_engine

    _, plan = gpu_plan
    builders: list[tuple[object, object]] = []
    start = Builder.__init__

    def recorded(builder: Builder, logger: object) -> None:
        builders.append((logger, logger.min_severity))  # type: ignore[attr-defined]
        start(builder, logger)

    monkeypatch.setattr(Builder, "__init__", recorded)
    opened: list[Segmenter] = []
    for _ in range(2):
        _on_another_thread(lambda: opened.append(Segmenter(plan)))
    build_engine(tiny_model_files["onnx"], tmp_path / "built.plan", BuildOptions(progress=False, verbose=True))
    try:
        logger = tensorrt_logger()
        assert [segmenter.backend._held.runtime.logger for segmenter in opened] == [logger, logger]  # type: ignore[attr-defined]
        assert [recorded for recorded, _ in builders] == [logger]
        import tensorrt as trt

        assert builders[0][1] == trt.Logger.VERBOSE and logger.min_severity == trt.Logger.WARNING
    finally:
        for segmenter in opened:
            segmenter.close()


def test_a_segmenter_dropped_on_another_thread_frees_its_device_memory_and_context(
        gpu_plan: tuple[FakeGpu, Path]) -> None:
    """A node torn down on an executor thread drops its segmenter without close(): its device memory and retained
    context were kept until the process ended."""
    from unetrt.dropped import release_when_dropped, wait_for_releases

    class Owner:
        """A stand-in owner whose release looks at the release thread's context stacks."""

    gpu, plan = gpu_plan
    frame = _frames()[0]
    held: list[Segmenter] = []

    def open_use_and_drop() -> None:
        held.append(Segmenter(plan))
        for _ in range(3):  # warm-up, capture, replay: every kind of buffer the path makes
            held[0].segment(frame)
        assert gpu.live("device") > 0 and gpu.primary(0).retains > 0
        held.clear()

    _on_another_thread(open_use_and_drop)
    assert wait_for_releases(30)
    assert gpu.primary(0).retains == 0
    assert gpu.live("device") == gpu.live("pinned") == gpu.live("library") == 0
    assert gpu.driver_stack() == [] and gpu.pycuda_stack() == []
    # The release thread lives on: it must not keep a (destroyed) context current for the next release.
    stacks: list[tuple[list[object], list[object]]] = []
    probe = Owner()
    release_when_dropped(probe, lambda: stacks.append((list(gpu.driver_stack()), list(gpu.pycuda_stack()))), "probe")
    del probe
    assert wait_for_releases(30) and stacks == [([], [])]


def test_a_segmenter_dropped_while_its_thread_captures_a_graph_leaves_the_capture_intact(
        gpu_plan: tuple[FakeGpu, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The garbage collector can end a segmenter on a thread that is capturing a CUDA graph, where freeing device
    memory is refused and breaks the capture (CUDA Driver API, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL): its release
    waits for unetrt's release thread."""
    from fakes.tensorrt import FakeExecutionContext

    from unetrt.dropped import wait_for_releases

    gpu, plan = gpu_plan
    frame = _frames()[0]
    dropped = [Segmenter(plan)]
    dropped[0].segment(frame)
    retains_of_dropped = gpu.primary(0).retains
    with Segmenter(plan) as capturing:
        alone = capturing.segment(frame).mask  # the first call of this size runs plainly; the next one captures
        retains_of_both = gpu.primary(0).retains
        execute = FakeExecutionContext.execute_async_v3
        drops: list[bool] = []

        def drop_inside_the_capture(context: FakeExecutionContext, stream: int) -> bool:
            if gpu.capturing(stream) and dropped:
                dropped.clear()
                drops.append(True)
            return execute(context, stream)

        monkeypatch.setattr(FakeExecutionContext, "execute_async_v3", drop_inside_the_capture)
        gpu.log.clear()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert np.array_equal(capturing.segment(frame).mask, alone)
        assert drops == [True]
        assert [entry for entry in gpu.log if entry[0] == "refused during capture"] == []
        assert any(entry[0] == "graph" for entry in gpu.log), "the capture was broken: no CUDA graph ran"
        assert [str(warning.message) for warning in caught] == []
        assert wait_for_releases(30)
        assert gpu.primary(0).retains == retains_of_both - retains_of_dropped
    assert gpu.primary(0).retains == 0 and gpu.live("device") == 0


def test_a_size_whose_capture_keeps_failing_leaves_no_stale_graph_to_another_size(
        gpu_plan: tuple[FakeGpu, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A frame size whose capture failed for good ran plainly without dropping the graph of the size before it:
    that graph was replayed next after the execution context had run another input shape (on a GPU: computed from
    stale state; the fake refuses the launch, and the call failed with 'cuGraphLaunch failed')."""
    from fakes.tensorrt import FakeExecutionContext

    from unetrt.cuda import CAPTURE_ATTEMPTS

    gpu, plan = gpu_plan
    small, large = _frames()[:2]
    with Segmenter(plan) as reference:
        alone = {id(small): reference.segment(small).mask, id(large): reference.segment(large).mask}
    execute = FakeExecutionContext.execute_async_v3

    def capture_broken_for_the_small_size(context: FakeExecutionContext, stream: int) -> bool:
        if gpu.capturing(stream) and context.shape is not None and context.shape[2:] == small.shape[:2]:
            gpu.invalidate_capture(stream)  # as another thread's context-wide synchronize does
        return execute(context, stream)

    monkeypatch.setattr(FakeExecutionContext, "execute_async_v3", capture_broken_for_the_small_size)
    with Segmenter(plan) as segmenter:
        with pytest.warns(RuntimeWarning, match=f"failed {CAPTURE_ATTEMPTS} times"):
            for _ in range(1 + CAPTURE_ATTEMPTS):
                assert np.array_equal(segmenter.segment(small).mask, alone[id(small)])
        for frame in (large, large, small, large, large, small, large):
            assert np.array_equal(segmenter.segment(frame).mask, alone[id(frame)])
    assert not any(entry[0] == "graph refused" for entry in gpu.log)


def test_a_failed_first_call_of_a_size_leaves_that_size_working(gpu_plan: tuple[FakeGpu, Path],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The first call of a size (the warm-up, which makes the logits buffer) failed, here for want of memory: the
    next call was taken for the capture, allocated inside it, was refused ('operation not permitted when stream
    is capturing'), and so was every later call of that size."""
    from unetrt.cuda import GpuResourceError

    _, plan = gpu_plan
    frame, other = _frames()[:2]
    with Segmenter(plan) as reference:
        alone = reference.segment(frame).mask
    with Segmenter(plan) as segmenter:
        segmenter.segment(other)
        run, short = segmenter.device.run, iter([True])

        def run_short_of_memory(batch: object) -> object:
            if next(short, False):
                raise GpuResourceError("the GPU has no memory left for the frame path's device buffers")
            return run(batch)  # type: ignore[arg-type]

        monkeypatch.setattr(segmenter.device, "run", run_short_of_memory)
        with pytest.raises(ValueError, match="no memory left"):
            segmenter.segment(frame)
        for _ in range(3):  # memory is back: warm-up, capture, replay
            assert np.array_equal(segmenter.segment(frame).mask, alone)


def _hold_enqueue(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """Make TensorRT's enqueue wait at its start: the first event is set when a call enters it, which goes on once
    the second is set."""
    from fakes.tensorrt import FakeExecutionContext

    entered, go_on = threading.Event(), threading.Event()
    execute = FakeExecutionContext.execute_async_v3

    def held(context: FakeExecutionContext, stream: int) -> bool:
        entered.set()
        assert go_on.wait(60)
        return execute(context, stream)

    monkeypatch.setattr(FakeExecutionContext, "execute_async_v3", held)
    return entered, go_on


def test_close_interrupted_while_it_waits_for_a_call_lets_the_next_close_release(
        gpu_plan: tuple[FakeGpu, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while close() waits for a call on an executor thread (a ROS 2 node shutting down): the first close
    had claimed the release, so the next close() waited for it for ever and the GPU memory and context stayed held."""
    gpu, plan = gpu_plan
    segmenter = Segmenter(plan)
    entered, go_on = _hold_enqueue(monkeypatch)
    call = threading.Thread(target=segmenter.segment, args=(_frames()[0],))
    call.start()
    assert entered.wait(60)

    def ctrl_c(*args: object, **kwargs: object) -> bool:
        raise KeyboardInterrupt  # what SIGINT raises in the main thread while it waits

    segmenter._calls_done.wait_for = ctrl_c  # type: ignore[method-assign]
    try:
        with pytest.raises(KeyboardInterrupt):
            segmenter.close()
    finally:
        del segmenter._calls_done.wait_for
        go_on.set()
    call.join(60)
    closing = threading.Thread(target=segmenter.close, daemon=True)
    closing.start()
    closing.join(60)
    assert not closing.is_alive(), "the second close() waits for a release nobody does"
    assert gpu.live("device") == 0 and gpu.primary(0).retains == 0


def test_an_interrupt_while_the_frame_path_opens_leaves_no_context_retained(
        gpu_plan: tuple[FakeGpu, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C once the CUDA device had retained its context and before the segmenter registered its release (a
    robot's pipeline restarted in one process): that retain was never released, one more at every restart."""
    import gc

    from unetrt import segmenter as segmenter_module
    from unetrt.dropped import wait_for_releases

    gpu, plan = gpu_plan

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(segmenter_module, "FramePath", interrupted)
    with pytest.raises(KeyboardInterrupt):
        Segmenter(plan)
    gc.collect()
    assert wait_for_releases(30)
    assert gpu.primary(0).retains == 0 and gpu.driver_stack() == []
    assert gpu.live("device") == gpu.live("pinned") == gpu.live("library") == 0


def test_close_interrupted_while_it_frees_the_path_is_finished_by_the_next_close(
        gpu_plan: tuple[FakeGpu, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C while close() freed the frame path's buffers: the backend was closed under the rest, the path's
    retained context was never released, and the next close() did nothing."""
    import pycuda.driver as cuda

    gpu, plan = gpu_plan
    segmenter = Segmenter(plan)
    for _ in range(3):  # warm-up, capture, replay: every kind of buffer the path makes
        segmenter.segment(_frames()[0])
    original, calls = cuda.DeviceAllocation.free, iter([True])

    def interrupted_after_the_first(allocation: object) -> None:
        original(allocation)
        if next(calls, False):
            raise KeyboardInterrupt  # the Ctrl-C's handler runs at the next bytecode

    monkeypatch.setattr(cuda.DeviceAllocation, "free", interrupted_after_the_first)
    with pytest.raises(KeyboardInterrupt):
        segmenter.close()
    segmenter.close()
    assert gpu.primary(0).retains == 0 and gpu.driver_stack() == []
    assert gpu.live("device") == gpu.live("pinned") == gpu.live("library") == 0
    with pytest.raises(ValueError, match="closed"):
        segmenter.segment(_frames()[0])


def test_a_segmenter_per_camera_gets_the_masks_it_gets_alone_and_outlives_the_others_close(
        gpu_plan: tuple[FakeGpu, Path]) -> None:
    """Two cameras in one process (ROS 2 nodes in one container), a segmenter each, opened at the same moment on
    their own threads and used there at once: each frame gets the mask it gets alone (each segmenter has its own
    engine, execution contexts, stream, buffers and CUDA graphs), and closing one while the other runs leaves the
    other working (the primary context is retained per owner)."""
    gpu, plan = gpu_plan
    frames = [frame for frame in _frames() for _ in range(3)]  # 3 in a row: warm-up, capture, replay per size
    with Segmenter(plan) as reference:
        alone = [reference.segment(frame).mask for frame in frames]
    gpu.log.clear()
    opened, together = threading.Barrier(2), threading.Barrier(2)
    first_closed = threading.Event()
    segmenters: dict[int, Segmenter] = {}
    wrong: dict[int, int] = {}

    def camera(index: int) -> None:
        opened.wait(30)
        segmenter = segmenters[index] = Segmenter(plan)
        together.wait(30)
        wrong[index] = sum(not np.array_equal(segmenter.segment(frame).mask, mask) for frame, mask in
                           zip(frames, alone, strict=True))
        if index == 0:
            segmenter.close()
            first_closed.set()
            return
        assert first_closed.wait(30)
        assert gpu.primary(0).retains > 0, "the first camera's close released the second's context"
        wrong[index] += sum(not np.array_equal(segmenter.segment(frame).mask, mask) for frame, mask in
                            zip(frames, alone, strict=True))
        segmenter.close()

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(camera, range(2)))
    assert wrong == {0: 0, 1: 0}
    first, second = (segmenters[index].backend._held for index in range(2))  # type: ignore[attr-defined]
    assert first is not second and segmenters[0].device is not segmenters[1].device
    assert any(entry[0] == "graph" for entry in gpu.log), "no CUDA graph ran"
    assert [entry for entry in gpu.log if "refused" in str(entry[0])] == []
    assert gpu.primary(0).retains == 0 and gpu.live("device") == gpu.live("library") == 0


def test_a_segmenter_on_the_gpu_path_holds_one_execution_context(gpu_plan: tuple[FakeGpu, Path]) -> None:
    """Every TensorRT execution context holds the engine's activation memory ("IExecutionContext requires a block of
    device memory for internal activation tensors during inference", NvInferRuntime.h); the backend made one at open
    for infer() and the frame path made a second one, which infer() never used: one activation block per camera
    wasted on an 8 GB Jetson. infer() called afterwards gets its own context and leaves the frame path's graphs
    alone."""
    from unetrt.backends.tensorrt import TensorRTBackend

    _, plan = gpu_plan
    frame = _frames()[0]
    with Segmenter(plan) as segmenter:
        masks = [segmenter.segment(frame).mask for _ in range(3)]  # warm-up, capture, replay
        engine = segmenter.backend._held.engine  # type: ignore[attr-defined]
        assert len(engine.contexts) == 1
        batch = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
        with TensorRTBackend(plan, cuda_graph=False) as alone:
            expected = alone.infer(batch)
        np.testing.assert_array_equal(segmenter.backend.infer(batch), expected)
        assert len(engine.contexts) == 2
        assert all(np.array_equal(segmenter.segment(frame).mask, masks[0]) for _ in range(2))
    with Segmenter(plan, device_path="host") as segmenter:
        segmenter.segment(frame)
        assert len(segmenter.backend._held.engine.contexts) == 1  # type: ignore[attr-defined]


def test_a_close_waiting_for_a_release_that_is_interrupted_finishes_it(
        gpu_plan: tuple[FakeGpu, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C in one close() while another thread's close() waited for its release: that close() returned as if the
    segmenter were released (its GPU memory and context still held), or, had it looked for the release's event a
    moment later, waited for one nobody sets."""
    gpu, plan = gpu_plan
    segmenter = Segmenter(plan)
    segmenter.segment(_frames()[0])
    releasing, interrupt = threading.Event(), threading.Event()
    backend_close, first = segmenter.backend.close, iter([True])

    def interrupted_once() -> None:
        if next(first, False):
            releasing.set()
            assert interrupt.wait(60)
            raise KeyboardInterrupt  # the Ctrl-C lands in this close()
        backend_close()

    monkeypatch.setattr(segmenter.backend, "close", interrupted_once)
    waiting = threading.Event()

    class WatchedEvent(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            waiting.set()
            return super().wait(timeout)

    segmenter._released = WatchedEvent()
    interrupted: list[bool] = []

    def close_interrupted() -> None:
        with pytest.raises(KeyboardInterrupt):
            segmenter.close()
        interrupted.append(True)

    first_close = threading.Thread(target=close_interrupted, daemon=True)
    first_close.start()
    assert releasing.wait(60)
    second_close = threading.Thread(target=segmenter.close, daemon=True)
    second_close.start()
    assert waiting.wait(60)
    interrupt.set()
    first_close.join(60)
    second_close.join(60)
    assert not second_close.is_alive(), "the second close() waits for a release nobody does"
    assert interrupted == [True]
    assert gpu.primary(0).retains == 0 and gpu.live("device") == gpu.live("pinned") == gpu.live("library") == 0


def test_three_cameras_each_on_its_own_thread_get_what_each_gets_alone(gpu_plan: tuple[FakeGpu, Path],
                                                                       tiny_model_files: dict[str, Path],
                                                                       tmp_path: Path) -> None:
    """Three cameras on one Jetson, each a ROS subscription whose callback runs on a thread of its own (a
    MultiThreadedExecutor): two segmenters of one engine file and one of another engine, opened on the main thread and
    called from threads with no current CUDA context. Every result is the one the call gives alone; no thread is
    left with a context current, and the segmenters close from the main thread with nothing freed outside its
    context."""
    gpu, plan = gpu_plan
    other = write_plan_from_onnx(tiny_model_files["onnx"], tmp_path / "other.plan", gpu,
                                 profile=((1, 3, 32, 32), (1, 3, 64, 64), (2, 3, 128, 128)))
    frames = _frames()
    cameras = [Segmenter(plan), Segmenter(plan), Segmenter(other, probabilities=True)]
    try:
        alone = [[camera.segment(frame) for frame in frames] for camera in cameras]
        together = threading.Barrier(len(cameras))
        wrong: list[int] = [0] * len(cameras)
        stacks: list[tuple[int, int]] = []

        def callback_thread(index: int) -> None:
            assert gpu.driver_stack() == [], "a ROS executor thread starts with no current context"
            together.wait()
            for _ in range(3):
                for frame, expected in zip(frames, alone[index], strict=True):
                    result = cameras[index].segment(frame)
                    same = np.array_equal(result.mask, expected.mask) and (
                        expected.probabilities is None or np.array_equal(result.probabilities,
                                                                         expected.probabilities))
                    wrong[index] += not same
            stacks.append((len(gpu.driver_stack()), len(gpu.pycuda_stack())))

        threads = [threading.Thread(target=callback_thread, args=(index,)) for index in range(len(cameras))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert wrong == [0, 0, 0] and stacks == [(0, 0)] * len(cameras)
    finally:
        for camera in cameras:
            camera.close()
    assert not [entry for entry in gpu.log if entry[0] == "tensorrt freed outside its context"]
    assert gpu.driver_stack() == [] and gpu.pycuda_stack() == [] and gpu.primary(0).retains == 0


def test_a_callback_with_its_own_pycuda_context_finds_it_current_afterwards(gpu_plan: tuple[FakeGpu, Path]) -> None:
    """A ROS node that made a pycuda context of its own (``Device(0).make_context()``) on its callback thread, for
    its own kernels, calls a segmenter opened elsewhere: the segmenter runs in its own context and leaves the node's
    current and pycuda's context stack as it found them."""
    import pycuda.driver as cuda

    gpu, plan = gpu_plan
    frame = _frames()[0]
    found: list[object] = []
    with Segmenter(plan) as segmenter:
        expected = segmenter.segment(frame).mask

        def node_callback() -> None:
            own = cuda.Device(0).make_context()
            try:
                before = (list(gpu.driver_stack()), list(gpu.pycuda_stack()))
                masks = [segmenter.segment(frame).mask for _ in range(3)]  # plain, captured, replayed
                found.append(all(np.array_equal(mask, expected) for mask in masks))
                found.append((list(gpu.driver_stack()), list(gpu.pycuda_stack())) == before)
                found.append(cuda.Context.get_current() == own)
            finally:
                cuda.Context.pop()
                own.detach()

        _on_another_thread(node_callback)
    assert found == [True, True, True]


def test_three_streams_on_one_engine_file_each_on_its_own_thread(gpu_plan: tuple[FakeGpu, Path]) -> None:
    """Three ``Stream``s opened from one engine file (each opens its own segmenter), each consumed on a thread of its
    own: every stream's masks are the ones a segmenter gives alone, in order, and no context is left current."""
    from unetrt.stream.pipeline import Stream

    gpu, plan = gpu_plan
    frames = _frames()
    with Segmenter(plan) as alone:
        expected = [alone.segment(frame).mask for frame in frames]
    answers: dict[int, list[bool]] = {}

    def camera(index: int) -> None:
        with Stream(list(frames), plan) as stream:
            same = [np.array_equal(result.mask, want) for result, want in zip(stream, expected, strict=True)]
        answers[index] = [*same, gpu.driver_stack() == [] and gpu.pycuda_stack() == []]

    threads = [threading.Thread(target=camera, args=(index,)) for index in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == {index: [True] * (len(frames) + 1) for index in range(3)}
    assert gpu.primary(0).retains == 0
    assert not [entry for entry in gpu.log if entry[0] == "tensorrt freed outside its context"]


def _larger_frame() -> np.ndarray:
    """A frame of more pixels than any of :func:`_frames` (a camera switched to a higher resolution)."""
    rng = np.random.default_rng(7)
    return cv2.GaussianBlur(rng.integers(0, 256, (120, 160, 3), np.uint8), (0, 0), 3)


def test_a_larger_frame_the_gpu_has_no_memory_for_leaves_the_size_before_it_working(
        gpu_plan: tuple[FakeGpu, Path]) -> None:
    """A Jetson short of memory, a camera switched to a larger resolution: its first frame failed in one line (no
    memory for its buffers), but after the frame path had dropped the working buffers of the size before it. The
    CUDA graph of that size, captured with their addresses, was then replayed by the next frame of that size beside
    the buffers made in their place (on a GPU: freed memory read and written; the fake refuses the access, and the
    call ended in pycuda's error)."""
    from unetrt.cuda import GpuResourceError

    gpu, plan = gpu_plan
    small, large = _frames()[0], _larger_frame()
    with Segmenter(plan) as reference:
        alone = {id(small): reference.segment(small).mask, id(large): reference.segment(large).mask}
    with Segmenter(plan) as segmenter:
        for _ in range(3):  # warm-up, capture, replay
            assert np.array_equal(segmenter.segment(small).mask, alone[id(small)])
        gpu.memory_bytes = gpu.device_bytes_in_use() + 1024  # less than the larger frame's input tiles
        for _ in range(2):
            with pytest.raises(GpuResourceError, match="no memory left for"):
                segmenter.segment(large)
            assert gpu.driver_stack() == [] and gpu.pycuda_stack() == []
        gpu.log.clear()
        assert np.array_equal(segmenter.segment(small).mask, alone[id(small)])
        assert not any(entry[0] == "graph" for entry in gpu.log), "a graph of freed buffers was replayed"
        for _ in range(2):  # captured again with the new buffers, then replayed
            assert np.array_equal(segmenter.segment(small).mask, alone[id(small)])
        assert any(entry[0] == "graph" for entry in gpu.log), "no CUDA graph ran"
        gpu.memory_bytes = None  # the other programs are gone
        for _ in range(3):
            assert np.array_equal(segmenter.segment(large).mask, alone[id(large)])
    assert gpu.primary(0).retains == 0 and gpu.live() == 0


def test_a_larger_frame_interrupted_at_its_first_buffer_leaves_the_size_before_it_working(
        gpu_plan: tuple[FakeGpu, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ctrl-C landing as a camera's larger frame makes its working buffers, once the frame path has freed those of
    the size before it: the CUDA graph of that size, captured with their addresses, must go with them
    (``CudaDevice.free`` drops it). A failed allocation also drops it, as it frees the cached buffers to try again,
    so the test of a frame the GPU has no memory for passed without that: an interrupt frees nothing, and the graph
    was then replayed beside the buffers made in their place (on a GPU: freed memory read and written; the fake
    refuses the access)."""
    from unetrt.frame_path import FramePath

    gpu, plan = gpu_plan
    small, large = _frames()[0], _larger_frame()
    with Segmenter(plan) as reference:
        alone = {id(small): reference.segment(small).mask, id(large): reference.segment(large).mask}
    allocate, armed = FramePath._allocate_buffers, [False]

    def interrupted(path: FramePath[Any], *args: Any) -> Any:
        if armed[0]:
            armed[0] = False
            raise KeyboardInterrupt  # what SIGINT raises at the next bytecode
        return allocate(path, *args)

    monkeypatch.setattr(FramePath, "_allocate_buffers", interrupted)
    with Segmenter(plan) as segmenter:
        for _ in range(3):  # warm-up, capture, replay
            assert np.array_equal(segmenter.segment(small).mask, alone[id(small)])
        armed[0] = True
        with pytest.raises(KeyboardInterrupt):
            segmenter.segment(large)
        assert not armed[0] and gpu.driver_stack() == [] and gpu.pycuda_stack() == []
        gpu.log.clear()
        assert np.array_equal(segmenter.segment(small).mask, alone[id(small)])
        assert not any(entry[0] == "graph" for entry in gpu.log), "a graph of freed buffers was replayed"
        for frame in (small, small, large, large, large):
            assert np.array_equal(segmenter.segment(frame).mask, alone[id(frame)])
    assert gpu.primary(0).retains == 0 and gpu.live() == 0


@pytest.mark.parametrize("failing", [2, 4], ids=["accumulator", "blend-window"])
def test_buffers_made_before_the_gpu_ran_out_are_freed_by_the_failed_call(gpu_plan: tuple[FakeGpu, Path],
                                                                          monkeypatch: pytest.MonkeyPatch,
                                                                          failing: int) -> None:
    """A tiled frame's working buffers are made one by one (input tiles, accumulator, weights, the blend windows
    each staged in page-locked memory): when the GPU had no memory left for a later one, those made before it
    stayed with the error's traceback, and a camera callback thread that dropped the error (not the thread that
    opened the segmenter, with the context no longer current) leaked them for good ([FREE-REACH])."""
    import pycuda.driver as cuda

    from unetrt.cuda import GpuResourceError

    gpu, plan = gpu_plan
    frame = _larger_frame()
    with Segmenter(plan, tile=64) as reference:
        alone = reference.segment(frame).mask
    with Segmenter(plan, tile=64) as segmenter:
        in_use, pinned = gpu.device_bytes_in_use(), gpu.live("pinned")
        allocate, made = cuda.mem_alloc, [0]

        def out_of_memory_at_one(nbytes: int) -> object:
            made[0] += 1
            if made[0] == failing:
                raise cuda.MemoryError("cuMemAlloc failed: out of memory")
            return allocate(nbytes)

        monkeypatch.setattr(cuda, "mem_alloc", out_of_memory_at_one)
        failed: list[str] = []

        def camera_callback() -> None:
            try:
                segmenter.segment(frame)
            except GpuResourceError as error:
                # The error, its traceback and what that holds go at the end of this block, on this thread.
                failed.append(str(error))

        _on_another_thread(camera_callback)
        assert made[0] == failing and len(failed) == 1
        assert [entry for entry in gpu.log if entry[0] == "device memory leaked"] == []
        assert gpu.device_bytes_in_use() == in_use and gpu.live("pinned") == pinned
        monkeypatch.setattr(cuda, "mem_alloc", allocate)
        for _ in range(3):
            assert np.array_equal(segmenter.segment(frame).mask, alone)
    assert gpu.live() == 0


@pytest.mark.parametrize("interrupt", [False, True], ids=["fails", "ctrl-c"])
def test_a_blend_window_whose_upload_fails_is_freed_by_the_failed_call(gpu_plan: tuple[FakeGpu, Path],
                                                                       monkeypatch: pytest.MonkeyPatch,
                                                                       interrupt: bool) -> None:
    """A tiled frame's blend window is allocated, staged in page-locked memory and uploaded: an upload the driver
    refused (or a Ctrl-C there) left both with the error's traceback, and a camera callback thread that dropped the
    error leaked them for good ([FREE-REACH]), as the buffers made before an allocation that failed once did."""
    from unetrt import cuda as unetrt_cuda

    gpu, plan = gpu_plan
    frame = _larger_frame()
    with Segmenter(plan, tile=64) as reference:
        alone = reference.segment(frame).mask
    library = type(unetrt_cuda.driver_library())
    upload, armed = library.cuMemcpyHtoDAsync_v2, [False]

    def refused(self: object, *args: object) -> int:
        if not armed[0]:
            return int(upload(self, *args))
        armed[0] = False
        if interrupt:
            raise KeyboardInterrupt
        return 999

    monkeypatch.setattr(library, "cuMemcpyHtoDAsync_v2", refused)
    with Segmenter(plan, tile=64) as segmenter:
        in_use, pinned = gpu.device_bytes_in_use(), gpu.live("pinned")
        failed: list[BaseException] = []

        def camera_callback() -> None:
            armed[0] = True
            try:
                segmenter.segment(frame)
            except (RuntimeError, KeyboardInterrupt) as error:
                # The error, its traceback and what that holds go at the end of this block, on this thread.
                failed.append(type(error)(str(error)))

        _on_another_thread(camera_callback)
        assert not armed[0] and len(failed) == 1, failed
        assert [entry for entry in gpu.log if "leaked" in str(entry[0])] == []
        assert gpu.device_bytes_in_use() == in_use and gpu.live("pinned") == pinned
        for _ in range(3):
            assert np.array_equal(segmenter.segment(frame).mask, alone)
    assert gpu.live() == 0


@pytest.mark.parametrize("integrated", [True, False], ids=["jetson", "discrete"])
def test_a_tiled_frame_whose_page_locked_memory_fits_without_that_of_earlier_sizes_is_segmented(
        gpu_plan: tuple[FakeGpu, Path], monkeypatch: pytest.MonkeyPatch, integrated: bool) -> None:
    """Page-locked memory runs out too (cuMemHostAlloc: CUDA_ERROR_OUT_OF_MEMORY; on a Jetson it is the GPU's one
    memory). Where the frame path kept page-locked buffers of earlier frame sizes, a tiled frame's blend window,
    staged in page-locked memory, failed with "no memory left ... close other programs" while unetrt held that
    memory itself: every other page-locked buffer was retried after the cached ones were freed, not that one."""
    import pycuda.driver as cuda

    gpu, plan = gpu_plan
    gpu.integrated = integrated
    large = _larger_frame()
    with Segmenter(plan, tile=64) as alone:
        want = alone.segment(large).mask
    rng = np.random.default_rng(3)
    with Segmenter(plan, tile=64) as segmenter:
        for height, width in ((48, 64), (40, 56), (64, 32), (56, 48)):  # each taken whole: no blend windows
            segmenter.segment(rng.integers(0, 256, (height, width, 3), np.uint8))
        allocate, room = cuda.pagelocked_empty, [gpu.live("pinned")]

        def short_of_memory(*args: object, **kwargs: object) -> np.ndarray:
            if gpu.live("pinned") >= room[0]:
                raise cuda.MemoryError("cuMemHostAlloc failed: out of memory")
            return allocate(*args, **kwargs)

        monkeypatch.setattr(cuda, "pagelocked_empty", short_of_memory)
        for _ in range(3):  # warm-up, capture, replay
            assert np.array_equal(segmenter.segment(large).mask, want)
        assert gpu.driver_stack() == [] and gpu.pycuda_stack() == []
    assert gpu.live() == 0


@pytest.mark.parametrize("integrated", [True, False], ids=["jetson", "discrete"])
def test_a_larger_frame_that_fits_without_the_buffers_of_earlier_sizes_is_segmented(
        gpu_plan: tuple[FakeGpu, Path], integrated: bool) -> None:
    """The buffers of earlier frame sizes stay cached to spare an allocation when those sizes come again: a larger
    frame on a GPU with room for its buffers once those were freed failed, telling the user to close other programs
    while unetrt held the memory itself."""
    gpu, plan = gpu_plan
    gpu.integrated = integrated
    large = _larger_frame()
    with Segmenter(plan) as alone:
        opened = gpu.device_bytes_in_use()
        want = alone.segment(large).mask
        needed = gpu.device_bytes_in_use() - opened  # all a segmenter holds after segmenting that frame alone
    with Segmenter(plan) as segmenter:
        opened = gpu.device_bytes_in_use()
        for frame in _frames():
            segmenter.segment(frame)
        assert gpu.device_bytes_in_use() > opened
        gpu.memory_bytes = opened + needed
        for _ in range(3):  # warm-up, capture, replay
            assert np.array_equal(segmenter.segment(large).mask, want)
        assert gpu.driver_stack() == [] and gpu.pycuda_stack() == []
    assert gpu.live() == 0


# (where it fails, the call of the frame size that meets it: 0 the warm-up, 1 the capture, 3 a replay)
FAILING_STEPS = [("allocation", 0), ("extract launch", 0), ("extract launch", 1), ("enqueue", 0), ("enqueue", 1),
                 ("stream synchronize", 0), ("stream synchronize", 1), ("stream synchronize", 3), ("download", 0),
                 ("download", 3), ("graph launch", 1), ("graph launch", 3)]


@pytest.mark.parametrize("interrupt", [False, True], ids=["fails", "ctrl-c"])
@pytest.mark.parametrize(("step", "call"), FAILING_STEPS, ids=[f"{step}-{call}" for step, call in FAILING_STEPS])
def test_a_call_that_fails_or_is_interrupted_at_any_step_leaves_the_next_frames_their_masks(
        gpu_plan: tuple[FakeGpu, Path], monkeypatch: pytest.MonkeyPatch, step: str, call: int,
        interrupt: bool) -> None:
    """Each step of a call on the GPU path failing once (the GPU out of memory, a kernel launch the device refuses,
    TensorRT's enqueue refused, a driver call failing) or a KeyboardInterrupt landing there: the caller gets one
    line (or the interrupt), the thread's context stacks are as before, the frames after get the masks a fresh
    segmenter gives (other sizes too), and close() frees everything."""
    import pycuda.driver as cuda
    from fakes.kernels import FakeKernels
    from fakes.tensorrt import FakeExecutionContext

    from unetrt import cuda as unetrt_cuda
    from unetrt.cuda import GpuResourceError

    gpu, plan = gpu_plan
    frame, other = _frames()[:2]
    with Segmenter(plan) as reference:
        alone = {id(frame): reference.segment(frame).mask, id(other): reference.segment(other).mask}
    armed = [False]

    def fails_now() -> bool:
        """Whether the armed failure happens here (once); raises the interrupt in its place."""
        if not armed[0]:
            return False
        armed[0] = False
        if interrupt:
            raise KeyboardInterrupt
        return True

    if step == "allocation":
        allocate = cuda.mem_alloc
        monkeypatch.setattr(cuda, "mem_alloc", lambda nbytes: (_ for _ in ()).throw(
            cuda.MemoryError("cuMemAlloc failed: out of memory")) if fails_now() else allocate(nbytes))
    elif step == "extract launch":
        extract = FakeKernels.extract_tiles_cuda

        def launch(kernels: FakeKernels, *args: object, **kwargs: object) -> None:
            if fails_now():  # as the CUDA build's launcher reports a launch the device refuses
                raise RuntimeError("extract_tiles_cuda launch failed: cudaErrorInvalidConfiguration (invalid "
                                   "configuration argument)")
            extract(kernels, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(FakeKernels, "extract_tiles_cuda", launch)
    elif step == "enqueue":
        execute = FakeExecutionContext.execute_async_v3
        monkeypatch.setattr(FakeExecutionContext, "execute_async_v3",
                            lambda context, stream: False if fails_now() else execute(context, stream))
    else:
        library = type(unetrt_cuda.driver_library())
        name = {"stream synchronize": "cuStreamSynchronize", "download": "cuMemcpyDtoHAsync_v2",
                "graph launch": "cuGraphLaunch"}[step]
        driver_call = getattr(library, name)
        monkeypatch.setattr(library, name, lambda self, *args: 999 if fails_now() else driver_call(self, *args))
    with Segmenter(plan) as segmenter:
        for _ in range(call):
            assert np.array_equal(segmenter.segment(frame).mask, alone[id(frame)])
        armed[0] = True
        try:
            mask = segmenter.segment(frame).mask
        except KeyboardInterrupt:
            assert interrupt
        except (GpuResourceError, RuntimeError) as error:
            assert not interrupt and "\n" not in str(error)
        else:  # a capture refused is run plainly: the frame is still segmented
            assert step in ("extract launch", "enqueue") and call == 1 and not interrupt
            assert np.array_equal(mask, alone[id(frame)])
        assert not armed[0], f"nothing failed at the {step}"
        assert gpu.driver_stack() == [] and gpu.pycuda_stack() == []
        for later in (frame, frame, frame, other, other, other, frame):
            assert np.array_equal(segmenter.segment(later).mask, alone[id(later)])
    assert gpu.primary(0).retains == 0 and gpu.live() == 0


def test_a_camera_thread_s_bad_frames_and_memory_failures_leave_the_other_threads_answers(
        gpu_plan: tuple[FakeGpu, Path]) -> None:
    """Robot code calling one segmenter from three camera callback threads while a fourth sends frames that are
    refused (wrong dtype, empty, five channels, NaN) or larger than the GPU has memory for: the others get the masks
    they get alone, every thread's context stacks are as before, and close() frees everything."""
    from unetrt.cuda import GpuResourceError

    gpu, plan = gpu_plan
    frames = _frames()[:3]
    with Segmenter(plan) as reference:
        alone = [reference.segment(frame).mask for frame in frames]
    bad = [frames[0].astype(np.int32), np.zeros((0, 64, 3), np.uint8), np.zeros((48, 64, 5), np.uint8),
           np.full((48, 64), np.nan, np.float32)]
    with Segmenter(plan) as segmenter:
        for frame in frames:
            segmenter.segment(frame)
        gpu.memory_bytes = gpu.device_bytes_in_use() + 1024  # room for no larger frame's buffers
        together = threading.Barrier(4)
        refused: list[ValueError] = []

        def camera(index: int) -> int:
            together.wait(30)
            wrong = sum(not np.array_equal(segmenter.segment(frames[index]).mask, alone[index]) for _ in range(12))
            assert gpu.driver_stack() == [] and gpu.pycuda_stack() == []
            return wrong

        def bad_camera() -> None:
            together.wait(30)
            for _ in range(3):
                for frame in [*bad, _larger_frame()]:
                    with pytest.raises(ValueError) as error:
                        segmenter.segment(frame)
                    refused.append(error.value)
            assert gpu.driver_stack() == [] and gpu.pycuda_stack() == []

        with ThreadPoolExecutor(4) as pool:
            failing = pool.submit(bad_camera)
            assert list(pool.map(camera, range(3))) == [0, 0, 0]
            failing.result(60)
        assert [isinstance(error, GpuResourceError) for error in refused] == [False] * 4 + [True] + [False] * 4 + \
            [True] + [False] * 4 + [True]
        assert [entry for entry in gpu.log if "leaked" in str(entry[0])] == []
    assert gpu.primary(0).retains == 0 and gpu.live() == 0


def test_close_from_another_thread_waits_for_the_call_in_flight_which_gets_its_mask(
        gpu_plan: tuple[FakeGpu, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A node shutting down closes the segmenter while a camera's call is inside TensorRT's enqueue: close() returns
    only after it, which gets its own mask with its thread's context stacks as before; a call after it is one
    ValueError, and everything is freed."""
    gpu, plan = gpu_plan
    frame = _frames()[1]
    with Segmenter(plan) as reference:
        alone = reference.segment(frame).mask
    segmenter = Segmenter(plan)
    entered, go_on = _hold_enqueue(monkeypatch)
    masks: list[np.ndarray] = []
    stacks: list[bool] = []

    def camera() -> None:
        masks.append(segmenter.segment(frame).mask)
        stacks.append(gpu.driver_stack() == [] and gpu.pycuda_stack() == [])

    call = threading.Thread(target=camera)
    call.start()
    assert entered.wait(60)
    closing = threading.Thread(target=segmenter.close)
    closing.start()
    closing.join(0.2)
    assert closing.is_alive(), "close() returned with a call in flight"
    go_on.set()
    for thread in (call, closing):
        thread.join(60)
        assert not thread.is_alive()
    assert len(masks) == 1 and np.array_equal(masks[0], alone) and stacks == [True]
    with pytest.raises(ValueError, match="closed"):
        segmenter.segment(frame)
    assert gpu.primary(0).retains == 0 and gpu.live() == 0


def test_a_ctrl_c_between_two_frees_of_close_still_frees_every_buffer_of_the_path(
        gpu_plan: tuple[FakeGpu, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A Ctrl-C landing in close() between the frees of the path's idle buffers (a tiled frame's batch,
    accumulator, weights and blend windows) left the rest to the KeyboardInterrupt's traceback, and the next close()
    found the idle set already emptied: while the traceback was held (a supervisor logging it), they leaked. The rest
    are freed before the interrupt goes on, and the second close() releases what is left."""
    gpu, plan = gpu_plan
    segmenter = Segmenter(plan, tile=64)
    segmenter.segment(_larger_frame())
    device = segmenter._path.device
    free, first = device.free, iter([True])

    def interrupted_after_the_first(memory: object) -> None:
        free(memory)
        if next(first, False):
            raise KeyboardInterrupt  # the Ctrl-C's handler runs at the next bytecode

    monkeypatch.setattr(device, "free", interrupted_after_the_first)
    with pytest.raises(KeyboardInterrupt) as interrupted:
        segmenter.close()
    segmenter.close()
    assert interrupted.value is not None  # its traceback, and what it holds, still alive here
    assert gpu.live() == 0 and gpu.primary(0).retains == 0


def test_a_ctrl_c_between_the_two_frees_of_a_blend_window_still_frees_its_staging_copy(
        gpu_plan: tuple[FakeGpu, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A blend window is two allocations, its device memory and the page-locked staging copy its upload read:
    CudaDevice.free freed them one after the other, so a Ctrl-C landing in close() after the first left the staging
    copy to the interrupt's traceback (the frame path's every-buffer loop goes on to the next buffer, not to the
    rest of this one), leaked while a supervisor held the traceback."""
    gpu, plan = gpu_plan
    segmenter = Segmenter(plan, tile=64)
    segmenter.segment(_larger_frame())
    device = segmenter._path.device
    free_buffer, free_memory, first = device.free, device.driver.free, iter([True])
    in_a_window: list[bool] = []

    def freeing(buffer: Any) -> None:
        in_a_window.append(isinstance(buffer.owner, tuple))
        free_buffer(buffer)

    def interrupted_after_a_windows_first(memory: object) -> None:
        free_memory(memory)
        if in_a_window[-1] and next(first, False):
            raise KeyboardInterrupt  # the Ctrl-C's handler runs at the next bytecode

    monkeypatch.setattr(device, "free", freeing)
    monkeypatch.setattr(device.driver, "free", interrupted_after_a_windows_first)
    with pytest.raises(KeyboardInterrupt) as interrupted:
        segmenter.close()
    segmenter.close()
    assert interrupted.value is not None and any(in_a_window)  # its traceback, and what it holds, still alive here
    assert (gpu.live("device"), gpu.live("pinned"), gpu.primary(0).retains) == (0, 0, 0)
