"""The model file: a unetrt model's description read from and written to every container, without a session.

Each container keeps the same JSON document (:class:`~unetrt.model_info.ModelInfo`):

* ``.onnx``: the metadata prop ``unetrt`` (and ``unetrt.quantization`` for an INT8 model of ``unet-export --int8``),
  read by a small reader of ONNX's protobuf wire format that skips the weights; it needs neither onnx nor an
  inference session, so the runtime reads it on a machine with ONNX Runtime alone;
* OpenVINO IR ``.xml``: the top-level rt_info ``unetrt`` (:func:`write_ir_description`), read as XML;
* TensorRT ``.plan`` / ``.engine``: the ``PLAN.json`` beside it (:mod:`unetrt.plan_metadata`);
* ``.pt``: the checkpoint's ``info`` entry (reading it needs torch: :mod:`unetrt.export.checkpoint`).

The precision of a file is read from its content, never from its name: a graph with QuantizeLinear or
DequantizeLinear nodes is INT8, one with FP16 initializers FP16 (``unet-export --fp16``) unless its
``unetrt.weight_storage`` prop says they are FP32 weights stored as FP16 (:mod:`unetrt.export.compact`), any
other FP32; a plan's is the one it was built at; an OpenVINO IR is INT8 when quantized, else FP32 (FP16
constants there are storage only); a checkpoint is FP32.

Every description of a model file is decoded by :func:`decode_description`, the one parser of this document.
"""

from __future__ import annotations

import json
import mmap
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from .cpu import int8_products_saturate
from .model_info import METADATA_KEY, ModelInfo
from .paths import check_file

ONNX_SUFFIXES = (".onnx",)
IR_SUFFIXES = (".xml",)
PLAN_SUFFIXES = (".plan", ".engine")
CHECKPOINT_SUFFIXES = (".pt",)
MODEL_SUFFIXES = (*ONNX_SUFFIXES, *IR_SUFFIXES, *PLAN_SUFFIXES, *CHECKPOINT_SUFFIXES)
# The quantization record of an INT8 ONNX model (unetrt.export.quantize writes it).
QUANTIZATION_KEY = "unetrt.quantization"
# The record's "weights" entry of a CPU INT8 model whose weights use 7 of their 8 bits (safe where INT8 products
# saturate: unetrt.cpu.int8_products_saturate); before 2026-12-05 it read "int8 symmetric per channel".
SEVEN_BIT_WEIGHTS = "int8 symmetric per channel, 7 bits"
# The largest INT8 weight that cannot saturate there: 2 x 255 x 64 = 32640 fits int16 (ONNX Runtime's reduce_range
# weights span -64..64); TensorRT's layout and other full-range weights reach 127.
SEVEN_BIT_PEAK = 64
# Marks an FP32 graph whose weights are stored as FP16 and cast to FP32 on load (unetrt.export.compact): its FP16
# initializers are storage, not an FP16 graph.
WEIGHT_STORAGE_KEY = "unetrt.weight_storage"
# The names of the network's one input and one output in every ONNX file unet-export writes.
INPUT_NAME = "image"
OUTPUT_NAME = "logits"
ONNX_EXPECTED = "ONNX model (an .onnx file written by unet-export)"
IR_EXPECTED = "OpenVINO IR (an .xml file written by unetrt.backends.openvino.write_ir)"
PRECISIONS = ("fp32", "fp16", "int8")

# ONNX's protobuf schema (onnx/onnx.proto3): field numbers and wire types this reader uses or checks.
_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5
# ModelProto: ir_version 1, producer_name 2, producer_version 3, domain 4, model_version 5, doc_string 6,
# graph 7, opset_import 8, metadata_props 14, training_info 20, functions 25, configuration 26.
_MODEL_WIRE = {1: _VARINT, 2: _LENGTH, 3: _LENGTH, 4: _LENGTH, 5: _VARINT, 6: _LENGTH, 7: _LENGTH, 8: _LENGTH,
               14: _LENGTH, 20: _LENGTH, 25: _LENGTH, 26: _LENGTH}
_MODEL_GRAPH, _MODEL_METADATA = 7, 14
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE_INITIALIZER = 1, 5, 15  # GraphProto
_GRAPH_OUTPUT, _VALUE_INFO_NAME = 12, 1  # GraphProto's outputs; ValueInfoProto's name
_NODE_OUTPUT, _NODE_OP_TYPE, _NODE_ATTRIBUTE = 2, 4, 5  # NodeProto
# A final op that turns logits into probabilities: every backend applies the softmax or sigmoid itself (and thresholds
# a binary model's logit at 0), so a graph ending in one would give every pixel of a binary model the foreground.
_PROBABILITY_OPS = frozenset({"Sigmoid", "Softmax"})
# AttributeProto: t 5, g 6, tensors 10, graphs 11, sparse_tensor 22, sparse_tensors 23.
_ATTRIBUTE_TENSORS, _ATTRIBUTE_GRAPHS, _ATTRIBUTE_SPARSE = frozenset({5, 10}), frozenset({6, 11}), frozenset({22, 23})
_SPARSE_TENSORS = frozenset({1, 2})  # SparseTensorProto: values 1, indices 2
_TENSOR_DATA_TYPE, _TENSOR_EXTERNAL_DATA = 2, 13  # TensorProto
_EXTERNAL_LOCATION = "location"  # the external_data entry naming the file (onnx/onnx.proto3)
_ENTRY_KEY, _ENTRY_VALUE = 1, 2  # StringStringEntryProto
_FLOAT16, _INT8 = 10, 3  # TensorProto.DataType
_TENSOR_DIMS, _TENSOR_INT32_DATA, _TENSOR_RAW_DATA = 1, 5, 9  # TensorProto
_QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


@dataclass(frozen=True)
class ModelFile:
    """What a model file says about itself.

    Attributes:
        path: the file.
        info: the model's description.
        precision: 'fp32', 'fp16' or 'int8', read from the content (a plan: the precision it was built at).
        quantization: the INT8 model's quantization record (calibration method, frames, layout), or None.
    """

    path: Path
    info: ModelInfo
    precision: str
    quantization: dict[str, Any] | None = None

    @cached_property
    def int8_weight_peak(self) -> int | None:
        """:func:`int8_weight_peak` of the file, read on first use and kept: the checks that judge a file without a
        quantization record by its weights, and their messages, read them once per opening."""
        return int8_weight_peak(self.path)


def decode_description(document: str | Mapping[str, Any]) -> ModelInfo:
    """The one parser of a stored model description: JSON text or its decoded object -> ModelInfo.

    Raises:
        ValueError: in one line, when the document is not valid model metadata.

    Example:
        >>> decode_description(ModelInfo(("cell",), ((255, 0, 0),), in_channels=1, mean=(0.5,),
        ...                                        std=(0.25,)).to_json()).class_names
        ('cell',)
    """
    if isinstance(document, str):
        return ModelInfo.from_json(document)
    return ModelInfo.from_dict(dict(document))


def read_model_file(path: str | Path) -> ModelFile:
    """Read the description and precision of a model file of any container, without an inference session.

    Args:
        path: an .onnx, .xml (OpenVINO IR), .plan/.engine (with PLAN.json beside it) or .pt file.

    Returns:
        The file's description, precision and quantization record.

    Raises:
        FileNotFoundError: when the file (or a plan's metadata) does not exist.
        ValueError: in one line naming the file, when it is damaged, of another kind, or carries no unetrt
            description; on a suffix that is no model file.
        ImportError: for a .pt file without torch (the message says how to install it).

    Example:
        >>> read_model_file("camvid.int8.onnx").precision  # doctest: +SKIP
        'int8'
    """
    path = Path(path)
    if path.suffix not in MODEL_SUFFIXES:
        raise ValueError(f"{str(path)!r} is no model file: use a {', '.join(MODEL_SUFFIXES)} file")
    check_file(path, "model file")
    if path.suffix in ONNX_SUFFIXES:
        return _read_onnx(path)
    if path.suffix in IR_SUFFIXES:
        return _read_ir(path)
    if path.suffix in PLAN_SUFFIXES:
        from .plan_metadata import read_plan_metadata

        metadata = read_plan_metadata(path)
        return ModelFile(path, metadata.info, metadata.precision)
    try:
        from .export.checkpoint import load_checkpoint
    except ImportError as exc:
        raise ImportError(f"reading {str(path)!r} needs PyTorch ({exc}): pip install 'unetrt[export]' after "
                          "installing the torch build you want") from exc
    return ModelFile(path, checkpoint_description(load_checkpoint(path)), "fp32")


def file_precision(path: str | Path) -> str:
    """The precision a model file runs at, from its content (see the module docstring); a .pt file is FP32.

    Raises:
        FileNotFoundError, ValueError: as :func:`read_model_file` (a .pt file is not opened).

    Example:
        >>> file_precision("camvid.fp16.onnx")  # doctest: +SKIP
        'fp16'
    """
    path = Path(path)
    if path.suffix in CHECKPOINT_SUFFIXES:
        return "fp32"
    return read_model_file(path).precision


def checkpoint_description(data: Mapping[str, Any]) -> ModelInfo:
    """The description in a checkpoint's dictionary (``torch.load`` of a ``.pt`` written by ``unet-train``).

    Raises:
        ValueError: when it has none or it is not valid model metadata.
    """
    if "info" not in data:
        raise ValueError("the checkpoint has no 'info' entry; write it with unet-train")
    return decode_description(data["info"])


def write_onnx_description(proto: Any, info: ModelInfo, quantization: Mapping[str, Any] | None = None) -> None:
    """Store ``info`` (and an INT8 model's quantization record) in an ``onnx.ModelProto``'s metadata props.

    The entries written here replace older ones of the same key; the other props are kept.

    Example:
        >>> write_onnx_description(onnx.load("camvid.onnx"), info)  # doctest: +SKIP
    """
    ours = {METADATA_KEY: info.to_json()}
    if quantization is not None:
        ours[QUANTIZATION_KEY] = json.dumps(dict(quantization))
    kept = [p for p in proto.metadata_props if p.key not in ours]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in ours.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "unetrt"


def write_ir_description(model: Any, info: ModelInfo) -> None:
    """Store ``info`` in an ``openvino.Model``'s rt_info (saved into the IR ``.xml`` by ``openvino.save_model``).

    Example:
        >>> write_ir_description(core.read_model("camvid.onnx"), info)  # doctest: +SKIP
    """
    model.set_rt_info(info.to_json(), [METADATA_KEY])


# --- ONNX: protobuf wire format (https://protobuf.dev/programming-guides/encoding/) ------------------------------


class _MalformedError(Exception):
    """The bytes are not a protobuf message of the expected schema."""


def _varint(data: Any, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise _MalformedError("a varint runs past the end")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7
        if shift >= 64:
            raise _MalformedError("a varint is longer than 10 bytes")


def _fields(data: Any, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """(field number, wire type, start, end) of each field; a varint's value is its ``start``."""
    pos = start
    while pos < end:
        key, pos = _varint(data, pos, end)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _MalformedError("field number 0")
        if wire == _VARINT:
            value, pos = _varint(data, pos, end)
            yield number, wire, value, pos
            continue
        if wire == _LENGTH:
            size, pos = _varint(data, pos, end)
        elif wire in (_FIXED64, _FIXED32):
            size = 8 if wire == _FIXED64 else 4
        else:
            raise _MalformedError(f"wire type {wire}")
        if pos + size > end:
            raise _MalformedError("a field runs past the end")
        yield number, wire, pos, pos + size
        pos += size


def _text(data: Any, start: int, end: int) -> str:
    try:
        return bytes(data[start:end]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _MalformedError("a string is not UTF-8") from exc


def _entry(data: Any, start: int, end: int) -> tuple[str, str]:
    key = value = ""
    for number, wire, first, last in _fields(data, start, end):
        if number in (_ENTRY_KEY, _ENTRY_VALUE) and wire != _LENGTH:
            raise _MalformedError("a metadata entry of the wrong type")
        if number == _ENTRY_KEY:
            key = _text(data, first, last)
        elif number == _ENTRY_VALUE:
            value = _text(data, first, last)
    return key, value


def _graph_precision(data: Any, start: int, end: int) -> str:
    fp16 = False
    for number, wire, first, last in _fields(data, start, end):
        if wire != _LENGTH:
            continue
        if number == _GRAPH_NODE:
            for field, kind, low, high in _fields(data, first, last):
                if field == _NODE_OP_TYPE and kind == _LENGTH and _text(data, low, high) in _QDQ_OPS:
                    return "int8"
        elif number == _GRAPH_INITIALIZER and not fp16:
            fp16 = any(field == _TENSOR_DATA_TYPE and kind == _VARINT and value == _FLOAT16
                       for field, kind, value, _ in _fields(data, first, last))
    return "fp16" if fp16 else "fp32"


def _graph_head(data: Any, start: int, end: int) -> str | None:
    """The op type of the node that produces the graph's first output, or None (an input passed through)."""
    producers: dict[str, str] = {}
    first_output = None
    for number, wire, first, last in _fields(data, start, end):
        if wire != _LENGTH:
            continue
        if number == _GRAPH_NODE:
            op_type, outputs = "", []
            for field, kind, low, high in _fields(data, first, last):
                if kind != _LENGTH:
                    continue
                if field == _NODE_OP_TYPE:
                    op_type = _text(data, low, high)
                elif field == _NODE_OUTPUT:
                    outputs.append(_text(data, low, high))
            producers.update(dict.fromkeys(outputs, op_type))
        elif number == _GRAPH_OUTPUT and first_output is None:
            first_output = next((_text(data, low, high) for field, kind, low, high in _fields(data, first, last)
                                 if field == _VALUE_INFO_NAME and kind == _LENGTH), None)
    return None if first_output is None else producers.get(first_output)


def _tensor_locations(data: Any, start: int, end: int) -> Iterator[str]:
    for number, wire, first, last in _fields(data, start, end):
        if number == _TENSOR_EXTERNAL_DATA and wire == _LENGTH:
            key, value = _entry(data, first, last)
            if key == _EXTERNAL_LOCATION:
                yield value


def _graph_locations(data: Any, start: int, end: int) -> Iterator[str]:
    """The external-data files named by a graph's tensors: initializers, constants' attributes, subgraphs."""
    for number, wire, first, last in _fields(data, start, end):
        if wire != _LENGTH:
            continue
        if number == _GRAPH_INITIALIZER:
            yield from _tensor_locations(data, first, last)
        elif number == _GRAPH_SPARSE_INITIALIZER:
            yield from _sparse_locations(data, first, last)
        elif number == _GRAPH_NODE:
            for field, kind, low, high in _fields(data, first, last):
                if field == _NODE_ATTRIBUTE and kind == _LENGTH:
                    yield from _attribute_locations(data, low, high)


def _sparse_locations(data: Any, start: int, end: int) -> Iterator[str]:
    for number, wire, first, last in _fields(data, start, end):
        if number in _SPARSE_TENSORS and wire == _LENGTH:
            yield from _tensor_locations(data, first, last)


def _attribute_locations(data: Any, start: int, end: int) -> Iterator[str]:
    for number, wire, first, last in _fields(data, start, end):
        if wire != _LENGTH:
            continue
        if number in _ATTRIBUTE_TENSORS:
            yield from _tensor_locations(data, first, last)
        elif number in _ATTRIBUTE_GRAPHS:
            yield from _graph_locations(data, first, last)
        elif number in _ATTRIBUTE_SPARSE:
            yield from _sparse_locations(data, first, last)


def _onnx_contents(data: Any, size: int) -> tuple[dict[str, str], str | None, list[str], str | None]:
    """(metadata props, precision or None without a graph, external-data files, the op type that produces the
    graph's output) of a serialised ONNX ModelProto."""
    props: dict[str, str] = {}
    precision = head = None
    locations: list[str] = []
    for number, wire, first, last in _fields(data, 0, size):
        if number in _MODEL_WIRE and wire != _MODEL_WIRE[number]:
            raise _MalformedError(f"field {number} has wire type {wire}")
        if number == _MODEL_METADATA:
            key, value = _entry(data, first, last)
            props[key] = value
        elif number == _MODEL_GRAPH:
            precision = _graph_precision(data, first, last)
            locations.extend(_graph_locations(data, first, last))
            head = _graph_head(data, first, last)
    if precision == "fp16" and props.get(WEIGHT_STORAGE_KEY) == "float16":
        precision = "fp32"
    return props, precision, locations, head


def _check_external_data(path: Path, locations: list[str]) -> None:
    """Every external-data file lies in the model's folder: an absolute name, a '..' or a link out of the folder
    would let a model file read any file on the machine (the ONNX checker refuses them, as recent ONNX Runtime
    releases do; older ones, JetPack's included, read the file)."""
    folder = path.parent.resolve()
    for location in dict.fromkeys(locations):  # tensors saved to one file all name it: each name checked once
        relative = PurePath(location)
        if relative.is_absolute() or ".." in relative.parts or not (folder / relative).resolve().is_relative_to(folder):
            raise _invalid(path, ONNX_EXPECTED, f"its tensor data file {location!r} lies outside the model's folder "
                           f"{str(path.parent)!r}; keep external data files beside the model")


def _invalid(path: Path, expected: str, problem: str) -> ValueError:
    return ValueError(f"model file {str(path)!r} is not a valid {expected}: {problem}")


def _read_onnx(path: Path) -> ModelFile:
    props: dict[str, str] = {}
    precision: str | None = None
    head = None
    with path.open("rb") as file:
        size = path.stat().st_size
        try:
            if size != 0:
                # Mapped, not read: the weights are skipped over, never copied.
                with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
                    props, precision, locations, head = _onnx_contents(data, size)
                _check_external_data(path, locations)
        except _MalformedError as exc:
            raise _invalid(path, ONNX_EXPECTED, f"it is truncated, damaged or not ONNX at all ({exc})") from None
    if precision is None:
        raise _invalid(path, ONNX_EXPECTED, "No graph was found in it (an empty file or another protobuf)")
    if METADATA_KEY not in props:
        raise ValueError(f"ONNX file {str(path)!r} has no {METADATA_KEY!r} metadata; export it with unet-export, or "
                         "describe a network of your own with unetrt.model_file.write_onnx_description "
                         "(docs/models.md#a-network-from-elsewhere)")
    if head in _PROBABILITY_OPS:
        raise ValueError(f"ONNX file {str(path)!r} ends in {head}: it returns probabilities, but unetrt takes the "
                         "network's logits (it applies the softmax or sigmoid itself, and a binary model's mask is "
                         f"where its logit is above 0): export the network without its final {head}")
    return ModelFile(path, decode_description(props[METADATA_KEY]), precision,
                     _quantization(props.get(QUANTIZATION_KEY), path))


def _quantization(text: str | None, path: Path) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{str(path)!r}: its {QUANTIZATION_KEY!r} record is not valid JSON ({exc})") from None
    if not isinstance(record, dict):
        raise ValueError(f"{str(path)!r}: its {QUANTIZATION_KEY!r} record must be a JSON object")
    return record


# --- OpenVINO IR: the .xml's <rt_info> (https://docs.openvino.ai/2024/documentation/openvino-ir-format.html) ----


def _read_ir(path: Path) -> ModelFile:
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as exc:
        raise _invalid(path, IR_EXPECTED, f"it is not well-formed XML ({exc})") from None
    rt_info = root.find("rt_info")
    entry = None if rt_info is None else rt_info.find(METADATA_KEY)
    if root.tag != "net" or rt_info is None or entry is None or entry.get("value") is None:
        raise ValueError(f"OpenVINO IR {str(path)!r} has no {METADATA_KEY!r} rt_info; write it with "
                         "unetrt.backends.openvino.write_ir")
    # OpenVINO keeps the ONNX file's metadata props under <framework>: an INT8 model's quantization record too.
    record = rt_info.find(f"framework/{QUANTIZATION_KEY}")
    quantization = _quantization(None if record is None else record.get("value"), path)
    # FP16 constants in an IR are storage only (openvino.save_model compresses them by default): OpenVINO
    # decompresses them and runs at its inference-precision hint, so an IR is INT8 or FP32.
    quantized = quantization is not None or any(layer.get("type") == "FakeQuantize" for layer in root.iter("layer"))
    precision = "int8" if quantized else "fp32"
    return ModelFile(path, decode_description(str(entry.get("value"))), precision, quantization)


def int8_weights_saturate_here(model: ModelFile) -> bool:
    """Whether fused INT8 convolution kernels on this CPU would saturate the weights of this model file: 8-bit
    weights (TensorRT's layout, a CPU file exported before 7-bit weights, a file quantized elsewhere with full-range
    weights) on an x86 CPU without VNNI (:func:`unetrt.cpu.int8_products_saturate`).

    The quantization record of ``unet-export`` says what its weights are; a file without one (quantized elsewhere)
    is judged by its weights themselves (:func:`int8_weight_peak`), and where they cannot be read taken for 8-bit
    ones.

    Example:
        >>> int8_weights_saturate_here(ModelFile(Path("camvid.onnx"), ModelInfo(("road",), ((0, 0, 0),)), "fp32"))
        False
    """
    if model.precision != "int8" or not int8_products_saturate():
        return False
    if model.quantization is not None:
        return model.quantization.get("weights") != SEVEN_BIT_WEIGHTS
    peak = model.int8_weight_peak
    return peak is None or peak > SEVEN_BIT_PEAK


def int8_weight_peak(path: str | Path) -> int | None:
    """The largest magnitude among a model file's INT8 weights (its INT8 constants of two or more dimensions: the
    per-channel zero points and scalars beside them are left out), 0 without any; None where they cannot be read (an
    ONNX file's external data, an IR without its .bin, an IR whose weights are float under FakeQuantize layers).

    Args:
        path: an .onnx file or an OpenVINO IR .xml.

    Raises:
        ValueError: when the file is damaged (as :func:`read_model_file`).

    Example:
        >>> int8_weight_peak("camvid.int8.onnx")  # doctest: +SKIP
        64
    """
    path = Path(path)
    if path.suffix in IR_SUFFIXES:
        return _ir_int8_peak(path)
    size = path.stat().st_size
    if size == 0:
        return 0
    with path.open("rb") as file, mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as data:
        try:
            peak: int | None = 0
            for number, wire, first, last in _fields(data, 0, size):
                if number == _MODEL_GRAPH and wire == _LENGTH:
                    graph_peak = _graph_int8_peak(data, first, last)
                    peak = None if graph_peak is None or peak is None else max(peak, graph_peak)
            return peak
        except _MalformedError as exc:
            raise _invalid(path, ONNX_EXPECTED, f"it is truncated, damaged or not ONNX at all ({exc})") from None


def _ir_int8_peak(path: Path) -> int | None:
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as exc:
        raise _invalid(path, IR_EXPECTED, f"it is not well-formed XML ({exc})") from None
    weights = path.with_suffix(".bin")
    constants = [data for layer in root.iter("layer") if layer.get("type") == "Const"
                 for data in layer.findall("data") if data.get("element_type") == "i8"
                 and len([d for d in (data.get("shape") or "").split(",") if d.strip()]) >= 2]
    if not constants:
        # Without INT8 constants the weights of an INT8 IR are float ones under FakeQuantize layers.
        return None if any(layer.get("type") == "FakeQuantize" for layer in root.iter("layer")) else 0
    if not weights.is_file():
        return None
    peak = 0
    with weights.open("rb") as file:
        for data in constants:
            file.seek(int(data.get("offset", "0")))
            values = file.read(int(data.get("size", "0")))
            if values:
                peak = max(peak, int(np.abs(np.frombuffer(values, np.int8).astype(np.int16)).max()))
    return peak


def _graph_int8_peak(data: Any, start: int, end: int) -> int | None:
    """The INT8 peak of a graph's tensors: initializers, and those in its nodes' attributes (a Constant node's
    value, where some exporters keep the weights), subgraphs included; None where one is in external data."""
    peak = 0
    for number, wire, first, last in _fields(data, start, end):
        if wire != _LENGTH:
            continue
        if number == _GRAPH_INITIALIZER:
            found = _tensor_int8_peak(data, first, last)
        elif number == _GRAPH_NODE:
            found = _node_int8_peak(data, first, last)
        else:
            continue
        if found is None:
            return None
        peak = max(peak, found)
    return peak


def _node_int8_peak(data: Any, start: int, end: int) -> int | None:
    peak = 0
    for number, wire, first, last in _fields(data, start, end):
        if number != _NODE_ATTRIBUTE or wire != _LENGTH:
            continue
        for field, kind, low, high in _fields(data, first, last):
            if kind != _LENGTH:
                continue
            if field in _ATTRIBUTE_TENSORS:
                found = _tensor_int8_peak(data, low, high)
            elif field in _ATTRIBUTE_GRAPHS:
                found = _graph_int8_peak(data, low, high)
            else:
                continue
            if found is None:
                return None
            peak = max(peak, found)
    return peak


def _tensor_int8_peak(data: Any, start: int, end: int) -> int | None:
    """The largest magnitude of one INT8 tensor of two or more dimensions (0 for any other), None where its values
    are in external data."""
    dims, data_type, values = 0, None, bytearray()
    external = False
    for field, kind, low, high in _fields(data, start, end):
        if field == _TENSOR_DIMS:
            dims += 1 if kind == _VARINT else sum(1 for _ in _varints(data, low, high))
        elif field == _TENSOR_DATA_TYPE and kind == _VARINT:
            data_type = low
        elif field == _TENSOR_RAW_DATA and kind == _LENGTH:
            values += bytes(data[low:high])
        elif field == _TENSOR_INT32_DATA:
            # INT8 values stored one per int32 (packed, or one field each), negative ones as 10-byte varints.
            stored = [low] if kind == _VARINT else list(_varints(data, low, high))
            values += bytes(value & 0xFF for value in stored)
        elif field == _TENSOR_EXTERNAL_DATA:
            external = True
    if data_type != _INT8 or dims < 2:
        return 0
    if external:
        return None
    return int(np.abs(np.frombuffer(values, np.int8).astype(np.int16)).max()) if values else 0


def _varints(data: Any, start: int, end: int) -> Iterator[int]:
    """The values of a packed repeated varint field."""
    pos = start
    while pos < end:
        value, pos = _varint(data, pos, end)
        yield value
