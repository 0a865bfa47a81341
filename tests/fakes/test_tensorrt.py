"""The fake TensorRT runtime's own rules (tests/fakes/tensorrt.py): it refuses what TensorRT refuses, so that unetrt
code that breaks a rule fails here, not first on a Jetson."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fakes.cuda import FakeGpu, capturing_on_another_thread, install_fake_gpu, primary_context_pushed
from fakes.tensorrt import Logger, install_fake_tensorrt, write_plan_from_onnx
from fakes.tensorrt_builder import install_builder

pytestmark = pytest.mark.gpu_contract

SHAPE = (1, 3, 32, 32)


@pytest.mark.parametrize("driver, starts", [(12080, False), (13000, True), (13020, True)])
def test_tensorrt_for_cuda_13_starts_only_on_a_driver_of_cuda_13(driver: int, starts: bool,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """[DRIVER]: the runtime and the builder return null (the bindings' TypeError) after logging error 35, and any
    driver of the wheel's CUDA major version runs it."""
    gpu = install_fake_gpu(monkeypatch, FakeGpu(integrated=False, driver_version=driver))
    trt = install_fake_tensorrt(monkeypatch, gpu, "11.0.0", built_for_cuda=13)
    install_builder(trt, gpu)
    for factory in (trt.Runtime, trt.Builder):
        logger = Logger()
        if starts:
            factory(logger)
            assert logger.messages == []
            continue
        with pytest.raises(TypeError, match="factory function returned nullptr"):
            factory(logger)
        assert logger.messages[0].startswith("CUDA initialization failure with error: 35")


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch, tiny_model_files: dict[str, Path],
            tmp_path: Path) -> tuple[FakeGpu, Any, bytes]:
    """(the fake GPU, a fake TensorRT runtime, the bytes of a fake plan of the tiny model)."""
    gpu = install_fake_gpu(monkeypatch)
    trt = install_fake_tensorrt(monkeypatch, gpu)
    plan = write_plan_from_onnx(tiny_model_files["onnx"], tmp_path / "tiny.plan", gpu)
    return gpu, trt.Runtime(trt.Logger(trt.Logger.WARNING)), plan.read_bytes()


@pytest.fixture
def bound(runtime: tuple[FakeGpu, Any, bytes]) -> Iterator[tuple[FakeGpu, Any, Any]]:
    """(the GPU, pycuda, an execution context of an engine deserialised in device 0's primary context, its input
    shape and tensor addresses set), with that context current."""
    gpu, trt_runtime, plan = runtime
    with primary_context_pushed() as cuda:
        engine = trt_runtime.deserialize_cuda_engine(plan)
        context = engine.create_execution_context()
        memory = [cuda.mem_alloc(4 * 11 * 32 * 32) for _ in range(2)]
        assert context.set_input_shape("image", SHAPE)
        assert context.set_tensor_address("image", int(memory[0]))
        assert context.set_tensor_address("logits", int(memory[1]))
        yield gpu, cuda, context
        cuda.Context.synchronize()
        del context, engine  # destroyed in their own context [TEARDOWN]


def test_an_engine_runs_only_in_the_cuda_context_it_was_deserialised_in(
        bound: tuple[FakeGpu, Any, Any]) -> None:
    """[ENGINE-CONTEXT]: TensorRT's FAQ binds an engine and its execution contexts to the GPU current when it was
    deserialised; an enqueue with another context current is refused and logged."""
    _gpu, cuda, context = bound
    stream = cuda.Stream()
    own = cuda.Device(0).make_context()  # a pycuda.autoinit-style context of the same device
    try:
        assert not context.execute_async_v3(stream.handle)
        assert context.refused[-1] == "enqueue outside the engine's CUDA context"
        assert "not current" in context.engine.logger_box[0].messages[-1]
    finally:
        own.detach()
    assert context.execute_async_v3(stream.handle)  # the engine's own context is current again
    stream.synchronize()


def test_an_engine_with_no_context_current_is_refused(bound: tuple[FakeGpu, Any, Any]) -> None:
    """[ENGINE-CONTEXT]: with no context current, nothing the engine holds is reachable."""
    gpu, cuda, context = bound
    stream = cuda.Stream()
    popped = gpu.driver_stack().pop()
    try:
        assert not context.execute_async_v3(stream.handle)
    finally:
        gpu.driver_stack().append(popped)


def test_one_execution_context_runs_on_one_stream_at_a_time(bound: tuple[FakeGpu, Any, Any]) -> None:
    """[CONTEXT-STREAMS]: enqueueV3 of one execution context on two streams at once is undefined; the same stream
    orders the work, and once the first stream is done the other one may take it."""
    _gpu, cuda, context = bound
    one, other = cuda.Stream(), cuda.Stream()
    assert context.execute_async_v3(one.handle)
    assert not context.execute_async_v3(other.handle)
    assert context.refused[-1] == "enqueue while this context still runs on another stream"
    assert context.execute_async_v3(one.handle)
    one.synchronize()
    assert context.execute_async_v3(other.handle)
    other.synchronize()


def test_tensorrt_cannot_allocate_while_another_thread_captures_in_global_mode(
        runtime: tuple[FakeGpu, Any, bytes]) -> None:
    """[CAPTURE-ALLOC]: deserialising and creating an execution context take cudaMalloc, which a global-mode capture
    on another thread refuses: both return None, and the capture is invalidated."""
    gpu, trt_runtime, plan = runtime
    with primary_context_pushed():
        with capturing_on_another_thread():
            assert trt_runtime.deserialize_cuda_engine(plan) is None
            assert "operation not permitted when stream is capturing" in trt_runtime.logger.messages[-1]
        engine = trt_runtime.deserialize_cuda_engine(plan)
        with capturing_on_another_thread():
            assert engine.create_execution_context() is None
        assert engine.create_execution_context() is not None
        assert ("refused during capture", "cudaMalloc") in gpu.log
        del engine


def test_a_plan_of_another_gpu_model_of_the_same_architecture_loads_with_a_warning(
        runtime: tuple[FakeGpu, Any, bytes], tiny_model_files: dict[str, Path], tmp_path: Path) -> None:
    """[GPU-MODEL]: TensorRT warns for a plan built on another GPU model of the same compute capability and loads it;
    another compute capability is refused."""
    _gpu, trt_runtime, _plan = runtime
    with primary_context_pushed():
        nx = write_plan_from_onnx(tiny_model_files["onnx"], tmp_path / "nx.plan", FakeGpu(name="Orin NX (fake)"))
        engine = trt_runtime.deserialize_cuda_engine(nx.read_bytes())
        assert engine is not None
        assert "across different models of devices" in trt_runtime.logger.messages[-1]
        del engine
        h100 = write_plan_from_onnx(tiny_model_files["onnx"], tmp_path / "h100.plan",
                                    FakeGpu(name="NVIDIA H100", compute_capability=(9, 0)))
        assert trt_runtime.deserialize_cuda_engine(h100.read_bytes()) is None
        assert "expecting compute 8.7 got compute 9.0" in trt_runtime.logger.messages[-1]


# The fake classes the product calls, and the TensorRT classes they stand for (tensorrt-stubs names).
_STAND_INS = {"FakeExecutionContext": "IExecutionContext", "FakeEngine": "ICudaEngine", "Runtime": "Runtime",
              "Builder": "Builder", "BuilderConfig": "IBuilderConfig", "OptimizationProfile": "IOptimizationProfile",
              "OnnxParser": "OnnxParser", "IProgressMonitor": "IProgressMonitor", "TimingCache": "ITimingCache",
              "Layer": "ILayer", "NetworkDefinition": "INetworkDefinition"}


def _stub_methods() -> dict[str, dict[str, list[list[str]]]]:
    """class -> method -> the parameter names of each overload, from the installed tensorrt-stubs."""
    import ast
    import importlib.util
    import re

    spec = importlib.util.find_spec("tensorrt_bindings")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("tensorrt-stubs is not installed (pip install -e '.[dev]')")
    source = (Path(next(iter(spec.submodule_search_locations))) / "tensorrt.pyi").read_text()
    # The stubs' syntax errors, patched as scripts/typecheck.sh patches them for mypy; a class that still does not
    # parse is left out.
    source = re.sub(r"\(self(: [A-Za-z0-9]+)?, in: ", r"(self\1, in_: ", source)
    source = source.replace(", channel_axis: int) -> IScaleLayer", ", channel_axis: int = ...) -> IScaleLayer")
    classes: dict[str, dict[str, list[list[str]]]] = {}
    for chunk in re.split(r"\n(?=class )", source):
        try:
            tree = ast.parse(chunk)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                methods = classes.setdefault(node.name, {})
                for item in node.body:
                    if isinstance(item, ast.FunctionDef):
                        names = [arg.arg for arg in (*item.args.posonlyargs, *item.args.args)][1:]
                        methods.setdefault(item.name, []).append(names)
    return classes


def test_the_fakes_take_the_parameters_tensorrt_names() -> None:
    """Every public method of a fake that stands for a TensorRT class takes the parameter names of one of the real
    method's overloads (tensorrt-stubs, which scripts/typecheck.sh checks the product against), so that a call the
    product makes with keywords runs alike on both."""
    from fakes import tensorrt, tensorrt_builder

    stubs = _stub_methods()
    wrong = []
    for fake_name, real_name in _STAND_INS.items():
        fake = getattr(tensorrt, fake_name, None) or getattr(tensorrt_builder, fake_name)
        real = stubs[real_name]
        for name, member in vars(fake).items():
            if (name.startswith("_") and name != "__init__") or not inspect.isfunction(member) or name not in real:
                continue
            names = [parameter for parameter in inspect.signature(member).parameters][1:]
            if not any(names == overload[:len(names)] for overload in real[name]):
                wrong.append(f"{fake_name}.{name}{tuple(names)}: TensorRT's {real_name}.{name} takes {real[name]}")
    assert wrong == [], "\n".join(wrong)
