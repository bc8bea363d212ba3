"""Each task's guard policy is declared once (`tasks.guard.runner.GUARDS`) and read by `run_task`.

A task missing from the table would silently get the strictest guard; these tests make a missing
or stale declaration a failure instead, and pin the flags that lower a guard (`--sql`, `--check`).
"""

from __future__ import annotations

from tasks.cli.context import task_spec
from tasks.cli.namespace import build_namespace
from tasks.guard.runner import GUARDS, STRICTEST, Guard, guard_for


def _guarded_tasks() -> set[tuple[str, str]]:
    """(collection, task) of every task that runs through `run_task` (fleets guard per target)."""
    namespace = build_namespace()
    return {
        (collection_name, task_name)
        for collection_name, collection in namespace.collections.items()
        if collection_name != "fleet"
        for task_name in collection.tasks
    }


def test_every_task_declares_its_guard() -> None:
    undeclared = sorted(
        f"{collection}.{task}"
        for collection, task in _guarded_tasks()
        if f"{collection}.{task}" not in GUARDS and task not in GUARDS
    )
    assert not undeclared, f"add these tasks to tasks.guard.runner.GUARDS: {undeclared}"


def test_every_declaration_names_a_task() -> None:
    tasks = _guarded_tasks()
    names = {task for _collection, task in tasks} | {f"{c}.{t}" for c, t in tasks}
    assert set(GUARDS) <= names, f"stale GUARDS entries: {sorted(set(GUARDS) - names)}"


def test_an_undeclared_task_gets_every_guard() -> None:
    assert guard_for("dev", "no_such_task") == STRICTEST
    assert Guard(changes_database=True, creates_revision=True, needs_database=True) == STRICTEST


def test_the_qualified_declaration_wins() -> None:
    assert guard_for("dev", "check").needs_database  # compares the models with the database
    assert not guard_for("ci", "check").needs_database  # builds its own databases


def test_offline_changes_nothing_and_needs_no_database() -> None:
    spec = task_spec("prod", "upgrade", assume_yes=True, lock_timeout=5.0, offline=True)
    assert (spec.changes_database, spec.needs_database, spec.creates_revision) == (
        False,
        False,
        False,
    )
    assert (spec.assume_yes, spec.lock_timeout) == (True, 5.0)
    online = task_spec("prod", "upgrade")
    assert (online.changes_database, online.needs_database) == (True, True)


def test_an_empty_revision_still_creates_a_revision() -> None:
    spec = task_spec("dev", "revision", offline=True)
    assert (spec.creates_revision, spec.needs_database) == (True, False)


def test_read_only_needs_the_database_but_changes_nothing() -> None:
    spec = task_spec("local", "sync", read_only=True)
    assert (spec.changes_database, spec.needs_database) == (False, True)
    assert task_spec("local", "sync").changes_database
