"""Every Python example in README.md and docs/*.md still matches the API it shows.

Users paste the ```python blocks of the docs. A block must parse; every name it imports from unetrt must exist;
every call of an imported unetrt class or function, and every method called on an object made by one, must take
the arguments the block gives it (``Stream``'s ``**settings`` are :class:`~unetrt.stream.StreamOptions` fields).
Nothing is run: frames, files and cameras are the reader's.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib
import inspect
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from unetrt.stream import Stream, StreamOptions

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


@dataclass
class Block:
    path: Path
    line: int
    source: str

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def python_blocks() -> list[Block]:
    blocks = []
    for path in DOCUMENTS:
        text = path.read_text(encoding="utf-8")
        for match in PYTHON_BLOCK.finditer(text):
            blocks.append(Block(path, text.count("\n", 0, match.start()) + 2, match.group(1)))
    return blocks


def unetrt_imports(tree: ast.Module, block: Block) -> dict[str, Any]:
    """The names a block binds by importing from unetrt, to the objects they name."""
    bound: dict[str, Any] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "unetrt":
            module = importlib.import_module(str(node.module))
            for alias in node.names:
                assert hasattr(module, alias.name), f"{block}: {node.module} has no {alias.name}"
                bound[alias.asname or alias.name] = getattr(module, alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "unetrt":
                    bound[alias.asname or alias.name.split(".")[0]] = importlib.import_module(alias.name)
    return bound


def instances(tree: ast.Module, bound: dict[str, Any]) -> dict[str, type]:
    """Variables a block makes from an imported unetrt class (``x = Cls(...)`` or ``with Cls(...) as x``)."""
    made: dict[str, type] = {}

    def record(target: ast.expr | None, value: ast.expr) -> None:
        if (isinstance(target, ast.Name) and isinstance(value, ast.Call) and isinstance(value.func, ast.Name)
                and inspect.isclass(bound.get(value.func.id))):
            made[target.id] = bound[value.func.id]

    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            record(node.targets[0], node.value)
        elif isinstance(node, ast.With):
            for item in node.items:
                record(item.optional_vars, item.context_expr)
    return made


def check_call(call: ast.Call, callable_: Any, what: str) -> None:
    """The call's positional count and keyword names bind to the callable's signature."""
    keywords = {keyword.arg: None for keyword in call.keywords if keyword.arg is not None}
    positional = [None] * len(call.args)
    if any(isinstance(arg, ast.Starred) for arg in call.args) or len(keywords) < len(call.keywords):
        return  # *args or **kwargs: what they hold is the reader's
    signature = inspect.signature(callable_)
    if callable_ is Stream:  # its **settings are StreamOptions fields, checked by name
        fields = {field.name for field in dataclasses.fields(StreamOptions)}
        settings = [name for name in keywords if name not in signature.parameters]
        assert not [name for name in settings if name not in fields], f"{what}: not a StreamOptions field: {settings}"
        keywords = {name: None for name in keywords if name in signature.parameters}
    try:
        signature.bind_partial(*positional, **keywords)
    except TypeError as error:
        raise AssertionError(f"{what}: {error}") from None


@pytest.mark.parametrize("block", python_blocks(), ids=str)
def test_documented_python_matches_the_api(block: Block) -> None:
    try:
        tree = ast.parse(block.source)
    except SyntaxError as error:
        raise AssertionError(f"{block}: does not parse: {error}") from None
    bound = unetrt_imports(tree, block)
    made = instances(tree, bound)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        if isinstance(node.func, ast.Name) and callable(bound.get(node.func.id)):
            check_call(node, bound[node.func.id], f"{block}: {node.func.id}")
        elif (isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name)
              and node.func.value.id in made):
            cls = made[node.func.value.id]
            method = getattr(cls, node.func.attr, None)
            assert method is not None, f"{block}: {cls.__name__} has no {node.func.attr}"
            unbound = inspect.isfunction(method)  # a method: its self is the instance the block made
            check_call(node, functools.partial(method, None) if unbound else method,
                       f"{block}: {cls.__name__}.{node.func.attr}")


def test_every_document_with_python_is_read() -> None:
    blocks = python_blocks()
    assert {block.path.name for block in blocks} >= {"README.md", "api.md", "streaming.md"}
    assert any("Segmenter(" in block.source for block in blocks)
