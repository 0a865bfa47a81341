"""Every example in the package's docstrings runs and shows what it prints, and the public API shows one.

The public API's docstrings each carry an example, and users paste them. An example that raises, or prints other
than it shows, teaches the wrong call. Each module's examples run here as doctests, in an empty folder of their
own; lines marked ``# doctest: +SKIP`` (a camera, a GPU, a cluster, a file the reader has) are not run, and a line
that uses what a skipped line made must be skipped too.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import unetrt

OPTION_FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
# What docs/api.md and the README teach users to import from.
PUBLIC_MODULES = ("unetrt", "unetrt.stream", "unetrt.batch.job")


def package_modules() -> list[str]:
    return sorted(module.name for module in pkgutil.walk_packages(unetrt.__path__, "unetrt."))


@pytest.mark.parametrize("name", package_modules())
def test_docstring_examples_run_as_shown(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    try:
        module = importlib.import_module(name)
    except ImportError as error:  # an optional extra (ROS, Ray) not installed in this environment
        pytest.skip(f"{name} needs {error.name}, which is not installed here")
    runner = doctest.DocTestRunner(optionflags=OPTION_FLAGS)
    failures = []
    for test in doctest.DocTestFinder(exclude_empty=True).find(module, name):
        report: list[str] = []
        result = runner.run(test, out=report.append, clear_globs=True)
        if result.failed:
            failures.append("".join(report))
    assert not failures, "\n".join(failures)
    assert sorted(path.name for path in tmp_path.iterdir()) == [], "an example left files where the user runs it"



@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_every_public_class_and_function_shows_an_example(name: str) -> None:
    module = importlib.import_module(name)
    public = [getattr(module, attribute) for attribute in module.__all__]
    documented = [item for item in public if inspect.isclass(item) or inspect.isfunction(item)]
    lacking = [item.__qualname__ for item in documented if "Example:" not in (inspect.getdoc(item) or "")]
    assert lacking == []
