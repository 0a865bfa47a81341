"""Every command that README.md and docs/*.md show still parses with the current code.

Users copy commands from the docs. A flag renamed or removed, a value outside ``choices``, a console script or a
``python -m unetrt...`` / ``python tools/X.py`` that no longer exists is a defect. test_documented_command_parses
finds every such command in the shell code blocks (```bash, ```sh, ```) and in the inline code spans, and runs
it through the real entry point (the console script's function in ``unetrt.commands``, the module's or tool's
``main``, so that the hidden aliases of trtexec's and segnet's spellings are the ones users get) with argparse
stopped right after a successful parse: nothing is loaded, trained or written. A parse error (argparse exits 2)
fails with argparse's message and the doc's file and line.

What cannot be checked is skipped with its reason: commands with an elided part (``...``) or a shell variable
the code block does not define (a block's own ``VAR="..."`` and ``for VAR in A B`` are expanded, the loop with
its first value). Inline spans that only name a command (`` `unet-train` ``) check that it exists; inline spans
that show some flags of a command (`` `unet-bench --loadEngine` ``) may leave out what the command requires
(and a flag's value at their end), but every flag they show must exist and every value they give must be
accepted. Placeholders: ``WxH`` and ``NxCxHxW`` get an example size, an upper-case value (``--backend B``) the
flag's first choice or a value its type takes, ``[...]`` (usage notation) is taken as given.

test_flag_in_a_table_is_taken checks the flag tables (docs/cli.md): a row whose first cell names commands lists
flags each of them takes. test_documented_error_is_still_the_error checks that a ``$ command`` shown with its
error message in a text block is still refused with that message.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import os
import re
import shlex
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGUAGES = {"", "bash", "sh", "shell"}


def console_scripts() -> dict[str, str]:
    """``[project.scripts]`` of pyproject.toml: script name -> ``module:function`` (read without tomllib, which
    Python 3.10 lacks)."""
    text = (ROOT / "pyproject.toml").read_text()
    section = re.search(r"^\[project\.scripts\]\n(.*?)(?=^\[|\Z)", text, re.M | re.S)
    assert section is not None, "pyproject.toml has no [project.scripts]"
    return dict(re.findall(r'^([\w-]+)\s*=\s*"([\w.:]+)"', section.group(1), re.M))


SCRIPTS = console_scripts()
# Modules that run another command given after their own name: the wrapped command is checked in their place.
WRAPPERS = {"unetrt.benchmarks.without_amx"}
# Placeholders the docs write for a value, replaced by an example of that value before parsing.
PLACEHOLDERS = {"WxH": "256x192", "NxCxHxW": "1x3x192x256"}
# Packages that cannot be imported on every machine: an entry point that needs one at parse time is skipped.
OPTIONAL_IMPORTS = ("tensorrt", "pycuda", "ray", "openvino", "rosbags", "tritonclient")


@dataclass
class DocPlace:
    """A line of a doc."""

    doc: str  # path relative to the repository
    line: int  # 1-based

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


@dataclass
class DocCommand(DocPlace):
    """One command shown in a doc (at the line of its first word), as the shell would hand it to the program."""

    text: str  # the command as written (continuation lines joined, comments dropped)
    inline: bool  # from an inline code span (a fragment of prose) rather than a code block
    argv: list[str] = field(default_factory=list)  # program first, then its arguments
    skip: str | None = None  # why the arguments are not parsed


# --- Markdown ---------------------------------------------------------------------------------------------------

FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([^\s`]*)[^`]*$")


def fenced_blocks_and_prose(lines: Sequence[str]) -> tuple[list[tuple[str, int, list[str]]], list[tuple[int, str]]]:
    """Split a Markdown file into fenced code blocks (language, first content line, lines) and prose lines."""
    blocks: list[tuple[str, int, list[str]]] = []
    prose: list[tuple[int, str]] = []
    fence: tuple[str, str, str, int, list[str]] | None = None  # indent, fence, language, start, lines
    for number, line in enumerate(lines, 1):
        if fence is None:
            match = FENCE.match(line)
            if match:
                fence = (match.group(1), match.group(2), match.group(3).lower(), number + 1, [])
            else:
                prose.append((number, line))
            continue
        indent, marker, language, start, body = fence
        stripped = line.strip()
        if stripped.startswith(marker[0] * len(marker)) and set(stripped) == {marker[0]}:
            blocks.append((language, start, body))
            fence = None
        else:
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
    if fence is not None:  # an unclosed fence runs to the end of the file
        blocks.append((fence[2], fence[3], fence[4]))
    return blocks, prose


def inline_code_spans(prose: Sequence[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    """The code spans of the prose as (line of the opening backtick, text): CommonMark's rules, as far as the docs
    need them (a span may wrap onto the next line of its paragraph; table rows are paragraphs of their own)."""
    paragraph: list[tuple[int, str]] = []

    def spans(part: list[tuple[int, str]]) -> Iterator[tuple[int, str]]:
        text = "\n".join(line for _, line in part)
        starts = [0]
        for _, line in part:
            starts.append(starts[-1] + len(line) + 1)
        position = 0
        while True:
            opening = re.compile(r"(?<![`\\])(`+)(?!`)").search(text, position)
            if opening is None:
                return
            ticks = opening.group(1)
            closing = re.compile(rf"(?<!`){ticks}(?!`)").search(text, opening.end())
            if closing is None:
                position = opening.end()
                continue
            body = text[opening.end():closing.start()].replace("\n", " ")
            if body.strip(" ") and body.startswith(" ") and body.endswith(" "):
                body = body[1:-1]
            row = max(index for index, start in enumerate(starts) if start <= opening.start())
            yield part[row][0], body
            position = closing.end()

    for number, line in prose:
        if not line.strip() or line.lstrip().startswith(("|", "#")):  # table rows and headings stand alone
            yield from spans(paragraph)
            paragraph = []
            if line.strip():
                yield from spans([(number, line)])
        else:
            paragraph.append((number, line))
    yield from spans(paragraph)


# --- Shell ------------------------------------------------------------------------------------------------------

def logical_lines(lines: Sequence[str], first: int) -> Iterator[tuple[int, str]]:
    """Lines with backslash continuations joined, each with the number of its first physical line."""
    pending: list[str] = []
    start = first
    for number, line in enumerate(lines, first):
        if not pending:
            start = number
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2:
            pending.append(line[:-1])
            continue
        pending.append(line)
        yield start, "".join(pending)
        pending = []
    if pending:
        yield start, "".join(pending)


def statements(line: str) -> list[str]:
    """A shell line's simple commands: a comment dropped, split at ``;``, ``&&``, ``||``, ``|`` and ``&``
    outside quotes."""
    parts: list[str] = []
    current: list[str] = []
    quote = ""
    index = 0
    while index < len(line):
        char = line[index]
        if quote:
            if char == "\\" and quote == '"' and index + 1 < len(line):
                current.append(line[index:index + 2])
                index += 2
                continue
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "\\" and index + 1 < len(line):
            current.append(line[index:index + 2])
            index += 2
            continue
        elif char == "#" and (not current or current[-1][-1:].isspace()):
            break
        elif char in ";|&":
            parts.append("".join(current))
            current = []
            while index + 1 < len(line) and line[index + 1] in ";|&":
                index += 1
        if char not in ";|&" or quote:
            current.append(char)
        index += 1
    parts.append("".join(current))
    return [part.strip() for part in parts if part.strip()]


class UndefinedVariableError(ValueError):
    """A ``$VAR`` that the code block does not define."""


VARIABLE = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_]\w*)(?:/(?P<pattern>[^/}]*)/(?P<replacement>[^}]*))?\}"
                      r"|(?P<plain>[A-Za-z_]\w*))")


def expand(text: str, variables: dict[str, str]) -> str:
    """``$VAR``, ``${VAR}`` and ``${VAR/pattern/replacement}`` replaced outside single quotes (the values here are
    plain words, so the shell's word splitting is left to shlex)."""
    out: list[str] = []
    quote = ""
    index = 0
    while index < len(text):
        char = text[index]
        if char == "'" and quote != '"':
            quote = "" if quote == "'" else "'"
        elif char == '"' and quote != "'":
            quote = "" if quote == '"' else '"'
        elif char == "$" and quote != "'":
            match = VARIABLE.match(text, index)
            if match:
                name = match.group("braced") or match.group("plain")
                if name not in variables:
                    raise UndefinedVariableError(name)
                value = variables[name]
                if match.group("pattern") is not None:
                    value = value.replace(match.group("pattern"), match.group("replacement"), 1)
                out.append(value)
                index = match.end()
                continue
        out.append(char)
        index += 1
    return "".join(out)


ASSIGNMENT = re.compile(r"^(?:export\s+)?([A-Za-z_]\w*)=")
QUOTED = re.compile(r"'[^']*'|\"(?:\\.|[^\"\\])*\"")


TOOL = re.compile(r"(?:\./)?(tools/[\w-]+\.py)")


@dataclass(frozen=True)
class Program:
    """A program of this project that a command runs."""

    kind: str  # "script" (a console script), "module" (python -m unetrt...) or "tool" (tools/X.py)
    name: str  # the script's name, the module's, or the tool's path in the repository
    words: int  # how many words of the command name it ("python -m unetrt.doctor": 3)


def command_by_name(name: str) -> Program:
    """What ``python -m unetrt NAME`` runs (``unetrt.__main__``): the console script of that name, the doctor, or,
    for a placeholder (``COMMAND``), any of them (named in prose: nothing to parse)."""
    if re.fullmatch(r"[A-Z]+", name):
        return Program("module", "unetrt", 4)
    if name.removeprefix("unet-") == "doctor":
        return Program("module", "unetrt.doctor", 4)
    return Program("script", f"unet-{name.removeprefix('unet-')}", 4)


def program_of(words: Sequence[str]) -> Program | None:
    """The program a command runs when it is one of this project's; None for any other."""
    if not words:
        return None
    script = re.fullmatch(r"(?:[\w.-]*/)*(unet-[\w-]+)", words[0])  # also .venv/bin/unet-stream
    if script:
        return Program("script", script.group(1), 1)
    tool = TOOL.fullmatch(words[0])
    if tool:
        return Program("tool", tool.group(1), 1)
    if re.fullmatch(r"(?:[\w.-]*/)*python(?:3(?:\.\d+)?)?", words[0]) and len(words) > 1:
        if words[1] == "-m" and len(words) > 2 and re.match(r"unetrt\b", words[2]):
            if words[2] == "unetrt" and len(words) > 3 and not words[3].startswith("-"):
                return command_by_name(words[3])
            return Program("module", words[2], 3)
        tool = TOOL.fullmatch(words[1])
        if tool:
            return Program("tool", tool.group(1), 2)
    return None


def command(doc: str, line: int, text: str, inline: bool, variables: dict[str, str]) -> DocCommand | None:
    """The DocCommand of one simple shell command, or None when it runs no program of this project."""
    text = re.sub(r"^(?:do|then|else)\s+", "", text.strip())
    while (match := ASSIGNMENT.match(text)) and not text.startswith("export"):  # VAR=value before the program
        rest = text[match.end():]
        value = QUOTED.match(rest) or re.match(r"\S*", rest)
        assert value is not None
        text = rest[value.end():].lstrip()
    try:
        first_words = shlex.split(text)[:3]
    except ValueError:
        first_words = text.split()[:3]
    if program_of(first_words) is None:
        return None
    found = DocCommand(doc, line, text, inline)
    try:
        expanded = expand(text, variables)
    except UndefinedVariableError as exc:
        found.argv = first_words
        found.skip = f"uses ${exc}, which its code block does not define"
        return found
    if "..." in QUOTED.sub("", expanded):
        found.argv = first_words
        found.skip = "has an elided part (...)"
        return found
    words = shlex.split(expanded)
    for placeholder, example in PLACEHOLDERS.items():
        words = [word.replace(placeholder, example) for word in words]
    found.argv = without_optional_brackets(words)
    return found


def without_optional_brackets(words: Sequence[str]) -> list[str]:
    """Usage notation's optional parts (``[--size 320x240]``, ``[PATH]``) as if given, brackets dropped."""
    out = []
    inside = False
    for word in words:
        if word.startswith("["):
            word, inside = word[1:], True
        if inside and word.endswith("]"):
            word, inside = word[:-1], False
        if word:
            out.append(word)
    return out


def block_commands(doc: str, start: int, body: Sequence[str]) -> Iterator[DocCommand]:
    """The commands of one shell code block, with the block's own variables (assignments and ``for`` loops)."""
    variables: dict[str, str] = {}
    loops: list[str] = []
    for number, line in logical_lines(body, start):
        for statement in statements(line):
            statement = re.sub(r"^(?:do|then|else)\s+", "", statement)
            loop = re.match(r"^for\s+([A-Za-z_]\w*)\s+in\s+(\S+)", statement)
            if loop:  # checked with the loop's first value
                variables[loop.group(1)] = loop.group(2)
                loops.append(loop.group(1))
                continue
            if statement == "done":
                if loops:
                    variables.pop(loops.pop(), None)
                continue
            assignment = ASSIGNMENT.match(statement)
            if assignment:
                rest = statement[assignment.end():]
                value = QUOTED.fullmatch(rest) or re.fullmatch(r"\S*", rest)
                if value is not None:  # VAR=value alone: a shell variable for the commands below
                    with contextlib.suppress(UndefinedVariableError, ValueError):
                        words = shlex.split(expand(rest, variables))
                        variables[assignment.group(1)] = words[0] if words else ""
                    continue
            found = command(doc, number, statement, inline=False, variables=variables)
            if found is not None:
                yield found


def is_program_output(body: Sequence[str]) -> bool:
    """Whether an unlabelled block shows what a program printed rather than commands: some line is neither a
    comment nor a shell line (one that starts with a lower-case word or a variable assignment)."""
    for line in body:
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not re.match(r"^(?:[a-z_./$-][\w./-]*|[A-Z_]\w*=)", stripped):
            return True
    return False


def doc_name(path: Path) -> str:
    """A doc's path as failures name it: relative to the repository."""
    return path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else str(path)


def doc_commands(path: Path) -> list[DocCommand]:
    """Every command of this project in one Markdown file, in the order of the file."""
    doc = doc_name(path)
    blocks, prose = fenced_blocks_and_prose(path.read_text(encoding="utf-8").split("\n"))
    found: list[DocCommand] = []
    for language, start, body in blocks:
        if language not in SHELL_LANGUAGES or (language == "" and is_program_output(body)):
            continue
        found.extend(block_commands(doc, start, body))
    for number, span in inline_code_spans(prose):
        for statement in statements(span):
            inline = command(doc, number, statement, inline=True, variables={})
            if inline is not None:
                found.append(inline)
    return sorted(found, key=lambda item: item.line)


ALL_COMMANDS = [item for path in DOC_FILES for item in doc_commands(path)]


def _ids(commands: Sequence[DocCommand]) -> list[str]:
    seen: dict[str, int] = {}
    ids = []
    for item in commands:
        seen[item.where] = seen.get(item.where, 0) + 1
        ids.append(item.where if seen[item.where] == 1 else f"{item.where}#{seen[item.where]}")
    return ids


# --- Parsing through the real entry points ----------------------------------------------------------------------

class _Stopped(BaseException):
    """Raised by the patched argparse to stop an entry point: a BaseException, so that no ``except Exception`` in
    the code under test can swallow it. ``namespace`` is None when stopped before parsing (to get the parser)."""

    def __init__(self, parser: argparse.ArgumentParser, namespace: object) -> None:
        super().__init__(parser.prog)
        self.parser = parser
        self.namespace = namespace


def _parser_classes() -> list[type[argparse.ArgumentParser]]:
    """argparse.ArgumentParser and this project's subclasses that override how it parses."""
    from unetrt.cli_options import CommandParser

    return [argparse.ArgumentParser, CommandParser]


@contextlib.contextmanager
def stop_at_parse(monkeypatch: pytest.MonkeyPatch, before: bool) -> Iterator[None]:
    """Make the outermost ``parse_args``/``parse_known_args`` call raise :class:`_Stopped`: after a successful
    parse, or (``before``) as soon as it is called, to get the parser the entry point built."""
    depth = 0

    def wrap(original: Callable[..., Any]) -> Callable[..., Any]:
        def parse(parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> Any:
            nonlocal depth
            if before and depth == 0:
                raise _Stopped(parser, None)
            depth += 1
            try:
                result = original(parser, *args, **kwargs)
            finally:
                depth -= 1
            if depth == 0:
                raise _Stopped(parser, result)
            return result

        return parse

    with monkeypatch.context() as patch:
        for cls in _parser_classes():
            for name in ("parse_args", "parse_known_args"):
                if name in vars(cls):
                    patch.setattr(cls, name, wrap(vars(cls)[name]))
        yield


def load_tool(relative: str) -> ModuleType:
    """``tools/X.py`` imported by its path under a private name (tools/ is not a package)."""
    path = ROOT / relative
    name = "_documented_" + path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def missing_program(kind: str, name: str) -> str | None:
    """Why the program a doc names does not exist, or None when it does."""
    if kind == "script":
        if name not in SCRIPTS:
            return f"{name} is not a console script of pyproject.toml ({', '.join(sorted(SCRIPTS))})"
        module, _, function = SCRIPTS[name].partition(":")
        if importlib.util.find_spec(module) is None or not hasattr(importlib.import_module(module), function):
            return f"{name}'s entry point {SCRIPTS[name]} does not exist"
        return None
    if kind == "module":
        try:
            spec = importlib.util.find_spec(name)
        except ModuleNotFoundError:
            spec = None
        if spec is not None and spec.submodule_search_locations is not None:  # a package runs its __main__
            spec = importlib.util.find_spec(f"{name}.__main__")
        if spec is None or spec.origin is None:
            return f"there is no module {name} that python -m can run"
        source = Path(spec.origin)
    else:
        source = ROOT / name
        if not source.is_file():
            return f"there is no file {name}"
    if "__main__" not in source.read_text(encoding="utf-8"):
        return f"{name} does nothing when run as a program (no __main__ block)"
    return None


def entry_point(kind: str, name: str, monkeypatch: pytest.MonkeyPatch) -> Callable[[list[str]], object]:
    """A function running the program with the given arguments, as its console script, ``python -m`` or
    ``python tools/X.py`` would."""
    if kind == "script":
        module, _, function = SCRIPTS[name].partition(":")
        launch = getattr(importlib.import_module(module), function)

        def run_script(args: list[str]) -> object:
            monkeypatch.setattr(sys, "argv", [name, *args])
            return launch()

        return run_script
    program = importlib.import_module(name) if kind == "module" else load_tool(name)
    if hasattr(program, "__path__"):  # a package: python -m runs its __main__
        program = importlib.import_module(f"{name}.__main__")
    main = program.main

    def run_main(args: list[str]) -> object:
        monkeypatch.setattr(sys, "argv", [name, *args])
        return main(args)

    return run_main


@dataclass
class Outcome:
    parser: argparse.ArgumentParser | None = None  # the parser the entry point built
    namespace: object = None  # what it parsed to, when it parsed
    exit_code: int | str | None = None  # when it exited instead (argparse's errors: 2)
    returned: object = None  # when it returned without parsing
    stderr: str = ""


def run_until_parsed(run: Callable[[list[str]], object], args: list[str], monkeypatch: pytest.MonkeyPatch,
                     capsys: pytest.CaptureFixture[str], *, before: bool = False) -> Outcome:
    """Call an entry point; stop it after argparse parsed (or, ``before``, when it starts to)."""
    outcome = Outcome()
    capsys.readouterr()
    with stop_at_parse(monkeypatch, before):
        try:
            outcome.returned = run(args)
        except _Stopped as stopped:
            outcome.parser, outcome.namespace = stopped.parser, stopped.namespace
        except SystemExit as exit_:
            outcome.exit_code = exit_.code
    outcome.stderr = capsys.readouterr().err.strip()
    return outcome


@contextlib.contextmanager
def environment_kept() -> Iterator[None]:
    """Undo what an entry point sets in os.environ before it parses (unet-bench's OMP_WAIT_POLICY)."""
    before = dict(os.environ)
    try:
        yield
    finally:
        for name in set(os.environ) - set(before):
            del os.environ[name]
        for name, value in before.items():
            if os.environ.get(name) != value:
                os.environ[name] = value


@contextlib.contextmanager
def optional_imports(name: str) -> Iterator[None]:
    """Skip when the program imports, before it parses, a package that cannot be installed on every machine."""
    try:
        yield
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in OPTIONAL_IMPORTS:
            raise
        pytest.skip(f"{name} needs {exc.name}, which is not installed here")


def programs_of(argv: Sequence[str]) -> tuple[list[Program], list[str] | None]:
    """The programs a command runs, outermost first (a wrapper, then what it wraps), and the arguments of the
    innermost one of this project; None when a wrapper runs something else (``without_amx COMMAND``)."""
    programs: list[Program] = []
    words = list(argv)
    while True:
        program = program_of(words)
        if program is None:
            return programs, None
        programs.append(program)
        words = words[program.words:]
        if program.kind != "module" or program.name not in WRAPPERS:
            return programs, words


def option_action(parser: argparse.ArgumentParser, word: str) -> argparse.Action | None:
    """The action of ``--flag`` or ``--flag=value`` (exact spellings only: the docs should not abbreviate)."""
    return parser._option_string_actions.get(word.split("=", 1)[0])


def is_option(parser: argparse.ArgumentParser, word: str) -> bool:
    return word.startswith("-") and word != "-" and not parser._negative_number_matcher.match(word)


def fill_placeholders(parser: argparse.ArgumentParser, args: list[str]) -> list[str]:
    """A flag's value written as a placeholder (``--backend B``, ``--workers N``) replaced by the first choice of
    the flag, or by the first of a few examples its type takes."""
    filled = list(args)
    for index in range(1, len(filled)):
        action = option_action(parser, filled[index - 1])
        if not re.fullmatch(r"[A-Z]+", filled[index]) or action is None or "=" in filled[index - 1]:
            continue
        if action.choices:
            filled[index] = str(next(iter(action.choices)))
        elif callable(action.type):
            for example in (filled[index], "2", "0.5", "256x192"):
                with contextlib.suppress(Exception):
                    action.type(example)
                    filled[index] = example
                    break
    return filled


def fragment_problems(parser: argparse.ArgumentParser, args: Sequence[str]) -> list[str]:
    """What is wrong in the part of a command an inline span shows: flags unknown, values not accepted."""
    problems = []
    for index, word in enumerate(args):
        if not is_option(parser, word):
            continue
        action = option_action(parser, word)
        if action is None:
            problems.append(f"unknown flag {word.split('=', 1)[0]}")
            continue
        if action.nargs == 0:
            continue
        if "=" in word:
            value: str | None = word.split("=", 1)[1]
        elif index + 1 < len(args) and not is_option(parser, args[index + 1]):
            value = args[index + 1]
        elif index + 1 < len(args):
            problems.append(f"{word} has no value")
            continue
        else:
            continue  # the span ends at the flag: it names the flag
        try:
            converted = action.type(value) if callable(action.type) else value
        except Exception as exc:
            problems.append(f"{word}: {value!r} is not accepted ({exc})")
            continue
        if action.choices is not None and converted not in action.choices:
            problems.append(f"{word}: {value!r} is not one of {list(action.choices)}")
    return problems


# The parse errors of a command that lacks something: an inline span that shows part of a command may get them.
INCOMPLETE = re.compile(r"the following arguments are required|one of the arguments .* is required"
                        r"|expected (?:one|at least one) argument|give the \w+")


@pytest.mark.parametrize("documented", ALL_COMMANDS, ids=_ids(ALL_COMMANDS))
def test_documented_command_parses(documented: DocCommand, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    where = f"{documented.where}: `{documented.text}`"
    if "$" in documented.text and not documented.skip:
        where += f" (expanded: `{shlex.join(documented.argv)}`)"
    programs, args = programs_of(documented.argv)
    for program in programs:
        if "..." not in program.name:
            problem = missing_program(program.kind, program.name)
            assert problem is None, f"{where}: {problem}"
    if documented.skip:
        pytest.skip(documented.skip)
    if args is None or (documented.inline and not args):
        return  # a wrapper around another program, or a command named in prose: its existence is the check
    kind, name = programs[-1].kind, programs[-1].name
    with environment_kept(), optional_imports(name):
        run = entry_point(kind, name, monkeypatch)
        built = run_until_parsed(run, [], monkeypatch, capsys, before=True)
        assert built.parser is not None, (f"{where}: {name} returned {built.returned!r} (exit {built.exit_code}) "
                                          f"before it built its parser: {built.stderr}")
        args = fill_placeholders(built.parser, args)
        outcome = run_until_parsed(run, args, monkeypatch, capsys)
    if "-h" in args or "--help" in args:
        assert outcome.exit_code == 0, f"{where}: --help exited {outcome.exit_code}: {outcome.stderr}"
        return
    if outcome.namespace is not None:
        return
    assert outcome.exit_code is not None, (f"{where}: {name} returned {outcome.returned!r} without parsing "
                                           f"its arguments: {outcome.stderr}")
    if documented.inline and INCOMPLETE.search(outcome.stderr):
        # A fragment of a command: what it shows must be right, what it leaves out may be required.
        problems = fragment_problems(built.parser, args)
        assert not problems, f"{where}: {'; '.join(problems)} ({outcome.stderr})"
        return
    pytest.fail(f"{where}: refused (exit {outcome.exit_code}): {outcome.stderr}", pytrace=False)


# --- Flag tables ------------------------------------------------------------------------------------------------

@dataclass
class TableFlag(DocPlace):
    """A flag (or ``-o/--output``-style spellings of one, with an example value) in a table row that names the
    commands in its first cell: docs/cli.md's tables of the names every command takes."""

    script: str
    span: str


def table_flags(path: Path) -> list[TableFlag]:
    """The flags of the table rows in a doc whose first cell names console scripts."""
    doc = doc_name(path)
    _, prose = fenced_blocks_and_prose(path.read_text(encoding="utf-8").split("\n"))
    found = []
    for number, line in prose:
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.lstrip().startswith("|") or len(cells) < 2:
            continue
        scripts = [name.strip() for name in cells[0].split(",")]
        if not all(re.fullmatch(r"unet-[\w-]+", name) for name in scripts):
            continue
        spans = [span for cell in cells[1:] for _, span in inline_code_spans([(number, cell)])
                 if span.startswith("-")]
        found.extend(TableFlag(doc, number, script, span) for script in scripts for span in spans)
    return found


ALL_TABLE_FLAGS = [item for path in DOC_FILES for item in table_flags(path)]


def table_flag_problems(parser: argparse.ArgumentParser, span: str) -> list[str]:
    """What the parser refuses of a table's span: ``--flag``, ``-o/--output``, ``--min-shape/--opt-shape``
    (each spelling), ``--device {auto,cpu,cuda,cuda:N}`` (each choice), ``--size WxH`` (the example value)."""
    words = span.split()
    flags, value = words[0], " ".join(words[1:]) or None
    spellings = flags.split("/")
    if "=" in spellings[-1]:
        spellings[-1], value = spellings[-1].split("=", 1)
    if "[" in (value or "") or (value or "").isupper():
        value = None  # NAME[,NAME], FILE, N: what the flag's help calls its value
    values: list[str] = []
    if value is not None:
        for placeholder, example in PLACEHOLDERS.items():
            value = value.replace(placeholder, example)
        choices = re.fullmatch(r"\{(.*)\}", value)
        values = [choice.replace("cuda:N", "cuda:0") for choice in choices.group(1).split(",")] if choices else [value]
    problems = []
    for spelling in spellings:
        action = parser._option_string_actions.get(spelling)
        if action is None:
            problems.append(f"unknown flag {spelling}")
            continue
        for item in values:
            if re.search(r"\b[A-Z]{2,}\b", item):
                continue  # workspace:SIZE
            problems.extend(fragment_problems(parser, [spelling, item]))
    return problems


@pytest.mark.parametrize("flag", ALL_TABLE_FLAGS,
                         ids=[f"{item.where}:{item.script}:{item.span}" for item in ALL_TABLE_FLAGS])
def test_flag_in_a_table_is_taken(flag: TableFlag, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    problem = missing_program("script", flag.script)
    assert problem is None, f"{flag.where}: {problem}"
    with environment_kept(), optional_imports(flag.script):
        built = run_until_parsed(entry_point("script", flag.script, monkeypatch), [], monkeypatch, capsys,
                                 before=True)
    assert built.parser is not None, f"{flag.where}: {flag.script} did not build its parser: {built.stderr}"
    problems = table_flag_problems(built.parser, flag.span)
    assert not problems, f"{flag.where}: {flag.script} `{flag.span}`: {'; '.join(problems)}"


# --- Errors the docs show ---------------------------------------------------------------------------------------

@dataclass
class DocumentedError(DocPlace):
    """``$ command`` in a text block followed by the one-line error the docs say it gets."""

    command: str
    error: str


def documented_errors(path: Path) -> list[DocumentedError]:
    blocks, _ = fenced_blocks_and_prose(path.read_text(encoding="utf-8").split("\n"))
    found = []
    for language, start, body in blocks:
        if language not in ("text", "console", ""):
            continue
        for offset, (line, following) in enumerate(zip(body, [*body[1:], ""])):
            if line.startswith("$ ") and program_of(shlex.split(line[2:])) is not None \
                    and re.match(r"^[\w.-]+: error: ", following):
                found.append(DocumentedError(doc_name(path), start + offset, line[2:].strip(), following.strip()))
    return found


ALL_DOCUMENTED_ERRORS = [item for path in DOC_FILES for item in documented_errors(path)]


@pytest.mark.parametrize("documented", ALL_DOCUMENTED_ERRORS, ids=[item.where for item in ALL_DOCUMENTED_ERRORS])
def test_documented_error_is_still_the_error(documented: DocumentedError, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """The docs show what a wrong command prints: it is still refused with that message (compared up to its first
    parenthesis, whose content depends on the Python version and the machine)."""
    programs, args = programs_of(shlex.split(documented.command))
    assert args is not None
    kind, name = programs[-1].kind, programs[-1].name
    with environment_kept(), optional_imports(name):
        outcome = run_until_parsed(entry_point(kind, name, monkeypatch), args, monkeypatch, capsys)
    expected = documented.error.split(" (")[0]
    assert outcome.exit_code == 2 and outcome.stderr.startswith(expected), (
        f"{documented.where}: `{documented.command}` is documented to fail with {expected!r}; it gave exit "
        f"{outcome.exit_code}, parsed={outcome.namespace is not None}: {outcome.stderr!r}")


# --- Options tables that claim to list a command's options -----------------------------------------------------

def options_table_flags(path: Path, heading: str) -> set[str]:
    """Every ``--flag`` (and ``-o``) named in the code spans of the first cells of the table under ``heading``."""
    lines = path.read_text(encoding="utf-8").split("\n")
    start = lines.index(heading) + 1
    flags: set[str] = set()
    for number, line in enumerate(lines[start:], start + 1):
        if line.startswith("#"):
            break
        if not line.lstrip().startswith("|"):
            continue
        first_cell = line.strip().strip("|").split("|")[0]
        for _, span in inline_code_spans([(number, first_cell)]):
            flags.update(word for part in span.split() for word in part.split("/") if word.startswith("-"))
    return flags


def test_streaming_options_table_names_every_unet_stream_option() -> None:
    # docs/streaming.md says its Options table lists what exists; --ignore-class, --no-build and --topic were
    # missing from it. Hidden aliases (help=SUPPRESS) are cli.md's to list; --help and --version are every command's.
    from unetrt.stream.cli import build_parser

    shown = {flag for action in build_parser()._actions if action.help != argparse.SUPPRESS
             for flag in action.option_strings if flag.startswith("--") and flag not in ("--help", "--version")}
    documented = options_table_flags(ROOT / "docs" / "streaming.md", "## Options")
    assert sorted(shown - documented) == []
