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


def _half(values: Any) -> Any:
    """``values`` stored as IEEE half and read back (round to nearest even; +-inf beyond 65504)."""
    import numpy as np

    with np.errstate(over="ignore"):
        return np.asarray(values, np.float32).astype(np.float16).astype(np.float32)


def _scaling_network(path: Path) -> dict[str, Any]:
    """A described ONNX network, per pixel: a 1x1 convolution (3 -> 3 channels, with bias), a Mul by 1000.3, and the
    head, an Add of 0.1 (which TensorRT 10 runs in FP32, pinned); returns its weights."""
    import numpy as np
    import onnx
    from conftest import tiny_info
    from onnx import TensorProto, helper, numpy_helper

    from unetrt.model_file import write_onnx_description

    rng = np.random.default_rng(7)
    weights = {"w": (rng.integers(-16, 17, (3, 3, 1, 1)) / 16).astype(np.float32),
               "b": (rng.integers(-8, 9, 3) / 8).astype(np.float32),
               "scale": np.array(1000.3, np.float32), "shift": np.array(0.1, np.float32)}
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "w", "b"], ["mixed"]), helper.make_node("Mul", ["mixed", "scale"],
                                                                                  ["scaled"]),
         helper.make_node("Add", ["scaled", "shift"], ["logits"])], "scaling",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 3, "h", "w"])],
        [numpy_helper.from_array(value, name) for name, value in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    write_onnx_description(model, tiny_info())
    onnx.save(model, str(path))
    return weights


def _fp16_emulation(images: Any, weights: dict[str, Any]) -> Any:
    """numpy's FP16 kernels for :func:`_scaling_network`: each layer reads halves, computes in FP32 and stores half;
    the head computes in FP32 with its own weight unrounded."""
    import numpy as np

    w = _half(weights["w"])[:, :, 0, 0]
    mixed = _half(np.einsum("oc,nchw->nohw", w, _half(images)) + _half(weights["b"])[None, :, None, None])
    scaled = _half(mixed * _half(weights["scale"]))
    return scaled + weights["shift"]


def _engine_output(trt: Any, plan: Path, images: Any) -> Any:
    """What the fake engine of ``plan`` writes for ``images`` through execute_async_v3 (device 0's context)."""
    import numpy as np

    with primary_context_pushed() as cuda:
        engine = trt.Runtime(Logger()).deserialize_cuda_engine(plan.read_bytes())
        context = engine.create_execution_context()
        dtype = np.dtype(engine.get_tensor_dtype("image").value)
        source, target = cuda.mem_alloc(images.size * dtype.itemsize), cuda.mem_alloc(images.size * 4)
        engine.gpu.view(int(source), images.shape, dtype.name)[...] = images
        assert context.set_input_shape("image", images.shape)
        assert context.set_tensor_address("image", int(source)) and context.set_tensor_address("logits", int(target))
        stream = cuda.Stream()
        assert context.execute_async_v3(stream.handle)
        stream.synchronize()
        out = np.array(engine.gpu.view(int(target), images.shape, "float32"))
        del context, engine
    return out


def test_an_fp16_engine_computes_each_layer_in_half_and_overflows_where_fp32_does_not(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """[FP16]: a weakly typed FP16 engine gives what numpy's per-layer float16 emulation gives, bit for bit: weights
    and each layer's output rounded to half, FP32 inside a layer, the pinned head in FP32; past 65504 a layer's
    output is inf (-inf), where the FP32 engine of the same network stays finite and equals ONNX Runtime's FP32."""
    import numpy as np
    import onnxruntime as ort

    gpu = install_fake_gpu(monkeypatch)
    trt = install_fake_tensorrt(monkeypatch, gpu)
    weights = _scaling_network(tmp_path / "scaling.onnx")
    rng = np.random.default_rng(3)
    # Multiples of 1/64 up to 64 and weights of 1/16 and 1/8: the convolution's FP32 sums are exact, so any
    # order of accumulation gives the same bits; a sum past 65.5 passes 65504 once scaled.
    images = (rng.integers(-64 * 64, 64 * 64 + 1, (2, 3, 16, 16)) / 64).astype(np.float32)
    images[0, :, 0, 0] = [60.0, 60.0, 60.0]
    images[0, 0, 1, 1] = np.nan
    fp16 = write_plan_from_onnx(tmp_path / "scaling.onnx", tmp_path / "fp16.plan", gpu, precision="fp16")
    fp32 = write_plan_from_onnx(tmp_path / "scaling.onnx", tmp_path / "fp32.plan", gpu, precision="fp32")
    got16, got32 = _engine_output(trt, fp16, images), _engine_output(trt, fp32, images)
    want = _fp16_emulation(images, weights)
    np.testing.assert_array_equal(got16, want)  # NaN where numpy has NaN, inf where it has inf
    overflow = np.isinf(got16) & np.isfinite(got32)
    assert overflow.any() and (np.abs(got32[overflow]) > 65504).all()
    assert np.isnan(got16[0, :, 1, 1]).all() and np.isnan(got32[0, :, 1, 1]).all()
    near = np.isfinite(got16)
    assert not np.array_equal(got16[near], got32[near])  # the halves' rounding shows
    reference = ort.InferenceSession(str(tmp_path / "scaling.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(got32, reference.run(None, {"image": images})[0])


def test_fp16_input_binding_and_an_int8_engine_compute_in_fp16_too(monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path) -> None:
    """[FP16]: an engine that declares an FP16 input (unet-build's on TensorRT 10) reads the caller's halves; an INT8
    engine (the FP16 flag set with INT8) runs its layers outside Q/DQ pairs in FP16 as well."""
    import numpy as np

    gpu = install_fake_gpu(monkeypatch)
    trt = install_fake_tensorrt(monkeypatch, gpu)
    weights = _scaling_network(tmp_path / "scaling.onnx")
    images = _half(np.random.default_rng(4).uniform(-70, 70, (1, 3, 16, 16)))
    for precision, input_dtype in (("fp16", "float16"), ("int8", "float32")):
        plan = write_plan_from_onnx(tmp_path / "scaling.onnx", tmp_path / f"{precision}.plan", gpu,
                                    precision=precision, input_dtype=input_dtype)
        np.testing.assert_array_equal(_engine_output(trt, plan, images.astype(input_dtype)),
                                      _fp16_emulation(images, weights))


def test_a_strongly_typed_fp16_graph_computes_in_half_too(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """[FP16]: a strongly typed network's FLOAT16 tensors are halves (TensorRT adheres to the graph's types), where
    ONNX Runtime's CPU provider alone runs an FP16 graph in FP32 (its casts around FP16 nodes are dropped between
    them) and never overflows: the FP16 version of the scaling network equals the per-layer float16 emulation."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    gpu = install_fake_gpu(monkeypatch)
    trt = install_fake_tensorrt(monkeypatch, gpu)
    weights = _scaling_network(tmp_path / "scaling.onnx")
    model = onnx.load(str(tmp_path / "scaling.onnx"))
    graph = model.graph
    # The graph typed FP16 between a Cast in and a Cast out, its head (the Add) FP32: unetrt.export.fp16's layout.
    for tensor in graph.initializer:
        if tensor.name != "shift":
            tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float16), tensor.name))
    conv, mul, add = list(graph.node)
    conv.input[0], add.input[0] = "image16", "scaled32"
    del graph.node[:]
    graph.node.extend([helper.make_node("Cast", ["image"], ["image16"], to=TensorProto.FLOAT16), conv, mul,
                       helper.make_node("Cast", ["scaled"], ["scaled32"], to=TensorProto.FLOAT), add])
    onnx.save(model, str(tmp_path / "scaling.fp16.onnx"))
    images = (np.random.default_rng(5).integers(-64 * 64, 64 * 64 + 1, (1, 3, 16, 16)) / 64).astype(np.float32)
    plan = write_plan_from_onnx(tmp_path / "scaling.fp16.onnx", tmp_path / "typed.plan", gpu, precision="fp16",
                                strongly_typed=True)
    got = _engine_output(trt, plan, images)
    np.testing.assert_array_equal(got, _fp16_emulation(images, weights))
    assert np.isinf(got).any() and np.isfinite(got).any()
