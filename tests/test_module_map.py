"""docs/architecture.md's module map names every module of ``engine/``, and its counts add up.

The map is where a reader looks up what a module does. Its first table is the record of issue 23 (lines before and
after it, not checked against today's files); modules added since are in a second table, by job. Until 2026-12-07
the modules added since were added to the first table one by one, or not at all: seven were missing
(``stream/early_open.py`` among them), ``build_watch.py`` showed 79 lines after growing to 137, and the first table's
total no longer was its column's sum. The second table carries no line counts: a count every change of a module
must restate is a test that fails on correct work.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENGINE = ROOT / "engine"


def _tables() -> list[list[list[str]]]:
    """The module map section's tables, each a list of rows of cells (the header and rule rows left out)."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text.split("## Module map of `engine/`", 1)[1].split("\n## ", 1)[0]
    tables: list[list[list[str]]] = []
    current: list[list[str]] | None = None
    for line in section.splitlines():
        if not line.startswith("|"):
            current = None
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if current is None:  # the header row
            current = []
            tables.append(current)
        elif not cells[0].startswith("---"):
            current.append(cells)
    return tables


def _modules(rows: list[list[str]]) -> dict[str, list[str]]:
    return {row[0].strip("`"): row for row in rows if row[0].startswith("`")}


def _total(rows: list[list[str]]) -> list[str]:
    (total,) = [row for row in rows if row[0] == "**total**"]
    return total


def test_the_module_map_names_every_module_of_engine_once() -> None:
    issue_23, added = _tables()
    listed = list(_modules(issue_23)) + list(_modules(added))
    on_disk = sorted(str(path.relative_to(ENGINE)) for path in [*ENGINE.glob("*.py"), *ENGINE.glob("*/*.py")])
    assert sorted(listed) == on_disk


def test_the_issue_23_tables_totals_are_its_columns_sums() -> None:
    issue_23, _ = _tables()
    rows = _modules(issue_23).values()
    before = sum(int(row[2]) for row in rows if row[2] != "-")
    after = sum(int(row[3]) for row in rows)
    assert [int(cell.strip("*")) for cell in _total(issue_23)[2:]] == [before, after]
