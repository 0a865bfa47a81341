"""A Triton Inference Server model repository for a TensorRT plan built by ``unet-build``.

Layout written::

    REPO/NAME/config.pbtxt
    REPO/NAME/1/model.plan
    REPO/NAME/1/model.plan.json     (unetrt metadata; Triton ignores it)

The config declares the ``tensorrt_plan`` platform, batches up to the profile's
largest batch with dynamic batching, marks every spatial size the profile leaves
free as -1, and carries the model description (classes, colours,
normalisation) as the ``unetrt`` parameter so clients can read it from the
server's model-config endpoint. Nothing here imports TensorRT.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from unetrt.geometry import valid_output_size
from unetrt.model_info import ModelInfo
from unetrt.paths import check_file
from unetrt.plan_metadata import PlanMetadata, ShapeProfile, metadata_path

PLAN_FILE = "model.plan"
CONFIG_FILE = "config.pbtxt"
VERSION = "1"
TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int32": "TYPE_INT32", "int64": "TYPE_INT64",
                "int8": "TYPE_INT8", "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL"}
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def _output_side(info: ModelInfo, side: int) -> int:
    if info.padding == "same":
        return side
    out = valid_output_size(side, info.depth)
    if out is None:
        raise ValueError(f"{side} is not a legal input side of this valid-padded U-Net")
    return out


def io_dims(profile: ShapeProfile, info: ModelInfo) -> tuple[list[int], list[int]]:
    """Input and output dims without the batch dimension; -1 where the profile lets a side vary.

    Example:
        >>> from unetrt.model_info import ModelInfo
        >>> info = ModelInfo(("a", "b"), ((0, 0, 0), (9, 9, 9)), depth=3)
        >>> io_dims(ShapeProfile((1, 3, 64, 64), (1, 3, 128, 64), (4, 3, 256, 64)), info)
        ([3, -1, 64], [2, -1, 64])
    """
    inputs = [profile.min[1]]
    outputs = [info.num_classes]
    for axis in (2, 3):
        if profile.min[axis] == profile.max[axis]:
            inputs.append(profile.min[axis])
            outputs.append(_output_side(info, profile.min[axis]))
        else:
            inputs.append(-1)
            outputs.append(-1)
    return inputs, outputs


def _dims_text(dims: list[int]) -> str:
    return "[ " + ", ".join(str(d) for d in dims) + " ]"


def triton_config(metadata: PlanMetadata, name: str, instances: int = 1, max_queue_delay_us: int = 100) -> str:
    """The ``config.pbtxt`` text (protobuf text format of Triton's ``inference.ModelConfig``).

    Args:
        metadata: the plan's metadata (I/O names, dtypes, profile, model description).
        name: the model name clients address.
        instances: engine instances per GPU (each has its own execution context).
        max_queue_delay_us: how long Triton may hold a request to form a larger batch.

    Raises:
        ValueError: on a bad name or counts, an unsupported dtype, or a profile that does not start at batch 1.

    Example:
        >>> text = triton_config(read_plan_metadata("unet.plan"), "unet")  # doctest: +SKIP
    """
    check_model_name(name)
    if instances < 1:
        raise ValueError(f"instances must be >= 1, got {instances}")
    if max_queue_delay_us < 0:
        raise ValueError(f"max_queue_delay_us must be >= 0, got {max_queue_delay_us}")
    profile = metadata.profile
    if profile.min[0] != 1:
        raise ValueError(
            f"Triton sends batches from 1 up, but the engine's profile starts at batch {profile.min[0]}; "
            f"rebuild with --min-shape 1x{profile.min[1]}x{profile.min[2]}x{profile.min[3]}"
        )
    types = []
    for dtype in (metadata.input_dtype, metadata.output_dtype):
        if dtype not in TRITON_TYPES:
            raise ValueError(f"dtype {dtype!r} has no Triton type here; supported: {sorted(TRITON_TYPES)}")
        types.append(TRITON_TYPES[dtype])
    input_dims, output_dims = io_dims(profile, metadata.info)
    model_json = json.dumps(metadata.info.to_json())
    return "\n".join([
        f'name: "{name}"',
        'platform: "tensorrt_plan"',
        f"max_batch_size: {profile.max_batch}",
        "input [",
        "  {",
        f'    name: "{metadata.input_name}"',
        f"    data_type: {types[0]}",
        "    format: FORMAT_NCHW",
        f"    dims: {_dims_text(input_dims)}",
        "  }",
        "]",
        "output [",
        "  {",
        f'    name: "{metadata.output_name}"',
        f"    data_type: {types[1]}",
        f"    dims: {_dims_text(output_dims)}",
        "  }",
        "]",
        "dynamic_batching {",
        f"  preferred_batch_size: [ {profile.max_batch} ]",
        f"  max_queue_delay_microseconds: {max_queue_delay_us}",
        "}",
        "instance_group [",
        "  {",
        f"    count: {instances}",
        "    kind: KIND_GPU",
        "  }",
        "]",
        f'default_model_filename: "{PLAN_FILE}"',
        "parameters {",
        '  key: "unetrt"',
        f"  value: {{ string_value: {model_json} }}",
        "}",
        "",
    ])


def check_model_name(name: str) -> None:
    """Raise unless ``name`` is usable as a Triton model (and folder) name.

    Raises:
        ValueError: naming the allowed characters.
    """
    if not _NAME.match(name) or name in (".", ".."):
        raise ValueError(f"model name must use letters, digits, '_', '-' and '.', got {name!r}")


def model_plan_path(repository: str | Path, name: str) -> Path:
    """Where the plan of model ``name`` lies in the repository: ``REPO/NAME/1/model.plan``."""
    check_model_name(name)
    return Path(repository) / name / VERSION / PLAN_FILE


def write_triton_repository(repository: str | Path, name: str, plan_path: str | Path, metadata: PlanMetadata,
                            instances: int = 1, max_queue_delay_us: int = 100) -> Path:
    """Put a plan and its config into a Triton model repository.

    The plan (and its ``.json`` metadata) is copied unless it already lies at
    :func:`model_plan_path`. An existing config of the same model is replaced.

    Args:
        repository: the model repository folder (created if missing).
        name: the model name.
        plan_path: the built plan.
        metadata: its metadata.
        instances: engine instances per GPU.
        max_queue_delay_us: dynamic batching delay.

    Returns:
        The written ``config.pbtxt``.

    Raises:
        FileNotFoundError: when the plan does not exist.
        ValueError: as :func:`triton_config`.
    """
    plan_path = Path(plan_path)
    check_file(plan_path, "TensorRT plan")
    text = triton_config(metadata, name, instances, max_queue_delay_us)
    target = model_plan_path(repository, name)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.resolve() != plan_path.resolve():
        shutil.copyfile(plan_path, target)
        metadata_path(target).write_text(metadata.to_json() + "\n", encoding="utf-8")
    config = target.parent.parent / CONFIG_FILE
    config.write_text(text, encoding="utf-8")
    return config
