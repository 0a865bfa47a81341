"""Triton model repository: config.pbtxt parsed with Triton's own ModelConfig protobuf."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_info

from unetrt.export.triton import io_dims, model_plan_path, triton_config, write_triton_repository
from unetrt.model_info import ModelInfo
from unetrt.plan_metadata import GpuIdentity, PlanMetadata, ShapeProfile, read_plan_metadata

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
text_format = pytest.importorskip("google.protobuf.text_format")


def make_metadata(profile: ShapeProfile | None = None, info: ModelInfo | None = None) -> PlanMetadata:
    return PlanMetadata(
        tensorrt_version="10.3.0", gpu=GpuIdentity("Orin", (8, 7)), input_name="image", output_name="logits",
        input_dtype="float32", output_dtype="float32",
        profile=profile or ShapeProfile((1, 3, 4, 4), (1, 3, 48, 64), (8, 3, 256, 256)),
        precision="fp16", strongly_typed=False, source="tiny.onnx", info=info or tiny_info(),
    )


def parse(text: str) -> Any:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def test_config_fields() -> None:
    metadata = make_metadata()
    config = parse(triton_config(metadata, "unet", instances=2, max_queue_delay_us=250))
    assert config.name == "unet"
    assert config.platform == "tensorrt_plan"
    assert config.max_batch_size == 8
    assert config.default_model_filename == "model.plan"
    (inp,) = config.input
    assert inp.name == "image"
    assert inp.data_type == model_config_pb2.TYPE_FP32
    assert inp.format == model_config_pb2.ModelInput.FORMAT_NCHW
    assert list(inp.dims) == [3, -1, -1]
    (out,) = config.output
    assert out.name == "logits" and out.data_type == model_config_pb2.TYPE_FP32
    assert list(out.dims) == [3, -1, -1]
    assert config.WhichOneof("scheduling_choice") == "dynamic_batching"
    assert list(config.dynamic_batching.preferred_batch_size) == [8]
    assert config.dynamic_batching.max_queue_delay_microseconds == 250
    (group,) = config.instance_group
    assert group.count == 2 and group.kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
    assert ModelInfo.from_json(config.parameters["unetrt"].string_value) == metadata.info


def test_fixed_sides_give_fixed_dims_and_valid_output() -> None:
    info = tiny_info(num_classes=2, in_channels=1, padding="valid", depth=3)  # 92 -> 52 for depth 3
    profile = ShapeProfile((1, 1, 92, 60), (1, 1, 92, 92), (2, 1, 92, 124))
    assert io_dims(profile, info) == ([1, 92, -1], [2, 52, -1])
    config = parse(triton_config(make_metadata(profile, info), "em"))
    assert list(config.input[0].dims) == [1, 92, -1] and list(config.output[0].dims) == [2, 52, -1]
    assert config.max_batch_size == 2


def test_fp16_io_maps_to_triton_type() -> None:
    metadata = replace(make_metadata(), input_dtype="float16", output_dtype="float16")
    config = parse(triton_config(metadata, "unet"))
    assert config.input[0].data_type == config.output[0].data_type == model_config_pb2.TYPE_FP16


def test_non_ascii_class_names_survive() -> None:
    info = ModelInfo(class_names=("piéton", "route \"A\""), colors=((1, 2, 3), (4, 5, 6)))
    config = parse(triton_config(make_metadata(info=info), "unet"))
    assert ModelInfo.from_json(config.parameters["unetrt"].string_value).class_names == info.class_names


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "a/b"}, "model name"),
    ({"name": "unet", "instances": 0}, "instances"),
    ({"name": "unet", "max_queue_delay_us": -1}, "max_queue_delay_us"),
])
def test_config_rejects_bad_settings(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        triton_config(make_metadata(), **kwargs)


def test_config_needs_batch_one() -> None:
    profile = ShapeProfile((2, 3, 4, 4), (2, 3, 48, 64), (8, 3, 256, 256))
    with pytest.raises(ValueError, match="--min-shape 1x3x4x4"):
        triton_config(make_metadata(profile), "unet")


def test_unsupported_dtype() -> None:
    with pytest.raises(ValueError, match="no Triton type"):
        triton_config(replace(make_metadata(), output_dtype="complex64"), "unet")


def test_write_repository_layout(tmp_path: Path) -> None:
    plan = tmp_path / "built.plan"
    plan.write_bytes(b"plan bytes")
    metadata = make_metadata()
    repo = tmp_path / "models"
    config = write_triton_repository(repo, "unet", plan, metadata)
    assert config == repo / "unet" / "config.pbtxt"
    target = model_plan_path(repo, "unet")
    assert target == repo / "unet" / "1" / "model.plan"
    assert target.read_bytes() == b"plan bytes"
    assert read_plan_metadata(target) == metadata
    assert parse(config.read_text()).name == "unet"
    # a plan already in place is not copied onto itself; the config is rewritten
    write_triton_repository(repo, "unet", target, metadata, instances=3)
    assert parse(config.read_text()).instance_group[0].count == 3
    assert json.loads((repo / "unet" / "1" / "model.plan.json").read_text())["source"] == "tiny.onnx"


def test_write_repository_needs_the_plan(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_triton_repository(tmp_path, "unet", tmp_path / "missing.plan", make_metadata())


def test_input_and_output_types_are_each_their_own() -> None:
    metadata = replace(make_metadata(), input_dtype="float16", output_dtype="float32")
    config = parse(triton_config(metadata, "unet"))
    assert config.input[0].data_type == model_config_pb2.TYPE_FP16
    assert config.output[0].data_type == model_config_pb2.TYPE_FP32


def test_a_side_is_fixed_only_when_the_whole_profile_fixes_it() -> None:
    # The optimum height equals the minimum, but the maximum lets it grow: Triton must accept any height.
    profile = ShapeProfile((1, 3, 48, 64), (1, 3, 48, 64), (4, 3, 96, 64))
    assert io_dims(profile, tiny_info()) == ([3, -1, 64], [3, -1, 64])


def test_write_repository_passes_the_batching_delay_on(tmp_path: Path) -> None:
    plan = tmp_path / "built.plan"
    plan.write_bytes(b"plan bytes")
    config = write_triton_repository(tmp_path / "models", "unet", plan, make_metadata(), max_queue_delay_us=0)
    assert parse(config.read_text()).dynamic_batching.max_queue_delay_microseconds == 0


@pytest.mark.parametrize("name", [".", ".."])
def test_a_name_that_is_a_folder_step_is_refused(name: str) -> None:
    # REPO/../1/model.plan would land outside the repository.
    with pytest.raises(ValueError, match="model name"):
        model_plan_path("models", name)
