"""What every unetrt command shares: argument types and turning errors into one line and exit code 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

USAGE_ERROR = 2

# Errors that mean "the user asked for something that cannot be done": they are
# reported as one line without a traceback. Anything else is a bug and propagates.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, NotADirectoryError,
                                                PermissionError, ImportError)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help that ends each option with its default, except where there is none to state.

    Flags (default False), options without a default (None) and help texts that already say
    "(default: ...)" in words are left as written.

    Example:
        >>> parser = argparse.ArgumentParser(formatter_class=HelpFormatter)
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "(default" in text or "%(default)" in text:
            return text
        return super()._get_help_string(action)


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``WxH`` (e.g. ``256x192``) into ``(width, height)`` for argparse.

    Raises:
        argparse.ArgumentTypeError: when the text is not two positive integers joined by 'x'.

    Example:
        >>> parse_size("480x360")
        (480, 360)
    """
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(
            f"size must be WIDTHxHEIGHT with positive integers, e.g. 480x360, got {text!r}"
        )
    return int(parts[0]), int(parts[1])


def run_cli(action: Callable[[], object]) -> int:
    """Run a command's work; report user errors as one line on stderr with exit code 2.

    Returns:
        0 on success, 2 on a user error, 130 on Ctrl-C.
    """
    try:
        action()
    except USER_ERRORS as exc:
        # Library errors can span lines (torch, onnxruntime); the user gets one.
        print("error: " + " ".join(str(exc).split()), file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
