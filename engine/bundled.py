"""Models and the sample clip shipped inside the package, addressed by name."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

MODELS_DIR = Path(__file__).resolve().parent / "models"
SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
MODEL_SUFFIXES = (".onnx", ".pt")
# The file of each precision of a bundled model, written by tools/state_bundled_model.py.
PRECISION_SUFFIXES = {"fp32": ".onnx", "fp16": ".fp16.onnx", "int8": ".int8.onnx"}
# The INT8 file a TensorRT engine is built from: NAME.int8.onnx is the CPU layout (uint8 activations with zero
# points), which TensorRT's explicit quantization refuses; this one has symmetric int8 Q/DQ (unet-export --int8
# --int8-target tensorrt), calibrated on the same frames. Its entry in NAME.json's variants is TENSORRT_INT8_VARIANT.
TENSORRT_INT8_SUFFIX = ".int8.tensorrt.onnx"
TENSORRT_INT8_VARIANT = "int8_tensorrt"
# The layouts a bundled INT8 file is shipped in (unetrt.export.quantize's targets).
INT8_TARGETS = ("cpu", "tensorrt")
# What a bundled model may run at on a CPU when no precision is asked; the first is the default.
CPU_PRECISIONS = ("int8", "fp32")


def bundled_model_names() -> list[str]:
    """Names of the models shipped with unetrt (e.g. 'camvid'); precision variants share their model's name."""
    return sorted({p.name.split(".")[0] for p in MODELS_DIR.glob("*") if p.suffix in MODEL_SUFFIXES})


def bundled_model_path(name: str, suffix: str = ".onnx") -> Path:
    """The file of a bundled model in the given format.

    Args:
        name: the model's name, e.g. 'camvid'.
        suffix: '.onnx' (FP32), '.pt', or a precision variant such as '.int8.onnx' (see ``PRECISION_SUFFIXES``).

    Raises:
        ValueError: when no bundled model has that name or format; the message lists the names.

    Example:
        >>> bundled_model_path("camvid").name
        'camvid.onnx'
    """
    path = MODELS_DIR / f"{name}{suffix}"
    if not path.is_file():
        names = bundled_model_names()
        raise ValueError(
            f"no bundled model {name!r} in format {suffix!r}; bundled models: {', '.join(names) or 'none'}"
        )
    return path


def bundled_precision_path(name: str, precision: str, target: str = "cpu") -> Path | None:
    """The ONNX file of a bundled model at a precision ('fp32', 'fp16' or 'int8'), or None when not shipped.

    Args:
        name: the model's name, e.g. 'camvid'.
        precision: 'fp32', 'fp16' or 'int8'.
        target: the INT8 file's layout: 'cpu' (``NAME.int8.onnx``, for ONNX Runtime and OpenVINO) or 'tensorrt'
            (``NAME.int8.tensorrt.onnx``, symmetric int8, for a TensorRT build); the other precisions have one file.

    Raises:
        ValueError: on an unknown precision or target.

    Example:
        >>> bundled_precision_path("camvid", "int8").name  # doctest: +SKIP
        'camvid.int8.onnx'
        >>> bundled_precision_path("camvid", "int8", "tensorrt").name  # doctest: +SKIP
        'camvid.int8.tensorrt.onnx'
    """
    if precision not in PRECISION_SUFFIXES:
        raise ValueError(f"precision must be one of {', '.join(PRECISION_SUFFIXES)}, got {precision!r}")
    if target not in INT8_TARGETS:
        raise ValueError(f"INT8 target must be one of {', '.join(INT8_TARGETS)}, got {target!r}")
    suffix = TENSORRT_INT8_SUFFIX if precision == "int8" and target == "tensorrt" else PRECISION_SUFFIXES[precision]
    path = MODELS_DIR / f"{name}{suffix}"
    return path if path.is_file() else None


def is_bundled_name(model: str | Path) -> bool:
    """Whether ``model`` names a bundled model (a bare name such as 'isbi', not a path to a file).

    Example:
        >>> is_bundled_name("camvid"), is_bundled_name("runs/camvid.onnx")
        (True, False)
    """
    if not isinstance(model, (str, os.PathLike)):
        return False  # whoever opens it says what a model is
    path = Path(model)
    return not path.suffix and len(path.parts) == 1 and str(model) in bundled_model_names()


def bundled_statement(name: str) -> dict[str, Any]:
    """The statement of a bundled model (``NAME.json``, written by tools/state_bundled_model.py): its figures,
    where they were measured, and the settings it runs with ({} for a model shipped without one).

    Raises:
        ValueError: when the statement is not valid JSON.

    Example:
        >>> bundled_statement("isbi")["cleanup"]["settings"]["mode"]  # doctest: +SKIP
        'watershed'
    """
    path = MODELS_DIR / f"{name}.json"
    if not path.is_file():
        return {}
    try:
        statement = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"the statement {str(path)!r} is not valid JSON ({exc}); reinstall unetrt") from exc
    return statement if isinstance(statement, dict) else {}


def bundled_cpu_precision(name: str) -> str:
    """The precision a bundled model runs at on a CPU when none is asked: INT8, unless its statement's
    ``cpu_precision`` names FP32 (a model whose INT8 variant loses a figure its users rely on; the statement
    says which and by how much).

    Raises:
        ValueError: when the statement names a precision outside ``CPU_PRECISIONS``.

    Example:
        >>> bundled_cpu_precision("camvid")  # doctest: +SKIP
        'int8'
    """
    stated = bundled_statement(name).get("cpu_precision")
    precision = CPU_PRECISIONS[0] if stated is None else stated.get("precision")
    if precision not in CPU_PRECISIONS:
        raise ValueError(f"the statement of {name!r} names CPU precision {precision!r}; expected one of "
                         f"{', '.join(CPU_PRECISIONS)}")
    return str(precision)


def sample_clip() -> Path:
    """The bundled sample clip (a CamVid validation sequence as an MP4 video).

    Raises:
        FileNotFoundError: when the package was installed without its sample data.
    """
    clips = sorted(SAMPLES_DIR.glob("*.mp4"))
    if not clips:
        raise FileNotFoundError(f"no sample clip in {SAMPLES_DIR}; reinstall unetrt with its package data")
    return clips[0]
