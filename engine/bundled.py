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


def bundled_precision_path(name: str, precision: str) -> Path | None:
    """The ONNX file of a bundled model at a precision ('fp32', 'fp16' or 'int8'), or None when not shipped.

    Raises:
        ValueError: on an unknown precision.

    Example:
        >>> bundled_precision_path("camvid", "int8").name  # doctest: +SKIP
        'camvid.int8.onnx'
    """
    if precision not in PRECISION_SUFFIXES:
        raise ValueError(f"precision must be one of {', '.join(PRECISION_SUFFIXES)}, got {precision!r}")
    path = MODELS_DIR / f"{name}{PRECISION_SUFFIXES[precision]}"
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
