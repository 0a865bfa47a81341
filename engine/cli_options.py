"""The flags every unetrt command shares, spelled once: model, output, device, size, precision, threads, batch size.

Each command's parser adds these through the functions here, so one concept has one name everywhere
(``--model``, ``-o/--output``, ``--device``, ``--size WxH``, ``--precision``, ``--threads``, ``--batch-size``).
The spellings a command had before, and those of trtexec and jetson-inference's segnet where they mean the same
thing, stay accepted as hidden aliases (they parse to the same value, and ``--help`` shows only the one name);
docs/cli.md has the table. A :class:`CommandParser` reports every parse error as one line with exit code 2.

Example:
    >>> parser = CommandParser(prog="unet-demo")
    >>> add_model(parser, help="model file", positional="MODEL", aliases=("--engine",))
    >>> add_size(parser, help="working size")
    >>> parser.parse_args(["--engine", "camvid", "--working-size", "256x192"])
    Namespace(model='camvid', working_size=(256, 192))
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from . import __version__
from .backends import PRECISIONS
from .backends.registry import backend_help, backend_names
from .cli import USAGE_ERROR, HelpFormatter, parse_size
from .cpu import MAX_THREADS
from .plan_metadata import Shape, parse_shape

# The one list of each kind of choice (the backends' comes from unetrt.backends.registry when a parser is built).
DEVICES = ("auto", "cpu", "cuda")
PRECISION_CHOICES = PRECISIONS
# The tensor name of every unetrt model's input (unetrt.export.onnx_export.INPUT_NAME), as trtexec's shape
# specifications name it: --optShapes=image:1x3x192x256.
INPUT_NAME = "image"
# TensorRT takes a memory pool's limit in bytes as a size_t (IBuilderConfig.setMemoryPoolLimit).
MAX_WORKSPACE_MIB = (2**64 - 1) >> 20
ALIASES_EPILOG = ("Older flag spellings, and trtexec's and jetson-inference segnet's where they mean the same, are "
                  "accepted too; docs/cli.md lists them.")

Finisher = Callable[[argparse.Namespace], None]


class CommandParser(argparse.ArgumentParser):
    """An argument parser with one-line errors (exit code 2) and checks that run after parsing.

    The checks (:meth:`add_finisher`) merge a positional argument with its flag, fill defaults that depend on
    other flags, and raise ValueError for a combination that cannot be; the error is reported like any
    parse error. Every command takes ``--version`` (unetrt's version, as ``pip show unetrt`` gives it).

    Example:
        >>> parser = CommandParser(prog="unet-demo")
        >>> parser.parse_args([]).__dict__
        {}
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self._finishers: list[Finisher] = []
        # Without it, `unet-weights --version` said "the following arguments are required: --images, --labels".
        self.add_argument("--version", action="version", version=f"%(prog)s (unetrt {__version__})",
                          help="print unetrt's version and exit")

    def add_finisher(self, finish: Finisher) -> None:
        """Run ``finish(namespace)`` after every parse, in the order added; a ValueError becomes a parse error."""
        self._finishers.append(finish)

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        """Parse as argparse does, then run the finishers."""
        parsed, extras = super().parse_known_args(args, namespace)
        for finish in self._finishers:
            try:
                finish(parsed)
            except ValueError as exc:
                self.error(str(exc))
        return parsed, extras

    def error(self, message: str) -> NoReturn:
        """Print ``<prog>: error: <message> (see <prog> --help)`` on one line and exit 2."""
        self.exit(USAGE_ERROR, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


# What add_argument can be called on: a parser, an argument group or a mutually exclusive group.
Container = argparse._ActionsContainer


def add_aliases(container: Container, flags: Sequence[str], dest: str, **kwargs: Any) -> None:
    """Accept ``flags`` as hidden spellings of the option stored in ``dest`` (not in ``--help``).

    The alias leaves the visible option's default alone, so either spelling gives the same value.

    Example:
        >>> parser = CommandParser(prog="demo")
        >>> _ = parser.add_argument("--output")
        >>> add_aliases(parser, ["--out"], "output")
        >>> parser.parse_args(["--out", "x"]).output
        'x'
    """
    if flags:
        container.add_argument(*flags, dest=dest, help=argparse.SUPPRESS, default=argparse.SUPPRESS, **kwargs)


def _store_once(concept: str, marker: str) -> type[argparse.Action]:
    """An argparse action that stores its value, refusing a second, different one for the same destination
    (through the option or any of its aliases: ``--engine a.plan --onnx b.onnx`` would time only b)."""

    class StoreOnce(argparse.Action):
        def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                     option_string: str | None = None) -> None:
            earlier = getattr(namespace, marker, None)
            if earlier is not None and earlier[1] != values:
                raise argparse.ArgumentError(self, f"the {concept} is given twice ({earlier[0]} {earlier[1]!r} "
                                                   f"and {option_string} {values!r}); give it once")
            setattr(namespace, marker, (option_string, values))
            setattr(namespace, self.dest, values)

    return StoreOnce


def _add_value(parser: CommandParser, concept: str, flags: Sequence[str], dest: str, *, help: str,
               positional: str | None, aliases: Sequence[str], required: bool, default: Any,
               container: Container | None, once: bool = False, **kwargs: Any) -> None:
    """An option with hidden aliases and, optionally, the positional argument it may also be given as; ``once``:
    two different values through its spellings are refused (else the last one counts, as argparse does)."""
    target = parser if container is None else container
    if once:
        marker = f"_{dest}_given_as"
        kwargs["action"] = _store_once(concept, marker)
        parser.add_finisher(lambda args: vars(args).pop(marker, None))
    target.add_argument(*flags, dest=dest, default=default, help=help, **kwargs)
    add_aliases(target, aliases, dest, **kwargs)
    if positional is None:
        if required:
            parser.add_finisher(lambda args: _require(args, dest, f"give the {concept} with {flags[-1]}"))
        return
    positional_dest = f"{dest}_positional"
    parser.add_argument(positional_dest, nargs="?", default=None, metavar=positional,
                        help=f"the {concept}, as {flags[-1]} {positional} gives it")

    def merge(args: argparse.Namespace) -> None:
        given = getattr(args, positional_dest)
        delattr(args, positional_dest)
        flagged = getattr(args, dest, default)
        if given is not None and flagged not in (None, default) and str(flagged) != given:
            raise ValueError(f"the {concept} is given twice ({given!r} and {flags[-1]} {flagged!r}); give it once")
        if given is not None:
            setattr(args, dest, given)
        if required:
            _require(args, dest, f"give the {concept}: {parser.prog} {positional} or {flags[-1]} {positional}")

    parser.add_finisher(merge)


def _require(args: argparse.Namespace, dest: str, message: str) -> None:
    if getattr(args, dest, None) is None:
        raise ValueError(message)


def add_model(parser: CommandParser, *, help: str, required: bool = True, default: str | None = None,
              positional: str | None = None, aliases: Sequence[str] = (), container: Container | None = None,
              metavar: str = "MODEL") -> None:
    """``--model`` (into ``args.model``): a model file or a bundled model's name.

    Args:
        parser: the command's parser.
        help: what the model is for this command.
        required: a parse error when no model is given.
        default: the model when none is given.
        positional: the metavar of a positional argument that may give the model instead (``unet-build
            camvid.onnx``), or None.
        aliases: other spellings (``--engine``, trtexec's ``--onnx``, segnet's ``--network``).
        container: a group to add the flags to (a mutually exclusive group), else the parser.
        metavar: the value's name in ``--help``.
    """
    # Once: --engine a.plan --onnx b.onnx would time (or build) only b.
    _add_value(parser, "model", ["--model"], "model", help=help, positional=positional, aliases=aliases,
               required=required, default=default, container=container, metavar=metavar, once=True)


def add_output(parser: CommandParser, *, help: str, required: bool = False, default: str | None = None,
               positional: str | None = None, aliases: Sequence[str] = (), metavar: str = "PATH",
               **kwargs: Any) -> None:
    """``-o/--output`` (into ``args.output``): where the command writes its result.

    Args:
        parser: the command's parser.
        help: what is written there.
        required: a parse error when no output is given.
        default: the output when none is given.
        positional: the metavar of a positional argument that may give the output instead, or None.
        aliases: other spellings (``--out``, ``--json``, trtexec's ``--saveEngine``).
        metavar: the value's name in ``--help``.
        **kwargs: more of argparse's ``add_argument`` (``type``).
    """
    _add_value(parser, "output", ["-o", "--output"], "output", help=help, positional=positional, aliases=aliases,
               required=required, default=default, container=None, metavar=metavar, **kwargs)


def gpu_device_answer(choices: str) -> str:
    """Why ``--device gpu`` is refused: unetrt's GPU device is 'cuda'; OpenVINO's GPU plugin is not used.

    The answer says which devices OpenVINO finds on this machine when OpenVINO is installed.
    """
    try:
        import openvino

        found = ", ".join(openvino.Core().available_devices) or "none"
        here = f" (OpenVINO finds these devices on this machine: {found})"
    except ImportError:
        here = ""
    return (f"'gpu' is not a unetrt device: NVIDIA GPUs are 'cuda' (TensorRT, ONNX Runtime's CUDA provider, PyTorch); "
            f"OpenVINO's GPU plugin for Intel GPUs is not available in unetrt, which runs OpenVINO on the CPU{here}; "
            f"choose from {choices}")


def device_type(ordinals: bool) -> Callable[[str], str]:
    """The argparse type of ``--device``: auto, cpu, cuda, and cuda:N where ``ordinals`` is true.

    Example:
        >>> device_type(True)("cuda:1")
        'cuda:1'
    """
    choices = ", ".join(DEVICES) + (", cuda:N" if ordinals else "")

    def parse(text: str) -> str:
        value = text.strip().lower()
        if value in DEVICES or (ordinals and re.fullmatch(r"cuda:\d+", value)):
            return value
        if value == "gpu":
            raise argparse.ArgumentTypeError(gpu_device_answer(choices))
        raise argparse.ArgumentTypeError(f"invalid device {text!r} (choose from {choices})")

    return parse


def add_device(parser: CommandParser, *, help: str, ordinals: bool = True) -> None:
    """``--device`` (into ``args.device``, default auto): auto, cpu, cuda (and cuda:N where ``ordinals``)."""
    choices = ",".join(DEVICES) + (",cuda:N" if ordinals else "")
    parser.add_argument("--device", type=device_type(ordinals), default="auto", metavar="{" + choices + "}",
                        help=help)


def add_backend(parser: CommandParser) -> None:
    """``--backend`` (into ``args.backend``, default auto): 'auto' or a backend registered when the parser is built
    (:mod:`unetrt.backends.registry`), with the registry's help text."""
    parser.add_argument("--backend", default="auto", choices=("auto", *backend_names()), help=backend_help())


def add_size(parser: CommandParser, *, help: str, dest: str = "working_size",
             aliases: Sequence[str] = ("--working-size",), **kwargs: Any) -> None:
    """``--size WxH`` (into ``args.<dest>``, default None): the size frames are resized to for the network.

    Args:
        parser: the command's parser.
        help: what the size means for this command.
        dest: the attribute it is stored in.
        aliases: other spellings (``--working-size``, ``--shape``).
        **kwargs: more of argparse's ``add_argument`` (``action="append"``).
    """
    kwargs.setdefault("default", None)
    parser.add_argument("--size", dest=dest, type=parse_size, metavar="WxH", help=help, **kwargs)
    add_aliases(parser, aliases, dest, type=parse_size, metavar="WxH",
                **{k: v for k, v in kwargs.items() if k != "default"})


def add_precision(parser: CommandParser, *, help: str, choices: Sequence[str] = PRECISION_CHOICES,
                  default: str = "auto") -> None:
    """``--precision`` (into ``args.precision``) with ``choices``."""
    parser.add_argument("--precision", default=default, choices=tuple(choices), help=help)


def add_threads(parser: CommandParser, *, help: str, default_text: str | None = None, default: int | None = None,
                **kwargs: Any) -> None:
    """``--threads N`` (into ``args.threads``); ``--help`` states the default, in words when it is computed.

    Args:
        parser: the command's parser.
        help: what the threads do.
        default_text: the default in words, for a default worked out at run time (None: ``default`` is shown).
        default: the value when none is given.
        **kwargs: more of argparse's ``add_argument`` (``type``).
    """
    kwargs.setdefault("type", thread_count)
    text = help if default_text is None else f"{help} (default: {default_text})"
    parser.add_argument("--threads", default=default, metavar="N", help=text, **kwargs)


def add_batch_size(parser: CommandParser, *, help: str, aliases: Sequence[str] = (), **kwargs: Any) -> None:
    """``--batch-size`` (into ``args.batch_size``) with hidden ``aliases`` (``--batch``)."""
    kwargs.setdefault("type", positive_int)
    parser.add_argument("--batch-size", dest="batch_size", help=help, **kwargs)
    add_aliases(parser, aliases, "batch_size", **{k: v for k, v in kwargs.items() if k != "default"})


def positive_int(text: str) -> int:
    """A positive integer for argparse.

    Raises:
        argparse.ArgumentTypeError: otherwise.

    Example:
        >>> positive_int("4")
        4
    """
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return int(text)


def thread_count(text: str) -> int:
    """A thread count for argparse: a positive integer up to :data:`unetrt.cpu.MAX_THREADS`.

    Raises:
        argparse.ArgumentTypeError: otherwise.

    Example:
        >>> thread_count("4")
        4
    """
    threads = positive_int(text)
    if threads > MAX_THREADS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_THREADS} threads, got {text!r}")
    return threads


def trtexec_shape(text: str) -> Shape:
    """trtexec's shape specification ``image:NxCxHxW`` (``--optShapes=image:1x3x192x256``) as (N, C, H, W).

    trtexec names each input (``name:dims``, several joined by commas); a unetrt model has one, ``image``.
    Documented in TensorRT's trtexec help (``trtexec --help``, "--shapes=spec ... Example input shapes spec:
    input0:1x3x256x256,input1:1x3x128x128").

    Raises:
        argparse.ArgumentTypeError: on another input name, several inputs or dimensions that are not NxCxHxW.

    Example:
        >>> trtexec_shape("image:1x3x192x256")
        (1, 3, 192, 256)
    """
    name, colon, dims = text.strip().rpartition(":")
    name = name.strip("'\"")
    if not colon or "," in text or name != INPUT_NAME:
        raise argparse.ArgumentTypeError(
            f"expected {INPUT_NAME}:NxCxHxW (a unetrt model has one input, {INPUT_NAME!r}), e.g. "
            f"{INPUT_NAME}:1x3x192x256, got {text!r}")
    try:
        return parse_shape(dims)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def workspace_mib(text: str) -> int:
    """unet-build's ``--workspace``: a positive number of MiB that TensorRT can take.

    Raises:
        argparse.ArgumentTypeError: otherwise.

    Example:
        >>> workspace_mib("1024")
        1024
    """
    if not text.strip().isdigit() or not 1 <= int(text) <= MAX_WORKSPACE_MIB:
        raise argparse.ArgumentTypeError(f"must be a whole number of MiB from 1 to {MAX_WORKSPACE_MIB} (TensorRT's "
                                         f"limit), e.g. 1024, got {text!r}")
    return int(text)


def trtexec_pool_mib(text: str) -> int:
    """trtexec's ``--memPoolSize=workspace:SIZE`` as MiB: SIZE in MiB, or with a K, M or G suffix.

    Documented in trtexec's help: "--memPoolSize=poolspec  Specify the size constraints of the designated memory
    pool(s) in MiB ... Also accepts units-suffixed sizes, e.g. 1024K, 1G"; only the workspace pool maps onto
    unet-build (``--workspace``).

    Raises:
        argparse.ArgumentTypeError: on another pool, or a size that is not a positive number of at most
            :data:`MAX_WORKSPACE_MIB` (infinity and NaN included).

    Example:
        >>> trtexec_pool_mib("workspace:2G"), trtexec_pool_mib("workspace:512")
        (2048, 512)
    """
    pool, colon, size = text.strip().partition(":")
    scale = {"K": 1 / 1024, "M": 1.0, "G": 1024.0}.get(size[-1:].upper(), 1.0) if size else 1.0
    number = size[:-1] if size[-1:].upper() in ("K", "M", "G") else size
    try:
        mib = float(number) * scale
    except ValueError:
        mib = 0.0
    if pool != "workspace" or not colon or not mib >= 1:
        raise argparse.ArgumentTypeError(f"expected workspace:SIZE (MiB, or with K, M or G), e.g. workspace:1024, "
                                         f"got {text!r}")
    # Past this (infG, 1e400) the size has no integer number of bytes TensorRT could take.
    if mib > MAX_WORKSPACE_MIB:
        raise argparse.ArgumentTypeError(f"workspace size {size!r} is more than TensorRT can take (at most "
                                         f"{MAX_WORKSPACE_MIB} MiB); give a size in MiB such as workspace:1024, or "
                                         "leave --memPoolSize out for TensorRT's default")
    return int(mib)
