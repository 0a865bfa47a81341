"""The console scripts: help that states defaults and copyable examples, one line when OpenCV cannot be used."""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from unetrt.opencv import OpenCVImportError
from unetrt.stream.cli import build_parser as stream_parser


def _parser(module: str) -> argparse.ArgumentParser:
    if module.startswith("unetrt.export.") and module != "unetrt.export.tensorrt":
        pytest.importorskip("torch")
    import importlib

    parser: argparse.ArgumentParser = importlib.import_module(module).build_parser()
    return parser


@pytest.mark.parametrize("module", ["unetrt.export.train", "unetrt.stream.cli", "unetrt.evaluate",
                                    "unetrt.benchmarks.bench", "unetrt.export.tensorrt",
                                    "unetrt.export.onnx_export", "unetrt.export.weights_figure",
                                    "unetrt.batch.cli"])
def test_every_option_with_a_default_states_it(module: str) -> None:
    parser = _parser(module)
    text = parser.format_help()
    assert "``" not in text
    for action in parser._actions:
        # A switch (--no-build) says what it does; "(default: True)" after it would read wrong.
        switch = action.nargs == 0 and not isinstance(action, argparse.BooleanOptionalAction)
        no_default = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if not action.option_strings or switch or no_default:
            continue
        assert action.help, f"{action.option_strings[0]} has no help"
        shown = parser.formatter_class(parser.prog)._get_help_string(action) or ""
        assert "(default" in shown, f"{action.option_strings[0]} does not state its default"


def test_stream_epilog_pattern_is_copyable() -> None:
    text = stream_parser().format_help()
    assert "out/frame_%04d.png" in text and "%%" not in text
    assert "http://127.0.0.1:8080" in text and "--legend" in text and "rotate-180" in text


def _run_command(tmp_path: Path, fake_cv2: str | None) -> subprocess.CompletedProcess[str]:
    """Run unet-stream's console-script function with cv2 hidden (None) or replaced by a fake package."""
    prelude = "import sys\nsys.modules['cv2'] = None\n"
    if fake_cv2 is not None:
        (tmp_path / "cv2").mkdir()
        (tmp_path / "cv2" / "__init__.py").write_text(textwrap.dedent(fake_cv2))
        prelude = f"import sys\nsys.path.insert(0, {str(tmp_path)!r})\n"
    code = prelude + ("from unetrt.commands import unet_stream\n"
                      "sys.argv = ['unet-stream', 'sample']\nsys.exit(unet_stream())\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": ""})


def test_missing_opencv_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = _run_command(tmp_path, None)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "pip install 'unetrt[opencv]'" in done.stderr and "--system-site-packages" in done.stderr


def test_opencv_built_for_numpy_1_is_one_line_naming_the_fix(tmp_path: Path) -> None:
    # What Debian's python3-opencv 4.6 does under NumPy 2: NumPy prints a warning and a stack, then the import fails.
    fake = """
        import sys
        sys.stderr.write("A module that was compiled using NumPy 1.x cannot be run in NumPy 2.4.6 as it may crash.\\n"
                         "Traceback (most recent call last):\\n  File ...\\n")
        raise ImportError("numpy.core.multiarray failed to import")
    """
    done = _run_command(tmp_path, fake)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "pip install 'numpy<2'" in done.stderr and "Traceback" not in done.stderr


def test_segmenter_import_reports_missing_opencv() -> None:
    code = ("import sys\nsys.modules['cv2'] = None\nimport unetrt\n"
            "try:\n    unetrt.Segmenter\nexcept ImportError as e:\n    print(type(e).__name__, e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert out.startswith("OpenCVImportError unetrt needs OpenCV")


def test_the_console_script_exits_with_the_command_exit_code(monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    # The console-script wrapper passes what the function returns to sys.exit: a user error must stay exit code 2.
    from unetrt.commands import unet_stream

    monkeypatch.setattr(sys, "argv", ["unet-stream", "/nonexistent/clip.mp4", "--headless"])
    assert unet_stream() == 2
    assert "does not exist" in capsys.readouterr().err


def _launched_without(module: str, hidden: str, monkeypatch: pytest.MonkeyPatch,
                      capsys: pytest.CaptureFixture[str], command: Callable[[], int],
                      arguments: Sequence[str] = ("--help",)) -> tuple[int, str]:
    """Run a console-script function with ``arguments`` as a fresh install without ``hidden`` would: ``module``
    imported anew with ``hidden`` unimportable. Returns the exit code and stderr."""
    monkeypatch.setitem(sys.modules, hidden, None)
    monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.setattr(sys, "argv", [command.__name__.replace("_", "-"), *arguments])
    code = command()
    return code, capsys.readouterr().err


TORCH_LINE = ("needs the Python module 'torch', which is not installed: install the PyTorch build you want first (the "
              "CPU build: pip install torch==2.13.0+cpu --extra-index-url https://download.pytorch.org/whl/cpu), then "
              "pip install 'unetrt[export]'")


def test_a_command_without_torch_names_the_cpu_build_in_one_line(monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # The wheel without torch: unet-train and unet-export were a ModuleNotFoundError traceback, exit 1. unet-export
    # imports onnx before torch, and the export extra brings onnx but (on Linux) no torch: torch is named first.
    from unetrt.commands import unet_export, unet_train

    for command, module, arguments in ((unet_train, "unetrt.export.train", ("--dataset", "camvid", "--data", "x")),
                                       (unet_export, "unetrt.export.onnx_export", ("camvid", "-o", "x.onnx"))):
        monkeypatch.setitem(sys.modules, "onnx", None)
        code, err = _launched_without(module, "torch", monkeypatch, capsys, command, arguments)
        assert code == 2
        assert err.splitlines() == [f"error: {command.__name__.replace('_', '-')} {TORCH_LINE}"]


@pytest.mark.parametrize("asked", [["--help"], ["-h"], ["--dataset", "camvid", "--help"]])
def test_train_help_without_torch_prints_the_help_and_the_install_line(
        asked: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # The runtime alone (pip install . without [export]): unet-train --help was the missing-module line and exit 2,
    # so a user could not read what training takes, nor that torch comes first, before installing it.
    from unetrt.commands import unet_train

    for module in ("unetrt.export.train_options", "unetrt.export.losses"):  # each imported anew without torch
        monkeypatch.delitem(sys.modules, module, raising=False)
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.delitem(sys.modules, "unetrt.export.train", raising=False)
    monkeypatch.setattr(sys, "argv", ["unet-train", *asked])
    assert unet_train() == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith("usage: unet-train ") and "--dataset {camvid,isbi}" in out and "--loss" in out
    assert out.splitlines()[-1] == f"unet-train {TORCH_LINE}"


def test_export_help_without_torch_and_onnx_prints_the_help_and_the_install_line(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # The same for unet-export, whose module imports onnx before torch: torch is named, as for a run.
    from unetrt.commands import unet_export

    monkeypatch.delitem(sys.modules, "unetrt.export.export_options", raising=False)
    monkeypatch.setitem(sys.modules, "onnx", None)
    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.delitem(sys.modules, "unetrt.export.onnx_export", raising=False)
    monkeypatch.setattr(sys, "argv", ["unet-export", "--help"])
    assert unet_export() == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith("usage: unet-export ") and "--precision fp16[,int8]" in out and "--calibration DIR" in out
    assert out.splitlines()[-1] == f"unet-export {TORCH_LINE}"


def test_train_help_after_a_double_dash_is_no_help_asked(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    # Past "--" an argument is a value (argparse's rule): the command says what is missing, as for a run.
    from unetrt.commands import unet_train

    code, err = _launched_without("unetrt.export.train", "torch", monkeypatch, capsys, unet_train, ("--", "--help"))
    assert code == 2 and err == f"error: unet-train {TORCH_LINE}\n"


def test_version_needs_none_of_the_commands_modules(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    # README: every command takes --version. From the wheel without torch (or without OpenCV) unet-train --version
    # was the missing-module line and exit 2, as if it had been asked to train.
    from unetrt import __version__
    from unetrt.commands import unet_stream, unet_train

    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.delitem(sys.modules, "unetrt.export.train", raising=False)
    monkeypatch.setattr(sys, "argv", ["unet-train", "--version"])
    assert unet_train() == 0
    assert capsys.readouterr() == (f"unet-train (unetrt {__version__})\n", "")
    monkeypatch.setattr("unetrt.commands.import_cv2", lambda: (_ for _ in ()).throw(OpenCVImportError("no cv2")))
    monkeypatch.setattr(sys, "argv", ["unet-stream", "--version"])
    assert unet_stream() == 0
    assert capsys.readouterr() == (f"unet-stream (unetrt {__version__})\n", "")


def test_a_command_without_onnx_names_the_export_extra(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    from unetrt.commands import unet_export

    code, err = _launched_without("unetrt.export.onnx_export", "onnx", monkeypatch, capsys, unet_export,
                                  ("camvid", "-o", "x.onnx"))
    assert code == 2
    assert err.splitlines() == ["error: unet-export needs the Python module 'onnx', which is not installed: "
                                "pip install 'unetrt[export]'"]


def test_a_part_of_unetrt_missing_is_a_broken_install_not_an_extra_to_add(monkeypatch: pytest.MonkeyPatch,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    # "unet-weights needs the Python module 'unetrt' ... pip install 'unetrt[export]'" would send the user to
    # install what is installed: the import error stays as it is.
    from unetrt.commands import unet_weights

    with pytest.raises(ModuleNotFoundError) as missing:
        _launched_without("unetrt.export.weights_figure", "unetrt.export.weights", monkeypatch, capsys, unet_weights)
    assert missing.value.name == "unetrt.export.weights"


def test_each_console_script_names_itself_in_its_missing_module_line(monkeypatch: pytest.MonkeyPatch) -> None:
    # The line says which command needs the module: the one the user typed, as pyproject.toml installs it.
    from unetrt import commands

    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    scripts = re.findall(r'^(unet-[\w-]+) = "unetrt\.commands:(\w+)"$', pyproject, re.M)
    launched: list[str] = []
    monkeypatch.setattr(commands, "_launch", lambda module, command: launched.append(command) or 0)
    for _, function in scripts:
        assert getattr(commands, function)() == 0
    assert len(scripts) == 8 and launched == [script for script, _ in scripts]


def test_version_before_other_arguments_needs_none_of_the_commands_modules(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # argparse answers --version wherever it stands (unet-train --version --epochs 3): so does the launcher.
    from unetrt import __version__
    from unetrt.commands import unet_train

    monkeypatch.setitem(sys.modules, "torch", None)
    monkeypatch.delitem(sys.modules, "unetrt.export.train", raising=False)
    monkeypatch.setattr(sys, "argv", ["unet-train", "--version", "--epochs", "3"])
    assert unet_train() == 0
    assert capsys.readouterr() == (f"unet-train (unetrt {__version__})\n", "")
