"""The console scripts: each imports its command module only when run, so a missing or incompatible
OpenCV (or another absent dependency: torch, onnx, the export extra) is reported as one line with exit code 2
instead of a traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable

from . import __version__
from .cli import USAGE_ERROR, fill_closed_standard_streams, install_hint
from .opencv import OpenCVImportError, import_cv2

# The commands that build a network with torch: without torch, torch is named first (the export extra, which
# brings the rest, does not bring it), whatever their module happened to import first.
TORCH_MODULES = ("unetrt.export.train", "unetrt.export.onnx_export")
# Where a command's parser lives when its module needs what may be missing: its --help then still answers.
HELP_MODULES = {"unetrt.export.train": "unetrt.export.train_options",
                "unetrt.export.onnx_export": "unetrt.export.export_options"}


def _missing_module_line(module: str, command: str, exc: ModuleNotFoundError) -> str:
    """The one line for ``command``, whose ``module`` needs ``exc.name``, which is not installed: what is missing
    and how to install it (the export extra holds every such module of the commands but torch)."""
    name = (exc.name or str(exc)).split(".")[0]
    if module in TORCH_MODULES and importlib.util.find_spec("torch") is None:
        name = "torch"
    return f"{command} needs the Python module {name!r}, which is not installed: {install_hint(name)}"


def _version_asked(command: str) -> bool:
    """Print the version line of ``--version`` (as the command's parser would) when it was asked; whether it was.

    Its parser lives in the module that could not be imported, and ``unet-train --version`` on a fresh install
    without torch must still say which unetrt is there.
    """
    if "--version" not in sys.argv[1:]:
        return False
    print(f"{command} (unetrt {__version__})")
    return True


def _help_given(module: str, missing: str) -> bool:
    """Print the command's help and then the ``missing`` line when ``-h`` or ``--help`` was asked and the command's
    parser imports without its module; whether it did.

    ``unet-train --help`` (or ``unet-export --help``) on the runtime alone is how a user finds out what training
    takes: the options, and that torch must be installed first (with the line that installs it).
    """
    arguments = sys.argv[1:]
    options = arguments[: arguments.index("--")] if "--" in arguments else arguments
    if module not in HELP_MODULES or not {"-h", "--help"} & set(options):
        return False
    try:
        parser = importlib.import_module(HELP_MODULES[module]).build_parser()
    except ModuleNotFoundError:
        return False
    print(parser.format_help())
    print(missing)
    return True


def _launch(module: str, command: str) -> int:
    fill_closed_standard_streams()  # before the import, which writes NumPy's warnings to sys.stderr
    try:
        import_cv2()
        main: Callable[[], int] = importlib.import_module(module).main
    except OpenCVImportError as exc:
        if _version_asked(command):
            return 0
        print(f"error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] == "unetrt":
            raise  # a module of unetrt itself missing is a broken install, not an extra to add
        if _version_asked(command):
            return 0
        missing = _missing_module_line(module, command, exc)
        if _help_given(module, missing):
            return 0
        print(f"error: {missing}", file=sys.stderr)
        return USAGE_ERROR
    return main()


def unet_stream() -> int:
    """``unet-stream``: see :mod:`unetrt.stream.cli`."""
    return _launch("unetrt.stream.cli", "unet-stream")


def unet_eval() -> int:
    """``unet-eval``: see :mod:`unetrt.evaluate`."""
    return _launch("unetrt.evaluate", "unet-eval")


def unet_bench() -> int:
    """``unet-bench``: see :mod:`unetrt.benchmarks.bench`."""
    return _launch("unetrt.benchmarks.bench", "unet-bench")


def unet_train() -> int:
    """``unet-train``: see :mod:`unetrt.export.train`."""
    return _launch("unetrt.export.train", "unet-train")


def unet_export() -> int:
    """``unet-export``: see :mod:`unetrt.export.onnx_export`."""
    return _launch("unetrt.export.onnx_export", "unet-export")


def unet_build() -> int:
    """``unet-build``: see :mod:`unetrt.export.tensorrt`."""
    return _launch("unetrt.export.tensorrt", "unet-build")


def unet_weights() -> int:
    """``unet-weights``: see :mod:`unetrt.export.weights_figure`."""
    return _launch("unetrt.export.weights_figure", "unet-weights")


def unet_batch() -> int:
    """``unet-batch``: see :mod:`unetrt.batch.cli`."""
    return _launch("unetrt.batch.cli", "unet-batch")
