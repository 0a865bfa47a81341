"""FP32 ONNX graph -> FP16 ONNX graph with FP32 inputs, outputs and numerically sensitive tail.

The body of the U-Net (convolutions, activations, pooling, concatenations) runs
in FP16. The graph inputs and outputs stay FP32 so callers feed and read the
same arrays as with the FP32 model; the nodes that produce the graph outputs
(the 1x1 logit head) and every softmax, sigmoid, exponential, logarithm and
reduction stay FP32, because those are where FP16's 10-bit mantissa and 65504
range lose the most. The conversion is onnxconverter-common's float16
converter, which inserts the Cast nodes at the FP16/FP32 borders.

This FP16 graph is what a strongly typed TensorRT build consumes (TensorRT 11,
or TensorRT 10 given an FP16 graph); ONNX Runtime runs it too, which is how its
accuracy is checked here without a GPU.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from unetrt.caller_warning import warn_caller
from unetrt.model_file import WEIGHT_STORAGE_KEY
from unetrt.paths import check_file

# Kept FP32 wherever they appear: normalising exponentials and reductions over many values.
SENSITIVE_OPS = frozenset({
    "Softmax", "LogSoftmax", "Sigmoid", "Exp", "Log", "Pow", "Sqrt", "Reciprocal",
    "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceMax", "ReduceMin", "ReduceProd",
    "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
    "GlobalAveragePool", "GlobalLpPool", "LpNormalization", "InstanceNormalization", "LayerNormalization",
})
FP16_SUFFIX = ".fp16.onnx"
# The nodes whose weights (input 1) set the precision a graph computes in.
WEIGHTED_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
# Weights are clamped into [MIN_POSITIVE, MAX_FINITE] in magnitude (the converter's defaults): smaller ones
# would flush to FP16 subnormals or zero, larger ones come near FP16's 65504 limit. Raising a weight below
# MIN_POSITIVE to it moves it by less than MIN_POSITIVE, nothing next to the weights that matter (the bundled models
# have a few such, stored as float16 subnormals already); clamping one above MAX_FINITE changes the network.
MIN_POSITIVE = 1e-7
MAX_FINITE = 1e4


@dataclass(frozen=True)
class Fp16Agreement:
    """How closely an FP16 graph follows its FP32 original on one batch.

    Attributes:
        max_abs_logit_diff: largest absolute difference between the two graphs' logits.
        max_abs_logit: largest absolute FP32 logit (FP16 rounds relative to magnitude, so the difference
            is read against it).
        pixel_agreement: fraction of pixels whose predicted class (argmax, or logit > 0
            for a one-channel model) is the same in both.
        pixels: number of pixels compared.
    """

    max_abs_logit_diff: float
    max_abs_logit: float
    pixel_agreement: float
    pixels: int


def fp32_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes kept in FP32: those producing a graph output and those of :data:`SENSITIVE_OPS`.

    Raises:
        ValueError: when such a node has no name (the converter addresses nodes by name).
    """
    outputs = {o.name for o in model.graph.output}
    kept = []
    for node in model.graph.node:
        if node.op_type in SENSITIVE_OPS or outputs.intersection(node.output):
            if not node.name:
                raise ValueError(
                    f"node of type {node.op_type} producing {list(node.output)} has no name; "
                    "re-export the model with unet-export, which names every node"
                )
            kept.append(node.name)
    return kept


def is_fp16_model(model: onnx.ModelProto) -> bool:
    """True when the graph computes in FP16 (it was converted already): a convolution reads FP16 weights.

    An FP32 graph may store its weights as float16 and cast each to float32 where it is read
    (:mod:`unetrt.export.compact`): it computes in FP32, and a strongly typed TensorRT build of it runs FP32.
    """
    fp16_weights = {init.name for init in model.graph.initializer if init.data_type == onnx.TensorProto.FLOAT16}
    return any(node.op_type in WEIGHTED_OPS and len(node.input) > 1 and node.input[1] in fp16_weights
               for node in model.graph.node)


def expand_stored_weights(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of an FP32 graph whose weights are stored as float16 (:mod:`unetrt.export.compact`) with its float32
    weights back: each Cast of a float16 initializer to float32 becomes the float32 initializer it computes
    (exactly: float32 holds every float16 value). Other graphs come back as they are.

    Example:
        >>> plain = expand_stored_weights(onnx.load("camvid.onnx"))  # doctest: +SKIP
    """
    graph = model.graph
    stored = {init.name: init for init in graph.initializer if init.data_type == onnx.TensorProto.FLOAT16}
    casts = [node for node in graph.node if node.op_type == "Cast" and node.input[0] in stored
             and next(a.i for a in node.attribute if a.name == "to") == onnx.TensorProto.FLOAT]
    if not casts:
        return copy.deepcopy(model)
    cast_outputs = {cast.output[0] for cast in casts}
    others = [node for node in graph.node if node.output[0] not in cast_outputs]
    read_elsewhere = {name for node in others for name in node.input}
    folded = {cast.input[0] for cast in casts} - read_elsewhere
    weights = [numpy_helper.from_array(numpy_helper.to_array(stored[cast.input[0]]).astype(np.float32),
                                       cast.output[0]) for cast in casts]
    expanded = copy.deepcopy(model)
    graph = expanded.graph
    kept_initializers = [init for init in graph.initializer if init.name not in folded]
    del graph.initializer[:]
    graph.initializer.extend([*kept_initializers, *weights])
    kept_nodes = [node for node in graph.node if node.output[0] not in cast_outputs]
    del graph.node[:]
    graph.node.extend(kept_nodes)
    kept_props = [prop for prop in expanded.metadata_props if prop.key != WEIGHT_STORAGE_KEY]
    del expanded.metadata_props[:]
    expanded.metadata_props.extend(kept_props)
    return expanded


def convert_to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """An FP16 copy of an FP32 U-Net graph; inputs, outputs and the tail stay FP32.

    Args:
        model: the FP32 graph written by ``unet-export`` (not modified).

    Returns:
        The converted graph, with the same metadata props, passing ``onnx.checker``.

    Raises:
        ValueError: when the graph is FP16 already, has no FP32 input, or the result fails the checker.
        ImportError: when onnxconverter-common is not installed (the message says how to install it).

    Example:
        >>> fp16 = convert_to_fp16(onnx.load("camvid.onnx"))  # doctest: +SKIP
        >>> onnx.save(fp16, "camvid.fp16.onnx")  # doctest: +SKIP
    """
    try:
        from onnxconverter_common import float16
    except ImportError as exc:
        raise ImportError("converting an ONNX graph to FP16 (what TensorRT 11 builds FP16 engines from) needs "
                          "onnxconverter-common: pip install 'onnxconverter-common>=1.14'") from exc

    if is_fp16_model(model):
        raise ValueError("the ONNX graph holds FP16 weights already; convert the FP32 export instead")
    float_inputs = [i for i in model.graph.input if i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT]
    if not float_inputs:
        raise ValueError("the ONNX graph has no FP32 input; only FP32 graphs can be converted to FP16")
    source = expand_stored_weights(model)
    with warnings.catch_warnings():
        # The converter warns per tensor and sign it clamps, without counts: one warning of ours counts the values.
        warnings.simplefilter("ignore")
        converted: onnx.ModelProto = float16.convert_float_to_float16(
            source,
            keep_io_types=True,
            node_block_list=fp32_nodes(source),
            op_block_list=sorted(SENSITIVE_OPS | set(float16.DEFAULT_OP_BLOCK_LIST)),
            min_positive_val=MIN_POSITIVE,
            max_finite_val=MAX_FINITE,
        )
    clamped = _clamped_large_values(source, converted)
    if clamped:
        warn_caller(f"FP16 conversion clamped {clamped} weight value(s) larger than {MAX_FINITE:g} in magnitude to "
                    f"{MAX_FINITE:g}: the FP16 network computes with changed weights; compare its answers with "
                    "FP32's, and keep FP32 where they differ", UserWarning)
    _restore_fp32_outputs(converted, {o.name for o in float_outputs(model)})
    del converted.metadata_props[:]
    converted.metadata_props.extend(source.metadata_props)
    try:
        onnx.checker.check_model(converted, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ValueError(f"onnx.checker rejected the FP16 graph: {exc}") from exc
    return converted


def _clamped_large_values(source: onnx.ModelProto, converted: onnx.ModelProto) -> int:
    """How many values of the FP32 weights that became float16 lie above MAX_FINITE in magnitude: the ones the
    converter clamped down, changing the network."""
    stored_fp16 = {init.name for init in converted.graph.initializer if init.data_type == onnx.TensorProto.FLOAT16}
    count = 0
    for init in source.graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT and init.name in stored_fp16:
            magnitude = np.abs(numpy_helper.to_array(init))
            count += int(np.count_nonzero(magnitude > MAX_FINITE))
    return count


def float_outputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """The graph outputs of type FP32."""
    return [o for o in model.graph.output if o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT]


def _restore_fp32_outputs(model: onnx.ModelProto, names: set[str]) -> None:
    # onnxconverter-common 1.16 appends a Cast-to-FP16 after a block-listed node that produces a
    # graph output, then drops the Cast-to-FP32 that keep_io_types added: the output comes out
    # FP16. Bypass that Cast so the FP32 result of the block-listed node is the graph output again.
    producers = {name: node for node in model.graph.node for name in node.output}
    for output in model.graph.output:
        if output.name not in names or output.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
            continue
        cast = producers[output.name]
        to = next((a.i for a in cast.attribute if a.name == "to"), None)
        if cast.op_type != "Cast" or to != onnx.TensorProto.FLOAT16 or cast.input[0] not in producers:
            raise ValueError(
                f"the FP16 converter left graph output {output.name!r} in FP16 in an unexpected way "
                f"(produced by {cast.op_type} {cast.name!r}); keep the FP32 model"
            )
        source = producers[cast.input[0]]
        source.output[list(source.output).index(cast.input[0])] = output.name
        kept_info = [v for v in model.graph.value_info if v.name != cast.input[0]]
        del model.graph.value_info[:]
        model.graph.value_info.extend(kept_info)
        model.graph.node.remove(cast)
        output.type.tensor_type.elem_type = onnx.TensorProto.FLOAT


def fp16_path_for(path: str | Path) -> Path:
    """Where the FP16 graph of ``model.onnx`` is written: ``model.fp16.onnx`` beside it."""
    path = Path(path)
    return path.with_name(path.stem + FP16_SUFFIX)


def convert_file(source: str | Path, target: str | Path | None = None) -> Path:
    """Convert an FP32 ONNX file and write the FP16 graph.

    Args:
        source: the FP32 .onnx file.
        target: the file to write; defaults to :func:`fp16_path_for` ``(source)``.

    Returns:
        The written path.

    Raises:
        FileNotFoundError: when ``source`` does not exist.
        ValueError: as :func:`convert_to_fp16`.
    """
    source = check_file(source, "ONNX model")
    target = fp16_path_for(source) if target is None else Path(target)
    onnx.save(convert_to_fp16(onnx.load(str(source))), str(target))
    return target


def compare_fp16(fp32_path: str | Path, fp16_path: str | Path, batch: np.ndarray) -> Fp16Agreement:
    """Run both graphs on ONNX Runtime's CPU provider and measure how far the FP16 logits drift.

    Args:
        fp32_path: the FP32 .onnx file.
        fp16_path: its FP16 conversion.
        batch: N x C x H x W float32 normalised input of a legal size.

    Returns:
        The largest logit difference and the fraction of pixels whose class agrees.
    """
    import onnxruntime as ort

    logits = []
    for path in (fp32_path, fp16_path):
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        (out,) = session.run(None, {name: np.ascontiguousarray(batch, dtype=np.float32)})
        logits.append(np.asarray(out, dtype=np.float32))
    reference, reduced = logits
    if reference.shape[1] == 1:
        same = (reference[:, 0] > 0) == (reduced[:, 0] > 0)
    else:
        same = reference.argmax(axis=1) == reduced.argmax(axis=1)
    return Fp16Agreement(
        max_abs_logit_diff=float(np.abs(reference - reduced).max()),
        max_abs_logit=float(np.abs(reference).max()),
        pixel_agreement=float(same.mean()),
        pixels=int(same.size),
    )
