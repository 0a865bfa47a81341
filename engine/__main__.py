"""``python -m unetrt COMMAND [ARGS]``: the console scripts by name, for a shell where they are not on PATH.

``pip install --user`` puts ``unet-stream`` and the others in ``~/.local/bin``, which many shells (a Jetson's
among them) leave off PATH, and a venv's scripts need the venv activated: ``python -m unetrt stream ...`` runs
the same command with the same flags wherever this Python imports unetrt.

Example:
    >>> main(["stream", "--help"])  # doctest: +SKIP
    usage: unet-stream [-h] ...
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from . import __version__, commands
from .cli import USAGE_ERROR


def _doctor() -> int:
    from .doctor import main as doctor_main

    return doctor_main(sys.argv[1:])


# Name -> (entry point, what it does); each entry point reads its arguments from sys.argv as its script does.
COMMANDS: dict[str, tuple[Callable[[], int], str]] = {
    "stream": (commands.unet_stream, "segment a camera, stream, video, folder or bag live"),
    "eval": (commands.unet_eval, "score a model on labelled images"),
    "bench": (commands.unet_bench, "time a model on this machine's backends"),
    "build": (commands.unet_build, "build a TensorRT engine from an ONNX model"),
    "batch": (commands.unet_batch, "segment recorded images and videos on a Ray cluster"),
    "train": (commands.unet_train, "train a U-Net (needs the export extra)"),
    "export": (commands.unet_export, "export a checkpoint to ONNX, FP16 or INT8 (needs the export extra)"),
    "weights": (commands.unet_weights, "draw the loss weight maps of labelled samples (needs the export extra)"),
    "doctor": (_doctor, "say what runs on this machine and where; --build builds the engine now"),
}


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return ("usage: python -m unetrt COMMAND [ARGS]  (the same as unet-COMMAND [ARGS]; COMMAND --help for its flags)"
            "\n\ncommands:\n" + "\n".join(lines))


def main(argv: Sequence[str] | None = None) -> int:
    """Run one unetrt command by name.

    Args:
        argv: the command's name (``stream`` or ``unet-stream``) and its arguments; None: ``sys.argv[1:]``.

    Returns:
        The command's exit code; 2 for a missing or unknown command.

    Example:
        >>> main(["doctor"])  # doctest: +SKIP
        0
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print(usage(), file=sys.stderr)
        return USAGE_ERROR
    if args[0] in ("-h", "--help"):
        print(usage())
        return 0
    if args[0] == "--version":
        print(f"unetrt {__version__}")
        return 0
    name = args[0].removeprefix("unet-")
    if name not in COMMANDS:
        print(f"python -m unetrt: error: {args[0]!r} is not a unetrt command; choose from "
              f"{', '.join(COMMANDS)} (see python -m unetrt --help)", file=sys.stderr)
        return USAGE_ERROR
    entry, _ = COMMANDS[name]
    program = "python -m unetrt.doctor" if name == "doctor" else f"unet-{name}"
    saved = sys.argv
    sys.argv = [program, *args[1:]]  # argparse names the command as its own script does
    try:
        return entry()
    finally:
        sys.argv = saved


if __name__ == "__main__":
    sys.exit(main())
