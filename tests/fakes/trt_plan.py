"""The serialized form of a fake TensorRT engine: what the fake builder writes and the fake runtime reads.

A real plan is opaque and valid only for the TensorRT version and GPU that built it: "Serialized engines are not
portable across platforms or TensorRT versions" and "are specific to the exact GPU model they were built on"
(TensorRT Developer Guide, "Serialized Engine Compatibility";
https://docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/advanced.html#version-compatibility).
The fake keeps what those rules need (the version and the device that built it) and the ONNX model, so that
the fake engine can compute its output with ONNX Runtime.
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass

MAGIC = b"UNETRT-FAKE-TRT-PLAN\0"


@dataclass(frozen=True)
class FakePlan:
    """What a fake plan holds besides the network."""

    tensorrt_version: str
    device_name: str
    compute_capability: tuple[int, int]
    input_name: str
    output_name: str
    input_dtype: str
    output_dtype: str
    profile: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]
    precision: str
    dla_core: int | None
    onnx_model: bytes
    head_precision: str = "fp32"  # what the layer writing the network's output computes in
    input_format: str = "LINEAR"  # the tensorrt.TensorFormat member the engine reads its input in
    output_format: str = "LINEAR"  # and writes its output in
    # Whether the layers the graph leaves open run FP16 kernels: BuilderFlag.FP16 on a weakly typed network (an INT8
    # engine's layers outside its Q/DQ pairs too, when the flag came with INT8). The runtime fake's [FP16] rule.
    fp16_layers: bool = False


def serialize(plan: FakePlan) -> bytes:
    """Plan bytes: the magic, a length-prefixed JSON header (with the ONNX model's length), then the ONNX model."""
    header = asdict(plan)
    header["onnx_bytes"] = len(header.pop("onnx_model"))
    text = json.dumps(header).encode()
    return MAGIC + struct.pack("<I", len(text)) + text + plan.onnx_model


def deserialize(data: bytes) -> FakePlan | None:
    """The plan in ``data``, or None where the bytes are not a whole plan: ``deserialize_cuda_engine`` returns "The
    ICudaEngine, or None if it could not be deserialized" (TensorRT Python API, ``Runtime``), a plan cut short
    (a copy or a download that stopped, a full disk) included."""
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 4:
        return None
    (length,) = struct.unpack_from("<I", data, len(MAGIC))
    start = len(MAGIC) + 4
    try:
        header = json.loads(data[start:start + length])
    except ValueError:
        return None
    onnx_model = data[start + length:]
    if header.pop("onnx_bytes", None) != len(onnx_model):
        return None
    header["compute_capability"] = tuple(header["compute_capability"])
    header["profile"] = tuple(tuple(shape) for shape in header["profile"])
    return FakePlan(**header, onnx_model=onnx_model)
