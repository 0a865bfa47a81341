"""Models and the sample clip shipped inside the package, addressed by name."""

from __future__ import annotations

from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent / "models"
SAMPLES_DIR = Path(__file__).resolve().parent / "samples"
MODEL_SUFFIXES = (".onnx", ".pt")


def bundled_model_names() -> list[str]:
    """Names of the models shipped with unetrt (e.g. 'camvid')."""
    return sorted({p.stem for p in MODELS_DIR.glob("*") if p.suffix in MODEL_SUFFIXES})


def bundled_model_path(name: str, suffix: str = ".onnx") -> Path:
    """The file of a bundled model in the given format.

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


def sample_clip() -> Path:
    """The bundled sample clip (a CamVid validation sequence as an MP4 video).

    Raises:
        FileNotFoundError: when the package was installed without its sample data.
    """
    clips = sorted(SAMPLES_DIR.glob("*.mp4"))
    if not clips:
        raise FileNotFoundError(f"no sample clip in {SAMPLES_DIR}; reinstall unetrt with its package data")
    return clips[0]
