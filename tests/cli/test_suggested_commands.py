"""Every command the tasks suggest exists (issue 17: a residue report suggested `invoke
fleet.stamp`, which does not)."""

from __future__ import annotations

import re

from tasks.core import suggestions
from tests.conftest import ROOT

# `invoke dev.stamp`, `invoke local.sync`: a literal task name after "invoke ".
LITERAL = re.compile(r"invoke ([a-z_]+\.[a-z_]+)\b")


def namespace_tasks() -> dict[str, set[str]]:
    from tasks.cli.namespace import build_namespace

    root = build_namespace()
    return {name: set(sub.tasks) for name, sub in root.collections.items()}


def test_the_table_of_tasks_is_the_namespace():
    assert {name: set(tasks) for name, tasks in suggestions.TASKS.items()} == namespace_tasks()


def _sources() -> list:
    return [*sorted((ROOT / "tasks").rglob("*.py")), ROOT / "README.md", ROOT / "Makefile"]


def test_every_literal_suggestion_exists():
    real = {f"{c}.{t}" for c, tasks in namespace_tasks().items() for t in tasks}
    missing = []
    for path in _sources():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for name in LITERAL.findall(line):
                if name not in real:
                    missing.append(f"{path.relative_to(ROOT)}:{number}: invoke {name}")
    assert missing == []


def test_suggestions_built_at_run_time_go_through_the_checker():
    """An f-string `invoke {collection}.x` could name a task that does not exist for some
    collection; only `suggestions.command` may build one, and it checks."""
    built = []
    for path in sorted((ROOT / "tasks").rglob("*.py")):
        if path.name == "suggestions.py":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"invoke \{", line):
                built.append(f"{path.relative_to(ROOT)}:{number}")
    assert built == []


def test_no_stamp_is_suggested_where_there_is_none():
    assert suggestions.command("fleet", "stamp", "--rev x") is None
    assert suggestions.command("dev", "stamp", "--rev x") == "invoke dev.stamp --rev x"
    assert suggestions.command("staging", "merge") is None
