"""Models and the sample clip shipped inside the package, addressed by name."""

from __future__ import annotations

from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent / "models"
SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
MODEL_SUFFIXES = (".onnx", ".pt")
# The file of each precision of a bundled model, written by tools/state_bundled_model.py.
PRECISION_SUFFIXES = {"fp32": ".onnx", "fp16": ".fp16.onnx", "int8": ".int8.onnx"}


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


def sample_clip() -> Path:
    """The bundled sample clip (a CamVid validation sequence as an MP4 video).

    Raises:
        FileNotFoundError: when the package was installed without its sample data.
    """
    clips = sorted(SAMPLES_DIR.glob("*.mp4"))
    if not clips:
        raise FileNotFoundError(f"no sample clip in {SAMPLES_DIR}; reinstall unetrt with its package data")
    return clips[0]
