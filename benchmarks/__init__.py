"""unetrt.benchmarks: unet-bench and the project's benchmark scripts."""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).resolve().parent


def in_checkout(folder: Path = _HERE) -> bool:
    """Whether the scripts run from a clone of the repository (``benchmarks/`` beside ``setup.py``), not an install."""
    return folder.name == "benchmarks" and (folder.parent / "setup.py").is_file()


def results_dir(folder: Path = _HERE) -> Path:
    """Where a benchmark script writes by default.

    In a checkout, ``benchmarks/results`` (the files the documents cite). Installed, ``benchmark-results`` in the
    current folder: never inside the package, whose files ``pip uninstall`` leaves behind (the ``unetrt`` folder
    they keep then imports as an empty namespace package) and which a system install cannot write.
    """
    return folder / "results" if in_checkout(folder) else Path("benchmark-results")


def camvid_val_frames(folder: Path = _HERE) -> Path:
    """The CamVid frames the scripts time by default: ``shared/data/camvid/val`` beside the checkout, and for an
    install the documents' ``../shared/data/camvid/val`` from the current folder."""
    root = folder.parents[1] if in_checkout(folder) else Path("..")
    return root / "shared" / "data" / "camvid" / "val"
