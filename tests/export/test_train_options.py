"""unetrt.export.train_options: unet-train's parser, whose help users read before training."""

from __future__ import annotations

from unetrt.bundled import bundled_model_path
from unetrt.export.train_options import build_parser
from unetrt.model_file import read_model_file


def test_the_help_of_base_names_each_bundled_models_own_width() -> None:
    # The help said "the bundled models: 16" after camvid had shipped at base 24 (docs/models.md, attempt h13 on).
    help_text = " ".join(build_parser().format_help().split())
    entry = help_text.split("--base BASE", 1)[1].split(" --depth", 1)[0]
    for name in ("camvid", "isbi"):
        base = read_model_file(bundled_model_path(name, ".onnx")).info.base
        assert f"{name}: {base}" in entry, entry
